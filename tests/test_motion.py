"""The video really follows the drawn path: every check here decodes the MP4 that the
pipeline wrote and measures what a viewer would see (marker positions and sizes,
phase correlation between frames)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from d2v.encode import decode_video
from d2v.models import EFFECTS, parse_request
from d2v.pipeline import render_job
from d2v.store import LocalStore, job_key
from tests.conftest import textured_image

W, H = 960, 540  # the test photo; same aspect as the output, so the cover crop is the whole image
OUT_W, OUT_H = 480, 270


def png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr[:, :, ::-1])
    assert ok
    return buf.tobytes()


def render(tmp_path, image: np.ndarray, path, effect: str, **kw) -> np.ndarray:
    body = {"path": path, "effect": effect, "duration_s": 2.0, "fps": 12, "width": OUT_W, "height": OUT_H}
    body.update(kw)
    request = parse_request(body)
    store = LocalStore(tmp_path / "store")
    manifest = render_job(png(image), request, store)
    frames, fps = decode_video(store.local_path(job_key(manifest.job_id, "video.mp4")))
    assert fps == request.fps
    return frames


def with_dots(dots: list[tuple[float, float, tuple[int, int, int]]], radius: int = 7) -> np.ndarray:
    img = textured_image(W, H, seed=1)
    img = (img.astype(np.float32) * 0.6).astype(np.uint8)  # keep the texture darker than the markers
    for u, v, colour in dots:
        cv2.circle(img, (int(u), int(v)), radius, colour, -1, lineType=cv2.LINE_AA)
    return img


GREEN, MAGENTA = (0, 255, 0), (255, 0, 255)


def find_marker(frame: np.ndarray, colour: tuple[int, int, int]) -> tuple[float, float, float]:
    """(u, v, area in pixels) of the marker of that colour in a decoded frame."""
    f = frame.astype(np.int16)
    on = [f[..., c] > 170 if colour[c] else f[..., c] < 110 for c in range(3)]
    mask = (on[0] & on[1] & on[2]).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask)
    assert n > 1, f"marker {colour} not visible"
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return float(centroids[k][0]) + 0.5, float(centroids[k][1]) + 0.5, float(stats[k, cv2.CC_STAT_AREA])


def line_path(a, b, n=12, times=None):
    pts = [{"x": a[0] + (b[0] - a[0]) * i / (n - 1), "y": a[1] + (b[1] - a[1]) * i / (n - 1)} for i in range(n)]
    if times is not None:
        for p, t in zip(pts, times):
            p["t"] = t
    return pts


def circle_path(center, radius, clockwise: bool, turns=1.0, shrink=0.0, n=80):
    sign = 1 if clockwise else -1  # v is down: increasing screen angle is clockwise
    return [
        {
            "x": center[0] + radius * (1 - shrink * i / n) * math.cos(sign * 2 * math.pi * turns * i / n),
            "y": center[1] + radius * (1 - shrink * i / n) * math.sin(sign * 2 * math.pi * turns * i / n),
        }
        for i in range(n + 1)
    ]


def shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Content displacement from frame a to frame b (phase correlation, windowed)."""
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    window = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, window)
    return dx, dy


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_every_effect_decodes_to_the_requested_frames_and_size(tmp_path, effect):
    path = circle_path((480, 270), 150, clockwise=True, turns=1.5, shrink=0.8) if effect in ("spiral", "orbit") \
        else line_path((300, 300), (650, 220))
    frames = render(tmp_path, textured_image(W, H), path, effect, duration_s=1.5, fps=10, width=320, height=180)
    assert frames.shape == (15, 180, 320, 3)
    assert frames.std() > 10  # a picture, not a blank


def test_zoom_in_ends_centred_on_the_path_end_and_magnified(tmp_path):
    target = (700.0, 180.0)
    image = with_dots([(*target, GREEN)])
    frames = render(tmp_path, image, line_path((300, 380), target), "zoom_in")
    u, v, area_last = find_marker(frames[-1], GREEN)
    assert math.hypot(u - OUT_W / 2, v - OUT_H / 2) <= 0.03 * OUT_W
    _, _, area_first = find_marker(frames[0], GREEN)
    assert math.sqrt(area_last / area_first) >= 2.0  # linear magnification


