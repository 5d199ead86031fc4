"""The `svd` base: Stable Video Diffusion (diffusers) steered by the drawn camera path.
What every base shares (loading, sizing, the guide, strength as noise, auto-correct) is in
`d2v.bases.common`.

    svd_model_setting() -> str | None            D2V_SVD_MODEL, None when unset
    load_svd(model, device, compile_unet=False) -> SVDModel
    SVDModel.generate(image, guide_frames, request, trajectory) -> (K, h, w, 3) uint8 keyframes
    SVDModel.settings_for(request, trajectory) -> dict   (what the manifest records)
    keyframe_count(model) -> int                 K: 14 for svd, 25 for svd-xt (unet.config.num_frames)
    keyframe_indices(n_frames, k) -> list[int]   which output frames are the keyframes
    model_size(request, model) -> (w, h)         the canvas the model renders on
    model_frame_for(request, model) -> ModelFrame   the canvas and the output's view in it (cropped to, never stretched)
    cover_frame(image, w, h) -> (h, w, 3)        the largest centred crop at the model's aspect
    camera_speed / derive_motion(trajectory)     motion_bucket_id and noise_aug_strength
    start_sigma(g) -> float                      the noise level strength g starts from
    denoise_sigmas(schedule, sigma) -> list[float]   the partial schedule from there, ending in 0

SVD alone has no notion of a path: it animates a still image, and `motion_bucket_id`
only sets how much things move. d2v steers it SDEdit-style. The camera backend renders
the trajectory's K keyframes (the guide); here they are VAE-encoded, noised to a level
set by `guidance_strength` g, and denoised by SVD conditioned on the input photo:

* The scheduler is SVD's (EulerDiscrete, Karras sigmas 700 -> 0.002, v-prediction).
  Strength is calibrated in noise level, not in steps: `guidance_strength` g sets the
  starting sigma on a log scale between the schedule's ends (`start_sigma`),
  sigma(g) = 0.002 * (700 / 0.002) ** g, so equal steps of g are equal factors of noise:

      g      0.1      0.2     0.3     0.4    0.5    0.6    0.7    0.8    0.9    1.0
      sigma  0.00717  0.0257  0.0921  0.330  1.18   4.24   15.2   54.5   195    700 (plain SVD)

  The guide latents (std about 1) get noise of sigma(g), then the schedule's own sigmas
  below it denoise them (`denoise_sigmas`), down to 0: the schedule handed to diffusers ends
  in 0, so a job makes one UNet call per level before it, and the manifest's `denoise_steps`
  is that count. Counting steps instead (diffusers' img2img
  `strength`) put g = 0.6 at sigma 34.5 with 25 steps, where the guide is all but gone.
  SDEdit keeps the layout of its guide while the noise stays below the signal (here
  sigma <= ~1) and hands it over to the model above that: the default g = 0.5 (sigma
  1.18) sits at that edge, and the path check's auto-correct steps down from there when
  a clip misses (d2v.fidelity.AutoCorrect).
* g = 0: the guide frames are returned exactly, not a VAE round trip: "0 = the camera
  render unchanged". As g -> 0 the output tends to the VAE round trip of the guide
  (`SVDModel.round_trip`); the tests check both.
* sigma(g) at or above the schedule's first sigma (g = 1): plain SVD. Latents start as
  pure noise times `scheduler.init_noise_sigma`, exactly as StableVideoDiffusionPipeline
  starts, and (without dual-clock) the guide is not used at all.
* Dual clock (after Time-to-Move, Singer et al., ICLR 2026): where the guide is the photo
  (the validity mask of `CameraRenderer.render_validity`), it is re-imposed, re-noised to
  the current sigma, at every step until sigma falls to sigma(guidance_strength); where
  the render had to invent pixels (outside the photo, disocclusions) SVD alone denoises
  from the earlier start sigma(free_strength). `free_strength` None: one clock.
* Conditioning, as the pipeline does it, on one frame: its CLIP image embedding (224x224)
  for cross-attention, its VAE latent (mode, unscaled, after adding `noise_aug_strength`
  Gaussian noise in pixel space) concatenated to every frame's latent, and the added time
  ids (fps - 1, motion_bucket_id, noise_aug_strength). The frame is the guide's frame 0,
  the trajectory's first view (a pan starts zoomed in, an orbit tilted), so the
  conditioning and the guide agree on where the clip starts.
* Classifier-free guidance as the pipeline: the unconditional branch has zero image
  embedding and zero conditioning latent; the scale rises linearly over the frames from
  `min_guidance_scale` (1.0) to `max_guidance_scale` (3.0).
* `motion_bucket_id` and `noise_aug_strength` come from the camera's speed (see
  `camera_speed`), unless the request sets them; `fps` is the keyframe rate.

Loading (`load_svd`): a local directory or a hub id. Hub ids load only from the Hugging
Face cache (`local_files_only`): a render replica never starts a multi-GB download on a
request; fetch once with `hf download ID`. fp16 on CUDA (bf16 or fp32 with D2V_SVD_DTYPE),
fp32 on the CPU; PyTorch SDPA attention everywhere; the VAE encoder kept in fp32 when the
VAE config asks for it (`force_upcast`, as the pipeline does); VAE decode in chunks of
`decode_chunk_size` frames (peak memory, for GPUs shared between replicas); optional
`torch.compile` of the UNet. Importing this module imports neither torch nor diffusers.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from d2v.bases import BASES
from d2v.bases.common import (  # noqa: F401  (keyframe_indices, cover_frame, decode_chunks: d2v.bases.svd's API)
    ModelFrame,
    cover_frame,
    decode_chunks,
    denoise_sigmas,
    keyframe_indices,
    load_pipeline,
    model_frame_for,
    pick_dtype,
    resolve_device,
    start_sigma,
)
from d2v.errors import InvalidRequestError
from d2v.models import CameraTrajectory, RenderRequest

if TYPE_CHECKING:  # torch/diffusers only load with the model
    import torch

log = logging.getLogger(__name__)

MODEL_ENV = "D2V_SVD_MODEL"
DTYPE_ENV = "D2V_SVD_DTYPE"  # fp16 (default on CUDA) | bf16 | fp32; the CPU always runs fp32

MIN_GUIDANCE_SCALE = 1.0  # StableVideoDiffusionPipeline's defaults
MAX_GUIDANCE_SCALE = 3.0
DEFAULT_DECODE_CHUNK = 8  # frames per temporal-VAE decode (the pipeline: all at once)
DEFAULT_FPS_CONDITIONING = 7  # the pipeline's default, used for one-frame clips

# Camera speed -> SVD's micro-conditioning. Speed is "view changes per second" (see
# camera_speed); typical moves: pan 0.35, zoom_in 0.5, spiral / earth_zoom_out 0.8.
SPEED_SCALE = 0.5  # speed at which 63% of the range below is used
MOTION_BUCKET_RANGE = (48, 208)  # 127 (the pipeline's default) is about a pan
NOISE_AUG_RANGE = (0.02, 0.08)  # 0.02 is the pipeline's default
# orbit and dolly_zoom need parallax that a 2.5D render of one photo cannot show: give
# SVD more room to move things.
PARALLAX_EFFECTS_BUCKET_BONUS = 20
PARALLAX_EFFECTS = {"orbit", "dolly_zoom"}


def svd_model_setting() -> str | None:
    """The configured model (D2V_SVD_MODEL): a directory or a hub id; None when unset."""
    return BASES["svd"].model()


def svd_dtype_setting() -> str | None:
    """D2V_SVD_DTYPE: fp16 | bf16 | fp32 for CUDA; None when unset (fp16)."""
    return os.environ.get(DTYPE_ENV, "").strip().lower() or None


_not_configured = BASES["svd"].not_configured


COMPILE_ENV, DECODE_CHUNK_ENV, WARMUP_ENV = "D2V_SVD_COMPILE", "D2V_SVD_DECODE_CHUNK", "D2V_SVD_WARMUP"


@dataclass(frozen=True)
class SVDOptions:
    """How a process runs its SVD model, from the environment (D2V_SVD_COMPILE 0/1,
    D2V_SVD_DECODE_CHUNK frames, D2V_SVD_DTYPE fp16|bf16|fp32, D2V_SVD_WARMUP 0/1) and, in
    the farm, the Serve config's `args.svd_options` (the same names, lower case, without
    the prefix), which win."""

    compile: bool = False  # torch.compile the UNet (minutes on the first call: warm up)
    decode_chunk_size: int = DEFAULT_DECODE_CHUNK  # frames per temporal-VAE decode (peak memory)
    dtype: str | None = None  # None: fp16 on CUDA; the CPU always runs fp32
    warmup: bool = True  # one generation at the model's size when loaded, so the first job is not slow
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead | max-autotune (CUDA graphs)
    compile_vae: bool = False  # torch.compile the VAE decoder too
    channels_last: bool = False  # UNet and VAE weights in channels-last memory format (faster convs on GPUs)

    @classmethod
    def resolve(cls, overrides: dict | None = None, env=None) -> "SVDOptions":
        env = os.environ if env is None else env
        values: dict[str, Any] = {"compile": env.get(COMPILE_ENV), "decode_chunk_size": env.get(DECODE_CHUNK_ENV),
                                  "dtype": env.get(DTYPE_ENV), "warmup": env.get(WARMUP_ENV),
                                  "compile_mode": env.get("D2V_SVD_COMPILE_MODE"),
                                  "compile_vae": env.get("D2V_SVD_COMPILE_VAE"),
                                  "channels_last": env.get("D2V_SVD_CHANNELS_LAST")}
        unknown = set(overrides or {}) - set(values)
        if unknown:
            raise _not_configured(f"svd_options: unknown {', '.join(sorted(unknown))}; known: {', '.join(values)}")
        values.update({k: v for k, v in (overrides or {}).items()})
        out: dict[str, Any] = {}
        for name, raw in values.items():
            if raw is None or raw == "":
                continue
            if name in ("compile", "warmup", "compile_vae", "channels_last"):
                flag = str(raw).strip().lower()
                if flag not in ("0", "1", "true", "false", "yes", "no"):
                    raise _not_configured(f"svd {name} must be 0 or 1 (D2V_SVD_{name.upper()}), got {raw!r}")
                out[name] = flag in ("1", "true", "yes")
            elif name == "decode_chunk_size":
                try:
                    out[name] = int(raw)
                except (TypeError, ValueError):
                    out[name] = 0
                if not 1 <= out[name] <= 64:
                    raise _not_configured(f"svd decode_chunk_size ({DECODE_CHUNK_ENV}) must be 1..64, got {raw!r}")
            elif name == "compile_mode":
                if str(raw) not in ("default", "reduce-overhead", "max-autotune"):
                    raise _not_configured(f"svd compile_mode (D2V_SVD_COMPILE_MODE) must be default, reduce-overhead "
                                          f"or max-autotune, got {raw!r}")
                out[name] = str(raw)
            else:
                out[name] = str(raw)
        return cls(**out)


_shared: dict[tuple, "SVDModel"] = {}
_shared_lock = threading.Lock()


def shared_svd(model: str, device: str | None = "auto", options: "SVDOptions | None" = None) -> tuple["SVDModel", bool]:
    """The process's SVD model for these settings, loaded (and warmed up) on first use:
    (model, True when this call loaded it). A batch worker renders item after item with one."""
    options = options or SVDOptions.resolve()
    key = (str(model), resolve_device(device), options)
    with _shared_lock:
        if key in _shared:
            return _shared[key], False
        svd = load_svd(model, device, compile_unet=options.compile, dtype=options.dtype,
                       decode_chunk_size=options.decode_chunk_size, compile_mode=options.compile_mode,
                       compile_vae=options.compile_vae, channels_last=options.channels_last)
        if options.warmup:
            svd.warm_up()
        _shared[key] = svd
        return svd, True


def load_svd(
    model: str | None,
    device: str | None = "auto",
    *,
    compile_unet: bool = False,
    dtype: str | None = None,
    decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
    compile_mode: str = "default",
    compile_vae: bool = False,
    channels_last: bool = False,
) -> "SVDModel":
    """Load an SVD pipeline for generation on `device`.

    model: a local directory (`save_pretrained` layout) or a hub id already in the HF
    cache; None or "" -> ModelNotConfiguredError naming D2V_SVD_MODEL (as does a missing
    directory or anything that fails to load). dtype: fp16 | bf16 | fp32 on CUDA
    (default: D2V_SVD_DTYPE, else fp16); the CPU always runs fp32.
    """
    if not model:
        raise _not_configured(f"{MODEL_ENV} is not set")
    from diffusers import StableVideoDiffusionPipeline

    device = resolve_device(device)
    torch_dtype = pick_dtype(device, dtype or svd_dtype_setting(), DTYPE_ENV)
    pipe = load_pipeline(StableVideoDiffusionPipeline, str(model), MODEL_ENV, _not_configured, torch_dtype)
    return SVDModel.from_pipeline(
        pipe, name=str(model), device=device, dtype=torch_dtype,
        compile_unet=compile_unet, decode_chunk_size=decode_chunk_size, compile_mode=compile_mode,
        compile_vae=compile_vae, channels_last=channels_last,
    )  # fmt: skip


# --- sizes and settings ----------------------------------------------------------------


def keyframe_count(model: "SVDModel") -> int:
    """Keyframes the model generates per clip: unet.config.num_frames (svd 14, svd-xt 25)."""
    return model.num_frames


def model_size(request: RenderRequest, model: "SVDModel") -> tuple[int, int]:
    """(w, h) of the canvas the model renders on (`model_frame`): each side a multiple of
    `model.size_multiple` (64 for SVD: /8 by the VAE, /8 more by the UNet's levels), about the
    area the model was trained at, never more (SVD-XT: 768x768 = 1024x576)."""
    frame = model_frame_for(request, model)
    return frame.width, frame.height


def camera_speed(trajectory: CameraTrajectory) -> float:
    """How fast the view changes, per second, averaged over the move. Each frame step adds
    the view's travel in view widths, |d log zoom|, |d roll| (radians) and the turn of
    the optical axis (radians); dolly_zoom adds |d log distance| (its zoom holds while
    the camera moves in)."""
    frames = trajectory.frames
    if len(frames) < 2:
        return 0.0
    span = frames[-1].time_s - frames[0].time_s
    if span <= 0:
        return 0.0
    centre = np.array([f.center for f in frames])
    zoom = np.maximum(np.array([f.zoom for f in frames]), 1e-6)
    roll = np.radians([f.roll_deg for f in frames])
    axis = np.array([f.R()[2] for f in frames])
    view_width = trajectory.base_distance / np.sqrt(zoom[1:] * zoom[:-1])
    motion = (
        np.linalg.norm(np.diff(centre, axis=0), axis=1) / view_width
        + np.abs(np.diff(np.log(zoom)))
        + np.abs(np.diff(roll))
        + np.arccos(np.clip((axis[1:] * axis[:-1]).sum(axis=1), -1.0, 1.0))
    )
    if trajectory.effect == "dolly_zoom":
        dist = np.maximum(np.abs(np.array([f.camera_center()[2] for f in frames])), 1e-6)
        motion = motion + np.abs(np.diff(np.log(dist)))
    return float(motion.sum() / span)


def derive_motion(trajectory: CameraTrajectory) -> tuple[int, float, float]:
    """(motion_bucket_id, noise_aug_strength, speed) for a camera move. Both rise with
    speed and saturate; faster moves take the frames further from the conditioning
    photo, which more noise augmentation lets SVD follow."""
    speed = camera_speed(trajectory)
    s = 1.0 - math.exp(-speed / SPEED_SCALE)
    lo, hi = MOTION_BUCKET_RANGE
    bucket = lo + (hi - lo) * s + (PARALLAX_EFFECTS_BUCKET_BONUS if trajectory.effect in PARALLAX_EFFECTS else 0)
    aug = NOISE_AUG_RANGE[0] + (NOISE_AUG_RANGE[1] - NOISE_AUG_RANGE[0]) * s
    return int(np.clip(round(bucket), 1, 255)), round(aug, 4), speed


def keyframe_fps(trajectory: CameraTrajectory, k: int) -> int:
    """The keyframes' rate (SVD's `fps` conditioning): k frames over the move's span."""
    frames = trajectory.frames
    span = frames[-1].time_s - frames[0].time_s if frames else 0.0
    if k < 2 or span <= 0:
        return DEFAULT_FPS_CONDITIONING
    return int(np.clip(round((k - 1) / span), 1, 30))


