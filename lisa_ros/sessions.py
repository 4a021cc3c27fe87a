"""Multi-turn sessions and the frame cache: the per-request state the engine can reuse.

Both are thread-safe (the ROS node answers on a worker thread while other threads look up) and
bounded (a robot runs for days): sessions expire after ``timeout_s`` of inactivity and the oldest
are dropped past ``max_sessions``; the frame cache keeps the ``capacity`` most recently used
encoded frames.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from typing import Callable, Hashable

from lisa_ros.model.prompts import Conversation


# Forgotten session ids whose reason is kept (a few KB).
FORGOTTEN_KEPT = 1024


class SessionStore:
    """Conversations by session id, with expiry and a size bound.

    ``max_turns`` keeps only the most recent turns of a long conversation (the prompt must fit
    the model's context).
    """

    def __init__(self, timeout_s: float = 600.0, max_sessions: int = 64, max_turns: int = 8,
                 clock: Callable[[], float] = time.monotonic):
        self.timeout_s = timeout_s
        self.max_sessions = max_sessions
        self.max_turns = max_turns
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[float, Conversation]] = OrderedDict()
        # Why recently forgotten sessions were forgotten (expired or dropped), for the refusal.
        self._forgotten: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def _forget(self, session_id: str, reason: str) -> None:
        del self._sessions[session_id]
        self._forgotten[session_id] = reason
        while len(self._forgotten) > FORGOTTEN_KEPT:
            self._forgotten.popitem(last=False)

    def _expire(self, now: float) -> None:
        for key in [k for k, (seen, _) in self._sessions.items() if now - seen > self.timeout_s]:
            self._forget(key, f"expired after {self.timeout_s:g} s without a request (session_timeout)")

    def forgotten(self, session_id: str) -> str:
        """Why ``session_id`` was forgotten ("expired after ...", "dropped ..."), or "" when it
        was never known here (or forgotten long ago)."""
        with self._lock:
            return self._forgotten.get(session_id, "")

    def get(self, session_id: str) -> Conversation | None:
        """A copy of the conversation so far, or None when unknown or expired."""
        with self._lock:
            self._expire(self._clock())
            entry = self._sessions.get(session_id)
            return Conversation(list(entry[1].turns)) if entry else None

    def save(self, session_id: str, conversation: Conversation) -> None:
        """Store the conversation (answered turns only, the last ``max_turns`` of them)."""
        turns = [turn for turn in conversation.turns if turn[1] is not None][-self.max_turns:]
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._sessions[session_id] = (now, Conversation(turns))
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > self.max_sessions:
                self._forget(next(iter(self._sessions)), f"dropped to keep max_sessions ({self.max_sessions}) "
                             "conversations: the least recently used goes first")

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._sessions)


class FrameCache:
    """The ``capacity`` most recently used encoded frames, by key (e.g. camera + arrival number).

    A frame encoded ahead of any request (:meth:`store_ahead`, the node's ``encode_ahead``)
    replaces the previous one of its source unless a request used it, so frames encoded ahead
    and never asked for hold one slot at most.
    """

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._frames: OrderedDict[Hashable, object] = OrderedDict()
        self._used: set[Hashable] = set()  # keys a request has read
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_encode(self, key: Hashable, encode: Callable[[], object]):
        """The cached frame for ``key``, or ``encode()``'s result, stored. Returns (frame, hit)."""
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                self._used.add(key)
                self.hits += 1
                return self._frames[key], True
        frame = encode()  # outside the lock: encoding takes long
        with self._lock:
            self.misses += 1
            self._put(key, frame)
            if key in self._frames:  # nothing is kept with capacity 0
                self._used.add(key)
        return frame, False

    def store_ahead(self, key: Hashable, frame: object, replaces: Hashable | None = None) -> None:
        """Store ``frame``, encoded before any request asked for it; ``replaces``: the key its
        source stored ahead before, dropped now unless a request has used it (so a camera
        encoded ahead at its frame rate holds one slot, not the whole cache)."""
        with self._lock:
            if replaces is not None and replaces != key and replaces not in self._used:
                self._frames.pop(replaces, None)
            self._put(key, frame)

    def _put(self, key: Hashable, frame: object) -> None:  # with the lock held
        if self.capacity <= 0:
            return
        self._frames[key] = frame
        self._frames.move_to_end(key)
        while len(self._frames) > self.capacity:
            self._used.discard(self._frames.popitem(last=False)[0])

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._frames

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._used.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
