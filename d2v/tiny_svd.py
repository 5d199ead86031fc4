"""A tiny random-weight Stable Video Diffusion pipeline, for tests and demos.

    make_tiny_svd(directory, seed=0, num_frames=6) -> directory

Builds every component of diffusers' `StableVideoDiffusionPipeline` from small configs
(no download, a few MB on disk), with random weights, and `save_pretrained`s it, so
that tests load it back through `d2v.svd.load_svd` exactly as users load a real model.
Used by the tests and by `d2v models make-tiny DIR`.

What is kept from SVD, because d2v's code depends on it:
* the component classes: UNetSpatioTemporalConditionModel (8 input channels: 4 noisy
  latent + 4 conditioning latent; added time ids fps / motion bucket / noise aug),
  AutoencoderKLTemporalDecoder (4 latent channels, scaling factor 0.18215),
  CLIPVisionModelWithProjection taking 224x224 input (the pipeline resizes to 224),
  CLIPImageProcessor with CLIP's normalisation;
* the scheduler exactly as SVD ships it: EulerDiscreteScheduler, Karras sigmas from
  700 down to 0.002, v-prediction, continuous timesteps, "leading" spacing.

What is shrunk: channel widths (multiples of 32, which GroupNorm needs), depth (two
UNet and three VAE levels), the CLIP tower (2 layers of width 32, 32-pixel patches),
and `num_frames` (6 instead of 14/25). With three VAE levels the latent is 1/4 of the
image (SVD: 1/8); sizes must be multiples of 8 (the pipeline's rule; SVD needs 64 for
its UNet levels); `sample_size` 16 x 4 makes the native area 64x64 pixels, so a 16:9
request renders at 80x48 (SVD-XT: 96 x 8 -> 768x768 = 1024x576).
The output of random weights is noise-like; it exercises the code, not the quality.
"""

from __future__ import annotations

from pathlib import Path

# SVD's scheduler, as in stabilityai/stable-video-diffusion-img2vid(-xt)/scheduler/scheduler_config.json.
SVD_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

# CLIP's image normalisation (what SVD's feature_extractor/preprocessor_config.json holds).
CLIP_IMAGE_PROCESSOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}

TINY_UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "block_out_channels": (32, 64),
    "addition_time_embed_dim": 8,  # x 3 added time ids = projection_class_embeddings_input_dim
    "projection_class_embeddings_input_dim": 24,
    "layers_per_block": 1,
    "cross_attention_dim": 32,  # = the CLIP projection_dim
    "transformer_layers_per_block": 1,
    "num_attention_heads": (2, 4),
    "num_frames": 6,
}

TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "block_out_channels": (32, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}

TINY_CLIP_VISION_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "projection_dim": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_channels": 3,
    "image_size": 224,  # SVD's pipeline feeds CLIP 224x224 images
    "patch_size": 32,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
}


def build_tiny_svd(*, seed: int = 0, num_frames: int = 6):
    """The tiny pipeline in memory (random weights from `seed`), not saved."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    # Weight init draws from the global RNG: fork it so building a model leaves the
    # caller's random state alone, and the same seed always gives the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(**{**TINY_UNET_CONFIG, "num_frames": num_frames})
        vae = AutoencoderKLTemporalDecoder(**TINY_VAE_CONFIG)
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION_CONFIG))
    return StableVideoDiffusionPipeline(
        vae=vae.eval(),
        image_encoder=image_encoder.eval(),
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
        feature_extractor=CLIPImageProcessor(**CLIP_IMAGE_PROCESSOR_CONFIG),
    )


def make_tiny_svd(directory: str | Path, *, seed: int = 0, num_frames: int = 6) -> Path:
    """Build the tiny pipeline and `save_pretrained` it to `directory` (created if
    needed). Returns the directory; point D2V_SVD_MODEL at it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_tiny_svd(seed=seed, num_frames=num_frames).save_pretrained(directory)
    return directory
