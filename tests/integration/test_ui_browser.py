"""End to end: `matchcast up` (embedded Redis, worker, API and UI as real processes) driven in headless Chromium.

Clicks through a sync prediction and a batch (each logged as served), the other pages, and the Results page once
the predicted match's result is uploaded; saves screenshots under test-artifacts/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, need, reachable

pytestmark = [pytest.mark.integration, pytest.mark.embedded]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1100",
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`matchcast up` on free ports with a home of its own; stopped with Ctrl-C (SIGINT) at the end."""
    tmp = tmp_path_factory.mktemp("ui-e2e")
    api_port, redis_port, ui_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHCAST_")}
    env.update(
        MATCHCAST_HOME=str(tmp / "home"),
        MATCHCAST_API_PORT=str(api_port),
        MATCHCAST_EMBEDDED_REDIS_PORT=str(redis_port),
        MATCHCAST_UI_PORT=str(ui_port),
        MATCHCAST_WORKER_METRICS_PORT="0",
    )
    log = (tmp / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "matchcast", "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    ui = f"http://127.0.0.1:{ui_port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if "matchcast is up" in (tmp / "up.log").read_text(errors="replace"):
                break
            time.sleep(0.5)
        output = (tmp / "up.log").read_text(errors="replace")
        assert "matchcast is up" in output, output[-4000:]
        assert f"UI       {ui}" in output
        assert httpx.get(f"{ui}/_stcore/health", timeout=5).text == "ok"
        yield {"ui": ui, "api": f"http://127.0.0.1:{api_port}", "home": tmp / "home", "tmp": tmp}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
    assert code == 0, (tmp / "up.log").read_text(errors="replace")[-3000:]
    assert "stopping ui" in (tmp / "up.log").read_text()
    assert not reachable("127.0.0.1", ui_port)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium (the system's, Debian packages chromium and chromium-driver) through Selenium.

    Tests ask for it before ``stack``, so a missing browser skips them before the stack starts."""
    need("chromium and chromium-driver (Debian)", Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())
    need("selenium (pip)", importlib.util.find_spec("selenium") is not None)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_text(driver: Any, text: str, timeout: float = 60) -> str:
    """Wait until the page shows ``text``; the page's text then."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return str(body)
        time.sleep(0.3)
    raise AssertionError(f"{text!r} did not appear in {timeout} s; the page shows:\n{body[-3000:]}")


def click_button(driver: Any, label_start: str, timeout: float = 60) -> str:
    """Click the first button whose label starts with ``label_start``; its label."""
    xpath = f"//button[starts-with(normalize-space(.), '{label_start}')]"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for button in driver.find_elements("xpath", xpath):
            if button.is_displayed() and button.is_enabled():
                label = str(button.text)
                button.click()
                return label
        time.sleep(0.3)
    raise AssertionError(f"no button {label_start!r} in {timeout} s")


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def logged(home: Path, source: str, n: int, timeout: float = 30) -> list[int]:
    """The match ids of the served predictions of ``source`` in the stack's prediction log, once there are ``n``
    (the workers write it in batches, off the hot path); fails with what is there after ``timeout``."""
    deadline, ids = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(home / "matchcast.db")) as db:
            query = "SELECT match_id FROM prediction_log WHERE source = ? AND NOT shadow ORDER BY id"
            ids = [row[0] for row in db.execute(query, (source,))]
        if len(ids) >= n:
            return ids
        time.sleep(0.5)
    raise AssertionError(f"{len(ids)} {source} predictions logged in {timeout} s, not {n}")


def test_a_sync_prediction_in_the_browser(browser: Any, stack: dict[str, Any]) -> None:
    browser.get(stack["ui"] + "/")
    wait_text(browser, "upcoming matches, soonest first")
    click_button(browser, "Predict")
    wait_text(browser, "Model matchcast version 1")
    page = wait_text(browser, "Away win")  # the probabilities render after the caption
    assert "Home win" in page and "Draw" in page and "Away win" in page
    assert "error" not in page.lower()
    time.sleep(1)  # let the chart draw
    shot = screenshot(browser, "ui-upcoming.png")
    assert shot.stat().st_size > 10_000
    assert len(logged(stack["home"], "sync", 1)) == 1


def test_a_batch_in_the_browser(browser: Any, stack: dict[str, Any]) -> None:
    browser.get(stack["ui"] + "/batch")
    wait_text(browser, "A whole matchday")
    label = click_button(browser, "Submit ")
    n = int(label.split()[1])
    assert n > 5
    page = wait_text(browser, f"{n} of {n} done ({n} predicted)", timeout=120)
    assert "failed" not in page
    time.sleep(1)
    screenshot(browser, "ui-batch.png")
    assert len(logged(stack["home"], "batch", n)) == n


def test_the_other_pages_in_the_browser(browser: Any, stack: dict[str, Any]) -> None:
    browser.get(stack["ui"] + "/model")
    wait_text(browser, "Held-out metrics")
    wait_text(browser, "champion")  # the alias, in a metric of its own: elements may appear in any order
    page = wait_text(browser, "matchcast evaluate")
    assert "champion" in page and "Held-out metrics" in page
    screenshot(browser, "ui-model.png")
    browser.get(stack["ui"] + "/what-if")
    wait_text(browser, "Elo Home")
    click_button(browser, "Predict")
    wait_text(browser, "Model matchcast version 1")
    page = wait_text(browser, "Home win")  # the probabilities render after the caption
    assert "Home FC v Away FC" in page and "Home win" in page
    screenshot(browser, "ui-what-if.png")
    browser.get(stack["ui"] + "/results")
    page = wait_text(browser, "No prediction has been scored yet")
    assert "error" not in page.lower()

    # The result of the match predicted on the first page arrives (an upload, as a feed would bring it): the
    # Results page scores that prediction, through the API.
    (mid,) = logged(stack["home"], "sync", 1)
    headers = {"X-API-Key": (stack["home"] / "admin.key").read_text().strip()}
    match = httpx.get(f"{stack['api']}/predict/matches/{mid}", headers=headers, timeout=10).json()
    day = date.fromisoformat(match["date"]).strftime("%d/%m/%Y")
    csv = f"Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR\n{day},{match['home_team']},{match['away_team']},2,1,H\n"
    r = httpx.post(
        f"{stack['api']}/admin/ingest",
        params={"league": match["league"], "name": "result.csv"},
        headers={**headers, "Content-Type": "text/csv"},
        content=csv,
        timeout=10,
    )
    assert r.status_code == 202, r.text
    deadline, status = time.monotonic() + 120, {}
    while time.monotonic() < deadline and status.get("status") not in ("SUCCESS", "FAILURE"):
        time.sleep(0.5)
        status = httpx.get(f"{stack['api']}{r.json()['status_url']}", headers=headers, timeout=10).json()
    assert status.get("status") == "SUCCESS" and status["ingest"]["updated"] == 1, status
    deadline, page = time.monotonic() + 60, ""
    while "Scored predictions" not in page and time.monotonic() < deadline:  # the figures are cached 5 s
        browser.get(stack["ui"] + "/results")
        page = wait_text(browser, "Results so far", timeout=30)
        with contextlib.suppress(AssertionError):
            page = wait_text(browser, "Scored predictions", timeout=3)
    assert "Scored predictions (1, latest first)" in page, page[-3000:]
    assert "Scored this season\n1\n" in page and "Frequency baseline RPS" in page  # (the table itself is a canvas)
    screenshot(browser, "ui-results.png")
