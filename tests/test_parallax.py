"""Depth that moves: the `parallax` effect (a sideways truck) and disocclusions filled from
the background. Real renders (d2v.render) of scenes whose depth is known, measured the way a
viewer would see them: dense optical flow (OpenCV's DIS) with the dominant plane's motion
removed, and the statistics of what a near object's move reveals behind it."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data

from d2v import camera
from d2v.models import CameraTrajectory, RenderRequest, parse_request
from d2v.pipeline import render_job
from d2v.render import CameraRenderer
from d2v.store import LocalStore
from d2v.trajectory import (
    DEFAULT_PARALLAX, PARALLAX_TRUCK, PSEUDO_DEPTH_NOTE, analyze_path, plan_trajectory, resolve_effect,
)  # fmt: skip

from .conftest import textured_image

W, H = 960, 540
BOX = (380, 150, 580, 390)  # the near object in the layered scene: x0, y0, x1, y1


def layered_scene(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A near textured object (reddish) over a textured background (bluish): (photo,
    background alone, near object's texture, depth: 1 on the object, 0 behind)."""
    background = (textured_image(W, H, seed=seed).astype(np.float32) * [0.5, 0.8, 1.0]).astype(np.uint8)
    near = (textured_image(W, H, seed=seed + 1).astype(np.float32) * [1.0, 0.45, 0.3]).astype(np.uint8)
    x0, y0, x1, y1 = BOX
    photo = background.copy()
    photo[y0:y1, x0:x1] = near[y0:y1, x0:x1]
    depth = np.zeros((H, W), np.float32)
    depth[y0:y1, x0:x1] = 1.0
    return photo, background, near, depth


def cameraman() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's cameraman with a depth map derived from it: the man (the largest dark
    region, its holes filled, edges softened over a few pixels) near, everything else far."""
    gray = skimage.data.camera()
    dark = cv2.morphologyEx((gray < 40).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (61, 61)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark)
    man = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(man, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    man = cv2.drawContours(np.zeros_like(man), contours, -1, 1, thickness=-1)
    depth = cv2.GaussianBlur(man.astype(np.float32), (0, 0), 1.5)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), depth


def slide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense motion from frame a to frame b, (h, w, 2), with the dominant plane's motion (a
    homography fitted robustly to the flow) taken out: what moves against the rest."""
    ga, gb = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (a, b))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(ga, gb, None)
    h, w = ga.shape
    ys, xs = np.mgrid[8:h - 8:6, 8:w - 8:6]
    src = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()]
    plane, _ = cv2.findHomography(src, dst, cv2.RANSAC, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = cv2.perspectiveTransform(np.dstack([xx, yy]).reshape(-1, 1, 2), plane).reshape(h, w, 2)
    return flow - (pts - np.dstack([xx, yy]))


def plan(path, effect: str = "parallax", *, depth: bool, w: int = W, h: int = H, **kw) -> CameraTrajectory:
    req = RenderRequest(path=path, effect=effect, **{"width": 640, "height": 360, "duration_s": 2.0, "fps": 12, **kw})
    return plan_trajectory(req, w, h, depth_parallax=DEFAULT_PARALLAX if depth else None)


def flat(trajectory: CameraTrajectory) -> CameraTrajectory:
    """The same cameras as a move the renderer shows on the flat picture (no depth at all)."""
    return trajectory.model_copy(update={"effect": "pan"})


def screen_mask(trajectory: CameraTrajectory, i: int, box, grow: float) -> np.ndarray:
    """Output pixels of frame i inside the image box seen on the plane, grown by `grow` px
    (negative: shrunk)."""
    x0, y0, x1, y1 = box
    corners = camera.apply_homography(camera.frame_homography(trajectory.frames[i]),
                                      np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float))
    mask = np.zeros((trajectory.height, trajectory.width), np.uint8)
    cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    k = int(abs(grow)) * 2 + 1
    op = cv2.dilate if grow > 0 else cv2.erode
    return op(mask, np.ones((k, k), np.uint8)).astype(bool)


def horizontal(y: float, x0: float, x1: float, n: int = 12) -> list[dict]:
    return [{"x": x0 + (x1 - x0) * i / (n - 1), "y": y} for i in range(n)]


# -- parallax: near things slide past far ones --------------------------------------------


@pytest.mark.parametrize("rightward", [True, False], ids=["right", "left"])
def test_parallax_slides_the_near_object_past_the_background_the_drawn_way(rightward):
    photo, _, _, depth = layered_scene()
    x0, x1 = (300.0, 660.0) if rightward else (660.0, 300.0)
    tr = plan(horizontal(270, x0, x1), depth=True, width=W, height=H)
    assert tr.effect == "parallax" and tr.notes == []
    i, j = 9, 14  # mid-move, constant speed
    a, b = (next(CameraRenderer(photo, depth).render(tr, indices=[k])) for k in (i, j))
    res = slide(a, b)
    near = screen_mask(tr, i, BOX, -25)  # inside the object, clear of its edges
    far = ~screen_mask(tr, i, BOX, 60)
    near_dx, far_dx = np.median(res[near, 0]), np.median(res[far, 0])
    # The subject (the stroke's middle, on the object) is on the plane; the background is
    # 1 / (1 - p) behind it, so it slides (1 - p) as far: the object gains p of the plane's motion.
    subject = np.array([tr.subject])
    moved = (camera.apply_homography(camera.frame_homography(tr.frames[j]), subject)
             - camera.apply_homography(camera.frame_homography(tr.frames[i]), subject))[0]
    assert np.sign(moved[0]) == (-1 if rightward else 1)  # the camera goes the drawn way, the picture the other
    assert abs(moved[1]) < 0.5
    assert near_dx - far_dx == pytest.approx(DEFAULT_PARALLAX * moved[0], rel=0.2)
    assert abs(np.median(res[near, 1]) - np.median(res[far, 1])) < 0.5

    # The same cameras on the flat picture: everything moves as one plane.
    a, b = (next(CameraRenderer(photo).render(flat(tr), indices=[k])) for k in (i, j))
    res = slide(a, b)
    assert abs(np.median(res[near, 0]) - np.median(res[far, 0])) < 0.3


def test_parallax_on_a_real_photo_with_a_derived_depth():
    """The cameraman: the man (near) slides against the field and the sky (far)."""
    photo, depth = cameraman()
    h, w = depth.shape
    tr = plan(horizontal(300, 120, 400), depth=True, w=w, h=h, width=512, height=512)
    assert tr.effect == "parallax"
    i, j = 9, 14
    renderer = CameraRenderer(photo, depth)
    a, b = (next(renderer.render(tr, indices=[k])) for k in (i, j))
    res = slide(a, b)
    # Where the man and the far field are in frame i: the depth map seen through frame i's plane.
    seen = cv2.warpPerspective(depth, camera.to_opencv(camera.frame_homography(tr.frames[i])), (512, 512))
    near = cv2.erode((seen > 0.9).astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)
    far = cv2.erode((seen < 0.1).astype(np.uint8), np.ones((61, 61), np.uint8)).astype(bool)
    far &= cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_32F, ksize=3).__abs__() > 0  # not flat sky
    near_dx, far_dx = np.median(res[near, 0]), np.median(res[far, 0])
    assert near_dx < far_dx - 3.0, (near_dx, far_dx)  # the camera went right: the man slides left past the field

    a, b = (next(CameraRenderer(photo).render(flat(tr), indices=[k])) for k in (i, j))
    res = slide(a, b)
    assert abs(np.median(res[near, 0]) - np.median(res[far, 0])) < 0.5
