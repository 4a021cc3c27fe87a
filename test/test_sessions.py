"""Session store (expiry, bounds, copies) and frame cache (LRU, encode once)."""
from __future__ import annotations

import threading

from lisa_ros.model.prompts import Conversation
from lisa_ros.sessions import FrameCache, SessionStore


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def answered(*pairs):
    conversation = Conversation()
    for question, answer in pairs:
        conversation.ask(question)
        conversation.answer(answer)
    return conversation


def test_sessions_expire_after_the_timeout():
    clock = FakeClock()
    store = SessionStore(timeout_s=10, clock=clock)
    store.save("a", answered(("q1", "a1")))
    clock.now = 9.9
    assert store.get("a").turns == [("q1", "a1")]
    store.save("a", answered(("q1", "a1"), ("q2", "a2")))  # activity renews the session
    clock.now = 19.0
    assert len(store.get("a").turns) == 2
    clock.now = 30.0
    assert store.get("a") is None and len(store) == 0


def test_oldest_sessions_go_first_and_turns_are_bounded():
    store = SessionStore(max_sessions=2, max_turns=2)
    store.save("a", answered(("1", "x")))
    store.save("b", answered(("1", "x")))
    store.save("c", answered(("1", "x"), ("2", "y"), ("3", "z")))
    assert store.get("a") is None and store.get("b") is not None
    assert [q for q, _ in store.get("c").turns] == ["2", "3"]


def test_get_returns_a_copy_and_pending_questions_are_not_stored():
    store = SessionStore()
    conversation = answered(("q", "a"))
    conversation.ask("pending")
    store.save("s", conversation)
    copy = store.get("s")
    assert copy.turns == [("q", "a")]
    copy.ask("more")
    assert store.get("s").turns == [("q", "a")]
    assert store.new_id() != store.new_id()


def test_frame_cache_encodes_once_and_evicts_the_least_recently_used():
    cache = FrameCache(capacity=2)
    calls = []

    def encoder(name):
        return lambda: calls.append(name) or f"frame-{name}"

    assert cache.get_or_encode("a", encoder("a")) == ("frame-a", False)
    assert cache.get_or_encode("a", encoder("a")) == ("frame-a", True)
    cache.get_or_encode("b", encoder("b"))
    cache.get_or_encode("a", encoder("a"))  # a is now the most recent
    cache.get_or_encode("c", encoder("c"))  # evicts b
    assert cache.get_or_encode("b", encoder("b"))[1] is False
    assert calls == ["a", "b", "c", "b"] and (cache.hits, cache.misses) == (2, 4) and len(cache) == 2


def test_frames_encoded_ahead_take_one_slot_per_camera_unless_a_request_used_them():
    cache = FrameCache(capacity=3)
    cache.get_or_encode("request-image", lambda: "r")
    cache.store_ahead(("front", 1), "f1")
    cache.store_ahead(("front", 2), "f2", replaces=("front", 1))  # f1 unused: dropped
    assert ("front", 1) not in cache and ("front", 2) in cache and len(cache) == 2
    assert cache.get_or_encode(("front", 2), lambda: "never") == ("f2", True)  # a request uses f2
    cache.store_ahead(("front", 3), "f3", replaces=("front", 2))  # f2 used: kept for follow-ups
    assert ("front", 2) in cache and ("front", 3) in cache and "request-image" in cache
    cache.store_ahead(("wrist", 1), "w1")  # over capacity: the least recently used goes
    assert "request-image" not in cache and len(cache) == 3
    assert (cache.hits, cache.misses) == (1, 1)  # storing ahead is neither
    cache.store_ahead(("wrist", 2), "w2", replaces=("wrist", 0))  # a replaced key already gone: fine
    assert ("wrist", 2) in cache


def test_a_frame_cache_of_capacity_zero_keeps_nothing():
    cache = FrameCache(capacity=0)
    for key in range(100):
        assert cache.get_or_encode(key, lambda: "frame") == ("frame", False)
        cache.store_ahead(("front", key), "frame", replaces=("front", key - 1))
    assert len(cache) == 0 and not cache._used and cache.misses == 100


def test_session_store_is_safe_under_concurrent_use():
    store = SessionStore(max_sessions=1000)

    def worker(index):
        for turn in range(50):
            store.save(f"s{index}", answered(*[(str(t), "a") for t in range(turn % 5 + 1)]))
            store.get(f"s{index}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 8


def test_a_forgotten_session_says_whether_it_expired_or_was_dropped():
    """An evicted session used to be reported as expired; the refusal now says which it was."""
    now = [0.0]
    store = SessionStore(timeout_s=10.0, max_sessions=2, clock=lambda: now[0])
    for name in ("a", "b", "c"):  # "a" is dropped for "c": two at most
        store.save(name, answered(("q", "a")))
    assert store.get("a") is None and "max_sessions (2)" in store.forgotten("a") and "expired" not in store.forgotten("a")
    now[0] = 11.0
    assert store.get("b") is None and store.forgotten("b").startswith("expired after 10 s")
    assert store.forgotten("never") == ""
