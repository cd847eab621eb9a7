"""Screenshots of the dashboard's three pages and of a report, from a demo database (#16).

Run from the repository root with the ``ui`` extra and Playwright installed, and Debian's chromium:
``.venv/bin/python docs/screenshots/make_screenshots.py``. Writes jobs.png, job.png, compare.png,
report.png and narrow.png beside this file. No browser is downloaded: Playwright drives /usr/bin/chromium.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from jobtrack import Dataset, Trainer
from jobtrack.report import write_report
from jobtrack.ui.app import create_app
from jobtrack.ui.server import BackgroundServer

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("JOBTRACK_CHROMIUM", "/usr/bin/chromium")


def _curve(ctx, lr: float, epochs: int, *, gate: threading.Event | None = None) -> dict:
    for epoch in range(1, epochs + 1):
        if gate is not None and epoch > 6:
            gate.wait(60)
        loss = 0.9 * math.exp(-lr * epoch) + 0.08 + 0.01 * math.sin(epoch)
        auc = 0.95 - 0.4 * math.exp(-lr * 1.3 * epoch) - 0.002 * max(0, epoch - 14)
        ctx.log_epoch(epoch, train={"loss": loss * 0.9, "roc_auc": auc + 0.02},
                      validation={"loss": loss, "roc_auc": auc})
        ctx.log(f"epoch {epoch}: validation roc_auc={auc:.4f}")
    return {"epochs": epochs}


def _predict(ctx) -> dict:
    ctx.export("predictions", [{"id": i, "probability": round(0.5 + 0.4 * math.sin(i), 4)} for i in range(40)])
    return {"rows": 40}


def build(db: str, gate: threading.Event) -> None:
    """Completed runs with different learning rates, a failed one, a canceled one and a running one."""
    data = Dataset("churn", "binary_classification", "monthly",
                   tables={"train": [{"x": 1, "label": 0}], "test": [{"x": 2}]})
    for i, lr in enumerate((0.08, 0.15, 0.3)):
        Trainer(lambda ctx, lr=lr: _curve(ctx, lr, 24), _predict, db=db, runner="eager",
                config={"lr": lr, "depth": 4 + i, "optimizer": "adam"}).fit_predict(data, f"scores_{i}")

    def broken(ctx):
        ctx.log_epoch(1, train={"loss": 0.8}, validation={"roc_auc": 0.61})
        raise RuntimeError("CUDA out of memory (simulated)")

    Trainer(broken, db=db, runner="eager", config={"lr": 1.0}).fit(data)
    live = Trainer(lambda ctx: _curve(ctx, 0.2, 30, gate=gate), db=db, runner="thread",
                   config={"lr": 0.2, "depth": 6, "optimizer": "sgd"})
    live.fit(data)
    live.fit(data).cancel()  # queued behind the running job: canceled at once


def main() -> int:
    gate = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "demo.db")
        build(db, gate)
        app = create_app(db)
        token = app.state.token
        from jobtrack import JobManager

        jobs = JobManager(db).list_jobs(limit=None)
        running = next(j for j in jobs if j.get_status()["status"] == "RUNNING")
        done = [j.job_id for j in jobs if j.get_status()["status"] == "COMPLETED"]
        report = os.path.join(tmp, "runs.html")
        with BackgroundServer(app) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/?token={token}")
            page.screenshot(path=str(HERE / "jobs.png"))
            page.goto(f"{url}/jobs/{running.job_id}")
            page.wait_for_selector("svg.chart")
            page.screenshot(path=str(HERE / "job.png"), full_page=True)
            page.goto(f"{url}/compare?" + "&".join(f"ids={j}" for j in done))
            page.screenshot(path=str(HERE / "compare.png"), full_page=True)
            narrow = browser.new_page(viewport={"width": 420, "height": 800})
            narrow.goto(f"{url}/?token={token}")
            narrow.screenshot(path=str(HERE / "narrow.png"))
            gate.set()
            running.wait(timeout=60)
            write_report(report, db)
            page.goto(Path(report).as_uri())
            page.screenshot(path=str(HERE / "report.png"))
            browser.close()
    print("wrote", ", ".join(p.name for p in sorted(HERE.glob("*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
