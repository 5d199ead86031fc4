"""Inpainting of hidden background: fills pixels the photo never showed from the pixels
around them that it did.

Two users: the camera backend's revealed bands (where a near layer moves off what it hid)
and the subject layers' holes (where a moved subject used to be). Both must continue the
*background*, so the caller says which pixels may be read (`source`): the near side of a
depth edge, or the subject itself, is never a source.

The floor is OpenCV's Telea inpainting (fast marching: each hole pixel is a weighted
average of known pixels nearby, marched inward from the hole's edge).
"""

from __future__ import annotations

import cv2
import numpy as np


def inpaint_hole(image: np.ndarray, hole: np.ndarray, *, source: np.ndarray | None = None,
                 radius: int = 5) -> np.ndarray:
    """`image` (H, W, 3) uint8 with `hole` (H, W) bool filled from the pixels that are
    not in `hole` and, when `source` is given, are in `source`. Returns a new array; pixels
    outside the hole are unchanged."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"inpaint_hole needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    hole = np.asarray(hole, bool)
    if not hole.any():
        return image.copy()
    unknown = hole if source is None else hole | ~np.asarray(source, bool)
    filled = cv2.inpaint(np.ascontiguousarray(image), unknown.astype(np.uint8), radius, cv2.INPAINT_TELEA)
    out = image.copy()
    out[hole] = filled[hole]
    return out
