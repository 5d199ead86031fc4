"""The whole pipeline in one process: image + request -> MP4, poster and manifest in a store.

    depth -> trajectory -> base (camera | svd | ltx | wan; auto picks) -> interpolate -> upscale -> post, look -> encode -> store

This is what `d2v render` and batch jobs run; the Serve app runs the same stage code
split across deployments. With the camera backend every output frame is rendered
directly at the output rate and size (the camera is known at any time), so interpolate
and upscale pass frames through, and rendering streams into the encoder on a second
thread: both cores work at once and no clip is ever held in memory whole. Post effects (d2v.post) wrap the render as a
lazy clip, so they stream too; the look (d2v.looks) grades each frame on the render thread.
"""

from __future__ import annotations

import hashlib
import queue
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from d2v import __version__
from d2v.cost import StageUsage, cuda_device_name, price_table
from d2v.depth import ImageDepth, depth_for, depth_model_setting
from d2v.encode import I420, encode_mp4
from d2v.looks import look_for
from d2v.errors import D2VError, JobBusyError, ModelNotConfiguredError, Stopped
from d2v.images import LoadedImage, check_depth_header, decode_image
from d2v.models import CameraTrajectory, DepthSource, FidelityReport, JobResult, Manifest, RenderRequest, job_id_for
from d2v.render import CameraRenderer, load_depth_map
from d2v.segment import segment_model_setting
from d2v.subjects import renderer_for
from d2v.fidelity import sample_indices
from d2v.post import CameraFrames, PostContext, apply_post
from d2v.stages import (
    CHECK_METHOD,
    check_and_store,
    encode_and_store,
    finishing_methods,
    graded,
    job_look,
    make_manifest,
    plan,
    render_base,
    resize,
    retime,
    store_results,
)
from d2v.bases import BASES, choose_backend, configured
from d2v.lifecycle import (
    LUT, MANIFEST, REQUEST, VIDEO, Heartbeat, Jobs, StaleAttempt, failure_of, file_key, input_key, lease_setting,
    process_owner,
)
from d2v.store import Store

ProgressFn = Callable[[str, float], None]


def content_job_id(image_bytes: bytes, depth_bytes: bytes | None, request: RenderRequest,
                   svd_model: str | None = None, depth_model: str | None = None,
                   lut_bytes: bytes | None = None) -> str:
    """The job id: the same inputs (image, depth map, .cube LUT), request, d2v version and
    models give the same job (the depth model counts when it would estimate: depth "auto"
    and no depth map given; the segmentation model when there are subjects to refine)."""
    models = configured(overrides={"svd": svd_model} if svd_model else None)
    backend, _ = choose_backend(request.backend, models)
    model = models.get(backend, "") if backend in BASES else ""
    if request.depth == "auto" and not depth_bytes:
        model += "|depth:" + (depth_model or depth_model_setting() or "")
    if request.subjects and segment_model_setting():  # the regions' outlines are the model's
        model += "|segment:" + segment_model_setting()
    if lut_bytes:
        model += "|lut:" + hashlib.sha256(lut_bytes).hexdigest()
    salt = (depth_bytes or b"") + __version__.encode() + model.encode()
    return job_id_for(image_bytes + salt, request)


def require_backend(request: RenderRequest, svd_model: str | None = None,
                    models: dict[str, str] | None = None) -> None:
    """Fail before any work when the backend cannot run here (no silent fallback; `auto` always
    can: the camera backend when no base is configured)."""
    base = BASES.get(request.backend)
    if base is None:
        return
    models = models if models is not None else configured(overrides={"svd": svd_model} if svd_model else None)
    if request.backend not in models:
        raise ModelNotConfiguredError(
            f"backend {base.name!r} needs {base.title} weights: set {base.setting} to a model directory "
            f"or hub id (try `d2v models make-tiny --base {base.name} DIR` for a tiny test model), or use "
            "--backend camera"
        )


def resolve_backend(request: RenderRequest, models: dict[str, str] | None = None) -> tuple[RenderRequest, str | None]:
    """The request as it renders (`auto` replaced by the base it picks) and why, for the manifest."""
    backend, why = choose_backend(request.backend, configured() if models is None else models)
    if why is None:
        return request, None
    return request.model_copy(update={"backend": backend}), why


