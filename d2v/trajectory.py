"""The trajectory stage: a drawn path and an effect -> one camera per output frame.

    plan_trajectory(request, image_width, image_height) -> CameraTrajectory
    analyze_path(xy) -> PathShape          (from d2v.pathshape)
    resolve_effect(effect, shape, image_width, image_height) -> str   (what `auto` picks)

Steps: scale the path to image pixels, clean it (d2v.pathshape), pick the effect, turn
frame times into progress along the move (drawing speed where points carry `t`, else
constant speed with eased ends; optional speed ramp; `loop` runs the move there and
back), build each effect's cameras, add seeded handheld shake, then clamp so the view
never leaves the image (unless `allow_borders`). Camera conventions are d2v.camera's:
reference camera at (crop centre, -D) with D = cover-crop width and fx = output width;
zoom z spans 1/z of the crop. Pure numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from scipy.spatial.transform import Rotation

from d2v.camera import cover_crop, look_at, make_frame, rot_z
from d2v.errors import UnknownEffectError
from d2v.models import EFFECTS, CameraTrajectory, RenderRequest
from d2v.pathshape import (
    CleanPath,
    PathShape,
    analyze_path,
    arc_length,
    clean_path,
    decimate,
    jitter_tolerance,
    shape_of,
    smooth_pinned,
)

__all__ = ["plan_trajectory", "analyze_path", "resolve_effect", "PathShape", "DEFAULT_ZOOM"]

# Peak zoom of each effect when the request gives no `end_zoom` (orbit: just enough to
# keep its tilted view inside the image).
DEFAULT_ZOOM = {
    "zoom_in": 3.0, "pull_back": 3.0, "pan": 1.5, "spiral": 3.0, "earth_zoom_out": 10.0,
    "crash_zoom": 4.0, "dolly_zoom": 1.5, "orbit": 1.0,
}  # fmt: skip
AUTO_SHORT_STROKE = 0.35  # straight strokes shorter than this x image diagonal zoom in; longer ones pan
EASE_FRACTION = 0.2  # share of the move spent speeding up (and again slowing down)
DRAWN_EASE_FRACTION = 0.1  # the same, laid over drawing-speed timing
COVER_BLEND = 0.35  # zoom_in / pull_back: progress over which the view eases from/to the cover view
ORBIT_ARC_DEG, ORBIT_PITCH_DEG = 40.0, 5.0
SPIRAL_ROLL_POWER = 2.0  # roll grows as p^2, so the picture turns mostly once zoomed in enough to
# turn without showing borders (less extra zoom from the clamp)
DOLLY_RATIO = 2.5  # dolly_zoom: the camera ends at D / 2.5
CRASH_HOLD, CRASH_PUSH_S, CRASH_PUSH_SHARE, CRASH_MIN_FRAMES = 0.5, 0.3, 0.15, 4
SHAKE_VIEW_RMS, SHAKE_ROLL_RMS_DEG = 0.006, 0.3  # at shake = 1: view shift (x view width), roll
CLAMP_SMOOTH_S = 0.12  # the clamp's corrections are smoothed over about this many seconds
CLAMP_REPORT_PX = 0.5  # frames moved less than this are not reported as clamped
TRAVELLING = {"zoom_in", "pull_back", "pan"}  # effects whose view travels the path (drawing speed applies)


def resolve_effect(
    request_effect: str, shape: PathShape, image_width: int | None = None, image_height: int | None = None
) -> str:
    """The effect to render: the request's, or for `auto` one picked from the path's shape.
    Without the image size a straight stroke counts as short (zoom_in)."""
    if request_effect not in EFFECTS:
        raise UnknownEffectError(f"unknown effect {request_effect!r}; choose one of: {', '.join(EFFECTS)}")
    if request_effect != "auto":
        return request_effect
    if shape.kind == "straight":
        if image_width and image_height:
            short = shape.length < AUTO_SHORT_STROKE * math.hypot(image_width, image_height)
            return "zoom_in" if short else "pan"
        return "zoom_in"
    return {"closed_loop": "orbit", "spiral": "spiral"}.get(shape.kind, "pan")


# --- timing ----------------------------------------------------------------------------


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _ease_in_out(tau: np.ndarray, a: float = EASE_FRACTION) -> np.ndarray:
    """Constant speed with eased ends: speed rises as (1 - cos) over the first `a` of the
    time, stays constant, and falls the same way over the last `a` (integrated exactly)."""
    tau = np.clip(tau, 0.0, 1.0)

    def ramp(x):  # distance covered after x (<= a) of the ramp
        return 0.5 * (x - a / math.pi * np.sin(math.pi * x / a))

    mid = a / 2 + (tau - a)
    out = np.where(tau < a, ramp(np.minimum(tau, a)), mid)
    out = np.where(tau > 1 - a, (1 - a) - ramp(np.minimum(1 - tau, a)), out)
    return out / (1 - a)


def _drawn_progress(xy: np.ndarray, times: np.ndarray, tau: np.ndarray) -> np.ndarray | None:
    """Arc-length progress that follows the drawing: at time tau (0..1 of the move) the
    camera is as far along the path as the pen was at tau of the stroke's duration."""
    t = np.maximum.accumulate(times)  # out-of-order timestamps: treat as a pause
    if t[-1] - t[0] <= 0:
        return None
    xy, t = decimate(xy, jitter_tolerance(xy), t)  # as the path was cleaned; pauses kept
    s = arc_length(xy)
    t = t + np.arange(len(t)) * 1e-12 * (t[-1] - t[0])  # strictly increasing for interp
    grid = np.linspace(0.0, 1.0, 1025)
    p = np.interp(t[0] + grid * (t[-1] - t[0]), t, s) / s[-1]
    # Input events arrive in jittery bursts; smooth over ~2% of the stroke (ends pinned).
    p = np.maximum.accumulate(np.clip(smooth_pinned(p, 0.02 * 1024), 0.0, 1.0))
    return np.interp(tau, grid, p)


