"""ocs.core imports only pure standard-library modules (no asyncio, I/O, clock or packages).

import-linter (``make test`` runs ``lint-imports``) forbids a list of modules; this test is the
stricter allow-list, so a new import has to be looked at before it lands.
"""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "src" / "ocs" / "core"
ALLOWED = {
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "__future__",
    "collections.abc",
    "typing",
    "re",  # pure text matching (the identity check scans non-ASCII text with one regex)
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_core_imports_only_pure_stdlib() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        outside = {m for m in imported_modules(path) if not m.startswith("ocs.core")} - ALLOWED
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_core_never_reads_the_clock() -> None:
    for path in sorted(CORE.glob("*.py")):
        text = path.read_text()
        for call in ("datetime.now(", "datetime.utcnow(", "date.today(", "time.time("):
            assert call not in text, f"{path.name} calls {call}: take `now` as an argument"
