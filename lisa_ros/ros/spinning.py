"""Spinning an executor while other threads create and destroy entities.

rclpy's executors (Humble to Kilted; ros2/rclpy#1284) list a node's waitables, then enter each one
and add it to the wait set. A waitable destroyed in between (the QoS event handlers of a
subscription or publisher that another thread destroys: the node unsubscribes its cameras on
deactivate and cleanup) is skipped when entered but still added, and ``add_to_wait_set`` raises
``InvalidHandle`` out of ``executor.spin()``. Seen in this project's CI: a test client's spin thread
died that way and its later calls were never answered. The entity is gone from the node by the
next pass, so :func:`spin` builds the wait set again. Only that case is retried: the same error
raised by a callback, or a wait set that keeps failing, still ends the spin.
"""
from __future__ import annotations

import time

from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor

# Pause after a failed pass (s): a handle that stays destroyed in a node's list must not busy-wait.
RETRY_PAUSE_S = 0.001
# A race clears on the next pass. Failed passes less than EPISODE_GAP_S apart are one episode; an
# episode of GIVE_UP_AFTER_PASSES passes over at least GIVE_UP_AFTER_S is an entity that stays
# broken, and the spin ends rather than serving nothing.
EPISODE_GAP_S = 1.0
GIVE_UP_AFTER_PASSES = 1000
GIVE_UP_AFTER_S = 5.0


def raised_while_building_the_wait_set(error: BaseException) -> bool:
    """Whether ``error`` came from the executor gathering its wait set (rclpy's
    ``_wait_for_ready_callbacks``), not from a callback it ran."""
    traceback = error.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_name == "_wait_for_ready_callbacks":
            return True
        traceback = traceback.tb_next
    return False


def spin(executor: Executor, logger=None) -> None:
    """``executor.spin()`` that survives an entity destroyed while the wait set is being built.

    Returns when the executor shuts down or the context is shut down, as ``executor.spin()`` does;
    ``KeyboardInterrupt``, ``ExternalShutdownException``, an ``InvalidHandle`` raised by a callback,
    and one that persists (:data:`GIVE_UP_AFTER_PASSES`) propagate. ``logger`` (an rclpy logger)
    gets a throttled warning per retried race.
    """
    failures, first_failure, last_failure = 0, 0.0, float("-inf")
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle as error:
            if not raised_while_building_the_wait_set(error):
                raise
            now = time.monotonic()
            if now - last_failure > EPISODE_GAP_S:  # a new episode
                failures, first_failure = 0, now
            failures, last_failure = failures + 1, now
            if failures >= GIVE_UP_AFTER_PASSES and now - first_failure >= GIVE_UP_AFTER_S:
                if logger is not None:
                    logger.error(f"the executor's wait set failed {failures} times in {now - first_failure:.0f} s "
                                 f"({error}): an entity stays destroyed; stopping")
                raise
            if logger is not None:
                logger.warning(f"an entity was destroyed while the executor built its wait set ({error}); "
                               "waiting again", throttle_duration_sec=10.0)
            time.sleep(RETRY_PAUSE_S)
