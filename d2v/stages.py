"""The pipeline's stages as plain functions over a `Clip`, for the Serve app.

    plan(request, w, h)                  -> CameraTrajectory           (trajectory, CPU)
    render_base(image, trajectory, ...)  -> Clip of keyframes          (base: svd, ltx, wan; d2v.bases)
    retime(clip, request)                -> Clip at the output rate    (interpolate)
    resize(clip, request)                -> Clip at the output size    (upscale)
    encode_and_store(clip, ...)          -> Manifest, results in the store   (post, look, encode, then check)
    check_and_store(frames, ...)         -> FidelityReport, fidelity.png in the store   (check)

Each returns a new Clip carrying the frames and what every stage so far took and did,
so the manifest can say so. `d2v.pipeline` runs the same work streamed in one process.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection

import cv2
import numpy as np

from d2v import __version__
from d2v.cost import StageUsage, cuda_device_name, price_table
from d2v.encode import encode_mp4, encode_poster
from d2v.errors import ModelNotConfiguredError
from d2v.bases.common import (  # noqa: F401  (generate_following, Guide: d2v.stages' API before d2v.bases)
    Guide,
    ModelFrame,
    generate_following,
    make_guide,
    match_colour,
    measure_keyframes,
    model_frame_for,
    plan_keyframes,
    segment_overlap,
)
from d2v.fidelity import fidelity_image, sample_indices
from d2v.images import LoadedImage
from d2v.interpolate import interpolate_camera_frames, interpolate_frames, method_from_env
from d2v.models import CameraTrajectory, DepthSource, FidelityAttempt, FidelityReport, Manifest, RenderRequest
from d2v.render import CameraRenderer
from d2v.subject_check import draw_subjects, measure_with_subjects
from d2v.subjects import SubjectRenderer, check_subjects, renderer_for, still_trajectory
from d2v.lifecycle import FIDELITY, LUT, MANIFEST, POSTER, VIDEO, file_key, input_key, now_iso
from d2v.looks import Look, look_for
from d2v.post import ClipFrames, Frames, PostContext, apply_post, post_method
from d2v.store import Store
from d2v.trajectory import DEFAULT_PARALLAX, move_points, plan_trajectory
from d2v.upscale import method_for, upscale_frames

ProgressFn = Callable[[str, float], None]


@dataclass
class CameraSource:
    """What rendered a clip's keyframes with the camera backend: the image (and depth
    map) and the keyframes' cameras (`trajectory.frames[i]` made frame i). With it,
    `retime` renders exact in-between frames instead of estimating them."""

    image: np.ndarray
    trajectory: CameraTrajectory
    depth: np.ndarray | None = None


@dataclass
class Clip:
    frames: np.ndarray  # (N, H, W, 3) uint8
    fps: float  # the rate at which `frames` span the clip
    stage_seconds: dict[str, float] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    model: str | None = None
    settings: dict = field(default_factory=dict)
    camera: CameraSource | None = None  # set when the frames are camera renders (exact retiming)
    attempts: list[FidelityAttempt] = field(default_factory=list)  # generative base: each try, measured
    # What each stage so far was charged (d2v.cost): set by the farm's replicas, which know
    # the resources they hold; empty in-process, where the process is charged as a whole.
    usage: dict[str, StageUsage] = field(default_factory=dict)

    def next(self, frames: np.ndarray, fps: float, stage: str, seconds: float, method: str) -> "Clip":
        return Clip(
            frames=frames,
            fps=fps,
            stage_seconds={**self.stage_seconds, stage: round(seconds, 4)},
            methods={**self.methods, stage: method},
            model=self.model,
            settings=self.settings,
            camera=self.camera if stage == "base" else None,  # later stages' frames are no longer plain renders
            attempts=self.attempts,
            usage=dict(self.usage),
        )


def renders_final_frames(request: RenderRequest) -> bool:
    """True when the base stage's frames are already the output (the camera backend renders
    every output frame at the output size): they then stream straight into the encoder
    (`d2v.pipeline.stream_camera_job`) instead of travelling through the stages below."""
    return request.backend == "camera"


def plan(request: RenderRequest, image_width: int, image_height: int, *, has_depth: bool = False) -> CameraTrajectory:
    """With a depth map the planner keeps every depth's view inside the image, not just the plane's."""
    t0 = time.perf_counter()
    if request.subjects or request.still:
        check_subjects(request, image_width, image_height)
    if request.path is None and request.camera is None:  # subjects only: the camera holds still
        trajectory = still_trajectory(request, image_width, image_height)
    else:
        trajectory = plan_trajectory(request, image_width, image_height,
                                     depth_parallax=DEFAULT_PARALLAX if has_depth else None)
    trajectory.seconds = round(time.perf_counter() - t0, 4)
    return trajectory


def render_base(
    image: np.ndarray,
    trajectory: CameraTrajectory,
    request: RenderRequest,
    *,
    depth: np.ndarray | None = None,
    model=None,
    svd=None,
    progress: ProgressFn | None = None,
) -> Clip:
    """A generative base's keyframes (`model`: a loaded svd, ltx or wan model; `svd=` is its old
    name), guided by the camera render of the same move. (Camera frames are final as rendered:
    they go through `d2v.pipeline.stream_camera_job` instead.)"""
    if renders_final_frames(request):
        raise ValueError("camera jobs stream through d2v.pipeline.stream_camera_job, not render_base")
    model = model if model is not None else svd
    t0 = time.perf_counter()
    report = progress or (lambda stage, fraction: None)
    renderer = renderer_for(image, depth, request)  # subjects: their render is the guide
    if model is None:
        from d2v.bases import BASES

        base = BASES.get(request.backend)
        raise ModelNotConfiguredError(
            f"backend {request.backend!r} needs {base.title if base else 'model'} weights: set "
            f"{base.setting if base else 'its model setting'} (a model directory or hub id) for the base "
            "deployment, or use backend 'camera'"
        )
    return render_keyframes(renderer, trajectory, request, model, image, t0, report)


def svd_guide(renderer: CameraRenderer, request: RenderRequest, k: int, w: int, h: int) -> Guide:
    """The guide on a w x h canvas of exactly the request's aspect (no crop): `d2v.bases.common.make_guide`."""
    return make_guide(renderer, request, k, ModelFrame(w, h, (0, 0, w, h)))


