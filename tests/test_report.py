"""``jobtrack report`` (#16): one self-contained HTML file, on a core install, with every user value escaped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, InvalidArgument, JobNotFound, Trainer
from jobtrack.cli import main
from jobtrack.report import build_report, write_report
from jobtrack.store import Store
from proc import run_python

EVIL = "<script>alert('x')</script>"


def _train(ctx: Any) -> dict[str, Any]:
    for epoch in range(1, 6):
        ctx.log_epoch(epoch, train={"loss": 1 / epoch, "acc": epoch / 10}, validation={"rmse": 3 - epoch / 3})
    ctx.log(EVIL)
    return {"summary": EVIL}


def _predict(ctx: Any) -> dict[str, Any]:
    ctx.export("predictions", [{"id": 1, "cell": EVIL}])
    return {}


@pytest.fixture
def jobs(db_path: str) -> list[str]:
    data = Dataset("rep", "regression", "t", tables={"train": [{"x": 1}], "test": [{"x": 1}]})
    first = Trainer(_train, _predict, db=db_path, runner="eager", config={"note": EVIL, "lr": 0.1})
    second = Trainer(_train, db=db_path, runner="eager", config={"note": "plain", "lr": 0.2})
    return [first.fit_predict(data, "o1").job_id, second.fit(data).job_id]


def test_the_report_holds_the_table_each_jobs_curves_and_the_comparison(db_path: str, jobs: list[str],
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "runs.html"
    info = write_report(out, db_path)
    text = out.read_text(encoding="utf-8")
    assert info.bytes == len(text.encode()) and set(info.job_ids) == set(jobs)
    for job_id in jobs:
        assert f'id="job-{job_id}"' in text and f'href="#job-{job_id}"' in text
    # per job: loss, acc and rmse charts; the comparison: one per split and metric
    assert text.count('<svg class="chart"') == 2 * 3 + 3
    assert 'id="compare"' in text and ("config: lr" in text or "config.lr" in text)
    assert "best epoch" in text


def test_the_comparison_shows_values_as_jobtrack_compare_does(db_path: str, tmp_path: Path) -> None:
    data = Dataset("rep", "regression", "t", tables={"train": [{"x": 1}]})
    for flag in (True, False):
        Trainer(_train, db=db_path, runner="eager", config={"flag": flag}, tags=[f"t{int(flag)}"]).fit(data)
    write_report(tmp_path / "r.html", db_path)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    compared = text[text.index('id="compare"'):text.index("Same in all")]
    assert "<td>true</td>" in compared and "<td>false</td>" in compared and "True" not in compared
    assert "job: tags" in compared and "time: tags" not in compared  # tags are the job's, not a time
    assert re.search(r"<td>\d+\.\ds</td>", text)  # a duration in seconds, as `jobtrack compare` prints it


def test_the_report_fetches_nothing(db_path: str, jobs: list[str], tmp_path: Path) -> None:
    text = build_report(Store.open(db_path, read_only=True), jobs)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|/)""", text)  # no URL but in-page anchors
    assert "@import" not in text and "url(" not in text and "<link" not in text
    assert "default-src 'none'" in text  # and the file's own policy forbids any request


def test_the_report_escapes_config_summary_and_export_cells(db_path: str, jobs: list[str]) -> None:
    text = build_report(Store.open(db_path, read_only=True), jobs)
    assert EVIL not in text and "<script>alert" not in text
    assert text.count("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;") >= 3  # config, summary, export cell


