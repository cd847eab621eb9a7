"""The dashboard and the report in a real Chromium (#16)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtrack import Dataset, JobManager, Trainer
from jobtrack.report import write_report
from jobtrack.ui.app import create_app
from jobtrack.ui.server import BackgroundServer
from proc import wait_until


def _data(name: str = "web") -> Dataset:
    return Dataset(name, "regression", "t", tables={"train": [{"x": 1}]})


def _curve(ctx: Any) -> None:
    for epoch in range(1, 4):
        ctx.log_epoch(epoch, train={"loss": 1 / epoch}, validation={"rmse": 2 / epoch})


@pytest.fixture
def served(db_path: str) -> Iterator[tuple[str, str]]:
    """(base URL, token) of a dashboard on a database with one completed job."""
    Trainer(_curve, db=db_path, runner="eager").fit(_data("seed"))
    app = create_app(db_path)
    with BackgroundServer(app) as url:
        yield url, app.state.token


def test_the_jobs_list_shows_jobs_the_test_created(db_path: str, served: tuple[str, str], page: Any) -> None:
    url, token = served
    made = [Trainer(_curve, db=db_path, runner="eager", config={"i": i}).fit(_data(f"list{i}")).job_id
            for i in range(3)]
    page.goto(f"{url}/?token={token}")
    for job_id in made:
        assert page.locator(f'tr[data-job="{job_id}"]').is_visible()
    assert page.locator("tr[data-job] .st-completed").count() == 4
    assert "token" not in page.url  # the token moved into the cookie


def test_a_running_jobs_curve_gains_a_point_in_the_open_page(db_path: str, served: tuple[str, str],
                                                              page: Any) -> None:
    url, token = served
    step = threading.Semaphore(0)
    done = threading.Event()

    def stepwise(ctx: Any) -> None:
        for epoch in range(1, 4):
            ctx.log_epoch(epoch, train={"loss": 1 / epoch})
            ctx.log(f"finished epoch {epoch}")
            if epoch < 3:
                step.acquire(timeout=30)
        done.set()

    job = Trainer(stepwise, db=db_path, runner="thread").fit(_data())
    page.goto(f"{url}/jobs/{job.job_id}?token={token}")
    page.wait_for_selector('polyline.series[data-points="1"]', state="attached")
    step.release()
    t0 = time.monotonic()
    page.wait_for_selector('polyline.series[data-points="2"]', state="attached", timeout=5_000)
    assert time.monotonic() - t0 < 5
    page.locator("#log", has_text="finished epoch 2").wait_for()  # no wait_for_function: the CSP forbids eval
    step.release()
    page.wait_for_selector('polyline.series[data-points="3"]', state="attached")
    page.locator("#status-badge", has_text="COMPLETED").wait_for()
    assert done.is_set() and page.locator("#cancel-form").count() == 0  # no Cancel once it ended


def test_cancel_on_a_running_job_makes_it_canceled(db_path: str, served: tuple[str, str], page: Any) -> None:
    url, token = served
    started, stop = threading.Event(), threading.Event()

    def slow(ctx: Any) -> None:
        started.set()
        while not stop.wait(0.01):
            ctx.check_canceled()

    job = Trainer(slow, db=db_path, runner="thread").fit(_data())
    try:
        assert started.wait(20)
        page.goto(f"{url}/jobs/{job.job_id}?token={token}")
        page.get_by_role("button", name="Cancel job").click()
        wait_until(lambda: JobManager(db_path).fetch_job(job.job_id).get_status()["status"] == "CANCELED",
                   message="the job did not become CANCELED after the click")
        page.locator("#status-badge", has_text="CANCELED").wait_for()
    finally:
        stop.set()


def test_compare_overlays_two_jobs(db_path: str, served: tuple[str, str], page: Any) -> None:
    url, token = served
    a = Trainer(_curve, db=db_path, runner="eager", config={"lr": 0.1}).fit(_data("cmp")).job_id
    b = Trainer(_curve, db=db_path, runner="eager", config={"lr": 0.2}).fit(_data("cmp")).job_id
    page.goto(f"{url}/?token={token}")
    page.locator(f'input[value="{a}"]').check()
    page.locator(f'input[value="{b}"]').check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url("**/compare?**")
    charts = page.locator("svg.chart")
    assert charts.count() == 2  # validation rmse, train loss
    for i in range(charts.count()):
        assert charts.nth(i).locator("polyline.series").count() == 2
    assert "config" in page.locator("table.diff").first.inner_text()


def test_a_request_without_the_token_gets_403(served: tuple[str, str], page: Any) -> None:
    url, _ = served
    for path in ("/", "/compare", "/static/app.js"):
        assert page.goto(url + path).status == 403


def test_the_report_renders_every_chart_with_the_network_blocked(db_path: str, served: tuple[str, str],
                                                                 browser: Any, tmp_path: Path) -> None:
    for i in range(3):
        Trainer(_curve, db=db_path, runner="eager", config={"lr": i}).fit(_data("rep"))
    out = tmp_path / "runs.html"
    write_report(out, db_path)
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 800})
    requests: list[str] = []

    def block(route: Any) -> None:  # the file itself loads; anything else it asked for would be refused
        if route.request.url == out.as_uri():
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    context.route("**/*", block)
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url) if r.url != out.as_uri() else None)
    page.goto(out.as_uri())
    charts = page.locator("svg.chart")
    expected = 4 * 2 + 2  # four jobs with two charts each, and the comparison's two
    assert charts.count() == expected
    for i in range(expected):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
    assert requests == []
    assert page.locator("time").first.inner_text() != page.locator("time").first.get_attribute("datetime")
    context.close()


def test_keyboard_focus_is_visible_and_times_are_local_with_utc_on_hover(served: tuple[str, str],
                                                                          browser: Any) -> None:
    url, token = served
    context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{url}/?token={token}")
    stamp = page.locator("td.c-created time").first
    iso = stamp.get_attribute("datetime")
    shown = stamp.inner_text()
    expected = (dt.datetime.fromisoformat(iso).astimezone(dt.timezone(dt.timedelta(hours=9)))
                .strftime("%Y-%m-%d %H:%M:%S"))
    assert shown == expected and stamp.get_attribute("title") == f"UTC: {iso}"
    for _ in range(3):
        page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert page.evaluate("document.activeElement.tagName") in ("A", "SELECT", "INPUT", "BUTTON")
    assert outline not in ("none", "")
    context.close()


def test_a_running_jobs_row_updates_in_the_jobs_list(db_path: str, served: tuple[str, str], page: Any) -> None:
    url, token = served
    step = threading.Semaphore(0)

    def stepwise(ctx: Any) -> None:
        ctx.log_epoch(1, validation={"rmse": 0.5})
        step.acquire(timeout=30)
        ctx.log_epoch(2, validation={"rmse": 0.25})

    job = Trainer(stepwise, db=db_path, runner="thread").fit(_data())
    wait_until(lambda: JobManager(db_path).fetch_job(job.job_id).get_status()["result"].get("epochs"))
    page.goto(f"{url}/?token={token}")
    row = page.locator(f'tr[data-job="{job.job_id}"]')
    row.locator("td.c-epochs", has_text="1").wait_for()
    row.locator("td.c-status", has_text="RUNNING").wait_for()
    row.locator("input[type=checkbox]").check()
    step.release()
    row.locator("td.c-status", has_text="COMPLETED").wait_for()  # no reload
    assert row.locator("td.c-epochs").inner_text() == "2" and "0.25" in row.locator("td.c-best").inner_text()
    assert row.locator("input[type=checkbox]").is_checked()  # a selection for Compare survives the update


def test_a_report_of_jobs_with_a_very_long_experiment_name_fits_the_window(db_path: str, browser: Any,
                                                                           tmp_path: Path) -> None:
    """Long names wrap: the page never scrolls sideways (the job's subtitle and status fields overflowed)."""
    for lr in (0.1, 0.2):
        Trainer(_curve, db=db_path, runner="eager", config={"lr": lr}).fit(_data("x" + "verylongname" * 16))
    out = tmp_path / "long.html"
    write_report(out, db_path)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(out.as_uri())
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    context.close()


def test_long_names_never_push_a_page_sideways(db_path: str, served: tuple[str, str], browser: Any) -> None:
    url, token = served
    job = Trainer(_curve, db=db_path, runner="eager").fit(_data("y" + "verylongname" * 12)).job_id
    for width, path in ((1280, f"/jobs/{job}"), (390, "/"), (390, f"/jobs/{job}")):
        context = browser.new_context(viewport={"width": width, "height": 800})
        page = context.new_page()
        page.goto(f"{url}{path}{'&' if '?' in path else '?'}token={token}")
        wide = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert wide[0] <= wide[1], (width, path, wide)
        context.close()
