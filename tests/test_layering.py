"""The architecture as a test: locks, transactions and writes live in the store layer; the state machine is pure."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jobtrack"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_begin_pragma_and_the_file_lock_only_in_store_db() -> None:
    pattern = re.compile(r"\bBEGIN\b|PRAGMA (?!table_info)|import filelock|lock_descriptor")
    offenders = [name for name, text in _sources().items() if pattern.search(text) and name != "store/db.py"]
    assert offenders == []


def test_rows_are_written_only_by_the_store_package() -> None:
    pattern = re.compile(r"\b(INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")
    offenders = [name for name, text in _sources().items() if pattern.search(text) and not name.startswith("store/")]
    assert offenders == []


def test_status_changes_in_one_place() -> None:
    text = (PACKAGE / "store" / "store.py").read_text(encoding="utf-8")
    assert len(re.findall(r"SET \{", text)) == 1  # the one dynamic UPDATE of _apply_transition
    assert "status = :v_status" not in text and text.count("def _apply_transition") == 1
    for name, source in _sources().items():
        if name != "store/store.py":
            assert "SET status" not in source, name


def test_the_state_machine_imports_no_io() -> None:
    tree = ast.parse((PACKAGE / "states.py").read_text(encoding="utf-8"))
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert imported <= {"__future__", "enum", "types", "typing", "jobtrack.errors"}
