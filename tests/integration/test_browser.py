"""The web page in headless Chromium against `earshot dev`: upload through the file input,
watch the jobs finish live, filter them, open a result and listen: the player seeks where the
waveform is clicked, space plays and pauses, the waveform zooms and pans on one m:ss time axis
with the beat lines thinned to what the zoom can show; then the same page 390 px wide.

Needs Debian's ``chromium`` and ``chromium-driver``; skips locally without them and FAILS
under ``CI=true``. Screenshots go to ``test-artifacts/`` (gitignored) for a person to look at:
the result 1400 px wide (``browser-2-result-1400px.png``) and 390 px wide
(``browser-3-result-390px.png``).
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
# The long upload: this many copies of the 8 s click track (128 s, 256 beats).
LONG_REPEATS = 16
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
        # /readyz tells whether every queue has a warm worker, however `earshot dev` groups
        # the queues into pools; without its `workers` the log has a line per queue's pool.
        try:
            answer = httpx.get(f"{url}/readyz", timeout=5)
        except httpx.TransportError:
            return False
        if "workers" in answer.json():
            return answer.status_code == 200
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


def long_click_track(folder: Path) -> Path:
    """click120_cmajor.wav sixteen times over: 128 s at 120 BPM in C major (256 beats), long
    enough that the whole file's beats are closer than a beat line can be drawn."""
    import wave

    with wave.open(str(SAMPLES / "click120_cmajor.wav"), "rb") as clip:
        params = clip.getparams()
        frames = clip.readframes(clip.getnframes())
    path = folder / "long click track.wav"
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames * LONG_REPEATS)
    return path


def view_of(driver: Any) -> dict[str, float]:
    """What the waveform shows: its time window and beat counts (the canvas's data-*)."""
    data = driver.execute_script(
        "return Object.assign({}, document.getElementById('waveform').dataset)"
    )
    return {k: float(v) for k, v in data.items()}


def axis_labels(driver: Any) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#axis span')].map(s => s.textContent)"
    )


