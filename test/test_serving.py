"""lisa_ros.ros.serving: the bounded job queue the node's worker takes requests from (in process;
the queue over DDS, BUSY and cancellation, is in test_node.py)."""
from __future__ import annotations

import time

import pytest

from lisa_ros.ros.serving import EMPTY, Job, JobQueue

pytestmark = pytest.mark.ros


def test_the_job_queue_frees_a_slot_when_a_waiting_job_leaves():
    jobs = JobQueue(2)
    first, second, third = Job(None), Job(None), Job(None)
    assert jobs.put(first) and jobs.put(second) and not jobs.put(third)  # full: BUSY
    assert jobs.remove(second) and not jobs.remove(second) and len(jobs) == 1
    assert jobs.put(third) and jobs.put(None) and len(jobs) == 2  # the stop signal takes no slot
    assert jobs.get() is first and jobs.get() is third and jobs.get() is None


def test_the_job_queue_says_empty_after_a_timeout_and_still_hands_out_the_stop_signal():
    jobs = JobQueue(1)
    started = time.monotonic()
    assert jobs.get(0.05) is EMPTY and time.monotonic() - started >= 0.04
    job = Job(None)
    assert jobs.put(job) and jobs.get(0.05) is job
    assert jobs.put(None) and jobs.get(0.05) is None
