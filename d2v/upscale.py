"""The upscale stage: frames -> exactly the output size.

When the aspect ratio changes, the largest centred crop with the target's aspect is
taken first ("cover"), so nothing is stretched. Downscaling uses area averaging (no
aliasing); upscaling uses Lanczos. Learned super-resolution comes later.
"""

from __future__ import annotations

import cv2
import numpy as np

from d2v.camera import cover_crop


def method_for(src_w: int, src_h: int, width: int, height: int) -> str:
    if (src_w, src_h) == (width, height):
        return "none"
    return "area" if width * height < src_w * src_h else "lanczos"


def resize_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    u0, v0, cw, ch = cover_crop(w, h, width, height)
    x0, y0 = int(round(u0)), int(round(v0))
    crop = frame[y0 : y0 + int(round(ch)), x0 : x0 + int(round(cw))]
    interp = cv2.INTER_AREA if width * height < crop.shape[0] * crop.shape[1] else cv2.INTER_LANCZOS4
    return cv2.resize(crop, (width, height), interpolation=interp)


def upscale_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, height, width, 3) uint8."""
    frames = np.asarray(frames)
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([resize_frame(f, width, height) for f in frames])
