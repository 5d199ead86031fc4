"""The segmentation model that refines subject regions (D2V_SEGMENT_MODEL, d2v.segment): a tiny
random-weight SAM built from a config, saved with save_pretrained and loaded through the loader
users run. Its masks are random, so the tests check what holds for any model: the setting is
honoured, the answer is held to the region's reach and keeps its core, and bad settings are named."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from d2v import segment
from d2v.depth import make_tiny_depth
from d2v.errors import SegmentModelError
from d2v.models import Region, parse_request
from d2v.pipeline import content_job_id
from d2v.subjects import outline_answer, refine_region, region_mask, region_reach

ROCKET = skimage.data.rocket()  # 640x427: the rocket stands at x 322, y 128-395
BRUSH = Region.model_validate({"brush": [{"x": 322, "y": float(y)} for y in range(130, 396, 15)], "radius": 14})


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    return segment.make_tiny_segment(tmp_path_factory.mktemp("tiny-sam"))


def painted_and_reach():
    painted = region_mask(BRUSH, ROCKET.shape[1], ROCKET.shape[0])
    r = round(region_reach(BRUSH, ROCKET.shape[1]))
    reach = cv2.dilate(painted.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 3,) * 2)) > 0
    return painted, reach


def test_the_setting_refines_with_the_model_held_to_the_brush(tiny_sam, monkeypatch):
    painted, reach = painted_and_reach()
    grabcut = refine_region(ROCKET, painted, region_reach(BRUSH, ROCKET.shape[1]))
    monkeypatch.setenv("D2V_SEGMENT_MODEL", str(tiny_sam))
    segment._shared.clear()
    mask = refine_region(ROCKET, painted, region_reach(BRUSH, ROCKET.shape[1]))
    assert [key[0] for key in segment._shared] == [str(tiny_sam)]  # loaded once, through the loader
    assert mask.shape == painted.shape and mask.dtype == bool
    assert not (mask & ~reach).any()  # never past the brush's reach
    inside = cv2.distanceTransform(painted.astype(np.uint8), cv2.DIST_L2, 5)
    assert mask[inside > 0.5 * inside.max() + 1].all()  # the stroke's core always stays
    assert not np.array_equal(mask, grabcut) and not np.array_equal(mask, painted)  # the model's answer
    # The model itself answers a box and points with one mask at the photo's size.
    raw = segment.shared_segment_model(str(tiny_sam)).segment(ROCKET, (280, 110, 365, 410),
                                                              np.array([[322.5, 200.5], [322.5, 330.5]]))
    assert raw.shape == ROCKET.shape[:2] and raw.dtype == bool
    # The page's outline goes through it too, and the job id counts the model.
    ok, png = cv2.imencode(".png", ROCKET)
    answer = outline_answer(png.tobytes(), BRUSH.model_dump_json(exclude_none=True))
    assert answer["outlines"] and 0 < answer["share"] < 0.2
    req = parse_request({"subjects": [{"region": BRUSH.model_dump(exclude_none=True),
                                       "path": [{"x": 322, "y": 262}, {"x": 420, "y": 200}]}]})
    with_model = content_job_id(b"photo", None, req)
    monkeypatch.delenv("D2V_SEGMENT_MODEL")
    assert content_job_id(b"photo", None, req) != with_model


def test_a_bad_setting_is_named(tmp_path, monkeypatch):
    painted, _ = painted_and_reach()

    def refusal(setting: str) -> str:
        monkeypatch.setenv("D2V_SEGMENT_MODEL", setting)
        with pytest.raises(SegmentModelError) as e:
            refine_region(ROCKET, painted, 14.0)
        assert e.value.status_code == 422
        return str(e.value)

    msg = refusal(str(tmp_path / "no-such-model"))
    assert "D2V_SEGMENT_MODEL" in msg and "no such directory" in msg
    (tmp_path / "empty").mkdir()
    assert "no config.json" in refusal(str(tmp_path / "empty"))
    depth = make_tiny_depth(tmp_path / "depth")  # a transformers model, but not a promptable segmenter
    assert "not SAM" in refusal(str(depth))
    assert "local Hugging Face cache" in refusal("nobody/no-such-sam")  # a hub id is never downloaded
