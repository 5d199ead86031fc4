"""One Serve deployment per pipeline stage, each a thin wrapper around `d2v.stages`.

Frames travel between stages as `Clip`s through Ray's object store: the ingress passes
each stage's DeploymentResponse straight into the next call and awaits only the last.
Resources, replica counts and autoscaling come from the Serve config (deployments/configs/*.yaml);
the defaults here only make the app start on a laptop.

Each stage is charged with the resources its replica holds (d2v.cost: a GPU fraction x its
seconds, its cores x its seconds): the charges travel with the clip (`Clip.usage`) or as
`usage` to the replica that writes the manifest, and each stage run is a
`d2v_stage_seconds` observation (deployments.telemetry).
"""

from __future__ import annotations

import logging
import time

from ray import serve

from actors.gpu_worker import GPUWorker
from d2v import stages
from d2v.cost import StageUsage
from d2v.images import LoadedImage
from d2v.models import CameraTrajectory, Manifest, RenderRequest
from d2v.pipeline import stream_camera_job
from d2v.render import load_depth_map
from d2v.stages import Clip
from d2v.store import store_from_env
from deployments.telemetry import held_resources, replica_logging, stage_ran

log = logging.getLogger("d2v.deployments")
PROGRESS_INTERVAL_S = 0.25  # progress reports, at most this often per stage


def charged(clip: Clip, stage: str, request: RenderRequest) -> Clip:
    """The clip, with `stage` (just run in this replica) charged at this replica's resources."""
    seconds = clip.stage_seconds.get(stage, 0.0)
    clip.usage[stage] = StageUsage(seconds=seconds, **held_resources())
    stage_ran(stage, seconds, request.backend)
    return clip


def observed(manifest: Manifest) -> Manifest:
    """The stages the manifest's replica ran, as d2v_stage_seconds observations."""
    if manifest.cost is not None:
        for stage in ("render_encode", "encode", "upload", "check"):
            if stage in manifest.cost.stages:
                stage_ran(stage, manifest.cost.stages[stage].seconds, manifest.backend)
    return manifest


