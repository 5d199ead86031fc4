"""The trajectory stage: a drawn path and an effect -> one camera per output frame.

    plan_trajectory(request, image_width, image_height) -> CameraTrajectory
    move_points(request, trajectory) -> (N, 2)   the drawn path, or a typed camera's view centres
    analyze_path(xy) -> PathShape          (from d2v.pathshape)
    resolve_effect(effect, shape, image_width, image_height, has_depth=False) -> str   (what `auto` picks)

Steps: scale the path to image pixels, clean it (d2v.pathshape), pick the effect, turn
frame times into progress along the move (drawing speed where points carry `t`, else
constant speed with eased ends; optional speed ramp; `loop` runs the move there and
back), build each effect's cameras, add seeded handheld shake, then clamp so the view
never leaves the image (unless `allow_borders`). A typed camera (the request's `camera`)
replaces the first steps: d2v.typed_camera turns its keyframes into cameras, which get the
same shake and clamp (effect "camera"). Camera conventions are d2v.camera's:
reference camera at (crop centre, -D) with D = cover-crop width and fx = output width;
zoom z spans 1/z of the crop. Pure numpy.

"Inside the image" covers depth too: where the renderer (d2v.render) puts image points at
relative depths s != 1 (the stand-in depth of dolly_zoom and parallax, or a depth map when
the caller passes its parallax), a moving camera sees farther layers spread wider and nearer ones
swing further, so it can show picture the flat view would not. The planner models that
range of layers (`depth_range`) and keeps every layer's view inside the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from d2v.camera import cover_crop, look_at, make_frame, rot_z, rotvec_matrices
from d2v.errors import InvalidPathError, InvalidRequestError, UnknownEffectError
from d2v.models import EFFECTS, CameraFrame, CameraTrajectory, RenderRequest
from d2v.pathshape import (
    CleanPath,
    PathShape,
    analyze_path,
    arc_length,
    clean_path,
    decimate,
    gaussian_filter1d,
    jitter_tolerance,
    maximum_filter1d,
    shape_of,
    smooth_pinned,
)
from d2v.typed_camera import TYPED_EFFECT, ReferenceView, typed_cameras

__all__ = [
    "plan_trajectory", "analyze_path", "resolve_effect", "depth_range", "PathShape", "DEFAULT_ZOOM",
    "DEFAULT_PARALLAX", "PSEUDO_PARALLAX", "PIVOT_EFFECTS", "PSEUDO_DEPTH_EFFECTS", "PARALLAX_TRUCK",
    "PSEUDO_DEPTH_NOTE", "drawn_direction", "ORBIT_ARC_DEG", "ORBIT_DEPTH_ARC_DEG", "move_points",
    "check_on_photo",
]  # fmt: skip

# Peak zoom of each effect when the request gives no `end_zoom` (orbit: just enough to
# keep its tilted view inside the image; pan: at least this, more for long strokes;
# dolly_zoom: what the background spans at its widest, the subject is framed tighter).
DEFAULT_ZOOM = {
    "zoom_in": 3.0, "pull_back": 3.0, "pan": 1.5, "spiral": 3.0, "earth_zoom_out": 10.0,
    "crash_zoom": 4.0, "dolly_zoom": 1.25, "orbit": 1.0, "parallax": 1.0,
}  # fmt: skip
AUTO_SHORT_STROKE = 0.35  # straight strokes shorter than this x image diagonal zoom in; longer ones pan
AUTO_HORIZONTAL_DEG = 20.0  # with depth, auto slides (parallax) along straight strokes this near horizontal
EASE_FRACTION = 0.2  # share of the move spent speeding up (and again slowing down)
DRAWN_EASE_FRACTION = 0.1  # the same, laid over drawing-speed timing
COVER_BLEND = 0.35  # zoom_in / pull_back: progress over which the view eases from/to the cover view
# Orbit: a 20 degree yaw arc (+-10) with a 5 degree rise. On the flat picture a wider arc
# needs more zoom to keep its keystoned views inside the image, and past ~10 degrees the far
# side of the picture visibly stretches. With real depth (a depth map, given or estimated)
# the layers swing against the subject, which is what reads as an orbit, so it arcs wider:
# 30 degrees (+-15); its views then zoom in about 1.9x (1.5x at 20 degrees) to keep every
# layer the renderer may show inside the image.
ORBIT_ARC_DEG, ORBIT_DEPTH_ARC_DEG, ORBIT_PITCH_DEG = 20.0, 30.0, 5.0
PAN_MAX_ZOOM = 3.0  # pan zooms in up to this far so its view can follow the whole stroke
SPIRAL_ROLL_POWER = 2.0  # roll grows as p^2, so the picture turns mostly once zoomed in enough to
# turn without showing borders (less extra zoom from the clamp)
DOLLY_RATIO = 2.0  # dolly_zoom: the camera ends at D / 2 (closer warps the background into a bulge)
# parallax: the camera trucks this far (x the cover-crop width) in all. Near layers slide up to
# 1 / (1 - DEFAULT_PARALLAX) times as far, so the views that keep them inside zoom in about
# 1.3x, and what a near edge reveals stays a band of a few percent of the frame.
PARALLAX_TRUCK = 0.15
# Depth the renderer applies (d2v.render uses these): a user depth map's default
# parallax, and the strength of the stand-in depth it gives dolly_zoom without one.
DEFAULT_PARALLAX = 0.35
PSEUDO_PARALLAX = 0.35
PIVOT_EFFECTS = {"dolly_zoom", "orbit", "parallax"}  # depth measured from the subject (its layer is the plane)
PSEUDO_DEPTH_EFFECTS = {"dolly_zoom", "parallax"}  # a flat picture shows these as nothing or a pan: fake depth
CRASH_HOLD, CRASH_PUSH_S, CRASH_PUSH_SHARE, CRASH_MIN_FRAMES = 0.5, 0.3, 0.15, 4
SHAKE_VIEW_RMS, SHAKE_ROLL_RMS_DEG = 0.006, 0.3  # at shake = 1: view shift (x view width), roll
CLAMP_SMOOTH_S = 0.12  # the clamp's corrections are smoothed over about this many seconds
CLAMP_REPORT_PX = 0.5  # frames moved less than this are not reported as clamped
# A path more than this share of whose length lies outside the photo is refused (unless borders
# are allowed): the view, kept inside, could not go where it was drawn.
MAX_OUTSIDE_SHARE = 0.5
# With depth the clamp moves the renderer's reference (the first camera) and clamps again
# until it settles; each pass leaves about a third of the last one's error (a sideways
# slide with shake needs a dozen passes to settle within a thousandth of a pixel).
CLAMP_REFERENCE_PASSES = 20
TRAVELLING = {"zoom_in", "pull_back", "pan", "parallax"}  # the camera travels with the pen (drawing speed applies)
PSEUDO_DEPTH_NOTE = (
    "parallax without depth: a stand-in depth (a soft bump around the middle of the stroke) slides the subject "
    "past the background; give a depth map, or configure a depth model, for true parallax"
)


def resolve_effect(
    request_effect: str, shape: PathShape, image_width: int | None = None, image_height: int | None = None,
    *, has_depth: bool = False,
) -> str:
    """The effect to render: the request's, or for `auto` one picked from the path's shape.
    Without the image size a straight stroke counts as short (zoom_in). With real depth (a
    depth map, given or estimated) a straight stroke within AUTO_HORIZONTAL_DEG of horizontal
    slides the camera (parallax); the stand-in depth is no reason to pick it."""
    if request_effect not in EFFECTS:
        raise UnknownEffectError(f"unknown effect {request_effect!r}; choose one of: {', '.join(EFFECTS)}")
    if request_effect != "auto":
        return request_effect
    if shape.kind == "straight" and has_depth:
        dx, dy = abs(shape.end[0] - shape.start[0]), abs(shape.end[1] - shape.start[1])
        if dy <= math.tan(math.radians(AUTO_HORIZONTAL_DEG)) * dx:
            return "parallax"
    if shape.kind == "straight":
        if image_width and image_height:
            short = shape.length < AUTO_SHORT_STROKE * math.hypot(image_width, image_height)
            return "zoom_in" if short else "pan"
        return "zoom_in"
    return {"closed_loop": "orbit", "spiral": "spiral"}.get(shape.kind, "pan")


def depth_range(effect: str, depth_parallax: float | None = None) -> tuple[float, float]:
    """The (nearest, farthest) relative depth s at which the renderer may show image points
    for this effect (1 = on the plane; see d2v.camera and d2v.render). depth_parallax is
    the renderer's parallax for a user depth map, None without one. Depth is 1 - parallax *
    depth_map in [1 - p, 1]; for PIVOT_EFFECTS it is divided by the subject's own, which
    could be anything in that range, so the bound is [1 - p, 1 / (1 - p)]. The stand-in
    depth peaks at the subject, so everything else lies behind it: [1, 1 / (1 - p)]."""
    if depth_parallax is None:
        if effect in PSEUDO_DEPTH_EFFECTS:
            return 1.0, 1.0 / (1.0 - PSEUDO_PARALLAX)
        return 1.0, 1.0
    p = float(depth_parallax)
    return (1.0 - p, 1.0 / (1.0 - p)) if effect in PIVOT_EFFECTS else (1.0 - p, 1.0)


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
    # Only ratios of times matter: scaled to at most 1 in size, so that the stroke's duration
    # cannot overflow (t from -1e308 to 1e308) or underflow (1e-320 apart) below.
    t = t / max(float(np.abs(t).max()), np.finfo(np.float64).tiny)
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
    crop_h: float
    D: float  # base distance = cover-crop width
    centre: np.ndarray  # cover-crop centre, (2,)
    layers: tuple[float, float] = (1.0, 1.0)  # depth_range of the effect: (1, 1) = flat
    real_depth: bool = False  # the renderer has a depth map (given or estimated), not just a stand-in


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
        return _frontal(sc, path.at(p), np.full(len(p), _pan_zoom(sc, path, zpk)))
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
    if name == "dolly_zoom":
        return _dolly(sc, shape, p, zpk)
    if name == "orbit":
        return _orbit(sc, shape, p, req)
    if name == "parallax":
        return _parallax(sc, path, p, zpk)
    raise UnknownEffectError(f"no camera move for effect {name!r}")


def _pan_zoom(sc: _Scene, path: CleanPath, zpk: float) -> float:
    """The least zoom >= zpk at which the view centred on any point of the path stays
    inside the image, so the camera follows the whole stroke instead of waiting against an
    edge; at most PAN_MAX_ZOOM (a stroke nearer the edge than that allows gets clamped)."""
    room = np.minimum(path.points.min(axis=0), [sc.W, sc.H] - path.points.max(axis=0))
    need = np.array([sc.crop_w, sc.crop_h]) / (2.0 * np.maximum(room, 1e-9))
    return max(zpk, min(float(need.max()), PAN_MAX_ZOOM))


def _dolly(sc: _Scene, shape: PathShape, p, zpk: float) -> _Rig:
    """Toward the subject (the path's end) from D to D / DOLLY_RATIO while the lens widens
    with the distance, so the picture plane, where the subject is, keeps its scale.

    The background is what moves: the renderer puts it behind the subject, at relative
    depth up to s = sc.layers[1], and from distance d a camera sees (1 + D (s - 1) / d) / s
    times as much of such a layer as of the plane. So the view starts zoomed in by that
    factor at its largest (the last frame, the farthest layer) over zpk: at its widest the
    background spans a zpk view. It aims at the subject moved in just far enough for that
    view to fit the image; every frame's view then lies inside it (the background only
    spreads as the camera closes in), so the clamp leaves the dolly straight."""
    far = sc.layers[1]
    grow = (1.0 + DOLLY_RATIO * (far - 1.0)) / far
    half = np.array([sc.crop_w, sc.crop_h]) / (2.0 * zpk)
    centre = np.clip(shape.end, half, np.maximum([sc.W, sc.H] - half, half))
    dist = sc.D * (1 - (1 - 1 / DOLLY_RATIO) * p)
    rig = _frontal(sc, np.tile(centre, (len(p), 1)), np.full(len(p), 1.0), lens=True)
    rig.C[:, 2] = -dist
    rig.fx = zpk * grow * sc.out_w * dist / sc.D
    return rig


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
    """Arc around the centroid at distance D, looking at it: yaw over ORBIT_ARC_DEG, or
    ORBIT_DEPTH_ARC_DEG with real depth (to the right, +X, for a clockwise drawing) with a
    slight rise in the middle. One lens zoom
    and one sideways offset hold for the whole arc (`_steady_fit`), so the subject stays
    still on screen while the views, keystoned as the camera swings, stay inside the image
    (at every depth the renderer shows: without a depth map that is the flat picture;
    with one, near and far layers swing against the subject)."""
    d = shape.direction or (1 if shape.end[0] >= shape.start[0] else -1)
    yaw = d * math.radians(ORBIT_DEPTH_ARC_DEG if sc.real_depth else ORBIT_ARC_DEG) * (p - 0.5)
    pitch = math.radians(ORBIT_PITCH_DEG) * np.sin(math.pi * p)
    G = np.array([*shape.centroid, 0.0])
    offs = np.column_stack([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), -np.cos(yaw) * np.cos(pitch)])
    C = G + sc.D * offs
    R = np.stack([look_at(c, G) for c in C])
    rig = _Rig(C, R, np.full(len(p), float(sc.out_w)), np.zeros(len(p)), lens=True)
    zoom, offset = _steady_fit(rig, sc, float(req.end_zoom or 1.0))
    rig.fx = rig.fx * zoom
    rig.C[:, :2] += offset
    return rig


def _steady_fit(rig: _Rig, sc: _Scene, min_zoom: float = 1.0) -> tuple[float, np.ndarray]:
    """The least lens zoom factor (>= min_zoom) at which one camera offset parallel to
    the plane keeps every frame's view inside the image, and that offset (the one nearest
    zero). The clamp's per-frame shifts would keep the views inside too, but they change
    from frame to frame and slide the subject about the screen. An offset shared by every
    camera, the first (the renderer's depth reference) included, moves what each depth
    layer shows by exactly as much."""

    def offsets(f: float):  # the offsets fitting every frame at zoom f: [lo, hi] per axis
        pts, _, ok = _footprints(rig.C, rig.R, rig.fx * f, sc, rig.C[0])
        lo, hi = _shift_range(pts, np.ones(pts.shape[:2]), sc)
        return bool(ok.all()), lo.max(axis=0), hi.min(axis=0)

    def fits(f: float) -> bool:
        ok, lo, hi = offsets(f)
        return ok and bool(np.all(lo <= hi + 1e-6))

    zoom = min_zoom
    if not fits(zoom):
        a, b = math.log(zoom), math.log(zoom * 256.0)
        for _ in range(40):
            mid = (a + b) / 2
            a, b = (a, mid) if fits(math.exp(mid)) else (mid, b)
        zoom = math.exp(b)
    _, lo, hi = offsets(zoom)
    return zoom, np.clip(0.0, lo, np.maximum(lo, hi))


def _parallax(sc: _Scene, path: CleanPath, p, zpk: float) -> _Rig:
    """A truck: the camera slides PARALLAX_TRUCK x the cover-crop width parallel to the
    picture, along the drawn direction (`drawn_direction`), past the middle of the stroke,
    looking straight ahead: a translation, not a turn of the view, so layers slide by
    amounts that depend on their depth (the renderer puts the stroke's middle, the subject,
    on the plane: nearer things slide farther, the background less). One lens zoom and one
    offset for the whole move (`_steady_fit`) keep every layer's view inside the image
    without sliding the subject about; at least zpk."""
    direction = drawn_direction(path)
    centres = path.at(0.5) + np.outer(p - 0.5, PARALLAX_TRUCK * sc.crop_w * direction)
    rig = _frontal(sc, centres, np.ones(len(p)), lens=True)
    zoom, offset = _steady_fit(rig, sc, zpk)
    rig.fx = rig.fx * zoom
    rig.C[:, :2] += offset
    return rig


def drawn_direction(path: CleanPath) -> np.ndarray:
    """The unit direction a stroke was drawn in: start to end; for a stroke that comes back
    near its start (a loop), start to the point farthest from it."""
    pts = path.points
    chord = pts[-1] - pts[0]
    if np.hypot(*chord) < 0.25 * path.length:
        far = pts[int(np.argmax(np.hypot(*(pts - pts[0]).T)))]
        chord = far - pts[0]
    norm = float(np.hypot(*chord))
    return chord / norm if norm > 0 else np.array([1.0, 0.0])


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
    delta = rotvec_matrices(np.column_stack([turn * sig[1], turn * sig[0], roll]))
    return replace(rig, R=delta @ rig.R, roll=rig.roll + roll)


# --- the no-border clamp ---------------------------------------------------------------


def _footprints(C, R, fx, sc: _Scene, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What each frame can show of the image: points (n, m, 2) whose bounding box holds it,
    how far each point moves per unit of camera shift parallel to the plane (n, m), and
    whether every corner ray looks toward the plane (n,).

    Flat (sc.layers = (1, 1)): the output's four corners on the plane, each moving as far
    as the camera. With depth the renderer shows, where a ray meets layer s at P, image
    point Q = c0 + (P - c0) / s (c0: the first camera; see d2v.render). Along a ray Q is
    affine in 1 / s, and each layer sees the output rectangle as a convex quad, so the
    corners on the nearest and farthest layer bound everything; a shift d moves layer s's
    points by d / s. Layers behind the camera are skipped, as the renderer skips them."""
    n = len(fx)
    near, far = sc.layers
    corners = np.array([[0, 0], [sc.out_w, 0], [sc.out_w, sc.out_h], [0, sc.out_h]], float)
    rays = np.ones((n, 4, 3))
    rays[..., :2] = (corners - [sc.out_w / 2, sc.out_h / 2])[None] / fx[:, None, None]
    d = np.einsum("nji,nkj->nki", R, rays)  # world directions R^T ray, (n, 4, 3)
    ok = np.all(d[..., 2] > 1e-12, axis=1)
    dz = np.where(d[..., 2] > 1e-12, d[..., 2], 1e-12)
    if near == far == 1.0:
        s = np.ones((n, 1))
    else:
        s_cam = 1.0 - C[:, 2] / c0[2]  # the layer through the camera centre
        s = np.column_stack([np.clip(s_cam + 1e-3, near, far), np.full(n, far)])
    lam = (c0[2] * (1.0 - s)[:, :, None] - C[:, None, None, 2]) / dz[:, None, :]  # (n, layers, 4)
    P = C[:, None, None, :2] + lam[..., None] * d[:, None, :, :2]
    Q = c0[:2] + (P - c0[:2]) / s[:, :, None, None]
    inv_s = np.broadcast_to(1.0 / s[:, :, None], lam.shape)
    return Q.reshape(n, -1, 2), inv_s.reshape(n, -1), ok


def _shift_range(pts, inv_s, sc: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and axis (n, 2), the camera shifts [lo, hi] that keep every point inside
    [0, W] x [0, H] (lo > hi: no shift does)."""
    k = inv_s[..., None]
    lo = (-pts / k).max(axis=1)
    hi = ((np.array([sc.W, sc.H]) - pts) / k).min(axis=1)
    return lo, hi


def _zoomed(rig: _Rig, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, fx) zoomed in by factor f per frame: lens (fx * f), or dolly toward the point
    the optical axis meets the plane. Either way the new view lies inside the old one."""
    if rig.lens:
        return rig.C.copy(), rig.fx * f
    fwd = rig.R[:, 2, :]
    lam = -rig.C[:, 2] / fwd[:, 2]
    hit = rig.C + lam[:, None] * fwd
    return hit + (rig.C - hit) / f[:, None], rig.fx.copy()


def _fits(pts, inv_s, ok, sc: _Scene, tol: float = 1e-6) -> np.ndarray:
    lo, hi = _shift_range(pts, inv_s, sc)
    return ok & np.all(lo <= hi + tol, axis=1)


def _fit_factor(rig: _Rig, sc: _Scene, c0) -> np.ndarray:
    """Per frame, the least zoom-in factor (>= 1) after which some shift places the view
    inside the image. Bisection: views shrink as f grows."""
    f = np.ones(len(rig.fx))
    bad = ~_fits(*_footprints(rig.C, rig.R, rig.fx, sc, c0), sc)
    if not bad.any():
        return f
    sub = _Rig(rig.C[bad], rig.R[bad], rig.fx[bad], rig.roll[bad], rig.lens)
    lo, hi = np.zeros(bad.sum()), np.full(bad.sum(), math.log(256.0))
    for _ in range(40):
        mid = (lo + hi) / 2
        C, fx = _zoomed(sub, np.exp(mid))
        fit = _fits(*_footprints(C, sub.R, fx, sc, c0), sc)
        hi, lo = np.where(fit, mid, hi), np.where(fit, lo, mid)
    f[bad] = np.exp(hi)
    return f


def outside_share(xy: np.ndarray, width: float, height: float, samples: int = 512) -> float:
    """The share of the path's length (image pixels) that lies outside [0, W] x [0, H]."""
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return 0.0
    at = np.linspace(0.0, s[-1], samples)
    x, y = np.interp(at, s, xy[:, 0]), np.interp(at, s, xy[:, 1])
    return float(np.mean((x < 0) | (x > width) | (y < 0) | (y > height)))


def check_on_photo(request: RenderRequest, width: int, height: int) -> None:
    """Refuse (InvalidPathError) a path mostly outside a width x height photo, unless the
    request allows borders: callers run it before a job exists (the planner runs it too).
    A request without a drawn path (a typed camera, subjects alone) has none to refuse."""
    if request.path is not None and not request.allow_borders:
        _check_on_photo(request.path.image_points(width, height), width, height)


def _check_on_photo(xy: np.ndarray, width: int, height: int) -> None:
    share = outside_share(xy, width, height)
    if share > MAX_OUTSIDE_SHARE:
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        raise InvalidPathError(
            f"invalid path: {share:.0%} of it lies outside the photo (the path spans x {x0:.0f}..{x1:.0f}, "
            f"y {y0:.0f}..{y1:.0f} in the photo's pixels; the photo is {width}x{height}): draw it on the photo, "
            "or allow borders (--allow-borders, \"allow_borders\": true) to let the view leave it")


def _clamp(rig: _Rig, sc: _Scene, fps: int, loop: bool) -> tuple[_Rig, list[int], list[str], list[float]]:
    """Keep every view inside [0, W] x [0, H]: zoom in just enough where a view is larger
    than the image, then shift cameras parallel to the plane. Both corrections are
    smoothed over time so the camera eases against the image edge instead of stopping
    dead, then re-clipped to stay exact.

    With depth, what a frame shows depends on the first camera too (the renderer's
    reference c0), which the clamp itself may move: clamp against the first camera's
    clamped position until that stops changing (it barely does: layer s feels c0's
    shift only in proportion to 1 - 1 / s)."""
    c0 = rig.C[0]
    for _ in range(1 if sc.layers == (1.0, 1.0) else CLAMP_REFERENCE_PASSES):
        out, shift, g = _clamp_once(rig, sc, fps, loop, c0)
        if np.linalg.norm(out.C[0] - c0) <= 1e-9 * sc.D:
            break
        c0 = out.C[0]

    # Report the camera's own adjustments: how far the flat view moved.
    flat = replace(sc, layers=(1.0, 1.0))
    before, _, _ = _footprints(rig.C, rig.R, rig.fx, flat, c0)
    after, _, _ = _footprints(out.C, out.R, out.fx, flat, c0)
    moved = np.abs(after - before).max(axis=(1, 2))
    idx = [int(i) for i in np.nonzero(moved > CLAMP_REPORT_PX)[0]]
    # ...and how far that put each view's centre from where the path as drawn put it, in % of
    # the view width: the path check holds the plan to the drawing with it (d2v.fidelity).
    view_w = np.linalg.norm(before[:, 1] - before[:, 0], axis=1)
    offset = np.linalg.norm(after.mean(axis=1) - before.mean(axis=1), axis=1) / np.maximum(view_w, 1e-9) * 100
    drawn_offset = [round(float(v), 3) for v in offset] if idx else []
    notes = []
    if idx:
        how = []
        if np.abs(shift).max() >= CLAMP_REPORT_PX:
            how.append(f"shifted up to {np.abs(shift).max():.0f} px")
        if g.max() >= math.log(1.005):
            how.append(f"zoomed in up to {math.exp(g.max()):.2f}x")
        notes.append(
            f"kept the view inside the image: adjusted {len(idx)} of {len(rig.fx)} frames ({', '.join(how)}); "
            "allow borders (--allow-borders, \"allow_borders\": true) to let it leave the image instead"
        )
    return out, idx, notes, drawn_offset


def _clamp_once(rig: _Rig, sc: _Scene, fps: int, loop: bool, c0) -> tuple[_Rig, np.ndarray, np.ndarray]:
    """One pass of `_clamp` against reference camera c0: (rig, shifts (n, 2), log zooms (n,))."""
    mode = "wrap" if loop else "nearest"
    sigma = max(1.0, CLAMP_SMOOTH_S * fps)

    g = np.log(_fit_factor(rig, sc, c0))
    if g.max() > 0:
        k = int(math.ceil(2 * sigma))
        env = gaussian_filter1d(maximum_filter1d(g, 2 * k + 1, mode=mode), sigma, mode=mode)
        g = np.maximum(env, g)  # smooth, and never less than needed
    C, fx = _zoomed(rig, np.exp(g))

    lo, hi = _shift_range(*_footprints(C, rig.R, fx, sc, c0)[:2], sc)
    mid = (lo + hi) / 2
    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)  # a view exactly as large as the image
    shift = np.clip(0.0, lo, hi)
    shift = np.clip(gaussian_filter1d(shift, sigma, axis=0, mode=mode), lo, hi)
    C = C.copy()
    C[:, :2] += shift
    return _Rig(C, rig.R, fx, rig.roll, rig.lens), shift, g


# --- the plan --------------------------------------------------------------------------


def _finish(rig: _Rig, sc: _Scene, request: RenderRequest
            ) -> tuple[list[CameraFrame], list[int], list[str], list[float]]:
    """What every move goes through last: seeded shake, the clamp (unless allow_borders),
    then one CameraFrame per output frame. Returns (frames, clamped frame indices, notes,
    how far the clamp moved the view off the drawing, as `_clamp` says)."""
    if request.shake > 0:
        rig = _shake(rig, request.shake, request.seed, request.fps, request.loop, sc.out_w)
    clamped, notes, drawn_offset = [], [], []
    if not request.allow_borders:
        rig, clamped, notes, drawn_offset = _clamp(rig, sc, request.fps, request.loop)
    frames = [
        make_frame(
            i, i / request.fps, camera_center=rig.C[i], R=rig.R[i], fx=float(rig.fx[i]),
            out_w=sc.out_w, out_h=sc.out_h, crop_w=sc.crop_w, roll_rad=float(rig.roll[i]),
        )  # fmt: skip
        for i in range(len(rig.fx))
    ]
    return frames, clamped, notes, drawn_offset


def _scene(W: int, H: int, out_w: int, out_h: int, effect: str, depth_parallax: float | None) -> _Scene:
    u0, v0, cw, ch = cover_crop(W, H, out_w, out_h)
    return _Scene(W, H, out_w, out_h, cw, ch, cw, np.array([u0 + cw / 2, v0 + ch / 2]),
                  depth_range(effect, depth_parallax), real_depth=depth_parallax is not None)


def _plan_typed(request: RenderRequest, W: int, H: int, depth_parallax: float | None) -> CameraTrajectory:
    """The trajectory of a typed camera (d2v.typed_camera): its keyframes over the clip, the
    first frame at t = 0 and the last at t = duration_s (like every move, which ends on the
    last frame; a `loop` plays them there and back), then shake and the clamp like any move.
    Depth counts from the picture plane (no subject to pivot on): nearer layers slide farther."""
    sc = _scene(W, H, request.width, request.height, TYPED_EFFECT, depth_parallax)
    times = _frame_taus(request.n_frames, request.loop) * request.duration_s
    C, R, fx, roll = typed_cameras(request.camera, times, ReferenceView(sc.centre, sc.D, sc.out_w))
    frames, clamped, notes, drawn_offset = _finish(_Rig(C, R, fx, roll, lens=True), sc, request)
    _check_sees_the_picture(frames, times, request)
    ignored = []
    if request.effect != "auto":
        ignored.append(f"effect {request.effect!r}")
    if request.speed_ramp > 0:  # the keyframes' times are the timing
        ignored.append(f"speed_ramp {request.speed_ramp:g}")
    if request.path is not None:
        ignored.append("the drawn path")
    if ignored:
        notes.append(f"the typed camera is the move: {', '.join(ignored)} not used for it")
    last = request.camera.keyframes[-1].t
    if last > request.duration_s + 1e-9:
        notes.append(f"the camera's keyframes run to {last:g} s but the clip ends at {request.duration_s:g} s: "
                     "the later keyframes are not reached")
    return CameraTrajectory(
        effect=TYPED_EFFECT, image_width=W, image_height=H, width=request.width, height=request.height,
        fps=request.fps, base_distance=sc.D, frames=frames, clamped_frames=clamped, notes=notes,
        drawn_offset_pct=drawn_offset,
    )  # fmt: skip


HORIZON_MIN = 0.01  # a frame corner's ray must head into the picture at least this much (sine of its angle)


def _check_sees_the_picture(frames: list[CameraFrame], times: np.ndarray, request: RenderRequest) -> None:
    """Refuse (InvalidRequestError, naming the keyframe nearest in time) a typed camera turned
    so far that a corner of some frame looks past the picture's horizon: its ray never meets
    the picture, so there is nothing to show there (and no depth to march). `times`: the
    camera's time at each frame (s)."""
    w, h = request.width, request.height
    corners = np.array([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [w, h, 1.0], [0.0, h, 1.0]])
    for frame, time_s in zip(frames, times):
        rays = corners @ np.linalg.inv(frame.K()).T @ frame.R()  # world directions
        heading = rays[:, 2] / np.linalg.norm(rays, axis=1)
        if heading.min() > HORIZON_MIN:
            continue
        keys = [k.t for k in request.camera.keyframes]
        nearest = int(np.argmin([abs(t - time_s) for t in keys]))
        raise InvalidRequestError(
            f"invalid request: camera.keyframes.{nearest}: at t={time_s:.2f} s the view looks past the "
            f"picture's horizon (a corner of the frame sees no picture): turn less (pan, tilt) or zoom in")


def move_points(request: RenderRequest, trajectory: CameraTrajectory) -> np.ndarray:
    """The path a job's move is about, image px (N, 2): the drawn path, or for a typed camera
    without one the path its view centre takes (none for subjects alone) (what the fidelity picture draws, and where
    post effects find the move's centre and end)."""
    if request.path is not None:
        return request.path.image_points(trajectory.image_width, trajectory.image_height)
    if request.camera is None:  # subjects alone: the camera holds still, no move to draw
        return np.empty((0, 2))
    return np.array([f.center for f in trajectory.frames], dtype=np.float64)


def plan_trajectory(
    request: RenderRequest, image_width: int, image_height: int, *, depth_parallax: float | None = None
) -> CameraTrajectory:
    """One camera per output frame (frame i at time i / fps) for `request` on an image of
    the given size. Deterministic for a given request (shake uses request.seed).

    depth_parallax: the renderer's parallax when it has a depth map (its `depth_parallax`),
    None when it has none; views are kept inside the image at every depth the renderer may
    show (see `depth_range`), and `auto` may pick parallax only with one."""
    W, H, out_w, out_h = int(image_width), int(image_height), request.width, request.height
    if request.camera is not None:
        return _plan_typed(request, W, H, depth_parallax)
    xy = request.path.image_points(W, H)
    path = clean_path(xy)
    if not request.allow_borders:
        _check_on_photo(xy, W, H)
    shape = shape_of(path)
    effect = resolve_effect(request.effect, shape, W, H, has_depth=depth_parallax is not None)

    sc = _scene(W, H, out_w, out_h, effect, depth_parallax)

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
    frames, clamped, notes, drawn_offset = _finish(rig, sc, request)
    if effect == "parallax" and depth_parallax is None:
        notes.append(PSEUDO_DEPTH_NOTE)
    subject = {
        "dolly_zoom": shape.end, "zoom_in": shape.end, "crash_zoom": shape.end, "orbit": shape.centroid,
        "spiral": shape.spiral_center, "pull_back": shape.start, "earth_zoom_out": shape.start,
        "parallax": tuple(path.at(0.5)),
    }.get(effect)  # fmt: skip
    return CameraTrajectory(
        effect=effect, image_width=W, image_height=H, width=out_w, height=out_h, fps=request.fps,
        base_distance=sc.D, frames=frames, clamped_frames=clamped, notes=notes,
        drawn_offset_pct=drawn_offset,
        path_shape=shape.kind, subject=None if subject is None else [float(subject[0]), float(subject[1])],
    )  # fmt: skip
