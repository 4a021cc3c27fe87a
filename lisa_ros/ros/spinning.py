"""Spinning an executor while other threads create and destroy entities.

rclpy's executors (Humble to Kilted; ros2/rclpy#1284) list a node's waitables, then enter each one
and add it to the wait set. A waitable destroyed in between (the QoS event handlers of a
subscription or publisher that another thread destroys: the node unsubscribes its cameras on
deactivate and cleanup) is skipped when entered but still added, and ``add_to_wait_set`` raises
``InvalidHandle`` out of ``executor.spin()``. Seen in this project's CI: a test client's spin thread
died that way and its later calls were never answered. The entity is gone from the node by the
next pass, so :func:`spin` builds the wait set again.
"""
from __future__ import annotations

import time

from rclpy.executors import Executor
from rclpy.impl.implementation_singleton import rclpy_implementation

# Where Humble, Jazzy and Kilted all define it (rclpy.exceptions re-exports it only in later releases).
InvalidHandle = rclpy_implementation.InvalidHandle

# Pause after a failed pass (s): a handle that stays destroyed in a node's list must not busy-wait.
RETRY_PAUSE_S = 0.001


def spin(executor: Executor, logger=None) -> None:
    """``executor.spin()`` that survives an entity destroyed while the wait set is being built.

    Returns when the executor shuts down or the context is shut down, as ``executor.spin()`` does;
    ``KeyboardInterrupt`` and ``ExternalShutdownException`` propagate. ``logger`` (an rclpy logger)
    gets a throttled debug line per retry.
    """
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle as exc:
            if logger is not None:
                logger.debug(f"an entity was destroyed while the executor waited ({exc}); waiting again",
                             throttle_duration_sec=10.0)
            time.sleep(RETRY_PAUSE_S)
