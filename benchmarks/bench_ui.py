"""The dashboard and the report (#16) at scale: 100 k jobs, a 10 k epoch job, live epochs, a 100 job report.

Targets (issue #16): the jobs page's server response <= 50 ms and its first render in headless Chromium
<= 300 ms with 100 k jobs; a job page with 10 k epochs <= 200 ms; a new epoch visible in the open page
within 1 s of ``log_epoch``; ``jobtrack report`` of 100 jobs x 50 epochs <= 2 s and <= 5 MB. The floor
of the jobs page is the same page's two queries in raw sqlite3 (count and the first 50 rows), so the
ratio shows what the web stack and the HTML cost on top. Needs the ui extra, Playwright and
/usr/bin/chromium (the browser figures are skipped without them). ``--quick``: 10 k jobs, and the report's
100 jobs are written on tmpfs when there is one (the same jobs, fewer fsyncs to wait for).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ratio_row, report
from jobtrack import Dataset, Trainer, runtime
from jobtrack.report import write_report
from jobtrack.store import Store

QUICK = "--quick" in sys.argv
CHROMIUM = os.environ.get("JOBTRACK_CHROMIUM", "/usr/bin/chromium")


def _fill(db: str, n: int, *, epochs_job: int = 10_000) -> str:
    """``n`` completed jobs (result, best metric, three events) and one with ``epochs_job`` epochs; its id."""
    Store.open(db)
    runtime.close_all()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")  # bulk loading only
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cols = ("id", "job_type", "status", "experiment_name", "created_at", "updated_at", "finished_at", "reason",
            "eval_metric", "metric_mode", "spec_json", "runner_kind", "submitter", "claim_token",
            "cancel_requested", "result_json", "export_paths_json", "source_views_json", "epoch_seq", "best_metric")
    insert = f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    events = "INSERT INTO job_events (job_id, from_status, to_status, at, reason) VALUES (?, ?, ?, ?, ?)"
    params = "INSERT INTO job_params (job_id, key, kind, num_value) VALUES (?, ?, 'number', ?)"
    jobs, evs, prs = [], [], []
    for i in range(n):
        at = (base + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        best = 0.5 + (i * 7919 % 1000) / 2000
        result = json.dumps({"eval_metric": "roc_auc", "best_epoch": 3, "best_metric": best, "summary": {}})
        spec = json.dumps({"config": {"lr": 0.01 * (i % 10), "depth": i % 7}})
        jobs.append((f"job_{i:012d}", "train", "COMPLETED", f"exp{i % 50}_binary_classification_t", at, at, at,
                     "completed", "roc_auc", "max", spec, "worker", "", 1, 0, result, "{}", "{}", 5, best))
        evs += [(f"job_{i:012d}", None, "QUEUED", at, "submitted"), (f"job_{i:012d}", "QUEUED", "RUNNING", at, "c"),
                (f"job_{i:012d}", "RUNNING", "COMPLETED", at, "completed")]
        prs += [(f"job_{i:012d}", "lr", 0.01 * (i % 10)), (f"job_{i:012d}", "depth", i % 7)]  # as config_rows does
        if len(jobs) >= 20_000 or i == n - 1:
            conn.executemany(insert, jobs)
            conn.executemany(events, evs)
            conn.executemany(params, prs)
            conn.commit()
            jobs, evs, prs = [], [], []
    big = "job_big_epochs"
    at = base.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    rows = [(big, s, s, json.dumps({"loss": 1 / s}), json.dumps({"roc_auc": 1 - 1 / (s + 1)}), at)
            for s in range(1, epochs_job + 1)]
    result = {"eval_metric": "roc_auc", "best_epoch": epochs_job, "best_metric": rows[-1][4],
              "epochs": [{"epoch": s, "train": {"loss": 1 / s}, "validation": {"roc_auc": 1 - 1 / (s + 1)}}
                         for s in range(1, epochs_job + 1)]}
    conn.execute(insert, (big, "train", "COMPLETED", "big_binary_classification_t", at, at, at, "completed",
                          "roc_auc", "max", "{}", "worker", "", 1, 0, json.dumps(result), "{}", "{}", epochs_job,
                          1 - 1 / (epochs_job + 1)))
    conn.executemany("INSERT INTO job_epochs (job_id, seq, epoch, train_json, validation_json, at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return big


def _median_ms(fn: Any, n: int) -> float:
    fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def bench_pages(tmp: Path) -> None:
    from starlette.testclient import TestClient

    from jobtrack.ui.app import create_app

    n = 10_000 if QUICK else 100_000
    db = str(tmp / "big.db")
    started = time.perf_counter()
    big = _fill(db, n)
    report("ui", f"bulk load of {n:,} jobs + one of 10,000 epochs (setup)", f"{time.perf_counter() - started:.1f} s")
    app = create_app(db, token="t")
    client = TestClient(app)
    client.get("/?token=t")
    raw = sqlite3.connect(db)
    page_sql = ("SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT 50 OFFSET 0")

    def floor() -> None:
        raw.execute("SELECT COUNT(*) FROM jobs").fetchone()
        raw.execute(page_sql).fetchall()

    ours_ms, floor_ms = [], []
    for _ in range(5):  # alternating rounds
        ours_ms.append(_median_ms(lambda: client.get("/"), 6))
        floor_ms.append(_median_ms(floor, 6))
    ours, base = statistics.median(ours_ms), statistics.median(floor_ms)
    report("ui", f"jobs page, server response with {n:,} jobs (median)", f"{ours:.1f} ms", "<= 50 ms", ours <= 50)
    ratio_row("ui", "jobs page vs its two queries in raw sqlite3", ours * 1000, base * 1000,
              "COUNT(*) + the first 50 rows, raw sqlite3", target=None)
    sorted_ms = _median_ms(lambda: client.get("/?sort=best&dir=desc&page=100"), 10)
    report("ui", "jobs page sorted by best metric, page 100 (median)", f"{sorted_ms:.1f} ms", "<= 50 ms",
           sorted_ms <= 50)
    filtered = _median_ms(lambda: client.get("/?experiment=exp7_binary_classification_t&status=COMPLETED"), 10)
    report("ui", "jobs page filtered by experiment and status (median)", f"{filtered:.1f} ms", "<= 50 ms",
           filtered <= 50)
    bench_queries(client, db)
    job_ms = _median_ms(lambda: client.get(f"/jobs/{big}"), 10)
    report("ui", "job page with 10,000 epochs, server response (median)", f"{job_ms:.1f} ms", "<= 200 ms",
           job_ms <= 200)
    bench_browser(app, big, n)


def bench_queries(client: Any, db: str) -> None:
    """Query pages (#16): matches counted up to QUERY_COUNT_CAP, sorted and paged in SQL, every case in
    alternating rounds (medians); against the same page's store reads with an exact (unbounded) count."""
    from jobtrack.ui.app import QUERY_COUNT_CAP

    half, rare = "config.lr > 0.045", "config.lr > 0.085 and config.depth = 3"
    cases = [
        (f"jobs page, query {half!r} (half the jobs, median)", {"q": half}, "<= 50 ms"),
        ("the same query sorted by -best_metric, page 1 (median)", {"q": half, "sort": "best", "dir": "desc"},
         "<= 50 ms"),
        ("the same, page 100 (offset 4,950; next/previous paging, median)",
         {"q": half, "sort": "best", "dir": "desc", "page": 100}, ""),
        ("the same query and an experiment filter, by -best_metric (median)",
         {"q": half, "experiment": "exp7_binary_classification_t", "sort": "best"}, "<= 50 ms"),
        (f"query {rare!r} (1.4 % of jobs) by -best_metric (median)", {"q": rare, "sort": "best"}, ""),
    ]
    store = Store.open(db, read_only=True)
    keys = "-best_metric"

    def exact() -> None:  # what the page read before the cap: every match counted, then one page
        store.count_jobs(half)
        store.search_jobs(half, sort=keys, limit=50)

    def bounded() -> None:
        store.count_jobs(half, cap=QUERY_COUNT_CAP + 1)
        store.search_jobs(half, sort=keys, limit=51)

    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    samples["exact"], samples["bounded"] = [], []
    for _ in range(5):  # alternating rounds
        for name, params, _ in cases:
            samples[name].append(_median_ms(lambda p=params: client.get("/", params=p), 3))
        samples["exact"].append(_median_ms(exact, 3))
        samples["bounded"].append(_median_ms(bounded, 3))
    for name, _, target in cases:
        ms = statistics.median(samples[name])
        report("ui", name, f"{ms:.1f} ms", target, (ms <= 50) if target else None)
    ratio_row("ui", f"store reads of the sorted query page, count capped at {QUERY_COUNT_CAP:,} vs exact",
              statistics.median(samples["bounded"]) * 1000, statistics.median(samples["exact"]) * 1000,
              "the same page with count_jobs(where) counting every match (half the jobs)", target=None)
    store.close()


def _chromium() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright if os.path.exists(CHROMIUM) else None


def bench_browser(app: Any, big: str, n: int) -> None:
    from jobtrack.ui.server import BackgroundServer

    playwright = _chromium()
    if playwright is None:
        report("ui", "browser figures", "skipped: no Playwright or no chromium")
        return
    with BackgroundServer(app) as url, playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        # the first frame drawn after the document and its stylesheet were parsed (FCP is not reported
        # for every headless navigation), in the page's own clock: from the start of the navigation
        page.add_init_script("document.addEventListener('DOMContentLoaded', () => requestAnimationFrame(() => "
                             "setTimeout(() => { window.__firstFrame = performance.now(); })));")
        page.goto(f"{url}/?token=t")

        def first_frame(path: str) -> tuple[float, float]:
            page.goto(url + path, wait_until="load")
            frame = None
            while frame is None:  # polled from here: the page's CSP forbids wait_for_function's eval
                frame = page.evaluate("window.__firstFrame")
                if frame is None:
                    page.wait_for_timeout(20)
            load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
            return frame, load

        runs = [first_frame("/") for _ in range(7)]
        frame, load = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        report("ui", f"jobs page first render in headless Chromium, {n:,} jobs (median)", f"{frame:.0f} ms",
               "<= 300 ms", frame <= 300)
        report("ui", "jobs page load event (CSS and script fetched, median)", f"{load:.0f} ms")
        big_frame = statistics.median(first_frame(f"/jobs/{big}")[0] for _ in range(3))
        report("ui", "job page with 10,000 epochs, first render in headless Chromium", f"{big_frame:.0f} ms")
        browser.close()


def bench_live(tmp: Path) -> None:
    from jobtrack.ui.app import create_app
    from jobtrack.ui.server import BackgroundServer

    playwright = _chromium()
    if playwright is None:
        return
    db = str(tmp / "live.db")
    step = threading.Semaphore(0)
    rounds = 6
    logged: list[float] = []

    def stepwise(ctx: Any) -> None:
        for epoch in range(1, rounds + 2):
            if epoch > 1:
                step.acquire(timeout=30)
            ctx.log_epoch(epoch, train={"loss": 1 / epoch})
            logged.append(time.time() * 1000)  # wall clock: the page's Date.now() is compared with it

    job = Trainer(stepwise, db=db, runner="thread").fit(Dataset("live", "regression", "t",
                                                                tables={"train": [{"x": 1}]}))
    app = create_app(db, token="t")
    delays = []
    with BackgroundServer(app) as url, playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{url}/jobs/{job.job_id}?token=t")
        page.wait_for_selector('polyline.series[data-points="1"]', state="attached")
        # the page notes when each point count first appears (Playwright's own waiting polls with back-off)
        page.evaluate("""() => { window.__seen = {};
            new MutationObserver(() => { document.querySelectorAll('polyline.series').forEach((p) => {
                const k = p.dataset.points; if (!(k in window.__seen)) { window.__seen[k] = Date.now(); } }); })
              .observe(document.getElementById('charts'), {childList: true, subtree: true}); }""")
        for k in range(2, rounds + 2):
            step.release()
            page.wait_for_selector(f'polyline.series[data-points="{k}"]', state="attached", timeout=10_000)
            delays.append((page.evaluate(f"window.__seen['{k}']") - logged[k - 1]) / 1000)
        browser.close()
    job.wait(timeout=30)
    worst, mid = max(delays), statistics.median(delays)
    report("ui", "new epoch visible in the open job page after log_epoch, median / max",
           f"{mid * 1000:.0f} / {worst * 1000:.0f} ms", "<= 1000 ms", worst <= 1.0)


def bench_report(tmp: Path) -> None:
    if QUICK and os.path.isdir("/dev/shm"):  # quick: the same 100 jobs, on tmpfs (no fsyncs to wait for)
        with tempfile.TemporaryDirectory(prefix="jobtrack-bench-ui-", dir="/dev/shm") as shm:
            _report(Path(shm))
    else:
        _report(tmp)


def _report(tmp: Path) -> None:
    db = str(tmp / "report.db")

    def fifty(ctx: Any) -> None:
        for e in range(1, 51):
            ctx.log_epoch(e, train={"loss": 1 / e, "acc": e / 60}, validation={"loss": 1.1 / e, "roc_auc": e / 55})

    data = Dataset("rep", "binary_classification", "t", tables={"train": [{"x": 1}]})
    for i in range(100):
        Trainer(fifty, db=db, runner="eager", config={"lr": 0.001 * i, "depth": i % 5}).fit(data)
    times = []
    info = None
    for _ in range(3):
        started = time.perf_counter()
        info = write_report(tmp / "runs.html", db)
        times.append(time.perf_counter() - started)
    assert info is not None
    seconds, mb = statistics.median(times), info.bytes / 1e6
    report("ui", "jobtrack report of 100 jobs x 50 epochs (median of 3)", f"{seconds:.2f} s", "<= 2 s", seconds <= 2)
    report("ui", "its size", f"{mb:.2f} MB", "<= 5 MB", mb <= 5)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="jobtrack-bench-ui-") as tmp:
        bench_pages(Path(tmp))
        bench_live(Path(tmp))
        bench_report(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
