"""The cost of each post effect and each look per frame, against encode-only of the same frames.

A 4 s, 24 fps, 1024x576 zoom_in over the bundled example, rendered once into memory. Then,
each the median of --repeats runs:

    encode-only        those frames through the encoder (libx264 veryfast crf 18, as jobs run it)
    post effect        the effect's output frames made from the in-memory clip (`ClipFrames`, as
                       the svd backend's frames are), and encode-only of exactly those frames;
                       the ratio is the first over the second
    camera source      the same effect over the camera render itself (`CameraFrames`, as a camera
                       job streams it): render + post per output frame, against render alone
    look               each named look and a 33^3 .cube file applied to every frame, against
                       encode-only of the graded frames
    camera job         render_job as `d2v render` runs it (render, post and look on one thread,
                       the encoder on the other, the path check, the store): CPU seconds, plain
                       against with a look and with post effects

    python bench/post_bench.py [--repeats 3]
    python bench/post_bench.py --looks [--repeats 3]    # only the look's 8-bit path (issue 27)

--looks: for each look, per frame against encode-only of the graded frames (RGB in, so it
includes the encoder's RGB -> I420 conversion): Pillow's filter on every frame (how looks
graded before issue 27), the colour table (every 8-bit colour graded once, then one gather per
pixel) to RGB and to the encoder's I420 planes (as a job grades the frames it encodes; net:
less the encoder's own conversion of the graded RGB, which the planes spare it), the table's
one-off build (now: the LUT's trilinear interpolant one axis at a time in numpy/OpenCV;
before: Pillow's filter over all 2^24 colours), and a fresh look over the 96-frame clip as a
job grades it now (a clip past BUILD_FOR pixels: the build, then the table, to planes); and
how far the table's frames are from Pillow's (max and mean |difference|, share of samples equal).

Times are CPU seconds (all threads), medians. Post effects and the look run on the render thread while the encoder runs on the other
(d2v.pipeline.prefetch), so on two cores a cost under 1x of encode-only mostly hides behind
the encoder.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from d2v.encode import encode_mp4  # noqa: E402
from d2v.images import load_image  # noqa: E402
from d2v.looks import named_look, parse_cube, write_cube  # noqa: E402
from d2v.models import LOOKS, POST_EFFECTS, parse_request  # noqa: E402
from d2v.post import CameraFrames, ClipFrames, PostContext, apply_post, frames_of  # noqa: E402
from d2v.render import CameraRenderer  # noqa: E402
from d2v.trajectory import plan_trajectory  # noqa: E402


def timed(fn) -> tuple[float, object]:
    """CPU seconds of this process (every thread: x264's too), not wall time: the machine is
    shared, and CPU time is what each step costs whoever else is running."""
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def encode_seconds(frames, fps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return timed(lambda: encode_mp4(iter(frames), Path(tmp) / "v.mp4", fps, crf=18, preset="veryfast"))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image", default=str(REPO / "examples" / "hubble.jpg"))
    ap.add_argument("--looks", action="store_true", help="only the looks' 8-bit path")
    args = ap.parse_args()
    if args.looks:
        looks_8bit(args.image, args.repeats)
        return

    image = load_image(args.image)
    w, h = image.width, image.height
    req = parse_request({"path": [{"x": 0.3 * w, "y": 0.35 * h}, {"x": 0.62 * w, "y": 0.55 * h}],
                         "effect": "zoom_in", "duration_s": 4, "fps": 24, "width": 1024, "height": 576,
                         "post": list(POST_EFFECTS), "glitch_amount": 0.3})
    traj = plan_trajectory(req, w, h)
    renderer = CameraRenderer(image.rgb)
    plain = list(renderer.render(traj))
    ctx = PostContext.for_job(req, traj, w, h)
    n = len(plain)
    median = statistics.median

    rows = []
    floor = median(encode_seconds(plain, req.fps) for _ in range(args.repeats))
    rows.append(("encode-only (floor)", n, floor / n * 1e3, floor / n * 1e3, 1.0, None))
    render_alone = median(timed(lambda: list(frames_of(CameraFrames(renderer, traj))))[0] for _ in range(args.repeats))

    for name in POST_EFFECTS:
        post_s, out = [], None
        cam_s = []
        for _ in range(args.repeats):
            s, out = timed(lambda: list(frames_of(apply_post(ClipFrames(plain, traj), [name], ctx))))
            post_s.append(s)
            cam_s.append(timed(lambda: list(frames_of(apply_post(CameraFrames(renderer, traj), [name], ctx))))[0])
        m = len(out)
        enc = median(encode_seconds(out, req.fps) for _ in range(args.repeats))
        p = median(post_s)
        rows.append((f"post {name}", m, p / m * 1e3, enc / m * 1e3, p / enc, median(cam_s) / m / (render_alone / n)))

    cube = parse_cube(write_cube(named_look("cinematic")), "cinematic.cube")
    looks = [(f"look {name}", named_look(name)) for name in LOOKS if name != "natural"] + [("look .cube 33^3", cube)]
    for label, look in looks:
        look.apply(plain[0])  # build its filter once, as a job does before its first frame
        s_runs, out = [], None
        for _ in range(args.repeats):
            s, out = timed(lambda: [look.apply(f) for f in plain])
            s_runs.append(s)
        enc = median(encode_seconds(out, req.fps) for _ in range(args.repeats))
        s = median(s_runs)
        rows.append((label, n, s / n * 1e3, enc / n * 1e3, s / enc, None))

    job_rows = camera_jobs(args.image, req, args.repeats)

    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"1024x576, {n} frames, median of {args.repeats}; render alone {render_alone / n * 1e3:.2f} ms/frame")
    print("| what | frames | ms/frame | encode-only of those frames, ms/frame | x encode-only | camera source: "
          "render + post, x render alone |")
    print("|---|---|---|---|---|---|")
    for label, m, ms, enc_ms, ratio, cam in rows:
        cam_text = f"{cam:.2f}" if cam is not None else ""
        print(f"| {label} | {m} | {ms:.2f} | {enc_ms:.2f} | {ratio:.2f} | {cam_text} |")
    print()
    print("| camera job (render_job, CPU) | frames | seconds | x plain |")
    print("|---|---|---|---|")
    for label, frames, seconds, ratio in job_rows:
        print(f"| {label} | {frames} | {seconds:.3f} | {ratio:.2f} |")


def looks_8bit(image_path: str, repeats: int) -> None:
    import cv2
    import numpy as np
    from PIL import Image

    from d2v.encode import Yuv420, i420_from_yrgb, rgb_from_yrgb
    from d2v.looks import Look, _grade_all_colours, _index

    image = load_image(image_path)
    w, h = image.width, image.height
    req = parse_request({"path": [{"x": 0.3 * w, "y": 0.35 * h}, {"x": 0.62 * w, "y": 0.55 * h}],
                         "effect": "zoom_in", "duration_s": 4, "fps": 24, "width": 1024, "height": 576})
    plain = list(CameraRenderer(image.rgb).render(plan_trajectory(req, w, h)))
    n = len(plain)
    median = statistics.median
    cube = parse_cube(write_cube(named_look("cinematic")), "cinematic.cube")
    # As a job grades: OpenCV on one thread while the encoder runs (d2v.encode.encoder_owns_cores),
    # and each graded frame let go once encoded (kept, fresh memory for every frame costs page faults).
    cv2.setNumThreads(1)

    def discard(frames) -> None:
        for _ in frames:
            pass

    print(f"# {platform.node()}: python {platform.python_version()}; 1024x576, {n} frames, CPU seconds, "
          f"median of {repeats}; OpenCV on 1 thread")
    print("| look | encode-only, ms/frame | Pillow per frame, ms (x enc) | table -> RGB per frame, ms (x enc) | "
          "table -> I420 per frame, ms (x enc; net of the conversion spared) | table build, s (before: Pillow's) | "
          "fresh look over the clip -> I420, ms/frame (x enc; net) | table vs Pillow: max, mean abs diff, equal |")
    print("|---|---|---|---|---|---|---|---|")
    for label, look in [("cinematic", named_look("cinematic")), ("noir", named_look("noir")), (".cube 33^3", cube)]:
        direct = lambda f: np.asarray(Image.fromarray(f).filter(look._filter))  # noqa: E731
        pil = median(timed(lambda: [direct(f) for f in plain])[0] for _ in range(repeats))
        build = median(timed(lambda: _grade_all_colours(look))[0] for _ in range(repeats))
        table = _grade_all_colours(look)
        colours = np.arange(1 << 24, dtype=np.uint32).view(np.uint8).reshape(4096, 4096, 4)[..., :3].copy()
        before = timed(lambda: direct(colours))[0]  # the build as it was: Pillow over every colour
        tab_s, planes_s, graded = [], [], None
        for _ in range(repeats):
            s, graded = timed(lambda: [rgb_from_yrgb(_index(table, f)) for f in plain])
            tab_s.append(s)
            planes_s.append(timed(lambda: discard(i420_from_yrgb(_index(table, f)) for f in plain))[0])
        diff = np.concatenate([np.abs(g.astype(np.int16) - direct(f)).ravel() for g, f in zip(graded[::8], plain[::8])])
        same = f"{diff.max()}, {diff.mean():.3f}, {(diff == 0).mean():.1%}"
        to_yuv = Yuv420(*plain[0].shape[1::-1])
        spared = median(timed(lambda: [to_yuv(g) for g in graded])[0] for _ in range(repeats))  # the encoder's own
        fresh = []
        for k in range(repeats):  # a look this process has not graded before: its own table
            new = Look(f"{label}-{k}", look.table + np.float32(1e-7 * (k + 1)))
            clip = n * plain[0].size // 3  # pixels: a job's clip builds the table at its first frame
            fresh.append(timed(lambda: discard(new.apply(f, planes=True, clip_pixels=clip) for f in plain))[0])
        enc = median(encode_seconds(graded, req.fps) for _ in range(repeats))
        e, tab, pl, fr = enc / n * 1e3, median(tab_s), median(planes_s), median(fresh)
        print(f"| {label} | {e:.2f} | {pil / n * 1e3:.2f} ({pil / enc:.2f}) | {tab / n * 1e3:.2f} ({tab / enc:.2f}) "
              f"| {pl / n * 1e3:.2f} ({pl / enc:.2f}; {(pl - spared) / enc:.2f}) | {build:.2f} ({before:.2f}) "
              f"| {fr / n * 1e3:.2f} ({fr / enc:.2f}; {(fr - spared) / enc:.2f}) | {same} |")


def camera_jobs(image_path: str, req, repeats: int) -> list[tuple[str, int, float, float]]:
    """render_job CPU seconds, plain and with a look or post effects, interleaved. (Wall time
    on a shared 2-core VM swung 2-4x between identical runs; on an idle one post and look
    overlap the encoder, on the render thread.)"""
    from d2v.pipeline import render_job
    from d2v.store import LocalStore

    image_bytes = Path(image_path).read_bytes()
    variants = {"plain": {}, "look cinematic": {"look": "cinematic"}, "post tenet": {"post": ["tenet"]},
                "post bullet_time": {"post": ["bullet_time"]}, "post mirror_fold + look noir":
                {"post": ["mirror_fold"], "look": "noir"}}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    frames: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        for _ in range(repeats):
            for label, fields in variants.items():
                request = req.model_copy(update={"post": [], "look": None, **fields})
                seconds, manifest = timed(lambda: render_job(image_bytes, request, store, use_cache=False))
                walls[label].append(seconds)
                frames[label] = manifest.frames
    plain = statistics.median(walls["plain"])
    return [(k, frames[k], statistics.median(v), statistics.median(v) / plain) for k, v in walls.items()]


if __name__ == "__main__":
    main()
