"""Issue 22's promises on inputs other than the bundled ones: a sweep, printed as tables.

1. check: the path check on depth clips (d2v.fidelity, located in 3D). Photos (scikit-image's
   astronaut, chelsea, coffee, rocket, camera (greyscale), examples/hubble.jpg, the motorcycle
   with its measured depth), depth maps (measured; a smooth ramp; a ramp with a near object;
   a two-level layered scene; flat), stored as 8- or 16-bit PNG and read back as the CLI reads
   them, the three depth effects, paths of several directions and lengths, output sizes and
   frame counts. For each clip: the verdict, frames located and, for orbits, the measured arc
   against the planned one. Also clips whose last frame cannot be located (a grey frame,
   another photo): these must be `unmeasured`, never `followed`.
2. camera: a typed camera on a two-plane scene: each layer's slide, measured on the rendered
   frames, against what geometry predicts (trucks, pedestals, pans, tilts, rolls, zooms,
   dollies), and bad camera JSON through the CLI (exit 2, one line, naming the field).
3. stability: a revealed band's change between consecutive frames against the background's
   beside it, on other photos and depth maps.

Frames are rendered by the camera backend as a job renders them (only the sampled ones: the
check reads no others) and checked as a job checks them.

    PYTHONPATH=. python bench/depth_general.py [check|camera|stability ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from bench.depth_check_bench import motorcycle
from d2v.camera import to_opencv
from d2v.fidelity import measure_fidelity, sample_indices
from d2v.models import parse_request
from d2v.render import CameraRenderer, load_depth_map
from d2v.trajectory import plan_trajectory

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble", "motorcycle")


def photo_of(name: str) -> np.ndarray:
    if name == "motorcycle":
        return motorcycle()[0]
    if name == "hubble":
        return cv2.cvtColor(cv2.imread(str(ROOT / "examples/hubble.jpg")), cv2.COLOR_BGR2RGB)
    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(np.dstack([img] * 3) if img.ndim == 2 else img[:, :, :3])


def depth_of(kind: str, photo_name: str, w: int, h: int) -> np.ndarray:
    """A depth map in [0, 1], brighter = nearer, at the photo's size."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "measured":
        return motorcycle()[1]
    if kind == "ramp":  # a floor: near at the bottom, far at the top
        return yy / (h - 1)
    if kind == "ramp_obj":  # the floor and a near object standing on it
        d = 0.6 * yy / (h - 1)
        inside = ((xx - 0.55 * w) / (0.18 * w)) ** 2 + ((yy - 0.55 * h) / (0.25 * h)) ** 2 <= 1
        return np.where(inside, np.float32(1.0), d)
    if kind == "layered":  # two levels: a disc in front of a far plane
        inside = np.hypot(xx - w / 2, yy - h / 2) <= 0.3 * min(w, h)
        return inside.astype(np.float32)
    if kind == "flat":
        return np.full((h, w), 0.5, np.float32)
    rng = np.random.default_rng(7)
    if kind == "noise":  # what a random-weight depth model gives
        return rng.random((h, w)).astype(np.float32)
    if kind == "blobs":  # smooth hills and dips at a few scales, as a poor estimate's
        d = sum(cv2.resize(rng.random((max(2, h // o), max(2, w // o))).astype(np.float32), (w, h),
                           interpolation=cv2.INTER_CUBIC) for o in (16, 64, 128))
        return (d - d.min()) / (d.max() - d.min())
    if kind == "half_res":  # given at another size (and aspect) than the photo: the reader resizes it
        return cv2.resize(depth_of("ramp_obj", photo_name, w, h), (w // 2, h // 3), interpolation=cv2.INTER_AREA)
    raise ValueError(kind)


def as_png(depth: np.ndarray, bits: int) -> bytes:
    top = 255 if bits == 8 else 65535
    arr = np.round(np.clip(depth, 0, 1) * top).astype(np.uint8 if bits == 8 else np.uint16)
    return cv2.imencode(".png", arr)[1].tobytes()


def stroke(kind: str, w: int, h: int) -> list[dict]:
    """A drawn path on a w x h photo."""
    line = {"right": ((0.3, 0.5), (0.7, 0.5)), "left": ((0.7, 0.5), (0.3, 0.5)), "up": ((0.5, 0.7), (0.5, 0.3)),
            "diagonal": ((0.3, 0.7), (0.7, 0.3)), "short": ((0.45, 0.5), (0.55, 0.5)),
            "long": ((0.1, 0.5), (0.9, 0.5)), "toward": ((0.3, 0.5), (0.5, 0.5))}
    if kind in line:
        (x0, y0), (x1, y1) = line[kind]
        return [{"x": (x0 + (x1 - x0) * t) * w, "y": (y0 + (y1 - y0) * t) * h} for t in np.linspace(0, 1, 12)]
    sign = 1 if kind == "cw" else -1  # image y down: increasing angle runs clockwise on screen
    return [{"x": w / 2 + 0.25 * w * math.cos(a), "y": h / 2 + sign * 0.25 * h * math.sin(a)}
            for a in np.linspace(0, 1.9 * math.pi, 40)]


@dataclass
class Case:
    photo: str
    depth: str
    effect: str
    path: str
    size: tuple[int, int] = (1024, 576)
    frames: int = 24
    bits: int = 16
    last: str = "rendered"  # or "grey", "other": the last frame replaced; "reversed": the video went the other way
    mp4: bool = False  # checked on the frames of the encoded MP4, as `d2v check` reads them

    def label(self) -> list[str]:
        return [self.photo, f"{self.depth}/{self.bits}", self.effect, self.path, f"{self.size[0]}x{self.size[1]}",
                str(self.frames), self.last + (" (mp4)" if self.mp4 else "")]


_cache: dict = {}


def run_check(case: Case) -> dict:
    key = (case.photo, case.depth, case.bits)
    if key not in _cache:
        photo = photo_of(case.photo)
        h, w = photo.shape[:2]
        given = depth_of(case.depth, case.photo, w, h)
        depth = load_depth_map(as_png(given, case.bits), w, h)
        _cache[key] = (photo, depth, CameraRenderer(photo, depth))
    photo, depth, renderer = _cache[key]
    h, w = photo.shape[:2]
    fps = 24
    req = parse_request({"path": stroke(case.path, w, h), "effect": case.effect, "duration_s": case.frames / fps,
                         "fps": fps, "width": case.size[0], "height": case.size[1]})
    trajectory = plan_trajectory(req, w, h, depth_parallax=renderer.depth_parallax)
    picked = sample_indices(len(trajectory))
    rendered = trajectory
    if case.last == "reversed":  # the video is of the path drawn the other way
        back = parse_request({**req.model_dump(mode="json", exclude_none=True),
                              "path": stroke(case.path, w, h)[::-1]})
        rendered = plan_trajectory(back, w, h, depth_parallax=renderer.depth_parallax)
    if case.mp4:
        from d2v.encode import decode_frames, encode_mp4

        with tempfile.TemporaryDirectory() as tmp:
            encode_mp4(renderer.render(rendered), Path(tmp) / "clip.mp4", fps, crf=23)
            frames, _, _ = decode_frames(Path(tmp) / "clip.mp4", picked)
    else:
        frames = dict(zip(picked, renderer.render(rendered, indices=picked)))
    if case.last == "grey":
        frames[picked[-1]] = np.full_like(frames[picked[-1]], 128)
    elif case.last == "other":
        other = photo_of("coffee" if case.photo != "coffee" else "chelsea")
        frames[picked[-1]] = cv2.resize(other, case.size, interpolation=cv2.INTER_AREA)
    t0 = time.perf_counter()
    report = measure_fidelity(frames, photo, trajectory, n_frames=len(trajectory), depth=depth)
    seconds = time.perf_counter() - t0
    arc = None
    if case.effect == "orbit" and report.frames and report.frames[0].located and report.frames[-1].located \
            and report.frames[0].yaw_deg is not None:
        a, b = report.frames[0], report.frames[-1]
        arc = (b.yaw_deg - a.yaw_deg, b.planned_yaw_deg - a.planned_yaw_deg)
    methods = sorted({f.method for f in report.frames if f.located})
    return {"verdict": report.verdict, "located": f"{report.located}/{report.sampled}", "arc": arc,
            "methods": ",".join(methods), "reason": report.reason or "", "seconds": seconds, "report": report}


def check_cases(quick: bool) -> list[Case]:
    cases = []
    # Every photo with a ramp + near object, the three effects (16-bit PNG).
    for photo in PHOTOS:
        depth = "measured" if photo == "motorcycle" else "ramp_obj"
        for effect, path in (("parallax", "right"), ("orbit", "cw"), ("dolly_zoom", "toward")):
            cases.append(Case(photo, depth, effect, path))
    # Other depth maps and 8-bit storage.
    for photo in ("astronaut", "coffee", "hubble"):
        for depth in ("ramp", "layered", "flat"):
            cases.append(Case(photo, depth, "parallax", "right", bits=8))
        cases.append(Case(photo, "layered", "orbit", "ccw", bits=8))
    # Depth maps as they come from elsewhere: noise, poor estimates, another size; frames from an MP4.
    for photo in ("chelsea", "rocket"):
        for depth in ("noise", "blobs", "half_res"):
            cases.append(Case(photo, depth, "parallax", "right"))
            cases.append(Case(photo, depth, "orbit", "cw"))
    for photo, depth in (("motorcycle", "measured"), ("astronaut", "ramp_obj"), ("hubble", "blobs")):
        for effect, path in (("parallax", "right"), ("orbit", "ccw"), ("dolly_zoom", "toward")):
            cases.append(Case(photo, depth, effect, path, mp4=True))
    # Directions and lengths; orbit both ways.
    for photo, depth in (("motorcycle", "measured"), ("chelsea", "ramp_obj")):
        for path in ("left", "up", "diagonal", "short", "long"):
            cases.append(Case(photo, depth, "parallax", path))
        cases.append(Case(photo, depth, "orbit", "ccw"))
    # Sizes and frame counts.
    for size in ((576, 1024), (320, 240), (322, 182), (256, 144), (160, 90)):
        cases.append(Case("motorcycle", "measured", "parallax", "right", size=size))
        cases.append(Case("motorcycle", "measured", "orbit", "cw", size=size))
        cases.append(Case("rocket", "ramp_obj", "parallax", "right", size=size))
    for frames in (48, 96):
        cases.append(Case("motorcycle", "measured", "orbit", "cw", frames=frames))
        cases.append(Case("coffee", "ramp_obj", "parallax", "diagonal", frames=frames))
    # The last frame not of the clip.
    for photo, depth in (("motorcycle", "measured"), ("astronaut", "ramp_obj")):
        for last in ("grey", "other"):
            cases.append(Case(photo, depth, "parallax", "right", last=last))
            cases.append(Case(photo, depth, "orbit", "cw", last=last))
    # A video of the path drawn the other way: a miss, whatever the depth.
    for photo, depth in (("motorcycle", "measured"), ("astronaut", "ramp_obj"), ("chelsea", "blobs"),
                         ("rocket", "noise"), ("coffee", "layered")):
        for effect, path in (("parallax", "right"), ("orbit", "cw"), ("parallax", "up")):
            cases.append(Case(photo, depth, effect, path, last="reversed"))
    if quick:
        cases = cases[::3]
    return cases


def must_hold(case: Case, r: dict) -> str:
    """'' or what issue 22 promises and this clip breaks."""
    if case.last == "reversed":
        return "" if r["verdict"] == "missed" else f"a video the other way {r['verdict']}"
    if case.last != "rendered":
        return "" if r["verdict"] == "unmeasured" and "last frame" in r["reason"] else "last frame not unmeasured"
    if case.depth == "noise":  # no reasonable depth: unmeasured is fair, a miss is not (the render is faithful)
        return "" if r["verdict"] in ("followed", "unmeasured") else r["verdict"]
    if r["verdict"] != "followed":
        return r["verdict"]
    if r["arc"] is not None and abs(r["arc"][0] - r["arc"][1]) > 2.0:
        return "arc off by more than 2 deg"
    return ""


def sweep_check(quick: bool) -> int:
    print("| photo | depth/bits | effect | path | size | frames | last | verdict | located | arc meas/plan (deg) "
          "| check (s) | fails |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for case in check_cases(quick):
        r = run_check(case)
        fail = must_hold(case, r)
        failures += bool(fail)
        arc = "-" if r["arc"] is None else f"{r['arc'][0]:+.2f} / {r['arc'][1]:+.2f}"
        print("| " + " | ".join(case.label() + [r["verdict"], r["located"], arc, f"{r['seconds']:.1f}",
                                               fail + (f": {r['reason'][:120]}" if fail else "")]) + " |",
              flush=True)
    print(f"\n{failures} clip(s) break a promise")
    return failures


# -- 2. the typed camera -------------------------------------------------------------------

CW, CH = 512, 288  # the two-plane scene, rendered at its own size
BOX = (200, 100, 330, 200)  # the near layer (depth 1): x0, y0, x1, y1


def textured(w: int, h: int, seed: int) -> np.ndarray:
    """Texture at every scale (as tests/conftest.py's textured_image)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for octave, weight in ((4, 0.35), (16, 0.3), (64, 0.2), (256, 0.15)):
        small = rng.random((max(2, h // octave), max(2, w // octave), 3)).astype(np.float32)
        img += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def two_planes() -> tuple[np.ndarray, np.ndarray]:
    photo = textured(CW, CH, 3)
    x0, y0, x1, y1 = BOX
    photo[y0:y1, x0:x1] = textured(CW, CH, 4)[y0:y1, x0:x1]
    depth = np.zeros((CH, CW), np.float32)
    depth[y0:y1, x0:x1] = 1.0
    return photo, depth


def docs_camera(key: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, R world -> camera, centre) of a keyframe's axes as docs/camera.md words them, built
    here independently of d2v.typed_camera: pan turns the camera right, tilt up, roll
    clockwise; truck, pedestal and dolly move along its panned and tilted (not rolled) right,
    up and forward axes, in view
    widths (the reference camera's distance D = the cover crop's width)."""
    a, b, r = (math.radians(key.get(k, 0.0)) for k in ("pan", "tilt", "roll"))
    forward = np.array([math.sin(a) * math.cos(b), -math.sin(b), math.cos(a) * math.cos(b)])
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    D = float(CW)
    centre = np.array([CW / 2, CH / 2, -D]) + D * (key.get("truck", 0.0) * right - key.get("pedestal", 0.0) * down
                                                   + key.get("dolly", 0.0) * forward)
    right, down = math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down
    f = CW * key.get("zoom", 1.0)
    K = np.array([[f, 0, CW / 2], [0, f, CH / 2], [0, 0, 1.0]])
    return K, np.stack([right, down, forward]), centre


def layer_homography(key: dict, s: float) -> np.ndarray:
    """Photo px -> frame px of the layer at relative depth s (its points P = C0 + s (Q - C0))."""
    K, R, C = docs_camera(key)
    C0 = np.array([CW / 2, CH / 2, -float(CW)])
    A = np.array([[s, 0, (1 - s) * C0[0]], [0, s, (1 - s) * C0[1]], [0, 0, (1 - s) * C0[2]]])
    H = K @ R @ (A - np.outer(C, [0, 0, 1.0]))
    return H / H[2, 2]


def measured_error(first: np.ndarray, last: np.ndarray, predicted: np.ndarray, mask: np.ndarray
                   ) -> tuple[float, float]:
    """How far (px) the layer in `mask` (first-frame pixels) lands in the last frame from where
    the predicted map (first -> last frame px) puts it: the first frame is warped by the
    prediction, and each 32 px patch wholly inside the layer is matched to the last frame by
    phase correlation (to a few hundredths of a pixel): (median, worst) over the patches."""
    warped = cv2.warpPerspective(first, to_opencv(predicted), (CW, CH), flags=cv2.INTER_CUBIC)
    inside = cv2.warpPerspective(mask.astype(np.uint8), to_opencv(predicted), (CW, CH), flags=cv2.INTER_NEAREST) > 0
    a, b = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in (warped, last))
    side = 32
    window = cv2.createHanningWindow((side, side), cv2.CV_32F)
    shifts = []
    for y in range(8, CH - side - 8, side // 2):
        for x in range(8, CW - side - 8, side // 2):
            if not inside[y:y + side, x:x + side].all():
                continue
            (dx, dy), response = cv2.phaseCorrelate(a[y:y + side, x:x + side], b[y:y + side, x:x + side], window)
            if response > 0.3:
                shifts.append(math.hypot(dx, dy))
    return (float(np.median(shifts)), max(shifts)) if shifts else (math.nan, math.nan)


def _polygon(H: np.ndarray, corners: np.ndarray, grow: float) -> np.ndarray:
    """Frame pixels inside the photo polygon `corners` seen through H, grown by `grow` frame px."""
    pts = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), H).reshape(-1, 2)
    mask = np.zeros((CH, CW), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    if grow:
        k = np.ones((2 * abs(round(grow)) + 1,) * 2, np.uint8)
        mask = cv2.dilate(mask, k) if grow > 0 else cv2.erode(mask, k)
    return mask.astype(bool)


CAMERA_MOVES = [  # (first keyframe, last keyframe)
    ({"zoom": 1.5}, {"zoom": 1.5, "truck": 0.08}), ({"zoom": 1.5}, {"zoom": 1.5, "truck": -0.05}),
    ({"zoom": 2.0}, {"zoom": 2.0, "truck": 0.15}), ({"zoom": 1.5}, {"zoom": 1.5, "pedestal": 0.06}),
    ({"zoom": 1.5}, {"zoom": 1.5, "pedestal": -0.04}), ({"zoom": 1.5}, {"zoom": 1.5, "pan": 6}),
    ({"zoom": 1.5}, {"zoom": 1.5, "pan": -10}), ({"zoom": 1.5}, {"zoom": 1.5, "tilt": 5}),
    ({"zoom": 1.5}, {"zoom": 1.5, "tilt": -8}), ({"zoom": 1.5}, {"zoom": 1.5, "roll": 10}),
    ({"zoom": 1.5}, {"zoom": 1.5, "roll": -30}), ({"zoom": 1.0}, {"zoom": 1.6}), ({"zoom": 2.0}, {"zoom": 1.3}),
    ({"zoom": 1.5}, {"zoom": 1.5, "dolly": 0.2}), ({"zoom": 1.5}, {"zoom": 1.5, "dolly": -0.3}),
    ({"zoom": 1.8}, {"zoom": 1.8, "truck": 0.05, "pedestal": 0.03, "pan": 3, "roll": 5}),
]


def layer_errors(k0: dict, k1: dict, renderer: CameraRenderer | None = None, fps: int = 6
                 ) -> tuple[tuple[float, float], tuple[float, float], object]:
    """A typed camera from keyframe k0 (t = 0) to k1 (t = 1 s) on the two-plane scene: how far
    the far and the near layer land in the last frame from where docs/camera.md's geometry
    puts them, (median, worst) px each (`measured_error`), and the path check's report."""
    from d2v.trajectory import DEFAULT_PARALLAX

    photo, depth = two_planes()
    renderer = renderer or CameraRenderer(photo, depth)
    s_near = 1.0 - DEFAULT_PARALLAX
    x0, y0, x1, y1 = BOX
    req = parse_request({"camera": [{"t": 0, **k0}, {"t": 1, **k1}], "width": CW, "height": CH,
                         "duration_s": 1, "fps": fps, "allow_borders": True})
    trajectory = plan_trajectory(req, CW, CH, depth_parallax=renderer.depth_parallax)
    n = len(trajectory)
    frames = dict(zip(range(n), renderer.render(trajectory)))
    first, last = frames[0], frames[n - 1]
    report = measure_fidelity(frames, photo, trajectory, depth=depth)
    errors = []
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    near_first = _polygon(layer_homography(k0, s_near), box, -6)  # the near layer in the first frame
    near_last = _polygon(layer_homography(k1, s_near), box, 0)  # and in the last
    for s, region in ((1.0, "far"), (s_near, "near")):
        H = layer_homography(k1, s) @ np.linalg.inv(layer_homography(k0, s))
        if region == "near":
            mask = near_first
        else:  # off the near layer in the first frame, and not behind it in the last
            mask = ~_polygon(layer_homography(k0, s_near), box, 8)
            mask &= cv2.warpPerspective(near_last.astype(np.uint8), to_opencv(np.linalg.inv(H)), (CW, CH),
                                        flags=cv2.INTER_NEAREST, borderValue=1) == 0
            mask = cv2.erode(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        yy, xx = np.mgrid[0:CH, 0:CW]
        to = cv2.perspectiveTransform(np.dstack([xx, yy]).reshape(-1, 1, 2).astype(np.float64) + 0.5,
                                      H).reshape(CH, CW, 2)
        mask &= (to[..., 0] > 8) & (to[..., 0] < CW - 8) & (to[..., 1] > 8) & (to[..., 1] < CH - 8)
        errors.append(measured_error(first, last, H, mask) if mask.sum() > 400 else (math.nan, math.nan))
    return errors[0], errors[1], report


def sweep_camera(quick: bool) -> int:
    photo, depth = two_planes()
    renderer = CameraRenderer(photo, depth)
    print("| first keyframe | last keyframe | far layer off, median (worst) px | near layer off, median (worst) px "
          "| verdict | fails |")
    print("|---|---|---|---|---|---|")
    failures = 0
    for k0, k1 in CAMERA_MOVES:
        far, near, report = layer_errors(k0, k1, renderer)
        fail = "layer off by half a pixel or more" if not max(far[0], near[0]) < 0.5 else ""
        fail += "" if report.verdict == "followed" else f" check {report.verdict}: {report.reason}"
        failures += bool(fail)
        print(f"| {json.dumps(k0)} | {json.dumps(k1)} | {far[0]:.2f} ({far[1]:.2f}) | {near[0]:.2f} ({near[1]:.2f}) "
              f"| {report.verdict} | {fail} |", flush=True)
    print(f"\n{failures} move(s) break a promise")
    return failures + bad_cameras()


BAD_CAMERAS = [  # (camera, words the message must hold)
    ([{"t": "soon"}], "camera.keyframes.0.t"),
    ([{"t": 0, "pan": "left"}], "camera.keyframes.0.pan"),
    ([{"t": 0, "pan": [1, 2]}], "camera.keyframes.0.pan"),
    ([{"t": 0, "truck": None}], "camera.keyframes.0.truck"),
    ([{"t": 0, "zoom": True}], "camera.keyframes.0.zoom"),
    ([{"t": 0, "swoosh": 1}], "camera.keyframes.0.swoosh"),
    ([{"t": 0, "Pan": 1}], "camera.keyframes.0.Pan"),
    ([{"t": 0, "pan": float("nan")}], "camera.keyframes.0.pan"),
    ([{"t": 0, "zoom": float("inf")}], "camera.keyframes.0.zoom"),
    ([{"t": float("nan")}], "camera.keyframes.0.t"),
    ([{"t": -1}], "camera.keyframes.0.t"),
    ([{"t": 1}, {"t": 0.5}], "camera.keyframes"),
    ([{"t": 1}, {"t": 1}], "camera.keyframes"),
    ([], "camera.keyframes"),
    ({"keyframes": []}, "camera.keyframes"),
    ({}, "camera.keyframes"),
    ({"keyframes": [{"t": 0}], "easing": "bouncy"}, "camera.easing"),
    ({"keyframes": [{"t": 0}], "speed": 2}, "camera.speed"),
    ({"keyframes": "zoom"}, "camera.keyframes"),
    ("truck right", "camera"),
    (7, "camera"),
    ([{"t": 0, "pan": 1e308}], "camera.keyframes.0.pan"),
    ([{"t": 0, "truck": 1e9}], "camera.keyframes.0.truck"),
    ([{"t": 0, "dolly": 1}], "camera.keyframes.0.dolly"),
    ([{"t": 0, "roll": -1e6}], "camera.keyframes.0.roll"),
    ([{"t": 1e9}], "camera.keyframes.0.t"),
    ([{"t": i * 0.1} for i in range(101)], "camera.keyframes"),
    ([{"t": 0, "pose": {"center": [256, 144, -512], "rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]],
                        "fov_deg": 53}}], "camera.keyframes.0.pose"),
    ([{"t": 0, "pose": {"center": [256, 144, -512], "rotation": [[1, 0, 0], [0, -1, 0], [0, 0, 1]],
                        "fov_deg": 53}}], "camera.keyframes.0.pose"),
    ([{"t": 0, "pose": {"center": [256, 144, -512], "rotation": [[1, 0], [0, 1]], "fov_deg": 53}}],
     "camera.keyframes.0.pose.rotation"),
    ([{"t": 0, "pose": {"center": [256, 144, float("nan")], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                        "fov_deg": 53}}], "camera.keyframes.0.pose"),
    ([{"t": 0, "pose": {"center": [256, 144, -512], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                        "fov_deg": 200}}], "camera.keyframes.0.pose.fov_deg"),
    ([{"t": 0, "pose": {"center": [256, 144, 512], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                        "fov_deg": 53}}], "camera.keyframes.0.pose"),
    ([{"t": 0, "pose": {"center": [256, 144, -512], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}}],
     "camera.keyframes.0.pose.fov_deg"),
    ([{"t": 0, "zoom": 2, "pose": {"center": [256, 144, -512], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                   "fov_deg": 53}}], "camera.keyframes.0"),
    ([{"t": 0, "pose": "front"}], "camera.keyframes.0.pose"),
]

# Valid but extreme: planned and rendered (two frames), never a traceback: a named error at most.
EXTREME_CAMERAS = [
    [{"t": 0, "zoom": 20}, {"t": 1, "zoom": 0.25}],
    [{"t": 0}, {"t": 1, "roll": 720}],
    [{"t": 0}, {"t": 1, "pan": 60, "tilt": 60}],
    [{"t": 0}, {"t": 1, "pan": -60, "tilt": -60, "dolly": 0.9}],
    [{"t": 0}, {"t": 1, "dolly": -4, "truck": 2, "pedestal": -2}],
    [{"t": 0, "dolly": 0.9}, {"t": 60, "dolly": -4}],
    [{"t": 0, "pose": {"center": [256, 144, -1e-6], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fov_deg": 169}}],
    [{"t": 0, "pose": {"center": [1e7, -1e7, -1e7], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fov_deg": 1.5}}],
    [{"t": 0, "pose": {"center": [256, 144, -512], "rotation": [[1, 0, 0], [0, 0.1, -0.995], [0, 0.995, 0.1]],
                       "fov_deg": 53}}],
]


def bad_cameras() -> int:
    """Bad camera JSON: a named error naming the field (HTTP: parse_request is the ingress's
    parser, its InvalidRequestError a 422), and through the CLI exit 2 with one line."""
    from d2v.errors import D2VError

    failures = 0
    print("\n| bad camera | parse_request | CLI exit | fails |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.png"
        cv2.imwrite(str(photo), textured(128, 72, 1))
        for camera, words in BAD_CAMERAS:
            try:
                parse_request({"camera": camera, "duration_s": 1, "fps": 8, "width": 256, "height": 144})
                got = "accepted"
            except D2VError as e:
                got = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001 - the very thing this looks for
                got = f"TRACEBACK {type(e).__name__}: {e}"
            text = json.dumps(camera, allow_nan=True)
            (Path(tmp) / "camera.json").write_text(text)
            run = subprocess.run([sys.executable, "-m", "d2v.cli", "trajectory", str(photo), "--camera",
                                  str(Path(tmp) / "camera.json")], capture_output=True, text=True, cwd=tmp)
            err = run.stderr.strip()
            fail = []
            if not got.startswith("InvalidRequestError") or words not in got:
                fail.append(f"parse: {got[:160]}")
            if run.returncode != 2 or len(err.splitlines()) != 1 or "Traceback" in err:
                fail.append(f"cli {run.returncode}: {err[-160:]}")
            failures += bool(fail)
            print(f"| `{text[:70]}` | {got[:110]} | {run.returncode} | {'; '.join(fail)} |", flush=True)
        print("\n| extreme camera | outcome | fails |\n|---|---|---|")
        for camera in EXTREME_CAMERAS:
            fail = ""
            try:
                req = parse_request({"camera": camera, "duration_s": 1, "fps": 2, "width": 128, "height": 72,
                                     "allow_borders": True})
                img = textured(128, 72, 1)
                tr = plan_trajectory(req, 128, 72, depth_parallax=0.35)
                frames = list(CameraRenderer(img, np.linspace(0, 1, 72 * 128, dtype=np.float32).reshape(72, 128))
                              .render(tr))
                finite = all(np.all(np.isfinite(np.asarray(f.rotation))) and math.isfinite(f.fx) for f in tr.frames)
                outcome = f"{len(frames)} frames, cameras finite: {finite}"
                fail = "" if finite else "non-finite camera"
            except D2VError as e:
                outcome = f"{type(e).__name__}: {e}"
            except Exception as e:  # noqa: BLE001
                outcome = f"TRACEBACK {type(e).__name__}: {e}"
                fail = "traceback"
            failures += bool(fail)
            print(f"| `{json.dumps(camera)[:90]}` | {outcome[:140]} | {fail} |", flush=True)
    return failures


# -- 3. temporal stability -------------------------------------------------------------------


def _shifted(img: np.ndarray, dx: float) -> np.ndarray:
    """Output pixel x shows img at x + dx (bilinear; outside: reflected)."""
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def band_stability(photo_name: str, shape: str, far: float) -> tuple[float, float, int]:
    """A photo (cover-cropped to 512x288) whose `shape` (an ellipse or a box in the middle) is
    a near object (depth 1) in front of the rest (depth `far`), trucked right at a constant
    speed (a typed camera, zoom 1.5). Between consecutive frames, the background's step taken
    out: the worst mean change of the revealed band (the pixels `render_validity` marks as
    invented in both frames) and of the visible background beside it (within 16 px of the
    band, off the object), and the band's size in the last pair."""
    from d2v.trajectory import DEFAULT_PARALLAX

    img = photo_of(photo_name)
    h, w = img.shape[:2]
    scale = max(CW / w, CH / h)
    img = cv2.resize(img, (math.ceil(w * scale), math.ceil(h * scale)), interpolation=cv2.INTER_AREA)
    y0, x0 = (img.shape[0] - CH) // 2, (img.shape[1] - CW) // 2
    photo = np.ascontiguousarray(img[y0:y0 + CH, x0:x0 + CW])
    near = np.zeros((CH, CW), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(near, (CW // 2, CH // 2), (70, 95), 15, 0, 360, 1, -1)
    else:
        near[80:220, 190:300] = 1
    depth = np.where(near > 0, np.float32(1.0), np.float32(far))
    renderer = CameraRenderer(photo, depth)
    req = parse_request({"camera": {"keyframes": [{"t": 0, "zoom": 1.5}, {"t": 1, "zoom": 1.5, "truck": 0.1}],
                                    "easing": "linear"}, "width": CW, "height": CH, "duration_s": 1, "fps": 8})
    trajectory = plan_trajectory(req, CW, CH, depth_parallax=renderer.depth_parallax)
    n = len(trajectory)
    frames = list(renderer.render(trajectory))
    valid = list(renderer.render_validity(trajectory))
    depth_rgb = np.dstack([(depth * 255).astype(np.uint8)] * 3)
    objects = [f[..., 0] > 255 * (far + 1) / 2 for f in CameraRenderer(depth_rgb, depth).render(trajectory)]
    step = 1.5 * 0.1 * CW / (n - 1) / (1 - far * DEFAULT_PARALLAX)  # the background's move a frame, px
    band_change, beside_change, size = [], [], 0
    k3 = np.ones((3, 3), np.uint8)
    for i in range(1, n - 1):
        a, b = frames[i].astype(np.float64), _shifted(frames[i + 1], -step).astype(np.float64)
        invented = (~valid[i]) & (_shifted((~valid[i + 1]).astype(np.uint8), -step) > 0)
        off_object = ~cv2.dilate((objects[i] | (_shifted(objects[i + 1].astype(np.uint8), -step) > 0))
                                 .astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        band = cv2.erode(invented.astype(np.uint8), k3).astype(bool) & off_object
        keep = np.arange(CW)[None, :] < CW - 2 * step - 30
        band &= keep
        beside = cv2.dilate(band.astype(np.uint8), np.ones((33, 33), np.uint8)).astype(bool)
        beside &= valid[i] & (_shifted(valid[i + 1].astype(np.uint8), -step) > 0) & off_object & keep
        beside = cv2.erode(beside.astype(np.uint8), k3).astype(bool)
        if band.sum() < 50 or beside.sum() < 200:
            continue
        change = np.abs(b - a).mean(axis=2)
        band_change.append(float(change[band].mean()))
        beside_change.append(float(change[beside].mean()))
        size = int(band.sum())
    if not band_change:
        return math.nan, math.nan, 0
    return max(band_change), max(beside_change), size


def sweep_stability(quick: bool) -> int:
    print("| photo | near object | background depth | band change (worst pair) | beside it | band px | fails |")
    print("|---|---|---|---|---|---|---|")
    failures = 0
    for photo in ("astronaut", "chelsea", "coffee", "hubble", "rocket", "camera"):
        for shape, far in (("ellipse", 0.0), ("box", 0.4)):
            band, beside, size = band_stability(photo, shape, far)
            fail = "" if band <= 1.1 * beside + 0.5 else "the band flickers more than the background"
            failures += bool(fail)
            print(f"| {photo} | {shape} | {far} | {band:.2f} | {beside:.2f} | {size} | {fail} |", flush=True)
    print(f"\n{failures} scene(s) break a promise")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["check", "camera", "stability"])
    parser.add_argument("--quick", action="store_true", help="every third clip of the check sweep")
    args = parser.parse_args()
    failures = 0
    for part in args.parts:
        print(f"\n## {part}\n", flush=True)
        failures += {"check": sweep_check, "camera": sweep_camera, "stability": sweep_stability}[part](args.quick)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
