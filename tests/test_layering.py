"""The architecture as a test (issue 12): locks, transactions and writes live in the store layer; one
function changes a status; the state machine, the errors and the process runtime import nothing else of
jobtrack; modules stay small; the tests use only public names of jobtrack."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jobtrack"
TESTS = ROOT / "tests"
MAX_LINES = 450


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def _jobtrack_imports(relative: str) -> set[str]:
    """The jobtrack modules (and names) that a module of the package imports, anywhere in it."""
    path = PACKAGE / relative
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(("jobtrack", *Path(relative).with_suffix("").parts[:-1]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "jobtrack"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: always within jobtrack
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module or ''}".rstrip("."))
            elif node.module and node.module.split(".")[0] == "jobtrack":
                found.add(node.module)
    return found


def test_no_module_is_over_450_lines() -> None:
    sizes = {name: text.count("\n") + (not text.endswith("\n")) for name, text in _sources().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_begin_pragma_and_the_file_lock_only_in_store_db() -> None:
    pattern = re.compile(r"\bBEGIN\b|PRAGMA (?!table_info)|import filelock|lock_descriptor")
    offenders = [name for name, text in _sources().items() if pattern.search(text) and name != "store/db.py"]
    assert offenders == []


def test_rows_are_written_only_by_the_store_package() -> None:
    pattern = re.compile(r"\b(INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")
    offenders = [name for name, text in _sources().items() if pattern.search(text) and not name.startswith("store/")]
    assert offenders == []


# -- one function changes a status ---------------------------------------------------------------------------


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function of a module with its qualified name (``Class.method``), nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def _sql_text(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's string literals in source order, joined: its SQL as written (``{}`` for f-string fields)."""
    docstring = ast.get_docstring(fn, clean=False)
    parts = {id(v) for j in ast.walk(fn) if isinstance(j, ast.JoinedStr) for v in j.values}
    pieces: list[tuple[int, int, str]] = []
    for node in ast.walk(fn):
        if isinstance(node, ast.JoinedStr) and id(node) not in parts:
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            pieces.append((node.lineno, node.col_offset, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value != docstring \
                and id(node) not in parts:
            pieces.append((node.lineno, node.col_offset, node.value))
    return "".join(text for _, _, text in sorted(pieces))


def _status_writers() -> dict[str, list[str]]:
    """Functions of the package whose SQL updates ``jobs`` with a dynamic column list or sets ``status``."""
    writers: dict[str, list[str]] = {}
    for name, source in _sources().items():
        for qualname, fn in _functions(ast.parse(source)):
            sql = _sql_text(fn)
            for match in re.finditer(r"UPDATE\s+jobs\s+SET\s+(.*?)(?:\bWHERE\b|$)", sql, re.S | re.I):
                assignments = match.group(1)
                if "{" in assignments or re.search(r"(^|[\s,])status\s*=", assignments):
                    writers.setdefault(f"{name}::{qualname}", []).append(assignments.strip())
    return writers


def test_status_changes_in_one_place() -> None:
    # The one dynamic UPDATE is FencedCore._apply_transition's; no other statement sets a status.
    assert list(_status_writers()) == ["store/core.py::FencedCore._apply_transition"]
    for name, source in _sources().items():
        assert "SET status" not in source, name
        assert source.count("def _apply_transition") == (1 if name == "store/core.py" else 0), name
    core = (PACKAGE / "store" / "core.py").read_text(encoding="utf-8")
    assert len(re.findall(r"UPDATE jobs SET \{", core)) == 1
    assert "status = :v_status" not in core  # the column list is built from the values, not written out


def test_the_status_writer_is_found_if_another_appears() -> None:
    # The check above can fail: a second function that sets a status is reported.
    tree = ast.parse('def sneaky(tx):\n    tx.run("UPDATE jobs SET reason = :r, " "status = :s WHERE id = :id")\n'
                     'def fine(tx):\n    tx.run("UPDATE jobs SET reason = :r WHERE id = :id AND status = :s")\n')
    found = {q: _sql_text(f) for q, f in _functions(tree)}
    assert re.search(r"(^|[\s,])status\s*=", found["sneaky"].split("WHERE")[0])
    assert not re.search(r"(^|[\s,])status\s*=", found["fine"].split("WHERE")[0].split("SET")[1])


def test_no_call_moves_a_job_back_to_queued() -> None:
    # A job is created QUEUED and never returns there: no call of _apply_transition names QUEUED (or
    # INITIAL) as the new status, and every call passes the state machine's check, which refuses X -> QUEUED.
    calls = 0
    for name, source in _sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "_apply_transition":
                calls += 1
                new = node.args[3] if len(node.args) > 3 else next(k.value for k in node.keywords if k.arg == "new")
                assert ast.unparse(new) not in ("JobStatus.QUEUED", "INITIAL", "'QUEUED'"), (name, node.lineno)
    assert calls >= 5  # claim, finish, fail_unclaimed, record_verdict, request_cancel, cancel_process_jobs


# -- what imports what ---------------------------------------------------------------------------------------


def test_the_state_machine_imports_no_io() -> None:
    tree = ast.parse((PACKAGE / "states.py").read_text(encoding="utf-8"))
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert imported <= {"__future__", "collections.abc", "enum", "types", "typing"}


def test_states_errors_and_runtime_import_nothing_else_of_jobtrack() -> None:
    # The bottom layer: every other module may use them, so they use none (no import circles).
    assert {name: _jobtrack_imports(name) for name in ("states.py", "runtime.py", "background.py")} == {
        "states.py": set(), "runtime.py": {"jobtrack.background"}, "background.py": set()}
    # The errors package imports only its own modules.
    for path in sorted((PACKAGE / "errors").glob("*.py")):
        imported = _jobtrack_imports(str(path.relative_to(PACKAGE)))
        assert all(name.startswith("jobtrack.errors.") for name in imported), (path.name, imported)


def test_the_import_check_sees_every_spelling() -> None:
    # The check above can fail: each way of importing jobtrack is found.
    probe = PACKAGE / "states.py"
    assert _jobtrack_imports(str(probe.relative_to(PACKAGE))) == set()
    tree_text = "import jobtrack.store\nfrom jobtrack import errors\nfrom . import timeutil\ndef f():\n" \
                "    from jobtrack.runtime import current\n"
    found = set()
    for node in ast.walk(ast.parse(tree_text)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "." * node.level)
    assert found == {"jobtrack.store", "jobtrack", ".", "jobtrack.runtime"}


def test_one_at_fork_hook_in_runtime() -> None:
    hooks = {name: text.count("register_at_fork") for name, text in _sources().items() if "register_at_fork" in text}
    assert hooks == {"runtime.py": 1}


# -- the records and the table agree ---------------------------------------------------------------------------


def test_job_record_fields_are_the_columns_of_the_jobs_table() -> None:
    # Columns are declared twice (the SQLModel table and the typed record); this ties them together.
    from jobtrack.store.models import Job
    from jobtrack.store.records import FIELDS

    fields = [name.replace("_iso", "_at") for name in FIELDS]
    columns = [c.name for c in Job.__table__.columns]  # type: ignore[attr-defined]
    assert len(fields) == len(set(fields))
    assert sorted(fields) == sorted(columns)


# -- tests use public names only -----------------------------------------------------------------------------

PRIVATE = re.compile(r"^_(?!_)")


def _private_uses(tree: ast.AST, where: str) -> list[str]:
    """``x._name`` where ``x`` is jobtrack's (a jobtrack module, or any object but ``self``/``cls`` and
    modules from elsewhere), ``from jobtrack... import _name``, and the same in code held in strings."""
    outside: set[str] = {"self", "cls"}  # the test's own objects
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            outside |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("jobtrack")}
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("jobtrack") and not node.level:
            outside |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jobtrack"):
            found += [f"{where}:{node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if PRIVATE.match(a.name)]
        elif isinstance(node, ast.Attribute) and PRIVATE.match(node.attr):
            root = node.value
            while isinstance(root, (ast.Attribute, ast.Call, ast.Subscript)):
                root = root.func if isinstance(root, ast.Call) else root.value
            if not (isinstance(root, ast.Name) and root.id in outside):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and _called(node) in ("getattr", "setattr", "delattr") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str) and PRIVATE.match(node.args[1].value):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")  # also monkeypatch.setattr(m, "_x", ...)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "jobtrack" in node.value:
            try:  # code run in a child process
                inner = ast.parse(node.value)
            except SyntaxError:
                continue
            found += _private_uses(inner, f"{where}:{node.lineno} (code in a string)")
    return found


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _test_files() -> list[Path]:
    # This file is left out: its own examples of what the check finds are private names, on purpose.
    found = [*TESTS.rglob("*.py"), *(ROOT / "examples").rglob("test_*.py")]
    return sorted(p for p in found if p.resolve() != Path(__file__).resolve())


def test_tests_use_no_private_name_of_jobtrack() -> None:
    offenders = []
    for path in _test_files():
        offenders += _private_uses(ast.parse(path.read_text(encoding="utf-8")), str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_private_name_check_finds_what_it_should() -> None:
    # The check above can fail: each way of reaching in is reported, and the allowed uses are not.
    code = '''
import os
from jobtrack import jsonutil, timeutil
from jobtrack.store import Store
from jobtrack.timeutil import _set_clock_offset
class Machine:
    def step(self):
        self._pick(1)
def test(store, monitor):
    os._exit(0)
    store._apply_transition(None)
    monitor._store.get_job("x")
    Store._instances.clear()
    jsonutil._orjson
    store.db._raw().execute("PRAGMA x")
    getattr(timeutil, "_clock_offset")
    monkeypatch.setattr(jsonutil, "_orjson", None)
    child = "from jobtrack import jsonutil\\nassert jsonutil._orjson is None\\n"
'''
    found = _private_uses(ast.parse(code), "t")
    reached = sorted(line.split(": ", 1)[1] for line in found)
    assert reached == sorted([
        "from jobtrack.timeutil import _set_clock_offset",
        "store._apply_transition",
        "monitor._store",
        "Store._instances",
        "jsonutil._orjson",
        "store.db._raw",
        "getattr(timeutil, '_clock_offset')",
        "monkeypatch.setattr(jsonutil, '_orjson', None)",
        "jsonutil._orjson",
    ])
