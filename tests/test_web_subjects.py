"""The page's subject tool (deployments/web/subjects.js) and the farm's subject inputs: HTTP
mask parts, POST /v1/subjects/outline, and, in a real headless Chromium, painting a subject,
drawing where it goes, rendering, and the downloaded video showing it move."""

from __future__ import annotations

import base64
import json

import cv2
import httpx
import numpy as np
import pytest
import skimage.data

from d2v.encode import decode_frames
from tests.test_web import (  # noqa: F401  (browser: a fixture; the farm, `web`, is conftest's, shared)
    browser, draw, needs_browser, playing_video, screenshot, wait_for,
)

pytestmark = pytest.mark.timeout(300)

ROCKET = skimage.data.rocket()  # 640x427: the rocket stands at x 322, y 128-395
TRACK = [{"x": 322, "y": 262}, {"x": 380, "y": 230}, {"x": 450, "y": 170}]
BRUSH = {"brush": [{"x": 322, "y": float(y)} for y in range(130, 396, 15)], "radius": 14}


def png(rgb) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def test_the_outline_endpoint_refines_a_painted_region(web):
    image = png(ROCKET)
    region = {"canvas": {"width": 1000, "height": 667.2}, **{
        "brush": [{"x": p["x"] * 1000 / 640, "y": p["y"] * 1000 / 640} for p in BRUSH["brush"]], "radius": 22}}
    r = httpx.post(f"{web}/v1/subjects/outline", files={"image": ("r.png", image, "image/png")},
                   data={"region": json.dumps(region)}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["canvas"] == {"width": 1000, "height": 667.2} and 0.005 < body["share"] < 0.1
    xs = [x for o in body["outlines"] for x, _ in o]
    assert xs and 460 < min(xs) and max(xs) < 550  # around the rocket (x 322 of 640 = 503 of 1000)
    empty = {"polygon": [{"x": 1, "y": 1}, {"x": 2, "y": 1}, {"x": 1, "y": 2}]}
    r = httpx.post(f"{web}/v1/subjects/outline", files={"image": ("r.png", image, "image/png")},
                   data={"region": json.dumps(empty)}, timeout=60)
    assert r.status_code == 422 and "region: is empty" in r.json()["detail"]


def test_jobs_take_mask_parts_and_refuse_bad_subjects_with_a_4xx(web):
    image = png(ROCKET)
    mask = np.zeros((427, 640), np.uint8)
    cv2.rectangle(mask, (305, 125), (340, 398), 255, -1)

    def post(request, **parts):
        files = {"image": ("r.png", image, "image/png"),
                 **{name: (name, data, "image/png") for name, data in parts.items()}}
        return httpx.post(f"{web}/v1/jobs", files=files, data={"request": json.dumps(request)}, timeout=60)

    small = {"width": 256, "height": 144, "fps": 8, "duration_s": 1}
    ok = post({"subjects": [{"region": {"mask": "rocket-mask"}, "path": TRACK}], **small},
              **{"rocket-mask": cv2.imencode(".png", mask)[1].tobytes()})
    assert ok.status_code == 202, ok.text
    missing = post({"subjects": [{"region": {"mask": "car.png"}, "path": TRACK}], **small})
    assert missing.status_code in (400, 422) and "subjects[0].region.mask" in missing.json()["detail"]
    seven = post({"subjects": [{"region": BRUSH, "path": TRACK}] * 7, **small})
    assert seven.status_code == 422 and "7 subjects given; at most 6" in seven.json()["detail"]
    outside = post({"subjects": [{"region": BRUSH, "path": [*TRACK, {"x": 900, "y": 10}]}], **small})
    assert outside.status_code == 422 and "subjects[0].path: point 3" in outside.json()["detail"]
    whole = {"polygon": [{"x": 0, "y": 0}, {"x": 640, "y": 0}, {"x": 640, "y": 427}, {"x": 0, "y": 427}]}
    covers = post({"subjects": [{"region": whole, "path": TRACK}], **small})
    assert covers.status_code == 422 and "subjects[0].region: covers 100%" in covers.json()["detail"]


@needs_browser
def test_paint_a_subject_draw_its_track_and_the_video_shows_it_moving(web, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver = browser
    photo = tmp_path / "rocket.png"
    photo.write_bytes(png(ROCKET))
    driver.get(f"{web}/")
    wait_for(driver, "document.querySelectorAll('#effect option').length > 5", what="the effects list")
    driver.find_element("id", "file").send_keys(str(photo))
    wait_for(driver, "!document.getElementById('canvas').hidden", what="the photo on the canvas")

    # Paint over the rocket (a finger, as on a phone): its refined outline shows at once.
    driver.find_element("id", "subject-add").click()
    draw(driver, [(322 / 640, y / 427) for y in range(135, 392, 16)], kind="touch")
    outline = wait_for(driver, "Subjects.list[0] && Subjects.list[0].outlines", what="the refined outline")
    xs = [x for o in outline for x, _ in o]
    width = driver.execute_script("return document.getElementById('canvas').width")
    assert 0.44 < min(xs) / width and max(xs) / width < 0.56, (min(xs) / width, max(xs) / width)
    assert driver.execute_script("return Subjects.mode") == "track"
    # Then where it goes: up and to the right, with a mouse.
    draw(driver, [(322 / 640 + 0.25 * i / 12, 0.6 - 0.25 * (i / 12) ** 0.7) for i in range(13)], kind="mouse")
    wait_for(driver, "Subjects.ready()", what="the subject's path")
    body = driver.execute_script("return requestBody()")
    assert "path" not in body and len(body["subjects"]) == 1  # no camera path: the camera holds still
    assert len(body["subjects"][0]["region"]["brush"]) > 5 and len(body["subjects"][0]["path"]["points"]) > 5

    # A second subject, removed again: the list shows each in its own colour.
    driver.find_element("id", "subject-add").click()
    assert driver.execute_script("return document.querySelectorAll('#subject-list li').length") == 2
    driver.find_elements("css selector", "#subject-list .subject-remove")[1].click()
    assert driver.execute_script("return Subjects.list.length") == 1

    Select(driver.find_element("id", "size")).select_by_value("640x360")
    Select(driver.find_element("id", "fps")).select_by_value("12")
    driver.find_element("id", "duration").send_keys(Keys.HOME, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # 2 s
    # The preview shows it moving.
    wait_for(driver, "state.preview && state.previewFor === JSON.stringify(requestBody())", what="the preview")
    video = driver.execute_script("return state.preview.video")
    preview = tmp_path / "preview.mp4"
    preview.write_bytes(base64.b64decode(video.split(",", 1)[1]))
    frames, n, _ = decode_frames(preview, [0])
    last, _, _ = decode_frames(preview, [n - 1])
    assert moved(frames[0], last[n - 1])
    assert "camera holds still" in driver.find_element("id", "analysis").text
    # The canvas shows the subject's outline and path in its colour (red: #ff5a5a).
    reds = driver.execute_script("""
        const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 120 && d[i + 2] < 120) n++;
        return n;""")
    assert reds > 500, reds
    screenshot(driver, "web-subjects.png")

    driver.find_element("id", "render").click()
    playing_video(driver, 2.0)
    href = driver.find_element("id", "download").get_attribute("href")
    clip = httpx.get(href, follow_redirects=True, timeout=60)
    assert clip.status_code == 200
    (tmp_path / "clip.mp4").write_bytes(clip.content)
    first, count, _ = decode_frames(tmp_path / "clip.mp4", [0])
    end, _, _ = decode_frames(tmp_path / "clip.mp4", [count - 1])
    assert count == 24 and moved(first[0], end[count - 1])
    verdict = wait_for(driver, "!document.getElementById('fidelity').hidden && "
                       "document.getElementById('fidelity-verdict').textContent", what="the path check")
    assert verdict.startswith("Path followed") and "subjects: followed" in verdict, verdict


def moved(first: np.ndarray, last: np.ndarray) -> bool:
    """The rocket (a bright column at x 322 of 640 in the photo, the middle of the frame) stood in
    the first frame and is gone from its place in the last; something bright is up and right."""
    h, w = first.shape[:2]
    column = lambda f: f[int(0.35 * h):int(0.75 * h), int(0.49 * w):int(0.52 * w)].mean()  # noqa: E731
    right = lambda f: f[:int(0.5 * h), int(0.55 * w):int(0.85 * w)].max(axis=2).mean()  # noqa: E731
    return column(first) > column(last) + 40 and right(last) > right(first) + 3
