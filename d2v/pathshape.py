"""Path analysis for the trajectory engine: clean up a drawn stroke and say what shape it is.

    clean_path(xy)    raw image-pixel points -> CleanPath: consecutive duplicates dropped,
                      hand jitter smoothed (sharp corners kept), resampled evenly by arc length
    analyze_path(xy)  raw points -> PathShape: straight | closed_loop | spiral | freeform,
                      rotation direction, swept angle, length, straightness, centroid

Everything is in image pixels, u right and v DOWN. An angle measured with atan2(dv, du)
therefore grows clockwise as the viewer sees the screen, so a positive swept angle (and
direction +1) means the stroke turned clockwise on screen. Pure numpy: the 1D filters here
(`gaussian_filter1d`, `maximum_filter1d`) are scipy.ndimage's, rewritten so that planning a
move does not import scipy (a third of a second of `d2v render`'s start-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from d2v.errors import InvalidPathError, InvalidRequestError

JITTER_FRACTION = 0.004  # of the stroke's bounding-box diagonal (see `decimate`)
# Smoothing and corner detection scales, in image pixels (clipped fractions of the length).
SMOOTH_FRACTION, SMOOTH_MIN_PX, SMOOTH_MAX_PX = 0.01, 1.5, 15.0
CORNER_WINDOW_FRACTION, CORNER_WINDOW_MIN_PX, CORNER_WINDOW_MAX_PX = 0.03, 8.0, 40.0
CORNER_MIN_DEG = 55.0  # a turn sharper than this within the window is an intended corner

# Shape thresholds (see `_classify`).
STRAIGHTNESS_MIN = 0.9  # chord / length
STRAIGHT_MAX_TURN_DEG = 100.0  # total absolute turning a "straight" stroke may have
LOOP_MIN_SWEPT_DEG = 270.0  # a loop or spiral turns at least this far one way...
LOOP_MIN_CONSISTENCY = 0.7  # ...with most of its turning in that one direction
SPIRAL_MIN_RADIAL_CHANGE = 0.5  # radius change over the stroke / mean radius
CLOSED_MAX_GAP = 0.2  # |end - start| / bounding-box diagonal
DIRECTION_MIN_DEG = 20.0  # below this net turning there is no rotation direction
# A point farther than this from the image origin (pixels) is a mistake (a canvas of the wrong
# size, a unit slip), and lengths and smoothing of such coordinates overflow to inf and NaN.
MAX_COORDINATE_PX = 1e9


@dataclass(frozen=True)
class CleanPath:
    """A smoothed stroke resampled at equal arc-length steps (image pixels)."""

    points: np.ndarray  # (N, 2)
    s: np.ndarray  # (N,) cumulative arc length, s[0] = 0, s[-1] = length
    corners: np.ndarray  # (K, 2) the sharp corners that were kept

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, fraction: np.ndarray | float) -> np.ndarray:
        """Points at fractions of the arc length (0 = start, 1 = end), shape (..., 2)."""
        u = np.clip(np.asarray(fraction, dtype=np.float64), 0.0, 1.0) * self.length
        return np.stack([np.interp(u, self.s, self.points[:, 0]), np.interp(u, self.s, self.points[:, 1])], -1)


@dataclass(frozen=True)
class PathShape:
    """What a stroke looks like. `direction`: +1 clockwise as seen on screen, -1
    counter-clockwise, 0 none; `swept_angle_rad`: signed total turning (+ = clockwise)."""

    kind: str  # "straight" | "closed_loop" | "spiral" | "freeform"
    direction: int
    swept_angle_rad: float
    length: float
    straightness: float  # |end - start| / length: 1 for a straight stroke
    closed: bool  # the stroke ends near where it began
    centroid: tuple[float, float]  # arc-length-weighted mean point
    start: tuple[float, float]
    end: tuple[float, float]
    spiral_center: tuple[float, float]  # the endpoint nearer the centroid (a spiral's inner end)
    abs_turning_rad: float  # total unsigned turning
    radial_change: float  # how much the distance to the centroid grows or shrinks per stroke
    corners: int  # sharp corners kept by the smoothing


def _as_points(xy: np.ndarray) -> np.ndarray:
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InvalidPathError(f"invalid path: expected (N, 2) points, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise InvalidPathError("invalid path: points must be finite numbers")
    check_reach(pts, "path")
    return pts


def check_reach(pts: np.ndarray, what: str, error: type[InvalidRequestError] = InvalidPathError) -> None:
    """Points in image pixels (a path's, a region's) must lie within MAX_COORDINATE_PX of the
    image: farther ones are a canvas size or a number gone wrong, and overflow what draws them."""
    with np.errstate(all="ignore"):  # (inf or nan: refused below, without numpy's warnings)
        farthest = float(np.abs(pts).max()) if pts.size else 0.0
    if not farthest <= MAX_COORDINATE_PX:
        raise error(
            f"invalid {what}: a point lies {farthest:.3g} pixels from the image; points must be within "
            f"{MAX_COORDINATE_PX:.0e} pixels of it (is the canvas size right?)"
        )


def dedupe(xy: np.ndarray) -> np.ndarray:
    """Drop points that repeat the previous kept point (pen pauses, duplicate events)."""
    pts = _as_points(xy)
    scale = float(np.ptp(pts, axis=0).max()) if len(pts) else 0.0
    eps = 1e-9 * (1.0 + scale)
    keep = [0]
    for i in range(1, len(pts)):
        if np.hypot(*(pts[i] - pts[keep[-1]])) > eps:
            keep.append(i)
    if len(keep) < 2:
        raise InvalidPathError("invalid path: needs at least 2 distinct points")
    return pts[keep]


def jitter_tolerance(xy: np.ndarray) -> float:
    """Scale below which a stroke's wiggles count as jitter: JITTER_FRACTION of its size."""
    return JITTER_FRACTION * float(np.hypot(*np.ptp(xy, axis=0)))


