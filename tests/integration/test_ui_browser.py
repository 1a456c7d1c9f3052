"""End to end: `matchcast up` (embedded Redis, worker, API and UI as real processes) driven in headless Chromium.

Clicks through a sync prediction and a batch, and saves screenshots under test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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
        yield {"ui": ui, "home": tmp / "home", "tmp": tmp}
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


def records(home: Path) -> list[dict[str, Any]]:
    path = home / "ui" / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_sync_prediction_in_the_browser(browser: Any, stack: dict[str, Any]) -> None:
    browser.get(stack["ui"] + "/")
    wait_text(browser, "upcoming matches, soonest first")
    click_button(browser, "Predict")
    page = wait_text(browser, "Model matchcast version 1")
    assert "Home win" in page and "Draw" in page and "Away win" in page
    assert "error" not in page.lower()
    time.sleep(1)  # let the chart draw
    shot = screenshot(browser, "ui-upcoming.png")
    assert shot.stat().st_size > 10_000
    assert [r["source"] for r in records(stack["home"])] == ["sync"]


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
    assert sum(r["source"] == "batch" for r in records(stack["home"])) == n


def test_the_other_pages_in_the_browser(browser: Any, stack: dict[str, Any]) -> None:
    browser.get(stack["ui"] + "/model")
    page = wait_text(browser, "Held-out metrics")
    assert "champion" in page and "matchcast evaluate" in page
    screenshot(browser, "ui-model.png")
    browser.get(stack["ui"] + "/what-if")
    wait_text(browser, "Elo Home")
    click_button(browser, "Predict")
    wait_text(browser, "Model matchcast version 1")
    page = wait_text(browser, "Home win")  # the probabilities render after the caption
    assert "Home FC v Away FC" in page and "Home win" in page
    screenshot(browser, "ui-what-if.png")
    browser.get(stack["ui"] + "/results")
    page = wait_text(browser, "Awaiting a result")
    assert "error" not in page.lower()
