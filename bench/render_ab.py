"""Depth render CPU, another tree's d2v/render.py against this one's, in one process.

Both renderers draw the same frames (every --every-th of the 4 s, 24 fps, 1024x576 clip) one
after the other, frame by frame, so machine noise hits both alike; each frame's cost is the
render thread's own CPU time, OpenCV on that one thread (as during an encode). For a change to the depth render: make the base tree with
`git archive <commit> | tar -x -C /tmp/base`, then

    python bench/render_ab.py /tmp/base [--scene photo|motorcycle|phone] [--effects parallax,orbit,zoom_in,dolly_zoom] [--planes]

(--planes: every frame drawn as the encoder's I420 planes, as render_job draws a plain move's.)

The scenes are render_bench's: the example photo with its derived hard-edged depth, or
scikit-image's motorcycle with its measured disparity; or `phone`: the motorcycle enlarged to
4032 px wide (bicubic), a 12 MP phone photo's size, with the same depth map.

With --encode, each tree's render + encode instead, as render_bench times it (a fresh renderer
streamed into the encoder, the whole 4 s clip, as I420 planes where that tree's renderer draws
them for depth, `render_bench.depth_frames`): wall and process CPU seconds, the two trees
one after the other, in alternating order, --rounds times, beside render_bench's plain floor
(encode-only of the flat move's frames) in each round; medians, and the median of the rounds'
this/base wall ratios (a pair runs seconds apart, so a load that drifts hits both alike).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.render_bench import depth_frames, derived_depth  # noqa: E402
from d2v import render  # noqa: E402
from d2v.images import load_image  # noqa: E402
from d2v.models import parse_request  # noqa: E402
from d2v.trajectory import DEFAULT_PARALLAX, plan_trajectory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="a tree holding the base d2v/render.py")
    ap.add_argument("--scene", choices=("photo", "motorcycle", "phone"), default="photo")
    ap.add_argument("--effects", default="parallax,orbit,zoom_in,dolly_zoom")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--encode", action="store_true", help="render + encode wall of each tree (see above)")
    ap.add_argument("--planes", action="store_true",
                    help="draw the frames as I420 planes (as render_job does) where the tree's renderer can")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("base_render", Path(args.base) / "d2v/render.py")
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    if args.scene in ("motorcycle", "phone"):
        from bench.depth_check_bench import motorcycle

        rgb, depth = motorcycle()
        if args.scene == "phone":
            import cv2

            rgb = cv2.resize(rgb, (4032, round(4032 * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_CUBIC)
    else:
        rgb = load_image(REPO / "examples/hubble.jpg").rgb
        depth = derived_depth(rgb)
    if args.encode:
        encode_ab(base, rgb, depth, args)
        return
    import cv2

    cv2.setNumThreads(1)  # as during an encode (`d2v.encode.encoder_owns_cores`): all of a frame's work on its thread
    print(f"| {args.scene}, effect | base ms/frame | this tree ms/frame | change |")
    print("|---|---|---|---|")
    for effect in args.effects.split(","):
        path = json.loads((REPO / f"examples/paths/{effect}.json").read_text())
        request = parse_request({"path": path, "effect": effect, "duration_s": 4, "fps": 24, "width": 1024, "height": 576})
        trajectory = plan_trajectory(request, rgb.shape[1], rgb.shape[0], depth_parallax=DEFAULT_PARALLAX)
        indices = list(range(0, len(trajectory), args.every))
        frames = {}
        for name, module in (("base", base), ("this", render)):
            if hasattr(module, "RENDER_THREADS"):  # one thread draws every frame: its CPU time is the frame's
                module.RENDER_THREADS = 1
            renderer = module.CameraRenderer(rgb, depth)
            planes = indices if args.planes and hasattr(renderer, "draws_planes") else ()
            list(renderer.render(trajectory, indices=indices[-1:], planes=planes[-1:]))  # its hidden background, made once
            frames[name] = renderer.render(trajectory, indices=indices, planes=planes)
        cpu = {"base": 0.0, "this": 0.0}
        for _ in indices:
            for name, stream in frames.items():
                t0 = time.thread_time()
                next(stream)
                cpu[name] += time.thread_time() - t0
        a, b = (1000 * cpu[k] / len(indices) for k in ("base", "this"))
        print(f"| {effect} | {a:.1f} | {b:.1f} | {100 * (b / a - 1):+.0f} % |")


def encode_ab(base, rgb, depth, args) -> None:
    import statistics
    import tempfile

    from d2v.encode import encode_mp4
    from d2v.pipeline import prefetch

    def request_for(effect):
        path = json.loads((REPO / f"examples/paths/{effect}.json").read_text())
        return parse_request({"path": path, "effect": effect, "duration_s": 4, "fps": 24, "width": 1024, "height": 576})

    plain = request_for("zoom_in")
    floor_frames = list(render.CameraRenderer(rgb).render(plan_trajectory(plain, rgb.shape[1], rgb.shape[0])))
    enc = {"crf": plain.crf, "preset": plain.x264_preset}
    print(f"| {args.scene}, effect | floor s | base wall s (x floor) | this wall s (x floor) | this / base wall, median of rounds | base CPU s | this CPU s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ab.mp4"

        def timed(run):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            return time.perf_counter() - t0, time.process_time() - c0

        for effect in args.effects.split(","):
            trajectory = plan_trajectory(request_for(effect), rgb.shape[1], rgb.shape[0], depth_parallax=DEFAULT_PARALLAX)
            runs = {"base": [], "this": [], "floor": []}
            for r in range(args.rounds):
                runs["floor"].append(timed(lambda: encode_mp4(iter(floor_frames), out, plain.fps, **enc)))
                for name in (("base", "this") if r % 2 == 0 else ("this", "base")):
                    module = base if name == "base" else render
                    runs[name].append(timed(lambda: encode_mp4(
                        prefetch(depth_frames(module.CameraRenderer(rgb, depth), trajectory)), out, plain.fps, **enc)))
            med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
            ratio = statistics.median(t[0] / b[0] for t, b in zip(runs["this"], runs["base"]))
            f = med["floor"][0]
            print(f"| {effect} | {f:.3f} | {med['base'][0]:.3f} ({med['base'][0] / f:.2f}) | "
                  f"{med['this'][0]:.3f} ({med['this'][0] / f:.2f}) | {ratio:.3f} | {med['base'][1]:.2f} | {med['this'][1]:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
