"""Large photos through `d2v render`, whole processes: this tree against a base tree.

Phone photos are 12 MP and the image limit is 40 MP (`d2v.images.MAX_IMAGE_PIXELS`), while a
clip is 1024x576: what a render does at the photo's size (decoding, the pyramid, the hidden
background behind depth steps, the path check's index) is what grows with it. The photo is
scikit-image's Middlebury motorcycle enlarged (bicubic) to 4032 and 7680 px wide (12 and 40
MP), with its measured disparity as the depth map (bench/depth_check_bench.py), a 4 s move at
24 fps. Each run is a fresh `python -m d2v.cli render ... --no-cache`, the base tree (make it
with `git archive <commit> | tar -x -C /tmp/base`) and this one alternating, --rounds times;
the table gives median wall, CPU (user + system) and peak RSS, and this / base wall.

    python bench/large_photo.py /tmp/base [--effects parallax,orbit,dolly_zoom,zoom_in] [--rounds 3] [--flat]

(--flat: also each effect without the depth map.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WIDTHS = {"12 MP": 4032, "40 MP": 7680}


def make_inputs(folder: Path) -> dict[str, Path]:
    import cv2
    import numpy as np

    from bench.depth_check_bench import motorcycle

    rgb, depth = motorcycle()
    photos = {}
    for name, width in WIDTHS.items():
        big = cv2.resize(rgb, (width, round(width * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_CUBIC)
        photos[name] = folder / f"motorcycle-{width}.jpg"
        cv2.imwrite(str(photos[name]), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(folder / "depth.png"), (np.clip(depth, 0, 1) * 65535).astype(np.uint16))
    return photos


def run(tree: Path, photo: Path, effect: str, depth: Path | None, out: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one whole `d2v render` of `tree`'s code."""
    cmd = [sys.executable, "-m", "d2v.cli", "render", str(photo), "--path", str(REPO / f"examples/paths/{effect}.json"),
           "--effect", effect, "--no-cache", "-o", str(out)]
    if depth is not None:
        cmd += ["--depth", str(depth)]
    env = dict(os.environ, PYTHONPATH=str(tree))  # (the store: ./d2v-data in the run's folder)
    t = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        child = subprocess.Popen(cmd, env=env, cwd=out.parent, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # (this child's own resources, its peak RSS among them)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if child.returncode:
        raise SystemExit(f"{tree}: {' '.join(cmd)} failed:\n{out.with_suffix('.log').read_text()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path, help="a tree holding the base d2v/")
    ap.add_argument("--effects", default="parallax,orbit,dolly_zoom,zoom_in")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flat", action="store_true", help="also each effect without the depth map")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="d2v-large-"))
    photos = make_inputs(folder)
    depth = folder / "depth.png"
    cases = [(size, effect, d) for size in photos for effect in args.effects.split(",")
             for d in ([depth, None] if args.flat else [depth])]
    print("| photo | effect | depth | base wall s | this wall s | this / base | base CPU s | this CPU s | base peak RSS MB | this peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, effect, d in cases:
        results: dict[str, list] = {"base": [], "this": []}
        for k in range(args.rounds):
            order = [("base", args.base), ("this", REPO)] if k % 2 == 0 else [("this", REPO), ("base", args.base)]
            for name, tree in order:
                results[name].append(run(tree, photos[size], effect, d, folder / f"{name}.mp4"))
        med = {name: [statistics.median(r[i] for r in rows) for i in range(3)] for name, rows in results.items()}
        print(f"| {size} | {effect} | {'yes' if d else 'no'} | {med['base'][0]:.2f} | {med['this'][0]:.2f} | "
              f"{med['this'][0] / med['base'][0]:.2f} | {med['base'][1]:.2f} | {med['this'][1]:.2f} | "
              f"{med['base'][2]:.0f} | {med['this'][2]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
