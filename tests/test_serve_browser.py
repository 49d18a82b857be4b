"""The page of `streamgen serve` in a real browser: Debian's chromium, headless, driven by selenium.

The live view plays (its time advances, frames are decoded), a prompt typed into the page steers the
stream (its status shows the prompt applied from a frame on), the token never appears in a URL, and a
screenshot and the measured generation-to-display latency are kept in test-artifacts/. With the
shipped model, the frames the browser shows are read by the eval's attribute reader before and after
a new sky is typed in."""
import json
import shutil
import statistics
import time
from pathlib import Path

import base64

import numpy as np
import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PLAYBACK = """const v = document.getElementById('player');
return [v.currentTime, v.getVideoPlaybackQuality().totalVideoFrames, (window.streamgenStats || {}).latencies || []];"""


SHOWN = """const v = document.getElementById('player'), c = document.createElement('canvas');
c.width = v.videoWidth; c.height = v.videoHeight;
const g = c.getContext('2d'); g.drawImage(v, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data; let s = '';
for (let i = 0; i < d.length; i += 4) s += String.fromCharCode(d[i], d[i + 1], d[i + 2]);
return [btoa(s), c.width, c.height];"""


def shown(browser) -> np.ndarray:
    """The frame the page's video element shows now, (H, W, 3) uint8, as the browser decoded it."""
    data, w, h = browser.execute_script(SHOWN)
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(h, w, 3).copy()


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


class StillTheOldSky(AssertionError):
    """The frames shown after the new prompt do not read as its sky."""


@pytest.mark.xfail(strict=True, raises=StillTheOldSky,
                   reason="the shipped model hardly follows a new prompt (docs/results.md, 'Steering a running "
                          "stream'); the next default model is trained on switch clips to")
def test_a_sky_typed_into_the_page_is_the_sky_the_browser_shows_within_8_frames(serve, browser):
    import torch
    from selenium.webdriver.common.by import By

    from streamgen.bundle import SHIPPED
    from streamgen.evaluation import AttributeClassifier

    torch.set_num_threads(1)
    reader, skies = AttributeClassifier.fit(size=128), ("day", "sunset", "night")
    s = serve("--model", str(SHIPPED), "--max-size", "128x128")
    id = s.call("POST", "/streams", {"request": {"prompt": "a day sky over grassy hills", "width": 128,
                                                 "height": 128, "frames": None, "seed": 3}, "fps": 8}).json()["id"]
    browser.get(s.base + "/")
    until("the page watches the stream", lambda: browser.find_element(By.ID, "watching").text == id)
    until("the video plays", lambda: browser.execute_script(PLAYBACK)[0] > 1, timeout=120)

    def skies_shown(n: int) -> list[str]:
        out = []
        for _ in range(n):
            out.append(skies[int(reader.predict(shown(browser)[None])["sky"][0])])
            time.sleep(0.3)
        return out

    before = skies_shown(5)
    assert before.count("day") >= 3, before  # the reader reads the browser's frames
    browser.find_element(By.ID, "token").send_keys(s.token)
    browser.find_element(By.ID, "token-form").submit()
    browser.find_element(By.ID, "prompt").send_keys("a night sky over grassy hills")
    browser.find_element(By.ID, "steer").click()
    frame = s.wait(id, lambda st: st["applied"])["applied"][-1]["frame"]
    # the view is a frame or two behind the server: once it has made 12 frames under the new prompt,
    # the frames shown are at least 8 frames after the change
    until("the stream goes on", lambda: s.call("GET", f"/streams/{id}").json()["frames"] > frame + 12, timeout=120)
    after = skies_shown(5)
    browser.save_screenshot(str(ARTIFACTS / "serve-steered.png"))
    if after.count("night") < 3:
        raise StillTheOldSky(f"after the change the page showed skies {after}; before it {before}")
    assert "Traceback" not in s.stderr
