"""The dashboard's server (#16): the token on every route, Cancel only by POST with the token, no URL that
reaches a file outside the database's files directory, user content escaped, and the live endpoints."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the ui extra: pip install 'jobtrack[ui]'")
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2 (in the test extra)")

from starlette.testclient import TestClient

from jobtrack import Dataset, JobManager, Trainer, demo, runtime
from jobtrack.errors import InvalidArgument
from jobtrack.store import Store
from jobtrack.ui import app as ui_app
from jobtrack.ui.app import COOKIE, create_app
from proc import wait_until

EVIL = "<script>alert('x')</script>"


def _data(name: str = "core") -> Dataset:
    return Dataset(name, "regression", "t", tables={"train": [{"x": 1}], "test": [{"x": 2}]})


def _train(ctx: Any) -> dict[str, Any]:
    for epoch in range(1, 4):
        ctx.log_epoch(epoch, train={"loss": 1 / epoch}, validation={"rmse": 2 / epoch})
    ctx.log(f"a log line {EVIL}")
    return {"done": True}


def _predict(ctx: Any) -> dict[str, Any]:
    ctx.export("predictions", [{"id": 1, "label": EVIL}])
    return {}


@pytest.fixture
def jobs(db_path: str) -> list[str]:
    """Two completed jobs, one with HTML in its experiment name, config, log and export cells."""
    evil = Trainer(_train, _predict, db=db_path, runner="eager", config={"note": EVIL, "lr": 0.1})
    first = evil.fit_predict(_data("evil"), "out1")
    second = Trainer(_train, db=db_path, runner="eager", config={"lr": 0.2}).fit(_data())
    return [first.job_id, second.job_id]


@pytest.fixture
def client(db_path: str, jobs: list[str]) -> TestClient:
    """A client that has opened the dashboard with its token (so it holds the cookie)."""
    app = create_app(db_path, token="t0ken")
    c = TestClient(app)
    assert c.get("/?token=t0ken").status_code == 200
    return c


def _routes(job_id: str) -> list[str]:
    return ["/", f"/jobs/{job_id}", f"/compare?ids={job_id}&ids={job_id}", "/static/app.js", "/static/app.css",
            f"/api/jobs/live?ids={job_id}", f"/api/jobs/{job_id}/live?seq=0&log=0", "/no/such/page"]


def test_every_route_refuses_a_request_without_the_token(db_path: str, jobs: list[str]) -> None:
    c = TestClient(create_app(db_path, token="t0ken"))
    for url in _routes(jobs[0]):
        assert c.get(url).status_code == 403, url
        assert c.get(url, headers={"X-Jobtrack-Token": "wrong"}).status_code == 403, url
        assert c.get(url + ("&" if "?" in url else "?") + "token=wrong").status_code == 403, url
    assert c.post(f"/api/jobs/{jobs[0]}/cancel").status_code == 403


def test_the_token_opens_every_route_once_by_query_then_by_cookie_or_header(db_path: str, jobs: list[str]) -> None:
    c = TestClient(create_app(db_path, token="t0ken"))
    first = c.get("/?token=t0ken&page=1", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/?page=1"  # the token leaves the URL
    cookie = first.headers["set-cookie"]
    assert f"{COOKIE}=t0ken" in cookie and "samesite=strict" in cookie.lower() and "httponly" in cookie.lower()
    for url in _routes(jobs[0])[:-1]:
        assert c.get(url).status_code == 200, url
    fresh = TestClient(create_app(db_path, token="t0ken"))
    assert fresh.get(f"/api/jobs/{jobs[0]}/live", headers={"X-Jobtrack-Token": "t0ken"}).status_code == 200
    assert c.get("/").headers["content-security-policy"].startswith("default-src 'self'")


def test_a_random_token_is_made_when_none_is_given(db_path: str, jobs: list[str]) -> None:
    a, b = create_app(db_path), create_app(db_path)
    assert len(a.state.token) >= 24 and a.state.token != b.state.token
    assert TestClient(a).get("/", params={"token": b.state.token}).status_code == 403


def test_cancel_needs_a_post_carrying_the_token_itself(db_path: str, client: TestClient, dataset: Dataset) -> None:
    job = Trainer(demo.train, db=db_path, runner="worker").fit(dataset)  # QUEUED: no worker runs it
    url = f"/api/jobs/{job.job_id}/cancel"
    assert client.get(url).status_code == 405  # never by a link
    assert client.post(url).status_code == 403  # the cookie alone is what a forged form would carry
    assert client.post(url, data={"token": "wrong"}).status_code == 403
    assert JobManager(db_path).fetch_job(job.job_id).get_status()["status"] == "QUEUED"
    done = client.post(url, data={"token": "t0ken"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/jobs/{job.job_id}"
    assert JobManager(db_path).fetch_job(job.job_id).get_status()["status"] == "CANCELED"
    again = client.post(url, headers={"X-Jobtrack-Token": "t0ken"})
    assert again.json() == {"job_id": job.job_id, "status": "CANCELED"}
    assert client.post("/api/jobs/job_nope/cancel", data={"token": "t0ken"}).status_code == 404


def test_cancel_of_a_running_job_goes_through_the_api(db_path: str, client: TestClient) -> None:
    started, stop = threading.Event(), threading.Event()

    def slow(ctx: Any) -> None:
        started.set()
        while not stop.wait(0.01):
            ctx.check_canceled()

    job = Trainer(slow, db=db_path, runner="thread").fit(_data())
    try:
        assert started.wait(20)
        page = client.get(f"/jobs/{job.job_id}")
        assert 'id="cancel-form"' in page.text and 'name="token" value="t0ken"' in page.text
        assert client.post(f"/api/jobs/{job.job_id}/cancel", data={"token": "t0ken"}).status_code == 200
        assert job.wait(timeout=20)["status"] == "CANCELED"
    finally:
        stop.set()


def test_no_url_reaches_a_file_outside_the_files_directory(db_path: str, client: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    (Path(db_path).parent / "log.txt").write_text("TOP-SECRET")
    attempts = ["/jobs/..%2F..%2Fsecret.txt", "/jobs/..", "/jobs/%2e%2e", "/static/..%2Fapp.py",
                "/static/../../secret.txt", "/static/%2e%2e%2F%2e%2e%2Fsecret.txt",
                "/api/jobs/..%2F..%2F..%2Flog.txt/live",
                "/api/jobs/../live", f"/static/{secret}", "/jobs/%2Fetc%2Fpasswd", "/static/app.js%00.txt",
                "/../../../../etc/passwd", "/static/__init__.py"]
    for url in attempts:
        response = client.get(url)
        # the client itself folds "/jobs/.." to "/" (the jobs list); everything else names no job or asset
        assert response.status_code in (404, 405) or response.url.path == "/", (url, response.status_code)
        assert "TOP-SECRET" not in response.text and "root:" not in response.text, url


def test_a_log_that_links_outside_the_files_directory_is_not_read(db_path: str, client: TestClient,
                                                                  jobs: list[str], tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    log = Path(JobManager(db_path).fetch_job(jobs[1]).db + "-files") / "jobs" / jobs[1] / "log.txt"
    assert log.is_file()
    log.unlink()
    log.symlink_to(secret)
    assert "TOP-SECRET" not in client.get(f"/jobs/{jobs[1]}").text
    assert "TOP-SECRET" not in client.get(f"/api/jobs/{jobs[1]}/live?seq=0&log=0").text


def test_html_in_names_configs_logs_and_export_cells_is_escaped(client: TestClient, jobs: list[str]) -> None:
    live = client.get(f"/api/jobs/{jobs[0]}/live?seq=0&log=0").json()
    assert EVIL in live.pop("log")  # plain text, which the page's script sets as textContent
    pages = [client.get("/").text, client.get(f"/jobs/{jobs[0]}").text,
             client.get(f"/compare?ids={jobs[0]}&ids={jobs[1]}").text, *map(str, live.values())]
    job_page = pages[1]
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in job_page  # config, log, export cell
    assert job_page.count("&lt;script&gt;") >= 3
    for text in pages:
        assert "<script>alert" not in text and EVIL not in text


def test_a_job_name_with_html_is_escaped_in_the_list(db_path: str, client: TestClient, jobs: list[str]) -> None:
    # The API refuses such names; a file written by other means (an old version, a hand edit) may hold them.
    with closing(sqlite3.connect(db_path)) as con, con:
        con.execute("UPDATE jobs SET experiment_name = ? WHERE id = ?", (EVIL, jobs[1]))
        con.execute("INSERT INTO job_tags (job_id, tag) VALUES (?, ?)", (jobs[1], "<b>bold</b>"))
    texts = [client.get("/").text, client.get(f"/jobs/{jobs[1]}").text,
             client.get(f"/compare?ids={jobs[0]}&ids={jobs[1]}").text]
    for text in texts:
        assert EVIL not in text and "<b>bold</b>" not in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in texts[0] and "&lt;script&gt;alert" in texts[0]


def test_the_jobs_page_filters_sorts_pages_and_queries(db_path: str, client: TestClient, jobs: list[str]) -> None:
    page = client.get("/", params={"experiment": "evil_regression_t"}).text
    assert jobs[0] in page and jobs[1] not in page
    assert "No jobs match." in client.get("/", params={"status": "RUNNING"}).text
    bogus = client.get("/", params={"status": "DONE"}).text  # a hand-edited link: said, not silently dropped
    assert "Unknown filter status=&#x27;DONE&#x27;, not applied" in bogus and jobs[0] in bogus
    assert jobs[1] in client.get("/", params={"sort": "best", "dir": "asc", "per": 10}).text
    one = client.get("/", params={"per": 10, "page": 2}).text
    assert "page 1 of 1" in one and jobs[0] in one  # a page past the end shows the last one
    queried = client.get("/", params={"q": "config.lr > 0.15"}).text
    if "not in this version" not in queried:
        assert jobs[1] in queried and jobs[0] not in queried
        bad = client.get("/", params={"q": "config.lr >>> 1"}).text
        assert "Query not used" in bad and jobs[0] in bad  # the filters still apply


def _scored(ctx: Any) -> dict[str, Any]:
    score = ctx.config["score"]
    if score is not None:  # jobs without a score have no best metric: they tie, and sort last
        ctx.log_epoch(1, validation={"rmse": score})
    return {}


def test_a_query_page_is_counted_sorted_and_paged_by_the_store(db_path: str, client: TestClient) -> None:
    """Page 2 of a query sorted by best metric is exactly the store's page 2, whatever the number of matches
    (a cap on the ids a query selects, then sorted and paged again, would break ties and big sets)."""
    ids = []
    for i in range(26):
        score = None if i % 3 == 0 else round(1 + (i * 7 % 11) / 10, 2)
        tags = ["half"] if i % 2 else []
        trainer = Trainer(_scored, db=db_path, runner="eager", config={"score": score, "i": i}, tags=tags)
        ids.append(trainer.fit(_data()).job_id)
    store = Store.open(db_path, read_only=True)
    where = "config.i >= 2"
    for direction, sort in (("desc", "-best_metric"), ("asc", "best_metric")):
        page = client.get("/", params={"q": where, "sort": "best", "dir": direction, "per": 10, "page": 2}).text
        total = store.count_jobs(where)
        assert total == 24
        assert f"{total} job(s) · page 2 of 3" in page
        expected = store.search_ids(where, sort=sort, limit=10, offset=10)
        shown = [i for i in re.findall(r'href="/jobs/([^"?]+)"', page) if i in ids]
        assert list(dict.fromkeys(shown)) == expected
    # the menus' filters are ANDed to the query as bound values, never pasted into its text
    both = client.get("/", params={"q": where, "tag": "half", "sort": "best", "per": 50}).text
    half = store.search_ids(f"({where}) and tag = 'half'", sort="-best_metric")
    assert len(half) == 12 and f"{len(half)} job(s) · page 1 of 1" in both
    assert [i for i in dict.fromkeys(re.findall(r'href="/jobs/([^"?]+)"', both)) if i in ids] == half
    evil = client.get("/", params={"q": where, "experiment": "x' or experiment != '"}).text
    assert "0 job(s) · page 1 of 1" in evil and "Query not used" not in evil
    Trainer(_scored, db=db_path, runner="eager", config={"score": 0.5, "i": 99}).fit(_data())
    again = client.get("/", params={"q": where, "sort": "best", "dir": "asc", "per": 10}).text
    assert "25 job(s) · page 1 of 3" in again, re.findall(r"\d+ job\(s\)[^<]*", again)  # counted afresh on each page
    store.close()


def test_a_query_with_more_matches_than_the_count_cap_pages_by_next_until_the_last_row(
        db_path: str, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond the cap the page says "more than N", shows no last page number, and offers "next" exactly as
    long as a next page exists; every page is still the store's page, and together they are every match."""
    ids = [Trainer(_scored, db=db_path, runner="eager", config={"score": 1 + (i * 7 % 11) / 10, "i": i}
                   ).fit(_data()).job_id for i in range(23)]
    monkeypatch.setattr(ui_app, "QUERY_COUNT_CAP", 8)
    store = Store.open(db_path, read_only=True)
    where = "config.i >= 1"
    assert store.count_jobs(where) == 22 and store.count_jobs(where, cap=9) == 9
    assert store.count_jobs(where, cap=100) == 22 and store.count_jobs("config.i > 99", cap=5) == 0
    with pytest.raises(InvalidArgument, match="cap >= 1"):
        store.count_jobs(where, cap=0)
    expected = store.search_ids(where, sort="-best_metric")
    seen: list[str] = []
    for page_no in (1, 2, 3):
        page = client.get("/", params={"q": where, "sort": "best", "per": 10, "page": page_no}).text
        assert f"more than 8 job(s) · page {page_no}<" in page and " of " not in page.split("job(s) · page")[1][:12]
        assert "more than 8 job(s) match it" in page
        assert ('rel="next"' in page) == (page_no < 3), page_no  # 22 matches: a third page of 2, then none
        assert ('rel="prev"' in page) == (page_no > 1)
        shown = [i for i in dict.fromkeys(re.findall(r'href="/jobs/([^"?]+)"', page)) if i in ids]
        assert shown == store.search_ids(where, sort="-best_metric", limit=10, offset=(page_no - 1) * 10)
        seen += shown
    assert seen == expected
    exact = client.get("/", params={"q": "config.i >= 16", "sort": "best", "per": 10}).text  # 7 <= the cap: exact
    assert "7 job(s) · page 1 of 1" in exact and "more than" not in exact and 'rel="next"' not in exact
    past = client.get("/", params={"q": where, "sort": "best", "per": 10, "page": 9}).text  # past the end
    assert "more than 8 job(s) · page 3<" in past and 'rel="next"' not in past
    store.close()


