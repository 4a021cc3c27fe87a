"""Helpers for the child processes that the demo, the benchmarks and the tests start."""
from __future__ import annotations


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when its parent dies,
    however the parent dies, so no camera, node or publisher outlives a killed run (Linux)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
