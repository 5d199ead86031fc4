"""The depth stage: a monocular depth model turns the photo into a depth map, so the camera
moves get real parallax without the user drawing one.

    depth_model_setting() -> str | None           D2V_DEPTH_MODEL, None when unset
    load_depth_model(model, device) -> DepthEstimator      (shared_depth_model: once per process)
    DepthEstimator.estimate(rgb) -> (H, W) float32 in [0, 1], brighter = nearer
    estimate_depth(rgb) -> the same, with the configured model
    depth_for(image_bytes, rgb, store, request) -> ImageDepth   what render_job uses (cached)
    planned_depth_source(request, depth_given=) -> "user" | "estimated" | "none"   (no model run)
    cached_depth(image_bytes, store, width, height) -> the cached estimate, or None (no model run)
    encode_depth_png(depth) -> bytes               a 16-bit grayscale PNG of a depth map
    make_tiny_depth(directory, kind=) -> directory a tiny random-weight model (tests, demos) of
                                                   each kind below (TINY_KINDS)

The model is any `transformers` depth-estimation model (AutoImageProcessor +
AutoModelForDepthEstimation), a local directory or a hub id already in the Hugging Face
cache; it is loaded with `local_files_only`, so a request never starts a download. Depth
Anything V2 Small (`depth-anything/Depth-Anything-V2-Small-hf`, Apache-2.0, 25 M
parameters) is the recommended one.

The project's convention (`d2v.render.load_depth_map`, what the renderer takes): float32
(H, W) at the image's size, in [0, 1], brighter = nearer. Relative models (Depth Anything,
DPT/MiDaS) predict inverse depth, larger = nearer, which is what parallax is proportional
to; metric models (ZoeDepth, GLPN, Depth Anything's metric heads) predict distance, and
are inverted (1 / d) first. Either is then stretched between its 0.5th and 99.5th
percentiles, so a few stray pixels do not flatten the rest of the scene. Each of these kinds
is tested through the loader as a tiny random-weight model (`make_tiny_depth(kind=)`). Depth
Pro would be inverted too, but transformers' image processor for it needs torchvision,
which d2v does not install: loading one is a DepthModelError that says so.

An estimate is stored as a 16-bit PNG under `depth/{content}.png` (`d2v.lifecycle`), the
content being the image's bytes and the model, so a resubmit or another effect on the same
photo reads it back instead of running the model. The job uses the map decoded from those
PNG bytes, so a first run and a cached run render exactly the same frames.

A model that is missing or fails to load or run is a `DepthModelError` naming
D2V_DEPTH_MODEL; with depth "auto" and the setting unset, a job simply has no depth. Importing
this module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np

from d2v.bases.common import SharedModels, resolve_device
from d2v.errors import DepthModelError, InvalidImageError, ObjectNotFoundError, one_line
from d2v.lifecycle import depth_cache_key
from d2v.models import DepthSource, RenderRequest
from d2v.render import load_depth_map
from d2v.store import Store

log = logging.getLogger(__name__)

MODEL_ENV = "D2V_DEPTH_MODEL"
# Model types whose prediction is a distance (larger = farther), not inverse depth.
METRIC_MODEL_TYPES = {"zoedepth", "glpn", "depth_pro"}
PERCENTILES = (0.5, 99.5)  # the stretch to [0, 1]
CACHE_VERSION = b"d2v-depth-1"  # part of the cache key: change it when the normalisation changes


def depth_model_setting() -> str | None:
    """The configured depth model (D2V_DEPTH_MODEL): a directory or a hub id; None when unset."""
    return os.environ.get(MODEL_ENV, "").strip() or None


def _quote(e: BaseException) -> str:
    """Another library's error, short enough for a one-line message."""
    text = one_line(e).rstrip(".")
    return text if len(text) <= 200 else text[:197] + "..."


def _model_error(detail: str) -> DepthModelError:
    return DepthModelError(
        f"depth estimation needs a depth model: {detail}. Set {MODEL_ENV} to a transformers depth-estimation "
        "model directory or a hub id in the local Hugging Face cache (Depth Anything V2 Small is recommended; "
        "`d2v models make-tiny-depth DIR` makes a tiny test model), or render with depth 'none'"
    )


# --- the model -------------------------------------------------------------------------