def test_live_endpoints_report_new_epochs_and_log_lines(db_path: str, client: TestClient) -> None:
    go = threading.Event()

    def stepwise(ctx: Any) -> None:
        ctx.log_epoch(1, train={"loss": 1.0})
        go.wait(20)
        ctx.log_epoch(2, train={"loss": 0.5})
        ctx.log("second epoch done")

    job = Trainer(stepwise, db=db_path, runner="thread").fit(_data())
    wait_until(lambda: client.get(f"/api/jobs/{job.job_id}/live?seq=0&log=0").json()["seq"] == 1)
    first = client.get(f"/api/jobs/{job.job_id}/live?seq=0&log=0").json()
    assert first["charts"].count('data-points="1"') >= 1 and first["terminal"] is False
    same = client.get(f"/api/jobs/{job.job_id}/live?seq=1&log={first['log_pos']}").json()
    assert same["charts"] is None and same["log"] == ""
    rows = client.get(f"/api/jobs/live?ids={job.job_id}").json()["rows"]
    assert rows[0]["id"] == job.job_id and "RUNNING" in rows[0]["cells"]
    go.set()
    job.wait(timeout=20)
    last = client.get(f"/api/jobs/{job.job_id}/live?seq=1&log={first['log_pos']}").json()
    assert last["terminal"] is True and last["seq"] == 2 and 'data-points="2"' in last["charts"]
    assert "second epoch done" in last["log"]