def _frame_taus(n: int, loop: bool) -> np.ndarray:
    """Move time per frame, 0..1. For a loop the move runs there and back, and frame n
    (the one after the last) would be frame 0 again, so the clip repeats seamlessly."""
    if loop:
        u = np.arange(n) / n
        return 1.0 - np.abs(1.0 - 2.0 * u)
    return np.arange(n) / max(n - 1, 1)


# --- cameras ----------------------------------------------------------------------------


@dataclass
class _Scene:
    W: int  # image size
    H: int
    out_w: int
    out_h: int
    crop_w: float
    D: float  # base distance = cover-crop width
    centre: np.ndarray  # cover-crop centre, (2,)


@dataclass
class _Rig:
    """Per-frame cameras before they become CameraFrames."""

    C: np.ndarray  # (n, 3) camera centres
    R: np.ndarray  # (n, 3, 3) world -> camera
    fx: np.ndarray  # (n,)
    roll: np.ndarray  # (n,) radians, for the summary field
    lens: bool  # the clamp zooms with the lens (fx) rather than by moving closer


def _frontal(sc: _Scene, centres: np.ndarray, zoom: np.ndarray, roll=None, lens: bool = False) -> _Rig:
    """Cameras looking straight at the plane, view centred on `centres` at `zoom`: a dolly
    (distance D / z) or a lens zoom (fx = z W_out at distance D)."""
    n = len(zoom)
    roll = np.zeros(n) if roll is None else np.asarray(roll, float)
    dist = np.full(n, sc.D) if lens else sc.D / zoom
    fx = sc.out_w * zoom if lens else np.full(n, float(sc.out_w))
    C = np.column_stack([centres[:, 0], centres[:, 1], -dist])
    R = np.stack([rot_z(a) for a in roll])
    return _Rig(C, R, fx, roll, lens)


def _toward(sc: _Scene, target, zoom: np.ndarray, peak: float) -> np.ndarray:
    """View centres for zooming from the cover view (z = 1) to `target` centred at z = peak.
    The target drifts steadily to the middle of the screen, never outward, and the view
    stays inside the image whenever the target's centred view at `peak` does."""
    w = (1 - 1 / zoom) / (1 - 1 / peak) if peak > 1 + 1e-9 else np.ones_like(zoom)
    return sc.centre + (np.asarray(target, float) - sc.centre) * w[:, None]


