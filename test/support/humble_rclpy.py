"""This interpreter's rclpy as lisa_ros would find it on ROS 2 Humble (not part of the package).

Humble's rclpy is not on PyPI and needs Python 3.10; the tests run on Kilted's or Jazzy's. So the
newer rclpy is shaped to Humble's API, as recorded from Humble's sources in
``rclpy_humble_api.json`` (written by rclpy_api.py), but only where ``lisa_ros`` code looks:

- an rclpy module that Humble lacks cannot be imported;
- a module-level name, or a public class attribute or method, that Humble lacks raises
  ``AttributeError`` (so ``hasattr`` is False, and an unguarded call fails as on Humble);
- a function, method or constructor that Humble has, called with a keyword or more positional
  arguments than Humble's version takes, raises ``TypeError``.

rclpy's own code (and the test's) keeps the full API, so rclpy still works underneath. Each refusal
is printed as ``HUMBLE-REFUSED <what> <where>`` (and kept in :data:`REFUSED`), so a test can tell
a declared fallback's probe from an unguarded newer call.

Not covered here: enum members (enum classes cannot be patched; test_humble_rclpy.py scans
lisa_ros's source for them), instance attributes, names on the C extension, and changes of
behaviour behind an unchanged name. Only the code paths a test runs are checked.
"""
from __future__ import annotations

import builtins
import enum
import functools
import importlib
import inspect
import json
import sys
import types
import warnings
from pathlib import Path

_DATA = json.loads((Path(__file__).with_name("rclpy_humble_api.json")).read_text())
API: dict = _DATA["modules"]
SOURCE: str = _DATA["source"]
REFUSED: list[str] = []


def _classes() -> dict[str, list[dict]]:
    index: dict[str, list[dict]] = {}
    for module in API.values():
        for name, spec in module["classes"].items():
            index.setdefault(name, []).append(spec)
    return index


_CLASSES = _classes()


def humble_members(class_name: str, _seen: frozenset = frozenset()) -> dict[str, dict | None]:
    """Class-level names of Humble's class ``class_name`` and its bases -> parameters (None: not a function)."""
    members: dict[str, dict | None] = {}
    for spec in _CLASSES.get(class_name, []):
        for base in spec["bases"]:
            if base not in _seen:
                members.update(humble_members(base, _seen | {class_name}))
        members.update(spec["members"])
    return members


def _lisa_ros_caller(frame) -> str | None:
    """'module:line' when ``frame`` runs lisa_ros code, else None."""
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    if name == "lisa_ros" or name.startswith("lisa_ros."):
        return f"{name}:{frame.f_lineno}"
    return None


def _refuse(what: str, where: str, error: type[Exception]) -> Exception:
    REFUSED.append(f"{what} {where}")
    print(f"HUMBLE-REFUSED {what} {where}", flush=True)
    return error(f"{what} is not in Humble's rclpy ({SOURCE})")


def _checked(function, what: str, humble: dict, skip_first: bool, fetched_by: str | None = None):
    """``function`` refusing arguments Humble's version does not take, when lisa_ros calls it or
    fetched it (``fetched_by``: a bound method handed to a thread or a partial is checked too)."""
    positional = humble["positional"][1:] if skip_first else humble["positional"]
    names = set(humble["positional"]) | set(humble["keyword_only"])

    @functools.wraps(function)
    def call(*args, **kwargs):
        where = fetched_by or _lisa_ros_caller(sys._getframe(1))
        if where:
            extra = [k for k in kwargs if k not in names]
            if extra and not humble["var_keyword"]:
                raise _refuse(f"{what}({', '.join(extra)}=...)", where, TypeError)
            if len(args) > len(positional) and not humble["var_positional"]:
                raise _refuse(f"{what}(+{len(args) - len(positional)} positional)", where, TypeError)
        return function(*args, **kwargs)
    return call


class _Member:
    """A class attribute as Humble has it (a non-data descriptor: instance attributes still win)."""

    def __init__(self, original, what: str, humble: dict | None, present: bool):
        self.original, self.what, self.humble, self.present = original, what, humble, present

    def __get__(self, obj, objtype=None):
        where = _lisa_ros_caller(sys._getframe(1))
        if where and not self.present:
            raise _refuse(self.what, where, AttributeError)
        original = self.original
        value = original.__get__(obj, objtype) if hasattr(type(original), "__get__") else original
        # Not wrapped where Humble's takes **kwargs: nothing to refuse, and rclpy's loggers tell
        # their call sites apart by the caller's frame, which a wrapper would replace.
        if where and self.humble is not None and not self.humble["var_keyword"] and isinstance(
                original, (types.FunctionType, classmethod, staticmethod)):
            skip_first = isinstance(original, classmethod) or (isinstance(original, types.FunctionType)
                                                               and obj is not None)
            return _checked(value, self.what, self.humble, skip_first, fetched_by=where)
        return value


