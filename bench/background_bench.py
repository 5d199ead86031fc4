"""The hidden background's build alone (`CameraRenderer._make_background`), this tree's
against a baseline checkout's, in one process, alternating, with a bit-identity check.

A depth render builds its hidden background once per clip, before the encoder's first depth
frame: this times that build on four photos, each with the band reach a 4 s zoom_in clip
asks for (the first `_make_background` call of its render): bench/render_bench.py's
hubble with its derived depth, scikit-image's Middlebury motorcycle with its measured
disparity (bench/depth_check_bench.py), astronaut and chelsea with derived depth. Each row:
the process CPU (all threads) of one build, the minimum of --repeats, baseline's and this
tree's alternating, and whether their background (pixels, depth, hole) is the same array.

    python bench/background_bench.py [--baseline /work/main] [--repeats 5] [hubble motorcycle ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import d2v.render as this  # noqa: E402
from bench.depth_check_bench import motorcycle  # noqa: E402
from bench.render_bench import derived_depth  # noqa: E402
from d2v.images import load_image  # noqa: E402
from d2v.models import parse_request  # noqa: E402
from d2v.trajectory import DEFAULT_PARALLAX, plan_trajectory  # noqa: E402


def baseline_render(repo: Path):
    """The baseline checkout's d2v/render.py as a module of its own, with its own inpaint."""
    inpaint = type(sys)("baseline_inpaint")
    exec(compile((repo / "d2v/inpaint.py").read_text(), str(repo / "d2v/inpaint.py"), "exec"), inpaint.__dict__)
    sys.modules["baseline_inpaint"] = inpaint
    source = (repo / "d2v/render.py").read_text().replace("from d2v.inpaint import", "from baseline_inpaint import")
    render = type(sys)("baseline_render")
    sys.modules["baseline_render"] = render
    exec(compile(source, str(repo / "d2v/render.py"), "exec"), render.__dict__)
    return render


def scenes():
    rgb = load_image(str(REPO / "examples/hubble.jpg")).rgb
    yield "hubble", rgb, derived_depth(rgb)
    yield ("motorcycle", *motorcycle())
    for name in ("astronaut", "chelsea"):
        rgb = getattr(skimage.data, name)()
        yield name, rgb, derived_depth(rgb)


def zoom_in_reach(rgb: np.ndarray, depth: np.ndarray) -> int:
    renderer = this.CameraRenderer(rgb, depth=depth)
    asked = []
    make = renderer._make_background
    renderer._make_background = lambda reach: (asked.append(reach), make(reach))[1]
    path = json.loads((REPO / "examples/paths/zoom_in.json").read_text())
    request = parse_request({"path": path, "effect": "zoom_in", "duration_s": 4, "fps": 24,
                             "width": 1024, "height": 576})
    next(iter(renderer.render(plan_trajectory(request, rgb.shape[1], rgb.shape[0], depth_parallax=DEFAULT_PARALLAX))))
    return asked[0]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="/work/main", help="a d2v checkout to compare against")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("scenes", nargs="*", help="only these (hubble, motorcycle, astronaut, chelsea)")
    args = ap.parse_args()
    base = baseline_render(Path(args.baseline))
    print(f"{'photo':<11} {'depth':>9} {'reach':>5} {'baseline ms':>11} {'this ms':>8} {'ratio':>6}  identical")
    for name, rgb, depth in scenes():
        if args.scenes and name not in args.scenes:
            continue
        reach = zoom_in_reach(rgb, depth)
        theirs, ours = base.CameraRenderer(rgb, depth=depth), this.CameraRenderer(rgb, depth=depth)
        a, b = theirs._make_background(reach), ours._make_background(reach)
        same = (np.array_equal(a.depth, b.depth) and a.offset == b.offset and len(a.levels) == len(b.levels)
                and all(np.array_equal(x, y) for x, y in zip(a.levels, b.levels))
                and np.array_equal(a.inpainted, b.inpainted))
        cost = {theirs: [], ours: []}
        for _ in range(args.repeats):
            for renderer in (theirs, ours):
                t0 = cpu_s()
                renderer._make_background(reach)
                cost[renderer].append(cpu_s() - t0)
        t_base, t_this = min(cost[theirs]) * 1e3, min(cost[ours]) * 1e3
        print(f"{name:<11} {'x'.join(map(str, ours.depth.shape[::-1])):>9} {reach:>5} {t_base:>11.0f} {t_this:>8.0f} "
              f"{t_this / t_base:>6.2f}  {same}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
