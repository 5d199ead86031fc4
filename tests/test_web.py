"""The drawing page (issue #7), end to end in a real headless Chromium.

The browser is Debian's `chromium` driven by Selenium through Debian's
`chromium-driver` (the driver matches the browser exactly; nothing is downloaded).
The page comes from the running Serve app, results land in a real S3 server
(SeaweedFS), and the test draws with real pointer events. Screenshots go to
test-artifacts/ (gitignored).

The HTTP side of the page (GET /, /static/..., POST /v1/preview) is tested without a
browser too, so it runs where Chromium is absent.

A new user's first hour (issue 24): the page at 1400x1000 (mouse) and 390x844 (touch,
emulated by Chromium's DevTools): after drawing, the preview and Render are on screen
without scrolling; a bad file's message and an over-limit photo's refusal are in the
viewport; a render is in the history after a reload and plays; a saved path renders the
same frames with `d2v render --path`. With D2V_UPDATE_DOCS=1 those screenshots are also
written to docs/ (the README's pictures).

The farm (tests/conftest.py's `web`, one for the session, shared with test_web_subjects.py)
also serves the app with API keys at /keyed. The last tests run the page against it: the key typed
on the page goes with every request, a 401 is said next to the key field, and the
results (which a <video> or <img> cannot fetch with a header) still show.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests.test_images import png_bytes
from tests.conftest import SharedFarm, textured_image

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
PHOTO = REPO / "examples/hubble.jpg"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--window-size=1440,1240", "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.timeout(300)
needs_browser = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists() and importlib.util.find_spec("selenium")),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver: "
    "apt-get install -y chromium chromium-driver) and selenium (pip install -e '.[test]')",
)


# --- HTTP, no browser ------------------------------------------------------------------

STROKE = {"canvas": {"width": 800, "height": 450},
          "points": [{"x": 100 + 12 * i, "y": 225 + 0.1 * i, "t": 0.02 * i} for i in range(40)]}


def test_preview_plans_the_same_move_small():
    from d2v.models import parse_request
    from d2v.preview import preview

    # A bare list of points is in image pixels: the image is the canvas.
    points = [{"x": 100 + 10 * i, "y": 180.0} for i in range(30)]
    request = parse_request({"path": points, "effect": "zoom_in", "width": 576, "height": 1024, "fps": 30})
    out = preview(textured_image(640, 360, seed=2), request)
    assert out["canvas"] == {"width": 640, "height": 360} and out["effect"] == "zoom_in"
    assert (out["width"], out["height"], out["fps"], out["frames"]) == (144, 256, 12, 48)  # portrait, 4 s
    end = out["views"][-1]  # zoom_in ends centred on the path's end
    cx, cy = sum(x for x, _ in end) / 4, sum(y for _, y in end) / 4
    assert abs(cx - 390) < 40 and abs(cy - 180) < 40, (cx, cy)


def test_page_and_static_files_are_served(web):
    page = httpx.get(f"{web}/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and 'href="static/style.css"' in page.text  # relative: works under a route prefix
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = httpx.get(f"{web}/static/{name}", timeout=30)
        assert r.status_code == 200 and kind in r.headers["content-type"], (name, r.headers)
    assert httpx.get(f"{web}/static/nope.js", timeout=30).status_code == 404


def test_preview_is_small_and_shows_the_move(web):
    """The preview is fast because it is small (256x144 at 12 fps, whatever the job's size):
    that is checked here; its time is measured in bench/ (no timed assertions in tests)."""
    image = png_bytes(textured_image(960, 540, seed=3))
    request = {"path": STROKE, "effect": "auto", "duration_s": 2, "fps": 24, "width": 1024, "height": 576}
    with httpx.Client(base_url=web, timeout=60) as client:
        post = lambda: client.post("/v1/preview", files={"image": ("p.png", image, "image/png")},
                                   data={"request": json.dumps(request)})
        r = post()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["effect"] == body["auto_effect"] == "pan" and body["path_shape"] == "straight"
    assert body["canvas"] == {"width": 800, "height": 450}
    assert (body["width"], body["height"], body["fps"], body["frames"]) == (256, 144, 12, 24)
    assert len(body["views"]) == 24 and all(len(q) == 4 for q in body["views"])
    xs = [x for x, _ in body["path"]]
    assert 90 < xs[0] < 110 and 560 < xs[-1] < 590  # the smoothed path, in canvas units
    assert body["video"].startswith("data:video/mp4;base64,")


def test_a_heic_from_a_phone_previews(web):
    """An iPhone's HEIC (HEIF, read through pillow-heif) is a photo like a JPEG."""
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.fromarray(textured_image(320, 240, seed=4)).save(buf, format="HEIF", quality=90)
    request = {"path": STROKE, "effect": "pan", "duration_s": 1}
    r = httpx.post(f"{web}/v1/preview", files={"image": ("IMG_0001.HEIC", buf.getvalue(), "image/heic")},
                   data={"request": json.dumps(request)}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["video"].startswith("data:video/mp4;base64,")


def test_preview_errors_are_words(web):
    request = {"path": STROKE, "effect": "auto"}
    r = httpx.post(f"{web}/v1/preview", files={"image": ("x.png", b"not an image", "image/png")},
                   data={"request": json.dumps(request)}, timeout=30)
    assert r.status_code in (400, 415) and "not an image" in r.json()["detail"]
    r = httpx.post(f"{web}/v1/preview", files={"image": ("p.png", png_bytes(textured_image(64, 64)), "image/png")},
                   data={"request": json.dumps({**request, "effect": "warp"})}, timeout=30)
    assert r.status_code == 422 and "unknown effect 'warp'" in r.json()["detail"]


# --- the page in Chromium -------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the requests' headers
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout_s: float = 60, what: str = ""):
    """Run `script` (a JS expression) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.1)
    shown = driver.execute_script("return typeof shownMessages === 'function' ? shownMessages() : []")
    raise AssertionError(f"timed out waiting for {what or script}; messages on the page: {shown!r}")


PHOTO_MESSAGE = ("!document.getElementById('photo-message').hidden && "
                 "document.querySelector('#photo-message .message-text').textContent")


def no_messages(driver) -> bool:
    return driver.execute_script("return shownMessages()") == []


def choose_a_short_small_pan(driver) -> None:
    """Pan, 1 s, 640x360 at 12 fps (a quick render), then wait for the preview of exactly these settings."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "effect")).select_by_value("pan")
    driver.find_element("id", "duration").send_keys(Keys.HOME)  # 1 s
    Select(driver.find_element("id", "size")).select_by_value("640x360")
    Select(driver.find_element("id", "fps")).select_by_value("12")
    wait_for(driver, "state.preview && state.previewFor === JSON.stringify(requestBody())",
             what="the preview of these settings")

def draw(driver, points: list[tuple[float, float]], kind: str = "pen", step_ms: int = 25) -> None:
    """Draw a stroke on the canvas with real pointer events; points are fractions of its size."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    canvas = driver.find_element("id", "canvas")
    w, h = canvas.rect["width"], canvas.rect["height"]
    offset = lambda fx, fy: (int((fx - 0.5) * w), int((fy - 0.5) * h))  # from the element's centre
    kinds = {"pen": interaction.POINTER_PEN, "mouse": interaction.POINTER_MOUSE, "touch": interaction.POINTER_TOUCH}
    pointer = PointerInput(kinds[kind], kind)
    actions = ActionBuilder(driver, mouse=pointer, duration=step_ms)
    actions.pointer_action.move_to(canvas, *offset(*points[0])).pointer_down()
    for fx, fy in points[1:]:
        actions.pointer_action.move_to(canvas, *offset(fx, fy))
    actions.pointer_action.pointer_up()
    actions.perform()


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


@needs_browser
def playing_video(driver, duration_s: float, *fields: str) -> dict:
    """Wait for the rendered video: shown, `duration_s` long (within 0.1 s) and playing.
    Returns the video element's `fields` (and videoWidth / videoHeight as w / h)."""
    wait_for(driver, "!document.getElementById('video-box').hidden", timeout_s=180, what="the rendered video")
    seen = wait_for(driver, "document.getElementById('video').readyState >= 2 && "
                    "document.getElementById('video').duration", what="the video's metadata")
    assert abs(seen - duration_s) < 0.1, seen
    t1 = driver.execute_script("return document.getElementById('video').currentTime")
    wait_for(driver, f"document.getElementById('video').currentTime != {t1}", timeout_s=10, what="the video playing")
    props = ", ".join(f"{f}: v.{f}" for f in fields)
    return driver.execute_script("const v = document.getElementById('video'); "
                                 f"return {{{props}{', ' if props else ''}w: v.videoWidth, h: v.videoHeight}}")


def test_draw_preview_render_and_play_in_chromium(web, browser):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(f"{web}/")
    wait_for(driver, "document.querySelectorAll('#effect option').length > 5", what="the effects list")
    names = driver.execute_script("return [...document.querySelectorAll('#effect option')].map(o => o.value)")
    assert names[0] == "auto" and {"zoom_in", "pan", "orbit", "spiral", "crash_zoom"} <= set(names)
    screenshot(driver, "web-empty.png")

    driver.find_element("id", "file").send_keys(str(PHOTO))
    wait_for(driver, "!document.getElementById('canvas').hidden", what="the photo on the canvas")
    canvas_size = driver.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height]")
    assert canvas_size == [1000, 872]  # the photo's grid (800..1600 on the longer side)

    # A left-to-right stroke with a gentle rise, drawn with a pen (pointer events, timed).
    stroke = [(0.15 + 0.7 * i / 30, 0.55 - 0.12 * (i / 30) ** 2) for i in range(31)]
    draw(driver, stroke, kind="pen")
    analysis = wait_for(driver, "document.getElementById('analysis').textContent.includes('auto picks') && "
                        "document.getElementById('analysis').textContent", what="the path analysis")
    assert "straight" in analysis and ("pan" in analysis or "zoom in" in analysis), analysis
    sent = driver.execute_script("return requestBody().path")
    assert sent["canvas"] == {"width": 1000, "height": 872} and len(sent["points"]) >= 10
    times = [p["t"] for p in sent["points"]]
    assert times[0] == 0 and times == sorted(times) and times[-1] > 0.2  # drawing speed was recorded

    # Undo takes the stroke away, and nothing is left to render; draw it again.
    driver.find_element("id", "undo").click()
    assert driver.execute_script("return currentPath().length") == 0
    assert not driver.find_element("id", "render").is_enabled()
    draw(driver, stroke, kind="mouse")
    drawn = driver.execute_script("return currentPath()")

    # A finger stroke from the path's end continues it, in time too; undo takes just that back.
    draw(driver, [stroke[-1], (0.9, 0.45), (0.93, 0.5)], kind="touch")
    longer = driver.execute_script("return currentPath()")
    assert len(longer) > len(drawn) and longer[: len(drawn)] == drawn
    assert all(a["t"] < b["t"] for a, b in zip(longer[len(drawn) - 1 :], longer[len(drawn) :]))
    driver.find_element("id", "undo").click()
    assert driver.execute_script("return currentPath()") == drawn

    # Settings, by keyboard where it is natural: pan, 2 s, 640x360 at 12 fps.
    Select(driver.find_element("id", "effect")).select_by_value("pan")
    duration = driver.find_element("id", "duration")
    duration.send_keys(Keys.HOME, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # 1 s + 2 x 0.5 s
    assert driver.find_element("id", "duration-out").text == "2 s"
    Select(driver.find_element("id", "size")).select_by_value("640x360")
    Select(driver.find_element("id", "fps")).select_by_value("12")
    assert "follows the path" in driver.find_element("id", "effect-help").text  # pan's description

    # The preview follows the settings: 2 s at 12 fps, playing.
    wait_for(driver, "state.preview && state.previewFor === JSON.stringify(requestBody()) && "
             "document.getElementById('preview').currentTime > 0", what="the preview of these settings playing")
    assert driver.execute_script("return [state.preview.effect, state.preview.duration_s]") == ["pan", 2]
    # The camera's view moves over the photo with the preview; what it leaves out is dimmed.
    dimming = """
        const c = document.getElementById('canvas');
        const copy = document.createElement('canvas');
        copy.width = c.width; copy.height = c.height;
        copy.getContext('2d').drawImage(state.bitmap, 0, 0, c.width, c.height);
        const mean = (canvas) => {  // a corner block no view of this move reaches
          const d = canvas.getContext('2d').getImageData(800, 700, 150, 150).data;
          let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
          return s / (d.length / 4 * 3);
        };
        return [mean(c), mean(copy)];"""
    # The overlay is drawn on the next animation frame of the playing preview: give it a moment.
    deadline = time.monotonic() + 10
    while (means := driver.execute_script(dimming))[0] >= 0.6 * means[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    outside, photo = means
    assert outside < 0.6 * photo, (outside, photo)
    screenshot(driver, "web-preview.png")

    driver.find_element("id", "render").click()
    wait_for(driver, "document.querySelector('#stages li.active, #stages li.done')", what="stage progress")
    video = playing_video(driver, 2.0, "paused", "loop")
    assert not video["paused"] and video["loop"], video
    assert (video["w"], video["h"]) == (640, 360)
    stages = driver.execute_script("return [...document.querySelectorAll('#stages li')].map(li => li.className)")
    assert all(c == "done" for c in stages), stages
    href = driver.find_element("id", "download").get_attribute("href")
    assert href.endswith("/video") and "/v1/jobs/" in href
    copy = driver.find_element("id", "copy")
    assert copy.tag_name == "button"
    copy.click()  # the clipboard, or (where the page may not write it) the link shown, selected
    wait_for(driver, "document.getElementById('copy').textContent.includes('Copied') || "
             "!document.getElementById('link').hidden", timeout_s=10, what="the link copied or shown")
    assert driver.find_element("id", "link").get_attribute("value") == href
    # Under the video: the path check's verdict and the photo with the drawn and measured path.
    verdict = wait_for(driver, "!document.getElementById('fidelity').hidden && "
                       "document.getElementById('fidelity-image').naturalWidth > 0 && "
                       "document.getElementById('fidelity-verdict').textContent", what="the path check")
    assert verdict.startswith("Path followed: end ") and "frames located" in verdict, verdict
    picture = driver.execute_script("const i = document.getElementById('fidelity-image'); "
                                    "return [i.naturalWidth, i.naturalHeight, i.src]")
    assert picture[0] >= 300 and picture[1] >= 200 and picture[2].endswith("/fidelity"), picture
    time.sleep(0.4)  # a frame or two further into the loop for the screenshot
    shot = screenshot(driver, "web-rendered.png")
    assert shot.stat().st_size > 10_000
    assert no_messages(driver)  # no error shown


# --- the first hour of a new user (issue 24): a laptop and a phone ------------------------

LAPTOP, PHONE = (1400, 1000, False), (390, 844, True)
DOCS = REPO / "docs"


def viewport(driver, width: int, height: int, touch: bool) -> None:
    """The window as a laptop's (mouse) or a phone's (touch, mobile) at this size."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": touch})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": touch, "maxTouchPoints": 5})


def in_view(driver, element_id: str) -> dict:
    """The element's box and whether all of it is inside the viewport (no scrolling needed)."""
    return driver.execute_script(
        "const b = document.getElementById(arguments[0]).getBoundingClientRect(); "
        "return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, height: b.height, "
        "inside: b.height > 0 && b.top >= 0 && b.left >= 0 && b.bottom <= innerHeight && b.right <= innerWidth};",
        element_id)


def docs_screenshot(driver, name: str) -> Path:
    """A screenshot for the README: in test-artifacts/, and in docs/ as JPEG (a tenth of the
    PNG's size) when D2V_UPDATE_DOCS=1."""
    shot = screenshot(driver, name)
    if os.environ.get("D2V_UPDATE_DOCS") == "1":
        to_docs(shot.read_bytes(), name)
    return shot


def to_docs(png: bytes, name: str) -> None:
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").save(DOCS / Path(name).with_suffix(".jpg").name, quality=85)


@needs_browser
@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_a_new_user_sees_preview_render_and_every_message_without_scrolling(web, browser, tmp_path, size):
    from PIL import Image

    width, height, touch = size
    driver = browser
    viewport(driver, width, height, touch)
    try:
        driver.get(f"{web}/")
        wait_for(driver, "document.querySelectorAll('#effect option').length > 5", what="the effects list")
        # The limits are on the drop area before anything is chosen.
        limits = wait_for(driver, "state.limits && document.getElementById('limits-text').textContent",
                          what="the farm's limits")
        assert "50 MiB" in limits and "40 MP" in limits, limits

        # A text file named like a photo: the message is under the drop area, on screen.
        fake = tmp_path / "fake.jpg"
        fake.write_text("these are my notes, not a photo")
        driver.find_element("id", "file").send_keys(str(fake))
        text = wait_for(driver, PHOTO_MESSAGE, what="the message under the photo")
        assert "fake.jpg" in text and "not an image" in text, text
        assert in_view(driver, "photo-message")["inside"], in_view(driver, "photo-message")

        # 8000x6000 (48 MP): refused here with the farm's limit; nothing is uploaded.
        big = tmp_path / "big.png"
        Image.new("RGB", (8000, 6000), (40, 90, 160)).save(big)
        sent_requests(driver)
        driver.find_element("id", "file").send_keys(str(big))
        text = wait_for(driver, "document.querySelector('#photo-message .message-text').textContent"
                        ".includes('big.png') && " + PHOTO_MESSAGE, what="the refusal of the big photo")
        assert "8000×6000 (48 MP)" in text and "up to 40 MP" in text, text
        assert in_view(driver, "photo-message")["inside"]
        assert driver.find_element("id", "canvas").get_attribute("hidden") is not None
        assert not [u for u, _ in sent_requests(driver) if "/v1/preview" in u or u.endswith("/v1/jobs")]

        # The photo, a stroke: the preview plays and Render is there, all without scrolling.
        driver.find_element("id", "file").send_keys(str(PHOTO))
        wait_for(driver, "!document.getElementById('canvas').hidden", what="the photo on the canvas")
        assert no_messages(driver)
        draw(driver, [(0.3 + 0.45 * i / 24, 0.62 - 0.2 * (i / 24) ** 1.5) for i in range(25)],
             kind="touch" if touch else "mouse")
        wait_for(driver, "state.preview && document.getElementById('preview').currentTime > 0",
                 what="the preview playing")
        assert driver.execute_script("return [scrollX, scrollY]") == [0, 0]
        for element in ("canvas", "preview", "render"):
            assert in_view(driver, element)["inside"], (element, in_view(driver, element))
        assert driver.find_element("id", "render").is_enabled()
        # The presets: a strip one card high that scrolls sideways, however many there are.
        strip = driver.execute_script("const g = document.getElementById('gallery'); "
                                      "return [g.scrollWidth > g.clientWidth, g.getBoundingClientRect().height]")
        assert strip[0] and strip[1] < 320, strip
        time.sleep(0.3)  # a frame further into the loop for the picture
        docs_screenshot(driver, f"page-{'phone' if touch else 'laptop'}.png")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})