def decimate(xy: np.ndarray, tol: float, times: np.ndarray | None = None):
    """Merge runs of consecutive points that stay within `tol` of the run's first point
    into their mean (the stroke's own first and last points are kept exactly). Dense
    input, where jitter is as large as the spacing, would otherwise zig-zag, inflating
    its length and faking corners. With `times`, each merged point is returned twice,
    at the run's first and last time, so a pause in the drawing stays a pause.
    Returns (points, times or None)."""
    groups, start = [], 0
    for i in range(1, len(xy)):
        if np.hypot(*(xy[i] - xy[start])) > tol:
            groups.append((start, i))
            start = i
    groups.append((start, len(xy)))
    reps = np.array([xy[a:b].mean(axis=0) for a, b in groups])
    reps[0], reps[-1] = xy[0], xy[-1]
    if len(reps) < 2:
        reps = np.array([xy[0], xy[-1]])
        groups = [(0, 1), (len(xy) - 1, len(xy))]
    if times is None:
        return reps, None
    t = np.array([[times[a], times[b - 1]] for a, b in groups]).ravel()
    return np.repeat(reps, 2, axis=0), t


def arc_length(xy: np.ndarray) -> np.ndarray:
    """Cumulative arc length along a polyline, (N,), starting at 0."""
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])


def resample(xy: np.ndarray, n: int) -> np.ndarray:
    """n points at equal arc-length steps along a polyline (ends kept)."""
    s = arc_length(xy)
    u = np.linspace(0.0, s[-1], n)
    return np.column_stack([np.interp(u, s, xy[:, 0]), np.interp(u, s, xy[:, 1])])


def _find_corners(q: np.ndarray, step: float, window_px: float) -> list[int]:
    """Indices of sharp turns in an evenly resampled polyline: the angle between the
    chords reaching `window_px` back and ahead exceeds CORNER_MIN_DEG (local maxima)."""
    k = max(1, int(round(window_px / step)))
    if len(q) < 2 * k + 1:
        return []
    back = q[k:-k] - q[: -2 * k]
    ahead = q[2 * k :] - q[k:-k]
    cos = np.sum(back * ahead, axis=1) / np.maximum(np.hypot(*back.T) * np.hypot(*ahead.T), 1e-12)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    picked: list[int] = []
    # Strongest first; a corner suppresses weaker candidates within one window.
    for j in np.argsort(-angle, kind="stable"):
        if angle[j] < CORNER_MIN_DEG:
            break
        i = int(j) + k
        if all(abs(i - c) > k for c in picked):
            picked.append(i)
    return sorted(picked)