# --- the model ---------------------------------------------------------------------------


class SVDModel:
    """A loaded SVD pipeline and d2v's settings for it. Build with `load_svd`. One
    generation at a time (a lock): the scheduler is stateful and a second concurrent
    generation would only double the GPU memory."""

    family = "svd"
    fixed_length = True  # always unet.config.num_frames keyframes per generation
    reads_text = False
    frame_step = 1
    temporal_compression = 1  # the VAE encodes each frame alone
    keyframe_rate = (4, 30)  # below 4 keyframes a second a long move is split into segments

    def __init__(self, pipe, *, name: str, device: str, dtype, unet, decode_chunk_size: int, compiled: bool):
        self.pipe = pipe
        self.name = name
        self.device = device
        self.dtype = dtype
        self.unet = unet  # pipe.unet, or its torch.compile wrapper
        self.vae = pipe.vae
        self.image_encoder = pipe.image_encoder
        self.decode_chunk_size = int(decode_chunk_size)
        self.compiled = compiled
        self.num_frames = int(pipe.unet.config.num_frames)
        self.clip_frames = self.num_frames
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        # Each UNet level but the last halves the latent: sides must divide evenly all
        # the way down. The pipeline itself also insists on multiples of 8.
        levels = len(pipe.unet.config.block_out_channels)
        self.size_multiple = max(8, self.vae_scale_factor * 2 ** (levels - 1))
        sample = pipe.unet.config.sample_size or 96
        self.native_area = int(sample * self.vae_scale_factor) ** 2
        self.min_guidance_scale = MIN_GUIDANCE_SCALE
        self.max_guidance_scale = MAX_GUIDANCE_SCALE
        self._encoder_dtype = next(self.vae.encoder.parameters()).dtype
        self._lock = threading.Lock()
        self.tuning: dict[str, Any] = {}  # compile mode, compiled VAE, channels-last (describe())

    @classmethod
    def from_pipeline(
        cls,
        pipe,
        *,
        name: str,
        device: str,
        dtype,
        compile_unet: bool = False,
        decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
        compile_mode: str = "default",
        compile_vae: bool = False,
        channels_last: bool = False,
    ) -> "SVDModel":
        """d2v's settings applied to a StableVideoDiffusionPipeline (load_svd's second
        half; the GPU benchmark uses it on a pipeline built from configs)."""
        import torch
        from diffusers.models.attention_processor import AttnProcessor2_0

        # Cast only what is not in `dtype` yet: from_pretrained(dtype=...) already did,
        # and diffusers warns on casting a loaded model with to().
        for component in (pipe.unet, pipe.vae, pipe.image_encoder):
            if component.dtype != dtype:
                component.to(dtype=dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        # Fused attention (flash / memory-efficient SDPA). diffusers picks it by default
        # on torch 2, but set_default_attn_processor() would switch to the naive one, which
        # needs ~42 GB at SVD-XT's top level: make sure.
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.vae.set_attn_processor(AttnProcessor2_0())
        if dtype == torch.float16 and pipe.vae.config.force_upcast:
            # The pipeline upcasts the VAE to fp32 around every encode; keeping just the
            # encoder in fp32 does the same without converting weights on each call.
            pipe.vae.encoder.to(torch.float32)
            pipe.vae.quant_conv.to(torch.float32)
        if channels_last:  # the 2-D convolutions' preferred layout on tensor cores (3-D ones stay)
            for module in (*pipe.unet.modules(), *pipe.vae.modules()):
                if isinstance(module, torch.nn.Conv2d):
                    module.to(memory_format=torch.channels_last)
        unet = pipe.unet
        mode = None if compile_mode == "default" else compile_mode
        if compile_unet:
            # Compiles on the first call (minutes for SVD-XT: warm up). max-autotune and
            # reduce-overhead capture CUDA graphs: the shapes are static per size and frame count.
            unet = torch.compile(pipe.unet, mode=mode)
        if compile_vae and not hasattr(pipe.vae.decoder, "_orig_mod"):  # not compiled twice
            pipe.vae.decoder = torch.compile(pipe.vae.decoder, mode=mode)
        model = cls(pipe, name=name, device=device, dtype=dtype, unet=unet,
                    decode_chunk_size=decode_chunk_size, compiled=compile_unet)  # fmt: skip
        model.tuning = {"compile_mode": compile_mode if compile_unet or compile_vae else None,
                        "compiled_vae": compile_vae, "channels_last": channels_last}
        return model

    def warm_up(self) -> None:
        """One denoising step at the model's native size (the shapes real jobs use), so
        cuDNN's algorithm search and torch.compile happen here, not in the first job."""
        from d2v.models import parse_request
        from d2v.trajectory import plan_trajectory

        side = int(math.sqrt(self.native_area))
        photo = np.full((side, side, 3), 128, np.uint8)
        photo[side // 4 : side // 2, side // 4 : side // 2] = 200
        request = parse_request({"path": [{"x": 0.25 * side, "y": 0.5 * side}, {"x": 0.75 * side, "y": 0.5 * side}],
                                 "effect": "pan", "width": max(64, side), "height": max(64, side), "duration_s": 1,
                                 "backend": "svd", "guidance_strength": 1.0, "num_inference_steps": 1})
        w, h = model_size(request, self)
        trajectory = plan_trajectory(request.model_copy(update={"width": w, "height": h}), side, side)
        guides = np.repeat(cover_frame(photo, w, h)[None], self.num_frames, axis=0)
        self.generate(photo, guides, request, trajectory)

    def __repr__(self) -> str:
        return f"SVDModel({self.name!r}, device={self.device!r}, dtype={self.dtype}, num_frames={self.num_frames})"

    def describe(self) -> dict[str, Any]:
        """What `d2v models check` prints."""
        return {
            "model": self.name,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "num_frames": self.num_frames,
            "native_size": f"{int(math.sqrt(self.native_area))}x{int(math.sqrt(self.native_area))} area",
            "size_multiple": self.size_multiple,
            "attention": "sdpa",
            "decode_chunk_size": self.decode_chunk_size,
            "compiled_unet": self.compiled,
            **self.tuning,
        }

    # -- settings ---------------------------------------------------------------------

    def _scheduler(self):
        """A private copy of the scheduler: it keeps per-run state (step index)."""
        sched = self.pipe.scheduler
        return type(sched).from_config(sched.config)

    def _scheduler_sigmas(self, steps: int) -> list[float]:
        """The full schedule's sigmas for `steps` steps, descending, without the final 0: one per
        UNet call."""
        sched = self._scheduler()
        sched.set_timesteps(int(steps))
        return [float(x) for x in sched.sigmas[:-1]]

    def _clocks(self, request: RenderRequest) -> dict[str, Any]:
        """The denoising clocks for a request: the schedule to run (sigmas), the sigma it
        starts from (and whether that is the whole schedule, from pure noise), and `hold`, the
        sigma down to which the guide is re-imposed where it is valid (dual clock; equal to
        the start with one clock). Mode: "camera render" (g = 0),
        "plain svd", "sdedit" or "dual clock"."""
        full = self._scheduler_sigmas(request.num_inference_steps)
        lo, hi = full[-1], full[0]
        guided = start_sigma(request.guidance_strength, lo, hi)
        free = request.free_strength
        if guided == 0.0 and (free is None or free <= 0.0):
            return {"schedule": [], "start": 0.0, "hold": 0.0, "mode": "camera render", "from_noise": False}
        start = max(guided, start_sigma(free, lo, hi)) if free is not None else guided
        schedule = denoise_sigmas(full, start)
        if free is not None and start > guided:
            mode = "dual clock"
        else:
            mode = "plain svd" if start >= hi else "sdedit"
        # from_noise: the schedule's first sigma, where latents start as pure noise (the pipeline's way).
        return {"schedule": schedule, "start": schedule[0], "hold": guided, "mode": mode, "from_noise": start >= hi}

    def settings_for(self, request: RenderRequest, trajectory: CameraTrajectory) -> dict[str, Any]:
        """Every setting generate() uses for this request: what the manifest records."""
        bucket, aug, speed = derive_motion(trajectory)
        steps = int(request.num_inference_steps)
        clock = self._clocks(request)
        frame = model_frame_for(request, self)
        w, h = frame.width, frame.height
        return {
            "model": self.name,
            "num_frames": self.num_frames,
            "width": w,
            "height": h,
            "view": list(frame.view),
            "text": "ignored: SVD reads no text (prompt and negative_prompt apply to ltx and wan)",
            "guidance_strength": float(request.guidance_strength),
            "free_strength": request.free_strength,
            "steps": steps,
            "denoise_steps": max(0, len(clock["schedule"]) - 1),  # UNet calls: the levels before the final 0
            "start_sigma": clock["start"],
            "hold_sigma": clock["hold"],
            "mode": clock["mode"],
            "motion_bucket_id": request.motion_bucket_id if request.motion_bucket_id is not None else bucket,
            "noise_aug_strength": (
                float(request.noise_aug_strength) if request.noise_aug_strength is not None else aug
            ),
            "derived": [k for k in ("motion_bucket_id", "noise_aug_strength") if getattr(request, k) is None],
            "camera_speed": round(speed, 4),
            "fps": keyframe_fps(trajectory, self.num_frames),
            "seed": int(request.seed),
            "min_guidance_scale": self.min_guidance_scale,
            "max_guidance_scale": self.max_guidance_scale,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "decode_chunk_size": self.decode_chunk_size,
            "compiled_unet": self.compiled,
        }

    # -- tensors ----------------------------------------------------------------------

    def _to_pixels(self, frames: np.ndarray) -> "torch.Tensor":
        """(K, h, w, 3) uint8 -> (K, 3, h, w) float in [-1, 1] on the device (fp32)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def _encode(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """VAE latent distribution modes of (N, 3, h, w) pixels in [-1, 1], unscaled, in
        chunks (the encoder's activations at full size are large)."""
        import torch

        chunk = max(1, self.decode_chunk_size)
        modes = [
            self.vae.encode(pixels[i : i + chunk].to(self._encoder_dtype)).latent_dist.mode()
            for i in range(0, pixels.shape[0], chunk)
        ]
        return torch.cat(modes).to(self.dtype)

    def _latent_mask(self, valid: np.ndarray | None, shape, device, dtype) -> "torch.Tensor":
        """(K, h, w) bool -> (1, K, 1, h/f, w/f): 1 where a latent cell is valid throughout."""
        import cv2
        import torch

        k, _, _, lh, lw = shape
        if valid is None:
            return torch.ones((1, k, 1, lh, lw), device=device, dtype=dtype)
        cells = [cv2.resize(np.asarray(v, np.float32), (lw, lh), interpolation=cv2.INTER_AREA) > 0.999
                 for v in valid]
        return torch.from_numpy(np.stack(cells)[None, :, None].astype(np.float32)).to(device=device, dtype=dtype)

    def _decode(self, latents: "torch.Tensor") -> np.ndarray:
        """(1, K, C, h/f, w/f) scaled latents -> (K, h, w, 3) uint8, decoding at most
        `decode_chunk_size` frames at a time in even chunks (`decode_chunks`)."""
        import torch

        latents = latents.to(self.dtype)
        parts, start = [], 0
        for size in decode_chunks(latents.shape[1], self.decode_chunk_size):
            part = latents[:, start:start + size]
            parts.append(self.pipe.decode_latents(part, size, size))  # (1, 3, size, h, w)
            start += size
        video = torch.cat(parts, dim=2)
        video = ((video[0].permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255)
        return video.to(torch.uint8).cpu().numpy()

    def round_trip(self, frames: np.ndarray) -> np.ndarray:
        """The frames through the VAE and back (encode mode, chunked temporal decode):
        what generate() tends to as guidance_strength -> 0."""
        import torch

        with self._lock, torch.inference_mode():
            latents = self._encode(self._to_pixels(frames)) * self.scaling_factor
            return self._decode(latents.unsqueeze(0))

    def _clip_embeds(self, frame: np.ndarray) -> "torch.Tensor":
        """(1, 1, D) CLIP image embedding of a frame, stretched to 224x224 (as the pipeline
        stretches its input) and normalised as CLIPImageProcessor does."""
        import cv2
        import torch

        small = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
        fe = self.pipe.feature_extractor
        pixels = torch.from_numpy(small).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        mean = torch.tensor(fe.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(fe.image_std, device=self.device).view(1, 3, 1, 1)
        clip_dtype = next(self.image_encoder.parameters()).dtype
        embeds = self.image_encoder(((pixels - mean) / std).to(clip_dtype)).image_embeds
        return embeds.unsqueeze(1).to(self.dtype)

    def _noisy_image_latent(self, frame: np.ndarray, aug: float, generator) -> "torch.Tensor":
        """(1, C, h/f, w/f) SVD conditioning latent: the VAE mode of the frame plus `aug`
        Gaussian noise in pixel space, not multiplied by the scaling factor (SVD's quirk)."""
        import torch

        px = self._to_pixels(frame[None])
        px = px + aug * torch.randn(px.shape, generator=generator, device=self.device)
        return self._encode(px)

    # -- generation -------------------------------------------------------------------

    def generate(
        self,
        image: np.ndarray,
        guide_frames: np.ndarray,
        request: RenderRequest,
        trajectory: CameraTrajectory,
        *,
        valid: np.ndarray | None = None,
        anchor: int = 0,
        step_callback=None,
    ) -> np.ndarray:
        """Keyframes that follow the guide: (K, h, w, 3) uint8, the same shape as
        `guide_frames` (the camera renders of the trajectory's K keyframes at
        `model_size`; K is normally `keyframe_count(model)`). `image` is the input photo,
        (H, W, 3) uint8. `valid`: (K, h, w) bool, where the guide shows the photo (dual
        clock). `step_callback(i, info)` is called before each denoising step with the
        sigma, the latents, the guide's latents, the latent mask, whether the guide is held
        there, and the conditioning frame (for tests and tools; nothing private is read).
        `anchor`: the first frames are the previous segment's output (`d2v.bases.common.plan_keyframes`),
        held to it at every step. Seeded by request.seed."""
        import torch

        # 1. Check inputs.
        image = _check_rgb(image, "image")
        guide_frames = np.asarray(guide_frames)
        if guide_frames.ndim != 4 or guide_frames.shape[-1] != 3 or guide_frames.dtype != np.uint8:
            raise InvalidRequestError(
                f"guide frames must be (K, h, w, 3) uint8, got {guide_frames.shape} {guide_frames.dtype}"
            )
        k, h, w = guide_frames.shape[:3]
        m = self.size_multiple
        if h % m or w % m:
            raise InvalidRequestError(f"guide frames are {w}x{h}; this model needs multiples of {m} (see model_size)")

        # 2. Settings; g = 0 leaves the camera render as it is.
        settings = self.settings_for(request, trajectory)
        clock = self._clocks(request)
        if clock["mode"] == "camera render":
            return guide_frames.copy()
        if valid is not None and np.asarray(valid).shape != (k, h, w):
            raise InvalidRequestError(f"validity mask must be (K, h, w) = {(k, h, w)}, got {np.asarray(valid).shape}")

        with self._lock, torch.inference_mode():
            device, dtype = self.device, self.dtype
            generator = torch.Generator(device=device).manual_seed(int(request.seed))
            cfg = self.max_guidance_scale > 1.0  # as the pipeline decides

            # 3. Condition on the trajectory's first view (the guide's frame 0): its CLIP
            #    embedding, and its VAE latent after noise augmentation (this draws the
            #    generator's first numbers, as the pipeline does), with the zero
            #    unconditional branch first for CFG.
            cond_frame = np.ascontiguousarray(guide_frames[0])
            aug = float(settings["noise_aug_strength"])
            embeds = self._clip_embeds(cond_frame)
            cond_latent = self._noisy_image_latent(cond_frame, aug, generator)
            cond_latents = cond_latent.unsqueeze(1).repeat(1, k, 1, 1, 1)  # one per frame
            if cfg:
                embeds = torch.cat([torch.zeros_like(embeds), embeds])
                cond_latents = torch.cat([torch.zeros_like(cond_latents), cond_latents])

            # 4. Added time ids. SVD was trained on fps - 1 (see the pipeline).
            time_ids = torch.tensor(
                [[settings["fps"] - 1, settings["motion_bucket_id"], aug]], device=device, dtype=dtype
            ).repeat(embeds.shape[0], 1)

            # 5. The schedule: from the start sigma down (the full one for plain SVD).
            scheduler = self._scheduler()
            plain = clock["from_noise"]
            if plain:
                scheduler.set_timesteps(int(request.num_inference_steps), device=device)
            else:  # the schedule ends in 0: diffusers runs one UNet call per level before it
                scheduler.set_timesteps(sigmas=clock["schedule"], device=device)
            timesteps = scheduler.timesteps

            # 6. Initial latents. The noise is drawn whatever g is, so a seed's noise is
            #    the same at every strength.
            f = self.vae_scale_factor
            shape = (1, k, self.latent_channels, h // f, w // f)
            noise = torch.randn(shape, generator=generator, device=device).to(dtype)
            # Dual clock: where the guide is valid it is held (re-noised) while sigma > hold.
            hold = float(clock["hold"]) if clock["mode"] == "dual clock" else None
            keep = None if hold is None else self._latent_mask(valid, shape, device, dtype)
            # A segment's first `anchor` frames are the previous segment's output: held at every step.
            anchored = torch.zeros((1, k, 1, 1, 1), device=device, dtype=dtype)
            anchored[:, :anchor] = 1.0
            # The guide's latents, where anything uses them (plain SVD with one clock does not).
            guide = None
            if not plain or hold is not None or anchor:
                guide = (self._encode(self._to_pixels(guide_frames)) * self.scaling_factor).unsqueeze(0)
            if plain:  # plain SVD: pure noise, as the pipeline's prepare_latents
                latents = noise * scheduler.init_noise_sigma
            else:  # SDEdit: the guide's latents plus noise of the starting sigma
                latents = guide + noise * scheduler.sigmas[0].to(device=device, dtype=dtype)

            # 7. Guidance scale per frame: min on the first frame rising to max on the last.
            scale = torch.linspace(self.min_guidance_scale, self.max_guidance_scale, k, device=device)
            scale = scale.to(dtype).view(1, k, 1, 1, 1)

            # 8. Denoising loop (the pipeline's, over the schedule).
            for i, t in enumerate(timesteps):
                sigma = float(scheduler.sigmas[i])
                holding = keep is not None and sigma > hold * (1.0 + 1e-6)
                if holding or anchor:
                    fresh = torch.randn(shape, generator=generator, device=device).to(dtype)
                    held = torch.clamp(anchored + (keep if holding else 0.0), max=1.0)
                    latents = held * (guide + sigma * fresh) + (1.0 - held) * latents
                if step_callback is not None:
                    step_callback(i, {"sigma": sigma, "latents": latents, "guide": guide, "mask": keep,
                                      "holding": holding, "conditioning_frame": cond_frame})
                model_in = torch.cat([latents] * 2) if cfg else latents
                model_in = scheduler.scale_model_input(model_in, t)
                model_in = torch.cat([model_in, cond_latents], dim=2)
                pred = self.unet(
                    model_in, t, encoder_hidden_states=embeds, added_time_ids=time_ids, return_dict=False
                )[0]
                if cfg:
                    uncond, cond_pred = pred.chunk(2)
                    pred = uncond + scale * (cond_pred - uncond)
                latents = scheduler.step(pred, t, latents, generator=generator).prev_sample
            if anchor:  # the held frames are the previous segment's, exactly (before the VAE)
                latents = anchored * guide + (1.0 - anchored) * latents

            # 9. Decode in chunks -> uint8 frames.
            return self._decode(latents)


def _check_rgb(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidRequestError(f"{what} must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)

