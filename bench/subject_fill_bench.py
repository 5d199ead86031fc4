"""How a moved subject's hole is filled: Telea across the whole hole (before) against
`d2v.subjects.fill_hole` (at a scale where the hole is narrow, softened inside), on
scikit-image's photos with the holes a SubjectScene cuts. Prints a Markdown table: the fill's
wall time and its hardest edges inside the hole (99th percentile of the Sobel gradient, the
photo's own outside the hole beside it: Telea's fans of streaks are edges a soft fill has not).

    PYTHONPATH=. python bench/subject_fill_bench.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from d2v.inpaint import inpaint_hole
from d2v.models import parse_request
from d2v.subjects import SubjectScene, fill_hole

ROOT = Path(__file__).resolve().parents[1]


def polygon(points):
    return {"polygon": [{"x": x, "y": y} for x, y in points]}


CASES = {
    "motorcycle (drive_out example)": (skimage.data.stereo_motorcycle()[0],
                                       json.loads((ROOT / "examples/subjects/drive_out.json").read_text())),
    "rocket (brush)": (skimage.data.rocket(), {"subjects": [{"region": {
        "brush": [{"x": 322, "y": float(y)} for y in range(130, 396, 15)], "radius": 14},
        "path": [{"x": 322, "y": 262}, {"x": 450, "y": 200}]}]}),
    "chelsea (polygon)": (skimage.data.chelsea(), {"subjects": [{"region": polygon(
        [(120, 30), (330, 20), (400, 150), (330, 300), (130, 300), (90, 150)]),
        "path": [{"x": 250, "y": 150}, {"x": 380, "y": 150}]}]}),
    "astronaut (polygon)": (skimage.data.astronaut(), {"subjects": [{"region": polygon(
        [(150, 20), (330, 20), (360, 200), (470, 330), (470, 512), (90, 512), (110, 300), (170, 200)]),
        "path": [{"x": 250, "y": 300}, {"x": 120, "y": 300}]}]}),
}


def hardest_edges(img: np.ndarray, where: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.percentile(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))[where], 99))


def main() -> None:
    print("| photo | hole (% of photo) | Telea s | fill_hole s | edges p99: Telea | fill_hole | photo outside |")
    print("|---|---|---|---|---|---|---|")
    for name, (img, subjects) in CASES.items():
        req = parse_request({"width": 384, "height": 216, "fps": 12, "duration_s": 1.0, **subjects})
        hole = SubjectScene.build(img, None, req).hole
        inner = cv2.erode(hole.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        t = time.perf_counter()
        telea = inpaint_hole(img, hole, source=~hole)
        t_telea = time.perf_counter() - t
        t = time.perf_counter()
        soft = fill_hole(img, hole)
        t_fill = time.perf_counter() - t
        print(f"| {name} | {100 * hole.mean():.0f} | {t_telea:.2f} | {t_fill:.2f} | {hardest_edges(telea, inner):.0f} "
              f"| {hardest_edges(soft, inner):.0f} | {hardest_edges(img, ~hole):.0f} |")


if __name__ == "__main__":
    main()
