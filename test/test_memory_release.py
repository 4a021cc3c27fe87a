"""The node's memory release reaches glibc (the figures are bench/reload.py's, docs/RELIABILITY.md)."""
from __future__ import annotations

import platform
import subprocess
import sys
import types

import pytest

CHECK = """
from lisa_ros.resources import keep_large_blocks_out_of_the_heap, release_freed_memory
blocks = [bytearray(100_000) for _ in range(4000)]  # 400 MB of heap blocks (below 128 KiB: not mmapped)
del blocks[::2]
print(keep_large_blocks_out_of_the_heap(), release_freed_memory())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallopt are glibc's")
def test_glibc_takes_the_mmap_threshold_and_gives_freed_heap_back():
    """In a child process (mallopt changes the process it runs in): both calls are glibc's and
    succeed; ``release_freed_memory`` returns whether memory went back to the system."""
    run = subprocess.run([sys.executable, "-P", "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "True"]


def test_cleanup_releases_the_freed_memory(monkeypatch):
    """The node's cleanup (and shutdown, error) path calls the release, after dropping the model."""
    from lisa_ros.ros import node as node_module

    calls = []
    fake = types.SimpleNamespace(engine=object(), _handler=None)
    monkeypatch.setattr(node_module, "release_freed_memory", lambda: calls.append(fake.engine))
    node_module.LisaNode._free_model(fake)
    assert calls == [None]  # called once, with the model already dropped