def _effect(name: str, sc: _Scene, path: CleanPath, shape: PathShape, p, tau, req: RenderRequest) -> _Rig:
    zpk = float(req.end_zoom or DEFAULT_ZOOM[name])
    if name == "zoom_in":  # centre on the path, eased out of the cover view at the start
        z = zpk**p
        c = path.at(p)
        b = 1 - _smoothstep(p / COVER_BLEND)
        return _frontal(sc, c + (sc.centre - c) * b[:, None], z)
    if name == "pull_back":  # the reverse: ends eased into the cover view
        z = zpk ** (1 - p)
        c = path.at(p)
        b = _smoothstep((p - (1 - COVER_BLEND)) / COVER_BLEND)
        return _frontal(sc, c + (sc.centre - c) * b[:, None], z)
    if name == "pan":
        return _frontal(sc, path.at(p), np.full(len(p), zpk))
    if name == "earth_zoom_out":  # zoom = z0^(1 - p): constant speed in log-zoom
        z = zpk ** (1 - p)
        return _frontal(sc, _toward(sc, shape.start, z, zpk), z)
    if name == "spiral":
        z = zpk**p
        turns = abs(shape.swept_angle_rad) / (2 * math.pi)
        total = math.radians(float(np.clip(90 + (turns - 1.5) * 60, 90, 180)))
        # rot_z: a positive roll turns the picture counter-clockwise, so a clockwise
        # spiral (direction +1) gets a negative roll and its picture turns clockwise.
        roll = -(shape.direction or 1) * total * p**SPIRAL_ROLL_POWER
        return _frontal(sc, _toward(sc, shape.spiral_center, z, zpk), z, roll)
    if name == "crash_zoom":
        return _frontal(sc, *_crash(sc, shape, tau, req, zpk), lens=True)
    if name == "dolly_zoom":  # toward the subject while the lens widens: its size holds
        dist = sc.D * (1 - (1 - 1 / DOLLY_RATIO) * p)
        rig = _frontal(sc, np.tile(shape.end, (len(p), 1)), np.full(len(p), zpk), lens=True)
        rig.C[:, 2] = -dist
        rig.fx = zpk * sc.out_w * dist / sc.D
        return rig
    if name == "orbit":
        return _orbit(sc, shape, p, req)
    raise UnknownEffectError(f"no camera move for effect {name!r}")


def _crash(sc: _Scene, shape: PathShape, tau, req: RenderRequest, zpk: float):
    """Hold the cover view for about half the clip, push in fast, hold on the path's end.
    The push takes CRASH_PUSH_S; where that is under CRASH_MIN_FRAMES frames (low fps,
    short clips) it takes CRASH_PUSH_SHARE of the clip instead, and never less."""
    n = len(tau)
    move_frames = n / 2 if req.loop else max(n - 1, 1)  # frames per unit of tau
    push = CRASH_PUSH_S * req.fps
    if push < CRASH_MIN_FRAMES:
        push = max(CRASH_PUSH_SHARE * move_frames, CRASH_MIN_FRAMES)
    q = _smoothstep((tau - CRASH_HOLD) / min(push / move_frames, 1 - CRASH_HOLD))
    z = zpk**q
    return _toward(sc, shape.end, z, zpk), z


def _orbit(sc: _Scene, shape: PathShape, p, req: RenderRequest) -> _Rig:
    """Arc around the centroid at distance D, looking at it: yaw over ORBIT_ARC_DEG (to the
    right, +X, for a clockwise drawing) with a slight rise in the middle; a constant lens
    zoom just large enough that the tilted views fit inside the image."""
    d = shape.direction or (1 if shape.end[0] >= shape.start[0] else -1)
    yaw = d * math.radians(ORBIT_ARC_DEG) * (p - 0.5)
    pitch = math.radians(ORBIT_PITCH_DEG) * np.sin(math.pi * p)
    G = np.array([*shape.centroid, 0.0])
    offs = np.column_stack([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), -np.cos(yaw) * np.cos(pitch)])
    C = G + sc.D * offs
    R = np.stack([look_at(c, G) for c in C])
    rig = _Rig(C, R, np.full(len(p), float(sc.out_w)), np.zeros(len(p)), lens=True)
    zoom = max(float(_fit_factor(rig, sc).max()), float(req.end_zoom or 1.0))
    rig.fx = rig.fx * zoom
    return rig