def render_keyframes(renderer, trajectory, request, model, image, t0, report) -> Clip:
    """The base's keyframes over the whole move: one generation, or segments that share
    `segment_overlap` keyframes with the one before (held to its output, colour matched); each
    generation auto-corrected through the path check. Cropped to the output's view."""
    span_s = (len(trajectory) - 1) / request.fps if len(trajectory) > 1 else 1.0
    total, segments = plan_keyframes(span_s, model, request.fps)
    frame = model_frame_for(request, model)
    guide = make_guide(renderer, request, total, frame)
    scene = renderer.scene if isinstance(renderer, SubjectRenderer) else None  # auto-correct measures its subjects
    first = guide.part(*segments[0])
    if model.settings_for(request, first.cameras)["mode"] == "camera render":
        # Strength 0 ships the camera render itself: render every output frame at its own camera
        # (keyframes alone, interpolated, would cut the corners of the move's eased timing).
        keyframes, fps, attempts = np.stack(list(renderer.render(guide.full))), float(request.fps), []
        if request.auto_correct:  # the one attempt, measured like any other: the guide's keyframes
            measured = measure_keyframes(frame.crop(guide.frames), image, guide.cameras, request,
                                         depth=renderer.depth, scene=scene, max_samples=25)
            attempts = [FidelityAttempt(attempt=1, guidance_strength=0.0, fidelity=measured.summary(), shipped=True)]
    else:
        report("base", 0.1)
        keyframes, attempts = _generate_segments(model, image, guide, segments, request, renderer.depth, report,
                                                 scene)
        fps = (total - 1) / span_s if total > 1 else request.fps
    report("base", 1.0)
    shipped = next((a.guidance_strength for a in attempts if a.shipped), request.guidance_strength)
    settings = model.settings_for(request.model_copy(update={"guidance_strength": shipped}), first.cameras)
    settings.update({"keyframes": total, "segments": [list(s) for s in segments],
                     "segment_overlap": segment_overlap(model) if len(segments) > 1 else 0})
    clip = Clip(keyframes, fps, model=model.name, settings=settings, attempts=attempts)
    family = getattr(model, "family", "svd")
    return clip.next(keyframes, fps, "base", time.perf_counter() - t0, f"{family} {model.name}, camera-guided"
                     + (f", {len(segments)} segments" if len(segments) > 1 else ""))


