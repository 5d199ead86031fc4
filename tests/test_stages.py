"""Interpolate and upscale stages: counts, timing, passthrough, exact sizes."""

import numpy as np
import pytest

from d2v.interpolate import interpolate_frames, output_count
from d2v.upscale import upscale_frames


def ramp_frames(n, h=16, w=24):
    return np.stack([np.full((h, w, 3), 10 * i, np.uint8) for i in range(n)])


def test_retime_keeps_keyframes_and_timing():
    frames = ramp_frames(5)  # t = 0, 0.5, 1.0, 1.5, 2.0 at 2 fps
    out = interpolate_frames(frames, 2, 4)
    assert len(out) == 9 == output_count(5, 2, 4)
    for k in range(5):
        assert np.array_equal(out[2 * k], frames[k])  # keyframes pass through
    assert abs(int(out[1, 0, 0, 0]) - 5) <= 1  # halfway between 0 and 10


def test_non_integer_ratio():
    frames = ramp_frames(25)  # 24 intervals at 25 fps = 0.96 s
    out = interpolate_frames(frames, 25, 24)
    assert len(out) == output_count(25, 25, 24) == 24  # floor(0.96 * 24) + 1 = 24
    # frame i shows time i/24 -> input index i * 25/24
    assert abs(int(out[12, 0, 0, 0]) - round(10 * 12 * 25 / 24)) <= 1


def test_exact_count_spans_the_input():
    frames = ramp_frames(25)
    out = interpolate_frames(frames, 25, 24, n_out=96)
    assert len(out) == 96
    assert np.array_equal(out[0], frames[0]) and np.array_equal(out[-1], frames[-1])


@pytest.mark.parametrize("size", [(1024, 576), (100, 300), (66, 66), (1920, 1080)])
def test_upscale_exact_sizes(size):
    frames = ramp_frames(3, 90, 160)
    out = upscale_frames(frames, *size)
    assert out.shape == (3, size[1], size[0], 3) and out.dtype == np.uint8


def test_retime_of_a_loop_wraps_the_last_keyframe_into_the_first():
    from d2v.models import parse_request
    from d2v.stages import Clip, retime

    request = parse_request({"path": [{"x": 0, "y": 0}, {"x": 9, "y": 0}], "duration_s": 1, "fps": 8, "loop": True,
                             "width": 64, "height": 64})
    keys = ramp_frames(4)  # 0, 10, 20, 30: a cycle of 4 keyframes over 8 output frames
    out = retime(Clip(keys, 4.0), request).frames
    assert len(out) == 8
    assert [int(f[0, 0, 0]) for f in out[::2]] == [0, 10, 20, 30]  # keyframes in place, around the cycle
    assert abs(int(out[7, 0, 0, 0]) - 15) <= 2  # the last in-between blends 30 back into 0