def test_the_dashboard_follows_a_replaced_database_file(db_path: str, client: TestClient, jobs: list[str],
                                                        tmp_path: Path) -> None:
    # A copy made elsewhere (here: a child process, which closes it cleanly) is moved over the file once
    # this process's writers let go of it (replacing a SQLite file under open writers corrupts it).
    other = tmp_path / "other.db"
    code = ("from jobtrack import Dataset, Trainer\n"
            "def train(ctx):\n    ctx.log_epoch(1, train={'loss': 1.0})\n"
            f"job = Trainer(train, db={str(other)!r}, runner='eager').fit("
            "Dataset('replacement', 'regression', 't', tables={'train': [{'x': 1}]}))\nprint(job.job_id)\n")
    new = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         timeout=120).stdout.strip()
    assert jobs[0] in client.get("/").text
    runtime.close_all()
    JobManager(db_path).list_jobs()  # the one connection left: closing it checkpoints and removes the -wal
    runtime.close_all()
    assert not Path(db_path + "-wal").exists()
    other.replace(db_path)
    page = client.get("/").text
    assert new in page and "replacement_regression_t" in page and jobs[0] not in page
    assert client.get(f"/api/jobs/{jobs[0]}/live?seq=0&log=0").status_code == 404  # the page's script retries
    assert client.get(f"/api/jobs/{new}/live?seq=0&log=0").json()["seq"] == 1



