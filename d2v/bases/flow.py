"""Strength, schedule and clocks for the flow-matching bases (LTX-Video, Wan 2.2), shared by
`d2v.bases.ltx` and `d2v.bases.wan`.

    model_shift(scheduler, seq_len) -> float        the schedule's shift (config; LTX: by sequence length)
    model_sigmas(scheduler, steps, seq_len) -> list  the model's own schedule, without the final 0
    FlowClock.for_request(request, sigmas, shift)    where denoising starts, where the guide stops being held
    hold_mask / anchor_mask                          which latent cells the guide holds (dual clock, segments)

A flow-matching model denoises x_t = (1 - t) x_0 + t noise from t = 1 to 0 by Euler steps of its
predicted velocity: x_{t'} = x_t + (t' - t) v. d2v starts from the guide's latents at t(g)
(`d2v.bases.common.flow_start`): the same noise-to-signal ratio as SVD's sigma(g), times the
model's shift. The real models ship Wan 2.2 TI2V: 5; LTX-Video: exp(mu), mu by sequence length
(exp(0.95) = 2.6 at 1024 latent tokens, exp(2.05) = 7.8 at 4096). t(g):

      g         0.1     0.2     0.3     0.4     0.5     0.6     0.7     0.8     0.9     1.0
      shift 1   0.0071  0.0251  0.0843  0.248   0.542   0.809   0.938   0.982   0.995   1 (model alone)
      shift 5   0.0346  0.114   0.315   0.623   0.855   0.955   0.987   0.996   0.999   1

g = 0 returns the guide exactly; t rises with g at every shift; g = 1 runs the model's whole
schedule from pure noise, as the diffusers pipeline does (then the guide is not used, unless the
dual clock holds it). The
schedule after t(g) is the model's own (its scheduler's `set_timesteps`, shift and terminal
stretch included) below t(g), then 0: one transformer call per level before the 0.

Dual clock (as for SVD, after Time-to-Move): where the guide shows the photo, its latents are
re-imposed, re-noised to the current t, at every step while t is above t(guidance_strength);
elsewhere the model denoises from the earlier t(free_strength).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from d2v.bases.common import flow_start, latent_validity
from d2v.errors import InvalidRequestError
from d2v.models import CameraTrajectory, RenderRequest

if TYPE_CHECKING:
    import torch


def model_shift(scheduler, seq_len: int) -> float:
    """The shift of the model's schedule for `seq_len` latent tokens, from its scheduler config:
    exp(mu) with mu interpolated by sequence length where the scheduler shifts dynamically (LTX,
    Flux's rule), else `shift` (FlowMatchEuler) or `flow_shift` (UniPC, Wan)."""
    config = scheduler.config
    if config.get("use_dynamic_shifting"):
        return math.exp(dynamic_mu(config, seq_len))
    return float(config.get("flow_shift") or config.get("shift") or 1.0)


def dynamic_mu(config, seq_len: int) -> float:
    """mu for a sequence length, linear between (base_image_seq_len, base_shift) and
    (max_image_seq_len, max_shift), as the LTX pipeline's `calculate_shift`."""
    lo_len, hi_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    lo, hi = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    m = (hi - lo) / (hi_len - lo_len)
    return seq_len * m + (lo - m * lo_len)


def model_sigmas(scheduler, steps: int, seq_len: int) -> list[float]:
    """The model's full schedule for `steps` steps, descending from 1, without the final 0 (one
    level per transformer call), from a private copy of its scheduler."""
    import numpy as np

    if steps <= 1:  # one step: from pure noise straight to 0 (a terminal stretch of one level divides by 0)
        return [1.0]
    sched = type(scheduler).from_config(scheduler.config)
    if scheduler.config.get("use_dynamic_shifting"):
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=dynamic_mu(scheduler.config, seq_len))
    else:
        sched.set_timesteps(int(steps))
    levels = [float(s) for s in sched.sigmas]
    while levels and levels[-1] <= 0.0:
        levels.pop()
    return levels[:steps]


