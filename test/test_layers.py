"""The package's layering: each folder is one layer that imports only downwards, without cycles.

Every ``import`` of a ``lisa_ros`` module in the source tree is read with ``ast``, function-level
(deferred) imports included, since a deferred import hides a cycle rather than removing it. The
benchmarks may use only public names of the package.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lisa_ros"

# Each layer and the layers it may import (its own modules always). "interfaces" are the
# rosidl-generated lisa_ros.msg/srv/action.
ALLOWED = {
    "errors": set(),
    "resources": set(),
    "interfaces": set(),
    "geometry": {"errors"},
    "transforms": set(),
    "visualization": {"errors"},
    "images": {"errors"},  # image encodings <-> numpy, for ROS messages and bag messages alike
    "model": {"errors"},
    "drafting": set(),  # token-id tables only
    "timing": set(),  # the names of a request's stages and the engine's parts
    "result_file": {"timing"},  # result.json, one format for segment and ask
    "engine": {"errors", "model", "drafting"},
    "tracking": {"errors", "model", "engine"},  # ROS-free following of an answer's masks
    "sessions": {"errors", "model"},
    "data": {"errors", "model"},  # the scenes' questions use the embedded model's size words
    "evaluate": {"errors", "visualization", "model", "engine", "data"},  # plots of the scores
    "train": {"errors", "model", "engine", "data"},
    "testing": {"errors", "resources", "interfaces", "images", "model", "engine", "ros", "data"},  # ROS requests, scenes
    "ros": {"errors", "resources", "interfaces", "geometry", "transforms", "visualization", "images", "model", "engine",
            "tracking", "sessions", "timing", "result_file"},
    "cli": {"errors", "resources", "interfaces", "geometry", "transforms", "visualization", "images", "model", "engine",
            "tracking", "sessions", "data", "evaluate", "train", "ros", "package", "timing", "result_file"},
    "package": set(),  # lisa_ros/__init__.py
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] in ("msg", "srv", "action"):
        return "interfaces"
    return parts[1]


def source_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The lisa_ros modules ``path`` imports (``from lisa_ros.x import y`` counts lisa_ros.x.y
    when that is a module, else lisa_ros.x)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lisa_ros"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            if not base.startswith("lisa_ros"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return found


def graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) - {name} for name, path in modules.items()}


def test_every_import_goes_to_the_same_or_a_lower_layer():
    wrong = []
    for module, imported in sorted(graph().items()):
        for target in sorted(imported):
            own, other = layer(module), layer(target)
            if other != own and other not in ALLOWED[own]:
                wrong.append(f"{module} imports {target} ({own} -> {other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if target not in edges:
                continue  # generated interfaces
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_deferred_imports_and_cycles(tmp_path):
    """The walker itself: a function-level import is an edge, and a two-module cycle is one."""
    fake = tmp_path / "lisa_ros"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "a.py").write_text("def f():\n    from lisa_ros.model.b import g\n")
    (fake / "model" / "b.py").write_text("from lisa_ros.model import a\n")
    known = {"lisa_ros.model.a", "lisa_ros.model.b"}
    assert imports_of(fake / "model" / "a.py", "lisa_ros.model.a", known) == {"lisa_ros.model.b"}
    assert imports_of(fake / "model" / "b.py", "lisa_ros.model.b", known) == {"lisa_ros.model.a"}
    assert layer("lisa_ros.ros.node") == "ros" and layer("lisa_ros.srv") == "interfaces"


def test_every_layer_of_the_tree_is_known():
    assert {layer(name) for name in source_modules()} <= set(ALLOWED)


def test_benchmarks_use_only_public_names():
    private = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "sys")):
                    private.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lisa_ros"):
                private += [f"{path.name}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private


def test_the_node_module_is_wiring_only():
    """The lifecycle node wires the pieces of lisa_ros/ros together; serving, requests, cameras,
    diagnostics, parameters and model loading live in their own modules (each tested there)."""
    lines = len((ROOT / "lisa_ros" / "ros" / "node.py").read_text().splitlines())
    assert lines < 300, f"lisa_ros/ros/node.py has {lines} lines: move a piece out, not more in"