def test_pan_moves_content_against_the_path_in_every_moving_pair(tmp_path):
    frames = render(tmp_path, textured_image(W, H), line_path((380, 270), (580, 270)), "pan")
    dxs = [shift(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    moving = [(dx, dy) for dx, dy in dxs if abs(dx) > 0.3]
    assert len(moving) >= len(dxs) // 2
    assert all(dx < 0 for dx, _ in moving), dxs  # the camera goes right, the picture slides left
    assert all(abs(dy) < 0.5 + abs(dx) * 0.2 for dx, dy in moving)  # and not up or down
    total = sum(dx for dx, _ in dxs)
    assert total < -0.3 * 200 * OUT_W / W * 1.5  # a real share of the drawn 200 px, at pan zoom


def test_pull_back_starts_close_on_the_start_and_ends_on_the_full_view(tmp_path):
    start = (380.0, 300.0)
    image = with_dots([(*start, GREEN)])
    frames = render(tmp_path, image, line_path(start, (600, 250)), "pull_back")
    _, _, area_first = find_marker(frames[0], GREEN)
    _, _, area_last = find_marker(frames[-1], GREEN)
    assert math.sqrt(area_first / area_last) >= 2.0
    full_view = cv2.resize(image, (OUT_W, OUT_H), interpolation=cv2.INTER_AREA)
    assert cv2.PSNR(frames[-1], full_view) > 25


def _orbit_side_ratio(tmp_path, clockwise: bool) -> float:
    """How much bigger the right marker grows than the left, first frame to last."""
    image = with_dots([(330, 270, GREEN), (630, 270, MAGENTA)], radius=9)
    frames = render(tmp_path / f"cw{clockwise}", image, circle_path((480, 270), 120, clockwise), "orbit")
    ratios = []
    for frame in (frames[0], frames[-1]):
        _, _, left = find_marker(frame, GREEN)
        _, _, right = find_marker(frame, MAGENTA)
        ratios.append(right / left)
    return ratios[1] / ratios[0]


def test_orbit_direction_follows_the_drawing(tmp_path):
    cw, ccw = _orbit_side_ratio(tmp_path, True), _orbit_side_ratio(tmp_path, False)
    # Drawn clockwise, the camera swings to the right: the right marker comes nearer.
    assert cw > 1.1 and ccw < 1 / 1.1, (cw, ccw)


def _spiral_turn_deg(tmp_path, clockwise: bool) -> float:
    image = with_dots([(440, 270, GREEN), (520, 270, MAGENTA)])
    path = circle_path((480, 270), 200, clockwise, turns=2.0, shrink=0.9)
    frames = render(tmp_path / f"cw{clockwise}", image, path, "spiral")
    angles = []
    for frame in (frames[0], frames[-1]):
        gu, gv, _ = find_marker(frame, GREEN)
        mu, mv, _ = find_marker(frame, MAGENTA)
        angles.append(math.degrees(math.atan2(mv - gv, mu - gu)))
    return angles[1] - angles[0]


def test_spiral_turns_the_way_it_was_drawn(tmp_path):
    cw, ccw = _spiral_turn_deg(tmp_path, True), _spiral_turn_deg(tmp_path, False)
    # Screen angles grow clockwise (v is down): a clockwise spiral turns the picture clockwise.
    assert cw > 20 and ccw < -20, (cw, ccw)


def test_slow_start_of_the_stroke_slows_the_camera_at_first(tmp_path):
    a, b = (380, 270), (580, 270)
    n = 12
    uniform = [i / (n - 1) for i in range(n)]
    slow_first = [2.0 * i / (n - 1) if i <= (n - 1) / 2 else 1.0 + 0.25 * (i - (n - 1) / 2) / ((n - 1) / 2)
                  for i in range(n)]  # the first half of the line takes 80% of the drawing time

    def travelled_by_half(times):
        frames = render(tmp_path / str(times[1]), textured_image(W, H), line_path(a, b, n, times), "pan")
        steps = [shift(frames[i], frames[i + 1])[0] for i in range(len(frames) - 1)]
        return sum(steps[: len(steps) // 2]) / sum(steps)

    slow, even = travelled_by_half(slow_first), travelled_by_half(uniform)
    assert slow < 0.35 and slow < even - 0.15, (slow, even)