def normalise_depth(prediction: np.ndarray, *, metric: bool = False) -> np.ndarray:
    """A model's prediction -> float32 in [0, 1], brighter = nearer. `metric`: the prediction
    is a distance (inverted first); otherwise inverse depth (larger = nearer)."""
    d = np.asarray(prediction, dtype=np.float32)
    finite = np.isfinite(d)
    if not finite.any():
        raise ValueError("the model predicted no finite depth")
    if metric:
        d = 1.0 / np.maximum(d, 1e-6)  # nearness: parallax goes as 1 / distance
        finite &= np.isfinite(d)
    lo, hi = (float(v) for v in np.percentile(d[finite], PERCENTILES))
    if not hi > lo:  # a flat prediction: everything on the image plane
        return np.zeros(d.shape, np.float32)
    d = np.where(finite, d, lo)
    return np.clip((d - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


class DepthEstimator:
    """A loaded depth model and its image processor on one device."""

    def __init__(self, model, processor, *, name: str, device: str):
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        config = model.config
        self.metric = (getattr(config, "depth_estimation_type", "relative") == "metric"
                       or getattr(config, "model_type", "") in METRIC_MODEL_TYPES)

    def __repr__(self) -> str:
        return f"DepthEstimator({self.name!r}, device={self.device!r})"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "architecture": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "prediction": "metric depth (inverted)" if self.metric else "relative inverse depth",
            "device": self.device,
        }

    def _padding(self, h: int, w: int) -> tuple[int, int]:
        """Rows and columns the processor added on each side of an h x w photo (the model
        sees, and predicts, the padded photo). ZoeDepth pads by int(sqrt(side / 2) * 3),
        reflected, against boundary artefacts (isl-org/ZoeDepth, transformers' ZoeDepth
        processor); the others pad nothing that post-processing must undo."""
        if getattr(self.model.config, "model_type", "") != "zoedepth" or not getattr(self.processor, "do_pad", False):
            return 0, 0
        return int(math.sqrt(h / 2) * 3), int(math.sqrt(w / 2) * 3)

    def estimate(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) float32 in [0, 1], brighter = nearer. A model that
        fails on the image is a DepthModelError (it is the model's fault, not the photo's)."""
        import torch

        rgb = np.ascontiguousarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"estimate takes an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        try:
            inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                outputs = self.model(**inputs)
                # The processor knows its model's output (crops, padding): let it bring the
                # prediction back to the image's size, except ZoeDepth's, whose post-processing
                # needs torchvision even in its PIL processor: its padding is undone here.
                pad_h, pad_w = self._padding(h, w)
                if hasattr(self.processor, "post_process_depth_estimation") and not (pad_h or pad_w):
                    predicted = self.processor.post_process_depth_estimation(
                        outputs, target_sizes=[(h, w)])[0]["predicted_depth"]
                else:
                    predicted = torch.nn.functional.interpolate(
                        outputs.predicted_depth[:, None], size=(h + 2 * pad_h, w + 2 * pad_w), mode="bicubic",
                        align_corners=False)[..., pad_h:pad_h + h, pad_w:pad_w + w]
            prediction = predicted.float().squeeze().cpu().numpy().reshape(h, w)
            return normalise_depth(prediction, metric=self.metric)
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise _model_error(f"{MODEL_ENV}={self.name!r} failed on a {w}x{h} image: {_quote(e)}") from None


@contextmanager
def _quiet_transformers():
    """transformers draws progress bars and logs fallbacks while loading: not on d2v's
    one-line outputs (`d2v depth`, replica logs). Real problems come back as exceptions."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def load_pretrained(processor_cls, model_cls, source: str, model: str, setting: str,
                    error: Callable[[str], Exception], kind: str):
    """(processor, network) from `source` (a `save_pretrained` directory or a hub id in the local
    Hugging Face cache; never downloaded), in float32: missing, partial or corrupt files, a config
    of another kind of model, or weights lacking tensors -> `error(detail)` naming `setting`."""
    import torch

    try:
        with _quiet_transformers():
            processor = processor_cls.from_pretrained(source, local_files_only=True)
            net, info = model_cls.from_pretrained(source, local_files_only=True, dtype=torch.float32,
                                                  output_loading_info=True)
    except Exception as e:
        where = "" if Path(source).is_dir() else \
            (" (as a hub id it must already be in the local Hugging Face cache: d2v never downloads weights; "
             f"fetch them once with `hf download {model}`)")
        raise error(f"{setting}={model!r} could not be loaded{where}: {_quote(e)}") from None
    missing = list(info.get("missing_keys") or [])
    if missing:  # transformers would fill them with random numbers and carry on
        raise error(f"{setting}={model!r} could not be loaded: its weights lack {len(missing)} tensors "
                    f"(e.g. {missing[0]}): not a complete {kind}")
    return processor, net