@dataclass(frozen=True)
class FlowClock:
    """The clocks of one generation: `schedule`, the levels to visit ending in 0 (its length less
    one is the number of transformer calls); `hold`, the t down to which the guide is re-imposed
    where it is valid (dual clock; None with one clock); and the mode for the manifest."""

    schedule: list[float]
    hold: float | None
    mode: str  # camera render | model alone | sdedit | dual clock
    from_noise: bool = False  # the model's whole schedule from pure noise (g = 1: the pipeline's start)

    @property
    def start(self) -> float:
        return self.schedule[0] if self.schedule else 0.0

    @property
    def steps(self) -> int:
        return max(0, len(self.schedule) - 1)

    @classmethod
    def for_request(cls, request: RenderRequest, sigmas: list[float], shift: float) -> "FlowClock":
        guided = flow_start(request.guidance_strength, shift)
        free = request.free_strength
        if guided == 0.0 and (free is None or free <= 0.0):
            return cls([], None, "camera render")
        start = max(guided, flow_start(free, shift)) if free is not None else guided
        if start >= 1.0:  # the pipeline's own schedule (its first level may sit just below 1), from noise
            schedule = list(sigmas)
        else:
            schedule = [start] + [s for s in sigmas if s < start * (1.0 - 1e-6)]
        schedule.append(0.0)
        if free is not None and start > guided:
            return cls(schedule, guided, "dual clock", from_noise=start >= 1.0)
        return cls(schedule, None, "model alone" if start >= 1.0 else "sdedit", from_noise=start >= 1.0)


def hold_mask(valid, dual: bool, shape: tuple[int, int, int], temporal: int, device) -> "torch.Tensor":
    """(1, 1, F, h, w) float: 1 on latent cells the dual clock holds (valid throughout), 0 with one clock."""
    import torch

    f, lh, lw = shape
    if not dual:
        return torch.zeros((1, 1, f, lh, lw), device=device)
    cells = latent_validity(valid, f, lh, lw, temporal)
    return torch.from_numpy(cells)[None, None].to(device)


def anchor_mask(anchor: int, shape: tuple[int, int, int], temporal: int, device) -> "torch.Tensor":
    """(1, 1, F, h, w) float: 1 on the latent frames made only of the first `anchor` pixel frames
    (a causal VAE: latent frame j ends at pixel frame j * temporal)."""
    import torch

    f, lh, lw = shape
    out = torch.zeros((1, 1, f, lh, lw), device=device)
    if anchor > 0:
        whole = min(f, (anchor - 1) // temporal + 1)
        out[:, :, :whole] = 1.0
    return out


def check_frames(frames: np.ndarray, multiple: int, step: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InvalidRequestError(f"guide frames must be (K, h, w, 3) uint8, got {frames.shape} {frames.dtype}")
    k, h, w = frames.shape[:3]
    if h % multiple or w % multiple:
        raise InvalidRequestError(f"guide frames are {w}x{h}; this model needs multiples of {multiple}")
    if (k - 1) % step:
        raise InvalidRequestError(f"{k} guide frames; this model makes {step}k + 1 frames")
    return frames


def clip_frames_setting(default: int, step: int, env: str, not_configured: Callable[[str], Exception]) -> int:
    """Frames per generation: `default`, or the setting `env` (fewer frames, less memory), which
    must follow the model's frame rule (step k + 1); `not_configured` names what is wrong."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < step + 1 or (n - 1) % step:
        raise not_configured(f"{env}={raw!r} must be a frame count of the form {step}k + 1")
    return n


def keyframe_fps(trajectory: CameraTrajectory, native_fps: float) -> float:
    """The keyframes' rate: K frames over the move's span (the rope's time scale); the model's
    own rate for a move without a span."""
    frames = trajectory.frames
    span = frames[-1].time_s - frames[0].time_s if len(frames) > 1 else 0.0
    return float(native_fps) if span <= 0 else round((len(frames) - 1) / span, 4)
