"""The `ltx` base: LTX-Video (diffusers `LTXConditionPipeline` components) steered by the drawn
camera path, with a text prompt.

    ltx_model_setting() -> str | None              D2V_LTX_MODEL, None when unset
    load_ltx(model, device) / shared_ltx(model, device) -> LTXModel
    LTXModel.generate(image, guide_frames, request, trajectory, valid=, anchor=, step_callback=) -> (K, H, W, 3)
    LTXModel.settings_for(request, trajectory) -> dict   (what the manifest records)

LTX-Video is a flow-matching transformer over a causal video VAE's latents. d2v runs its
components the way `LTXPipeline.__call__` does (text encoding, packing into tokens, the
rope scale from the frame rate, classifier-free guidance, VAE decode), with three changes,
all in `d2v.bases.flow`: the latents start from the camera render's latents at t(g) instead of
pure noise (SDEdit; g = 1 is the pipeline's start), the dual clock re-imposes the guide where
it is valid, and a segment's first frames (`anchor`) are held to the previous segment's output.

Every factor comes from the model: the VAE's spatial and temporal compression
(`vae.spatial_compression_ratio`, `temporal_compression_ratio`: 32 and 8 for LTX-Video, so
frame counts are 8k + 1 and sides multiples of 32 times the patch size), the latent mean and
std (VAE buffers), the scaling factor, the transformer's patch sizes, the scheduler's shift
(dynamic by sequence length). Natural length: 121 frames at 24 fps per generation (about 5 s;
D2V_LTX_CLIP_FRAMES changes it), at the model's trained area (768x512).

Loading: a directory or a hub id in the local Hugging Face cache (never downloaded); fp16 on
CUDA unless D2V_LTX_DTYPE says bf16 (the weights' own) or fp32; fp32 on the CPU. Importing
this module imports neither torch nor diffusers.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from d2v.bases import BASES
from d2v.bases.common import SharedModels, load_pipeline, model_frame_for, pick_dtype, prompt_for, resolve_device
from d2v.bases.flow import (FlowClock, anchor_mask, check_frames, clip_frames_setting, hold_mask, keyframe_fps,
                            model_shift, model_sigmas)
from d2v.models import CameraTrajectory, RenderRequest

if TYPE_CHECKING:
    import torch

MODEL_ENV, DTYPE_ENV, CLIP_ENV = "D2V_LTX_MODEL", "D2V_LTX_DTYPE", "D2V_LTX_CLIP_FRAMES"
NATIVE_FPS = 24  # LTX-Video's training frame rate (the pipeline's default frame_rate is 25)
NATIVE_CLIP = 121  # frames per generation: 5 s at 24 fps
NATIVE_AREA = 768 * 512  # LTX-Video 0.9.x's trained size
GUIDANCE_SCALE = 3.0  # LTXPipeline's default
MAX_TEXT_TOKENS = 128  # LTXPipeline's max_sequence_length
MIN_KEYFRAME_RATE = 4  # keyframes per second below which a long move is split into segments


def ltx_model_setting() -> str | None:
    """The configured model (D2V_LTX_MODEL): a directory or a hub id; None when unset."""
    return BASES["ltx"].model()


_not_configured = BASES["ltx"].not_configured


_shared = SharedModels(lambda model, device: load_ltx(model, device))


def shared_ltx(model: str, device: str | None = "auto", options=None) -> tuple["LTXModel", bool]:
    """The process's LTX model for these settings, loaded on first use: (model, loaded now)."""
    return _shared.get(model, device)


def load_ltx(model: str | None, device: str | None = "auto", *, dtype: str | None = None) -> "LTXModel":
    """Load an LTX-Video pipeline: a `save_pretrained` directory or a cached hub id; None or ""
    -> ModelNotConfiguredError naming D2V_LTX_MODEL (as does anything that fails to load)."""
    if not model:
        raise _not_configured(f"{MODEL_ENV} is not set")
    from diffusers import LTXConditionPipeline

    device = resolve_device(device)
    torch_dtype = pick_dtype(device, dtype or os.environ.get(DTYPE_ENV, "").strip().lower() or None, DTYPE_ENV)
    pipe = load_pipeline(LTXConditionPipeline, str(model), MODEL_ENV, _not_configured, torch_dtype)
    return LTXModel(pipe, name=str(model), device=device, dtype=torch_dtype)


