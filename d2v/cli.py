"""The `d2v` command.

    d2v render IMAGE --path PATH.json [--effect auto] [--duration 4] [--fps 24]
               [--size 1024x576] [--backend camera|svd|ltx|wan|auto] [--seed 0] -o OUT.mp4
               [--prompt TEXT] [--negative-prompt TEXT]
               [--preset NAME] [--look NAME|FILE.cube] [--post NAME]... [--glitch-amount 0.3]
    d2v effects
    d2v presets                                    # one per line: name, what the viewer sees
    d2v looks                                      # the named colour grades
    d2v check VIDEO --image IMAGE --path PATH.json [render flags] [--json]   # did the video follow the path?
    d2v check --job ID | --manifest FILE [--json]  # ...with every setting from a job's manifest
    d2v trajectory IMAGE --path PATH.json [...]    # the per-frame camera as JSON
    d2v serve [--config serve-local.yaml] [--port N] [--metrics-port 8080] [--print-config]  # the page and API
    d2v submit IMAGE --path PATH.json --server URL [--api-key KEY] [render flags] -o OUT.mp4  # on a farm
    d2v jobs --server URL [--api-key KEY] [--limit 20]  # the caller's latest jobs on a farm, newest first
    d2v interpolate IN.mp4 --fps 25 -o OUT.mp4     # retime a video (optical flow)
    d2v upscale IN.mp4 --size 1920x1080 -o OUT.mp4 # resize a video exactly
    d2v models check | make-tiny [--base svd|ltx|wan] DIR   # generative bases' set-up
    d2v models make-tiny-depth DIR                 # a tiny random-weight depth model
    d2v depth IMAGE -o DEPTH.png                   # the depth stage alone (D2V_DEPTH_MODEL)
    d2v report [--since 7d] [--json]               # the farm's KPIs from the store: success, time, cost

Bad input: one line on stderr (`d2v: error: ...`) and exit status 2; no traceback.
Set D2V_DEBUG=1 to see tracebacks of internal errors.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from d2v.errors import D2VError, InvalidPathError, InvalidRequestError, Stopped
from d2v.names import EFFECTS, LOOKS, LUT_SUFFIX, POST_EFFECTS  # plain data: `d2v --help` imports no pydantic

EXIT_BAD_INPUT = 2


def _quick_shutdown() -> None:
    """At exit, one garbage collection (cycles that are garbage now are finalized, as Python's
    shutdown would), then every object is frozen: the shutdown's own collections, which walk
    everything the imports made (numpy, OpenCV, PyAV, pydantic's schemas) once per phase of
    clearing modules, then find nothing to walk. About 0.1 CPU-s less on one core after a
    render's work is done (bench/RESULTS.md); the objects are still freed."""
    gc.collect()
    gc.freeze()


atexit.register(_quick_shutdown)  # (a process that imports d2v.cli ends as quickly)
TINY_DEPTH_KINDS = ("depth_anything", "depth_anything_metric", "dpt", "zoedepth", "glpn")  # d2v.depth.TINY_KINDS
SVD_FIELDS = ("guidance_strength", "free_strength", "motion_bucket_id", "noise_aug_strength", "num_inference_steps")
EXIT_INTERNAL = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


class _UsageError(Exception):
    pass


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1024x576, got {text!r}") from None



# Flags that name a request field default to None: a flag the user did not give is left out
# of the request, so a preset's value stands (explicit flags override it) and, without a
# preset, the request model's default applies (the defaults in the help texts are those).


def _add_request_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="the photo (JPEG, PNG, WebP, ...)")
    _add_render_settings(p)


def _add_render_settings(p: argparse.ArgumentParser) -> None:
    """Every flag of `d2v render` that names a request field (check takes them all too)."""
    p.add_argument("--duration", type=float, default=None, help="seconds (0.5-20, default 4)")
    p.add_argument("--fps", type=int, default=None, help="frames per second (1-60, default 24)")
    p.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT, even sides (default 1024x576)")
    p.add_argument("--backend", default=None,
                   help="camera (no weights), svd, ltx, wan, or auto: the best configured base (default camera)")
    p.add_argument("--prompt", default=None, help="ltx, wan: what the video shows and how things move "
                   "(default: a description of the camera move)")
    p.add_argument("--negative-prompt", dest="negative_prompt", default=None, help="ltx, wan: what to avoid")
    p.add_argument("--no-auto-correct", dest="auto_correct", action="store_false", default=None,
                   help="svd: ship the first attempt even when the path check finds it off the path")
    look = p.add_argument_group("look and post effects")
    look.add_argument("--look", default=None,
                      help=f"colour grade: one of {', '.join(LOOKS)} (`d2v looks`), or a 3D LUT file (FILE.cube)")
    look.add_argument("--post", action="append", default=None, choices=list(POST_EFFECTS), metavar="NAME",
                      help=f"a post effect, applied in the order given (repeatable): {', '.join(POST_EFFECTS)}")
    look.add_argument("--glitch-amount", type=float, default=None, help="glitch: the share of frames touched, 0-1 "
                      "(default 0.3)")
    svd = p.add_argument_group("svd backend (named after the request's fields)")
    svd.add_argument("--guidance-strength", type=float, default=None,
                     help="0 = the camera render, 1 = plain SVD, log scale of noise (default 0.5)")
    svd.add_argument("--free-strength", type=float, default=None,
                     help="dual clock: where the render invents pixels, SVD starts from this strength")
    svd.add_argument("--motion-bucket-id", type=int, default=None, help="1-255 (default: from the camera's speed)")
    svd.add_argument("--noise-aug-strength", type=float, default=None, help="0-1 (default: from the camera's speed)")
    svd.add_argument("--steps", dest="num_inference_steps", type=int, default=None, help="denoising steps (default 25)")
    p.add_argument("--crf", type=int, default=None, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--x264-preset", default=None, help="x264 speed preset (default veryfast)")
    _add_camera_flags(p)


def _add_depth_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", default="auto",
                   help="auto (default): estimate the depth when D2V_DEPTH_MODEL is set; none: never; or a depth "
                        "map file (grayscale, brighter = nearer; a file named like a mode: ./auto)")


def _add_camera_flags(p: argparse.ArgumentParser) -> None:
    """The flags that shape the camera move (render, trajectory and check share them)."""
    p.add_argument("--path", default=None, help="the drawn path as JSON (see README); optional with --camera or "
                   "subjects")
    p.add_argument("--camera", default=None, help="a typed camera as JSON: keyframes of pan, tilt, roll, zoom, "
                   "truck, pedestal, dolly or poses (docs/camera.md); the move instead of the path's effect")
    p.add_argument("--subject", action="append", default=[], metavar="MASK.png:PATH.json",
                   help="a thing that moves: its region as a mask image (white) and its own path (repeatable, up "
                        "to 6; docs/subjects.md)")
    p.add_argument("--subjects", default=None, metavar="FILE.json", help="subjects (and still regions) as JSON")
    p.add_argument("--still", action="append", default=[], metavar="MASK.png", help="a region that must not move")
    p.add_argument("--preset", default=None, help="a named bundle of effect, camera knobs, post effects, look and "
                   "duration (`d2v presets`); the flags given here override it")
    p.add_argument("--effect", default=None, help="camera move; `d2v effects` lists them (default auto)")
    p.add_argument("--seed", type=int, default=None, help="(default 0)")
    p.add_argument("--end-zoom", type=float, default=None, help="peak zoom (default: the effect's own)")
    p.add_argument("--shake", type=float, default=None, help="handheld shake 0-1 (default 0)")
    p.add_argument("--speed-ramp", type=float, default=None, help="slow-fast-slow ramp 0-1 (default 0)")
    p.add_argument("--motion-blur", type=float, default=None, help="shutter as a fraction of a frame, 0-1 "
                   "(default 0)")
    p.add_argument("--loop", action="store_true", default=None, help="end where it starts, for a seamless loop")
    p.add_argument("--allow-borders", action="store_true", default=None, help="let the view leave the image")


