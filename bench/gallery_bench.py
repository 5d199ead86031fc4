"""What the page's preset gallery costs the farm: one preview per preset (d2v.preview, the
code POST /v1/preview runs) against one preview of the user's own settings, on the same
photo and path in the same run.

    python bench/gallery_bench.py [--repeats 3]

Prints one row per preset (median seconds, x the plain preview) and the whole gallery's
total: what a page asks of the farm when every card is on screen (it asks two at a time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from d2v.images import load_image
from d2v.models import parse_request
from d2v.presets import presets
from d2v.preview import preview

REPO = Path(__file__).resolve().parent.parent


def median_seconds(rgb, request, repeats: int) -> tuple[float, int]:
    """The median seconds of `repeats` previews, and the preview's frame count (post effects
    such as boomerang change it)."""
    times, frames = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        frames = preview(rgb, request)["frames"]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rgb = load_image(REPO / "examples/hubble.jpg").rgb
    path = json.loads((REPO / "examples/paths/zoom_in.json").read_text())
    preview(rgb, parse_request({"path": path}))  # warm-up: imports, codec
    plain, plain_frames = median_seconds(rgb, parse_request({"path": path}), args.repeats)
    print("examples/hubble.jpg, examples/paths/zoom_in.json; previews 256 px on the longer side, 12 fps")
    print(f"\n| {'preset':<20} | frames | seconds | x plain preview |")
    print(f"|{'-' * 22}|--------|---------|-----------------|")
    print(f"| {'(plain: auto, 4 s)':<20} | {plain_frames:>6} | {plain:>7.3f} | {1.0:>15.2f} |")
    total = 0.0
    for name in presets():
        request = parse_request({"path": path, "preset": name})
        seconds, frames = median_seconds(rgb, request, args.repeats)
        total += seconds
        print(f"| {name:<20} | {frames:>6.0f} | {seconds:>7.3f} | {seconds / plain:>15.2f} |")
    print(f"| {'whole gallery':<20} | {'':>6} | {total:>7.3f} | {total / plain:>15.2f} |")


if __name__ == "__main__":
    main()