def _generate_segments(model, image, guide: Guide, segments, request, depth, report, scene=None):
    """Each segment's keyframes, auto-corrected; after the first, a segment's shared keyframes are
    the previous one's output (held to it, and valid), and its new frames are colour matched to
    the previous segment on the shared ones. Returns the keyframes cropped to the view, and every
    attempt."""
    made: np.ndarray | None = None  # canvas frames so far
    attempts: list[FidelityAttempt] = []
    for n, (start, stop) in enumerate(segments):
        part = guide.part(start, stop)
        anchor = 0 if made is None else len(made) - start
        if anchor:
            part.frames = part.frames.copy()
            part.frames[:anchor] = made[start:]
            part.valid = part.valid.copy()
            part.valid[:anchor] = True
        sub = (lambda stage, f, n=n: report(stage, 0.1 + 0.9 * (n + f) / len(segments))) if len(segments) > 1 \
            else report
        frames, tries = generate_following(model, image, part.frames, request, part.cameras, depth=depth,
                                           valid=part.valid, report=sub, frame=guide.frame, anchor=anchor,
                                           scene=scene)
        if made is None:
            made = frames
        else:
            made = np.concatenate([made, match_colour(frames[anchor:], frames[:anchor], made[start:])])
        attempts += tries
    return guide.frame.crop(made), attempts


def retime(clip: Clip, request: RenderRequest) -> Clip:
    t0 = time.perf_counter()
    n = request.n_frames
    if len(clip.frames) == n:
        return clip.next(clip.frames, request.fps, "interpolate", 0.0, "none: base rendered every output frame")
    cam = clip.camera
    if cam is not None and len(cam.trajectory.frames) == len(clip.frames):
        # The camera is known between keyframes: render the in-betweens exactly.
        renderer = CameraRenderer(cam.image, cam.depth)
        frames = interpolate_camera_frames(renderer, cam.trajectory, clip.fps, request.fps, n_out=n,
                                           loop=request.loop)
        method = "camera: exact in-between renders"
    else:
        frames = interpolate_frames(clip.frames, clip.fps, request.fps, n_out=n, loop=request.loop)
        method = method_from_env()
    return clip.next(frames, request.fps, "interpolate", time.perf_counter() - t0,
                     f"{method}: {len(clip.frames)} -> {n} frames")


def resize(clip: Clip, request: RenderRequest) -> Clip:
    t0 = time.perf_counter()
    h, w = clip.frames.shape[1:3]
    method = method_for(w, h, request.width, request.height)
    frames = upscale_frames(clip.frames, request.width, request.height)
    label = "none: already at the output size" if method == "none" else f"{method}: {w}x{h} -> " \
            f"{request.width}x{request.height}"
    return clip.next(frames, clip.fps, "upscale", time.perf_counter() - t0, label)


def job_look(request: RenderRequest, store: Store, job_id: str) -> Look | None:
    """The job's look; a .cube look's file is the job's look.cube in the store (put there with
    the job). A missing or malformed file is an InvalidLookError: the job fails, saying why."""
    key = file_key(job_id, LUT)
    wants_file = request.look is not None and request.look.lower().endswith(".cube")
    return look_for(request, store.get_bytes(key) if wants_file and store.exists(key) else None)


