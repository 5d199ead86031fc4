"""The segmentation model that refines a painted subject region to its object's edges, when
D2V_SEGMENT_MODEL names one (without it, `d2v.subjects.refine_region` uses OpenCV's GrabCut).

    segment_model_setting() -> str | None          D2V_SEGMENT_MODEL, None when unset
    load_segment_model(model, device) -> ObjectSegmenter   (shared_segment_model: once per process)
    ObjectSegmenter.segment(rgb, box, points) -> (H, W) bool   the object the prompts point at
    make_tiny_segment(directory) -> directory      a tiny random-weight model (tests, demos)

Why SAM (Segment Anything: transformers' SamModel + SamProcessor). A painted region is a
*prompt*, not a class: "this thing here", whatever it is. SAM is trained for exactly that: a
box and a few points on an object in, that object's mask out, for any object, and it is the
model behind the interactive "click to select" of the tools d2v is compared with. A semantic
or panoptic segmenter (SegFormer, Mask2Former) knows only its training classes (ADE20K's 150,
COCO's 133): a rocket, a spoon or a cat's ear it has no class for is merged into its
neighbour or cut at a class boundary that is not the object's edge, and choosing "the segment
that overlaps the brush most" cannot recover the outline it never drew. SAM is prompted with
the painted region's bounding box (grown by the brush's reach: a stroke may fall short of the
edge) and a few points spread over the region's core (the surely-object part), and
asked for one mask (box plus points leave it no ambiguity to resolve with several).
`d2v.subjects.refine_region` then holds the answer to the same rules as GrabCut's: within
the region's reach, the core always in, only the pieces that touch the region.

The model is a local directory (`save_pretrained` layout with the processor's config) or a hub
id already in the Hugging Face cache, loaded with `local_files_only` (never downloaded): SAM
ViT-B (`facebook/sam-vit-base`, Apache-2.0, 94 M parameters) or the pruned SlimSAM
(`nielsr/slimsam-50-uniform`, Apache-2.0, 28 M parameters). A setting that names nothing, or a model that fails to load or
run, is a SegmentModelError naming D2V_SEGMENT_MODEL. Importing this module imports neither
torch nor transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from d2v.bases.common import SharedModels, resolve_device
from d2v.depth import _quiet_transformers, _quote, load_pretrained
from d2v.errors import SegmentModelError

MODEL_ENV = "D2V_SEGMENT_MODEL"
MODEL_TYPES = {"sam"}  # SamModel's config; SlimSAM and MedSAM are SAM checkpoints too


def segment_model_setting() -> str | None:
    """The configured segmentation model (D2V_SEGMENT_MODEL): a directory or a hub id; None when unset."""
    return os.environ.get(MODEL_ENV, "").strip() or None


def _model_error(detail: str) -> SegmentModelError:
    return SegmentModelError(
        f"refining subject regions with a segmentation model: {detail}. Set {MODEL_ENV} to a SAM model "
        "directory (transformers' SamModel with its processor saved beside it) or a hub id in the local Hugging "
        f"Face cache (facebook/sam-vit-base, nielsr/slimsam-50-uniform), or unset {MODEL_ENV} to refine with GrabCut")


class ObjectSegmenter:
    """A loaded SAM model and its processor on one device."""

    def __init__(self, model, processor, *, name: str, device: str):
        self.model, self.processor, self.name, self.device = model, processor, name, device

    def __repr__(self) -> str:
        return f"ObjectSegmenter({self.name!r}, device={self.device!r})"

    def segment(self, rgb: np.ndarray, box: tuple[float, float, float, float], points: np.ndarray) -> np.ndarray:
        """The object that `box` (x0, y0, x1, y1, image pixels) and `points` ((n, 2) x, y on the
        object) point at in (H, W, 3) uint8 RGB: (H, W) bool. A model that fails is a
        SegmentModelError (the model's fault, not the photo's)."""
        import torch

        h, w = rgb.shape[:2]
        try:
            inputs = self.processor(images=np.ascontiguousarray(rgb), input_boxes=[[[float(v) for v in box]]],
                                    input_points=[[[[float(x), float(y)] for x, y in points]]],
                                    input_labels=[[[1] * len(points)]], return_tensors="pt").to(self.device)
            with torch.inference_mode():
                outputs = self.model(**inputs, multimask_output=False)
                masks = self.processor.image_processor.post_process_masks(
                    outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
            return masks[0].reshape(-1, h, w)[0].numpy().astype(bool)
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise _model_error(f"{MODEL_ENV}={self.name!r} failed on a {w}x{h} image: {_quote(e)}") from None


def _source(model: str) -> str:
    """A SAM directory, or an "org/name" hub id; anything else is no model."""
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise _model_error(f"{MODEL_ENV}={model!r} is a directory but not a transformers model (no config.json)")
        try:
            model_type = json.loads(config.read_text()).get("model_type", "")
        except (ValueError, OSError, AttributeError):
            model_type = ""  # the loader names what is wrong with the file
        if model_type and model_type not in MODEL_TYPES:
            raise _model_error(f"{MODEL_ENV}={model!r} is a {model_type!r} model, not SAM (a painted region is "
                               "a prompt: d2v needs a promptable segmenter)")
        if not any((path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
            raise _model_error(f"{MODEL_ENV}={model!r} has no processor config: save the SamProcessor with it "
                               "(`processor.save_pretrained(DIR)`)")
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise _model_error(f"{MODEL_ENV}={model!r}: no such directory")
    return model


def load_segment_model(model: str | None, device: str | None = "auto") -> ObjectSegmenter:
    """Load a SAM model on `device` ("auto": cuda when torch sees a GPU, else cpu); never
    downloaded. Unset, missing, broken, partial or not SAM: SegmentModelError naming D2V_SEGMENT_MODEL."""
    if not model:
        raise _model_error(f"{MODEL_ENV} is not set")
    source = _source(str(model))
    device = resolve_device(device)
    from transformers import SamModel, SamProcessor

    processor, net = load_pretrained(SamProcessor, SamModel, source, model, MODEL_ENV, _model_error, "SAM model")
    return ObjectSegmenter(net.to(device).eval(), processor, name=str(model), device=device)


_shared = SharedModels(lambda model, device: load_segment_model(model, device))


def shared_segment_model(model: str | None, device: str | None = "auto") -> ObjectSegmenter:
    """The process's segmentation model for these settings, loaded on first use: a replica
    refines region after region (and the page's outline requests) with one."""
    if not model:
        raise _model_error(f"{MODEL_ENV} is not set")
    _source(str(model))  # a setting that names nothing fails before torch is imported
    return _shared.get(model, device)[0]


# A SAM small enough for tests: 64-pixel input, two encoder layers, 16 channels.
TINY_SIDE = 64


def make_tiny_segment(directory: str | Path, *, seed: int = 0) -> Path:
    """A tiny random-weight SAM and its processor, `save_pretrained` to `directory`; point
    D2V_SEGMENT_MODEL at it. Its masks are random blobs, not objects: for tests of the loading,
    the prompts and the rules the refinement holds any model's answer to."""
    import torch
    from transformers import (SamConfig, SamImageProcessorPil, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)

    s, patch, width = TINY_SIDE, 8, 16
    config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=width, output_channels=width, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=s, patch_size=patch, window_size=4,
                                      global_attn_indexes=[1], mlp_dim=2 * width, num_pos_feats=width // 2).to_dict(),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=width, image_size=s, patch_size=patch,
                                                     mask_input_channels=4).to_dict(),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                                                 mlp_dim=2 * width, iou_head_hidden_dim=width).to_dict())
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        model = SamModel(config).eval()
    processor = SamProcessor(image_processor=SamImageProcessorPil(
        size={"longest_edge": s}, pad_size={"height": s, "width": s},
        mask_size={"longest_edge": s // 4}, mask_pad_size={"height": s // 4, "width": s // 4}))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    return directory
