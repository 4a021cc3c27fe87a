"""Writes the public API of an rclpy release as JSON, read from its sources (not imported).

    python test/support/rclpy_api.py RCLPY_CHECKOUT [GIT_REF] > test/support/rclpy_humble_api.json

RCLPY_CHECKOUT is a clone of github.com/ros2/rclpy; GIT_REF (a tag such as 3.3.15, Humble's
rclpy) is read with `git show`, so the clone may be bare. For every module of the rclpy package:
its public module-level names (definitions, assignments and imports), the parameters of its
functions, and for every class its bases and its class-level names (methods, properties, class
attributes) with the parameters of each method. humble_rclpy.py uses it to present this
interpreter's rclpy to lisa_ros as Humble's.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict:
    args = function.args
    return {"positional": [a.arg for a in args.posonlyargs + args.args],
            "keyword_only": [a.arg for a in args.kwonlyargs],
            "var_positional": args.vararg is not None, "var_keyword": args.kwarg is not None}


def targets(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def module_api(source: str) -> dict:
    tree = ast.parse(source)
    names, functions, classes = set(), {}, {}
    body = list(tree.body)
    while body:  # module level, including definitions inside if/try blocks
        node = body.pop(0)
        if isinstance(node, (ast.If, ast.Try)):
            body[:0] = node.body + node.orelse + getattr(node, "finalbody", []) + \
                [s for handler in getattr(node, "handlers", []) for s in handler.body]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
            functions[node.name] = parameters(node)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            members = {}
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members[item.name] = parameters(item)
                for name in targets(item):
                    members[name] = None
            classes[node.name] = {"bases": [ast.unparse(b).split("[")[0].split(".")[-1] for b in node.bases],
                                  "members": members}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        else:
            names.update(targets(node))
    return {"names": sorted(names), "functions": functions, "classes": classes}


def main(checkout: str, ref: str = "3.3.15") -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", checkout, *args], check=True, capture_output=True, text=True).stdout

    files = [f for f in git("ls-tree", "-r", "--name-only", ref, "rclpy/rclpy").splitlines() if f.endswith(".py")]
    modules = {}
    for path in files:
        name = path[len("rclpy/"):-len(".py")].replace("/", ".").removesuffix(".__init__")
        modules[name] = module_api(git("show", f"{ref}:{path}"))
    json.dump({"source": f"github.com/ros2/rclpy at {ref}", "modules": modules}, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:])
