"""Writes examples/paths/*.json: one drawn path per effect on examples/hubble.jpg
(1000x872; the canvas here is the image itself, so canvas units = pixels).

    python examples/make_paths.py
"""

import json
import math
from pathlib import Path

CANVAS = {"width": 1000, "height": 872}
OUT = Path(__file__).parent / "paths"


def stroke(points, seconds=1.2):
    """Points with `t` as if drawn at an even pace over `seconds`."""
    n = len(points) - 1
    return [{"x": round(x, 1), "y": round(y, 1), "t": round(seconds * i / n, 3)} for i, (x, y) in enumerate(points)]


def line(a, b, n=20):
    return [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n + 1)]


def arc(center, radius, start_deg, sweep_deg, n=60, shrink=0.0):
    """Screen angles (v down): a positive sweep is clockwise as the viewer sees it."""
    pts = []
    for i in range(n + 1):
        f = i / n
        a = math.radians(start_deg + sweep_deg * f)
        r = radius * (1 - shrink * f)
        pts.append((center[0] + r * math.cos(a), center[1] + r * math.sin(a)))
    return pts


PATHS = {
    # Toward the big orange galaxy, bending on the way.
    "zoom_in": line((420, 640), (560, 560), 10) + line((560, 560), (728, 473), 12)[1:],
    # From the spiral galaxy out to the right.
    "pull_back": line((200, 402), (480, 430), 20),
    # Left to right across the field.
    "pan": line((150, 436), (850, 436), 30),
    # A clockwise loop around the central galaxy.
    "orbit": arc((515, 438), 130, 180, 360, 72),
    # Toward the big orange galaxy: it keeps its size while the field around it changes scale.
    "dolly_zoom": line((520, 560), (728, 473), 16),
    # A clockwise spiral winding in on the bright star.
    "spiral": arc((752, 577), 170, 200, 540, 90, shrink=0.9),
    # Start on the spiral galaxy; the camera leaves it behind.
    "earth_zoom_out": line((123, 402), (300, 420), 12),
    # Hold, then slam in on the bright star.
    "crash_zoom": line((600, 500), (752, 577), 10),
    # Slide left to right past the central galaxy: near things slide past far ones.
    "parallax": line((330, 436), (690, 436), 16),
    # A freehand S-curve: auto chooses.
    "auto": [(200 + 600 * f, 436 + 160 * math.sin(f * 2 * math.pi)) for f in (i / 40 for i in range(41))],
}

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, pts in PATHS.items():
        (OUT / f"{name}.json").write_text(json.dumps({"canvas": CANVAS, "points": stroke(pts)}, indent=1) + "\n")
        print(OUT / f"{name}.json", len(pts), "points")