def _shake(rig: _Rig, amount: float, seed: int, fps: int, loop: bool, out_w: int) -> _Rig:
    """Seeded handheld shake: small yaw, pitch and roll from a few sinusoids of 0.3-2 Hz
    each (smooth and band-limited; periodic over the clip for a loop)."""
    n = len(rig.fx)
    rng = np.random.default_rng([seed, 0x5AE])
    t = np.arange(n) / fps
    sig = np.zeros((3, n))
    for ch in range(3):
        f = rng.uniform(0.3, 2.0, 5)
        phase = rng.uniform(0, 2 * math.pi, 5)
        amp = f**-0.5  # a little more slow sway than fast jitter
        if loop:
            period = n / fps
            f = np.maximum(1, np.round(f * period)) / period
        sig[ch] = (amp[:, None] * np.sin(2 * math.pi * f[:, None] * t + phase[:, None])).sum(0)
        sig[ch] /= math.sqrt((amp**2).sum() / 2)  # unit RMS
    # Turning the camera by a shifts the picture by fx * a output pixels; scale by
    # W_out / fx so the shake is the same share of the view at any zoom.
    turn = amount * SHAKE_VIEW_RMS * out_w / rig.fx
    roll = amount * math.radians(SHAKE_ROLL_RMS_DEG) * sig[2]
    # Rotation vectors in camera axes (x right, y down, z forward): pitch, yaw, roll.
    delta = Rotation.from_rotvec(np.column_stack([turn * sig[1], turn * sig[0], roll])).as_matrix()
    return replace(rig, R=delta @ rig.R, roll=rig.roll + roll)


# --- the no-border clamp ---------------------------------------------------------------


def _footprints(C, R, fx, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's output corners on the image plane (n, 4, 2), and whether all four
    corner rays hit the plane in front of the camera."""
    n = len(fx)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = fx
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = sc.out_w / 2, sc.out_h / 2, 1.0
    t = -np.einsum("nij,nj->ni", R, C)
    H = K @ np.stack([R[:, :, 0], R[:, :, 1], t], axis=2)  # plane (u, v, 1) -> output
    corners = np.array([[0, 0, 1], [sc.out_w, 0, 1], [sc.out_w, sc.out_h, 1], [0, sc.out_h, 1]], float)
    hom = np.einsum("nij,kj->nki", np.linalg.inv(H), corners)
    ok = np.all(hom[..., 2] > 1e-12, axis=1)  # the third coordinate is 1 / depth
    pts = hom[..., :2] / np.where(np.abs(hom[..., 2:]) > 1e-12, hom[..., 2:], 1e-12)
    return pts, ok


def _zoomed(rig: _Rig, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, fx) zoomed in by factor f per frame: lens (fx * f), or dolly toward the point
    the optical axis meets the plane. Either way the new view lies inside the old one."""
    if rig.lens:
        return rig.C.copy(), rig.fx * f
    fwd = rig.R[:, 2, :]
    lam = -rig.C[:, 2] / fwd[:, 2]
    hit = rig.C + lam[:, None] * fwd
    return hit + (rig.C - hit) / f[:, None], rig.fx.copy()


def _fits(pts, ok, sc: _Scene, tol: float = 1e-6) -> np.ndarray:
    size = pts.max(axis=1) - pts.min(axis=1)
    return ok & (size[:, 0] <= sc.W + tol) & (size[:, 1] <= sc.H + tol)


def _fit_factor(rig: _Rig, sc: _Scene) -> np.ndarray:
    """Per frame, the least zoom-in factor (>= 1) after which the footprint fits inside the
    image by size (a shift can then place it). Bisection: footprints shrink as f grows."""
    f = np.ones(len(rig.fx))
    bad = ~_fits(*_footprints(rig.C, rig.R, rig.fx, sc), sc)
    if not bad.any():
        return f
    sub = _Rig(rig.C[bad], rig.R[bad], rig.fx[bad], rig.roll[bad], rig.lens)
    lo, hi = np.zeros(bad.sum()), np.full(bad.sum(), math.log(256.0))
    for _ in range(40):
        mid = (lo + hi) / 2
        C, fx = _zoomed(sub, np.exp(mid))
        fit = _fits(*_footprints(C, sub.R, fx, sc), sc)
        hi, lo = np.where(fit, mid, hi), np.where(fit, lo, mid)
    f[bad] = np.exp(hi)
    return f


def _clamp(rig: _Rig, sc: _Scene, fps: int, loop: bool) -> tuple[_Rig, list[int], list[str]]:
    """Keep every view inside [0, W] x [0, H]: zoom in just enough where a view is larger
    than the image, then shift cameras parallel to the plane (which shifts the footprint
    by exactly as much). Both corrections are smoothed over time so the camera eases
    against the image edge instead of stopping dead, then re-clipped to stay exact."""
    n = len(rig.fx)
    mode = "wrap" if loop else "nearest"
    sigma = max(1.0, CLAMP_SMOOTH_S * fps)
    before, _ = _footprints(rig.C, rig.R, rig.fx, sc)

    g = np.log(_fit_factor(rig, sc))
    if g.max() > 0:
        k = int(math.ceil(2 * sigma))
        env = gaussian_filter1d(maximum_filter1d(g, 2 * k + 1, mode=mode), sigma, mode=mode)
        g = np.maximum(env, g)  # smooth, and never less than needed
    C, fx = _zoomed(rig, np.exp(g))

    pts, _ = _footprints(C, rig.R, fx, sc)
    lo = -pts.min(axis=1)  # (n, 2): allowed shifts are [lo, hi] per axis
    hi = np.array([sc.W, sc.H]) - pts.max(axis=1)
    mid = (lo + hi) / 2
    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)  # a view exactly as large as the image
    shift = np.clip(0.0, lo, hi)
    shift = np.clip(gaussian_filter1d(shift, sigma, axis=0, mode=mode), lo, hi)
    C = C.copy()
    C[:, :2] += shift
    out = _Rig(C, rig.R, fx, rig.roll, rig.lens)

    after, _ = _footprints(C, rig.R, fx, sc)
    moved = np.abs(after - before).max(axis=(1, 2))
    idx = [int(i) for i in np.nonzero(moved > CLAMP_REPORT_PX)[0]]
    notes = []
    if idx:
        how = []
        if np.abs(shift).max() >= CLAMP_REPORT_PX:
            how.append(f"shifted up to {np.abs(shift).max():.0f} px")
        if g.max() >= math.log(1.005):
            how.append(f"zoomed in up to {math.exp(g.max()):.2f}x")
        notes.append(
            f"kept the view inside the image: adjusted {len(idx)} of {n} frames ({', '.join(how)}); "
            "set allow_borders to let it leave the image instead"
        )
    return out, idx, notes