def test_upload_listen_and_look_in_the_browser(base_url: str, browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # 1400 px wide; short enough that the page can scroll a result to the top.
    driver.set_window_size(1400, 1200)
    # Rows are replaced as uploads turn into jobs: a row read mid-swap is read again.
    wait = WebDriverWait(
        driver, WAIT_S, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    )
    driver.get(base_url + "/")
    assert driver.title == "earshot"
    long_file = long_click_track(tmp_path)
    files = [long_file, SAMPLES / "aminor_progression.flac"]
    # One send_keys with several paths is a multi-file pick in the file dialog.
    driver.find_element(By.ID, "file-input").send_keys("\n".join(str(f) for f in files))

    def rows() -> dict[str, dict[str, str]]:
        return {
            r.find_element(By.CLASS_NAME, "name").text: {
                "status": r.find_element(By.CLASS_NAME, "status").text,
                "facts": r.find_element(By.CLASS_NAME, "facts").text,
            }
            for r in driver.find_elements(By.CSS_SELECTOR, "#job-list .job")
            if r.is_displayed()
        }

    wait.until(lambda _: len(rows()) == 2)
    # While a job runs the spectrogram box is empty (no broken-image alt text): `hidden` wins.
    assert driver.execute_script(
        "const i = document.getElementById('spectrogram');"
        "return [i.hidden, getComputedStyle(i).display]"
    ) in ([True, "none"], [False, "block"])
    screenshot(driver, "browser-1-uploaded.png")
    # The rows are updated by the event stream until both jobs end; finished rows then show
    # their tempo and key.
    wait.until(
        lambda _: all(r["status"] in {"SUCCEEDED", "FAILED", "CANCELED"} for r in rows().values())
    )
    assert {name: r["status"] for name, r in rows().items()} == {f.name: "SUCCEEDED" for f in files}
    wait.until(lambda _: all("BPM" in r["facts"] for r in rows().values()))
    assert rows()[long_file.name]["facts"].endswith("BPM · C major")
    assert rows()[files[1].name]["facts"].endswith("A minor")
    # The filter hides rows that do not match.
    filter_box = driver.find_element(By.ID, "job-filter")
    filter_box.send_keys("minor")
    assert list(rows()) == [files[1].name]
    filter_box.send_keys(Keys.BACKSPACE * len("minor"))  # clear() sends no input event
    wait.until(lambda _: len(rows()) == 2)

    row = next(
        r
        for r in driver.find_elements(By.CSS_SELECTOR, "#job-list .job")
        if r.find_element(By.CLASS_NAME, "name").text == long_file.name
    )
    row.click()
    wait.until(lambda d: "BPM" in d.find_element(By.ID, "tempo").text)
    # Clicking a row scrolls to its result.
    result_top = "return document.getElementById('result').getBoundingClientRect().top"
    wait.until(lambda d: -5 < d.execute_script(result_top) < 50)
    assert driver.find_element(By.ID, "result-title").text == long_file.name
    bpm = float(re.sub(r"[^0-9.]", "", driver.find_element(By.ID, "tempo").text))
    assert bpm == pytest.approx(120, abs=3)
    assert driver.find_element(By.ID, "key").text == "C major"
    assert "confidence" in driver.find_element(By.ID, "key-more").text
    assert driver.find_element(By.ID, "duration").text == "2:08"  # 128 s
    assert "LUFS" in driver.find_element(By.ID, "loudness").text
    assert "Spectral centroid" in driver.find_element(By.ID, "features").text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#chroma > div")) == 12
    assert len(driver.find_elements(By.CSS_SELECTOR, "#mfcc > div")) == 19
    # Tooltips say the unit and the method.
    tempo_tip = driver.find_element(By.CSS_SELECTOR, "[data-tip=tempo]").get_attribute("title")
    assert "Beats per minute" in tempo_tip and "autocorrelation" in tempo_tip

    # Both plots arrive once the render worker drew them.
    wait.until(lambda d: d.find_element(By.ID, "waveform").get_attribute("data-length"))
    spectrogram = driver.find_element(By.ID, "spectrogram")
    wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", spectrogram) > 0)
    assert driver.execute_script("return arguments[0].naturalWidth", spectrogram) == 1200

    # The whole file: one m:ss axis, and fewer beat lines than beats (683 beats of a song once
    # painted the waveform solid red).
    whole = view_of(driver)
    assert (whole["viewStart"], whole["viewEnd"]) == (0.0, pytest.approx(128, abs=0.5))
    labels = axis_labels(driver)
    assert len(labels) >= 4 and all(re.fullmatch(r"\d+:\d\d", label) for label in labels), labels
    assert labels[0] == "0:00" and "2:00" in labels
    assert whole["beatsTotal"] >= 240  # 120 BPM for 128 s
    assert 0 < whole["beatsDrawn"] < whole["beatsTotal"]
    screenshot(driver, "browser-2-result-1400px.png")

    # Zoom in twice: a quarter of the file, every beat in view drawn, labels still m:ss.
    driver.find_element(By.ID, "zoom-in").click()
    driver.find_element(By.ID, "zoom-in").click()
    zoomed = view_of(driver)
    assert zoomed["viewEnd"] - zoomed["viewStart"] == pytest.approx(32, abs=0.1)
    assert zoomed["beatsDrawn"] == zoomed["beatsInView"] < zoomed["beatsTotal"]
    assert zoomed["beatsInView"] == pytest.approx(64, abs=2)  # 32 s at 120 BPM
    labels = axis_labels(driver)
    assert all(re.fullmatch(r"\d+:\d\d", label) for label in labels), labels
    # Drag the waveform to the left: the view moves later in the file by as much.
    canvas = driver.find_element(By.ID, "waveform")
    width = canvas.size["width"]
    ActionChains(driver).move_to_element(canvas).click_and_hold().move_by_offset(
        -width // 4, 0
    ).release().perform()
    panned = view_of(driver)
    assert panned["viewStart"] - zoomed["viewStart"] == pytest.approx(8, abs=0.5)

    # The player has the uploaded file; a click on the waveform seeks it there.
    player = driver.find_element(By.ID, "player")
    wait.until(lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    assert driver.execute_script("return arguments[0].duration", player) == pytest.approx(
        128, abs=0.5
    )
    ActionChains(driver).move_to_element_with_offset(canvas, width // 4, 0).click().perform()
    expected = panned["viewStart"] + 0.75 * (panned["viewEnd"] - panned["viewStart"])
    wait.until(lambda d: d.execute_script("return arguments[0].currentTime", player) > 0)
    assert driver.execute_script("return arguments[0].currentTime", player) == pytest.approx(
        expected, abs=0.5
    )
    cursor = driver.find_element(By.ID, "cursor")
    assert cursor.is_displayed()
    assert cursor.location["x"] == pytest.approx(canvas.location["x"] + 0.75 * width, abs=4)
    # Space plays, space pauses.
    driver.execute_script("document.activeElement.blur()")
    ActionChains(driver).send_keys(Keys.SPACE).perform()
    wait.until(lambda d: not d.execute_script("return arguments[0].paused", player))
    ActionChains(driver).send_keys(Keys.SPACE).perform()
    wait.until(lambda d: d.execute_script("return arguments[0].paused", player))
    driver.find_element(By.ID, "zoom-all").click()

    # A phone, 390 px wide: nothing wider than the screen, the progress bars inside their rows.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 1600, "deviceScaleFactor": 1, "mobile": True},
    )
    wait.until(lambda d: d.execute_script("return document.documentElement.clientWidth") == 390)
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
    overflow = driver.execute_script(
        """
        return [...document.querySelectorAll('#job-list .job')].filter(row => {
          const r = row.getBoundingClientRect();
          const p = row.querySelector('progress').getBoundingClientRect();
          return p.right > r.right || p.left < r.left;
        }).length
        """
    )
    assert overflow == 0
    narrow = view_of(driver)
    assert narrow["beatsDrawn"] < whole["beatsDrawn"]  # fewer pixels, fewer lines
    driver.execute_script("document.getElementById('result').scrollIntoView()")
    screenshot(driver, "browser-3-result-390px.png")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    links = {
        a.get_attribute("data-format"): a.get_attribute("href")
        for a in driver.find_elements(By.CSS_SELECTOR, ".downloads a")
    }
    assert set(links) == {"json", "csv", "npz"}
    assert httpx.get(links["csv"], timeout=30).text.startswith("time")
    assert page_errors(driver) == []

    # Paging: 20 more uploads of the same bytes are answered from the cache at once; the list
    # shows the newest 20, and "Show older analyses" brings the two first ones back.
    for _ in range(20):
        with files[1].open("rb") as f:
            r = httpx.post(
                base_url + "/v1/analyses", files={"file": (files[1].name, f)}, timeout=30
            )
        assert r.status_code == 202 and r.json()["cached"], r.text
    driver.refresh()
    more = driver.find_element(By.ID, "jobs-more")
    wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, "#job-list .job")) == 20)
    wait.until(lambda _: more.is_displayed())
    more.click()
    wait.until(lambda _: len(driver.find_elements(By.CSS_SELECTOR, "#job-list .job")) == 22)
    assert not more.is_displayed()
    names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#job-list .job .name")]
    # The two first uploads (in either order: they went up together) are at the bottom.
    assert sorted(names[-2:]) == sorted(f.name for f in files)
    assert long_file.name not in names[:-2]


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
