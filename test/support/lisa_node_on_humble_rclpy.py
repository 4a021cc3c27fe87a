"""The unmodified lisa_ros node on an rclpy shaped to Humble's API (humble_rclpy.py; not part of
the package). Arguments as for the node. Prints "ready" once the node object exists, and a
HUMBLE-REFUSED line for each use of an rclpy name, module or argument Humble lacks."""
from __future__ import annotations

import sys

import humble_rclpy

humble_rclpy.shape()

from lisa_ros.ros import node as node_module  # noqa: E402 - after shaping, as on Humble


class ReadyNode(node_module.LisaNode):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        print("ready", flush=True)


if __name__ == "__main__":
    sys.exit(node_module.main(node_class=ReadyNode))
