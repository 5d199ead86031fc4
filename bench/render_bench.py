"""Render + encode against encode-only, and what the path check adds, in one run.

A 4 s, 24 fps, 1024x576 clip of the bundled example with the camera backend, timed
four ways, each the median of --repeats runs, interleaved so machine noise hits all:

    encode-only     the same frames, already rendered and in memory, through the encoder (the floor)
    render+encode   the streaming render into the encoder, as render_job runs it, nothing else
    depth           with a depth map: encode-only of those frames (RGB), and render + encode (drawn as
                    render_job draws them: I420 planes but for the path check's samples and the
                    poster, when the renderer can, `d2v.pipeline.drawn_as_planes`), for each of
                    --depth-effects (default: the effect's move and the parallax slide,
                    examples/paths/parallax.json, whose near things reveal what they hid every
                    frame, filled from the background; `all`: every effect)
    +check          the same, keeping the 16 sampled frames, then the check stage (measure, picture, store)
    library         d2v.pipeline.render_job: trajectory + render -> encode + store + path check
    cli             `d2v render ...` as a user runs it (a fresh process: imports included)

    python bench/render_bench.py [--effect zoom_in] [--repeats 5] [--depth-effects all] [--quick]

--quick (while iterating on the renderer): only encode-only, render+encode and the depth rows.

Prints a table; ratios are against encode-only (target: library <= 1.5x), the path check's
cost as +check against render+encode (target: at most 1.10x, issue #11), and with a depth
map render + encode against encode-only (target: at most 2.5x, issue #14), both against the
plain floor (the table's column) and against encode-only of the same frames (depth frames
cost the encoder more: a push in through near layers is hard for x264).

The depth map is derived from the photo, as a stand-in for an estimated one with hard edges
(the worst case for disocclusions): its luminance blurred (sigma 4 px), cut at 20 of 255
(the galaxies near, the sky far), edges softened over a pixel or so. With `--scene motorcycle`
the whole bench (photo, floor and depth rows) runs on scikit-image's Middlebury motorcycle
instead, with its measured disparity as the depth map (holes filled, bilateral-smoothed, as a
depth model would give it: bench/depth_check_bench.py): a real depth map, whose edges are the
objects' outlines rather than every galaxy's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from d2v.encode import encode_mp4  # noqa: E402
from d2v.fidelity import sample_indices  # noqa: E402
from d2v.images import decode_image, load_image  # noqa: E402
from d2v.models import EFFECTS, parse_request  # noqa: E402
from d2v.pipeline import drawn_as_planes, prefetch, render_job  # noqa: E402
from d2v.render import CameraRenderer  # noqa: E402
from d2v.stages import check_and_store  # noqa: E402
from d2v.store import LocalStore  # noqa: E402
from d2v.trajectory import DEFAULT_PARALLAX, plan_trajectory  # noqa: E402

DEPTH_BOUND = 2.5  # issue #14: the camera backend with depth within 2.5x of encode-only


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effect", default="zoom_in")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--image", default=str(REPO / "examples/hubble.jpg"))
    ap.add_argument("--depth-effects", default=None,
                    help="comma-separated effects timed with the depth map, or 'all' (default: EFFECT,parallax)")
    ap.add_argument("--scene", choices=("photo", "motorcycle"), default="photo",
                    help="photo: --image with a depth map derived from it (hard edges everywhere); "
                         "motorcycle: skimage's stereo left view with its measured disparity")
    ap.add_argument("--quick", action="store_true",
                    help="only encode-only, render+encode and the depth rows (no check, library or CLI)")
    args = ap.parse_args()

    def request_for(effect: str):
        path = json.loads((REPO / f"examples/paths/{effect}.json").read_text())
        return parse_request({"path": path, "effect": effect, "duration_s": 4, "fps": 24,
                              "width": 1024, "height": 576})

    scene_depth = None
    if args.scene == "motorcycle":
        from bench.depth_check_bench import motorcycle

        left, scene_depth = motorcycle()
        args.image = str(Path(tempfile.mkdtemp()) / "motorcycle.png")
        cv2.imwrite(args.image, cv2.cvtColor(left, cv2.COLOR_RGB2BGR))
    path_file = REPO / f"examples/paths/{args.effect}.json"
    request = request_for(args.effect)
    enc = {"crf": request.crf, "preset": request.x264_preset}
    image_bytes = Path(args.image).read_bytes()
    image = load_image(args.image)
    trajectory = plan_trajectory(request, image.width, image.height)
    frames = list(CameraRenderer(image.rgb).render(trajectory))
    depth = derived_depth(image.rgb) if scene_depth is None else scene_depth
    if args.depth_effects == "all":
        depth_effects = [e for e in EFFECTS if e != "auto"]
    else:
        depth_effects = list(dict.fromkeys((args.depth_effects or f"{args.effect},parallax").split(",")))
    deep = {name: plan_trajectory(request_for(name), image.width, image.height, depth_parallax=DEFAULT_PARALLAX)
            for name in depth_effects}

    rows: dict[str, list[float]] = {"encode-only": [], "render+encode": []}
    cpu: dict[str, list[float]] = {}  # CPU seconds of this process (all its threads), beside the wall

    def timed(name: str, run) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        rows[name].append(time.perf_counter() - t0)
        cpu.setdefault(name, []).append(time.process_time() - c0)

    if not args.quick:
        rows.update({"+check": [], "library": [], "cli": []})
    rows.update({f"depth {name}{what}": [] for name in deep for what in ("", " encode")})
    deep_frames = {name: list(CameraRenderer(image.rgb, depth).render(traj)) for name, traj in deep.items()}
    to_check = set(sample_indices(len(trajectory)))
    loaded = decode_image(image_bytes)
    stages: list[dict[str, float]] = []
    manifest = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeats):
            timed("encode-only", lambda: encode_mp4(iter(frames), tmp / "floor.mp4", request.fps, **enc))

            t0 = time.perf_counter()
            streamed = prefetch(CameraRenderer(image.rgb).render(trajectory))
            encode_mp4(streamed, tmp / "streamed.mp4", request.fps, **enc)
            rows["render+encode"].append(time.perf_counter() - t0)

            for name, traj in deep.items():
                timed(f"depth {name} encode",
                      lambda: encode_mp4(iter(deep_frames[name]), tmp / "depth-floor.mp4", request.fps, **enc))
                timed(f"depth {name}", lambda: encode_mp4(prefetch(depth_frames(CameraRenderer(image.rgb, depth), traj)),
                                                          tmp / "depth.mp4", request.fps, **enc))

            if args.quick:
                continue
            t0 = time.perf_counter()
            kept: dict[int, object] = {}

            def keep(frames):
                for i, frame in enumerate(frames):
                    if i in to_check:
                        kept[i] = frame
                    yield frame

            streamed = prefetch(keep(CameraRenderer(image.rgb).render(trajectory)))
            encode_mp4(streamed, tmp / "checked.mp4", request.fps, **enc)
            check_and_store(kept, len(trajectory), loaded, request, trajectory, LocalStore(tmp / f"chk{r}"), "bench")
            rows["+check"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            manifest = render_job(image_bytes, request, LocalStore(tmp / f"lib{r}"), output_path=tmp / "lib.mp4")
            rows["library"].append(time.perf_counter() - t0)
            stages.append(manifest.stage_seconds)

            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "d2v.cli", "render", args.image, "--path", str(path_file), "--effect",
                 args.effect, "-o", str(tmp / "cli.mp4"), "--quiet", "--no-cache"],
                check=True, cwd=tmp, stdout=subprocess.DEVNULL, env={"D2V_DATA_DIR": str(tmp / "cli-store"),
                                                                     "PATH": "/usr/bin:/bin"},
            )
            rows["cli"].append(time.perf_counter() - t0)

    med = {name: statistics.median(times) for name, times in rows.items()}
    floor = med["encode-only"]
    n = len(frames)
    print(f"d2v render benchmark: {args.effect}, {n} frames 1024x576 @ 24 fps, camera backend, "
          f"median of {args.repeats}")
    print(f"machine: {platform.node()} {platform.machine()}, {platform.processor() or 'cpu'}, python "
          f"{platform.python_version()}")
    print()
    print(f"| {'what':<34} | {'seconds':>8} | {'ms/frame':>8} | {'x encode-only':>13} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 15}|")
    labels = [("encode-only", "encode-only (floor)"), ("render+encode", "render + encode (streamed)"),
              *(row for name in deep for row in ((f"depth {name} encode", f"encode-only, depth, {name}"),
                                                 (f"depth {name}", f"render + encode, depth, {name}"))),
              ("+check", "render + encode + check"), ("library", "render_job (+ store, poster...)"),
              ("cli", "CLI `d2v render` wall")]
    for name, label in labels:
        if name in med:
            print(f"| {label:<34} | {med[name]:8.3f} | {1000 * med[name] / n:8.2f} | {med[name] / floor:13.2f} |")

    print()
    print(f"with a depth map, render + encode against encode-only (target: at most {DEPTH_BOUND}x):")
    print("(CPU: the same ratio in CPU seconds of this process, all threads: steadier than the wall on a loaded machine)")
    print(f"| {'effect':<15} | {'x plain floor':>13} | {'x own frames':>12} | {'CPU x plain':>11} | "
          f"{'render ms/frame':>15} | bound |")
    print(f"|{'-' * 17}|{'-' * 15}|{'-' * 14}|{'-' * 13}|{'-' * 17}|-------|")
    cpu_med = {name: statistics.median(times) for name, times in cpu.items()}
    holds = []
    for name, traj in deep.items():
        renderer = CameraRenderer(image.rgb, depth)
        t0 = time.perf_counter()
        for _ in depth_frames(renderer, traj):
            pass
        alone = 1000 * (time.perf_counter() - t0) / len(traj)
        plain, own = med[f"depth {name}"] / floor, med[f"depth {name}"] / med[f"depth {name} encode"]
        holds.append(plain <= DEPTH_BOUND)
        cpu_plain = cpu_med[f"depth {name}"] / cpu_med["encode-only"]
        print(f"| {name:<15} | {plain:13.2f} | {own:12.2f} | {cpu_plain:11.2f} | {alone:15.2f} | "
              f"{'holds' if plain <= DEPTH_BOUND else 'NO':<5} |")
    print(f"the bound holds against the plain floor for {sum(holds)} of {len(holds)} effects with depth")
    if "parallax" in deep:
        traj = deep["parallax"]
        valid = [v.mean() for v in CameraRenderer(image.rgb, depth).render_validity(traj, range(0, len(traj), 8))]
        print(f"The depth map: {100 * float((depth > 0.5).mean()):.0f}% of the photo near; the parallax slide "
              f"fills {100 * (1 - statistics.mean(valid)):.1f}% of each frame from the background "
              f"(mean of every 8th frame)")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.quick:
        return
    streamed_s, checked_s = med["render+encode"], med["+check"]
    check_s = statistics.median(st.get("check", 0.0) for st in stages)
    print()
    print(f"path check: (render + encode + check) / (render + encode) = {checked_s / streamed_s:.3f}x; "
          f"render_job's check stage {check_s:.3f} s = {100 * check_s / streamed_s:.1f}% of render + encode "
          f"({manifest.fidelity.one_line()})")
    print()
    print("library stages (median seconds; render and encode overlap on two threads):")
    print(f"| {'stage':<20} | {'seconds':>8} | {'ms/frame':>8} |")
    print(f"|{'-' * 22}|{'-' * 10}|{'-' * 10}|")
    for key in ("trajectory", "base", "encode", "render_encode_wall", "upload", "check", "total"):
        s = statistics.median(st.get(key, 0.0) for st in stages)
        print(f"| {key:<20} | {s:8.3f} | {1000 * s / n:8.2f} |")


def depth_frames(renderer: CameraRenderer, trajectory):
    """The renderer's frames as render_job streams them into the encoder (no post, look or
    motion blur): as I420 planes, but for those also wanted in RGB, where the renderer can."""
    planes = drawn_as_planes(len(trajectory)) if renderer.draws_planes(trajectory) else ()
    return renderer.render(trajectory, planes=planes)


def derived_depth(rgb: np.ndarray) -> np.ndarray:
    """A depth map with hard edges from the photo (see the module docstring)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    near = (cv2.GaussianBlur(gray, (0, 0), 4) > 20).astype(np.float32)
    return cv2.GaussianBlur(near, (0, 0), 1.0)


if __name__ == "__main__":
    main()
