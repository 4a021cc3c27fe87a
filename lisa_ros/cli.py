"""The `lisa-ros` command line tool."""
from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from lisa_ros import __version__
    from lisa_ros.resources import config_path

    print(f"lisa_ros {__version__}")
    print(f"python {sys.version.split()[0]}")
    for module in ("rclpy", "numpy", "cv2", "torch", "transformers"):
        try:
            mod = __import__(module)
            print(f"{module} {getattr(mod, '__version__', 'installed')}")
        except Exception as exc:  # report, never fail: this is a diagnostic command
            print(f"{module} unavailable ({type(exc).__name__}: {exc})")
    try:
        from lisa_ros.srv import ReasonSegment  # noqa: F401

        print("interfaces: lisa_ros.msg/srv/action importable")
    except Exception as exc:
        print(f"interfaces: NOT importable ({exc})")
    print(f"fast dds profile (robot): {config_path('fastdds.xml')}")
    print(f"fast dds profile (localhost only): {config_path('fastdds_localhost.xml')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lisa-ros", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print versions, interface and DDS profile locations")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
