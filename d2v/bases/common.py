"""What the generative bases share: loading, sizing, strength as a noise level, the guide and its
validity mask, segments, text, and auto-correct through the path check. One place, used by
`d2v.bases.svd`, `d2v.bases.ltx` and `d2v.bases.wan`.

    load_pipeline(cls, model, setting, label, dtype) -> a diffusers pipeline (never downloads)
    model_frame(aspect, multiple, native_area) -> ModelFrame   canvas size and the output's view in it
    make_guide(renderer, request, k, frame) -> Guide          the camera backend's keyframes at that size
    start_sigma(g) / flow_start(g, shift)                      strength -> noise level (see the tables)
    plan_segments(n, clip, overlap) -> [(start, stop)]        a long clip as overlapping generations
    generate_following(model, image, guide, request) -> keyframes, attempts   auto-correct
    measure_keyframes(seen, image, key_traj, request, scene=) -> FidelityReport  what auto-correct measures

Strength is one scale for every base: g = 0 is the camera render exactly, g = 1 the model alone,
and in between g sets the noise-to-signal ratio the guide starts from, on a log scale between
SVD's schedule ends: r(g) = 0.002 * (700 / 0.002) ** g. SVD's sigma is that ratio; a flow-matching
model (LTX, Wan) mixes x_t = (1 - t) x_0 + t noise, whose ratio is t / (1 - t), so
t(g) = shift * r / (1 + shift * r), with the model's schedule shift (its scheduler config; LTX
shifts by sequence length). `d2v.bases.svd` and `d2v.bases.flow` print the tables.

The output's aspect is kept exactly for every size: a model renders on a canvas whose sides
follow its own rules (multiples of 64 for SVD, of the VAE compression times the patch size for
LTX and Wan), and the output's view is the largest rectangle of the output's aspect inside it
(`ModelFrame.view`). The guide is planned for that view and rendered on the whole canvas (the
canvas shows a little more around it); the keyframes are cropped back to the view. Nothing is
ever stretched.

Importing this module imports neither torch nor diffusers.
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from d2v.errors import InvalidRequestError, ModelNotConfiguredError
from d2v.models import CameraTrajectory, FidelityAttempt, RenderRequest

if TYPE_CHECKING:
    import torch

    from d2v.render import CameraRenderer

log = logging.getLogger(__name__)


# --- loading ---------------------------------------------------------------------------


def resolve_device(device: str | None) -> str:
    """None or "auto" -> "cuda" when torch sees a GPU, else "cpu". A CUDA device asked for
    where torch sees none (Ray's logical GPUs on a CPU machine) runs on the CPU."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(str(device))
    except (RuntimeError, ValueError):
        raise InvalidRequestError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        if device not in _warned:  # (once: a load resolves its device more than once)
            _warned.add(device)
            log.warning("device %s requested but torch sees no CUDA GPU: the model runs on the CPU", device)
        return "cpu"
    return str(device)


_warned: set = set()


class SharedModels:
    """A process's loaded models of one kind (a base, the depth or the segmentation model), one
    per (model, device), each loaded on first use (a farm replica or a batch worker keeps its
    models across jobs). `load(model, device)` loads one."""

    def __init__(self, load):
        self._load, self._models, self._lock = load, {}, threading.Lock()

    def get(self, model: str, device: str | None = "auto") -> tuple[object, bool]:
        """(the model, whether it was loaded by this call)."""
        key = (str(model), resolve_device(device))
        with self._lock:
            if key in self._models:
                return self._models[key], False
            self._models[key] = self._load(model, device)
            return self._models[key], True

    def __iter__(self):
        """The (model, device) pairs loaded so far."""
        with self._lock:
            return iter(list(self._models))

    def clear(self) -> None:
        """Forget every loaded model: the next use of each loads it again."""
        with self._lock:
            self._models.clear()


def pick_dtype(device: str, setting: str | None, setting_name: str) -> "torch.dtype":
    """The weights' dtype: fp32 on the CPU; on CUDA fp16 unless `setting` says bf16 or fp32."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32  # fp16 convolutions are slow or missing on CPUs
    names = {
        None: torch.float16, "fp16": torch.float16, "float16": torch.float16,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
    }  # fmt: skip
    if setting not in names:
        raise ModelNotConfiguredError(f"{setting_name}={setting!r} is not one of fp16, bf16, fp32")
    return names[setting]


@contextmanager
def no_progress_bars():
    """diffusers and transformers draw progress bars while loading: not on d2v's one-line
    outputs (`d2v models check`, replica logs)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    restore = []
    for lib in (diffusers_logging, transformers_logging):
        if lib.is_progress_bar_enabled():
            lib.disable_progress_bar()
            restore.append(lib)
    try:
        yield
    finally:
        for lib in restore:
            lib.enable_progress_bar()


def dtype_kwarg(dtype) -> dict:
    """diffusers renamed from_pretrained's `torch_dtype` to `dtype` (and warns on the old name)."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (only where `dtype` exists)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def load_pipeline(pipeline_cls, model: str, setting: str, not_configured: Callable[[str], Exception], dtype,
                  **extra):
    """`pipeline_cls.from_pretrained(model)` from a directory or a hub id in the local Hugging
    Face cache (`local_files_only`: a render replica never starts a multi-GB download), or
    `not_configured(detail)`, an error naming the setting. Missing, partial or corrupt files,
    a config of another model, weights of the wrong shapes: a configuration problem, reported
    as such, never a crash."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise not_configured(f"{setting}={model!r} is a directory but not a diffusers pipeline (no model_index.json)")
        source, kwargs = str(path), {}
    elif model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise not_configured(f"{setting}={model!r}: no such directory")
    else:  # "org/name": a hub id, from the local cache only
        source, kwargs = model, {"local_files_only": True}

    errors = []
    # Hub snapshots may hold only the fp16 variant files; try the plain files first.
    for variant in (None, "fp16"):
        try:
            with no_progress_bars():
                return pipeline_cls.from_pretrained(source, variant=variant, **dtype_kwarg(dtype), **kwargs, **extra)
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, AttributeError, EnvironmentError) as e:
            first_line = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else ""
            errors.append(f"{type(e).__name__}: {first_line[:200]}")
        if path.is_dir():
            break  # save_pretrained directories have no variants
    if path.is_dir():
        raise not_configured(f"{setting}={model!r} could not be loaded: {errors[0]}")
    log.warning("loading hub id %r from the local cache failed: %s", model, "; ".join(errors))
    raise not_configured(
        f"{setting}={model!r} is no directory, and as a hub id it is not loadable from the local Hugging "
        f"Face cache (d2v never downloads weights on a request: fetch them once with `hf download {model}`)"
    )


