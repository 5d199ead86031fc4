"""The path check on depth clips (d2v.fidelity, located in 3D): scikit-image's Middlebury
motorcycle with its measured disparity as the depth map (holes filled with OpenCV's Telea,
edges softened by a bilateral filter, as a depth model would give it), 1024x576, 1 s at
24 fps: parallax, orbit and dolly_zoom rendered by the camera backend and checked.

For each clip: the verdict, frames located, the worst rotation error (RotErr, degrees:
solved against planned orientation), the measured and planned yaw arc, and the seconds the
check took. With pycolmap installed in a separate venv (PEERS_PYTHON, default
/work/peers/.venv/bin/python; never a d2v dependency) the orbit's 24 frames are also
registered by structure from motion (SIFT, exhaustive matching, incremental mapping) as an
independent cross-check of the arc: the rotation between its first and last camera.

    PYTHONPATH=. python bench/depth_check_bench.py [--no-colmap]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from d2v.fidelity import measure_fidelity
from d2v.models import parse_request
from d2v.render import CameraRenderer
from d2v.trajectory import plan_trajectory

PEERS_PYTHON = os.environ.get("PEERS_PYTHON", "/work/peers/.venv/bin/python")

COLMAP_SCRIPT = r"""
import json, sys, pycolmap
from pathlib import Path
images, out = Path(sys.argv[1]), Path(sys.argv[2])
db = out / "database.db"
pycolmap.extract_features(db, images)
pycolmap.match_exhaustive(db)
maps = pycolmap.incremental_mapping(db, images, out)
best = max(maps.values(), key=lambda r: r.num_reg_images())
poses = {}
for image in best.images.values():
    cfw = image.cam_from_world
    cfw = cfw() if callable(cfw) else cfw
    poses[image.name] = cfw.rotation.matrix().tolist()
print(json.dumps({"version": pycolmap.__version__, "poses": poses}))
"""


def motorcycle() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's Middlebury motorcycle with its measured disparity as the depth map, as a
    depth model would give it: holes filled (Telea), edges softened by a bilateral filter
    (tests/test_fidelity.py checks the path on the same)."""
    left, _, disparity = skimage.data.stereo_motorcycle()
    holes = ~np.isfinite(disparity)
    top = float(disparity[~holes].max())
    d = np.clip(np.where(holes, 0.0, disparity) / top * 255, 0, 255).astype(np.uint8)
    d = cv2.inpaint(d, holes.astype(np.uint8), 5, cv2.INPAINT_TELEA).astype(np.float32) / 255
    d = cv2.bilateralFilter(d, 9, 0.1, 5)
    return np.ascontiguousarray(left), (d - d.min()) / (d.max() - d.min())


def angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def colmap_arc(frames: list[np.ndarray]) -> tuple[float, int, float, str] | None:
    """(rotation first -> last camera, frames registered, seconds, pycolmap version), or None."""
    if not Path(PEERS_PYTHON).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for i, f in enumerate(frames):
            cv2.imwrite(str(images / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        t0 = time.perf_counter()
        run = subprocess.run([PEERS_PYTHON, "-c", COLMAP_SCRIPT, str(images), tmp], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if run.returncode != 0:
            print("pycolmap failed:", run.stderr.strip().splitlines()[-1:], file=sys.stderr)
            return None
        result = json.loads(run.stdout.strip().splitlines()[-1])
    poses = {name: np.array(R) for name, R in result["poses"].items()}
    first, last = f"{0:03d}.png", f"{len(frames) - 1:03d}.png"
    if first not in poses or last not in poses:
        return None
    return angle_deg(poses[last] @ poses[first].T), len(poses), seconds, result["version"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-colmap", action="store_true", help="skip the pycolmap cross-check")
    args = parser.parse_args()
    photo, depth = motorcycle()
    h, w = photo.shape[:2]
    loop = [{"x": w / 2 + 0.25 * w * math.cos(a), "y": h / 2 + 0.25 * h * math.sin(a)}
            for a in np.linspace(0, 1.9 * math.pi, 40)]
    strokes = {"parallax": [{"x": 0.3 * w, "y": 0.5 * h}, {"x": 0.7 * w, "y": 0.5 * h}], "orbit": loop,
               "dolly_zoom": [{"x": 0.3 * w, "y": 0.5 * h}, {"x": 0.5 * w, "y": 0.5 * h}]}
    renderer = CameraRenderer(photo, depth)
    print("| effect | verdict | located | worst RotErr (deg) | arc measured / planned (deg) | check (s) |")
    print("|---|---|---|---|---|---|")
    orbit_frames = None
    for effect, stroke in strokes.items():
        req = parse_request({"path": stroke, "effect": effect, "duration_s": 1, "fps": 24, "width": 1024,
                             "height": 576})
        trajectory = plan_trajectory(req, w, h, depth_parallax=renderer.depth_parallax)
        frames = list(renderer.render(trajectory))
        t0 = time.perf_counter()
        report = measure_fidelity(frames, photo, trajectory, depth=depth)
        seconds = time.perf_counter() - t0
        located = [f for f in report.frames if f.located]
        rot = max((f.rotation_deg for f in located if f.rotation_deg is not None), default=float("nan"))
        arc = "-"
        if located and report.frames[0].located and report.frames[-1].located:
            a, b = report.frames[0], report.frames[-1]
            arc = f"{b.yaw_deg - a.yaw_deg:+.2f} / {b.planned_yaw_deg - a.planned_yaw_deg:+.2f}"
        print(f"| {effect} | {report.verdict} | {report.located}/{report.sampled} | {rot:.2f} | {arc} | {seconds:.1f} |")
        if effect == "orbit":
            orbit_frames = (frames, trajectory)
    if not args.no_colmap and orbit_frames is not None:
        frames, trajectory = orbit_frames
        planned = angle_deg(trajectory.frames[-1].R() @ trajectory.frames[0].R().T)
        got = colmap_arc(frames)
        if got is None:
            print("\npycolmap cross-check: not run (no peers venv, or it registered too little)")
        else:
            arc, registered, seconds, version = got
            print(f"\npycolmap {version} (SIFT, exhaustive, incremental mapping): orbit registered {registered}/"
                  f"{len(frames)} frames in {seconds:.0f} s; rotation first -> last camera {arc:.2f} deg "
                  f"(planned {planned:.2f})")


if __name__ == "__main__":
    main()