# The request fields that flags set one to one (size, depth and look need a word more), and
# the flag's argparse name where it is not the field's.
FLAG_FIELDS = ("preset", "effect", "duration_s", "fps", "backend", "seed", "end_zoom", "shake", "speed_ramp",
               "motion_blur", "loop", "allow_borders", "auto_correct", "post", "glitch_amount", "crf", "x264_preset",
               "prompt", "negative_prompt", *SVD_FIELDS)
FLAG_DEST = {"duration_s": "duration"}


def _is_lut_file(look: str | None) -> bool:
    return look is not None and look.lower().endswith(LUT_SUFFIX)


def _request_from_args(args: argparse.Namespace):
    """The request the flags ask for: only the flags given (see _add_request_flags)."""
    from d2v.models import DEPTH_MODES, parse_request, read_json_file  # `--depth`: a mode, or a file

    given = {field: value for field in FLAG_FIELDS
             if (value := getattr(args, FLAG_DEST.get(field, field), None)) is not None}
    if getattr(args, "size", None) is not None:
        given["width"], given["height"] = args.size
    if getattr(args, "depth", None) in DEPTH_MODES:
        given["depth"] = args.depth
    look = getattr(args, "look", None)
    if look is not None:  # a .cube file travels with the job under its own name (render reads it)
        given["look"] = Path(look).name if _is_lut_file(look) else look
    from d2v.subjects import subject_fields

    given.update(subject_fields(getattr(args, "subject", ()), getattr(args, "subjects", None),
                                getattr(args, "still", ())))
    if getattr(args, "path", None) is not None:
        given["path"] = read_json_file(args.path, "path", InvalidPathError)
    if getattr(args, "camera", None) is not None:
        given["camera"] = read_json_file(args.camera, "camera")
    return parse_request(given)


def _lut_bytes(look: str | None) -> bytes | None:
    """The bytes of `--look FILE.cube`, or None for a named look."""
    if not _is_lut_file(look):
        return None
    p = Path(look)
    if not p.is_file():
        raise InvalidRequestError(f"look file not found: {p} (a {LUT_SUFFIX} 3D LUT, or one of: {', '.join(LOOKS)})")
    from d2v.looks import MAX_LUT_BYTES

    try:
        if (size := p.stat().st_size) > MAX_LUT_BYTES:
            raise InvalidRequestError(f"look file {p} is {size / 2**20:.0f} MiB; the limit is "
                                      f"{MAX_LUT_BYTES / 2**20:.0f} MiB (a 65-point .cube is about 7 MiB)")
        return p.read_bytes()
    except OSError as e:
        raise InvalidRequestError(f"cannot read look file {p}: {e.strerror}") from None


BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}|"  # "d2v: base  42%|████      |"


