"""How well the path check (d2v.fidelity) measures: faithful camera renders of every effect
on scikit-image's photos (what a faithful video measures as: the noise floor), and what it
says of wrong videos (the path reversed, frames shuffled, another path, another photo).

    python bench/fidelity_bench.py [--photos astronaut,coffee,rocket,camera] [--size 1024x576]

Prints two tables. Faithful: the largest errors over every sampled frame (24 per clip),
against the tolerances in d2v/fidelity.py. Wrong: the verdict for each kind of wrong video.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from d2v.fidelity import PhotoIndex, measure_fidelity, tolerance_for  # noqa: E402
from d2v.models import EFFECTS, parse_request  # noqa: E402
from d2v.render import CameraRenderer  # noqa: E402
from d2v.trajectory import plan_trajectory  # noqa: E402


def strokes() -> dict[str, list[tuple[float, float]]]:
    """A stroke per effect, as fractions of the photo (any photo)."""
    def line(a, b, n=12):
        return [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n + 1)]

    loop = [(0.5 + 0.22 * math.cos(2 * math.pi * i / 40), 0.5 + 0.22 * math.sin(2 * math.pi * i / 40))
            for i in range(41)]
    spiral = [(0.55 + 0.3 * (1 - 0.85 * i / 60) * math.cos(3 * math.pi * i / 60),
               0.5 + 0.3 * (1 - 0.85 * i / 60) * math.sin(3 * math.pi * i / 60)) for i in range(61)]
    return {"zoom_in": line((0.35, 0.6), (0.6, 0.4)), "pull_back": line((0.3, 0.4), (0.55, 0.5)),
            "pan": line((0.15, 0.5), (0.85, 0.45)), "orbit": loop, "dolly_zoom": line((0.45, 0.6), (0.62, 0.45)),
            "spiral": spiral, "earth_zoom_out": line((0.4, 0.4), (0.5, 0.45)),
            "crash_zoom": line((0.5, 0.5), (0.62, 0.42)), "parallax": line((0.3, 0.5), (0.7, 0.52))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="astronaut,coffee,rocket,camera")
    ap.add_argument("--size", default="1024x576")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    import skimage.data

    width, height = (int(v) for v in args.size.split("x"))
    paths = strokes()

    def req(effect, pts):
        body = {"canvas": {"width": 1, "height": 1}, "points": [{"x": x, "y": y} for x, y in pts]}
        return parse_request({"path": body, "effect": effect, "duration_s": args.seconds, "fps": 24,
                              "width": width, "height": height})

    print(f"d2v path check: camera renders {width}x{height}, {args.seconds:g} s at 24 fps, 24 frames measured per clip")
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}, OpenCV {cv2.__version__}")
    print()
    print("Faithful renders (the largest error over all sampled frames of all photos):")
    print(f"| {'effect':<15} | {'clips':>5} | {'followed':>8} | {'end %':>6} | {'worst %':>7} | {'zoom %':>6} | "
          f"{'roll deg':>8} | {'corner %':>8} | {'tolerance (any/end/zoom/roll/corner)':<36} | {'ms/check':>8} |")
    print("|" + "|".join("-" * (w + 2) for w in (15, 5, 8, 6, 7, 6, 8, 8, 36, 8)) + "|")
    photos = {}
    for name in args.photos.split(","):
        img = getattr(skimage.data, name)()
        photos[name] = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else np.ascontiguousarray(img[..., :3])
    wrong: dict[str, dict[str, int]] = {}
    for effect in [e for e in EFFECTS if e != "auto"]:
        worst = dict(end=0.0, worst=0.0, zoom=0.0, roll=0.0, corner=0.0)
        followed, clips, seconds = 0, 0, []
        for name, photo in photos.items():
            r = req(effect, paths[effect])
            traj = plan_trajectory(r, photo.shape[1], photo.shape[0])
            frames = list(CameraRenderer(photo).render(traj))
            t0 = time.perf_counter()
            rep = measure_fidelity(frames, photo, traj, photo_index=PhotoIndex(photo), max_samples=24)
            seconds.append(time.perf_counter() - t0)
            clips += 1
            followed += rep.verdict == "followed"
            for key, value in (("end", rep.end_center_pct), ("worst", rep.worst_center_pct),
                               ("zoom", rep.worst_zoom_pct), ("roll", rep.worst_roll_deg),
                               ("corner", rep.worst_corner_pct)):
                worst[key] = max(worst[key], value or 0.0)
            # Wrong videos of the same effect on this photo.
            others = [p for n, p in photos.items() if n != name]
            cases = {
                "reversed": list(CameraRenderer(photo).render(plan_trajectory(req(effect, paths[effect][::-1]),
                                                                                photo.shape[1], photo.shape[0]))),
                "shuffled": [frames[i] for i in np.random.default_rng(0).permutation(len(frames))],
                "other path": list(CameraRenderer(photo).render(plan_trajectory(
                    req(effect, paths["pan" if effect != "pan" else "zoom_in"]), photo.shape[1], photo.shape[0]))),
            }
            if others:
                o = others[0]
                cases["other photo"] = list(CameraRenderer(o).render(plan_trajectory(r, o.shape[1], o.shape[0])))
            for case, clip in cases.items():
                verdict = measure_fidelity(clip, photo, traj).verdict
                wrong.setdefault(case, {}).setdefault(verdict, 0)
                wrong[case][verdict] += 1
        t = tolerance_for(effect)
        tol = f"{t.center_pct:g}/{t.end_center_pct:g}/{t.zoom_pct:g}/{t.roll_deg:g}/{t.corner_pct:g}"
        print(f"| {effect:<15} | {clips:>5} | {followed:>8} | {worst['end']:6.2f} | {worst['worst']:7.2f} | "
              f"{worst['zoom']:6.2f} | {worst['roll']:8.2f} | {worst['corner']:8.2f} | {tol:<36} | "
              f"{1000 * float(np.median(seconds)):8.0f} |")
    print()
    print("Wrong videos (every effect on every photo): verdicts")
    print(f"| {'video':<12} | {'followed':>8} | {'missed':>6} | {'unmeasured':>10} |")
    print("|" + "|".join("-" * (w + 2) for w in (12, 8, 6, 10)) + "|")
    for case, counts in wrong.items():
        print(f"| {case:<12} | {counts.get('followed', 0):>8} | {counts.get('missed', 0):>6} | "
              f"{counts.get('unmeasured', 0):>10} |")


if __name__ == "__main__":
    main()