def note_backend_choice(manifest: Manifest, asked: RenderRequest, why: str) -> Manifest:
    """`auto` rendered with the base `resolve_backend` chose: the manifest keeps the request as
    asked and says which base and why (the CLI's render_job and the farm's runner alike)."""
    manifest.request = asked
    manifest.notes.append(why)
    manifest.settings = {**manifest.settings, "backend_choice": why}
    return manifest


def job_result(manifest: Manifest) -> JobResult:
    """A finished job's `result` (status.json, GET /v1/jobs/{id}) from its manifest."""
    return JobResult(
        video_key=manifest.keys["video"],
        poster_key=manifest.keys["poster"],
        manifest_key=manifest.keys["manifest"],
        fidelity_key=manifest.keys.get("fidelity"),
        fidelity=manifest.fidelity.summary() if manifest.fidelity else None,
        cost=manifest.cost,
        frames=manifest.frames,
        fps=manifest.fps,
        width=manifest.width,
        height=manifest.height,
    )


def cached_manifest(store: Store, job_id: str) -> Manifest | None:
    """A finished job's manifest, when its video is in the store too."""
    if not (store.exists(file_key(job_id, MANIFEST)) and store.exists(file_key(job_id, VIDEO))):
        return None
    return Manifest.model_validate_json(store.get_bytes(file_key(job_id, MANIFEST)))


class _Timed:
    """Wraps a frame iterator, adding up the seconds spent producing frames."""

    def __init__(self, frames: Iterable[np.ndarray]):
        self._it = iter(frames)
        self.seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self.seconds += time.perf_counter() - t0