def _padded(x: np.ndarray, pad: int, axis: int, mode: str) -> np.ndarray:
    """x extended by `pad` samples at both ends along `axis` (scipy.ndimage's "nearest" or "wrap")."""
    if mode not in ("nearest", "wrap"):
        raise ValueError(f"mode must be 'nearest' or 'wrap', got {mode!r}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    return np.pad(x, widths, mode="edge" if mode == "nearest" else "wrap")


def gaussian_filter1d(x: np.ndarray, sigma: float, axis: int = -1, mode: str = "nearest",
                      truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d (order 0; modes "nearest" and "wrap"): the same kernel
    (radius int(truncate * sigma + 0.5), normalised), the same result to rounding."""
    x = np.asarray(x, np.float64)
    radius = int(truncate * float(sigma) + 0.5)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / (float(sigma) ** 2) * taps**2)
    kernel /= kernel.sum()
    axis = axis % x.ndim
    windows = np.lib.stride_tricks.sliding_window_view(_padded(x, radius, axis, mode), 2 * radius + 1, axis=axis)
    return windows @ kernel


def maximum_filter1d(x: np.ndarray, size: int, axis: int = -1, mode: str = "nearest") -> np.ndarray:
    """scipy.ndimage.maximum_filter1d for an odd `size` (a centred window), modes "nearest" and "wrap"."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd number, got {size}")
    x = np.asarray(x)
    axis = axis % x.ndim
    windows = np.lib.stride_tricks.sliding_window_view(_padded(x, size // 2, axis, mode), size, axis=axis)
    return windows.max(axis=-1)


def smooth_pinned(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing that keeps both ends in place: the signal is extended by point
    reflection about each end, which also keeps straight runs straight up to the end."""
    m = len(x)
    sigma = min(sigma, (m - 1) / 4.0)
    if m < 3 or sigma < 0.3:
        return x.copy()
    pad = min(m - 1, int(math.ceil(4 * sigma)))
    left = 2 * x[0] - x[pad:0:-1]
    right = 2 * x[-1] - x[-2 : -pad - 2 : -1]
    y = gaussian_filter1d(np.concatenate([left, x, right]), sigma, mode="nearest")[pad : pad + m]
    y[0], y[-1] = x[0], x[-1]
    return y


def clean_path(xy: np.ndarray) -> CleanPath:
    """Dedupe, smooth (each run between sharp corners on its own, so corners stay sharp
    and jitter goes) and resample evenly by arc length."""
    pts = dedupe(xy)
    pts, _ = decimate(pts, jitter_tolerance(pts))
    length = float(arc_length(pts)[-1])
    n = int(np.clip(length / 1.0, 64, 4096))  # about one sample per pixel
    q = resample(pts, n)
    step = length / (n - 1)
    window = float(np.clip(CORNER_WINDOW_FRACTION * length, CORNER_WINDOW_MIN_PX, CORNER_WINDOW_MAX_PX))
    # Look for corners on a lightly smoothed copy, so jitter is not mistaken for them.
    det = np.column_stack([smooth_pinned(q[:, 0], window / 4 / step), smooth_pinned(q[:, 1], window / 4 / step)])
    corners = _find_corners(det, step, window)
    sigma = float(np.clip(SMOOTH_FRACTION * length, SMOOTH_MIN_PX, SMOOTH_MAX_PX)) / step
    bounds = [0, *corners, n - 1]
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = q[a : b + 1]
        sm = np.column_stack([smooth_pinned(seg[:, 0], sigma), smooth_pinned(seg[:, 1], sigma)])
        pieces.append(sm if not pieces else sm[1:])  # neighbours share the corner point
    smooth = np.concatenate(pieces)
    out = resample(smooth, int(np.clip(arc_length(smooth)[-1] / 2.0, 64, 2048)))
    return CleanPath(points=out, s=arc_length(out), corners=q[corners].reshape(-1, 2))


def _heading(q: np.ndarray, sigma_px: float) -> tuple[np.ndarray, float]:
    """Unwrapped heading along an evenly resampled path (radians, atan2(dv, du): growing
    = turning clockwise on screen) smoothed over `sigma_px`, and the net turn."""
    d = np.diff(q, axis=0)
    theta = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    step = float(np.hypot(*d.T).mean())
    # Smoothing removes what jitter is left (which would add up to a large absolute
    # turn) but keeps every deliberate turn, corners included, and never adds turning.
    smooth = smooth_pinned(theta, sigma_px / step) if len(theta) > 2 else theta
    return smooth, float(theta[-1] - theta[0])


def _classify(straightness: float, swept: float, abs_turn: float, radial: float, closed: bool) -> str:
    if straightness >= STRAIGHTNESS_MIN and abs_turn <= math.radians(STRAIGHT_MAX_TURN_DEG):
        return "straight"
    consistency = abs(swept) / abs_turn if abs_turn > 0 else 0.0
    if abs(swept) >= math.radians(LOOP_MIN_SWEPT_DEG) and consistency >= LOOP_MIN_CONSISTENCY:
        return "spiral" if radial >= SPIRAL_MIN_RADIAL_CHANGE else "closed_loop"
    # A closed stroke with a smaller net turn (a teardrop, a loop with a kink) is a loop too.
    if closed and abs(swept) >= 1.2 * math.pi and consistency >= 0.6:
        return "closed_loop"
    return "freeform"


def shape_of(path: CleanPath) -> PathShape:
    """Analyse an already cleaned path (see `analyze_path`)."""
    q = path.points
    length = path.length
    start, end = q[0], q[-1]
    gap = float(np.hypot(*(end - start)))
    # Centroid weighted by arc length, so slow (dense) parts of the drawing don't pull it.
    mids = 0.5 * (q[1:] + q[:-1])
    seg = np.diff(path.s)
    centroid = (mids * seg[:, None]).sum(0) / max(seg.sum(), 1e-12)
    heading, swept = _heading(q, float(np.clip(0.015 * length, 3.0, 30.0)))
    abs_turn = float(np.abs(np.diff(heading)).sum())
    # Spiral vs loop: does the distance to the centroid trend with the turning angle?
    r = np.hypot(*(mids - centroid).T)
    phi = heading
    radial = 0.0
    if np.ptp(phi) > 1e-9 and r.mean() > 1e-9:
        slope = np.polyfit(phi, r, 1)[0]
        radial = float(abs(slope) * abs(swept) / r.mean())
    diag = float(np.hypot(*np.ptp(q, axis=0)))
    closed = bool(gap <= CLOSED_MAX_GAP * diag and length > 2.0 * gap)
    straightness = gap / length if length > 0 else 0.0
    direction = int(np.sign(swept)) if abs(swept) >= math.radians(DIRECTION_MIN_DEG) else 0
    inner = start if np.hypot(*(start - centroid)) < np.hypot(*(end - centroid)) else end
    return PathShape(
        kind=_classify(straightness, swept, abs_turn, radial, closed),
        direction=direction,
        swept_angle_rad=swept,
        length=length,
        straightness=float(straightness),
        closed=closed,
        centroid=(float(centroid[0]), float(centroid[1])),
        start=(float(start[0]), float(start[1])),
        end=(float(end[0]), float(end[1])),
        spiral_center=(float(inner[0]), float(inner[1])),
        abs_turning_rad=abs_turn,
        radial_change=radial,
        corners=len(path.corners),
    )


def analyze_path(xy: np.ndarray) -> PathShape:
    """Raw image-pixel points (N, 2) -> PathShape. Cleans the stroke first."""
    return shape_of(clean_path(xy))