def test_a_deleted_database_file_gives_pages_that_say_so_until_a_new_one_is_there(db_path: str,
                                                                                 jobs: list[str]) -> None:
    # `rm runs.db` while the dashboard is open (to start over): every page was a bare "Internal Server Error",
    # with a StoreReadOnly traceback telling to fix permissions
    runtime.close_all()
    JobManager(db_path).list_jobs()  # the one connection left: closing it checkpoints and removes the -wal
    runtime.close_all()
    c = TestClient(create_app(db_path, token="t"), raise_server_exceptions=False)
    assert jobs[0] in c.get("/?token=t").text
    for name in (db_path, db_path + "-wal", db_path + "-shm"):
        Path(name).unlink(missing_ok=True)
    for route in ("/", f"/jobs/{jobs[0]}", f"/compare?ids={jobs[0]}&ids={jobs[1]}"):
        page = c.get(route)
        assert page.status_code == 503 and f"No jobtrack database at {db_path}" in page.text, route
    live = c.get(f"/api/jobs/{jobs[0]}/live?seq=0&log=0")
    assert live.status_code == 503 and "No jobtrack database" in live.json()["error"]  # the page's script retries
    code = ("import sys\nfrom jobtrack import Dataset, Trainer\n"
            "def train(ctx):\n    ctx.log_epoch(1, train={'loss': 1.0})\n"
            "print(Trainer(train, db=sys.argv[1], runner='eager').fit("
            "Dataset('again', 'regression', 't', tables={'train': [{'x': 1}]})).job_id)\n")
    new = subprocess.run([sys.executable, "-c", code, db_path], check=True, capture_output=True, text=True,
                         timeout=120).stdout.strip()
    page = c.get("/")
    assert page.status_code == 200 and new in page.text and jobs[0] not in page.text