def prefetch(frames: Iterable[np.ndarray], depth: int = 6) -> Iterator[np.ndarray]:
    """Run a frame producer on its own thread (cv2 and PyAV release the GIL), so the
    consumer (the encoder) works in parallel. Errors in the producer re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in frames:
                if stop.is_set():
                    return
                q.put(frame)
            q.put(done)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    worker = threading.Thread(target=produce, name="d2v-render", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def render_job(
    image_bytes: bytes,
    request: RenderRequest,
    store: Store,
    *,
    depth_bytes: bytes | None = None,
    lut_bytes: bytes | None = None,
    job_id: str | None = None,
    output_path: str | Path | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
    owner: str | None = None,
) -> Manifest:
    """Render one job and put its results in `store` under jobs/{job_id}/.

    Validates everything before any work; the same image and request give the same
    job id, and a finished job is returned from the store without rendering again.
    """
    report = progress or (lambda stage, fraction: None)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    require_backend(request)
    price_table()  # a bad price table is the user's error now, not after the render
    image = decode_image(image_bytes)
    depth = None
    if depth_bytes is not None:  # (an empty file too: it is a bad depth map, not "no depth map")
        check_depth_header(depth_bytes)
        depth = load_depth_map(depth_bytes, image.width, image.height)
    look_for(request, lut_bytes)  # a missing or malformed .cube is refused before the job exists
    job_id = job_id or content_job_id(image_bytes, depth_bytes, request, lut_bytes=lut_bytes)

    if use_cache and (cached := cached_manifest(store, job_id)) is not None:
        if output_path is not None:
            store.get_file(file_key(job_id, VIDEO), output_path)
        report("cached", 1.0)
        return cached

    jobs = Jobs(store, lease_setting())
    # Ours now, unless another live process runs the same job (a second `d2v render` of
    # the same image and request): then say who, rather than render it twice.
    claim = jobs.claim(job_id, owner or process_owner("cli"), rerun=True)
    if claim.status is None:
        raise JobBusyError(f"job {job_id} is not free: {claim.reason}; wait for it"
                           + (" or pass --no-cache" if use_cache else ", then render again"))
    status = claim.status
    try:  # from the claim on, every write is inside: a store error fails the job, never leaves it running
        store.put_bytes(input_key(job_id, image.extension), image_bytes)
        store.put_bytes(file_key(job_id, REQUEST), request.model_dump_json(indent=2).encode())
        if lut_bytes:
            store.put_bytes(file_key(job_id, LUT), lut_bytes)  # the look's .cube: the stages read it from here
        with Heartbeat(jobs, status) as beat:
            def beat_and_report(stage: str, fraction: float) -> None:
                if beat.lost is not None:  # the job is no longer this attempt's: stop rendering
                    raise beat.lost
                beat.progress(stage, fraction)
                report(stage, fraction)

            rendering, why = resolve_backend(request)
            manifest = _run_stages(image, image_bytes, depth, rendering, store, job_id, output_path, beat_and_report)
            if why is not None:
                note_backend_choice(manifest, request, why)
        if beat.lost is not None:
            raise beat.lost
        wall = time.perf_counter() - t_start
        manifest.stage_seconds["total"] = round(wall, 4)
        manifest.cost = process_cost(manifest, wall, time.process_time() - cpu_start)
        store.put_bytes(file_key(job_id, MANIFEST), manifest.model_dump_json(indent=2).encode())
        jobs.succeed(status, job_result(manifest), manifest=manifest)
    except StaleAttempt as e:  # another runner, or the farm's reconciler, has the job now: write nothing
        raise JobBusyError(f"{e}: render it again to take it back") from None
    except BaseException as e:  # never leave a 'running' job behind, a bug or Ctrl-C included
        reason = str(e) if isinstance(e, D2VError) else f"internal error: {type(e).__name__}: {e}"
        if isinstance(e, KeyboardInterrupt):
            reason = str(e) if isinstance(e, Stopped) else "stopped by the user (Ctrl-C)"
        try:
            jobs.fail(status, reason, failure_of(e))  # the caller's mistakes and Ctrl-C are not counted as ours
        except StaleAttempt:
            pass  # logged by the lifecycle: the job is another's now
        raise
    report("done", 1.0)
    return manifest


def process_cost(manifest: Manifest, wall_s: float, cpu_s: float):
    """In-process renders are charged as one stage, `process`: the cores it used on average
    (its CPU time over its wall time, every thread counted) and, when it rendered on a CUDA
    device, that whole GPU for the base stage onwards."""
    device = cuda_device_name() if "cuda" in str(manifest.settings.get("device", "")) else None
    usage = {"process": StageUsage(seconds=wall_s, cpus=round(cpu_s / wall_s, 4) if wall_s > 0 else 0.0,
                                   gpus=1.0 if device else 0.0)}
    return price_table().price(usage, device)


def _run_stages(image, image_bytes, user_depth, request, store, job_id, output_path, report) -> Manifest:
    # The depth stage: the request's map, the cached or a new estimate, or none.
    report("depth", 0.0)
    t0 = time.perf_counter()
    scene = depth_for(image_bytes, image.rgb, store, request, user_depth=user_depth)
    depth_s = time.perf_counter() - t0
    report("trajectory", 0.0)
    trajectory = plan(request, image.width, image.height, has_depth=scene.depth is not None)
    if request.backend in BASES:
        manifest = _run_generative(image, scene, request, trajectory, store, job_id, output_path, report)
    else:
        manifest = stream_camera_job(image, scene.depth, request, trajectory, store, job_id, output_path=output_path,
                                     progress=report, depth_source=scene.source, depth_model=scene.model,
                                     depth_method=scene.method())
    manifest.stage_seconds = {"depth": round(depth_s, 4), **manifest.stage_seconds}
    return manifest


def drawn_as_planes(n: int) -> set[int]:
    """Of an n-frame camera clip whose renderer draws I420 planes (`CameraRenderer.draws_planes`),
    the frames drawn so: every one. Those also wanted as pictures (the path check's samples, the
    poster) are turned back into RGB off the render thread (`as_picture`), as a player shows them:
    drawn in RGB, they needed the photo's pyramid in RGBA too (0.1 s of a 12 MP photo's finest
    level) and the encoder's conversion."""
    return set(range(n))


def as_picture(frame: np.ndarray | I420) -> np.ndarray:
    """A frame as an RGB picture the caller may keep: a copy, or the planes shown as RGB."""
    return frame.rgb() if isinstance(frame, I420) else frame.copy()