def _source(model: str) -> str:
    """A directory, or an "org/name" hub id; anything else is no model."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _model_error(f"{MODEL_ENV}={model!r} is a directory but not a transformers model (no config.json)")
        if not (path / "preprocessor_config.json").is_file():
            raise _model_error(f"{MODEL_ENV}={model!r} has no preprocessor_config.json: save the model's image "
                               "processor with it (`processor.save_pretrained(DIR)`)")
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise _model_error(f"{MODEL_ENV}={model!r}: no such directory")
    return model


# Model types whose transformers image processor needs torchvision (no PIL version), which
# d2v does not install.
NEEDS_TORCHVISION = {"depth_pro": "Depth Pro"}


def _check_backends(source: str, model: str) -> None:
    """A model directory whose image processor cannot run here is a DepthModelError now, with
    the reason (transformers' own error names a list of classes and is cut short)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        return
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (ValueError, OSError, AttributeError):
        return  # the loader names what is wrong with the file
    if model_type in NEEDS_TORCHVISION and importlib.util.find_spec("torchvision") is None:
        raise _model_error(f"{MODEL_ENV}={model!r} is a {NEEDS_TORCHVISION[model_type]} model, whose image processor "
                           "needs torchvision, which is not installed (install the torchvision build matching "
                           "torch, or use Depth Anything, DPT, ZoeDepth or GLPN)")


def load_depth_model(model: str | None, device: str | None = "auto") -> DepthEstimator:
    """Load a depth model on `device` ("auto": cuda when torch sees a GPU, else cpu).

    model: a local directory (`save_pretrained` layout, with the image processor's
    preprocessor_config.json) or a hub id in the local HF cache; never downloaded. None,
    a missing directory, a broken config, missing or partial weights: DepthModelError
    naming D2V_DEPTH_MODEL.
    """
    if not model:
        raise _model_error(f"{MODEL_ENV} is not set")
    source = _source(str(model))
    _check_backends(source, str(model))
    device = resolve_device(device)
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    processor, net = load_pretrained(AutoImageProcessor, AutoModelForDepthEstimation, source, model, MODEL_ENV,
                                     _model_error, "depth model")
    return DepthEstimator(net.to(device).eval(), processor, name=str(model), device=device)


_shared = SharedModels(lambda model, device: load_depth_model(model, device))


def shared_depth_model(model: str | None, device: str | None = "auto") -> DepthEstimator:
    """The process's depth model for these settings, loaded on first use: a batch worker or
    a replica estimates image after image with one."""
    if not model:
        raise _model_error(f"{MODEL_ENV} is not set")
    _source(str(model))  # a setting that names nothing fails before torch is imported
    return _shared.get(model, device)[0]


def estimate_depth(rgb: np.ndarray, model: str | None = None, device: str | None = "auto") -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float32 in [0, 1], brighter = nearer, with `model` (default:
    D2V_DEPTH_MODEL, which must then be set)."""
    return shared_depth_model(model or depth_model_setting(), device).estimate(rgb)


def encode_depth_png(depth: np.ndarray) -> bytes:
    """A depth map in [0, 1] -> a 16-bit grayscale PNG (brighter = nearer), which
    `d2v.render.load_depth_map` reads back to within 1 / 65535."""
    levels = np.round(np.clip(np.asarray(depth, np.float32), 0.0, 1.0) * 65535.0).astype(np.uint16)
    ok, png = cv2.imencode(".png", levels)
    if not ok:
        raise ValueError(f"could not encode a {levels.shape} depth map as PNG")
    return png.tobytes()


# --- the stage: which depth a job uses -----------------------------------------------


class ImageDepth(NamedTuple):
    """The depth a job renders with, and where it came from (the manifest's depth_source)."""

    depth: np.ndarray | None  # (H, W) float32 in [0, 1], brighter = nearer; None: no depth
    source: DepthSource
    model: str | None = None  # the depth model, when estimated
    cached: bool = False  # read from the store's depth cache, not estimated now

    def method(self) -> str:
        """What the manifest's methods["depth"] says."""
        if self.source == "user":
            return "the request's depth map"
        if self.source == "estimated":
            return f"estimated by {self.model}" + (" (from the depth cache)" if self.cached else "")
        return "none"


def depth_content(image_bytes: bytes, model: str) -> str:
    """The cache's content address: the image's bytes and the model (a directory by its
    absolute path, so relative settings from different working directories agree)."""
    path = Path(model).expanduser()
    identity = str(path.resolve()) if path.is_dir() else model
    h = hashlib.sha256(CACHE_VERSION)
    h.update(hashlib.sha256(image_bytes).digest())
    h.update(identity.encode())
    return h.hexdigest()[:32]


def planned_depth_source(request: RenderRequest, *, depth_given: bool, model: str | None = None) -> DepthSource:
    """Where a job's depth will come from, without running anything: "user" when the request
    comes with a depth map; "estimated" with depth "auto" and a depth model configured
    (`model`, default D2V_DEPTH_MODEL); else "none". The one rule the depth stage
    (`depth_for`) and the preview follow, so the preview plans (and `auto` picks) what the
    job will: the planner plans with depth unless this is "none"."""
    if depth_given:
        return "user"
    if request.depth != "none" and (model or depth_model_setting()):
        return "estimated"
    return "none"


def cached_depth(image_bytes: bytes, store: Store, width: int, height: int, *,
                 model: str | None = None) -> np.ndarray | None:
    """The estimate of this photo already in the store's depth cache (`model`, default
    D2V_DEPTH_MODEL), at width x height; None when there is none (or no model, or an entry
    that does not decode). Never runs the model: for answers that must be quick (the preview)."""
    model = model or depth_model_setting()
    if not model:
        return None
    try:
        return load_depth_map(store.get_bytes(depth_cache_key(depth_content(image_bytes, model))), width, height)
    except (ObjectNotFoundError, InvalidImageError):
        return None


def depth_for(
    image_bytes: bytes,
    rgb: np.ndarray,
    store: Store,
    request: RenderRequest,
    *,
    user_depth: np.ndarray | None = None,
    model: str | None = None,
) -> ImageDepth:
    """The depth stage: the request's own depth map when it has one; else, with depth "auto"
    and a model configured (`model`, default D2V_DEPTH_MODEL), the estimate from the store's
    depth cache, or from the model (then cached); else no depth. A model that fails is a
    DepthModelError, never a silent flat render."""
    model = model or depth_model_setting()
    source = planned_depth_source(request, depth_given=user_depth is not None, model=model)
    if source == "user":
        return ImageDepth(user_depth, "user")
    if source == "none":
        return ImageDepth(None, "none")
    h, w = rgb.shape[:2]
    key = depth_cache_key(depth_content(image_bytes, model))
    try:
        return ImageDepth(load_depth_map(store.get_bytes(key), w, h), "estimated", model, cached=True)
    except ObjectNotFoundError:
        pass
    except InvalidImageError:  # a damaged cache entry: estimate again, and replace it
        log.warning("depth cache entry %s does not decode; estimating again", key)
    png = encode_depth_png(shared_depth_model(model).estimate(rgb))
    store.put_bytes(key, png, "image/png")
    # The job renders with what the cache holds, so a later cached run renders the same frames.
    return ImageDepth(load_depth_map(png, w, h), "estimated", model)


# --- tiny random-weight models, for tests and demos ----------------------------------------

# Depth Anything V2 Small is a DINOv2 ViT-S/14 backbone (4 of its layers feed a DPT head);
# this keeps the architecture and the processor's behaviour, shrunk: width 32, 4 layers,
# 56-pixel input (Small: 518), so an estimate takes milliseconds on a CPU. The other kinds
# the docs name are shrunk alike from their transformers configs (TINY_KINDS).
TINY_DINOV2_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 14,
    "image_size": 56,
    "out_indices": [1, 2, 3, 4],
    "apply_layernorm": True,
    "reshape_hidden_states": False,
}
TINY_DEPTH_ANYTHING_CONFIG = {
    "patch_size": 14,
    "reassemble_hidden_size": 32,
    "neck_hidden_sizes": [8, 16, 32, 32],
    "fusion_hidden_size": 16,
    "head_hidden_size": 8,
    "depth_estimation_type": "relative",
}
# Depth Anything V2's preprocessor_config.json, at the tiny input size.
TINY_DEPTH_PROCESSOR_CONFIG = {
    "do_resize": True,
    "size": {"height": 56, "width": 56},
    "keep_aspect_ratio": True,
    "ensure_multiple_of": 14,
    "resample": 3,  # bicubic
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_pad": False,
}
# A ViT the size of TINY_DINOV2_CONFIG with 16-pixel patches (DPT's and ZoeDepth's BEiT).
_TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
             "patch_size": 16, "image_size": 64}
