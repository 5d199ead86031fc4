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
made once per renderer): a pull-push pyramid (Gortler et al., the Lumigraph). The known
pixels are averaged level by level down to a few pixels; then each level, from the
coarsest up, keeps its own average where enough of its footprint is known
(PULL_PUSH_TRUST) and takes the coarser level's elsewhere. Near the band's edge it
continues the colours just beyond it; deeper in, smooth, never a streak (Telea marches the
border's colours inward along straight lines: a wide band reads as streaks). The far side's
pixels weigh less the farther they lie from the hole (exp(-d / BORDER_PX)): deep in a band
the coarse levels would otherwise read the average of a wide stretch of the far side (on
skimage's astronaut behind a disc: her bright wall, where the disc hides her dark neck ring,
whose arc the border shows), not what borders the band. Over the twelve photos of
bench/fill_compare.py: 21.19 -> 21.37 dB on average, 6 up (astronaut +1.1,
immunohistochemistry +0.7, chelsea +0.7), 6 down by at most 0.25 (brick, retina).
On it, grain: grey noise, high-passed at GRAIN_SIGMA (the photo's finest scale: sensor
noise, film grain, fine fabric), at the far side's own amplitude there (pull-pushed in like
the colour), so the band is not a plastic smear in a textured photo and is as smooth as the
photo where that is smooth. It is synthesized, not copied: what a photo hid is unknown, and
texture that is not the hidden one only adds error (the background's grain at the 3 px
scale, mirrored in across the hole's edge, cost 0.45 dB on average over twelve photos of
bench/view_synthesis.py's layered scene and drew short streaks and scratches where it
came from clutter; this grain costs 0.09 dB against none, and matches the background's
texture across a move better). The amplitude counts |grain| up to GRAIN_CLIP times its
median over the far side: the edges of clutter beside a band (a shelf's objects, chrome)
are not grain, and counted in full they sprayed a coarse sand over the motorcycle's
revealed bands (and cost 0.13 dB more over the twelve photos, every one of them lower).
Seeded: the same photo gets the same fill. A few passes over the image, once per renderer.

`fill_smooth` is the same pull-push without grain, for values that are not colours (the
hidden background's depth).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np


PULL_PUSH_TRUST = 0.1  # a level trusts its own average where this share of its footprint is known
GRAIN_SIGMA = 1.5  # px: the grain is what a Gaussian blur of this sigma takes out of the photo
GRAIN_CLIP = 2.0  # the grain's amplitude counts |grain| up to this many times its median over the far side
# The far side's pixels weigh exp(-d / BORDER_PX) in the colour fill, d pixels beyond the hole's
# border (never less than BORDER_FLOOR, which only keeps the pyramid's sums clear of underflow).
BORDER_PX = 8.0
BORDER_FLOOR = 1e-3


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


def fill_background(image: np.ndarray, hole: np.ndarray, *, source: np.ndarray | None = None,
                    noise: np.ndarray | None = None) -> np.ndarray:
    """`image` (H, W, 3) uint8 with `hole` (H, W) bool filled with a smooth continuation of
    the known pixels (not in `hole`, and in `source` when given) and grain at their own
    amplitude (see the module docstring). Returns a new array; pixels outside the hole are
    unchanged. noise: the grain's pattern, `grain_noise(image.shape[:2])`, when the caller
    made it already (it needs only the size; made here otherwise)."""
    _check(image)
    hole = np.asarray(hole, bool)
    unknown = _unknown(hole, source)
    if not hole.any() or unknown.all():
        return image.copy()
    known = (~unknown).astype(np.float32)
    img = image.astype(np.float32)
    at = np.flatnonzero(hole)  # (the hole's pixels by flat index: see `_take`)
    # Three independent parts, two on threads of their own (numpy and OpenCV let go of the
    # GIL in their loops): the renderer makes this before its first frame, while the encoder
    # waits for it.
    with ThreadPoolExecutor(2, thread_name_prefix="d2v-fill") as pool:
        pattern = pool.submit(grain_noise, hole.shape) if noise is None else None
        amplitude = pool.submit(_grain_amplitude, img, known, at)
        weight = known * _border_weights(hole)
        colour = _take(_pull_push(img * weight[:, :, None], weight), at)
        amplitude = amplitude.result()
        if pattern is not None:
            noise = pattern.result()
    colour += amplitude * _take(noise, at)[:, None]
    colour += np.float32(0.5)
    out = image.copy()
    _put(out, at, np.clip(colour, 0, 255, out=colour).astype(np.uint8))
    return out


def _grain_amplitude(img: np.ndarray, known: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The grain's amplitude at the hole's pixels (`at`, their flat indices) (n, 1): mean
    |photo less its blur|, grey, where the blur reads known pixels only (at the hole's edge it
    would measure the step), pulled in from the far side."""
    # (The colour and the weights blurred apart: the same values as one 4-channel blur, without
    # stacking them; the grey mean as two adds, the same as numpy's mean over a 3-long axis, at
    # half its cost. This runs before a depth clip's first frame.)
    blurred = cv2.GaussianBlur(img * known[:, :, None], (0, 0), GRAIN_SIGMA)
    blurred /= np.maximum(cv2.GaussianBlur(known, (0, 0), GRAIN_SIGMA), np.float32(1e-3))[:, :, None]
    np.subtract(img, blurred, out=blurred)
    grain = blurred[:, :, 0] + blurred[:, :, 1]
    grain += blurred[:, :, 2]
    grain /= np.float32(3)
    reach = 2 * math.ceil(3 * GRAIN_SIGMA) + 1
    inner = cv2.erode(known, np.ones((reach, reach), np.uint8))
    # Grain is the fine texture, not the edges of clutter (a shelf's objects, a chrome rim):
    # |grain| is clipped at GRAIN_CLIP times its median over the far side before it is pulled in.
    grain = np.abs(grain)
    inside = np.flatnonzero(inner)
    if inside.size:
        np.minimum(grain, GRAIN_CLIP * float(np.median(_take(grain, inside))), out=grain)
    return _take(_pull_push((grain * inner)[:, :, None], inner), at)


def grain_noise(shape: tuple) -> np.ndarray:
    """Seeded grey noise, high-passed at GRAIN_SIGMA, mean |value| 1: the grain's pattern."""
    noise = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    noise -= cv2.GaussianBlur(noise, (0, 0), GRAIN_SIGMA)
    noise /= np.abs(noise).mean()
    return noise


def fill_smooth(values: np.ndarray, hole: np.ndarray, *, source: np.ndarray | None = None) -> np.ndarray:
    """`values` (H, W) or (H, W, C) float32 with `hole` filled by the pull-push continuation
    of the known pixels (not in `hole`, and in `source` when given): smooth, no grain. For
    values that are not colours (the hidden background's depth): OpenCV's Telea is no floor
    there, its float path is off by up to about 1.5 in absolute value (OpenCV 5.1), which is
    noise across a depth map in [0, 1]."""
    values = np.asarray(values, np.float32)
    hole = np.asarray(hole, bool)
    unknown = _unknown(hole, source)
    if not hole.any() or unknown.all():
        return values.copy()
    known = (~unknown).astype(np.float32)
    stack = np.atleast_3d(values)
    at = np.flatnonzero(hole)
    out = stack.copy()
    _put(out, at, _take(_pull_push(stack * known[:, :, None], known), at))
    return out.reshape(values.shape)


def _border_weights(hole: np.ndarray) -> np.ndarray:
    """(H, W) float32: exp(-d / BORDER_PX) at d pixels beyond the hole's border (1 on it), at
    least BORDER_FLOOR: a revealed band continues the far side just beside it, not the far
    side's average over a wide area (which a pull-push's coarse levels read deep in a band)."""
    d = cv2.distanceTransform((~hole).view(np.uint8), cv2.DIST_L2, 5)
    # (In place: the same float32 steps as np.maximum(np.exp(-(d - 1) / BORDER_PX), BORDER_FLOOR).)
    d -= np.float32(1.0)
    np.negative(d, out=d)
    d /= np.float32(BORDER_PX)
    np.exp(d, out=d)
    return np.maximum(d, np.float32(BORDER_FLOOR), out=d)


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"inpainting needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")


def _take(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """`values` (H, W, ...) at the pixels of flat indices `at`: (n, ...), what `values[mask]`
    gives for the mask of those pixels, in a fifth to a tenth of its time (numpy's boolean
    index branches at every pixel; this runs a few times on every hidden background)."""
    return _pixels(np.ascontiguousarray(values)).take(at).view(values.dtype).reshape((-1,) + values.shape[2:])


def _put(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """`out[mask] = values` for the mask of the pixels of flat indices `at` (`out` (H, W, ...)
    C-contiguous, `values` (n, ...))."""
    _pixels(out)[at] = _pixels(np.ascontiguousarray(values, out.dtype).reshape((-1, 1) + out.shape[2:]))


def _pixels(values: np.ndarray) -> np.ndarray:
    """A C-contiguous (H, W, ...) array as a view with one element per pixel, its channels
    as one opaque item: numpy moves a pixel's channels that way two to three times as fast
    as one by one."""
    flat = values.reshape(values.shape[0] * values.shape[1], math.prod(values.shape[2:]))
    return flat.view(f"V{flat.shape[1] * flat.itemsize}").reshape(-1)


def _unknown(hole: np.ndarray, source: np.ndarray | None) -> np.ndarray:
    return hole if source is None else hole | ~np.asarray(source, bool)


def _pull_push(sums0: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Values (H, W, C) float32, given premultiplied by the known pixels' weights (`sums0`;
    the weights `known` (H, W) in [0, 1]), continued
    over the rest: pull (premultiplied Gaussian pyramid down to a few pixels), then push
    (from the coarsest up, each level's own average where PULL_PUSH_TRUST of its footprint
    is known, blended into the coarser level's upsampled below that). Only the unknown
    pixels of the result are meant: at full size it is the push's upsampled estimate."""
    sums, weights = [sums0], [known]
    while min(weights[-1].shape) > 2:
        sums.append(np.atleast_3d(cv2.pyrDown(sums[-1])))  # (OpenCV drops a single channel's axis)
        weights.append(cv2.pyrDown(weights[-1]))
    s, w = sums[-1], weights[-1]
    mean = s.sum(axis=(0, 1)) / max(float(w.sum()), 1e-6)  # where nothing at all is known
    fill = np.where(w[:, :, None] > 0, s / np.maximum(w, 1e-6)[:, :, None], mean).astype(np.float32)
    for s, w in zip(sums[-2::-1], weights[-2::-1]):
        fill = np.atleast_3d(cv2.pyrUp(fill, dstsize=(s.shape[1], s.shape[0])))
        if s is sums[0]:
            break
        # (In place, the same float32 steps as trust * (s / max(w, 1e-6)) + (1 - trust) * fill.)
        trust = np.minimum(w / np.float32(PULL_PUSH_TRUST), np.float32(1.0))[:, :, None]
        own = s / np.maximum(w, np.float32(1e-6))[:, :, None]
        own *= trust
        np.subtract(np.float32(1.0), trust, out=trust)
        fill *= trust
        fill += own
    return fill