def test_report_of_named_jobs_and_errors(db_path: str, jobs: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.html"
    assert main(["report", jobs[1][:-3], "-o", str(out), "--db", db_path]) == 0
    assert "1 job(s)" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert jobs[1] in text and jobs[0] not in text and 'id="compare"' not in text
    with pytest.raises(JobNotFound):
        write_report(out, db_path, ["job_nope"])
    with pytest.raises(InvalidArgument, match="not both"):
        write_report(out, db_path, [jobs[0]], where="status = 'COMPLETED'")
    with pytest.raises(InvalidArgument, match="choose another -o"):
        write_report(tmp_path / "no" / "such" / "dir.html", db_path)
    assert main(["report", "-o", str(out), "--db", str(tmp_path / "missing.db")]) == 1
    assert not (tmp_path / "missing.db").exists()


def test_report_by_query(db_path: str, jobs: list[str], tmp_path: Path) -> None:
    if not hasattr(Store, "search_ids"):
        pytest.skip("this version of jobtrack has no query language")
    info = write_report(tmp_path / "q.html", db_path, where="config.lr > 0.15")
    assert info.job_ids == [jobs[1]]


def test_report_needs_no_web_stack(db_path: str, jobs: list[str], tmp_path: Path) -> None:
    # The report is core: with starlette and uvicorn made unimportable it still writes its file.
    code = ("import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
            "from jobtrack.cli import main\n"
            f"assert main(['report', '-o', {str(tmp_path / 'core.html')!r}, '--db', {db_path!r}]) == 0\n"
            "assert 'starlette' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "core.html").stat().st_size > 1000


def test_ui_without_the_extra_names_it(db_path: str, jobs: list[str], monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.setitem(sys.modules, "jobtrack.ui.server", None)
    assert main(["ui", "--db", db_path]) == 1
    assert "pip install 'jobtrack[ui]'" in capsys.readouterr().err


def test_pages_of_jobs_sorted_by_best_metric_put_jobs_without_one_last(db_path: str) -> None:
    # The report and the dashboard share these pages (Store.dashboard_page): every order, every page.
    data = Dataset("page", "regression", "t", tables={"train": [{"x": 1}]})
    values = [0.5, None, 0.2, 0.9, None, 0.7]
    ids = []
    for value in values:
        def train(ctx: Any, value: Any = value) -> None:
            if value is not None:
                ctx.log_epoch(1, validation={"rmse": value})
        ids.append(Trainer(train, db=db_path, runner="eager").fit(data).job_id)
    store = Store.open(db_path, read_only=True)
    best = {j: store.get_job(j).best_metric for j in ids}
    if all(v is None for v in best.values()):
        pytest.skip("this version does not store best_metric")
    for descending in (True, False):
        whole = [r.id for r in store.dashboard_page(sort="best", descending=descending, limit=None)[1]]
        paged = [r.id for k in range(3) for r in store.dashboard_page(sort="best", descending=descending,
                                                                         offset=2 * k, limit=2)[1]]
        assert paged == whole and sorted(whole) == sorted(ids)
        known = [best[j] for j in whole if best[j] is not None]
        assert known == sorted(known, reverse=descending)
        assert all(best[j] is None for j in whole[len(known):])  # no value: last either way
    total, page = store.dashboard_page(sort="created", offset=4, limit=10)
    assert total == 6 and [r.id for r in page] == ids[:2][::-1]


def test_a_report_of_the_newest_jobs_says_how_many_it_left_out(db_path: str, jobs: list[str], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "newest.html"
    assert main(["report", "-o", str(out), "--db", db_path, "--limit", "1"]) == 0
    assert "the newest 1 of 2 jobs (--limit N for more" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "The newest 1 of 2 jobs from" in text and jobs[1] in text and jobs[0] not in text
    info = write_report(out, db_path)  # the default of 200 holds both: nothing is said to be left out
    assert info.total == 2 and len(info.job_ids) == 2 and "The newest" not in out.read_text(encoding="utf-8")
    assert main(["report", "-o", str(out), "--db", db_path, "--limit", "0"]) == 2
    assert "limit must be a positive integer" in capsys.readouterr().err
    assert main(["report", jobs[0], "-o", str(out), "--db", db_path, "--limit", "1"]) == 2
    assert "leave it out" in capsys.readouterr().err
    assert main(["report", "-o", str(out), "--db", db_path, "--where", "config.lr > 0", "--limit", "1"]) == 0
    assert "the newest 1 of 2 jobs" in capsys.readouterr().out  # a query's matches are capped the same way
    info = write_report(out, db_path, where="config.lr > 0", limit=1)
    assert (info.job_ids, info.total) == ([jobs[1]], 2)


def test_a_report_reads_a_server_database_as_it_reads_a_file(any_db: str, tmp_path: Path) -> None:
    """Reads (a report, the dashboard, list) open the database read-only: on a server too, creating nothing."""
    from jobtrack import JobManager
    from jobtrack.errors import DatabaseNotFound

    for _ in range(2):  # the first read created no tables, so the second finds none either
        with pytest.raises(DatabaseNotFound):
            JobManager(any_db)
        with pytest.raises(DatabaseNotFound):
            write_report(tmp_path / "none.html", any_db)
    data = Dataset("srv", "regression", "t", tables={"train": [{"x": 1}]})
    ids = [Trainer(_train, db=any_db, runner="eager").fit(data).job_id for _ in range(2)]
    info = write_report(tmp_path / "r.html", any_db)
    assert sorted(info.job_ids) == sorted(ids) and info.total == 2
    assert all(f'id="job-{j}"' in (tmp_path / "r.html").read_text(encoding="utf-8") for j in ids)


def _flat_schedule(ctx: Any) -> dict[str, Any]:
    # a learning rate that a schedule computes two ways: equal, up to float rounding (0.06999999999999999 and 0.07)
    for epoch, lr in enumerate((0.1 * 0.7, 0.1 * 7 / 10, 0.1 * 7 / 10), start=1):
        ctx.log_epoch(epoch, train={"lr": lr}, validation={"rmse": 3 - epoch / 3})
    return {}


def test_a_metric_equal_up_to_float_rounding_is_drawn_and_the_report_is_written(db_path: str, tmp_path: Path) -> None:
    data = Dataset("rep", "regression", "t", tables={"train": [{"x": 1}]})
    Trainer(_flat_schedule, db=db_path, runner="eager").fit(data)
    out = tmp_path / "flat.html"
    # in a child with an address-space cap and a deadline: the chart's tick loop used to never end, growing a list
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from jobtrack.report import write_report; write_report(sys.argv[1], sys.argv[2])")
    run_python(code, str(out), db_path, timeout=60)
    text = out.read_text(encoding="utf-8")
    chart = text[text.index('aria-label="lr"'):]
    chart = chart[:chart.index("</svg>")]
    assert chart.count('<polyline class="series"') == 1 and ">0.07</text>" in chart
