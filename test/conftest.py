"""Test isolation for ROS 2: every test that starts participants gets its own DDS domain.

The machine is shared with other processes, so each ROS test claims a ROS_DOMAIN_ID that no
other lisa_ros test run holds (an flock on a file per id), discovery stays on localhost, and the
shipped localhost Fast DDS profile (64 MiB shared memory, loopback UDP) is used.
"""
from __future__ import annotations

import fcntl
import signal
import subprocess
import threading
import time
import os
import random
import sys
from pathlib import Path

import pytest

from lisa_ros.resources import PROFILE_VARIABLES, dds_profile_variables
from lisa_ros.testing.processes import die_with_parent, localhost_discovery

SUPPORT = Path(__file__).parent / "support"
_LOCK_DIR = Path(os.environ.get("LISA_ROS_TEST_LOCK_DIR", "/tmp"))
# Linux domain ids whose port ranges are valid are 0..101 and 215..232; 0 is everyone's default.
_CANDIDATE_IDS = list(range(1, 102)) + list(range(215, 233))


def _claim_domain_id() -> tuple[int, int]:
    ids = _CANDIDATE_IDS[:]
    random.shuffle(ids)
    for domain_id in ids:
        try:
            fd = os.open(_LOCK_DIR / f"lisa_ros_test_domain_{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        except OSError:  # e.g. a lock file another user owns
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return domain_id, fd
        except OSError:
            os.close(fd)
    raise RuntimeError("no free ROS_DOMAIN_ID for the test")


def _localhost_profile() -> str:
    from lisa_ros.resources import config_path

    return str(config_path("fastdds_localhost.xml"))


# Environment variables that would point a test's participants at other DDS set-ups.
_FOREIGN_DDS_SETTINGS = (
    "ROS_DISCOVERY_SERVER", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY", "ROS_SECURITY_ENABLE",
    "ROS_SECURITY_STRATEGY", "ROS_SECURITY_KEYSTORE", "ROS_SECURITY_ENCLAVE_OVERRIDE",
    "FASTDDS_ENVIRONMENT_FILE", "FASTDDS_BUILTIN_TRANSPORTS", "RMW_FASTRTPS_USE_QOS_FROM_XML", "CYCLONEDDS_URI",
) + PROFILE_VARIABLES


class RosDomain:
    """A private DDS domain: ``env`` for child processes, ``context()`` for this process."""

    def __init__(self, domain_id: int, profile: str | None, monkeypatch):
        self.domain_id = domain_id
        self._monkeypatch = monkeypatch  # restores this process's environment after the test
        self.env = dict(os.environ)  # keeps the LD_LIBRARY_PATH the ROS wheels' bootstrap set
        for key in _FOREIGN_DDS_SETTINGS:  # a developer's own DDS set-up must not leak in
            self.env.pop(key, None)
        self.env["ROS_DOMAIN_ID"] = str(domain_id)
        self.env.update(localhost_discovery())  # ROS_LOCALHOST_ONLY too under a sourced Humble
        self.env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
        self.env["PYTHONUNBUFFERED"] = "1"
        if profile:
            self.env.update(dds_profile_variables(profile))  # Fast DDS 2 and 3 read different names
        self._contexts = []

    def context(self):
        """An initialised rclpy context on this domain (shut down when the test ends).

        The DDS settings are read from this process's environment when the participant is
        created, so the environment is switched to this domain's for the test's duration.
        """
        import rclpy

        for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION") + _FOREIGN_DDS_SETTINGS:
            if key in self.env:
                self._monkeypatch.setenv(key, self.env[key])
            else:
                self._monkeypatch.delenv(key, raising=False)
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=self.domain_id)
        self._contexts.append(ctx)
        return ctx

    def python(self, script: str, *args: str) -> list[str]:
        """Command line running a support script with this interpreter."""
        return [sys.executable, str(SUPPORT / script), *args]

    def shutdown(self):
        for ctx in self._contexts:
            try:
                ctx.try_shutdown()
            except Exception:
                pass


@pytest.fixture
def ros_domain(monkeypatch):
    """A private ROS domain with the shipped localhost Fast DDS profile."""
    yield from _domain(monkeypatch, _localhost_profile())


def _domain(monkeypatch, profile):
    domain_id, fd = _claim_domain_id()
    domain = RosDomain(domain_id, profile, monkeypatch)
    try:
        yield domain
    finally:
        domain.shutdown()
        os.close(fd)


class ChildProcess:
    """A support script running in its own process on a test's domain."""

    def __init__(self, domain: RosDomain, script: str, *args: str, ready_timeout: float = 30.0):
        self.proc = subprocess.Popen(domain.python(script, *args), env=domain.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     preexec_fn=die_with_parent)
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._ready = threading.Event()
        self._reader.start()
        deadline = time.monotonic() + ready_timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not self._ready.is_set():
            self.stop()
            raise RuntimeError(f"{script} did not get ready:\n" + "".join(self.output))

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            if line.strip() == "ready":
                self._ready.set()

    def lines(self) -> list[str]:
        return [line.strip() for line in self.output]

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)


def _spawner():
    children: list[ChildProcess] = []

    def _spawn(domain: RosDomain, script: str, *args: str, **kwargs) -> ChildProcess:
        child = ChildProcess(domain, script, *args, **kwargs)
        children.append(child)
        return child

    yield _spawn
    for child in children:
        child.stop()


@pytest.fixture
def spawn():
    """spawn(domain, script, *args) starts a support script and waits for its "ready" line."""
    yield from _spawner()

@pytest.fixture(scope="module")
def module_ros_domain():
    """A private ROS domain shared by the tests of one module (e.g. one node process for all)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _domain(monkeypatch, _localhost_profile())


@pytest.fixture(scope="module")
def module_spawn():
    """Like `spawn`, for processes that live as long as a test module."""
    yield from _spawner()
