"""Occlusion rims of measured depth: a depth map's speckle (lone pixels and pairs off their
surroundings, as a stereo matcher or a depth model leaves them) and its pixel staircase must not
show as holes punched through the near layer, fragments floating in the revealed band, or an
edge that follows the depth map's pixel borders when a move magnifies the photo."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from d2v import render
from d2v.models import parse_request
from d2v.render import CameraRenderer, despeckle_depth
from d2v.trajectory import plan_trajectory

PW, PH = 320, 180  # the photo; the frames are 640x360: every move shows it about 2x


def speckled_disc(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A green disc (anti-aliased, G 255) over a textured far plane with no green at all, and
    its depth: a hard disc (1) over a far plane at 0.2, with 25 lone dropouts to the far side
    inside the disc and 25 lone mid-depth (0.6) pixels in a ring beside it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:PH, 0:PW].astype(np.float32)
    tex = cv2.GaussianBlur(rng.random((PH, PW)).astype(np.float32), (0, 0), 2)
    tex = (tex - tex.min()) / np.ptp(tex)
    cx, cy, r = PW * 0.5 + 0.3, PH * 0.5 + 0.2, PH * 0.2
    dist = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
    cover = np.clip(r - dist + 0.5, 0.0, 1.0)
    photo = np.zeros((PH, PW, 3), np.uint8)
    photo[..., 0] = ((60 + 150 * tex) * (1 - cover)).astype(np.uint8)
    photo[..., 1] = (255 * cover).astype(np.uint8)
    photo[..., 2] = ((200 - 120 * tex) * (1 - cover)).astype(np.uint8)
    depth = np.where(dist < r, 1.0, 0.2).astype(np.float32)
    inside = np.flatnonzero((dist < r - 3).ravel())
    depth.ravel()[rng.choice(inside, 25, replace=False)] = 0.2
    ring = np.flatnonzero(((dist > r + 3) & (dist < r + 12)).ravel())
    depth.ravel()[rng.choice(ring, 25, replace=False)] = 0.6
    return photo, depth


def last_frame(photo: np.ndarray, depth: np.ndarray, effect: str) -> np.ndarray:
    renderer = CameraRenderer(photo, depth)
    if effect == "parallax":
        points = [{"x": PW * (0.3 + 0.4 * i / 7), "y": PH / 2} for i in range(8)]
    else:
        points = [{"x": PW / 2 + 0.25 * PW * math.cos(2 * math.pi * i / 24),
                   "y": PH / 2 + 0.2 * PH * math.sin(2 * math.pi * i / 24)} for i in range(25)]
    request = parse_request({"path": {"canvas": {"width": PW, "height": PH}, "points": points}, "effect": effect,
                             "duration_s": 1, "fps": 12, "width": 640, "height": 360})
    trajectory = plan_trajectory(request, PW, PH, depth_parallax=renderer.depth_parallax)
    return next(iter(renderer.render(trajectory, indices=[len(trajectory.frames) - 1])))


@pytest.mark.parametrize("effect", ["parallax", "orbit"])
def test_depth_speckle_punches_no_holes_and_leaves_no_fragments(effect):
    frame = last_frame(*speckled_disc(), effect)
    green = (frame[..., 1] > 128).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(green, connectivity=8)
    disc = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # Green anywhere but the disc: a piece of the near layer left floating.
    fragments = [int(a) for i, a in enumerate(stats[1:, cv2.CC_STAT_AREA], 1) if i != disc]
    assert not fragments, f"green fragments off the disc: {fragments}"
    # What is not green inside the disc's outline: a dropout shown as a hole through the near
    # layer, the far plane (or its fill) seen through it. (Before: one per dropout, 2-4 px each.)
    solid = np.zeros_like(green)
    contours, _ = cv2.findContours((labels == disc).view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(solid, contours, -1, 1, thickness=cv2.FILLED)
    holes = solid.view(bool) & ~(labels == disc)
    assert int(holes.sum()) == 0, f"{int(holes.sum())} pixels of holes through the disc"


def test_despeckle_takes_lone_pixels_and_pairs_but_keeps_lines():
    depth = np.zeros((20, 20), np.float32)
    depth[5, 3:15] = 1.0  # a wire, a pixel wide
    depth[9:12, 15] = 0.7  # a short post, three pixels
    depth[10, 5] = 1.0  # a lone pixel
    depth[15, 3:5] = 0.5  # a pair
    depth[17, 17] = 0.03  # within STEP_DEPTH of its surroundings: a slope, not a speck
    out = despeckle_depth(depth)
    expected = depth.copy()
    expected[10, 5] = expected[15, 3] = expected[15, 4] = 0.0
    np.testing.assert_array_equal(out, expected)


def test_an_edge_ray_follows_the_bilinear_half_way_contour_not_the_pixel_borders():
    """A near staircase's outer corner: the depth map's pixel (1, 1) is near, (2, 1), (1, 2) and
    (2, 2) far. A ray at the far corner of the near pixel (inside it by a tenth of a pixel along
    each axis) lies on the near pixel, yet the bilinear depth there is nearer the far side: the
    edge cuts the corner (what a nearest-pixel lookup, the staircase, does not)."""
    u = np.full((4, 4), 1.0, np.float32)  # far (u = 1/s: larger nearer)
    u[:2, :2] = 2.0  # near: pixel (1, 1) the corner, far to its right, below and diagonal
    sides = cv2.merge([np.full((4, 4), 1.0, np.float32), np.full((4, 4), 2.0, np.float32)])  # (all within a pixel of the step)
    tb = np.full(1, 0.05, np.float32)
    x, y = np.float32([1.4]), np.float32([1.4])  # (OpenCV pixel centres: the pixel's far corner at 1.5)
    assert render._sample(u, x, y, cv2.INTER_NEAREST)[0] == 2.0  # the staircase says near
    assert render._side(sides, u, x, y, tb)[0] == 1.0  # the half-way contour says far
    x, y = np.float32([1.2]), np.float32([1.0])  # well inside the near pixel: near
    assert render._side(sides, u, x, y, tb)[0] == 2.0
