"""Compile the request hot paths to C extension modules with mypyc (part of mypy).

The modules listed in ``NATIVE`` are compiled from their typed Python source, unchanged, and
the extension modules are put beside the sources (``src/ocs/.../name.cpython-*.so``), where
Python imports them before the ``.py``. The Python source stays the one truth: without a
compiler (or with ``OCS_NATIVE=0``) nothing is built and the same code runs interpreted,
slower (the README's Performance section gives both).

    .venv/bin/python scripts/build_native.py           # build what is out of date
    .venv/bin/python scripts/build_native.py --clean   # remove the extension modules
    .venv/bin/python scripts/build_native.py --check   # exit 1 if any is missing or stale

A module is out of date when its source, or this script, is newer than its extension module;
mypyc compiles the listed modules together (they call each other natively), so one stale
module rebuilds all of them (about a minute on two cores).

Compiled code differs from interpreted code in ways the test suite covers: a native class
takes no attribute that is not declared, checks argument types at call time, and cannot be
built with ``object.__new__`` (``ocs.core.trusted`` falls back to the constructor). Modules
whose classes depend on such tricks (``ocs.core.model``, ``ocs.core.destinations``) are not in
the list; the enumerations ``ocs.core.model`` uses are (``ocs.core.enums``), since compiled
code reads a member of a compiled enumeration as a constant, and so are the values every
request makes (``ocs.core.values``: the session request, the decision, the usage), which
``ocs.core.model`` re-exports.

A dataclass's generated ``__init__`` runs interpreted even in a compiled module (about 0.6 µs
for a frozen one of four fields, against 0.02 µs for a compiled ``__init__``): a class built
once per request in these modules is a plain class (``radius.codec.Packet``) or a dataclass
with ``init=False`` and its own ``__init__`` (``ocs.core.trusted.assigning_init`` says how).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# The modules every request goes through, in the order a request meets them.
NATIVE = (
    "ocs/radius/codec.py",
    "ocs/radius/front.py",
    "ocs/radius/profiles.py",
    "ocs/diameter/framer.py",
    "ocs/diameter/codec.py",
    "ocs/diameter/credit_control.py",
    "ocs/diameter/server.py",
    "ocs/diameter/handler.py",
    "ocs/core/enums.py",
    "ocs/core/identity.py",
    "ocs/core/money.py",
    "ocs/core/values.py",
    "ocs/core/credit.py",
    "ocs/core/rating.py",
    "ocs/core/ledger.py",
    "ocs/charging/cache.py",
    "ocs/charging/table.py",
    "ocs/charging/sessions.py",
    "ocs/charging/pipeline.py",
    "ocs/tally.py",
    "ocs/store/source.py",  # the usage writer: plans and encodes every batch of reports
)

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def extension(source: str) -> Path:
    return SRC / (source.removesuffix(".py") + SUFFIX)


def stale() -> list[str]:
    """The listed modules whose extension is missing or older than its source or this file."""
    script = Path(__file__).stat().st_mtime
    out = []
    for source in NATIVE:
        built = extension(source)
        if not built.exists():
            out.append(source)
            continue
        mtime = built.stat().st_mtime
        if mtime < (SRC / source).stat().st_mtime or mtime < script:
            out.append(source)
    return out


def built_files() -> list[Path]:
    """Every extension module this script may have made (the listed ones and mypyc's shared
    runtime library at the top of ``src``), also those of modules no longer listed."""
    found = [p for p in SRC.rglob(f"*{SUFFIX}") if p.parent != SRC or "__mypyc" in p.name]
    return sorted(found)


def clean() -> None:
    for path in built_files():
        path.unlink()


def _cannot(why: str) -> int:
    """Without what compiling needs, the same code runs interpreted; in CI that is an error
    (the suite would not test what ``make run`` runs elsewhere)."""
    print(f"build_native: {why}; the hot paths run interpreted (slower)", file=sys.stderr)
    return 1 if os.environ.get("CI") == "true" else 0


def build() -> int:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return _cannot(f"no C compiler ({compiler}; Debian: apt-get install build-essential)")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return _cannot("no Python headers (Debian: apt-get install python3-dev)")
    clean()  # a module dropped from the list must not shadow its source any longer
    with tempfile.TemporaryDirectory(prefix="ocs-mypyc-") as tmp:
        env = dict(os.environ, MYPYC_OPT_LEVEL="3")
        command = [
            sys.executable,
            "-c",
            _SETUP,
            tmp,
            *NATIVE,
        ]
        done = subprocess.run(
            command, check=False, cwd=SRC, env=env, capture_output=True, text=True
        )
    if done.returncode != 0:
        clean()
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        return _cannot("mypyc failed (above)")
    missing = [s for s in NATIVE if not extension(s).exists()]
    if missing:
        clean()
        return _cannot(f"mypyc made no module for {missing}")
    print(f"build_native: {len(NATIVE)} hot-path modules compiled (mypyc)")
    return 0


# Run in ``src`` by ``build``: mypyc's own setuptools entry point, with its generated C and
# the object files in a temporary directory, the extension modules put in place.
_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
tmp, paths = sys.argv[1], sys.argv[2:]
modules = mypycify(
    ["--config-file=", "--ignore-missing-imports", f"--cache-dir={tmp}/cache", *paths],
    opt_level="3",
    target_dir=tmp,
)
setup(
    name="ocs-native",
    ext_modules=modules,
    script_args=["-q", "build_ext", "--inplace", "--build-temp", tmp, "--build-lib", tmp],
)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the extension modules")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if any module is missing or stale"
    )
    args = parser.parse_args()
    if args.clean:
        clean()
        return 0
    out_of_date = stale()
    if args.check:
        for source in out_of_date:
            print(f"build_native: {source} is not compiled or older than its source")
        return 1 if out_of_date else 0
    if os.environ.get("OCS_NATIVE", "1") == "0":
        clean()
        print("build_native: OCS_NATIVE=0; the hot paths run interpreted")
        return 0
    if not out_of_date:
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