def graded(clip: Frames, look: Look | None, seconds: dict[str, float], rgb: Collection[int] = ()):
    """The clip's frames in order, through the look, for the encoder: a graded frame comes as
    the I420 planes it takes (the look's table holds the encoder's luma: `Look.apply`), but
    those in `rgb` (wanted as pictures too: the poster). Adds the seconds spent making them
    (the post chain, with whatever it renders) and grading them to seconds["post"], ["look"]."""
    seconds.setdefault("post", 0.0)
    seconds.setdefault("look", 0.0)
    for i in range(len(clip)):
        t0 = time.perf_counter()
        frame = clip.frame(i)
        t1 = time.perf_counter()
        if look is not None:
            pixels = len(clip) * frame.shape[0] * frame.shape[1]  # a long clip builds the look's table at once
            frame = look.apply(frame, planes=i not in rgb, clip_pixels=pixels)
        seconds["post"] += t1 - t0
        seconds["look"] += time.perf_counter() - t1
        yield frame


def finishing_methods(request: RenderRequest, look: Look | None) -> dict[str, str]:
    """The manifest's "post" and "look" entries, for the jobs that have them."""
    methods = {}
    if request.post:
        methods["post"] = post_method(request.post, request.seed, request.glitch_amount)
    if look is not None:
        methods["look"] = look.method() + "; the path check measures the frames before it"
    return methods


def store_results(store: Store, job_id: str, video_path: Path, poster: np.ndarray, image_info: dict) -> dict:
    """Uploads the video and poster; returns the keys of everything the job produced."""
    keys = {
        "video": file_key(job_id, VIDEO),
        "poster": file_key(job_id, POSTER),
        "manifest": file_key(job_id, MANIFEST),
        "input": input_key(job_id, image_info["extension"]),
    }
    store.put_file(keys["video"], video_path, "video/mp4")
    store.put_bytes(keys["poster"], encode_poster(poster), "image/jpeg")
    return keys


def check_and_store(
    frames: dict[int, np.ndarray],
    n_frames: int,
    image: LoadedImage,
    request: RenderRequest,
    trajectory: CameraTrajectory,
    store: Store,
    job_id: str,
    *,
    depth: np.ndarray | None = None,
    attempts: list[FidelityAttempt] | None = None,
    scene=None,
) -> FidelityReport:
    """The check stage: measures the sampled output frames against the trajectory
    (`d2v.fidelity`) and stores fidelity.png, the photo with the drawn and the measured path.
    Never fails the job: a measurement that cannot be made is `unmeasured` with the reason."""
    # scene: the job's SubjectScene (subjects measured too), when the caller built one
    report, scene = measure_with_subjects(frames, image.rgb, trajectory, request, n_frames=n_frames, depth=depth,
                                          scene=scene)
    report.attempts = list(attempts or [])
    picture = fidelity_image(image.rgb, move_points(request, trajectory), report)
    if scene is not None:
        draw_subjects(picture, scene, report.subjects, picture.shape[1] / image.width)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if ok:
        store.put_bytes(file_key(job_id, FIDELITY), png.tobytes(), "image/png")
    return report


def make_manifest(
    *,
    job_id: str,
    request: RenderRequest,
    trajectory: CameraTrajectory,
    image_info: dict,
    frames: int,
    width: int,
    height: int,
    stage_seconds: dict[str, float],
    methods: dict[str, str],
    keys: dict[str, str],
    model: str | None = None,
    settings: dict | None = None,
    depth_map: bool = False,
    fidelity: FidelityReport | None = None,
    depth_source: DepthSource | None = None,
    depth_model: str | None = None,
    usage: dict[str, StageUsage] | None = None,
) -> Manifest:
    """depth_source: "user", "estimated" or "none" (`d2v.depth.ImageDepth`); None: "user"
    with a depth map, else "none" (callers that only take the request's own map).
    usage: what each stage was charged (d2v.cost), priced into `cost`; None leaves `cost`
    to the caller (in-process renders charge the process once it is done)."""
    depth_source = depth_source or ("user" if depth_map else "none")
    methods = {"trajectory": f"{trajectory.effect} ({trajectory.path_shape or 'path'})", **methods,
               "encode": f"libx264 crf {request.crf} {request.x264_preset}, yuv420p, faststart"}
    methods.setdefault("depth", {"user": "the request's depth map", "estimated": f"estimated by {depth_model}",
                                 "none": "none"}[depth_source])
    notes = list(trajectory.notes)
    return Manifest(
        job_id=job_id,
        request=request,
        effect=trajectory.effect,
        backend=request.backend,
        model=model,
        settings=settings or {},
        seed=request.seed,
        frames=frames,
        fps=request.fps,
        width=width,
        height=height,
        duration_s=frames / request.fps,
        image={**{k: image_info[k] for k in ("width", "height", "format")}, "depth_map": depth_map},
        stage_seconds={"trajectory": trajectory.seconds or 0.0, **{k: round(v, 4) for k, v in stage_seconds.items()}},
        clamped_frames=trajectory.clamped_frames,
        notes=notes,
        methods=methods,
        keys={**keys, **({"fidelity": file_key(job_id, FIDELITY)} if fidelity is not None else {})},
        fidelity=fidelity,
        depth_source=depth_source,
        depth_model=depth_model if depth_source == "estimated" else None,
        cost=price_table().price(usage, cuda_device_name()) if usage is not None else None,
        created_at=now_iso(),
        d2v_version=__version__,
    )


