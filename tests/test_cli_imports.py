"""The command line starts like a small script: what `import jobtrack.cli` and `jobtrack status` import (#14).

Each check runs a fresh interpreter (the test process has imported everything already) and reads its
``sys.modules``; a heavy import put back at the top of a CLI module fails here rather than silently
slowing every command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobtrack import Dataset, Trainer, runtime

NEVER_AT_IMPORT = ("sqlalchemy", "sqlmodel", "dateutil", "jobtrack.query", "jobtrack.store", "jobtrack.manager",
                   "starlette", "uvicorn", "filelock", "secrets", "socket", "jobtrack.listcli", "jobtrack.sweepcli",
                   "jobtrack.expcli", "jobtrack.bundlecli", "jobtrack.uicli", "jobtrack.retrycli")
"""Not imported by ``import jobtrack.cli``: the subcommands' modules load only when their command runs."""

NEVER_FOR_STATUS = ("sqlalchemy", "sqlmodel", "dateutil", "starlette", "uvicorn", "filelock", "secrets", "socket",
                    "jobtrack.listcli", "jobtrack.sweepcli", "jobtrack.bundlecli", "jobtrack.uicli", "difflib",
                    "hashlib", "html", "jobtrack.store.store", "jobtrack.store.db", "jobtrack.query",
                    "jobtrack.manager", "jobtrack.monitor", "jobtrack.runtime", "jobtrack.jsonutil", "orjson",
                    "logging", "shutil", "pathlib", "jobtrack.errors")
"""Not imported while ``jobtrack status ID`` reads a finished job of a SQLite file: the fast path
(``jobtrack.store.peek``) reads it with sqlite3 alone, without the Store (#14)."""

_PROBE = """
import json, sys
from jobtrack.cli import main
code = main(sys.argv[1:]) if len(sys.argv) > 1 else None
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _without_coverage() -> dict[str, str]:
    """The environment minus CI's coverage start-up, which imports socket, hashlib, html... itself."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


def _loaded(*argv: str, env: dict[str, str] | None = None) -> tuple[int | None, set[str], str]:
    """Run ``main(argv)`` (or only the import, without argv) in a new interpreter: (exit code, modules, stdout)."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env={**_without_coverage(), **(env or {})}, check=True)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), proc.stdout


def _imported(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_import_cli_loads_no_heavy_module() -> None:
    _, modules, _ = _loaded()
    assert "jobtrack.cli" in modules  # the probe did import it
    assert _imported(modules, NEVER_AT_IMPORT) == []


@pytest.mark.parametrize("open_here", [True, False], ids=["database-open-elsewhere", "database-closed"])
def test_status_of_a_finished_job_loads_no_heavy_module(tmp_path: Path, open_here: bool) -> None:
    db = str(tmp_path / "jobs.db")
    job = Trainer(lambda ctx: {"ok": True}, db=db, runner="eager").fit(
        Dataset("d", "binary_classification", "t", tables={"train": [{"x": 1}]}))
    if not open_here:  # no -wal/-shm: read immutable; else read through the WAL this process keeps
        runtime.close_all()
    code, modules, out = _loaded("status", job.job_id[:8], env={"JOBTRACK_DB": db})
    assert code == 0
    assert json.loads(out)["status"] == "COMPLETED"
    assert _imported(modules, NEVER_FOR_STATUS) == []
    assert "jobtrack.store.peek" in modules


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["sweep", "run", "--help"], ["nope"], []])
def test_help_and_usage_errors_still_list_every_command(argv: list[str]) -> None:
    """Only a named command's parser is built; --help and errors still see (and name) every command."""
    proc = subprocess.run([sys.executable, "-m", "jobtrack", *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    text = proc.stdout + proc.stderr
    if argv in (["--help"], ["nope"]):
        for name in ("list", "status", "migrate", "export", "compare", "report", "retry", "sweep"):
            assert name in text
    assert proc.returncode == (0 if "--help" in argv else 2)