def _property(original: property, what: str):
    """A property Humble lacks: refused to lisa_ros, unchanged for everyone else."""
    def fget(obj):
        where = _lisa_ros_caller(sys._getframe(1))
        if where:
            raise _refuse(what, where, AttributeError)
        return original.__get__(obj, type(obj))
    return property(fget, original.fset, original.fdel, original.__doc__)


class _HumbleModule(types.ModuleType):
    """An rclpy module whose names, seen from lisa_ros, are Humble's."""

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if name.startswith("__"):
            return value
        where = _lisa_ros_caller(sys._getframe(1))
        if where:
            module = super().__getattribute__("__name__")
            spec = API[module]
            if name not in spec["names"] and f"{module}.{name}" not in API:
                raise _refuse(f"{module}.{name}", where, AttributeError)
            if isinstance(value, types.FunctionType) and name in spec["functions"]:
                return _checked(value, f"{module}.{name}", spec["functions"][name], skip_first=False, fetched_by=where)
        return value


_real_import = builtins.__import__
_real_import_module = importlib.import_module


def _newer_module(name: str) -> bool:
    return (name == "rclpy" or name.startswith("rclpy.")) and name not in API


def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and globals is not None and _newer_module(name):
        importer = globals.get("__name__", "")
        if importer == "lisa_ros" or importer.startswith("lisa_ros."):
            raise _refuse(f"import {name}", importer, ImportError)
    return _real_import(name, globals, locals, fromlist, level)


def _import_module(name, package=None):
    where = _lisa_ros_caller(sys._getframe(1))
    if where and _newer_module(name):
        raise _refuse(f"import {name}", where, ImportError)
    return _real_import_module(name, package)


# The special methods a newer rclpy may add that change what lisa_ros code can do with an object
# (``with node:``, iterating, awaiting); other dunders are Python's own.
_PROTOCOL_METHODS = {"__init__", "__enter__", "__exit__", "__aenter__", "__aexit__", "__iter__", "__next__",
                     "__await__", "__len__", "__contains__", "__getitem__"}


def _patchable(name: str) -> bool:
    return name in _PROTOCOL_METHODS or not name.startswith("_")


def shape() -> None:
    """Shape the installed rclpy to Humble's API for lisa_ros code. Call before importing lisa_ros."""
    modules = []
    for name in API:
        try:
            with warnings.catch_warnings():  # Kilted warns that rclpy.qos_event is deprecated
                warnings.simplefilter("ignore")
                modules.append(importlib.import_module(name))
        except ImportError:  # gone since Humble (e.g. rclpy.qos_event): lisa_ros cannot use it either
            continue
    # Every class first, then the changes, so a class patched early does not hide a base's original.
    plans = []
    for module in modules:
        for value in list(vars(module).values()):
            if (not inspect.isclass(value) or not value.__module__.startswith("rclpy")
                    or issubclass(value, enum.Enum) or value.__name__ not in _CLASSES):
                continue
            members = humble_members(value.__name__)
            for attribute in dir(value):
                if _patchable(attribute):
                    plans.append((value, attribute, inspect.getattr_static(value, attribute), members))
    done = set()
    for cls, attribute, original, members in plans:
        if (cls, attribute) in done:
            continue
        done.add((cls, attribute))
        if hasattr(type(original), "__set__") and not isinstance(original, property):
            continue  # __slots__ entries and other data descriptors: instance data, not API
        what = f"{cls.__module__}.{cls.__name__}.{attribute}"
        present = attribute in members
        if attribute.startswith("__") and not isinstance(original, types.FunctionType):
            continue  # object's own (e.g. a class that builds itself in __new__ has object.__init__)
        if attribute == "__init__":  # every class has one: check the arguments Humble's took
            present = True
            if "__init__" not in members:
                members = dict(members, __init__=members.get("__new__"))
        if isinstance(original, property):
            if not present:
                setattr(cls, attribute, _property(original, what))
            elif attribute not in vars(cls):
                setattr(cls, attribute, original)  # keep it visible if a base's copy is hidden
        else:
            setattr(cls, attribute, _Member(original, what, members.get(attribute), present))
    for module in modules:
        module.__class__ = _HumbleModule
    builtins.__import__ = _import
    importlib.import_module = _import_module