class _NoBar:
    """What tqdm is when it shows nothing (-q, or stderr not a terminal), without importing it."""

    n = 0

    def set_description_str(self, desc: str, refresh: bool = True) -> None:
        pass

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def _progress_bar(desc: str, quiet: bool):
    """A progress bar on stderr, 0-100%: tqdm where it is shown (tqdm hides itself when stderr
    is not a terminal, too; importing it and its package metadata costs 50 ms)."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=100, unit="%", desc=desc, file=sys.stderr, bar_format=BAR_FORMAT)


@contextmanager
def _lean_imports():
    """Imports for a render, without start-up work it never uses (on one core, before any
    frame): pydantic's search for plugins (it reads the entry points of every installed
    distribution: 50 ms; d2v uses none), OpenBLAS's thread pool (started when numpy loads:
    30 ms on two cores; a render's linear algebra is 3x3 matrices, single-threaded either way)
    and the garbage collector: the imports make some 50,000 objects that live as long as the
    process, and collecting while they load finds next to nothing (25 ms). Once a process has
    imported them here they are frozen (`gc.freeze`), so no later collection walks them again,
    the one at exit included (`_quick_shutdown`: 30 ms less). A caller's own settings are kept,
    and the environment is put back afterwards, for the processes this one starts."""
    lean = {"PYDANTIC_DISABLE_PLUGINS": "__all__", "OPENBLAS_NUM_THREADS": "1"}
    before = {name: os.environ.get(name) for name in lean}
    for name, value in lean.items():
        if before[name] is None:
            os.environ[name] = value
    first = "d2v.pipeline" not in sys.modules  # (a process that has them already keeps its objects as they are)
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
        if first:
            gc.freeze()
        if collecting:
            gc.enable()


def _seconds(value: float) -> str:
    """7.958333 -> '7.96 s', 4.0 -> '4 s'."""
    return f"{value:.2f}".rstrip("0").rstrip(".") + " s"


def _print_table(table: dict[str, str]) -> None:
    width = max(len(name) for name in table)
    for name, description in table.items():
        print(f"{name:<{width}}  {description}")


def cmd_effects(args: argparse.Namespace) -> int:
    _print_table(EFFECTS)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from d2v.presets import presets

    _print_table({name: entry["description"] for name, entry in presets().items()})
    return 0


def cmd_looks(args: argparse.Namespace) -> int:
    _print_table(LOOKS)
    return 0


def cmd_trajectory(args: argparse.Namespace) -> int:
    from d2v.images import check_image_header, read_image_bytes
    from d2v.stages import plan

    request = _request_from_args(args)
    _, w, h = check_image_header(read_image_bytes(args.image))
    print(plan(request, w, h).model_dump_json(indent=2 if args.pretty else None))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    with _lean_imports():
        from d2v.models import DEPTH_MODES
        from d2v.pipeline import render_job
    from d2v.images import oriented_size, read_image_bytes
    from d2v.store import store_from_env
    from d2v.trajectory import check_on_photo

    request = _request_from_args(args)
    lut_bytes = _lut_bytes(args.look)
    image_bytes = read_image_bytes(args.image)
    depth_bytes = read_image_bytes(args.depth, "depth map") if args.depth not in DEPTH_MODES else None
    check_on_photo(request, *oriented_size(image_bytes))  # a path off the photo: refused before the job exists
    store = store_from_env()
    out = _video_output(args.output)

    bar = _progress_bar("d2v", args.quiet)

    seen: set[str] = set()

    def progress(stage: str, fraction: float) -> None:
        seen.add(stage)
        bar.set_description_str(f"d2v: {stage}", refresh=False)
        bar.update(round(fraction * 100) - bar.n)

    try:
        manifest = render_job(image_bytes, request, store, depth_bytes=depth_bytes, lut_bytes=lut_bytes,
                              output_path=out, progress=progress, use_cache=not args.no_cache)
    finally:
        bar.close()
    keys = manifest.keys
    if "cached" in seen:
        print(f"from the store: job {manifest.job_id} rendered this image and request before (--no-cache renders "
              "again)")
    print(f"wrote {out} ({manifest.frames} frames, {manifest.width}x{manifest.height}, "
          f"{_seconds(manifest.duration_s)}, effect {manifest.effect}, job {manifest.job_id})")
    print(f"poster:   {store.url(keys['poster'])}")
    print(f"manifest: {store.url(keys['manifest'])}")
    if manifest.fidelity is not None:
        print(manifest.fidelity.one_line())
    if "fidelity" in keys:
        print(f"fidelity: {store.url(keys['fidelity'])}")
    if manifest.cost is not None:
        c = manifest.cost
        print(f"cost: {c.total:.6f} {c.currency} ({c.cpu_seconds:.1f} CPU-s, {c.gpu_seconds:.1f} GPU-s)")
    for note in manifest.notes:
        print(f"note: {note}")
    return 0


EXIT_FOLLOWED, EXIT_MISSED, EXIT_UNMEASURED, EXIT_CLAMPED = 0, 1, 3, 4
MAX_CHECK_SAMPLES = 240  # `d2v check --samples`: ten seconds of 24 fps, every frame
# Post effects that keep each frame the camera's own frame at its own time (glitch touches a
# few frames): the video can be measured against the camera move. The others re-time or
# reshape the frames.
CAMERA_PRESERVING_POST = {"glitch"}


def cmd_check(args: argparse.Namespace) -> int:
    """Measure a video against a photo and a path: did its camera go where the path says?
    The settings come from a job's manifest (--job, --manifest) or from the render flags
    (size, frame rate and length from the video unless given). Exit 0 followed, 1 missed,
    2 bad input, 3 unmeasured, 4 clamped (the plan kept the view inside the photo, away from
    the path as drawn)."""
    import cv2

    from d2v.encode import decode_frames, probe_video
    from d2v.fidelity import fidelity_image, sample_indices
    from d2v.stages import plan
    from d2v.subject_check import draw_subjects, measure_with_subjects
    from d2v.trajectory import move_points

    if not 2 <= args.samples <= MAX_CHECK_SAMPLES:
        raise InvalidRequestError(f"--samples must be 2..{MAX_CHECK_SAMPLES}, got {args.samples}")
    if args.picture:  # (refused now, not after the whole check)
        picture_path = Path(args.picture)
        if picture_path.suffix.lower() not in (".png", ".jpg", ".jpeg") or picture_path.is_dir():
            raise InvalidRequestError(f"--picture must name a .png (or .jpg) file, got {args.picture}")
        if not picture_path.parent.is_dir():
            raise InvalidRequestError(f"--picture: no folder {picture_path.parent} to write {picture_path.name} in")
    from_job = bool(args.job or args.manifest)
    flat = args.depth == "none"  # (checked as flat on purpose: no note that depth was left out)
    check = _job_check(args) if from_job else _flags_check(args)
    request, image, depth, video = check
    retimed = [name for name in request.post if name not in CAMERA_PRESERVING_POST]
    if retimed:
        print(f"note: the post effects {', '.join(retimed)} re-time or reshape the frames; the check compares the "
              "video with the camera move, which they change (a job's manifest has the check made before them)",
              file=sys.stderr)
    facts = probe_video(video)
    if facts["frames"] < 2:
        raise InvalidRequestError(f"{video} has {facts['frames']} frame(s): a camera move needs at least 2")
    trajectory = plan(request, image.width, image.height, has_depth=depth is not None)
    frames, count, _ = decode_frames(video, sample_indices(max(1, facts["frames"]), args.samples))
    if (facts["width"], facts["height"]) != (request.width, request.height):
        frames = {i: cv2.resize(f, (request.width, request.height), interpolation=cv2.INTER_AREA)
                  for i, f in frames.items()}
    report, scene = measure_with_subjects(frames, image.rgb, trajectory, request, n_frames=count, depth=depth)
    if args.picture:
        picture = fidelity_image(image.rgb, move_points(request, trajectory), report)
        if scene is not None:
            draw_subjects(picture, scene, report.subjects, picture.shape[1] / image.width)
        if not cv2.imwrite(str(args.picture), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise InvalidRequestError(f"cannot write the picture to {args.picture} (use a .png path)")
    print(report.model_dump_json(indent=2) if args.json else report.one_line())
    if report.verdict != "followed" and depth is None and not (from_job or flat):
        _note_checked_without_depth()
    return {"followed": EXIT_FOLLOWED, "missed": EXIT_MISSED, "clamped": EXIT_CLAMPED}.get(report.verdict,
                                                                                         EXIT_UNMEASURED)


def _note_checked_without_depth() -> None:
    """A clip rendered with a depth map (given, or estimated) but checked without one is measured
    against another move (the planner sizes orbit, dolly_zoom, parallax and a view's borders by
    depth) and located as a flat picture, which its parallax is not: its 'missed' or
    'unmeasured' may say nothing about the render. Say so, and what to give."""
    print("note: checked without a depth map: if the video was rendered with one (--depth FILE, or an estimated "
          "depth), give the same --depth FILE, or check the job itself (--job ID): depth changes the planned move "
          "and how frames are located", file=sys.stderr)


def _flags_check(args: argparse.Namespace):
    """(request, image, depth, video) from the command line: every render flag is taken; the
    look is left out (it grades colour, it does not move the camera)."""
    from d2v.encode import probe_video
    from d2v.images import load_image
    from d2v.models import DEPTH_MODES
    from d2v.render import load_depth_map

    if args.video is None or args.image is None:  # the move (path, camera, subjects): the request says
        raise InvalidRequestError("check needs VIDEO --image IMAGE --path PATH.json (or --camera CAMERA.json, or "
                                  "subjects), or --job ID (or --manifest FILE) to take them from a job")
    facts = probe_video(args.video)
    if not (facts["width"] and facts["height"]):  # (a text file, a broken or animated image: no picture size)
        raise InvalidRequestError(f"{args.video}: no video picture could be read from it (give the MP4 to check)")
    image = load_image(args.image)
    depth = None
    if args.depth not in (None, *DEPTH_MODES):
        depth = load_depth_map(args.depth, image.width, image.height)
    width, height = args.size or (facts["width"] - facts["width"] % 2, facts["height"] - facts["height"] % 2)
    fps = args.fps or min(60, max(1, round(facts["fps"] or 24)))
    duration = args.duration or min(20.0, max(0.5, facts["frames"] / fps))
    args.size, args.fps, args.duration = (width, height), fps, duration
    args.look, args.depth = None, None
    return _request_from_args(args), image, depth, args.video


def _job_check(args: argparse.Namespace):
    """(request, image, depth, video) of a stored job: its manifest's request (every setting,
    preset expanded), the photo and depth it was rendered from, its video (or VIDEO)."""
    import tempfile

    from pydantic import ValidationError

    from d2v.depth import cached_depth
    from d2v.images import decode_image, read_image_bytes
    from d2v.lifecycle import DEPTH, INPUT_PREFIX, MANIFEST, Jobs, file_key, job_key
    from d2v.models import DEPTH_MODES, Manifest, one_line_errors
    from d2v.render import load_depth_map

    if args.path is not None or args.camera is not None:
        raise InvalidRequestError("the move is taken from the job's manifest: leave --path and --camera out with "
                                  "--job / --manifest")
    store = None
    if args.job:
        store = existing_store()
        status = Jobs(store).get(_job_id(args.job))
        if status is None:
            raise InvalidRequestError(f"no job {args.job!r} in the store at {store.describe()}")
        key = status.result.manifest_key if status.status == "succeeded" and status.result is not None else None
        if key is None and status.status == "failed" and store.exists(file_key(status.job_id, MANIFEST)):
            key = file_key(status.job_id, MANIFEST)  # a rerun that failed: the video before it is still there
        if key is None:
            raise InvalidRequestError(f"job {args.job} is {status.status}: there is no video to check yet")
        manifest = Manifest.model_validate_json(store.get_bytes(key))
        folder = None
    else:
        where = Path(args.manifest)
        try:
            manifest = Manifest.model_validate_json(where.read_bytes())
        except OSError as e:
            raise InvalidRequestError(f"cannot read the manifest {where}: {e.strerror}") from None
        except ValidationError as e:
            raise InvalidRequestError(f"{where} is not a d2v manifest: {one_line_errors(e, limit=3)}") from None
        except ValueError as e:
            raise InvalidRequestError(f"{where} is not a d2v manifest: {str(e).splitlines()[0]}") from None
        folder = where.parent  # a local store's job folder holds the photo and the video beside it

    def job_file(name: str) -> bytes | None:
        if folder is not None:
            f = folder / name
            return f.read_bytes() if f.is_file() else None
        key = job_key(manifest.job_id, name)
        return store.get_bytes(key) if store.exists(key) else None

    if args.image:
        image_bytes = read_image_bytes(args.image)
    else:
        ext = manifest.image.get("extension") or {"JPEG": "jpg", "PNG": "png"}.get(manifest.image.get("format"), "")
        names = [INPUT_PREFIX + ext] if ext else []
        if folder is not None:
            names += [f.name for f in folder.glob(INPUT_PREFIX + "*")]
        elif store is not None:
            names += [k.rsplit("/", 1)[1] for k in store.list(job_key(manifest.job_id, INPUT_PREFIX))]
        image_bytes = next((data for name in names if (data := job_file(name)) is not None), None)
        if image_bytes is None:
            raise InvalidRequestError(f"the photo of job {manifest.job_id} is not beside its manifest: pass --image")
    image = decode_image(image_bytes)
    depth = None
    if manifest.depth_source == "user" and (data := job_file(DEPTH)) is not None:
        depth = load_depth_map(data, image.width, image.height)
    elif manifest.depth_source == "estimated":
        depth = cached_depth(image_bytes, store or _folder_store(folder), image.width, image.height,
                             model=manifest.depth_model)
        if depth is None:
            raise InvalidRequestError(f"job {manifest.job_id} was rendered with an estimated depth that is no longer "
                                      "in the store's depth cache: pass its depth map with --depth, or render again")
    if args.depth not in (None, *DEPTH_MODES):
        depth = load_depth_map(args.depth, image.width, image.height)
    video = args.video
    if video is None:
        if folder is not None and (folder / "video.mp4").is_file():
            video = str(folder / "video.mp4")
        elif store is not None:
            tmp = tempfile.NamedTemporaryFile(prefix="d2v-check-", suffix=".mp4", delete=False)
            tmp.close()
            store.get_file(manifest.keys.get("video") or file_key(manifest.job_id, "video.mp4"), tmp.name)
            video = tmp.name
        else:
            raise InvalidRequestError(f"no video.mp4 beside {args.manifest}: give the VIDEO to check")
    return manifest.request, image, depth, video


def _job_id(text: str) -> str:
    from d2v.store import validate_job_id

    validate_job_id(text)
    return text


def _folder_store(folder: Path):
    """The local store a job folder (ROOT/jobs/ID/) belongs to."""
    from d2v.store import LocalStore

    return LocalStore(folder.parent.parent)


def existing_store():
    """The store the environment names (S3, or D2V_DATA_DIR, default ./d2v-data), refusing a
    local directory that does not exist: run elsewhere, `d2v report` would say 0 jobs and
    leave an empty ./d2v-data behind."""
    from d2v.store import store_from_env, store_settings

    settings = store_settings()
    if "D2V_DATA_DIR" in settings and not Path(settings["D2V_DATA_DIR"]).is_dir():
        named = "D2V_DATA_DIR" if os.environ.get("D2V_DATA_DIR") else "the default ./d2v-data"
        raise InvalidRequestError(f"no store at {settings['D2V_DATA_DIR']} ({named}): run where you rendered, or set "
                                  "D2V_DATA_DIR to the store's directory (D2V_S3_ENDPOINT for S3)")
    return store_from_env()


def cmd_models_check(args: argparse.Namespace) -> int:
    """Load each configured base (or the one named by --base) and say how it runs."""
    from d2v.bases import BASES, configured, load_base
    from d2v.errors import ModelNotConfiguredError

    models = configured()
    names = [args.base] if args.base else list(models)
    if not names:
        raise ModelNotConfiguredError("no generative base configured: set " + ", ".join(
            b.setting for b in BASES.values()) + " to a model directory or hub id (`d2v models make-tiny --base "
            "svd|ltx|wan DIR` makes a tiny one for trying things out)")
    for name in names:
        if name not in models:
            raise ModelNotConfiguredError(f"no {BASES[name].title} model configured: set {BASES[name].setting} "
                                          f"(`d2v models make-tiny --base {name} DIR` makes a tiny one)")
        model, _ = load_base(name, models[name], args.device)
        info = model.describe()
        frames = info.get("num_frames") or info.get("clip_frames")
        print(f"{name} model {models[name]} loads: {frames} keyframes, {info.get('dtype')} on {info.get('device')}")
        for key, value in info.items():
            print(f"  {key}: {value}")
    return 0


def _model_folder(directory: str) -> str:
    """Where `models make-tiny*` writes: a folder that is not a file, made if need be."""
    p = Path(directory)
    if p.exists() and not p.is_dir():
        raise InvalidRequestError(f"{p} is a file: give a folder to write the model into")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidRequestError(f"cannot make the folder {p}: {e.strerror}") from None
    return directory


def cmd_models_make_tiny(args: argparse.Namespace) -> int:
    from d2v.bases import BASES
    from d2v.bases.tiny import make_tiny

    out = make_tiny(args.base, _model_folder(args.directory), seed=args.seed)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    base = BASES[args.base]
    print(f"wrote a tiny random-weight {args.base} pipeline ({base.title}'s layout) to {out} ({size / 2**20:.1f} MiB)")
    print(f"try: {base.setting}={out} d2v render IMAGE --path PATH.json --backend {args.base} -o out.mp4")
    return 0


def cmd_models_make_tiny_depth(args: argparse.Namespace) -> int:
    from d2v.depth import make_tiny_depth

    out = make_tiny_depth(_model_folder(args.directory), seed=args.seed, kind=args.kind)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    print(f"wrote a tiny random-weight depth model to {out} ({size / 2**10:.0f} KiB)")
    print(f"try: D2V_DEPTH_MODEL={out} d2v depth IMAGE -o depth.png")
    print(f" or: D2V_DEPTH_MODEL={out} d2v render IMAGE --path PATH.json --effect dolly_zoom -o out.mp4")
    return 0


def cmd_depth(args: argparse.Namespace) -> int:
    """The depth stage alone: the configured model's depth map of a photo, as a 16-bit PNG
    (brighter = nearer) that `d2v render --depth FILE` takes back."""
    import time

    from d2v.depth import depth_model_setting, encode_depth_png, shared_depth_model
    from d2v.images import load_image

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise InvalidRequestError(f"output must be a .png file (16-bit grayscale), got {out}")
    image = load_image(args.image)
    model = depth_model_setting()
    estimator = shared_depth_model(model, args.device)  # unset or broken: DepthModelError naming the setting
    t0 = time.perf_counter()
    depth = estimator.estimate(image.rgb)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        out.write_bytes(encode_depth_png(depth))
    except OSError as e:
        raise InvalidRequestError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {out} ({image.width}x{image.height}, 16-bit, brighter = nearer; {model} on "
          f"{estimator.device}, {seconds:.2f} s)")
    return 0


def shipped_serve_configs() -> Path:
    """The Serve configs installed with d2v (package data of `deployments`), found from
    wherever `d2v serve` runs."""
    from importlib.resources import files

    return Path(str(files("deployments") / "configs"))


def serve_config_path(given: str | None) -> Path:
    """--config: a file; or a shipped config by name (`serve-gpu.yaml`, or as it was
    named in the repository, `configs/serve-gpu.yaml`); none: the shipped serve-local.yaml."""
    shipped = shipped_serve_configs()
    if given is None:
        return shipped / "serve-local.yaml"
    p = Path(given)
    if p.is_file():
        return p
    if p.parent in (Path("."), Path("configs")) and (shipped / p.name).is_file():
        return shipped / p.name
    names = ", ".join(sorted(c.name for c in shipped.glob("*.yaml")))
    raise InvalidRequestError(f"Serve config not found: {p} (give a file, or one shipped with d2v: {names})")


def _load_serve_config(p: Path) -> dict:
    import yaml
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        data = yaml.safe_load(p.read_text())
        ServeDeploySchema.model_validate(data)
    except yaml.YAMLError as e:
        raise InvalidRequestError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InvalidRequestError(f"{p} is not a valid Serve config: {where}: {first['msg']}") from None
    return data


def cmd_report(args: argparse.Namespace) -> int:
    from d2v.report import format_report, parse_since, report

    parse_since(args.since)  # a bad span is the user's one-line error before the store is opened
    data = report(existing_store(), args.since)
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    return 0


# `serve run`, with Ray started first: a Ray of our own (its metrics on a fixed port), or the
# cluster RAY_ADDRESS names. The settings d2v resolved travel as the job's runtime_env, so the
# Serve controller, the HTTP proxy and every replica get them whichever raylet starts them
# (a joined cluster's raylets never saw this shell's environment). `serve run` then uses
# that Ray. argv: metrics port, the runtime_env as JSON, then `serve run`'s own arguments.
SERVE_RUN = ("import json, os, sys, ray; port = int(sys.argv.pop(1)); env = json.loads(sys.argv.pop(1)); "
             "address = os.environ.get('RAY_ADDRESS') or 'local'; "
             "ray.init(address=address, namespace='serve', runtime_env={'env_vars': env}, "
             "**({'_metrics_export_port': port or None} if address == 'local' else {})); "
             "from ray.serve.scripts import cli; cli()")
# What the launcher resolves and every process of the app must see alike.
HANDED_TO_REPLICAS = ("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "PYTHONPATH",
                      "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")
# glibc malloc for the long-lived Serve processes: 2 arenas instead of 8 per core, and a fixed
# mmap threshold, so buffers past 128 KiB (uploads, decoded images) go back to the system
# when freed instead of raising the threshold and staying in the heap. Over 10,000 mixed
# requests the ingress grew +162 MiB without these, +53 with them (bench/RESULTS.md, soak).
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
DEFAULT_METRICS_PORT = 8080


def replica_env(env: dict[str, str]) -> dict[str, str]:
    """The settings every replica must see as the launcher resolved them: every D2V_* setting
    (store, queue, models, keys, limits) and the few Ray Serve ones d2v sets."""
    return {k: v for k, v in env.items() if k.startswith("D2V_") or k in HANDED_TO_REPLICAS}


def with_runtime_env(config: dict, env: dict[str, str]) -> dict:
    """The Serve config with `env` in every application's runtime_env (the config's own
    values for other names kept; d2v's resolved ones win): what `serve run` users get from
    `d2v serve --print-config`."""
    for app in config.get("applications") or []:
        runtime_env = app.setdefault("runtime_env", {}) or {}
        app["runtime_env"] = runtime_env
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    """Runs the Serve app with Ray's own `serve run` (it honours every field of the
    config), and says when it is ready. Ctrl-C stops Serve and the local Ray cleanly.

    Ray: a Ray of its own, unless RAY_ADDRESS names a running one to join (said either way).
    Ports: the config's HTTP port (8000) and 8080 for metrics, or free ones when those are
    taken (said); a port given with --port / --metrics-port must be free."""
    import tempfile

    import yaml

    from d2v.jobqueue import free_port
    from d2v.store import store_settings

    for flag, value in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        if value is not None and not 0 <= value <= 65535:
            raise InvalidRequestError(f"{flag} must be in 0..65535, got {value}")
    config_path = serve_config_path(args.config)
    config = _load_serve_config(config_path)
    http = config.setdefault("http_options", {})
    moved = []
    if args.port is None and not _port_free(http.get("port", 8000)):
        moved.append(f"HTTP port {http.get('port', 8000)} is taken")
        http["port"] = free_port()
    elif args.port is not None:
        if args.port and not _port_free(args.port):
            raise InvalidRequestError(f"port {args.port} is in use: pass --port with a free port (or leave it out: "
                                      "d2v picks one)")
        http["port"] = args.port or free_port()
    metrics_port = args.metrics_port
    if os.environ.get("RAY_ADDRESS"):
        metrics_port = 0  # a joined cluster serves metrics on its own port (ray start --metrics-export-port)
    elif metrics_port is None:
        metrics_port = DEFAULT_METRICS_PORT
        if not _port_free(metrics_port):
            moved.append(f"metrics port {metrics_port} is taken")
            metrics_port = free_port(besides={http["port"]})
    elif metrics_port and not _port_free(metrics_port):
        raise InvalidRequestError(f"metrics port {metrics_port} is in use: pass --metrics-port with a free port "
                                  "(0: any free port)")
    host, port = http.get("host", "127.0.0.1"), http.get("port", 8000)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if moved:
        print(f"d2v: {' and '.join(moved)}: using {url}" + (f" and metrics port {metrics_port}" if metrics_port
              else ""), file=sys.stderr)
    env = {**os.environ, **store_settings()}  # an absolute data dir: replicas have other working dirs
    # Ray starts workers at nice 15 to keep its own daemons responsive; on a box that runs
    # d2v serve, rendering is the work (it ran 1.31x -> 1.18x of in-process at nice 0).
    env.setdefault("RAY_worker_niceness", "0")
    # Serve's controller wakes every 0.1 s by default: on an idle 2-core box that alone took
    # 0.034 cores (0.010 at 0.5 s), CPU the jobs could use. Jobs take seconds, so do the
    # controller's decisions (autoscaling, health): 0.5 s loses nothing users see.
    env.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")
    # Uploads past the limit are cut in Serve's HTTP proxy, not buffered whole (deployments.proxy).
    env.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "deployments.proxy:middlewares")
    for name, value in MALLOC_ENV.items():
        env.setdefault(name, value)
    if env.get("RAY_ADDRESS") and "RAY_AUTH_MODE" not in env and (
            env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray/auth_token").is_file()):
        # `ray start --head` (Ray 2.60) requires its token from every client: the one it saved.
        env["RAY_AUTH_MODE"] = "token"
    redis_server = None
    if not env.get("D2V_REDIS_URL") and not args.print_config:
        # The job queue: a real Redis of our own, append-only in a directory that outlives
        # this run, so jobs queued when it stopped are still queued when it starts again.
        from d2v.jobqueue import RedisServer

        redis_dir = Path(env.get("D2V_REDIS_DIR") or Path.home() / ".cache" / "d2v" / "redis")
        redis_server = RedisServer(redis_dir).start()
        env["D2V_REDIS_URL"] = redis_server.url
    handed = replica_env(env)
    config = with_runtime_env(config, handed)
    if args.print_config:  # for `serve run` / `serve deploy` users: the config with d2v's settings in it
        print(yaml.safe_dump(config, sort_keys=False), end="")
        if "D2V_REDIS_URL" not in handed:
            print("d2v: note: D2V_REDIS_URL is not set: set it to your Redis before printing the config, or the "
                  "replicas look for one at redis://127.0.0.1:6379/0", file=sys.stderr)
        return 0
    own = tempfile.NamedTemporaryFile("w", prefix="d2v-serve-", suffix=".yaml", delete=False)
    with own:
        yaml.safe_dump(config, own, sort_keys=False)
    described = str(config_path) + (f" on port {port}" if port != 8000 else "")
    try:
        return _run_serve(Path(own.name), described, env, handed, url, args.ready_timeout, metrics_port)
    finally:
        if redis_server is not None:
            redis_server.stop()
        Path(own.name).unlink(missing_ok=True)


# Ray's C++ parts print a crash-like report when a signal stops them ("*** SIGTERM received at
# time=... PC: @ ..."): expected while we stop the group, so not passed on.
SIGNAL_REPORT = r"\*\*\* SIG[A-Z]+ received at time=|(\] logging\.cc:\d+: |^)\s*(PC: )?@\s+0x[0-9a-f]+"


def _relay(stream, stopping: list[int]) -> None:
    """Pass `serve run`'s output on to our stderr, without the signal reports while stopping."""
    import re

    report = re.compile(SIGNAL_REPORT)
    for line in iter(stream.readline, ""):
        if stopping and report.search(line):
            continue
        sys.stderr.write(line)
        sys.stderr.flush()