@needs_browser
def test_refusals_are_said_under_the_photo(web, browser, tmp_path):
    from PIL import Image

    driver = browser
    driver.get(f"{web}/")
    wait_for(driver, "document.getElementById('limits-text').textContent.includes('pixels a side')",
             what="the farm's limits on the drop area")
    # Too small for the farm's limits: the page says so at once, and shows nothing to draw on.
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(png_bytes(textured_image(12, 12)))
    driver.find_element("id", "file").send_keys(str(tiny))
    text = wait_for(driver, PHOTO_MESSAGE, what="the page's words under the photo")
    assert "12×12" in text and "at least 16 pixels" in text, text
    assert driver.execute_script("return document.getElementById('canvas').hidden")
    assert in_view(driver, "photo-message")["inside"]
    # A photo the browser opens but the farm does not take (a GIF): the API's words.
    gif = tmp_path / "frame.gif"
    Image.fromarray(textured_image(96, 64)).save(gif, format="GIF")
    driver.find_element("id", "file").send_keys(str(gif))
    wait_for(driver, "!document.getElementById('canvas').hidden", what="the GIF on the canvas")
    assert no_messages(driver)
    draw(driver, [(0.2, 0.5), (0.4, 0.52), (0.6, 0.5), (0.8, 0.48)], kind="mouse")
    text = wait_for(driver, PHOTO_MESSAGE, what="the server's words under the photo")
    assert "JPEG, PNG, WebP" in text and "(HTTP 4" in text, text
    assert in_view(driver, "photo-message")["inside"]