# --- the plan --------------------------------------------------------------------------


def plan_trajectory(request: RenderRequest, image_width: int, image_height: int) -> CameraTrajectory:
    """One camera per output frame (frame i at time i / fps) for `request` on an image of
    the given size. Deterministic for a given request (shake uses request.seed)."""
    W, H, out_w, out_h = int(image_width), int(image_height), request.width, request.height
    u0, v0, cw, ch = cover_crop(W, H, out_w, out_h)
    sc = _Scene(W, H, out_w, out_h, cw, cw, np.array([u0 + cw / 2, v0 + ch / 2]))

    xy = request.path.image_points(W, H)
    path = clean_path(xy)
    shape = shape_of(path)
    effect = resolve_effect(request.effect, shape, W, H)

    n = request.n_frames
    tau = _frame_taus(n, request.loop)
    times = request.path.times()
    p = None
    if times is not None and effect in TRAVELLING:
        # Follow the drawing, with the very ends eased: strokes with evenly spaced
        # timestamps (scripts, resampled input) would otherwise start at full speed.
        p = _drawn_progress(xy, times, _ease_in_out(tau, DRAWN_EASE_FRACTION))
    if p is None:
        p = _ease_in_out(tau)
    if request.speed_ramp > 0:  # blend toward slow-fast-slow
        k = request.speed_ramp
        p = (1 - k) * p + k * p**3 * (p * (6 * p - 15) + 10)

    rig = _effect(effect, sc, path, shape, p, tau, request)
    if request.shake > 0:
        rig = _shake(rig, request.shake, request.seed, request.fps, request.loop, out_w)
    clamped, notes = [], []
    if not request.allow_borders:
        rig, clamped, notes = _clamp(rig, sc, request.fps, request.loop)

    frames = [
        make_frame(
            i, i / request.fps, camera_center=rig.C[i], R=rig.R[i], fx=float(rig.fx[i]),
            out_w=out_w, out_h=out_h, crop_w=cw, roll_rad=float(rig.roll[i]),
        )  # fmt: skip
        for i in range(n)
    ]
    subject = {
        "dolly_zoom": shape.end, "zoom_in": shape.end, "crash_zoom": shape.end, "orbit": shape.centroid,
        "spiral": shape.spiral_center, "pull_back": shape.start, "earth_zoom_out": shape.start,
    }.get(effect)  # fmt: skip
    return CameraTrajectory(
        effect=effect, image_width=W, image_height=H, width=out_w, height=out_h, fps=request.fps,
        base_distance=sc.D, frames=frames, clamped_frames=clamped, notes=notes,
        path_shape=shape.kind, subject=None if subject is None else [float(subject[0]), float(subject[1])],
    )  # fmt: skip
