"""Print the requirement lines of pip requirements files as pip would pick them on another Python
(environment markers evaluated for that python_version), without the markers; not part of the
package. Used by `make test-py310-stack`:

    python test/support/pins_for.py 3.10 requirements/ml.txt requirements/test.txt
"""
from __future__ import annotations

import sys

from packaging.markers import Marker


def pins_for(python_version: str, paths: list[str]) -> list[str]:
    chosen = []
    for path in paths:
        for line in open(path, encoding="utf-8"):
            requirement = line.split("#")[0].strip()
            if not requirement:
                continue
            spec, _, marker = requirement.partition(";")
            if not marker.strip() or Marker(marker).evaluate({"python_version": python_version}):
                chosen.append(spec.strip())
    return chosen


if __name__ == "__main__":
    print("\n".join(pins_for(sys.argv[1], sys.argv[2:])))
