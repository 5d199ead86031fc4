"""The `wan` base: Wan 2.2 TI2V-5B (diffusers `WanImageToVideoPipeline` components with
`expand_timesteps`) steered by the drawn camera path, with a text prompt.

    wan_model_setting() -> str | None              D2V_WAN_MODEL, None when unset
    load_wan(model, device) / shared_wan(model, device) -> WanModel
    WanModel.generate(image, guide_frames, request, trajectory, valid=, anchor=, step_callback=) -> (K, H, W, 3)
    WanModel.settings_for(request, trajectory) -> dict   (what the manifest records)

Wan 2.2 TI2V-5B is a flow-matching transformer over a causal video VAE. Its image-to-video mode
(`expand_timesteps`) puts the image's latent in the first latent frame and gives those tokens
timestep 0, while the other frames are denoised; d2v runs the components that way (text through
the UMT5 encoder, per-token timesteps, classifier-free guidance, VAE decode), with the image being
the guide's first frame (the trajectory's first view), and the other frames starting from the
camera render's latents at t(g) instead of pure noise (`d2v.bases.flow`: the strength table, the
dual clock, segments' anchors). The sampler is flow matching's Euler step on the model's own
sigmas (Wan ships UniPC, a multistep solver: the schedule and shift are the same, the steps
simpler, and a partial schedule needs no solver history).

Every factor comes from the model: the VAE's compression (`vae.config.scale_factor_spatial`,
`scale_factor_temporal`: 16 and 4 for Wan 2.2, so frame counts are 4k + 1), latent mean and std
(`vae.config.latents_mean`, `latents_std`), the transformer's patch size (1, 2, 2), the
scheduler's `flow_shift`. Natural length: 121 frames at 24 fps (5 s; D2V_WAN_CLIP_FRAMES), at
1280x704. Loading as for every base: a directory or a cached hub id, never downloaded; bf16 on
CUDA unless D2V_WAN_DTYPE says otherwise; fp32 on the CPU.
"""

from __future__ import annotations

import math
import os
import re
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

MODEL_ENV, DTYPE_ENV, CLIP_ENV = "D2V_WAN_MODEL", "D2V_WAN_DTYPE", "D2V_WAN_CLIP_FRAMES"
NATIVE_FPS = 24
NATIVE_CLIP = 121  # 5 s at 24 fps
NATIVE_AREA = 1280 * 704
GUIDANCE_SCALE = 5.0  # WanImageToVideoPipeline's default
MAX_TEXT_TOKENS = 512  # the pipeline's max_sequence_length
MIN_KEYFRAME_RATE = 4


def wan_model_setting() -> str | None:
    """The configured model (D2V_WAN_MODEL): a directory or a hub id; None when unset."""
    return BASES["wan"].model()


_not_configured = BASES["wan"].not_configured


_shared = SharedModels(lambda model, device: load_wan(model, device))


def shared_wan(model: str, device: str | None = "auto", options=None) -> tuple["WanModel", bool]:
    """The process's Wan model for these settings, loaded on first use: (model, loaded now)."""
    return _shared.get(model, device)


def load_wan(model: str | None, device: str | None = "auto", *, dtype: str | None = None) -> "WanModel":
    """Load a Wan 2.2 TI2V pipeline; None or "" -> ModelNotConfiguredError naming D2V_WAN_MODEL."""
    if not model:
        raise _not_configured(f"{MODEL_ENV} is not set")
    from diffusers import WanImageToVideoPipeline

    device = resolve_device(device)
    setting = dtype or os.environ.get(DTYPE_ENV, "").strip().lower() or "bf16"
    torch_dtype = pick_dtype(device, setting, DTYPE_ENV)
    # TI2V checkpoints may name themselves WanPipeline; their image-to-video mode is expand_timesteps.
    pipe = load_pipeline(WanImageToVideoPipeline, str(model), MODEL_ENV, _not_configured, torch_dtype,
                         expand_timesteps=True)
    return WanModel(pipe, name=str(model), device=device, dtype=torch_dtype)


