"""The compiled hot paths (scripts/build_native.py): what compiled code refuses is not done."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import ocs

ROOT = Path(__file__).resolve().parents[2]


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "scripts/build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = {path.removesuffix(".py").replace("/", ".") for path in _build_script().NATIVE}


def _every_module() -> list[ModuleType]:
    out = []
    for info in pkgutil.walk_packages(ocs.__path__, "ocs."):
        if info.name.startswith("ocs.api"):  # FastAPI, far from the hot paths; slow to import
            continue
        out.append(importlib.import_module(info.name))
    return out


def test_the_listed_modules_exist() -> None:
    for name in NATIVE:
        assert importlib.util.find_spec(name) is not None, name


def test_no_class_outside_the_compiled_modules_subclasses_one_inside() -> None:
    """Compiled code checks that a value is of a compiled class exactly: a Python subclass of
    it is refused (``SpoolUnwritable(SpoolFull)`` once made a full spool crash the CCR)."""
    offenders = []
    for module in _every_module():
        if module.__name__ in NATIVE:
            continue
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            offenders.extend(
                f"{cls.__module__}.{cls.__qualname__}({base.__module__}.{base.__qualname__})"
                for base in cls.__mro__[1:]
                if base.__module__ in NATIVE
            )
    assert offenders == []


def test_ci_tests_the_compiled_modules() -> None:
    """With CI=true the suite runs against what ``make run`` runs: every listed module
    compiled (or, with OCS_NATIVE=0, none)."""
    for name in NATIVE:
        importlib.import_module(name)
    compiled = {n for n in ocs.compiled_modules() if n in NATIVE}
    if os.environ.get("OCS_NATIVE") == "0":
        assert compiled == set()
        assert all(not str(sys.modules[n].__file__).endswith(".so") for n in NATIVE)
    elif os.environ.get("CI") == "true":
        assert compiled == NATIVE
    assert ocs.stale_compiled() == []
