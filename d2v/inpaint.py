"""Inpainting of hidden background: fills pixels the photo never showed from the pixels
around them that it did.

Two users: the camera backend's revealed bands (where a near layer moves off what it hid)
and the subject layers' holes (where a moved subject used to be). Both must continue the
*background*, so the caller says which pixels may be read (`source`): the near side of a
depth edge, or the subject itself, is never a source.

`inpaint_hole` is OpenCV's Telea inpainting (fast marching: each hole pixel is a weighted
average of known pixels nearby, marched inward from the hole's edge): the floor, and what
the subject holes use.

`fill_background` is the camera backend's (the hidden background behind every depth step,
made once per renderer). Telea marches the border's colours inward along straight lines, so
a wide band reads as streaks; and a background's detail copied from far away (a cluttered
shelf's edges) reads as scratches. So, as 3D Photo Inpainting splits a fill into a smooth
part and its detail:
- the smooth part is a pull-push pyramid (Gortler et al., the Lumigraph): the known pixels
  averaged level by level down to a few pixels, then each level, from the coarsest up, keeps
  its own average where enough of its footprint is known (PULL_PUSH_TRUST) and takes the
  coarser level's elsewhere. Near the band's edge it continues the colours just beyond it;
  deeper in, the structure of the whole far side, smooth, never a streak.
- the detail (the image less its blur, sigma about 3 px: `_blur`) is taken from the
  source mirrored across the hole's edge (each hole pixel from the point as far beyond its
  nearest source pixel), so grain continues the background's; but it is soft-limited to
  DETAIL_LIMIT times the detail's local amplitude (itself pull-pushed in): a background's
  even grain passes, a strong edge mirrored from the clutter beyond becomes a faint one.
Both cost a few passes over the image (no marching), once per renderer.
"""

from __future__ import annotations

import cv2
import numpy as np


PULL_PUSH_TRUST = 0.1  # a level trusts its own average where this share of its footprint is known
DETAIL_LIMIT = 2.5  # x the local detail amplitude: mirrored detail beyond it is soft-clipped


def inpaint_hole(image: np.ndarray, hole: np.ndarray, *, source: np.ndarray | None = None,
                 radius: int = 5, scale: float = 1.0) -> np.ndarray:
    """`image` (H, W, 3) uint8 with `hole` (H, W) bool filled (Telea) from the pixels that
    are not in `hole` and, when `source` is given, are in `source`. Returns a new array;
    pixels outside the hole are unchanged. scale < 1: the fill is computed at that fraction
    of the size (a hole pixel is unknown there when any of its pixels is) and resized back."""
    _check(image)
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"inpaint_hole's scale must be in (0, 1], got {scale}")
    hole = np.asarray(hole, bool)
    if not hole.any():
        return image.copy()
    unknown = _unknown(hole, source)
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
    out[hole] = filled[hole]
    return out


def fill_background(image: np.ndarray, hole: np.ndarray, *, source: np.ndarray | None = None) -> np.ndarray:
    """`image` (H, W, 3) uint8 with `hole` (H, W) bool filled with a smooth continuation of
    the known pixels (not in `hole`, and in `source` when given) plus their detail, mirrored
    in and limited (see the module docstring). Returns a new array; pixels outside the hole
    are unchanged."""
    _check(image)
    hole = np.asarray(hole, bool)
    unknown = _unknown(hole, source)
    if not hole.any() or unknown.all():
        return image.copy()
    known = (~unknown).astype(np.float32)
    img = image.astype(np.float32)
    known_img = np.dstack([img * known[:, :, None], known])
    blurred = _blur(known_img)
    detail = (img - blurred[:, :, :3] / np.maximum(blurred[:, :, 3:], 1e-3)) * known[:, :, None]
    # One pull-push for both: the colour and the detail's amplitude (its mean |detail|).
    known_img[:, :, 3] = np.abs(detail).mean(axis=2)
    smooth = _pull_push(known_img, known)[hole]
    limit = DETAIL_LIMIT * np.maximum(smooth[:, 3:], 1.0)
    mirrored = _mirrored(detail, unknown, hole)
    fill = smooth[:, :3] + limit * np.tanh(mirrored / limit)
    out = image.copy()
    out[hole] = np.clip(fill + 0.5, 0, 255).astype(np.uint8)
    return out


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"inpainting needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")


def _unknown(hole: np.ndarray, source: np.ndarray | None) -> np.ndarray:
    return hole if source is None else hole | ~np.asarray(source, bool)


def _blur(image: np.ndarray) -> np.ndarray:
    """A Gaussian blur of sigma about 3 px (two pyramid levels down and up): what is finer is
    the texture. Far cheaper than cv2.GaussianBlur at that sigma."""
    h, w = image.shape[:2]
    half = cv2.pyrDown(image)
    quarter = cv2.pyrDown(half)
    return cv2.pyrUp(cv2.pyrUp(quarter, dstsize=half.shape[1::-1]), dstsize=(w, h))


def _pull_push(sums0: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Values (H, W, C) float32, given premultiplied by the known pixels' weights (`sums0`;
    the weights `known` (H, W) in [0, 1]), continued
    over the rest: pull (premultiplied Gaussian pyramid down to a few pixels), then push
    (from the coarsest up, each level's own average where PULL_PUSH_TRUST of its footprint
    is known, blended into the coarser level's upsampled below that). Only the unknown
    pixels of the result are meant: at full size it is the push's upsampled estimate."""
    sums, weights = [sums0], [known]
    while min(weights[-1].shape) > 2:
        sums.append(cv2.pyrDown(sums[-1]))
        weights.append(cv2.pyrDown(weights[-1]))
    s, w = sums[-1], weights[-1]
    mean = s.sum(axis=(0, 1)) / max(float(w.sum()), 1e-6)  # where nothing at all is known
    fill = np.where(w[:, :, None] > 0, s / np.maximum(w, 1e-6)[:, :, None], mean).astype(np.float32)
    for s, w in zip(sums[-2::-1], weights[-2::-1]):
        fill = cv2.pyrUp(fill, dstsize=(s.shape[1], s.shape[0]))
        if s is sums[0]:
            break
        trust = np.minimum(w / PULL_PUSH_TRUST, 1.0)[:, :, None]
        fill = trust * (s / np.maximum(w, 1e-6)[:, :, None]) + (1.0 - trust) * fill
    return fill


def _mirrored(detail: np.ndarray, unknown: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`detail` (H, W, C) at each hole pixel's mirror across its nearest known pixel, float32
    (n, C); 0 where the mirror is not known."""
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
