"""lisa_ros.ros.spinning.spin: an executor keeps serving after an entity is destroyed while its wait
set is being built (ros2/rclpy#1284, which killed a test client's spin thread in CI).

The race is made deterministic with real rclpy objects: a publisher's QoS event handler is
destroyed while the node still lists it, as when another thread destroys the publisher between the
executor's listing and its wait. Every wait-set build then raises InvalidHandle until the node
drops the handler.
"""
from __future__ import annotations

import threading
import time

import pytest
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import String

from lisa_ros.ros.spinning import InvalidHandle, spin

pytestmark = pytest.mark.ros


def destroyed_but_listed(node):
    """A publisher whose QoS event handler is destroyed while ``node.waitables`` still holds it."""
    publisher = node.create_publisher(String, "spinning_test", 10)
    publisher.event_handlers[0].destroy()
    return publisher


def _spin_in_thread(executor, node):
    failures = []

    def run():
        try:
            spin(executor, node.get_logger())
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever ended the spin
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


def test_plain_spin_dies_on_the_race_and_spin_goes_on(ros_domain):
    ctx = ros_domain.context()
    import rclpy

    node = rclpy.create_node("spinning_test", context=ctx)
    ticks = []
    node.create_timer(0.01, lambda: ticks.append(time.monotonic()))

    # What the fix is for: rclpy's own spin raises out of the race.
    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(node)
    publisher = destroyed_but_listed(node)
    with pytest.raises(InvalidHandle):
        executor.spin_once(timeout_sec=1.0)
    node.destroy_publisher(publisher)
    executor.remove_node(node)
    executor.shutdown()

    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(node)
    publisher = destroyed_but_listed(node)
    spinner, failures = _spin_in_thread(executor, node)
    time.sleep(0.3)  # wait-set builds fail all this time
    dropped_at = time.monotonic()
    node.destroy_publisher(publisher)  # drops the handler from the node's list
    time.sleep(0.5)
    try:
        assert spinner.is_alive(), failures
        assert sum(t > dropped_at for t in ticks) >= 10  # the 100 Hz timer runs again
    finally:
        executor.shutdown()
        spinner.join(5)
    assert not spinner.is_alive() and not failures  # and it ends when the executor shuts down
    node.destroy_node()


def test_a_callback_using_a_destroyed_entity_still_ends_the_spin(ros_domain):
    """Only the wait-set race is retried: the same error from a callback is a bug to surface."""
    import rclpy

    ctx = ros_domain.context()
    node = rclpy.create_node("spinning_callback_test", context=ctx)
    publisher = node.create_publisher(String, "spinning_callback_test", 10)
    node.destroy_publisher(publisher)
    timer = node.create_timer(0.01, lambda: publisher.publish(String(data="x")))
    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(node)
    thread, failures = _spin_in_thread(executor, node)
    thread.join(10)
    executor.shutdown()
    node.destroy_timer(timer)
    node.destroy_node()
    assert not thread.is_alive() and len(failures) == 1 and isinstance(failures[0], InvalidHandle), failures


def test_a_wait_set_that_keeps_failing_ends_the_spin(ros_domain, monkeypatch):
    import rclpy

    from lisa_ros.ros import spinning

    monkeypatch.setattr(spinning, "GIVE_UP_AFTER_PASSES", 20)
    monkeypatch.setattr(spinning, "GIVE_UP_AFTER_S", 0.2)
    ctx = ros_domain.context()
    node = rclpy.create_node("spinning_persistent_test", context=ctx)
    publisher = destroyed_but_listed(node)  # never dropped from the node's list
    executor = MultiThreadedExecutor(num_threads=2, context=ctx)
    executor.add_node(node)
    started = time.monotonic()
    thread, failures = _spin_in_thread(executor, node)
    thread.join(10)
    assert not thread.is_alive() and len(failures) == 1 and isinstance(failures[0], InvalidHandle), failures
    assert time.monotonic() - started >= 0.2
    executor.shutdown()
    node.destroy_publisher(publisher)
    node.destroy_node()