def test_limits_favicon_and_a_path_outside_the_photo(web):
    from d2v.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

    limits = httpx.get(f"{web}/v1/limits", timeout=30).json()
    assert limits["image"]["max_bytes"] == MAX_IMAGE_BYTES and limits["image"]["max_pixels"] == MAX_IMAGE_PIXELS
    assert limits["duration_s"] == {"min": 0.5, "max": 20.0} and limits["size"]["max"] == 3840
    icon = httpx.get(f"{web}/favicon.ico", timeout=30)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg") and b"<svg" in icon.content
    # Drawn entirely off the photo (a canvas the size of the photo, x beyond its width):
    # refused before any job exists, with words.
    before = httpx.get(f"{web}/v1/jobs", params={"limit": 100}, timeout=30).json()["jobs"]
    off = {"canvas": {"width": 320, "height": 180}, "points": [{"x": 400 + 10 * i, "y": 90} for i in range(20)]}
    r = post_form(web, "/v1/jobs", {"path": off, **SMALL_JOB})
    assert r.status_code == 422 and "lies outside the photo" in r.json()["detail"], r.text
    assert httpx.get(f"{web}/v1/jobs", params={"limit": 100}, timeout=30).json()["jobs"] == before


@needs_browser
def test_render_reload_history_and_the_saved_path_renders_the_same_camera(web, browser, tmp_path):
    from d2v.encode import decode_video

    driver = browser
    viewport(driver, *LAPTOP)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        driver.get(f"{web}/")
        wait_for(driver, "document.querySelectorAll('#effect option').length > 5", what="the effects list")
        driver.find_element("id", "file").send_keys(str(PHOTO))
        wait_for(driver, "!document.getElementById('canvas').hidden", what="the photo on the canvas")
        draw(driver, [(0.2 + 0.55 * i / 24, 0.5 + 0.1 * (i / 24) ** 2) for i in range(25)], kind="mouse")
        choose_a_short_small_pan(driver)
        # Save path: the JSON `d2v render --path` takes.
        driver.find_element("id", "export-path").click()
        saved = downloads / "hubble-path.json"
        deadline = time.monotonic() + 20
        while not saved.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        path = json.loads(saved.read_text())
        assert path["canvas"] == {"width": 1000, "height": 872} and path == json.loads(
            driver.execute_script("return JSON.stringify(requestBody().path)"))
        driver.find_element("id", "render").click()
        playing_video(driver, 1.0)
        job = driver.find_element("id", "download").get_attribute("href").split("/v1/jobs/")[1].split("/")[0]
        docs_screenshot(driver, "page-rendered.png")

        # Reload: the job is in the history, with its poster and verdict; Open plays it.
        driver.refresh()
        item = f"#history li[data-job='{job}']"
        wait_for(driver, f"document.querySelector(\"{item} img\") && "
                 f"document.querySelector(\"{item} img\").naturalWidth > 0", what="the job in the history")
        detail = driver.execute_script(f"return document.querySelector(\"{item} .history-detail\").textContent")
        assert "640×360" in detail and "Path followed" in detail, detail
        driver.execute_script(f"[...document.querySelectorAll(\"{item} button\")].find(b => "
                              "b.textContent === 'Open').click()")
        video = playing_video(driver, 1.0)
        assert (video["w"], video["h"]) == (640, 360)
        # Render again: the job's photo, path and settings come back into the page.
        driver.execute_script(f"[...document.querySelectorAll(\"{item} button\")].find(b => "
                              "b.textContent.startsWith('Render again')).click()")
        wait_for(driver, "state.bitmap && currentPath().length > 0", what="the job's photo and path")
        again = driver.execute_script("return requestBody()")
        assert (again["effect"], again["duration_s"], again["width"], again["fps"]) == ("pan", 1, 640, 12)
        assert len(again["path"]["points"]) == len(path["points"])
        assert no_messages(driver)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # The saved path on the command line renders the same camera: the same frames.
    out = tmp_path / "cli.mp4"
    env = {k: v for k, v in os.environ.items() if not k.startswith("D2V_")}
    done = subprocess.run([str(Path(sys.executable).parent / "d2v"), "render", str(PHOTO), "--path", str(saved),
                           "--effect", "pan", "--duration", "1", "--fps", "12", "--size", "640x360", "-q", "-o",
                           str(out)], cwd=tmp_path, env={**env, "D2V_DATA_DIR": str(tmp_path / "data")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    if os.environ.get("D2V_UPDATE_DOCS") == "1":  # the README's picture of a result
        picture = httpx.get(f"{web}/v1/jobs/{job}/fidelity", follow_redirects=True, timeout=60)
        to_docs(picture.content, "result-fidelity.png")
    farm_video = httpx.get(f"{web}/v1/jobs/{job}/video", follow_redirects=True, timeout=60)
    assert farm_video.status_code == 200
    head = httpx.head(f"{web}/v1/jobs/{job}/video", timeout=30)  # players ask before they GET
    assert head.status_code in (200, 307) and not head.content
    mine, _ = decode_video(out)
    theirs, _ = decode_video(farm_video.content)
    assert mine.shape == theirs.shape == (12, 360, 640, 3)
    assert np.abs(mine.astype(np.int16) - theirs.astype(np.int16)).mean() < 1.0


# --- presets, looks and post effects (issue 15) ---------------------------------------

REQUIRED_PRESETS = {"hitchcock", "michael_bay", "wes_anderson", "christopher_nolan", "earth_zoom_out", "eye_zoom",
                    "product_orbit", "parallax_slide"}
GRADE_CUBE = "# a 2-point LUT that swaps red and blue\nTITLE \"swap\"\nLUT_3D_SIZE 2\n" + "".join(
    f"{b} {g} {r}\n" for b in (0, 1) for g in (0, 1) for r in (0, 1))
SMALL_JOB = {"duration_s": 1, "fps": 6, "width": 128, "height": 72}


def post_form(web: str, endpoint: str, request: dict, lut: bytes | None = None, image: bytes | None = None):
    files = {"image": ("p.png", image or png_bytes(textured_image(320, 180, seed=8)), "image/png")}
    if lut is not None:
        files["lut"] = ("grade.cube", lut, "application/octet-stream")
    return httpx.post(f"{web}{endpoint}", files=files, data={"request": json.dumps(request)}, timeout=60)


def test_presets_looks_post_effects_and_backends_are_listed(web):
    from d2v.models import LOOKS, POST_EFFECTS

    presets = httpx.get(f"{web}/v1/presets", timeout=30).json()
    names = [p["name"] for p in presets]
    assert len(presets) >= 24 and REQUIRED_PRESETS <= set(names), names
    hitchcock = presets[names.index("hitchcock")]
    assert hitchcock["settings"]["effect"] == "dolly_zoom" and "dolly zoom" in hitchcock["description"]
    assert all(p["description"] and p["settings"]["look"] in LOOKS for p in presets)
    looks = httpx.get(f"{web}/v1/looks", timeout=30).json()
    assert [x["name"] for x in looks] == list(LOOKS) and all(x["description"] for x in looks)
    assert [x["name"] for x in httpx.get(f"{web}/v1/post", timeout=30).json()] == list(POST_EFFECTS)
    backends = {b["name"]: b for b in httpx.get(f"{web}/v1/backends", timeout=30).json()}
    assert backends["camera"]["available"] and not backends["svd"]["available"]
    assert "D2V_SVD_MODEL" in backends["svd"]["reason"]


def test_a_cube_part_reaches_the_store_and_the_request_fields_override_the_preset(web, seaweed):
    from d2v.s3store import S3Store

    request = {"path": STROKE, "preset": "eye_zoom", "look": "grade.cube", "post": ["reverse"], **SMALL_JOB}
    r = post_form(web, "/v1/jobs", request, lut=GRADE_CUBE.encode())
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{web}/v1/jobs/{job_id}?wait_s=20", timeout=30).json())["status"] != "succeeded":
        assert status["status"] != "failed" and time.monotonic() < deadline, status
    store = S3Store.from_env(seaweed.env(SharedFarm.BUCKET))
    assert store.get_bytes(f"jobs/{job_id}/look.cube").decode() == GRADE_CUBE
    manifest = json.loads(store.get_bytes(status["result"]["manifest_key"]))
    sent = manifest["request"]
    assert (sent["preset"], sent["duration_s"], sent["look"], sent["post"]) == ("eye_zoom", 1.0, "grade.cube", ["reverse"])
    assert (sent["end_zoom"], sent["speed_ramp"], manifest["effect"]) == (12.0, 0.5, "zoom_in")  # the preset's
    assert manifest["frames"] == 6


@pytest.mark.parametrize("endpoint, request_fields, lut, status, words", [
    ("/v1/jobs", {"preset": "spielberg"}, None, 422, ["unknown preset 'spielberg'", "hitchcock", "bullet_time"]),
    ("/v1/jobs", {"look": "sepia"}, None, 422, ["unknown look 'sepia'", "teal_orange", ".cube"]),
    ("/v1/jobs", {"post": ["slowmo"]}, None, 422, ["post.0", "mirror_fold", "tenet"]),
    ("/v1/jobs", {"look": "grade.cube"}, None, 422, ["lut: is required", "'lut'"]),
    ("/v1/preview", {"look": "grade.cube"}, b"LUT_3D_SIZE 2\n0 0 0\n1 1 1\n", 422, ["needs 8 rows", "has 2"]),
    ("/v1/preview", {"look": "grade.cube"}, b"LUT_3D_SIZE 2\nred green blue\n", 422, ["line 2", "'red'"]),
    ("/v1/preview", {"look": "grade.cube"}, b"\xff\xfe\x00binary", 422, ["not a text file"]),
    ("/v1/preview", {"look": "noir"}, GRADE_CUBE.encode(), 422, ["look is 'noir'", "file's name"]),
    ("/v1/jobs", {"look": "big.cube"}, b"0 0 0\n" * (16 * 2**20 // 6 + 1), 413, ["lut", "limit is 16 MiB"]),
])
def test_bad_presets_looks_post_effects_and_luts_are_4xx_with_words(web, endpoint, request_fields, lut, status,
                                                                   words):
    r = post_form(web, endpoint, {"path": STROKE, **SMALL_JOB, **request_fields}, lut=lut,
                  image=png_bytes(textured_image(64, 64)))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert all(w in detail for w in words), detail


@needs_browser
def test_picking_a_preset_in_the_gallery_renders_a_video_whose_manifest_names_it(web, seaweed, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from d2v.s3store import S3Store

    driver = browser
    driver.get(f"{web}/")
    wait_for(driver, "document.querySelectorAll('#gallery .preset-card').length >= 24", what="the preset gallery")
    # The pickers come from the API: looks, post effects, and svd shown but off, with the reason.
    looks = driver.execute_script("return [...document.querySelectorAll('#look option')].map(o => o.value)")
    assert looks[:3] == ["natural", "cinematic", "vibrant"] and len(looks) == 9, looks  # + a .cube file
    assert len(driver.find_elements("css selector", "#post-list input[type=checkbox]")) == 6
    assert driver.execute_script("return document.querySelector('#backend option[value=svd]').disabled")
    assert "D2V_SVD_MODEL" in driver.find_element("id", "backend-help").text
    thumbs = "[...document.querySelectorAll('#gallery .thumb')]"
    assert driver.execute_script(f"return {thumbs}.filter(t => t.dataset.state === 'ready').length") == 0

    # With a photo, the cards on screen preview their preset on it, looping; a few at a time.
    driver.find_element("id", "file").send_keys(str(PHOTO))
    wait_for(driver, "!document.getElementById('canvas').hidden", what="the photo on the canvas")
    driver.execute_script("document.getElementById('gallery').scrollIntoView()")
    wait_for(driver, f"{thumbs}.filter(t => t.dataset.state === 'ready' && t.querySelector('video').currentTime > 0)"
             ".length >= 4", timeout_s=120, what="four gallery previews playing")
    screenshot(driver, "web-gallery.png")
    first = driver.execute_script("const v = document.querySelector('#gallery .thumb video'); "
                                  "return [v.videoWidth, v.videoHeight, v.loop, v.muted]")
    assert first == [256, 144, True, True], first

    # Draw a stroke; pick hitchcock: the controls take its settings.
    driver.execute_script("window.scrollTo(0, 0)")
    draw(driver, [(0.3 + 0.4 * i / 20, 0.6 - 0.1 * i / 20) for i in range(21)], kind="mouse")
    driver.execute_script("document.querySelector('.preset-card[data-preset=hitchcock]').scrollIntoView()")
    driver.find_element("css selector", ".preset-card[data-preset=hitchcock]").click()
    chosen = driver.execute_script(
        "return [document.getElementById('effect').value, document.getElementById('duration').value, "
        "document.getElementById('look').value, document.getElementById('speed-ramp').value, state.preset]")
    assert chosen == ["dolly_zoom", "4", "cinematic", "0.3", "hitchcock"], chosen
    assert driver.find_element("css selector", ".preset-card[data-preset=hitchcock]").get_attribute(
        "aria-pressed") == "true"
    # Own settings over the preset's: 1 s at 640x360, 12 fps, a post effect and a .cube look.
    driver.find_element("id", "duration").send_keys(Keys.HOME)
    Select(driver.find_element("id", "size")).select_by_value("640x360")
    Select(driver.find_element("id", "fps")).select_by_value("12")
    driver.find_element("css selector", "#post-list input[value=boomerang]").click()
    cube = tmp_path / "grade.cube"
    cube.write_text(GRADE_CUBE)
    driver.find_element("id", "lut-file").send_keys(str(cube))
    assert driver.execute_script("return lookName()") == "grade.cube"
    wait_for(driver, "state.preview && state.previewFor === JSON.stringify(requestBody())",
             what="the preview of these settings")
    assert driver.execute_script("return state.preview.effect") == "dolly_zoom"
    driver.execute_script("document.getElementById('render').scrollIntoView()")
    driver.find_element("id", "render").click()
    playing_video(driver, 2 - 1 / 12)  # boomerang: 12 frames out and 11 back (the turn frame once)
    job_id = driver.find_element("id", "download").get_attribute("href").split("/v1/jobs/")[1].split("/")[0]
    store = S3Store.from_env(seaweed.env(SharedFarm.BUCKET))
    manifest = json.loads(store.get_bytes(f"jobs/{job_id}/manifest.json"))
    sent = manifest["request"]
    assert sent["preset"] == "hitchcock" and manifest["effect"] == "dolly_zoom"
    assert (sent["duration_s"], sent["width"], sent["fps"], sent["post"]) == (1.0, 640, 12, ["boomerang"])
    assert (sent["look"], sent["speed_ramp"]) == ("grade.cube", 0.3)  # speed ramp: the preset's, shown and sent
    assert store.get_bytes(f"jobs/{job_id}/look.cube").decode() == GRADE_CUBE
    assert manifest["frames"] == 23 and "post" in manifest["methods"] and "look" in manifest["methods"]
    screenshot(driver, "web-preset-rendered.png")
    assert no_messages(driver)


# --- a farm with API keys -------------------------------------------------------------
# (The same farm: the app at /keyed, deployed when the first of these asks for it.)


def test_keyed_farm_serves_the_page_but_not_the_api_without_a_key(keyed_web):
    # The page itself needs no key: it is where the key is typed.
    assert httpx.get(f"{keyed_web}/", timeout=30).status_code == 200
    assert httpx.get(f"{keyed_web}/static/app.js", timeout=30).status_code == 200
    image = png_bytes(textured_image(320, 180, seed=4))
    files, data = {"image": ("p.png", image, "image/png")}, {"request": json.dumps({"path": STROKE})}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = httpx.post(f"{keyed_web}/v1/preview", files=files, data=data, headers=headers, timeout=30)
        assert r.status_code == 401 and "API key" in r.json()["detail"], (headers, r.text)
    r = httpx.post(f"{keyed_web}/v1/preview", files=files, data=data, headers={"Authorization": "Bearer key2"},
                   timeout=60)
    assert r.status_code == 200, r.text


def sent_requests(driver) -> list[tuple[str, dict]]:
    """(url, request headers) of every request the browser sent since the last call, redirects included."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append((request["url"], {k.lower(): v for k, v in request["headers"].items()}))
    return sent


def key_status(driver) -> str:
    return driver.execute_script("const s = document.getElementById('key-status'); return s.hidden ? '' : s.textContent")


@needs_browser
def test_the_page_sends_the_api_key_and_shows_results_with_it(keyed_web, seaweed, browser):
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(f"{keyed_web}/")
    driver.execute_script("localStorage.removeItem('d2v.apiKey')")
    driver.refresh()
    key_field = driver.find_element("id", "api-key")
    assert key_field.get_attribute("type") == "password" and key_field.get_attribute("value") == ""
    assert driver.find_element("css selector", "label[for=api-key]").text == "API key"

    # No key: the preview of a drawn path is refused; the page says why, by the key field.
    driver.find_element("id", "file").send_keys(str(PHOTO))
    wait_for(driver, "!document.getElementById('canvas').hidden", what="the photo on the canvas")
    stroke = [(0.15 + 0.7 * i / 30, 0.55 - 0.12 * (i / 30) ** 2) for i in range(31)]
    draw(driver, stroke, kind="mouse")
    drawn = driver.execute_script("return currentPath()")
    status = wait_for(driver, "document.getElementById('key-status').textContent", what="the key message")
    assert "this farm needs an api key" in status.lower(), status
    assert no_messages(driver)  # not a failure
    assert driver.find_element("id", "api-key").get_attribute("aria-invalid") == "true"
    screenshot(driver, "web-key-needed.png")

    # Render without a key: refused the same way; nothing queued, the drawing kept.
    driver.execute_script("clearKeyStatus()")
    driver.find_element("id", "render").click()
    status = wait_for(driver, "document.getElementById('key-status').textContent", what="the key message")
    assert "this farm needs an api key" in status.lower(), status
    wait_for(driver, "!document.getElementById('render').disabled", timeout_s=10, what="Render enabled again")
    assert driver.find_element("id", "result-card").get_attribute("hidden") is not None
    assert no_messages(driver)
    assert driver.execute_script("return currentPath()") == drawn

    # A wrong key: refused, in other words; it is kept in the browser all the same.
    key_field.send_keys("nope", Keys.ENTER)
    status = wait_for(driver, "document.getElementById('key-status').textContent", what="the key message")
    assert "the api key was refused" in status.lower(), status
    assert driver.execute_script("return localStorage.getItem('d2v.apiKey')") == "nope"
    assert driver.execute_script("return currentPath()") == drawn

    # The right key: the preview comes, and every request to the API carries the key.
    sent_requests(driver)  # forget what went before
    key_field.send_keys(Keys.CONTROL, "a")
    key_field.send_keys("key2", Keys.ENTER)  # typed over the wrong one
    wait_for(driver, "state.preview && document.getElementById('key-status').hidden", what="the preview with the key")
    assert driver.execute_script("return localStorage.getItem('d2v.apiKey')") == "key2"
    choose_a_short_small_pan(driver)
    driver.find_element("id", "render").click()

    # The result: fetched with the key, shown from blob: URLs, playing.
    video = playing_video(driver, 1.0, "src")
    assert video["src"].startswith("blob:") and (video["w"], video["h"]) == (640, 360), video
    assert driver.find_element("id", "download").get_attribute("href").startswith("blob:")
    picture = wait_for(driver, "!document.getElementById('fidelity').hidden && "
                       "document.getElementById('fidelity-image').naturalWidth > 0 && "
                       "document.getElementById('fidelity-image').src", what="the path check's picture")
    assert picture.startswith("blob:"), picture
    # The link to share is the presigned S3 URL the API redirected to (it needs no key).
    link = driver.find_element("id", "link").get_attribute("value")
    assert urlsplit(link).netloc == seaweed.endpoint and "X-Amz-Signature=" in link, link
    screenshot(driver, "web-key-rendered.png")
    assert no_messages(driver)

    # On the wire: the key on every API request; none on the redirect to S3 (the browser
    # drops it on a cross-origin redirect; S3 would refuse a second way of signing).
    sent = sent_requests(driver)
    farm = urlsplit(keyed_web).netloc
    api = [(url, h) for url, h in sent if urlsplit(url).netloc == farm
           and urlsplit(url).path.startswith(urlsplit(keyed_web).path + "/v1/")]
    paths = {urlsplit(url).path.rsplit("/", 1)[-1] for url, _ in api}
    assert {"preview", "jobs", "video", "fidelity"} <= paths, paths
    assert all(h.get("authorization") == "Bearer key2" for _, h in api), [(u, h.get("authorization")) for u, h in api]
    s3 = [(url, h) for url, h in sent if urlsplit(url).netloc == seaweed.endpoint]
    assert len(s3) >= 2 and not any("authorization" in h for _, h in s3), s3

    # The key stays in the browser for the next visit.
    driver.refresh()
    assert driver.find_element("id", "api-key").get_attribute("value") == "key2"
    wait_for(driver, "document.querySelectorAll('#effect option').length > 5", what="the effects list")
    assert all(h.get("authorization") == "Bearer key2" for url, h in sent_requests(driver) if "/v1/" in url)
    driver.execute_script("localStorage.removeItem('d2v.apiKey')")
