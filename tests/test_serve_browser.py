"""The page of `streamgen serve` in a real browser: Debian's chromium, headless, driven by selenium.

The live view plays (its time advances, frames are decoded), a prompt typed into the page steers the
stream (its status shows the prompt applied from a frame on), the token never appears in a URL, and a
screenshot and the measured generation-to-display latency are kept in test-artifacts/."""
import json
import shutil
import statistics
import time
from pathlib import Path

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PLAYBACK = """const v = document.getElementById('player');
return [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames, (window.streamgenStats || {}).latencies || []];"""


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def until(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return got


def test_the_page_plays_the_live_view_and_steers_the_stream(serve, browser):
    from selenium.webdriver.common.by import By

    s = serve()
    id = s.call("POST", "/streams", {"request": {"prompt": "a day sky over hills", "width": 32, "height": 32,
                                                 "frames": None}, "fps": 8}).json()["id"]
    browser.get(s.base + "/")
    until("the page watches the stream", lambda: browser.find_element(By.ID, "watching").text == id)
    t0, frames0, _ = until("the video starts", lambda: (p := browser.execute_script(PLAYBACK))[1] > 0 and p)
    t1, frames1, _ = until("the video plays on", lambda: (p := browser.execute_script(PLAYBACK))[0] > t0 + 1 and p)
    assert frames1 > frames0

    browser.find_element(By.ID, "token").send_keys(s.token)
    browser.find_element(By.ID, "token-form").submit()
    browser.find_element(By.ID, "prompt").send_keys("a night sky over snowy mountains")
    browser.find_element(By.ID, "steer").click()
    until("the page says the command was taken", lambda: browser.find_element(By.ID, "message").text == "prompt")
    status = s.wait(id, lambda st: st["applied"])
    assert status["applied"][-1]["prompt"] == status["prompt"] == "a night sky over snowy mountains"
    until("the page shows the change", lambda: "snowy mountains" in browser.find_element(By.ID, "status").text)
    frame = status["applied"][-1]["frame"]
    until("the stream goes on after it", lambda: s.call("GET", f"/streams/{id}").json()["frames"] > frame + 8)

    urls = browser.execute_script("return [location.href, ...performance.getEntries().map(e => e.name)]")
    assert not any(s.token in url for url in urls)
    assert browser.execute_script("return sessionStorage.getItem('streamgen-token')") == s.token
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "serve-page.png"))
    latencies = browser.execute_script(PLAYBACK)[2]
    assert latencies, "no frame was matched to the time it was made"
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    (ARTIFACTS / "serve-latency.json").write_text(json.dumps({"frames": len(latencies), "median_ms": statistics.median(latencies),
                                                              "p95_ms": q[18]}))
    assert "Traceback" not in s.stderr
