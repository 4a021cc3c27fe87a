"""Python 3.10 support (ROS 2 Humble, JetPack 6): no syntax or standard-library use in the shipped
code or the tests needs a later Python, checked with vermin (a maintained static analyser). The
suite runs on 3.11 here, where a 3.11-only construct would pass every other test unnoticed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib  # novermin (3.11+; the fallback below is for 3.10)
except ModuleNotFoundError:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
OLDEST = "3.10"
# Everything a user or colcon runs: the package, its scripts and launch files, examples,
# benchmarks, the interface packages' build files and the tests.
CHECKED = ["lisa_ros", "scripts", "launch", "examples", "bench", "test", "training"]


def vermin(*paths: str | Path) -> subprocess.CompletedProcess:
    # --eval-annotations: annotations count too (typing names, X | Y); --violations: only what
    # breaks the target is printed. `# novermin` marks a guarded import with its fallback.
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())",
               f"-t={OLDEST}-", "--violations", "--eval-annotations", "--no-tips", *map(str, paths)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_no_code_needs_more_than_python_3_10():
    paths = [p for p in CHECKED if (ROOT / p).exists()]
    run = vermin(*paths)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_check_catches_a_3_11_construct(tmp_path):
    # What the check is for: each of these needs 3.11 and would run fine on the 3.11 CI.
    samples = {
        "stdlib_module.py": "import tomllib\n",
        "stdlib_member.py": "import datetime\nprint(datetime.UTC)\n",
        "syntax.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",
        "typing_name.py": "from typing import Self\n",
    }
    for name, text in samples.items():
        (tmp_path / name).write_text(text)
        if sys.version_info < (3, 11) and name == "syntax.py":
            # vermin parses with the running Python's ast: on 3.10 the interpreter itself refuses it
            # (make test-pythons compiles every file with 3.10).
            with pytest.raises(SyntaxError):
                compile(text, name, "exec")
            continue
        run = vermin(tmp_path / name)
        assert run.returncode != 0, f"{name}: vermin let a 3.11 construct pass\n{run.stdout}"
        assert "3.11" in run.stdout


def test_the_packages_declare_python_3_10():
    for pyproject in [ROOT / "pyproject.toml", *sorted((ROOT / "interfaces").glob("*/pyproject.toml"))]:
        declared = tomllib.loads(pyproject.read_text())["project"]["requires-python"]
        assert declared == f">={OLDEST}", (pyproject, declared)
