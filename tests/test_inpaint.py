"""d2v.inpaint: the hidden background's depth (a map in [0, 1]) continued from the far side
only, and its colours continuing the far side just beside the hole."""

from __future__ import annotations

import numpy as np

from d2v.inpaint import fill_background, fill_smooth, grain_noise


def test_a_depth_maps_far_side_is_continued_over_the_hole_and_the_near_side_is_never_read():
    """A floor (depth rising 0.2 -> 0.6 down the picture) with a near object (depth 1) on it:
    the object, and a rim round it, are the hole; the object is no source. The filled depth is
    the floor's own, within 0.05 of its ramp (a tenth of the ramp over the hole), and nowhere the object's (OpenCV's Telea, the
    fill before, is off by up to 1.5 on a float map: depths of -1.2 and 1.7 on this one)."""
    h, w = 96, 128
    floor = np.repeat(np.linspace(0.2, 0.6, h, dtype=np.float32)[:, None], w, axis=1)
    near = np.zeros((h, w), bool)
    near[30:70, 40:90] = True
    depth = np.where(near, np.float32(1.0), floor)
    hole = np.zeros((h, w), bool)
    hole[26:74, 36:94] = True
    filled = fill_smooth(depth, hole, source=~near)
    assert filled.dtype == np.float32 and filled.shape == depth.shape
    assert np.array_equal(filled[~hole], depth[~hole])
    assert np.abs(filled[hole] - floor[hole]).max() < 0.05, np.abs(filled[hole] - floor[hole]).max()


def test_colours_are_filled_per_channel():
    values = np.zeros((40, 40, 3), np.float32)
    values[..., 0], values[..., 1], values[..., 2] = 10.0, 20.0, 30.0
    hole = np.zeros((40, 40), bool)
    hole[10:30, 10:30] = True
    values[hole] = 255.0  # what the hole held is never read
    filled = fill_smooth(values, hole)
    assert np.allclose(filled[hole], [10.0, 20.0, 30.0], atol=1e-3)


def test_a_hole_continues_the_colours_just_beside_it_not_the_far_sides_average():
    """A light wall with a dark frame 6 px wide round a hole (a near object in front of a
    collar, a window's frame): what the hole hides is the frame's continuation more likely than
    the wall's average. The fill stays within 15 % of the way from the frame's colour to the
    wall's, on average over the hole (the fill before, reading the whole far side's average
    deep in the hole, went 19 % of the way; its centre 39 %)."""
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2 + 0.5, xx - w / 2 + 0.5)
    wall, frame = np.array([230.0, 230.0, 230.0]), np.array([40.0, 30.0, 60.0])
    image = np.full((h, w, 3), 230, np.uint8)
    image[(r >= 24) & (r < 30)] = frame
    hole = r < 24
    image[hole] = (255, 0, 0)  # what the hole held is never read
    filled = fill_background(image, hole)
    assert np.array_equal(filled[~hole], image[~hole])
    share = float(np.mean((filled[hole].mean(axis=0) - frame) / (wall - frame)))
    assert share < 0.15, share


def test_a_grain_pattern_made_beforehand_fills_as_the_one_made_inside():
    """The renderer makes the grain's pattern on a second thread while the rest of its build
    runs, and hands it in: the fill is the same, byte for byte, as when the fill makes it."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), np.uint8)
    hole = np.zeros((48, 64), bool)
    hole[12:36, 20:44] = True
    source = np.ones((48, 64), bool)
    source[:, 44:50] = False  # (a near object's side beside the hole: no source)
    made = fill_background(image, hole, source=source)
    assert np.array_equal(fill_background(image, hole, source=source, noise=grain_noise(hole.shape)), made)
    assert not np.array_equal(made[hole], image[hole])