class _ReportsProgress:
    def _progress(self, job_id: str):
        board = getattr(self, "_board", None)
        if board is None:
            # Progress goes to Redis (cheap, best effort); the runner folds it into status.json
            # with each heartbeat and the API reads it from there or from Redis.
            from d2v.jobqueue import JobQueue

            board = self._board = JobQueue()

        last = {"stage": None, "at": 0.0}

        def report(stage: str, fraction: float) -> None:
            # At most a few reports a second (the base stage reports every frame).
            now = time.monotonic()
            if stage == last["stage"] and fraction < 1.0 and now - last["at"] < PROGRESS_INTERVAL_S:
                return
            last["stage"], last["at"] = stage, now
            board.report(job_id, stage, fraction)

        return report


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class DepthStage(GPUWorker):
    """Depth from the photo (the app's `depth_model`, else D2V_DEPTH_MODEL), for requests with
    depth "auto" and no map of their own: estimated once per image and model, then read from
    the store's depth cache. The model loads on first use, on the device this replica was given."""

    stage = "depth"

    def __init__(self, model: str | None = None):
        replica_logging()
        self.store = store_from_env()
        self.model = model  # None: D2V_DEPTH_MODEL
        super().__init__()

    def estimate(self, image: LoadedImage, image_bytes: bytes, request: RenderRequest) -> dict:
        """{"depth_png": 16-bit PNG bytes or None, "depth_source", "depth_model", "depth_method", "usage"}:
        what the rest of the DAG takes as a depth map, what the manifest says of it, and its charge."""
        from d2v.depth import depth_for, encode_depth_png

        t0 = time.perf_counter()
        scene = depth_for(image_bytes, image.rgb, self.store, request, model=self.model)
        seconds = time.perf_counter() - t0
        stage_ran("depth", seconds, request.backend)
        return {"depth_png": encode_depth_png(scene.depth) if scene.depth is not None else None,
                "depth_source": scene.source, "depth_model": scene.model, "depth_method": scene.method(),
                "usage": {"depth": StageUsage(seconds=seconds, **held_resources())}}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class TrajectoryStage:
    def plan(self, request: RenderRequest, image_width: int, image_height: int, has_depth: bool) -> CameraTrajectory:
        # Milliseconds on a sliver of a CPU: observed, not charged (its charge could not
        # travel with the trajectory).
        trajectory = stages.plan(request, image_width, image_height, has_depth=has_depth)
        stage_ran("trajectory", trajectory.seconds or 0.0, request.backend)
        return trajectory


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class BaseStage(GPUWorker, _ReportsProgress):
    """Keyframes: the camera render, or a generative base (svd, ltx, wan) guided by it. Each
    configured base (D2V_SVD_MODEL, D2V_LTX_MODEL, D2V_WAN_MODEL, or the app's args) loads once
    per replica on the device this replica was given."""

    stage = "base"

    def __init__(self, svd_model: str | None = None, svd_options: dict | None = None,
                 ltx_model: str | None = None, wan_model: str | None = None):
        from d2v.bases import configured

        replica_logging()
        self.models_wanted = configured(overrides={"svd": svd_model, "ltx": ltx_model, "wan": wan_model})
        self.svd_model = self.models_wanted.get("svd")
        self.svd_options = svd_options
        self.store = store_from_env()
        super().__init__()

    def load(self) -> None:
        from d2v.bases import BASES, load_base
        from d2v.bases.svd import SVDOptions

        self.bases: dict = {}
        self.base_errors: dict[str, str] = {}
        for name, model in self.models_wanted.items():
            try:
                # Loaded (SVD warmed up) here, at replica start: the first job finds it ready.
                options = SVDOptions.resolve(self.svd_options) if name == "svd" else None
                self.bases[name], _ = load_base(name, model, self.device, options)
            except Exception as e:  # serve the other backends anyway; this one's jobs get the reason
                self.base_errors[name] = f"the {name} model {model!r} ({BASES[name].setting}) failed to load: {e}"
                log.error(self.base_errors[name])
        self.svd = self.bases.get("svd")
        self.svd_error = self.base_errors.get("svd")

    def render(self, job_id: str, image: LoadedImage, depth_bytes: bytes | None, request: RenderRequest,
               trajectory: CameraTrajectory) -> Clip:
        from d2v.errors import ModelNotConfiguredError

        if request.backend not in self.bases and request.backend in self.base_errors:
            raise ModelNotConfiguredError(self.base_errors[request.backend])
        depth = load_depth_map(depth_bytes, image.width, image.height) if depth_bytes else None
        clip = stages.render_base(image.rgb, trajectory, request, depth=depth, model=self.bases.get(request.backend),
                                  progress=self._progress(job_id))
        return charged(clip, "base", request)

    def render_final(self, job_id: str, image: LoadedImage, depth_bytes: bytes | None, request: RenderRequest,
                     trajectory: CameraTrajectory, depth_source: str | None = None,
                     depth_model: str | None = None, depth_method: str | None = None,
                     usage: dict | None = None) -> Manifest:
        """Camera jobs: the frames are final as rendered, so this replica streams them into
        the encoder and stores the results, as `d2v render` does: render and encode overlap,
        and no clip crosses replicas (run one after the other, they cost 1.5x in-process)."""
        depth = load_depth_map(depth_bytes, image.width, image.height) if depth_bytes else None
        return observed(stream_camera_job(image, depth, request, trajectory, self.store, job_id,
                                          progress=self._progress(job_id), depth_source=depth_source,
                                          depth_model=depth_model, depth_method=depth_method,
                                          resources=held_resources(), usage=usage))

    def whoami(self) -> dict:
        return self.describe()


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class InterpolateStage(GPUWorker):
    stage = "interpolate"

    def retime(self, clip: Clip, request: RenderRequest) -> Clip:
        return charged(stages.retime(clip, request), "interpolate", request)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class UpscaleStage(GPUWorker):
    stage = "upscale"

    def resize(self, clip: Clip, request: RenderRequest) -> Clip:
        return charged(stages.resize(clip, request), "upscale", request)


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class EncodeStage(_ReportsProgress):
    def __init__(self):
        replica_logging()
        self.store = store_from_env()

    def encode(self, job_id: str, clip: Clip, request: RenderRequest, trajectory: CameraTrajectory,
               image: LoadedImage, depth_bytes: bytes | None, depth_source: str | None = None,
               depth_model: str | None = None, depth_method: str | None = None,
               usage: dict | None = None) -> Manifest:
        """Encode and store, then the path check (it needs the frames, which are here)."""
        self._progress(job_id)("encode", 0.0)
        depth = load_depth_map(depth_bytes, image.width, image.height) if depth_bytes else None
        clip.usage = {**(usage or {}), **clip.usage}
        return observed(stages.encode_and_store(clip, request, trajectory, image, self.store, job_id, depth=depth,
                                                depth_source=depth_source, depth_model=depth_model,
                                                resources=held_resources()))