def _run_serve(config_path: Path, described: str, env: dict[str, str], handed: dict[str, str], url: str,
               ready_timeout: float, metrics_port: int) -> int:
    import signal
    import subprocess
    import threading
    import time
    import urllib.request

    command = [sys.executable, "-c", SERVE_RUN, str(metrics_port), json.dumps(handed), "run", str(config_path)]
    joining = env.get("RAY_ADDRESS")
    metrics = (f"http://127.0.0.1:{metrics_port}/metrics" if not joining
               else "the cluster's own port (ray start --metrics-export-port)")
    ray_said = (f"joining the Ray at {joining} (RAY_ADDRESS); d2v's settings go to every replica in the app's "
                "runtime_env" if joining else "starting a Ray of its own (RAY_ADDRESS=auto joins a running one)")
    print(f"d2v: starting Serve with {described}: {ray_said}\n"
          f"d2v: store: {env.get('D2V_S3_ENDPOINT') or env['D2V_DATA_DIR']}; queue: {env['D2V_REDIS_URL']}; "
          f"metrics: {metrics}", file=sys.stderr)
    # Its own session: a terminal's Ctrl-C reaches only us, and we pass on exactly one
    # SIGINT, so `serve run` shuts Serve and its local Ray down once, cleanly.
    stopping: list[int] = []
    started: list[subprocess.Popen] = []

    def stop(signum, frame) -> None:
        if not stopping and started and started[0].poll() is None:
            started[0].send_signal(signal.SIGINT)
        stopping.append(signum)

    # Handlers first, then the child: started from a script (`d2v serve &`) this process
    # inherits SIGINT ignored, and so would `serve run`, which then never hears our Ctrl-C.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started.append(proc)
    relay = threading.Thread(target=_relay, args=(proc.stdout, stopping), daemon=True)
    relay.start()
    if stopping:  # asked to stop while it started
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + ready_timeout
    while not stopping and proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    print(f"d2v: ready at {url} (the drawing page; API docs at {url}/docs); Ctrl-C stops",
                          file=sys.stderr)
                    break
        except OSError:
            time.sleep(0.5)
    code = _wait_for_serve(proc, stopping)
    relay.join(timeout=2)
    _wait_port_closed(url)
    if stopping:
        print("d2v: stopped", file=sys.stderr)
        return 0
    return code


