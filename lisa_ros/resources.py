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


def environment_with_dds_profile(profile: str = "fastdds.xml", base: dict | None = None) -> dict:
    """A copy of ``base`` (default: os.environ) with the shipped Fast DDS profile selected."""
    env = dict(os.environ if base is None else base)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_path(profile))
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env
