"""What a moved subject leaves and how it looks moving (d2v.subjects): a large hole is filled as
a soft continuation of the background (no streaks, no black), and a fast subject is blurred along
its track while a slow one stays sharp. Real photos (scikit-image's)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from d2v import subjects
from d2v.models import Region, parse_request
from d2v.stages import plan
from d2v.subjects import SubjectScene, fill_hole, region_mask

ROOT = Path(__file__).resolve().parents[1]
ROCKET = skimage.data.rocket()  # 640x427: the rocket stands at x 322, y 128-395
BRUSH = {"brush": [{"x": 322, "y": float(y)} for y in range(130, 396, 15)], "radius": 14}


def gradient(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def test_a_large_hole_is_filled_softly_from_the_background():
    # The drive_out example: a motorcycle's place, a third of the garage, filled.
    moto = skimage.data.stereo_motorcycle()[0]
    region = Region.model_validate(json.loads((ROOT / "examples/subjects/drive_out.json").read_text())
                                   ["subjects"][0]["region"])
    hole = cv2.dilate(region_mask(region, moto.shape[1], moto.shape[0]).astype(np.uint8), np.ones((9, 9))) > 0
    plate = fill_hole(moto, hole)
    assert np.array_equal(plate[~hole], moto[~hole])
    inner = cv2.erode(hole.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    # No streaks: Telea marched across the whole hole draws fans whose edges reach a sixth of
    # the photo's hardest (its 99th percentile 77 against the photo's 435); the fill's stay under a tenth.
    assert np.percentile(gradient(plate)[inner], 99) < 0.1 * np.percentile(gradient(moto)[~hole], 99)
    # Not black, and the garage's colours: the fill's mean is the ring's around it, not the bike's.
    ring = (cv2.dilate(hole.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0) & ~hole
    fill, around, bike = plate[inner].mean(0), moto[ring].mean(0), moto[hole].mean(0)
    assert np.abs(fill - around).max() < 25 and np.abs(fill - around).max() < np.abs(bike - around).max()
    assert cv2.cvtColor(plate, cv2.COLOR_RGB2GRAY)[inner].min() > 20


@pytest.fixture(scope="module")
def rockets():
    """The rocket sliding sideways fast, and slowly (one scene each, as a job builds them)."""
    made = {}
    for name, dx in (("fast", 250), ("slow", 10)):
        req = parse_request({"width": 384, "height": 216, "fps": 12, "duration_s": 1.0, "subjects": [
            {"region": BRUSH, "path": [{"x": 322, "y": 262}, {"x": 322 + dx, "y": 262}]}]})
        scene = SubjectScene.build(ROCKET, None, req)
        made[name] = scene, plan(req, ROCKET.shape[1], ROCKET.shape[0])
    return made


def extent(alpha: np.ndarray) -> tuple[int, int]:
    """(columns, rows) the sprite reaches into."""
    ys, xs = np.nonzero(alpha > 0.02)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_a_fast_subject_is_blurred_along_its_track_and_a_slow_one_stays_sharp(rockets, monkeypatch):
    scene, traj = rockets["fast"]
    mid = len(traj.frames) // 2
    frame, layer = traj.frames[mid], scene.layers[0]
    sharp_rgb, sharp = scene.sprite_into_frame(layer, traj, frame)
    blurred_rgb, blurred = scene.blurred_sprite(layer, traj, frame, subjects.SUBJECT_SHUTTER)
    # The rocket crosses about 250 * 384/640 px of the frame in 12 frames, eased: 15+ px a frame
    # at mid-clip, so half a frame's shutter smears it 7+ px sideways, not upward.
    (sw, sh), (bw, bh) = extent(sharp), extent(blurred)
    assert bw - sw >= 6 and abs(bh - sh) <= 1
    assert abs(blurred.sum() - sharp.sum()) < 0.02 * sharp.sum()  # the same subject, spread
    # The render draws it blurred: its side edges are softer than a sharp render's.
    shown = list(scene.renderer().render(traj, indices=[mid]))[0]
    monkeypatch.setattr(subjects, "BLUR_FROM_PX", 1e9)
    crisp = list(scene.renderer().render(traj, indices=[mid]))[0]
    rows = (sharp > 0.5).any(axis=1)
    assert gradient(shown)[rows].max() < 0.8 * gradient(crisp)[rows].max()
    monkeypatch.undo()
    # A subject drifting 10 px in a second stays exactly as sharp as it is.
    scene, traj = rockets["slow"]
    frame = traj.frames[len(traj.frames) // 2]
    a = scene.sprite_into_frame(scene.layers[0], traj, frame)[1]
    assert np.array_equal(scene.blurred_sprite(scene.layers[0], traj, frame, subjects.SUBJECT_SHUTTER)[1], a)
