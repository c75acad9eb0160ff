"""The web page in headless Chromium against `earshot dev`: upload through the file input,
watch the jobs finish live, and see tempo, key and both plots in the result view.

Needs Debian's ``chromium`` and ``chromium-driver``; skips locally without them and FAILS
under ``CI=true``. Screenshots go to ``test-artifacts/`` (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.names import Queue
from tests.integration.conftest import (
    REPO,
    SAMPLES,
    WAIT_S,
    Service,
    free_port,
    service_env,
    wait_for,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1700",
]


def require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"{', '.join(missing)} missing (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI=true: integration tests must not skip)")
        pytest.skip(message)


@pytest.fixture
def base_url(tmp_path: Path, numba_cache: Path) -> Iterator[str]:
    port = free_port()
    service = Service(
        ["dev", "--port", str(port)],
        env=service_env(tmp_path / "var", numba_cache),
        log=tmp_path / "dev.log",
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        service.assert_alive()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def workers_ready() -> bool:
        service.assert_alive()
        return service.log().count(" ready.") >= len(Queue)

    try:
        wait_for(healthy, what="`earshot dev` to answer /healthz")
        # A cold start compiles numba's JIT in every pool; that is not the page's wait.
        wait_for(workers_ready, what="a worker pool per queue", timeout=2 * WAIT_S)
        yield url
    finally:
        service.stop()
    assert "Traceback" not in service.log(), service.log()[-4000:]


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    # Selenium must never go looking for (or download) a browser or driver of its own.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options,
        service=DriverService(
            executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "d.log")
        ),
    )
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def page_errors(driver: Any) -> list[str]:
    """Console errors other than the expected 409s of plots still being drawn."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "409" not in entry["message"]
    ]


def test_upload_in_the_browser_shows_the_result_and_plots(base_url: str, browser: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # Rows are replaced as uploads turn into jobs: a row read mid-swap is read again.
    wait = WebDriverWait(
        driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    )
    driver.get(base_url + "/")
    assert driver.title == "earshot"
    files = [SAMPLES / "click120_cmajor.wav", SAMPLES / "aminor_progression.flac"]
    # One send_keys with several paths is a multi-file pick in the file dialog.
    driver.find_element(By.ID, "file-input").send_keys("\n".join(str(f) for f in files))

    def statuses() -> dict[str, str]:
        rows = driver.find_elements(By.CSS_SELECTOR, "#job-list .job")
        return {
            r.find_element(By.CLASS_NAME, "name").text: r.find_element(By.CLASS_NAME, "status").text
            for r in rows
        }

    wait.until(lambda _: len(statuses()) == 2)
    screenshot(driver, "browser-1-uploaded.png")
    # The rows are updated by the event stream until both jobs end.
    wait.until(lambda _: set(statuses().values()) <= {"SUCCEEDED", "FAILED", "CANCELED"})
    assert statuses() == {f.name: "SUCCEEDED" for f in files}

    row = next(
        r
        for r in driver.find_elements(By.CSS_SELECTOR, "#job-list .job")
        if r.find_element(By.CLASS_NAME, "name").text == files[0].name
    )
    row.click()
    wait.until(lambda d: "BPM" in d.find_element(By.ID, "tempo").text)
    assert driver.find_element(By.ID, "result-title").text == files[0].name
    bpm = float(re.sub(r"[^0-9.]", "", driver.find_element(By.ID, "tempo").text))
    assert bpm == pytest.approx(120, abs=3)
    assert driver.find_element(By.ID, "key").text == "C major"
    assert "LUFS" in driver.find_element(By.ID, "loudness").text
    table = driver.find_element(By.ID, "features").text
    assert "Spectral centroid" in table
    assert "Onset rate" in table

    # Both plots arrive once the render worker drew them.
    wait.until(lambda d: d.find_element(By.ID, "waveform").get_attribute("data-length"))
    spectrogram = driver.find_element(By.ID, "spectrogram")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", spectrogram) > 0)
    assert driver.execute_script("return arguments[0].naturalWidth", spectrogram) == 1200
    assert driver.execute_script("return arguments[0].naturalHeight", spectrogram) == 400
    # The canvas has the waveform drawn on it: some pixels are the bar colour.
    drawn = driver.execute_script(
        """
        const c = document.getElementById('waveform');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 150 && d[i] < 60) n++;
        return n;
        """
    )
    assert drawn > 1000
    links = {
        a.get_attribute("data-format"): a.get_attribute("href")
        for a in driver.find_elements(By.CSS_SELECTOR, ".downloads a")
    }
    assert set(links) == {"json", "csv", "npz"}
    assert httpx.get(links["csv"], timeout=30).text.startswith("time")
    screenshot(driver, "browser-2-result.png")
    assert page_errors(driver) == []


@pytest.fixture
def served_api(tmp_path: Path, numba_cache: Path) -> Iterator[str]:
    """`earshot serve` alone: the documentation pages need no worker."""
    port = free_port()
    service = Service(
        ["serve", "--port", str(port)],
        env=service_env(tmp_path / "var", numba_cache),
        log=tmp_path / "serve.log",
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        service.assert_alive()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, what="`earshot serve` to answer /healthz")
        yield url
    finally:
        service.stop()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_render_every_operation_offline(
    served_api: str, browser: Any, page: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(served_api + page)
    summaries = [
        op["summary"]
        for item in httpx.get(served_api + "/openapi.json", timeout=30).json()["paths"].values()
        for op in item.values()
    ]
    assert len(summaries) >= 10
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2)
    wait.until(lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in summaries))
    screenshot(driver, f"docs-{page.strip('/')}.png")
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".map(e => [e.name, e.responseStatus, e.transferSize])"
    )
    errors = page_errors(driver)
    local = [name for name, _, _ in entries if name.startswith(served_api + "/")]
    assert {"/openapi.json", "/static/vendor/favicon-32x32.png"} <= {
        name.removeprefix(served_api) for name in local
    }, entries
    # Anything else the UI asks for (ReDoc's sidebar logo on cdn.redoc.ly) is refused by the
    # page's Content-Security-Policy before a request leaves: no status, no bytes.
    for name, status, size in entries:
        if name not in local:
            assert (status, size) == (0, 0), entries
            assert any(name in e and "Content Security Policy" in e for e in errors), errors
    assert all("Content Security Policy" in e for e in errors), errors