def test_the_dashboard_shows_jobs_another_process_added_after_it_opened_the_file(db_path: str,
                                                                               jobs: list[str]) -> None:
    # Opened while no writer had the file open, the dashboard read it as an immutable file and kept
    # showing the jobs of that moment: a training started after `jobtrack ui` never appeared.
    runtime.close_all()
    JobManager(db_path).list_jobs()  # the one connection left: closing it checkpoints and removes the -wal
    runtime.close_all()
    assert not Path(db_path + "-wal").exists()
    code = ("import sys\nfrom jobtrack import Dataset, Trainer\n"
            "def train(ctx):\n    ctx.log_epoch(1, train={'loss': 1.0})\n"
            "print(Trainer(train, db=sys.argv[1], runner='eager').fit("
            "Dataset('later', 'regression', 't', tables={'train': [{'x': 1}]})).job_id)\n")
    with TestClient(create_app(db_path, token="t")) as c:  # one event loop and its threads, as a server keeps
        assert jobs[0] in c.get("/?token=t").text
        for _ in range(2):  # each a whole writer session: the -wal is gone again when the dashboard reads
            new = subprocess.run([sys.executable, "-c", code, db_path], check=True, capture_output=True,
                                 text=True, timeout=120).stdout.strip()
            assert new in c.get("/").text and c.get(f"/api/jobs/{new}/live?seq=0&log=0").json()["seq"] == 1
    assert not Path(db_path + "-wal").exists() and not Path(db_path + "-shm").exists()  # reads created nothing