_TINY_NECK = {"neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16}
# ZoeDepth (Intel/zoedepth-nyu-kitti): a BEiT backbone, a DPT neck and metric bins; one bin
# configuration (NYU's depth range) instead of two.
TINY_ZOEDEPTH_CONFIG = {
    **_TINY_NECK, "reassemble_hidden_size": 32, "patch_size": 16, "num_relative_features": 8,
    "bin_embedding_dim": 16, "bottleneck_features": 16, "num_attractors": [4, 4, 2, 1],
    "bin_configurations": [{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0, "name": "nyu"}],
}
# GLPN (vinvino02/glpn-nyu): a SegFormer (Mix Transformer) encoder, four stages.
TINY_GLPN_CONFIG = {
    "num_encoder_blocks": 4, "depths": [1, 1, 1, 1], "sr_ratios": [8, 4, 2, 1], "hidden_sizes": [8, 16, 32, 32],
    "num_attention_heads": [1, 1, 2, 2], "decoder_hidden_size": 16, "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2], "mlp_ratios": [2, 2, 2, 2],
}


def _spread(model, gain: float = 8.0):
    """Scale a fresh model's weight matrices by `gain`. At transformers' initialisation the
    heads of some tiny models saturate (a sigmoid or softplus at its midpoint, a ReLU at 0):
    they predict one value everywhere, to float precision. Larger weights make the random
    prediction vary with the image, so tests can see where it lands."""
    import torch

    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.mul_(gain)
    return model


def _tiny_depth_anything(metric: bool = False):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    extra = {"depth_estimation_type": "metric", "max_depth": 20} if metric else {}  # the metric heads' setting
    config = DepthAnythingConfig(backbone_config=Dinov2Config(**TINY_DINOV2_CONFIG),
                                 **{**TINY_DEPTH_ANYTHING_CONFIG, **extra})
    model = DepthAnythingForDepthEstimation(config)
    return _spread(model) if metric else model, _processor("DPTImageProcessor", **TINY_DEPTH_PROCESSOR_CONFIG)


def _tiny_dpt():
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(**_TINY_VIT, **_TINY_NECK, backbone_out_indices=[0, 1, 2, 3],
                       reassemble_factors=[4, 2, 1, 0.5])
    # DPT (Intel/dpt-large, MiDaS 3.0) squashes the photo to its square input, as the real one does.
    return _spread(DPTForDepthEstimation(config)), _processor("DPTImageProcessor", size={"height": 64, "width": 64},
                                                     keep_aspect_ratio=False)


def _tiny_zoedepth():
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    beit = BeitConfig(**_TINY_VIT, out_indices=[1, 2, 3, 4], use_relative_position_bias=True,
                      reshape_hidden_states=False)
    return _spread(ZoeDepthForDepthEstimation(ZoeDepthConfig(backbone_config=beit, **TINY_ZOEDEPTH_CONFIG))), \
        _processor("ZoeDepthImageProcessor", size={"height": 64, "width": 64}, keep_aspect_ratio=True,
                   ensure_multiple_of=16)


def _tiny_glpn():
    from transformers import GLPNConfig, GLPNForDepthEstimation

    return GLPNForDepthEstimation(GLPNConfig(**TINY_GLPN_CONFIG)), _processor("GLPNImageProcessor", size_divisor=32)


def _processor(name: str, **config):
    """The PIL image processor where transformers has one (its default backend needs
    torchvision); it saves under the real model's class name and loads back either way."""
    import transformers

    return (getattr(transformers, f"{name}Pil", None) or getattr(transformers, name))(**config)


# The model types the docs name, each as a tiny random-weight model. Depth Pro is not among
# them: transformers' DepthProImageProcessor needs torchvision, which d2v does not install
# (loading one is a DepthModelError that says so).
TINY_KINDS = {
    "depth_anything": _tiny_depth_anything,
    "depth_anything_metric": lambda: _tiny_depth_anything(metric=True),
    "dpt": _tiny_dpt,
    "zoedepth": _tiny_zoedepth,
    "glpn": _tiny_glpn,
}


def build_tiny_depth(*, seed: int = 0, kind: str = "depth_anything"):
    """(model, image processor) of a tiny model of `kind` (TINY_KINDS), in memory, random
    weights from `seed`."""
    import torch

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny depth model kind {kind!r}; choose one of: {', '.join(TINY_KINDS)}")
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model, processor = TINY_KINDS[kind]()
    return model.eval(), processor


def make_tiny_depth(directory: str | Path, *, seed: int = 0, kind: str = "depth_anything") -> Path:
    """Build a tiny model of `kind` and `save_pretrained` it and its processor to
    `directory` (created if needed). Returns the directory; point D2V_DEPTH_MODEL at it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_depth(seed=seed, kind=kind)
    with _quiet_transformers():
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    return directory
