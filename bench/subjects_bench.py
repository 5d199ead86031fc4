"""What subject motion costs (issue #26): render, scene build and path check, against the
camera-only render of the same move in the same run.

    python bench/subjects_bench.py [--frames 48] [--size 1024x576]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import skimage.data

from d2v.fidelity import measure_fidelity, sample_indices
from d2v.models import parse_request
from d2v.render import CameraRenderer
from d2v.stages import plan
from d2v.subject_check import measure_with_subjects
from d2v.subjects import SubjectScene

ROCKET = skimage.data.rocket()
BRUSH = {"brush": [{"x": 322, "y": float(y)} for y in range(130, 396, 15)], "radius": 14}
TRACK = [{"x": 322 + 150 * (1 - np.cos(a)) / 2, "y": 262 - 110 * a / np.pi} for a in np.linspace(0, np.pi, 12)]
BOXES = [{"polygon": [{"x": x, "y": y}, {"x": x + 60, "y": y}, {"x": x + 60, "y": y + 60}, {"x": x, "y": y + 60}]}
         for x, y in ((60, 300), (480, 300))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", default="1024x576")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    base = {"path": [{"x": 250, "y": 220}, {"x": 380, "y": 200}], "effect": "pan", "width": w, "height": h,
            "fps": 24, "duration_s": args.frames / 24}
    cases = {"camera only": [], "1 subject": [{"region": BRUSH, "path": TRACK}],
             "3 subjects": [{"region": BRUSH, "path": TRACK}] + [
                 {"region": b, "path": [{"x": b["polygon"][0]["x"] + 30, "y": 330}, {"x": 320, "y": 380}]}
                 for b in BOXES]}
    rows, baseline = [], None
    for name, subjects in cases.items():
        req = parse_request({**base, **({"subjects": subjects} if subjects else {})})
        traj = plan(req, ROCKET.shape[1], ROCKET.shape[0])
        t0 = time.process_time()
        scene = SubjectScene.build(ROCKET, None, req) if subjects else None
        build = time.process_time() - t0
        renderer = scene.renderer() if scene else CameraRenderer(ROCKET)
        t0 = time.process_time()
        frames = list(renderer.render(traj))
        per_frame = (time.process_time() - t0) / len(frames) * 1000
        picked = {i: frames[i] for i in sample_indices(len(frames))}
        t0 = time.process_time()
        if scene:
            report, _ = measure_with_subjects(picked, ROCKET, traj, req, n_frames=len(frames), scene=scene)
        else:
            report = measure_fidelity(picked, ROCKET, traj, n_frames=len(frames))
        check = time.process_time() - t0
        baseline = baseline or per_frame
        rows.append((name, build, per_frame, per_frame / baseline, check, report.verdict))
    print(f"| case | scene build CPU-s | render CPU-ms/frame | x camera only | check CPU-s (16 frames) | verdict |")
    print("|---|---|---|---|---|---|")
    for name, build, pf, ratio, check, verdict in rows:
        print(f"| {name} | {build:.2f} | {pf:.1f} | {ratio:.2f} | {check:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
