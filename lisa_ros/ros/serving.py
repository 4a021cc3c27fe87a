"""Serving: the bounded request queue, the one inference worker, and every answer to a job.

A ReasonSegment service call or action goal becomes a :class:`Job`. :meth:`Server.on_service` and
:meth:`Server.on_goal` (the executor's callbacks) queue it and block their executor thread until
it is answered; a full queue answers BUSY at once, a server that is not started answers NOT_READY.
An action goal that would get either is rejected before it is accepted (:meth:`Server.on_goal_request`).
A goal cancelled while it waits leaves the queue at once (CANCELLED), freeing its slot.
The worker thread takes one job at a time and runs the handler given to :meth:`Server.start`
(:class:`lisa_ros.ros.request.RequestHandler`): its return is a served answer (OK, or NO_TARGET
when the model found nothing that fits), a :class:`RequestError` a refusal with that code, any
other exception a model failure (MODEL_ERROR, with a hint for CUDA out-of-memory). Every job is
answered exactly once, through :meth:`Server.finish`, which sets the result's ``status``, records
the outcome in the statistics and logs it. The codes are ``lisa_ros/msg/Status``'s, declared once
for the service, the action and the published result. :meth:`Server.stop` (deactivate)
makes a running generation stop at its next token and answers the queued jobs NOT_READY.
When no job waits, the worker calls the handler's ``idle(stopping)`` if it has one (the node's
``encode_ahead``); a failure there is logged, never fatal. Before a job is queued, its caller's
thread runs the handler's ``before_queue(job, stopped)`` when ``waits(job)`` says it must (the
wait for a frame newer than ``min_stamp``), so that one request's wait never holds the worker;
at most ``queue_depth`` callers wait so at once (more are BUSY).

This module knows nothing of the node: the node passes a logger and a callable describing its
state (for NOT_READY messages).
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from rclpy.action import GoalResponse

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.errors import LisaError
from lisa_ros.msg import SegmentationResult, Status
from lisa_ros.ros.diagnostics import RequestStats
from lisa_ros.ros.messages import STATUS_NAMES, duration_seconds

Codes = Status
JOB_TIMEOUT_S = 86400.0  # backstop for a caller waiting on a job without a finite deadline
BACKSTOP_S = 60.0  # how long past its deadline a caller waits for the worker before giving up
CANCEL_POLL_S = 0.05  # how often a waiting goal checks whether its client cancelled it
IDLE_POLL_S = 0.05  # with an idle task: how long the worker waits for a job before calling it again
EMPTY = object()  # JobQueue.get's answer when nothing came within its timeout

# Outcomes of a served request: the model answered (with objects, or that nothing fits).
SERVED_CODES = {Codes.OK, Codes.NO_TARGET}
# Outcomes that are the client's input or the node's load, not a model failure.
REJECTION_CODES = {Codes.INVALID_COMMAND, Codes.INVALID_IMAGE, Codes.NO_FRAME, Codes.STALE_FRAME,
                   Codes.UNKNOWN_CAMERA, Codes.UNKNOWN_SESSION, Codes.BUSY, Codes.NOT_READY, Codes.CANCELLED,
                   Codes.DEADLINE_EXCEEDED}
REFUSAL_LOG_PERIOD_S = 5.0  # at most one refusal WARN per period (the statistics count them all)


def past_deadline(job: Job, when: str) -> str:
    """The DEADLINE_EXCEEDED message for ``job``."""
    return (f"past its deadline {when}: {job.deadline - job.received_at:.1f} s after it arrived "
            "(the request's timeout, or the node's request_timeout)")


def _clip(text: str, limit: int = 120) -> str:
    """``text`` for one log line: at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RequestError(LisaError):
    """A request that cannot be served: ``code`` (a lisa_ros/msg/Status code) and the message
    go back to the client as ``success=false``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(eq=False)  # identity: a queue finds and removes its own job, not an equal one
class Job:
    """One request on its way through the worker.

    ``result`` is filled as the request proceeds (command, then header, then session id), so a
    refusal half-way still tells the client which frame and session it was about; its ``status``
    is set when the job is answered (``code``/``message`` here are the same).
    """

    request: Any  # ReasonSegment.Request or ReasonSegmentAction.Goal (same fields)
    goal_handle: Any = None  # set for action goals
    received_at: float = field(default_factory=time.monotonic)  # monotonic seconds
    deadline: float = math.inf  # monotonic seconds by which it must be answered (its timeout)
    answered: bool = False  # set once, by Server.finish
    done: threading.Event = field(default_factory=threading.Event)
    success: bool = False
    code: int = Codes.MODEL_ERROR
    message: str = ""
    result: SegmentationResult = field(default_factory=SegmentationResult)
    # Called by the handler on the worker with (answer, rgb, encoded frame, frame source) once the
    # answer is in, before the job is answered (the track action starts following there).
    on_answer: Callable | None = None


# handler(job, stopping) -> (code OK or NO_TARGET, message, timings in seconds per stage); raises
# RequestError to refuse. ``stopping`` is set when the server stops: a running generation should
# end at its next token.
Handler = Callable[[Job, threading.Event], tuple[int, str, dict[str, float]]]


class JobQueue:
    """The waiting jobs: FIFO, at most ``capacity`` of them, and a waiting job can leave
    (:meth:`remove`, for a goal cancelled before it ran) so that it frees its slot at once.
    ``None`` is the worker's stop signal; it takes no slot."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: deque[Job | None] = deque()
        self._ready = threading.Condition()

    def put(self, job: Job | None) -> bool:
        """Append ``job``; False (nothing appended) when ``capacity`` jobs already wait."""
        with self._ready:
            if job is not None and len(self) >= self.capacity:
                return False
            self._items.append(job)
            self._ready.notify()
            return True

    def get(self, timeout: float | None = None) -> Job | None | object:
        """The oldest item (a job, or None: the stop signal), waiting for one; :data:`EMPTY`
        when none came within ``timeout`` seconds (None: wait as long as it takes)."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._items), timeout):
                return EMPTY
            return self._items.popleft()

    def remove(self, job: Job) -> bool:
        """Take ``job`` out if it still waits; False when the worker already took it."""
        with self._ready:
            try:
                self._items.remove(job)
                return True
            except ValueError:
                return False

    def take_all(self) -> list[Job]:
        """Empty the queue; the jobs that were waiting."""
        with self._ready:
            jobs = [job for job in self._items if job is not None]
            self._items.clear()
            return jobs

    def __len__(self) -> int:
        with self._ready:  # a re-entrant lock: put() counts while holding it
            return sum(job is not None for job in self._items)


class Server:
    """The queue (``queue_depth`` waiting jobs at most) and the worker; see the module docstring.

    ``describe_state()`` says why the node is not serving, e.g. "node is unconfigured, not
    active (...)"; it is called only to answer NOT_READY.
    """

    def __init__(self, queue_depth: int, logger, describe_state: Callable[[], str],
                 request_timeout: Callable[[], float] = lambda: 300.0):
        self.stats = RequestStats()
        self._request_timeout = request_timeout  # seconds, for requests that set none
        self._logger = logger
        self._describe_state = describe_state
        self._queue = JobQueue(queue_depth)
        self._worker: threading.Thread | None = None
        self._handler: Handler | None = None
        self._lock = threading.Lock()  # _active and queue puts change together
        self._finish_lock = threading.Lock()  # a job is answered once
        self._active = False
        self._waiting = 0  # callers waiting for a frame before their job is queued (_submit)
        self._stopping = threading.Event()  # makes a running generation stop on stop()

    @property
    def queue_fill(self) -> str:
        """``"waiting/capacity"`` for diagnostics."""
        return f"{len(self._queue)}/{self._queue.capacity}"

    # ------------------------------------------------------------------ start / stop
    def start(self, handler: Handler) -> None:
        """Start the worker with ``handler``; jobs are accepted from now on."""
        self._stopping.clear()
        self._handler = handler
        self._worker = threading.Thread(target=self._work, name="lisa_ros_worker", daemon=True)
        self._worker.start()
        with self._lock:
            self._active = True

    def stop(self) -> None:
        """Refuse new jobs, stop the running one at its next token, answer the queued ones
        NOT_READY, and wait for the worker to end. Safe to call when not started."""
        with self._lock:
            self._active = False  # no new job is queued after this
        self._stopping.set()  # a running generation stops at its next token
        if self._worker is not None:
            self._queue.put(None)  # after the queued jobs: they are answered NOT_READY
            self._worker.join()
            self._worker = None
        self._handler = None  # drops the handler's model reference

    # ------------------------------------------------------------------ executor callbacks
    def serve(self, job: Job) -> Job:
        """Queue ``job`` (or answer it at once: BUSY, NOT_READY, ...) and block until answered."""
        if self._submit(job):
            self._wait(job)
        return job

    def job(self, request, goal_handle=None) -> Job:
        """A job for ``request`` with its deadline: the request's ``timeout`` (a
        builtin_interfaces/Duration) when positive, else the ``request_timeout`` parameter."""
        job = Job(request, goal_handle=goal_handle)
        timeout = duration_seconds(request.timeout)
        job.deadline = job.received_at + (timeout if timeout > 0 else self._request_timeout())
        return job

    def on_service(self, request, response):
        """The ReasonSegment service callback: blocks its executor thread until answered (by the
        request's deadline at the latest)."""
        job = self.serve(self.job(request))
        response.success, response.result = job.success, job.result
        return response

    def on_goal(self, goal_handle):
        """The ReasonSegment action's execute callback: canceled, succeeded (served: OK or
        NO_TARGET) or aborted (refused or failed)."""
        job = self.serve(self.job(goal_handle.request, goal_handle))
        result = ReasonSegmentAction.Result(success=job.success, result=job.result)
        if job.code == Codes.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif job.code in SERVED_CODES:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def on_goal_request(self, goal) -> GoalResponse:
        """The action's goal callback: REJECT a goal that would be answered BUSY or NOT_READY at
        once (a client then knows without waiting for a result; the refusal is counted and
        logged with its reason). A goal accepted here can still meet a queue filled since (BUSY)."""
        with self._lock:
            ready = self._serving()
            full = len(self._queue) >= self._queue.capacity
        if ready and not full:
            return GoalResponse.ACCEPT
        code, message = self._refusal(ready)
        self.finish(Job(goal), code, f"goal rejected: {message}")
        return GoalResponse.REJECT

    def _serving(self) -> bool:
        """Started and its worker alive (call with ``_lock`` held)."""
        return self._active and self._worker is not None and self._worker.is_alive()

    def _refusal(self, ready: bool) -> tuple[int, str]:
        """(code, message) for a job that cannot be queued: BUSY when serving, else NOT_READY."""
        if ready:
            return Codes.BUSY, f"busy: {self._queue.capacity} request(s) already waiting; try again"
        return Codes.NOT_READY, self._describe_state()

    def _submit(self, job: Job) -> bool:
        """Queue ``job``, or answer it now (BUSY, NOT_READY, or what the handler's
        ``before_queue`` refused it with); whether it was queued. A job the handler must make
        wait first (``waits(job)``, then ``before_queue``: a frame newer than min_stamp) waits
        in a waiting room of ``queue_depth`` places, apart from the queue: a full room is BUSY at
        once, so waiting callers stay bounded (each holds an executor thread) and requests that
        need no wait are queued as usual meanwhile."""
        handler = self._handler
        if handler is not None and getattr(handler, "waits", lambda _job: False)(job):
            with self._lock:
                ready = self._serving()
                room = ready and self._waiting < self._queue.capacity
                self._waiting += room
            if not room:
                code, message = self._refusal(ready)
                if ready:
                    message = (f"busy: {self._queue.capacity} request(s) already wait for a frame newer than "
                               "their min_stamp; try again")
                self.finish(job, code, message)
                return False
            try:
                handler.before_queue(job, lambda: "" if self._active else "deactivated")
            except RequestError as exc:
                self.finish(job, exc.code, str(exc))
                return False
            except Exception as exc:  # a bug there must not leave the caller without an answer
                self._model_failure(job, exc)
                return False
            finally:
                with self._lock:
                    self._waiting -= 1
        with self._lock:
            ready = self._serving()
            if ready and self._queue.put(job):
                return True
        self.finish(job, *self._refusal(ready))
        return False

    def _wait(self, job: Job) -> None:
        """Block until ``job`` is answered. A goal whose cancel is requested while it still waits
        in the queue leaves it and is answered CANCELLED now (its slot is free for the next
        request); once running, the handler stops it at its next token."""
        # A job past its deadline while still queued is answered here; a running one is stopped
        # by the handler. The backstop guards against a bug leaving a caller blocked forever.
        backstop = min(job.deadline + BACKSTOP_S, time.monotonic() + JOB_TIMEOUT_S)
        while not job.done.wait(timeout=CANCEL_POLL_S):
            now = time.monotonic()
            if job.goal_handle is not None and job.goal_handle.is_cancel_requested and self._queue.remove(job):
                self.finish(job, Codes.CANCELLED, "cancelled while waiting in the queue")
            elif now > job.deadline and self._queue.remove(job):
                self.finish(job, Codes.DEADLINE_EXCEEDED, past_deadline(job, "while waiting in the queue"))
            elif now > backstop:
                self.finish(job, Codes.MODEL_ERROR, "internal error: no answer from the worker")

    # ------------------------------------------------------------------ answers
    def finish(self, job: Job, code: int, message: str = "", timings: dict[str, float] | None = None) -> None:
        """Answer ``job`` once: set its outcome (and its result's ``status``), record it, log it,
        wake the caller. A second answer (the worker ending a job its waiting caller already gave
        up on) is dropped."""
        with self._finish_lock:
            if job.answered:
                return
            job.answered = True
        try:
            job.success, job.code, job.message = code == Codes.OK, code, message
            job.result.status = Status(code=code, message=message)
            kind = "served" if code in SERVED_CODES else ("rejected" if code in REJECTION_CODES else "failed")
            self.stats.record(STATUS_NAMES.get(code, str(code)), kind, timings, message)
            if code in SERVED_CODES:
                seconds = (timings or {}).get("total", time.monotonic() - job.received_at)
                found = f"{len(job.result.objects)} object(s)" if code == Codes.OK else "no target"
                self._logger.info(f"answered in {seconds:.2f} s with {found}: "
                                  f"{_clip(getattr(job.request, 'command', ''))!r}")
            else:  # a client retrying a bad request must not flood the log: one line per 5 s
                self._logger.warning(f"request refused ({STATUS_NAMES.get(code, code)}): {_clip(message)}",
                                     throttle_duration_sec=REFUSAL_LOG_PERIOD_S)
        finally:
            job.done.set()  # whatever happens above, the caller gets its answer

    def _work(self) -> None:
        handler = self._handler
        idle = getattr(handler, "idle", None)
        try:
            while True:
                job = self._queue.get(IDLE_POLL_S if idle is not None else None)
                if job is EMPTY:
                    self._idle(idle)
                    continue
                if job is None:
                    break
                try:
                    if not self._active:
                        self.finish(job, Codes.NOT_READY, "node was deactivated before the request ran")
                    elif time.monotonic() > job.deadline:
                        self.finish(job, Codes.DEADLINE_EXCEEDED, past_deadline(job, "before it ran"))
                    else:
                        code, message, timings = handler(job, self._stopping)
                        self.finish(job, code, message, timings)
                except RequestError as exc:
                    self.finish(job, exc.code, str(exc))
                except Exception as exc:  # the worker never dies: any failure (MemoryError too) is an answer
                    self._model_failure(job, exc)
                finally:
                    if not job.done.is_set():
                        self.finish(job, Codes.MODEL_ERROR, "internal error: request ended without an answer")
        finally:
            self._drain()

    def _idle(self, idle: Callable[[threading.Event], bool]) -> None:
        """Run the handler's idle task once; a failure is a throttled warning (out of memory
        frees what it can first), and the worker goes on."""
        try:
            idle(self._stopping)
        except Exception as exc:
            hint = free_after_out_of_memory(exc)
            self._logger.warning(f"idle work failed: {hint + '; ' if hint else ''}{type(exc).__name__}: {_clip(str(exc))}",
                                 throttle_duration_sec=REFUSAL_LOG_PERIOD_S)

    def _drain(self) -> None:
        """Answer anything still queued when the worker stops."""
        for job in self._queue.take_all():
            self.finish(job, Codes.NOT_READY, "node was deactivated before the request ran")

    def _model_failure(self, job: Job, exc: BaseException) -> None:
        """Answer MODEL_ERROR for a failure of the model. Out of memory (CUDA's OutOfMemoryError,
        or MemoryError on the CPU) frees what it can (the request's tensors are gone with its
        frames; the CUDA cache is emptied, the garbage collected) and says what to change."""
        message = f"model error: {type(exc).__name__}: {exc}"
        hint = free_after_out_of_memory(exc)
        if hint:
            message = f"{hint} ({exc})"
        self._logger.error(message + "\n" + traceback.format_exc(limit=5))
        self.finish(job, Codes.MODEL_ERROR, message)


def free_after_out_of_memory(exc: BaseException) -> str:
    """For out of memory (CUDA's OutOfMemoryError, or MemoryError on the CPU): free what can be
    freed (the garbage collected, the CUDA cache emptied) and return which memory ran out and
    what to change; "" for any other failure."""
    import gc

    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            gc.collect()
            torch.cuda.empty_cache()
            return "out of GPU memory; try quantization 4bit, a smaller image or fewer max_new_tokens"
        if isinstance(exc, MemoryError):
            gc.collect()
            return "out of memory (CPU); try a smaller image or fewer max_new_tokens"
    except Exception:
        pass
    return ""
