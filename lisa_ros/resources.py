"""Locating the package's data files (config/, launch/) in every install layout."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "lisa_ros"


def share_directory() -> Path:
    """The package's share directory: ament index first, then the venv prefix, then the source tree.

    ``ament_index_python`` raises when AMENT_PREFIX_PATH is unset (common in a plain venv), so
    the fallbacks matter for `pip install .` users.
    """
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:
        pass
    candidate = Path(sys.prefix) / "share" / PACKAGE
    if (candidate / "config").is_dir():
        return candidate
    source_tree = Path(__file__).resolve().parent.parent
    if (source_tree / "config").is_dir() and (source_tree / "package.xml").is_file():
        return source_tree
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory (tried the ament index, "
        f"{candidate} and the source tree); set AMENT_PREFIX_PATH or reinstall the package"
    )


def config_path(name: str) -> Path:
    """Absolute path of a file in the package's config/ directory."""
    path = share_directory() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


# The environment variables Fast DDS reads its XML profile from: FASTDDS_DEFAULT_PROFILES_FILE
# from Fast DDS 3 (ROS 2 Kilted on), FASTRTPS_DEFAULT_PROFILES_FILE in Fast DDS 2 (Humble, Iron,
# Jazzy), which ignores the new name. Kilted still reads the old one, with a deprecation warning
# for every participant.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTRIBUTIONS = ("humble", "iron", "jazzy")


def fast_dds_2() -> bool | None:
    """Whether this machine's ROS 2 has Fast DDS 2.x: from ``ROS_DISTRO`` (a sourced ROS 2), else
    the installed ``ros-rclpy`` wheel (7.x is Jazzy, 9.x Kilted); None when neither tells."""
    distro = os.environ.get("ROS_DISTRO", "").lower()
    if distro:
        return distro in FAST_DDS_2_DISTRIBUTIONS
    try:
        from importlib.metadata import PackageNotFoundError, version

        return int(version("ros-rclpy").split(".")[0]) < 9
    except (PackageNotFoundError, ValueError):
        return None


def dds_profile_variables(path: str | Path) -> dict[str, str]:
    """``{variable: path}`` selecting the Fast DDS profile at ``path`` for this machine's Fast DDS
    (both variables when :func:`fast_dds_2` cannot tell)."""
    version_2 = fast_dds_2()
    names = PROFILE_VARIABLES if version_2 is None else PROFILE_VARIABLES[1:] if version_2 else PROFILE_VARIABLES[:1]
    return {name: str(path) for name in names}


def with_dds_profile(env: dict, path: str | Path) -> dict:
    """``env`` with the Fast DDS profile at ``path`` selected, and no other profile variable left
    (Kilted prefers a leftover FASTRTPS_DEFAULT_PROFILES_FILE to FASTDDS_DEFAULT_PROFILES_FILE)."""
    for name in PROFILE_VARIABLES:
        env.pop(name, None)
    env.update(dds_profile_variables(path))
    return env


def environment_with_dds_profile(profile: str = "fastdds.xml", base: dict | None = None) -> dict:
    """A copy of ``base`` (default: os.environ) with the shipped Fast DDS profile selected."""
    env = with_dds_profile(dict(os.environ if base is None else base), config_path(profile))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


def release_freed_memory() -> bool:
    """Give memory that Python and torch have freed back to the operating system: collect
    garbage, empty torch's CUDA cache when torch is loaded with CUDA, and call glibc's
    ``malloc_trim(0)``. Without the last, a process that frees a model keeps most of its heap:
    glibc returns only the top of the heap, and freed blocks between live ones stay mapped (ten
    reloads of the node with the embedded model grew it from 1.8 to 3.7 GB: bench/reload.py).
    Returns whether glibc released memory (False elsewhere, e.g. musl or macOS: a no-op)."""
    import ctypes
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # a broken CUDA set-up must not stop the cleanup
            pass
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


# glibc's mallopt parameter for the size from which blocks are mmapped (returned to the system
# when freed) instead of carved from the heap.
_M_MMAP_THRESHOLD = -3
# Blocks of this size and larger (bytes) are mmapped: weights, activations and images.
MMAP_THRESHOLD_BYTES = 32 << 20


def keep_large_blocks_out_of_the_heap(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc mmap every allocation of ``threshold`` bytes or more (``mallopt``), for a
    process that loads and frees models for its whole life (the node's reloads). By default glibc
    raises this threshold each time a large mmapped block is freed (up to 32 MiB): after a model
    is freed, the next model's tensors come from the heap, between live blocks, and are not given
    back when freed; the process grows with every reload. A fixed threshold keeps them out of the
    heap. Returns whether glibc took it (False elsewhere: a no-op)."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