def encode_and_store(
    clip: Clip,
    request: RenderRequest,
    trajectory: CameraTrajectory,
    image: LoadedImage,
    store: Store,
    job_id: str,
    *,
    depth: np.ndarray | None = None,
    depth_source: DepthSource | None = None,
    depth_model: str | None = None,
    resources: dict[str, float] | None = None,
) -> Manifest:
    """Encode the clip, store the video and poster, check the path, store the manifest.
    depth_source / depth_model: where `depth` came from, for the manifest (see make_manifest).
    resources: {"cpus", "gpus"} held where this runs (a farm replica): encode, upload and
    check are charged with them, the earlier stages with what the clip carries."""
    look = job_look(request, store, job_id)
    t0 = time.perf_counter()
    final = apply_post(ClipFrames(clip.frames, trajectory), request.post,
                       PostContext.for_job(request, trajectory, image.width, image.height, depth))
    poster: list[np.ndarray] = []
    finishing: dict[str, float] = {}

    def frames():
        for i, frame in enumerate(graded(final, look, finishing, rgb={len(final) // 2})):
            if i == len(final) // 2:
                poster.append(frame)
            yield frame

    with tempfile.TemporaryDirectory(prefix="d2v-") as tmp:
        video = Path(tmp) / "video.mp4"
        stats = encode_mp4(frames(), video, request.fps, crf=request.crf, preset=request.x264_preset)
        encode_s = time.perf_counter() - t0 - finishing["post"] - finishing["look"]  # they run as it asks
        t1 = time.perf_counter()
        keys = store_results(store, job_id, video, poster[0], image.info())
        upload_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    n = len(clip.frames)
    fidelity = check_and_store({i: clip.frames[i] for i in sample_indices(n)}, n, image, request, trajectory,
                               store, job_id, depth=depth, attempts=clip.attempts)
    check_s = time.perf_counter() - t2
    usage = None
    if resources is not None:
        usage = {**clip.usage, **{stage: StageUsage(seconds=seconds, **resources)
                                  for stage, seconds in (("encode", encode_s), ("upload", upload_s), ("check", check_s))}}
    manifest = make_manifest(
        job_id=job_id, request=request, trajectory=trajectory, image_info=image.info(), frames=stats.frames,
        width=stats.width, height=stats.height,
        stage_seconds={**clip.stage_seconds, **({"post": finishing["post"]} if request.post else {}),
                       **({"look": finishing["look"]} if look is not None else {}),
                       "encode": encode_s, "upload": upload_s, "check": check_s},
        methods={**clip.methods, "check": CHECK_METHOD, **finishing_methods(request, look)}, keys=keys,
        model=clip.model, settings=clip.settings,
        depth_map=depth is not None, fidelity=fidelity, depth_source=depth_source, depth_model=depth_model,
        usage=usage,
    )
    store.put_bytes(keys["manifest"], manifest.model_dump_json(indent=2).encode())
    return manifest


CHECK_METHOD = "path check: ORB features + ECC alignment of sampled frames against the photo (d2v.fidelity)"
