"""ocs: an online charging daemon (RADIUS and Diameter credit control)."""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

_EXTENSIONS = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compiled_modules() -> list[str]:
    """The imported ``ocs`` modules that run compiled (``scripts/build_native.py``)."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("ocs.") and str(getattr(module, "__file__", "")).endswith(_EXTENSIONS)
    )


def stale_compiled() -> list[str]:
    """Compiled modules older than their Python source: an edit not compiled yet, which the
    extension module shadows until ``scripts/build_native.py`` runs again."""
    out = []
    for name in compiled_modules():
        built = str(getattr(sys.modules[name], "__file__", ""))
        source = built[: -len(next(s for s in _EXTENSIONS if built.endswith(s)))] + ".py"
        try:
            if os.stat(source).st_mtime > os.stat(built).st_mtime:
                out.append(name)
        except OSError:
            continue
    return out


class _FromSource:
    """With ``OCS_NATIVE=0``, every ``ocs`` module is imported from its Python source, even
    where the extension module compiled from it lies beside it (Python would prefer that)."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith("ocs.") or not path:
            return None
        loader = (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, loader).find_spec(name, target)
            if spec is not None:
                return spec
        return None


if os.environ.get("OCS_NATIVE") == "0" and not any(
    isinstance(f, _FromSource) for f in sys.meta_path
):
    sys.meta_path.insert(0, _FromSource())
