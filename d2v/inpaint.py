"""Inpainting of hidden background: fills pixels the photo never showed from the pixels
around them that it did.

Two users: the camera backend's revealed bands (where a near layer moves off what it hid)
and the subject layers' holes (where a moved subject used to be). Both must continue the
*background*, so the caller says which pixels may be read (`source`): the near side of a
depth edge, or the subject itself, is never a source.

The floor is OpenCV's Telea inpainting (fast marching: each hole pixel is a weighted
average of known pixels nearby, marched inward from the hole's edge). What it invents is
smooth, so a large hole can be filled at a fraction of the size (`scale`): Telea's cost
grows with the hole's area times the radius's, and the camera backend fills every band a
move could reveal around every depth step of a photo at once.

Smooth is also its fault: a band of Telea reads as streaks of the border's colours, where
the background beside it is textured. `texture=True` adds the background's own fine detail
(the image less its Gaussian blur, sigma TEXTURE_SIGMA) to the smooth fill, taken from the
source mirrored across the hole's edge (each hole pixel from the point as far beyond its
nearest source pixel), as 3D Photo Inpainting splits colour into a smooth part and its
detail: the colour stays Telea's, the grain continues the background's.
"""

from __future__ import annotations

import cv2
import numpy as np


TEXTURE_SIGMA = 3.0  # px: what is finer than this is the texture carried into the hole


def inpaint_hole(image: np.ndarray, hole: np.ndarray, *, source: np.ndarray | None = None,
                 radius: int = 5, scale: float = 1.0, texture: bool = False) -> np.ndarray:
    """`image` (H, W, 3) uint8 with `hole` (H, W) bool filled from the pixels that are
    not in `hole` and, when `source` is given, are in `source`. Returns a new array; pixels
    outside the hole are unchanged. scale < 1: the fill is computed at that fraction of
    the size (a hole pixel is unknown there when any of its pixels is) and resized back.
    texture: add the source's fine detail, mirrored into the hole (see the module docstring)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"inpaint_hole needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"inpaint_hole's scale must be in (0, 1], got {scale}")
    hole = np.asarray(hole, bool)
    if not hole.any():
        return image.copy()
    unknown = hole if source is None else hole | ~np.asarray(source, bool)
    h, w = hole.shape
    small_w, small_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (small_w, small_h) == (w, h):
        filled = cv2.inpaint(np.ascontiguousarray(image), unknown.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    else:
        # Known pixels shrink by area (no hole colour leaks in: those pixels count as unknown).
        small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
        small_unknown = cv2.resize(unknown.astype(np.uint8) * 255, (small_w, small_h), interpolation=cv2.INTER_AREA) > 0
        r = max(1, round(radius * scale))
        small = cv2.inpaint(small, small_unknown.astype(np.uint8), r, cv2.INPAINT_TELEA)
        filled = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    if texture and (~unknown).any():
        fill = filled[hole].astype(np.float32) + _mirrored_detail(image, unknown, hole)
        out[hole] = np.clip(fill + 0.5, 0, 255).astype(np.uint8)
    else:
        out[hole] = filled[hole]
    return out


def _mirrored_detail(image: np.ndarray, unknown: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The known pixels' detail (image less its blur over known pixels only) at each hole
    pixel's mirror across its nearest known pixel, float32 (n, 3); 0 where the mirror is
    not known."""
    known = (~unknown).astype(np.float32)
    img = image.astype(np.float32)
    weight = cv2.GaussianBlur(known, (0, 0), TEXTURE_SIGMA)
    blur = cv2.GaussianBlur(img * known[:, :, None], (0, 0), TEXTURE_SIGMA) / np.maximum(weight, 1e-3)[:, :, None]
    detail = (img - blur) * known[:, :, None]
    # Labels of the nearest known pixel, numbered in raster order from 1.
    _, labels = cv2.distanceTransformWithLabels(unknown.astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    h, w = hole.shape
    sources = np.flatnonzero(~unknown)
    ys, xs = np.nonzero(hole)
    near = sources[labels[ys, xs] - 1]
    ny, nx = np.divmod(near, w)
    my, mx = 2 * ny - ys, 2 * nx - xs
    inside = (my >= 0) & (my < h) & (mx >= 0) & (mx < w)
    my, mx = np.where(inside, my, ny), np.where(inside, mx, nx)
    ok = inside & ~unknown[my, mx]
    return detail[my, mx] * ok[:, None]