def _wait_port_closed(url: str, wait_s: float = 15.0) -> None:
    """Ray's HTTP proxy is a worker of a raylet that exits on its own schedule: on a loaded
    machine it can hold the port a moment after `serve run` has gone (on a Ray that was
    joined, whose raylet stays, more than 5 s once in a .ci/run here). "Stopped" means the port is
    closed, so wait for that (bounded)."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.2)


def _port_free(port: int) -> bool:
    """Nobody listens on it. (Connections of a server just stopped, in TIME_WAIT, do not count:
    servers bind with SO_REUSEADDR, so d2v serve restarted on its port gets it.)"""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


STOP_GRACE_S = 20  # Serve's own shutdown after SIGINT; then SIGTERM, then SIGKILL: out within 30 s


def _wait_for_serve(proc, stopping: list[int]) -> int:
    """Wait for `serve run` to end; once asked to stop, give it STOP_GRACE_S to shut Serve
    and its Ray down, then stop it harder, so a process manager never has to."""
    import signal
    import subprocess

    while True:
        try:
            code = proc.wait(timeout=0.5 if not stopping else STOP_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            if not stopping:
                continue
        for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)  # its session: `serve run` and what it started
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        code = proc.wait()
        break
    _sweep(proc.pid)
    return code


def _sweep(group: int, wait_s: float = 5.0) -> None:
    """What `serve run` started and left behind as it exited (Ray's daemons, a replica still
    shutting down, the HTTP proxy holding the port): stopped before we say we stopped."""
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def cmd_submit(args: argparse.Namespace) -> int:
    """Render on a farm: send the job, follow it by long polling, download the video and
    print the manifest's summary. Exit 0 done, 1 the job failed or the farm stayed away,
    2 a refusal (the farm's own detail)."""
    from d2v.client import FarmClient, JobFailedError
    from d2v.images import read_image_bytes
    from d2v.models import DEPTH_MODES, FidelitySummary

    request = _request_from_args(args)  # checked here first: a bad flag costs no upload
    out = _video_output(args.output)
    image_bytes = read_image_bytes(args.image)
    depth_bytes = read_image_bytes(args.depth, "depth map") if args.depth not in DEPTH_MODES else None
    lut_bytes = _lut_bytes(getattr(args, "look", None))
    with FarmClient(args.server, args.api_key, args.timeout) as farm:
        job = farm.submit(image_bytes, request, image_name=Path(args.image).name, depth=depth_bytes, lut=lut_bytes)
        job_id = job["job_id"]
        bar = _progress_bar(f"job {job_id}", args.quiet)

        def show(status: dict) -> None:
            bar.set_description_str(f"job {job_id}: {status['stage'] or status['status']}", refresh=False)
            bar.update(round(status["progress"] * 100) - bar.n)

        try:
            status = farm.wait(job_id, show)
        finally:
            bar.close()
        if status["status"] == "failed":
            raise JobFailedError(f"job {job_id} failed: {status['error']}")
        farm.download(job_id, out)
        manifest = farm.manifest(job_id)
    print(f"wrote {out} ({manifest['frames']} frames, {manifest['width']}x{manifest['height']}, "
          f"{_seconds(manifest['duration_s'])}, effect {manifest['effect']}, job {job_id})")
    if manifest.get("fidelity"):
        print(FidelitySummary.model_validate(manifest["fidelity"]).one_line())
    for note in manifest.get("notes", []):
        print(f"note: {note}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """The caller's latest jobs on a farm, newest first, one per line."""
    from d2v.client import FarmClient

    with FarmClient(args.server, args.api_key, args.timeout) as farm:
        jobs = farm.jobs(args.limit)
    for job in jobs:
        if (result := job.get("result")) is not None:
            what = f"{result['frames']} frames, {result['width']}x{result['height']}"
        elif job["status"] == "failed":
            what = job.get("error") or ""
        else:
            what = f"{job.get('stage') or ''} {job['progress']:.0%}"
        print(f"{job['job_id']}  {job['status']:<9}  {job.get('created_at') or '-'}  {what}")
    if not jobs:
        print("no jobs yet", file=sys.stderr)
    return 0


def _add_farm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, help="the farm's URL, e.g. http://farm:8000")
    p.add_argument("--api-key", default=os.environ.get("D2V_API_KEY"),
                   help="the farm's API key (default: $D2V_API_KEY)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to keep retrying while the farm is down or busy (default 60)")


def _video_output(path: str) -> Path:
    """The MP4 to write: an .mp4 name, its folder made (or refused) before any work, so a
    folder that cannot be made is the caller's one-line error, not ours after the render."""
    out = Path(path)
    if out.suffix.lower() != ".mp4":
        raise InvalidRequestError(f"output must be an .mp4 file, got {out}")
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "ab"):  # (what a permission check cannot tell: root, read-only mounts, /proc)
            pass
    except (FileExistsError, NotADirectoryError):
        raise InvalidRequestError(f"cannot write {out}: a file is in the way of its folder {out.parent}") from None
    except OSError as e:
        raise InvalidRequestError(f"cannot write {out}: {e.strerror}") from None
    if not existed:
        out.unlink()
    return out


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Retime a video with the interpolate stage: its frames and timing kept, frame i of
    the output at time i/fps (DESIGN.md), on the frames' own clock when it is uneven."""
    import numpy as np

    from d2v.encode import decode_video_times, encode_mp4
    from d2v.interpolate import interpolate_frames, method_for_frames, method_from_env

    if not 1 <= args.fps <= 240:
        raise InvalidRequestError(f"--fps must be in 1..240, got {args.fps}")
    out = _video_output(args.output)
    frames, fps_in, times = decode_video_times(args.input)
    if times is None and not fps_in > 0:
        raise InvalidRequestError(f"{args.input}: the video does not say its frame rate")
    h, w = frames.shape[1:3]
    method = method_for_frames(args.method or method_from_env(), h, w)
    result = interpolate_frames(frames, fps_in, args.fps, loop=args.loop, method=method, times=times)
    size = ""
    if w % 2 or h % 2:
        # H.264 (4:2:0) wants even sides: repeat the last column / row, keeping every input pixel.
        result = np.pad(result, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        size = f", {w}x{h} -> {result.shape[2]}x{result.shape[1]} (edge repeated for H.264)"
    encode_mp4(iter(result), out, args.fps, crf=args.crf, preset=args.preset)
    rate = f"{fps_in:g} fps" if times is None else f"a variable rate over {times[-1]:g} s"
    print(f"wrote {out} ({len(frames)} frames at {rate} -> {len(result)} at {args.fps} fps, {method}{size})")
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    """Resize a video with the upscale stage to exactly --size (cover crop on aspect change),
    its frames and their times kept."""
    from d2v.encode import decode_video_times, encode_mp4
    from d2v.upscale import MAX_SHARPEN, method_for, upscale_frames

    width, height = args.size
    if width < 2 or height < 2 or width % 2 or height % 2 or max(width, height) > 8192:
        raise InvalidRequestError(f"--size must have even sides in 2..8192 for H.264, got {width}x{height}")
    if args.sharpen is not None and not 0 <= args.sharpen <= MAX_SHARPEN:
        raise InvalidRequestError(f"--sharpen must be in 0..{MAX_SHARPEN:g} (0 = off), got {args.sharpen}")
    out = _video_output(args.output)
    frames, fps, times = decode_video_times(args.input)
    rate = max(1, round(fps))  # the encoder takes whole frame rates (an uneven clock keeps its times)
    result = upscale_frames(frames, width, height, sharpen_amount=args.sharpen)
    encode_mp4(iter(result), out, rate, crf=args.crf, preset=args.preset, times=times)
    h, w = frames.shape[1:3]
    note = f", rate {fps:g} -> {rate}" if abs(rate - fps) > 1e-3 and times is None else ""
    note += f", a variable rate over {times[-1]:g} s kept" if times is not None else ""
    print(f"wrote {out} ({len(result)} frames, {w}x{h} -> {width}x{height}, {method_for(w, h, width, height)}{note})")
    return 0


class _Unused:
    """A subcommand's parser that will not parse: whatever is added to it is dropped."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self


class _OneCommand:
    """The subcommands, of which only `command` is built (its name and arguments)."""

    def __init__(self, sub, command: str):
        self._sub, self._command = sub, command
        self.found = False

    def add_parser(self, name: str, **kwargs):
        if name != self._command:
            return _Unused()
        self.found = True
        return self._sub.add_parser(name, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """`d2v`'s parser. `command`: the parser of that one subcommand (how `main` parses a known
    command: building the other 16 subcommands' arguments is 10-20 ms of every start-up); a
    name that is no command builds them all, so argparse can list them."""
    parser = _Parser(prog="d2v", description="Draw a path on a photo, get a video whose camera follows it.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    if command is not None:
        sub = _OneCommand(sub, command)

    p = sub.add_parser("render", help="render a video from an image and a drawn path")
    _add_request_flags(p)
    _add_depth_flag(p)
    p.add_argument("-o", "--output", required=True, help="the MP4 to write")
    p.add_argument("--no-cache", action="store_true", help="render again even if this job is in the store")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("check", help="measure whether a video's camera followed a drawn path (exit 0 followed, "
                       "1 missed, 2 bad input, 3 unmeasured, 4 clamped)")
    p.add_argument("video", nargs="?", default=None, help="the video to check (any tool's, made from the same photo "
                   "and path); with --job or --manifest, the job's own unless given")
    p.add_argument("--job", default=None, help="a job in the store (D2V_DATA_DIR or S3): every setting, the photo "
                   "and the video from its manifest")
    p.add_argument("--manifest", default=None, help="a job's manifest.json: every setting from it (the photo and "
                   "video beside it, unless given)")
    p.add_argument("--image", default=None, help="the photo the video was made from")
    _add_render_settings(p)
    p.add_argument("--depth", default=None, help="the depth map the video was rendered with, if any")
    p.add_argument("--samples", type=int, default=16, help="frames measured (default 16; more is slower)")
    p.add_argument("--picture", default=None, help="also write the photo with the drawn and measured path (PNG)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("submit", help="render on a farm: send the job, follow its progress, download the video")
    _add_request_flags(p)
    _add_depth_flag(p)
    _add_farm_flags(p)
    p.add_argument("-o", "--output", required=True, help="the MP4 to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list your latest jobs on a farm, newest first")
    _add_farm_flags(p)
    p.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("effects", help="list the camera effects")
    p.set_defaults(func=cmd_effects)
    p = sub.add_parser("presets", help="list the named presets (render --preset NAME)")
    p.set_defaults(func=cmd_presets)
    p = sub.add_parser("looks", help="list the named colour grades (render --look NAME)")
    p.set_defaults(func=cmd_looks)

    p = sub.add_parser("serve", help="run the render farm's HTTP API (Ray Serve) on this machine")
    p.add_argument("--config", default=None, help="a Serve config YAML, or the name of one shipped with d2v: "
                   "serve-local.yaml (the default: one CPU box) or serve-gpu.yaml")
    p.add_argument("--port", type=int, default=None, help="serve HTTP on this port (default: the config's, 8000, "
                   "or a free one when that is taken; 0: any free port)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus metrics (d2v_* and Ray's) at http://127.0.0.1:PORT/metrics (default 8080, or a "
                   "free one when that is taken)")
    p.add_argument("--print-config", action="store_true",
                   help="print the Serve config with d2v's resolved settings in its runtime_env (for `serve run` and "
                   "`serve deploy`), and exit")
    p.add_argument("--ready-timeout", type=float, default=600, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("report", help="the farm's KPIs from the store: videos, success rate, times, cost per video")
    p.add_argument("--since", default="7d", help="jobs that ended in this span: 30m, 24h, 7d, 2w (default 7d)")
    p.add_argument("--json", action="store_true", help="print JSON (the body of GET /v1/stats)")
    p.set_defaults(func=cmd_report)

    models = sub.add_parser("models", help="check or make generative base models, make a tiny depth model"
                            ).add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    p = models.add_parser("check", help="do the configured bases (D2V_SVD_MODEL, D2V_LTX_MODEL, D2V_WAN_MODEL) "
                          "load, and on what device")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--base", choices=("svd", "ltx", "wan"), default=None, help="only this base")
    p.set_defaults(func=cmd_models_check)
    p = models.add_parser("make-tiny", help="write a tiny random-weight pipeline of a base (tests and demos)")
    p.add_argument("--base", choices=("svd", "ltx", "wan"), default="svd", help="which base's layout (default svd)")
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_models_make_tiny)
    p = models.add_parser("make-tiny-depth", help="write a tiny random-weight depth model (tests and demos)")
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", default="depth_anything", choices=TINY_DEPTH_KINDS,
                   help="the architecture (default depth_anything, like Depth Anything V2)")
    p.set_defaults(func=cmd_models_make_tiny_depth)

    p = sub.add_parser("depth", help="write the depth map of a photo (the depth stage alone, D2V_DEPTH_MODEL)")
    p.add_argument("image", help="the photo (JPEG, PNG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, help="the PNG to write (16-bit grayscale, brighter = nearer)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.set_defaults(func=cmd_depth)

    p = sub.add_parser("interpolate", help="retime a video to another frame rate (optical flow)")
    p.add_argument("input", help="the video (MP4, ...)")
    p.add_argument("--fps", type=int, required=True, help="output frames per second")
    p.add_argument("-o", "--output", required=True, help="the MP4 to write")
    p.add_argument("--method", choices=["flow", "blend", "learned"], default=None,
                   help="flow (default), blend, or learned (D2V_INTERP_MODEL)")
    p.add_argument("--loop", action="store_true", help="the end blends into the start (seamless loop)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("upscale", help="resize a video to an exact size (Lanczos + sharpening, or D2V_SR_MODEL)")
    p.add_argument("input", help="the video (MP4, ...)")
    p.add_argument("--size", type=_size, required=True, help="WIDTHxHEIGHT, even sides")
    p.add_argument("-o", "--output", required=True, help="the MP4 to write")
    p.add_argument("--sharpen", type=float, default=None,
                   help="unsharp amount after enlarging, 0..3 (default 0.3, 0 = off)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("trajectory", help="print the per-frame camera as JSON")
    _add_request_flags(p)
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    p.set_defaults(func=cmd_trajectory)

    if command is not None and not sub.found:
        return build_parser()
    return parser


# Arguments that name a file or folder: given as '' (an unset shell variable), Path('') is '.',
# the current folder, which the commands would read, or write models into, as if named.
_FILE_ARGS = ("image", "input", "video", "directory", "output", "path", "depth", "camera", "subjects", "still",
              "subject", "picture", "manifest", "look", "config")


def _refuse_empty_file_names(args: argparse.Namespace) -> None:
    for dest in _FILE_ARGS:
        value = getattr(args, dest, None)
        if value == "" or (isinstance(value, list) and "" in value):
            flag = dest if dest in ("image", "input", "video", "directory") else "--" + dest
            raise _UsageError(f"{flag} is an empty name: give a {'folder' if dest == 'directory' else 'file'}")


@contextmanager
def _stop_on_sigterm():
    """While a command runs, SIGTERM raises `Stopped` in the main thread, as Ctrl-C raises
    KeyboardInterrupt: the default would end the process on the spot, the job it runs left
    'running' and its video's temporary file left behind. The handler before is put back after
    (main() called in-process, as tests do). `d2v serve` installs its own handlers over this one."""
    import signal
    import threading

    def stop(signum, frame):
        raise Stopped("stopped (SIGTERM)")

    # (Only the main thread may set handlers; one set by whoever runs us, or SIG_IGN, stays.)
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    with _stop_on_sigterm():
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(argv[0] if argv and not argv[0].startswith("-") else None).parse_args(argv)
        _refuse_empty_file_names(args)
        return args.func(args)
    except _UsageError as e:
        print(f"d2v: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except D2VError as e:
        print(f"d2v: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_BAD_INPUT)  # d2v.client's errors: 1 for a farm away or a failed job
    except Stopped as e:
        print(f"d2v: {e}", file=sys.stderr)
        return 143  # (128 + SIGTERM, as the shell reports a process SIGTERM ended)
    except KeyboardInterrupt:
        print("d2v: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if os.environ.get("D2V_DEBUG"):
            raise
        print(f"d2v: internal error: {type(e).__name__}: {e} (set D2V_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
