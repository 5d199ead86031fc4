"""The interpolate stage: keyframes at one rate -> frames at the output rate.

Timing contract (DESIGN.md): output frame i shows time i / fps_out from the first input
frame, up to the last input frame's time. Input frames that land exactly on an output
time pass through unchanged. Between keyframes this build blends the two neighbours
linearly ("blend"): simple and honest; flow-based interpolation replaces it later.
"""

from __future__ import annotations

import math

import numpy as np

METHOD = "blend"


def output_count(n_in: int, fps_in: float, fps_out: float) -> int:
    """How many output frames fit in the input's time span [0, (n_in - 1) / fps_in]."""
    if n_in < 1:
        return 0
    span = (n_in - 1) / fps_in
    return int(math.floor(span * fps_out + 1e-6)) + 1


def source_positions(n_out: int, fps_in: float, fps_out: float, n_in: int) -> np.ndarray:
    """Fractional input index for each output frame."""
    pos = np.arange(n_out, dtype=np.float64) * (fps_in / fps_out)
    return np.clip(pos, 0.0, n_in - 1)


def interpolate_frames(frames: np.ndarray, fps_in: float, fps_out: float, n_out: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 at fps_in -> (M, H, W, 3) uint8 at fps_out.

    `n_out` overrides the count (e.g. a clip's exact frame count when keyframes span it),
    and then the output spans the input exactly: frame 0 = first, last = last input frame.
    """
    frames = np.asarray(frames)
    n_in = len(frames)
    if n_out is None:
        pos = source_positions(output_count(n_in, fps_in, fps_out), fps_in, fps_out, n_in)
    else:
        pos = np.linspace(0.0, n_in - 1, n_out) if n_out > 1 else np.zeros(1)
    out = np.empty((len(pos),) + frames.shape[1:], dtype=np.uint8)
    for i, p in enumerate(pos):
        lo = int(math.floor(p + 1e-9))
        w = p - lo
        if w < 1e-6 or lo + 1 >= n_in:
            out[i] = frames[min(lo, n_in - 1)]
        else:
            blend = frames[lo].astype(np.float32) * (1.0 - w) + frames[lo + 1].astype(np.float32) * w
            out[i] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
    return out
