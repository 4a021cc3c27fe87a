"""`lisa-ros` (lisa_ros.cli.main) on an rclpy shaped to Humble's API (humble_rclpy.py; not part of
the package). Arguments as for lisa-ros."""
from __future__ import annotations

import sys

import humble_rclpy

humble_rclpy.shape()

from lisa_ros.cli import main  # noqa: E402 - after shaping, as on Humble

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