def stream_camera_job(
    image: LoadedImage,
    depth: np.ndarray | None,
    request: RenderRequest,
    trajectory: CameraTrajectory,
    store: Store,
    job_id: str,
    *,
    output_path: str | Path | None = None,
    progress: ProgressFn | None = None,
    depth_source: DepthSource | None = None,
    depth_model: str | None = None,
    depth_method: str | None = None,
    resources: dict[str, float] | None = None,
    usage: dict[str, StageUsage] | None = None,
) -> Manifest:
    """The camera backend's frames are final as rendered (every output frame, at the output
    size), so they stream straight into the encoder: render on a second thread, encode on
    this one, both cores busy, no clip held whole. Then the video, poster and manifest go to
    the store. `d2v render` runs this, and so does the farm's base replica for camera jobs:
    it passes the `resources` it holds (render+encode, upload and check are charged with
    them) and the `usage` of the stages before it (d2v.cost)."""
    report = progress or (lambda stage, fraction: None)
    look = job_look(request, store, job_id)  # before any work: a bad .cube fails the job now
    seconds: dict[str, float] = {}
    renderer = renderer_for(image.rgb, depth, request)  # subjects: each its own layer, moving
    n = len(trajectory)
    sampled_at = sample_indices(n)  # the frames the path check measures
    # A plain move, flat or with depth, reaches the encoder as the I420 planes it takes, drawn
    # by the renderer (no RGB frame, no conversion), but for the frames also wanted in RGB.
    planes = set()
    if (not request.post and look is None and isinstance(renderer, CameraRenderer)
            and renderer.draws_planes(trajectory, request.motion_blur)):
        planes = drawn_as_planes(n)
    # The path check measures the camera move: the frames as rendered, before post and look.
    base = CameraFrames(renderer, trajectory, motion_blur=request.motion_blur, samples=request.motion_blur_samples,
                        keep=sampled_at, planes=planes)
    clip = apply_post(base, request.post, PostContext.for_job(request, trajectory, image.width, image.height, depth))
    total = len(clip)
    poster: list[np.ndarray] = []
    finishing: dict[str, float] = {}  # render + post ("post": the chain renders as it goes), look

    # Without post effects every frame is rendered once, in order: the path check starts now and
    # measures each sampled frame as soon as it is rendered, beside the render and x264 (the
    # check tracks frame to frame, in order, as the render makes them). With post effects,
    # which may skip sampled frames (they are rendered afterwards), it starts after the last frame.
    arriving = _Arriving(base.kept, sampled_at) if clip is base else None

    def check() -> FidelityReport:
        t0 = time.perf_counter()
        if arriving is not None:
            sampled = arriving
        else:
            sampled = {i: base.kept[i] if i in base.kept else base.frame(i) for i in sampled_at}
        measured = check_and_store(sampled, n, image, request, trajectory, store, job_id, depth=depth,
                                   scene=getattr(renderer, "scene", None))
        seconds["check"] = time.perf_counter() - t0 - (arriving.waited if arriving is not None else 0.0)
        return measured

    checking = ThreadPoolExecutor(1, thread_name_prefix="d2v-check")
    measuring: list[Future] = []  # the check: from the start, or once the last frame is rendered

    def frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(graded(clip, look, finishing, rgb={total // 2})):
            if i == total // 2:
                poster.append(as_picture(frame))
            if arriving is not None:
                arriving.rendered()
            yield frame
        if arriving is None:
            # Every frame is rendered, the encoder still has the last ones in flight: the path
            # check starts now, beside x264's tail, not after the whole video is written.
            measuring.append(checking.submit(check))

    produced = _Timed(frames())
    counted = _count(prefetch(produced, _frames_ahead(trajectory.width, trajectory.height)), total, report)

    with checking, tempfile.TemporaryDirectory(prefix="d2v-") as tmp:
        video_path = Path(output_path) if output_path else Path(tmp) / "video.mp4"
        video_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if arriving is not None:
            measuring.append(checking.submit(check))
        try:
            stats = encode_mp4(counted, video_path, request.fps, crf=request.crf, preset=request.x264_preset)
        finally:
            if arriving is not None:
                arriving.close()  # a render that stopped early: the check stops waiting for frames
        render_encode_wall = time.perf_counter() - t0
        # The render happens inside the post chain: base is the whole producer less the look.
        seconds["base"] = produced.seconds - finishing["look"]
        if look is not None:
            seconds["look"] = finishing["look"]
        seconds["interpolate"] = 0.0
        seconds["upscale"] = 0.0
        # The encoder's own time: the wall time less the time it waited for frames.
        seconds["encode"] = max(0.0, render_encode_wall - counted.waited)
        seconds["render_encode_wall"] = render_encode_wall

        report("encode", 1.0)
        t0 = time.perf_counter()
        keys = store_results(store, job_id, video_path, poster[0], image.info())
        seconds["upload"] = time.perf_counter() - t0

        report("check", 0.0)
        fidelity = measuring[0].result()
    final = "none: the camera backend renders every output frame at the output size"
    manifest = make_manifest(
        job_id=job_id,
        request=request,
        trajectory=trajectory,
        image_info=image.info(),
        frames=stats.frames,
        width=stats.width,
        height=stats.height,
        stage_seconds=seconds,
        methods={
            "base": "camera: plane homography" + (" + depth warp" if depth is not None else "")
            + ", streamed into the encoder",
            "interpolate": final,
            "upscale": final,
            "check": CHECK_METHOD,
            **finishing_methods(request, look),
            **({"depth": depth_method} if depth_method else {}),
        },
        keys=keys,
        depth_map=depth is not None,
        fidelity=fidelity,
        depth_source=depth_source,
        depth_model=depth_model,
        usage=None if resources is None else {
            **(usage or {}), **{stage: StageUsage(seconds=seconds[name], **resources) for stage, name in
                                (("render_encode", "render_encode_wall"), ("upload", "upload"), ("check", "check"))}},
    )
    store.put_bytes(keys["manifest"], manifest.model_dump_json(indent=2).encode())
    return manifest


def _run_generative(image, scene: ImageDepth, request, trajectory, store, job_id, output_path, report) -> Manifest:
    """A base's keyframes guided by the camera render, then interpolate, upscale, encode: the
    same stage functions the Serve app runs, in this process."""
    from d2v.bases import load_base

    t0 = time.perf_counter()
    report("base", 0.02)
    base = BASES[request.backend]
    model, loaded = load_base(base.name, base.model(), "auto")  # one per process: a batch worker keeps it
    model_load_s = time.perf_counter() - t0
    clip = render_base(image.rgb, trajectory, request, depth=scene.depth, model=model,
                       progress=lambda stage, f: report(stage, 0.02 + 0.8 * f))
    clip = resize(retime(clip, request), request)
    report("encode", 0.85)
    clip.stage_seconds["model_load"] = model_load_s
    clip.settings = {**clip.settings, "model_load": "loaded" if loaded else "reused"}
    clip.methods = {"depth": scene.method(), **clip.methods}
    manifest = encode_and_store(clip, request, trajectory, image, store, job_id, depth=scene.depth,
                                depth_source=scene.source, depth_model=scene.model)
    if output_path is not None:
        store.get_file(manifest.keys["video"], output_path)
    return manifest


def _frames_ahead(width: int, height: int, budget: int = 48 << 20) -> int:
    """How many rendered frames may wait for the encoder: while it starts (PyAV's import and
    x264's set-up, about 0.1 s on one core) the render thread runs ahead instead of stopping at a
    full queue, so the second core works; 6 to 32 RGB frames, within `budget` bytes."""
    return max(6, min(32, budget // (width * height * 3)))


class _Arriving(Mapping):
    """The path check's sampled frames ({index: frame as rendered}) as the render makes them:
    reading one waits until it is rendered. `waited`: the seconds readers spent waiting."""

    def __init__(self, kept: dict[int, np.ndarray], indices: list[int]):
        self._kept, self._indices = kept, list(indices)
        self._changed = threading.Condition()
        self._closed = False
        self.waited = 0.0

    def rendered(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._indices:
            raise KeyError(index)
        t0 = time.perf_counter()
        with self._changed:
            self._changed.wait_for(lambda: index in self._kept or self._closed)
        self.waited += time.perf_counter() - t0
        if index not in self._kept:
            raise RuntimeError(f"the render stopped before frame {index}")
        return as_picture(self._kept[index])  # (off the render thread)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


class _count:
    """Reports render progress as frames reach the encoder, and how long it waited."""

    def __init__(self, frames: Iterator[np.ndarray], total: int, report: ProgressFn):
        self._frames, self._total, self._report = frames, total, report
        self.done = 0
        self.waited = 0.0

    def __iter__(self):
        return self

    def __len__(self) -> int:  # the encoder reserves the MP4's index for this many frames
        return self._total

    def __next__(self) -> np.ndarray:
        t0 = time.perf_counter()
        frame = next(self._frames)
        self.waited += time.perf_counter() - t0
        self.done += 1
        self._report("base", self.done / self._total)
        return frame