def test_the_dashboard_never_writes_the_database(db_path: str, jobs: list[str]) -> None:
    before = Path(db_path).stat().st_mtime_ns
    c = TestClient(create_app(db_path, token="t"))
    c.get("/?token=t")
    for url in _routes(jobs[0])[:-1]:
        c.get(url)
    assert Path(db_path).stat().st_mtime_ns == before


def test_the_ui_command_says_which_extra_it_needs_or_binds(capsys: pytest.CaptureFixture[str], db_path: str,
                                                          jobs: list[str]) -> None:
    from jobtrack.cli import main

    assert main(["ui", "--db", db_path, "--port", "70000"]) == 2
    assert "--port must be 0 to 65535" in capsys.readouterr().err


def test_jobtrack_ui_as_a_user_runs_it(db_path: str, jobs: list[str]) -> None:
    # The installed command in its own process: it prints a URL with the token, refuses a request
    # without it, serves with it, and warns about a host other than 127.0.0.1.
    proc = subprocess.Popen([sys.executable, "-m", "jobtrack", "--db", db_path, "ui", "--host", "0.0.0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = ""
        while "open http" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
        url = line.split("open ", 1)[1].strip()
        assert url.startswith("http://0.0.0.0:") and "token=" in url
        assert "warning: listening on 0.0.0.0" in proc.stderr.readline()
        local = url.replace("0.0.0.0", "127.0.0.1")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(local.split("?")[0], timeout=20)
        refused.value.close()  # the refusal holds the connection
        assert refused.value.code == 403
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # keeps the cookie
        with browser.open(local, timeout=20) as page:
            assert page.status == 200 and jobs[0] in page.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_every_page_reads_a_server_database_as_it_reads_a_file(any_db: str) -> None:
    """The dashboard opens its database read-only; on PostgreSQL its pages, sorts and filters work alike."""
    first = Trainer(_train, _predict, db=any_db, runner="eager", config={"lr": 0.1}).fit_predict(_data("evil"), "o1")
    second = Trainer(_train, db=any_db, runner="eager", config={"lr": 0.2}).fit(_data())
    c = TestClient(create_app(any_db, token="t0ken"))
    assert c.get("/?token=t0ken").status_code == 200
    for route in _routes(first.job_id)[:-1]:
        assert c.get(route).status_code == 200, route
    for params in ({"sort": "best", "dir": "asc"}, {"sort": "best"}, {"sort": "status", "dir": "asc"},
                   {"status": "COMPLETED", "experiment": "core_regression_t"}, {"q": "config.lr > 0.15"}):
        page = c.get("/", params=params)
        assert page.status_code == 200 and second.job_id in page.text, params
    only = c.get("/", params={"experiment": "evil_regression_t", "type": "train_inference"}).text
    assert first.job_id in only and second.job_id not in only


DIES_RUNNING = """
import os, signal, sys, time
from jobtrack import Dataset, Trainer
def hang(ctx):
    ctx.log_epoch(1, validation={"rmse": 1.0})
    print(ctx.job_id, flush=True)
    time.sleep(60)
data = Dataset("dead", "regression", "t", tables={"train": [{"x": 1}]})
job = Trainer(hang, db=sys.argv[1], provenance=False).fit(data)
while True:
    time.sleep(0.01)
"""


def test_no_page_writes_a_liveness_verdict(db_path: str, client: TestClient, jobs: list[str]) -> None:
    """The dashboard opens the database read-only: a job whose runner died reads FAILED on every page (the
    comparison too), and the file still holds what the runner left: no verdict, no event."""
    from proc import spawn

    with spawn(DIES_RUNNING, db_path) as child:
        dead = child.stdout.readline().strip()
        child.kill()
        child.wait(timeout=30)

    def stored() -> list[Any]:
        with closing(sqlite3.connect(db_path)) as conn:
            return [conn.execute("SELECT status FROM jobs WHERE id = ?", (dead,)).fetchone(),
                    conn.execute("SELECT count(*) FROM job_events WHERE job_id = ?", (dead,)).fetchone()]

    before = stored()
    assert before[0] == ("RUNNING",)
    for url in (f"/jobs/{dead}", f"/compare?ids={dead}&ids={jobs[1]}", "/", "/?status=failed"):
        page = client.get(url)
        assert page.status_code == 200, url
    assert "FAILED" in client.get(f"/compare?ids={dead}&ids={jobs[1]}").text  # the verdict, shown
    assert stored() == before  # and not written


def _again(ctx: Any) -> None:
    for epoch in (1, 2, 2, 2, 3):  # epoch 2 reported again (a resumed loop): it replaces the stored one
        ctx.log_epoch(epoch, validation={"rmse": 1.0 / epoch})


def test_the_epochs_column_counts_epochs_not_reports(db_path: str, client: TestClient, tmp_path: Path) -> None:
    job = Trainer(_again, db=db_path, runner="eager", provenance=False).fit(_data("again"))
    assert len(job.get_status()["result"]["epochs"]) == 3
    page = client.get("/").text
    line = page[page.index(f'href="/jobs/{job.job_id}"'):]
    assert re.search(r'<td class="num c-epochs">(\d+)</td>', line).group(1) == "3"  # type: ignore[union-attr]
    from jobtrack.report import write_report

    write_report(tmp_path / "r.html", db_path, [job.job_id])
    assert '<td class="num c-epochs">3</td>' in (tmp_path / "r.html").read_text(encoding="utf-8")


def _fails(ctx: Any) -> None:
    raise ValueError("the loss diverged\nat epoch 3")


def test_a_failed_jobs_page_shows_its_traceback_and_config_values_as_json(db_path: str, client: TestClient) -> None:
    job = Trainer(_fails, db=db_path, runner="eager", provenance=False,
                  config={"depth": "4", "width": 4, "flag": True}).fit(_data("fails"))
    page = client.get(f"/jobs/{job.job_id}").text
    assert "<strong>ValueError: the loss diverged\nat epoch 3</strong>" in page
    trace = re.search(r'<pre class="traceback">(.*?)</pre>', page, re.S)
    assert trace is not None and trace.group(1).startswith("Traceback (most recent call last):\n")
    assert 'raise ValueError(&quot;the loss diverged' in trace.group(1)  # lines, not one JSON string
    assert '<td>&quot;4&quot;</td>' in page and "<td>4</td>" in page and "<td>true</td>" in page


def test_the_query_box_example_parses_and_the_pager_names_its_direction(db_path: str, client: TestClient) -> None:
    example = re.search(r'placeholder="([^"]*)"', client.get("/").text)
    assert example is not None
    assert JobManager(db_path).list_jobs(where=example.group(1).replace("&#39;", "'").replace("&gt;", ">")) == []
    trainer = Trainer(_train, db=db_path, runner="eager", provenance=False)
    for _ in range(19):  # 21 jobs: three pages of 10
        trainer.fit(_data())
    def pager(url: str) -> list[str]:
        return sorted(set(re.findall(r'rel="(?:prev|next)">([^<]*)</a>', client.get(url).text)))  # top, bottom

    assert pager("/?per=10&page=2") == ["older →", "← newer"]
    assert pager("/?sort=created&dir=asc&per=10&page=2") == ["next →", "← previous"]  # oldest first
    assert pager("/?sort=best&per=10&page=2") == ["next →", "← previous"]