# --- sizing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFrame:
    """Where a base renders: a canvas of `width` x `height` (the model's size rules) and in it
    the output's view, `view` = (x0, y0, w, h), of the output's aspect to the pixel."""

    width: int
    height: int
    view: tuple[int, int, int, int]

    @property
    def view_size(self) -> tuple[int, int]:
        return self.view[2], self.view[3]

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """(N, height, width, ...) canvas frames -> (N, h, w, ...) of the view."""
        x0, y0, w, h = self.view
        return np.ascontiguousarray(frames[:, y0 : y0 + h, x0 : x0 + w])


def model_frame(aspect: float, multiple: int, native_area: int) -> ModelFrame:
    """The canvas a model renders an output of `aspect` (width / height) on: each side a
    multiple of `multiple`, about the model's trained area and never more, the aspect as close
    as the multiples allow; and the view, the largest centred rectangle of exactly `aspect`
    inside it (rounded to whole pixels)."""
    m, area = int(multiple), int(native_area)
    w = max(m, round(math.sqrt(area * aspect) / m) * m)
    h = max(m, round(math.sqrt(area / aspect) / m) * m)
    if w * h > area and (w > m or h > m):  # rounded up past the area: take off one step
        options = [(w - m, h)] if w > m else []
        options += [(w, h - m)] if h > m else []
        w, h = min(options, key=lambda s: abs(math.log(s[0] / s[1] / aspect)))
    if w / h > aspect:  # the canvas is wider: the view spans its height
        vw, vh = min(w, max(2, round(h * aspect))), h
    else:
        vw, vh = w, min(h, max(2, round(w / aspect)))
    return ModelFrame(w, h, ((w - vw) // 2, (h - vh) // 2, vw, vh))


def model_frame_for(request: RenderRequest, model) -> ModelFrame:
    """The canvas and the output's view in it, for a base with `size_multiple` and `native_area`
    (or `area_for(request)`): the keyframes are cropped to the view, then the upscale stage takes
    them to the output size without changing their aspect."""
    area = model.area_for(request) if hasattr(model, "area_for") else model.native_area
    return model_frame(request.width / request.height, model.size_multiple, area)


def cover_frame(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """The photo's largest centred crop with aspect w:h ("cover", the trajectory's view at
    time 0), resized to (h, w, 3)."""
    import cv2

    from d2v.camera import cover_crop

    H, W = image.shape[:2]
    u0, v0, cw, ch = cover_crop(W, H, w, h)
    x0, y0 = int(round(u0)), int(round(v0))
    crop = image[y0 : y0 + max(1, int(round(ch))), x0 : x0 + max(1, int(round(cw)))]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if crop.shape[1] > w else cv2.INTER_CUBIC)


def keyframe_indices(n_frames: int, k: int) -> list[int]:
    """k output frames spread evenly over n_frames, first and last included (repeats
    when n_frames < k): the frames whose cameras the guide renders."""
    if n_frames < 1 or k < 1:
        raise ValueError(f"need at least one frame and one keyframe, got {n_frames}, {k}")
    return [int(i) for i in np.round(np.linspace(0, n_frames - 1, k))]


def frames_by_rule(n: int, step: int) -> int:
    """The smallest frame count of the form step * k + 1 that is at least n (LTX: 8k+1, Wan: 4k+1)."""
    return max(1, math.ceil(max(0, n - 1) / step)) * step + 1


def decode_chunks(n: int, chunk: int) -> list[int]:
    """Sizes of the decode chunks for n frames: as few as chunks of at most `chunk` need, as
    even as possible (25 by 8: 7, 6, 6, 6, not 8, 8, 8, 1), so a temporal decoder never
    sees a frame alone (chunks of 2 with an odd n: one chunk of 3)."""
    pieces = max(1, min(math.ceil(n / max(1, chunk)), n // 2))
    return [len(part) for part in np.array_split(np.arange(n), pieces)]


# --- strength as a noise level ----------------------------------------------------------

SIGMA_MIN, SIGMA_MAX = 0.002, 700.0  # SVD's Karras schedule ends (scheduler_config.json): the one scale


def start_sigma(guidance_strength: float, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> float:
    """The noise-to-signal ratio strength g starts from: 0 for g <= 0 (the guide itself), else
    sigma_min * (sigma_max / sigma_min) ** g (log-linear; sigma_max at g = 1)."""
    g = float(guidance_strength)
    if g <= 0.0:
        return 0.0
    return float(math.exp(math.log(sigma_min) + min(g, 1.0) * (math.log(sigma_max) - math.log(sigma_min))))


def flow_start(guidance_strength: float, shift: float) -> float:
    """A flow-matching model's starting time t for strength g (x_t = (1 - t) x_0 + t noise):
    the t whose noise-to-signal ratio t / (1 - t) is the model's shift times SVD's sigma(g);
    0 at g = 0 (the guide), exactly 1 at g = 1 (pure noise: the model alone); monotonic."""
    g = float(guidance_strength)
    if g <= 0.0:
        return 0.0
    if g >= 1.0:
        return 1.0
    r = float(shift) * start_sigma(g)
    return r / (1.0 + r)


def denoise_sigmas(schedule, sigma: float) -> list[float]:
    """The partial schedule that starts at `sigma`: it, then the full schedule's levels below it,
    ending in 0 (`schedule`: descending, without the final 0; its length is the number of model
    calls). At or above the first: the whole schedule."""
    full = [float(x) for x in schedule]
    if sigma >= full[0]:
        return full + [0.0]
    return [float(sigma)] + [x for x in full if x < sigma * (1.0 - 1e-6)] + [0.0]


# --- the guide --------------------------------------------------------------------------


@dataclass
class Guide:
    """What steers a base: the keyframes' cameras at the view's size (`cameras`, what the path
    check measures against), the camera backend's render of them on the model's canvas and
    where that render shows the photo (False: pixels it had to invent); every output frame's
    camera at the view's size (`full`); and the canvas (`frame`)."""

    full: CameraTrajectory
    cameras: CameraTrajectory
    frames: np.ndarray  # (K, H, W, 3) uint8, the canvas
    valid: np.ndarray  # (K, H, W) bool
    frame: ModelFrame

    def part(self, start: int, stop: int) -> "Guide":
        """Keyframes [start, stop) of the guide: one segment's."""
        keep = self.cameras.frames[start:stop]
        cameras = self.cameras.model_copy(
            update={"frames": [c.model_copy(update={"index": j}) for j, c in enumerate(keep)]})
        return Guide(self.full, cameras, self.frames[start:stop], self.valid[start:stop], self.frame)


def on_canvas(trajectory: CameraTrajectory, frame: ModelFrame) -> CameraTrajectory:
    """The same cameras seeing the canvas: the principal point moves by the view's offset, so
    the view's pixels are exactly where the trajectory put them and the canvas shows more around."""
    x0, y0 = frame.view[:2]
    cams = [c.model_copy(update={"cx": c.cx + x0, "cy": c.cy + y0}) for c in trajectory.frames]
    return trajectory.model_copy(update={"frames": cams, "width": frame.width, "height": frame.height})


def make_guide(renderer: "CameraRenderer", request: RenderRequest, k: int, frame: ModelFrame) -> Guide:
    """The guide is exactly the camera backend's frames at the keyframe cameras (one render path:
    depth, pivot and stand-in depth included), so the path check measures a base's output against
    the same yardstick as a camera job. A clip longer than one generation slices its segments
    from one guide (`Guide.part`)."""
    from d2v.interpolate import camera_inbetweens
    from d2v.stages import plan

    vw, vh = frame.view_size
    keyframe_request = request.model_copy(update={"width": vw, "height": vh})
    full = plan(keyframe_request, renderer.width, renderer.height, has_depth=renderer.depth_parallax is not None)
    n = len(full)
    # Keyframe j shows the camera at the output time where interpolation will put it
    # (`d2v.interpolate.positions_for`): frame j (n - 1) / (k - 1), or j n / k round a loop.
    # Cameras at rounded frame indices would jitter the speed by up to half a frame.
    at = np.arange(k) * n / k if request.loop else np.linspace(0.0, n - 1.0, k)
    cams = camera_inbetweens(full.frames, at, loop=request.loop)  # cams[0] is full.frames[0]: depth hangs on it
    cameras = full.model_copy(update={"frames": [c.model_copy(update={"index": j}) for j, c in enumerate(cams)]})
    canvas = on_canvas(cameras, frame)
    frames = np.stack(list(renderer.render(canvas)))
    valid = np.stack(list(renderer.render_validity(canvas)))
    return Guide(full, cameras, frames, valid, frame)


def latent_validity(valid: np.ndarray | None, frames: int, height: int, width: int, temporal: int = 1) -> np.ndarray:
    """(K, H, W) bool pixels -> (frames, height, width) float32 latent cells, 1 where a cell is
    valid throughout. With temporal compression `temporal` (a causal video VAE: latent frame 0
    is pixel frame 0, latent frame j covers pixel frames (j-1) temporal + 1 .. j temporal), a
    cell is valid where every pixel frame it covers is."""
    import cv2

    if valid is None:
        return np.ones((frames, height, width), np.float32)
    cells = np.stack([cv2.resize(np.asarray(v, np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0.999
                      for v in valid])
    out = np.ones((frames, height, width), np.float32)
    for j in range(frames):
        lo = 0 if j == 0 else (j - 1) * temporal + 1
        hi = min(len(cells), j * temporal + 1)
        if lo < hi:
            out[j] = cells[lo:hi].all(axis=0)
    return out


# --- segments ---------------------------------------------------------------------------


def plan_segments(n: int, clip: int, overlap: int) -> list[tuple[int, int]]:
    """Keyframes [0, n) as generations of at most `clip` frames, each after the first starting
    `overlap` frames before the previous one ends: [(start, stop), ...]. One generation when
    n <= clip."""
    if n <= clip:
        return [(0, n)]
    if overlap >= clip:
        raise ValueError(f"overlap {overlap} must be less than a generation's {clip} frames")
    out, start = [], 0
    while True:
        stop = min(n, start + clip)
        out.append((start, stop))
        if stop >= n:
            return out
        start = stop - overlap


def segment_overlap(model) -> int:
    """Keyframes a segment shares with the one before: the first latent frame after the seam
    must be wholly held, so one latent frame's worth of pixel frames plus the seam frame, and
    at least 3 so the motion (not only the picture) carries over."""
    return max(3, int(getattr(model, "temporal_compression", 1)) + 1)


def plan_keyframes(span_s: float, model, fps: float | None = None) -> tuple[int, list[tuple[int, int]]]:
    """How many keyframes a clip of `span_s` seconds gets from `model`, and the generations that
    make them. One generation covers up to `model.clip_frames` keyframes; a model of fixed length
    (SVD) always makes that many, and a move too long for them at `keyframe_rate[0]` keyframes a
    second (further apart, interpolation would invent the motion) is split; other models make
    the frames the move needs at `keyframe_rate[1]` (their native rate; the output's `fps` when
    lower), by their frame rule.
    Longer clips: segments of `clip_frames`, each sharing `segment_overlap` keyframes with the last."""
    lo, hi = model.keyframe_rate
    hi = min(hi, fps) if fps else hi
    clip, overlap = int(model.clip_frames), segment_overlap(model)
    if model.fixed_length:
        if span_s * lo + 1 <= clip:
            return clip, [(0, clip)]
        need = math.ceil(span_s * lo) + 1
    else:
        need = math.ceil(span_s * hi) + 1
        if need <= clip:
            k = min(clip, frames_by_rule(need, model.frame_step))
            return k, [(0, k)]
    if overlap >= clip:  # a model too short to share frames: one generation, interpolated
        return clip, [(0, clip)]
    extra = math.ceil((need - clip) / (clip - overlap))
    total = clip + extra * (clip - overlap)
    return total, plan_segments(total, clip, overlap)


def match_colour(frames: np.ndarray, source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`frames` with each channel's mean and spread moved so that `source` (frames of the same
    segment) would match `reference` (the previous segment's frames at the same times): a new
    segment continues the last one's colour, with no jump at the seam."""
    src = source.reshape(-1, 3).astype(np.float64)
    ref = reference.reshape(-1, 3).astype(np.float64)
    gain = (ref.std(0) + 1e-3) / (src.std(0) + 1e-3)
    gain = np.clip(gain, 0.5, 2.0)
    out = (frames.astype(np.float64) - src.mean(0)) * gain + ref.mean(0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --- text -------------------------------------------------------------------------------

MOTION_WORDS = {
    "zoom_in": "slow push in toward {where}",
    "pull_back": "slow pull back from {where}, revealing the whole scene",
    "pan": "smooth camera pan across the scene toward {where}",
    "orbit": "camera orbits around {where}, gentle parallax",
    "dolly_zoom": "dolly zoom toward {where}, the background stretches while the subject keeps its size",
    "spiral": "camera spirals in toward {where}, turning as it goes",
    "earth_zoom_out": "fast zoom out from {where} to the whole scene",
    "crash_zoom": "a still moment, then a crash zoom into {where}",
    "parallax": "camera trucks sideways, near things slide past far ones",
}


def prompt_for(request: RenderRequest, trajectory: CameraTrajectory) -> str:
    """The request's prompt, or a short description of the camera move from the effect ("slow
    push in toward the upper left of the picture"), for bases that read text."""
    if request.prompt:
        return request.prompt
    where = "the centre of the picture"
    frames = trajectory.frames
    if frames:
        u, v = frames[-1].center
        cols = ("left", "", "right")[min(2, int(3 * u / max(1, trajectory.image_width)))]
        rows = ("upper", "", "lower")[min(2, int(3 * v / max(1, trajectory.image_height)))]
        spot = " ".join(p for p in (rows, cols) if p)
        where = f"the {spot} of the picture" if spot else where
    words = MOTION_WORDS.get(trajectory.effect, "smooth camera move toward {where}").format(where=where)
    return f"{words}, steady cinematic camera, natural motion, detailed"


# --- auto-correct -----------------------------------------------------------------------


def measure_keyframes(seen: np.ndarray, image: np.ndarray, key_traj: CameraTrajectory, request: RenderRequest, *,
                      depth: np.ndarray | None = None, photo_index=None, scene=None, max_samples: int | None = None):
    """The path check of keyframes (cropped to the view) against their cameras `key_traj`: the
    camera's, and with a SubjectScene each subject's too (`d2v.subject_check`: the camera then on
    the frames' background), so a subject the model moved elsewhere is a miss as the final check
    would call it."""
    from d2v.fidelity import measure_fidelity, sample_indices

    n = len(seen) if max_samples is None else min(max_samples, len(seen))
    if scene is None:
        return measure_fidelity(seen, image, key_traj, depth=depth, photo_index=photo_index, max_samples=n)
    from d2v.subject_check import measure_with_subjects

    sampled = {i: seen[i] for i in sample_indices(len(seen), n)}
    return measure_with_subjects(sampled, image, key_traj, request, n_frames=len(seen), depth=depth, scene=scene)[0]


def generate_following(model, image: np.ndarray, guides: np.ndarray, request: RenderRequest,
                       key_traj: CameraTrajectory, *, depth: np.ndarray | None = None,
                       valid: np.ndarray | None = None, report=None, frame: ModelFrame | None = None,
                       scene=None, **generate_kwargs) -> tuple[np.ndarray, list[FidelityAttempt]]:
    """Keyframes that follow the path: generate, measure them (cropped to `frame`'s view, where
    the path check's cameras `key_traj` look; with the job's SubjectScene `scene`, its subjects
    too) and while they miss (`AutoCorrect`) generate again at a lower guidance strength
    (AutoCorrect.step less: a fixed factor less noise), closer to the camera render. Returns the
    best attempt's keyframes as generated (on the canvas) and every attempt, measured (none when
    the request turns auto-correct off). `generate_kwargs` go to `model.generate` (anchor,
    step_callback)."""
    from d2v.fidelity import AutoCorrect, PhotoIndex

    def run(g: float) -> np.ndarray:
        return model.generate(image, guides, request.model_copy(update={"guidance_strength": g}), key_traj,
                              valid=valid, **generate_kwargs)

    if not request.auto_correct:
        return run(float(request.guidance_strength)), []
    policy = AutoCorrect.from_env()
    photo = PhotoIndex(image) if scene is None else None  # with subjects the camera is measured on the plate
    strength = float(request.guidance_strength)
    tries: list[tuple[np.ndarray, FidelityAttempt, tuple]] = []
    for attempt in range(1, policy.retries + 2):
        frames = run(strength)
        seen = frame.crop(frames) if frame is not None else frames
        measured = measure_keyframes(seen, image, key_traj, request, depth=depth, photo_index=photo, scene=scene)
        tries.append((frames, FidelityAttempt(attempt=attempt, guidance_strength=strength,
                                              fidelity=measured.summary()), AutoCorrect.rank(measured)))
        if report is not None:
            report("base", 0.1 + 0.9 * attempt / (policy.retries + 1))
        if strength == 0.0 or not policy.misses(measured):
            break
        strength = round(max(0.0, strength - policy.step), 6)
    best = min(range(len(tries)), key=lambda i: tries[i][2])
    tries[best][1].shipped = True
    return tries[best][0], [t[1] for t in tries]