class WanModel:
    """A loaded Wan 2.2 TI2V pipeline and d2v's settings for it. One generation at a time."""

    family = "wan"
    fixed_length = False
    reads_text = True

    def __init__(self, pipe, *, name: str, device: str, dtype):
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.name, self.device, self.dtype = pipe, name, device, dtype
        self.vae, self.transformer, self.text_encoder = pipe.vae, pipe.transformer, pipe.text_encoder
        config = self.vae.config
        self.spatial = int(config.scale_factor_spatial)
        self.temporal_compression = int(config.scale_factor_temporal)
        self.patch = tuple(int(p) for p in self.transformer.config.patch_size)  # (t, h, w)
        self.size_multiple = self.spatial * math.lcm(self.patch[1], self.patch[2])
        self.frame_step = self.temporal_compression * self.patch[0]
        self.latents_mean = np.asarray(config.latents_mean, np.float32)
        self.latents_std = np.asarray(config.latents_std, np.float32)
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
        return f"WanModel({self.name!r}, device={self.device!r}, dtype={self.dtype})"

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
                "clip_frames": self.clip_frames, "frame_rule": f"{self.frame_step}k+1",
                "size_multiple": self.size_multiple, "vae_compression": [self.temporal_compression, self.spatial],
                "patch_size": list(self.patch), "text": True}

    # -- settings ---------------------------------------------------------------------

    def _latent_shape(self, k: int, h: int, w: int) -> tuple[int, int, int, int]:
        return (int(self.vae.config.z_dim), (k - 1) // self.temporal_compression + 1,
                h // self.spatial, w // self.spatial)

    def _tokens(self, f: int, lh: int, lw: int) -> int:
        pt, ph, pw = self.patch
        return (f // pt) * (lh // ph) * (lw // pw)

    def _clock(self, request: RenderRequest, seq_len: int) -> tuple[FlowClock, float]:
        shift = model_shift(self.pipe.scheduler, seq_len)
        sigmas = model_sigmas(self.pipe.scheduler, int(request.num_inference_steps), seq_len)
        return FlowClock.for_request(request, sigmas, shift), shift

    def settings_for(self, request: RenderRequest, trajectory: CameraTrajectory, k: int | None = None) -> dict[str, Any]:
        """Every setting generate() uses for this request: what the manifest records."""
        frame = model_frame_for(request, self)
        k = k or len(trajectory.frames)
        _, f, lh, lw = self._latent_shape(k, frame.height, frame.width)
        clock, shift = self._clock(request, self._tokens(f, lh, lw))
        return {
            "model": self.name, "family": self.family, "num_frames": k, "width": frame.width,
            "height": frame.height, "view": list(frame.view), "guidance_strength": float(request.guidance_strength),
            "free_strength": request.free_strength, "steps": int(request.num_inference_steps),
            "denoise_steps": clock.steps, "start_t": round(clock.start, 6), "hold_t": clock.hold, "shift": round(shift, 4),
            "mode": clock.mode, "guidance_scale": self.guidance_scale, "fps": keyframe_fps(trajectory, NATIVE_FPS),
            "prompt": prompt_for(request, trajectory), "prompt_source": "request" if request.prompt else "effect",
            "negative_prompt": request.negative_prompt or "", "seed": int(request.seed),
            "first_frame": "the guide's first frame, at timestep 0 (TI2V expand_timesteps)",
            "dtype": str(self.dtype).removeprefix("torch."), "device": self.device,
        }

    # -- tensors ----------------------------------------------------------------------

    def _stats(self, device) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        c = len(self.latents_mean)
        return (torch.from_numpy(self.latents_mean).view(1, c, 1, 1, 1).to(device),
                torch.from_numpy(self.latents_std).view(1, c, 1, 1, 1).to(device))

    def _encode(self, frames: np.ndarray) -> "torch.Tensor":
        """(K, H, W, 3) uint8 -> normalised latents (1, C, F, h, w): (mode - mean) / std, as the pipeline."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = (x.permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0).to(self.vae.dtype)
        mean, std = self._stats(self.device)
        return (self.vae.encode(x).latent_dist.mode().float() - mean) / std

    def _decode(self, latents: "torch.Tensor") -> np.ndarray:
        import torch

        mean, std = self._stats(latents.device)
        video = self.vae.decode((latents * std + mean).to(self.vae.dtype), return_dict=False)[0]
        video = ((video[0].permute(1, 2, 3, 0).float() + 1.0) * 127.5).round().clamp(0, 255)
        return video.to(torch.uint8).cpu().numpy()

    def _text(self, texts: list[str]) -> "torch.Tensor":
        """UMT5 embeddings of each text, zero past its tokens (the pipeline's _get_t5_prompt_embeds,
        with its whitespace clean-up; ftfy's mojibake repair is left out: request text is UTF-8)."""
        import torch

        tok = self.pipe.tokenizer
        max_len = min(MAX_TEXT_TOKENS, int(getattr(tok, "model_max_length", MAX_TEXT_TOKENS)))
        texts = [re.sub(r"\s+", " ", t).strip() for t in texts]
        inputs = tok(texts, padding="max_length", max_length=max_len, truncation=True, add_special_tokens=True,
                     return_attention_mask=True, return_tensors="pt")
        ids, mask = inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device)
        embeds = self.text_encoder(ids, mask).last_hidden_state.to(self.dtype)
        return embeds * mask[..., None].to(embeds.dtype)

    # -- generation -------------------------------------------------------------------

    def generate(self, image: np.ndarray, guide_frames: np.ndarray, request: RenderRequest,
                 trajectory: CameraTrajectory, *, valid: np.ndarray | None = None, anchor: int = 0,
                 step_callback=None) -> np.ndarray:
        """Keyframes that follow the guide: (K, H, W, 3) uint8, the shape of `guide_frames` (K of
        the form `frame_step` k + 1). `valid`, `anchor`, `step_callback`: as `LTXModel.generate`.
        Seeded by request.seed."""
        import torch

        # 1. Check inputs.
        guide_frames = check_frames(guide_frames, self.size_multiple, self.frame_step)
        k, h, w = guide_frames.shape[:3]

        # 2. The clocks; g = 0 leaves the camera render as it is.
        c, f, lh, lw = self._latent_shape(k, h, w)
        clock, _ = self._clock(request, self._tokens(f, lh, lw))
        if clock.mode == "camera render":
            return guide_frames.copy()
        settings = self.settings_for(request, trajectory, k)

        with self._lock, torch.inference_mode():
            device = self.device
            generator = torch.Generator(device=device).manual_seed(int(request.seed))
            do_cfg = self.guidance_scale > 1.0

            # 3. Text: negative then positive, batched into one transformer call per step.
            texts = [settings["negative_prompt"], settings["prompt"]] if do_cfg else [settings["prompt"]]
            embeds = self._text(texts)

            # 4. The guide's latents. Its first latent frame is the image condition (TI2V): clean,
            #    at timestep 0, in every call. The dual clock's hold mask; the segment's anchor.
            guide = self._encode(guide_frames)
            first = torch.ones((1, 1, f, lh, lw), device=device)
            first[:, :, 0] = 0.0  # 0 where the condition stands (the pipeline's first_frame_mask)
            keep = hold_mask(valid if clock.hold is not None else None, clock.hold is not None, (f, lh, lw),
                             self.temporal_compression, device)
            anchored = anchor_mask(anchor, (f, lh, lw), self.temporal_compression, device)

            # 5. Initial latents: the guide at t0 (pure noise at t0 = 1).
            noise = torch.randn((1, c, f, lh, lw), generator=generator, device=device)
            t0 = clock.start
            latents = noise if clock.from_noise else (1.0 - t0) * guide + t0 * noise
            scale = self.pipe.scheduler.config.num_train_timesteps
            pt, ph, pw = self.patch
            token_first = first[0, 0, ::pt, ::ph, ::pw].flatten()  # per token: 0 on the condition frame

            # 6. Denoising loop: Euler steps of the predicted velocity over the schedule.
            for i, (t, t_next) in enumerate(zip(clock.schedule[:-1], clock.schedule[1:])):
                holding = clock.hold is not None and t > clock.hold * (1.0 + 1e-6)
                if holding or anchor:
                    fresh = torch.randn(latents.shape, generator=generator, device=device)
                    held = torch.clamp(anchored + (keep if holding else 0.0), max=1.0)
                    latents = held * ((1.0 - t) * guide + t * fresh) + (1.0 - held) * latents
                if step_callback is not None:
                    step_callback(i, {"t": t, "sigma": t, "latents": latents, "guide": guide, "mask": keep,
                                      "holding": holding, "anchor": anchored})
                model_in = (1.0 - first) * guide + first * latents
                model_in = torch.cat([model_in] * 2) if do_cfg else model_in
                timestep = (token_first * t * scale)[None].expand(model_in.shape[0], -1)
                velocity = self.transformer(hidden_states=model_in.to(self.dtype), timestep=timestep,
                                            encoder_hidden_states=embeds, return_dict=False)[0].float()
                if do_cfg:
                    uncond, cond = velocity.chunk(2)
                    velocity = uncond + self.guidance_scale * (cond - uncond)
                latents = latents + (t_next - t) * velocity
            # The condition frame and the anchored frames are the guide's, exactly.
            fixed = torch.clamp(anchored + (1.0 - first), max=1.0)
            latents = fixed * guide + (1.0 - fixed) * latents

            # 7. Decode -> uint8 frames.
            return self._decode(latents)