class LTXModel:
    """A loaded LTX-Video pipeline and d2v's settings for it. One generation at a time (a lock)."""

    family = "ltx"
    fixed_length = False
    reads_text = True

    def __init__(self, pipe, *, name: str, device: str, dtype):
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.name, self.device, self.dtype = pipe, name, device, dtype
        self.vae, self.transformer, self.text_encoder = pipe.vae, pipe.transformer, pipe.text_encoder
        self.spatial = int(self.vae.spatial_compression_ratio)
        self.temporal_compression = int(self.vae.temporal_compression_ratio)
        self.patch = int(self.transformer.config.patch_size)
        self.patch_t = int(self.transformer.config.patch_size_t)
        self.size_multiple = self.spatial * self.patch
        self.frame_step = self.temporal_compression * self.patch_t  # frames: step k + 1
        self.native_area = NATIVE_AREA
        self.clip_frames = clip_frames_setting(NATIVE_CLIP, self.frame_step, CLIP_ENV, _not_configured)
        self.keyframe_rate = (MIN_KEYFRAME_RATE, NATIVE_FPS)
        self.guidance_scale = GUIDANCE_SCALE
        self._lock = threading.Lock()

    def area_for(self, request: RenderRequest) -> int:
        """Pixels per frame: the output's, up to the trained area (the model is trained at several
        sizes, so a small output is rendered small rather than upscaled from a large render)."""
        return min(self.native_area, max(request.width * request.height, self.size_multiple ** 2))

    def __repr__(self) -> str:
        return f"LTXModel({self.name!r}, device={self.device!r}, dtype={self.dtype})"

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                "clip_frames": self.clip_frames, "frame_rule": f"{self.frame_step}k+1",
                "size_multiple": self.size_multiple, "vae_compression": [self.temporal_compression, self.spatial],
                "patch_size": [self.patch_t, self.patch], "text": True}

    # -- settings ---------------------------------------------------------------------

    def _latent_shape(self, k: int, h: int, w: int) -> tuple[int, int, int, int]:
        """(channels, frames, height, width) of the latents of k frames of h x w."""
        return (int(self.transformer.config.in_channels), (k - 1) // self.temporal_compression + 1,
                h // self.spatial, w // self.spatial)

    def _clock(self, request: RenderRequest, seq_len: int) -> tuple[FlowClock, float]:
        shift = model_shift(self.pipe.scheduler, seq_len)
        sigmas = model_sigmas(self.pipe.scheduler, int(request.num_inference_steps), seq_len)
        return FlowClock.for_request(request, sigmas, shift), shift

    def settings_for(self, request: RenderRequest, trajectory: CameraTrajectory, k: int | None = None) -> dict[str, Any]:
        """Every setting generate() uses for this request: what the manifest records."""
        frame = model_frame_for(request, self)
        k = k or len(trajectory.frames)
        _, f, lh, lw = self._latent_shape(k, frame.height, frame.width)
        clock, shift = self._clock(request, f * lh * lw // (self.patch_t * self.patch ** 2))
        return {
            "model": self.name, "family": self.family, "num_frames": k, "width": frame.width,
            "height": frame.height, "view": list(frame.view), "guidance_strength": float(request.guidance_strength),
            "free_strength": request.free_strength, "steps": int(request.num_inference_steps),
            "denoise_steps": clock.steps, "start_t": round(clock.start, 6), "hold_t": clock.hold, "shift": round(shift, 4),
            "mode": clock.mode, "guidance_scale": self.guidance_scale, "fps": keyframe_fps(trajectory, NATIVE_FPS),
            "prompt": prompt_for(request, trajectory), "prompt_source": "request" if request.prompt else "effect",
            "negative_prompt": request.negative_prompt or "", "seed": int(request.seed),
            "dtype": str(self.dtype).removeprefix("torch."), "device": self.device,
        }

    # -- tensors ----------------------------------------------------------------------

    def _encode(self, frames: np.ndarray) -> "torch.Tensor":
        """(K, H, W, 3) uint8 -> normalised latents (1, C, F, h, w): the VAE's mode, less the
        latent mean, over the std, times the scaling factor (the pipeline's _normalize_latents)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = (x.permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0).to(self.vae.dtype)
        latents = self.vae.encode(x).latent_dist.mode().float()
        return self.pipe._normalize_latents(latents, self.vae.latents_mean, self.vae.latents_std,
                                            self.vae.config.scaling_factor)

    def _decode(self, latents: "torch.Tensor") -> np.ndarray:
        """Normalised latents (1, C, F, h, w) -> (K, H, W, 3) uint8."""
        import torch

        latents = self.pipe._denormalize_latents(latents, self.vae.latents_mean, self.vae.latents_std,
                                                 self.vae.config.scaling_factor).to(self.vae.dtype)
        # Decoders with timestep conditioning (LTX 0.9.1+) take the pipeline's default decode_timestep, 0.
        temb = torch.zeros(1, device=self.device, dtype=latents.dtype) if self.vae.config.timestep_conditioning else None
        video = self.vae.decode(latents, temb, return_dict=False)[0]  # (1, 3, K, H, W) in [-1, 1]
        video = ((video[0].permute(1, 2, 3, 0).float() + 1.0) * 127.5).round().clamp(0, 255)
        return video.to(torch.uint8).cpu().numpy()

    def _pack(self, latents: "torch.Tensor") -> "torch.Tensor":
        return self.pipe._pack_latents(latents, self.patch, self.patch_t)

    def _text(self, text: str, do_cfg: bool, negative: str):
        max_len = min(MAX_TEXT_TOKENS, int(getattr(self.pipe.tokenizer, "model_max_length", MAX_TEXT_TOKENS)))
        embeds, mask, neg, neg_mask = self.pipe.encode_prompt(
            prompt=text, negative_prompt=negative, do_classifier_free_guidance=do_cfg,
            max_sequence_length=max_len, device=self.device, dtype=self.dtype)
        if do_cfg:  # the unconditional branch first, as the pipeline batches them
            import torch

            return torch.cat([neg, embeds]), torch.cat([neg_mask, mask])
        return embeds, mask

    # -- generation -------------------------------------------------------------------

    def generate(self, image: np.ndarray, guide_frames: np.ndarray, request: RenderRequest,
                 trajectory: CameraTrajectory, *, valid: np.ndarray | None = None, anchor: int = 0,
                 step_callback=None) -> np.ndarray:
        """Keyframes that follow the guide: (K, H, W, 3) uint8, the shape of `guide_frames` (the
        camera renders of the K keyframe cameras on the model's canvas; K of the form
        `frame_step` k + 1). `valid`: (K, H, W) bool, where the guide shows the photo (dual clock).
        `anchor`: the first frames are the previous segment's output, held to the end.
        `step_callback(i, info)` before each transformer call, with t, the latents, the guide's
        latents, the hold mask and whether the guide is held (unpacked, (1, C, F, h, w)).
        Seeded by request.seed."""
        import torch

        # 1. Check inputs.
        guide_frames = check_frames(guide_frames, self.size_multiple, self.frame_step)
        k, h, w = guide_frames.shape[:3]

        # 2. The clocks; g = 0 leaves the camera render as it is.
        c, f, lh, lw = self._latent_shape(k, h, w)
        seq_len = f * lh * lw // (self.patch_t * self.patch ** 2)
        clock, _ = self._clock(request, seq_len)
        if clock.mode == "camera render":
            return guide_frames.copy()
        settings = self.settings_for(request, trajectory, k)

        with self._lock, torch.inference_mode():
            device = self.device
            generator = torch.Generator(device=device).manual_seed(int(request.seed))
            do_cfg = self.guidance_scale > 1.0

            # 3. Text: the prompt (or the effect's description) and the negative prompt.
            embeds, mask = self._text(settings["prompt"], do_cfg, settings["negative_prompt"])

            # 4. The guide's latents, and where they are held: the dual clock's validity mask
            #    (latent cells valid in every frame they cover) and the anchor (whole latent
            #    frames made only of the previous segment's frames).
            guide = self._encode(guide_frames)  # (1, C, F, h, w)
            keep = hold_mask(valid if clock.hold is not None else None, clock.hold is not None, (f, lh, lw),
                             self.temporal_compression, device)
            anchored = anchor_mask(anchor, (f, lh, lw), self.temporal_compression, device)

            # 5. Initial latents: the guide at t0 (pure noise at t0 = 1, as the pipeline starts).
            #    The noise is drawn whatever g is, so a seed's noise is the same at every strength.
            noise = torch.randn((1, c, f, lh, lw), generator=generator, device=device)
            t0 = clock.start
            latents = noise if clock.from_noise else (1.0 - t0) * guide + t0 * noise

            # 6. Micro-conditions: the rope's scale in time follows the keyframes' rate.
            rope_scale = (self.temporal_compression / settings["fps"], self.spatial, self.spatial)
            scale = self.pipe.scheduler.config.num_train_timesteps

            # 7. Denoising loop: Euler steps of the predicted velocity over the schedule.
            for i, (t, t_next) in enumerate(zip(clock.schedule[:-1], clock.schedule[1:])):
                holding = clock.hold is not None and t > clock.hold * (1.0 + 1e-6)
                if holding or anchor:
                    fresh = torch.randn(latents.shape, generator=generator, device=device)
                    renoised = (1.0 - t) * guide + t * fresh
                    held = torch.clamp(anchored + (keep if holding else 0.0), max=1.0)
                    latents = held * renoised + (1.0 - held) * latents
                if step_callback is not None:
                    step_callback(i, {"t": t, "sigma": t, "latents": latents, "guide": guide, "mask": keep,
                                      "holding": holding, "anchor": anchored})
                tokens = self._pack(latents)
                model_in = torch.cat([tokens] * 2) if do_cfg else tokens
                timestep = torch.full((model_in.shape[0],), t * scale, device=device)
                velocity = self.transformer(
                    hidden_states=model_in.to(self.dtype), encoder_hidden_states=embeds, timestep=timestep,
                    encoder_attention_mask=mask, num_frames=f, height=lh, width=lw,
                    rope_interpolation_scale=rope_scale, return_dict=False,
                )[0].float()
                if do_cfg:
                    uncond, cond = velocity.chunk(2)
                    velocity = uncond + self.guidance_scale * (cond - uncond)
                velocity = self.pipe._unpack_latents(velocity, f, lh, lw, self.patch, self.patch_t)
                latents = latents + (t_next - t) * velocity
            if anchor:  # the held frames are the previous segment's, exactly (before the VAE)
                latents = anchored * guide + (1.0 - anchored) * latents

            # 8. Decode -> uint8 frames.
            return self._decode(latents)
