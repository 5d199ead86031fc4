"""Tiny random-weight pipelines of every base (svd, ltx, wan), for tests and demos.

    make_tiny(base, directory, seed=0) -> directory   (`d2v models make-tiny --base svd|ltx|wan DIR`)

    make_tiny_svd(directory, seed=0, num_frames=6) -> directory

Builds every component of diffusers' `StableVideoDiffusionPipeline` from small configs
(no download, a few MB on disk), with random weights, and `save_pretrained`s it, so
that tests load it back through the bases' loaders (`d2v.bases.svd.load_svd`, ...) exactly as users load a real model.
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


# --- LTX-Video and Wan 2.2 ---------------------------------------------------------------
# What is kept: the pipeline and component classes, the scheduler configs as the real models ship
# them, a T5 / UMT5 text encoder with a tokenizer that adds the end-of-sequence token and pads
# with id 0 (T5's conventions), latent statistics (random, not zero/one, so code that forgets
# them is seen). What is shrunk: widths, depths, the VAEs' compression (LTX 1/4 in space and
# time instead of 1/32 and 1/8; Wan 1/4 and 1/2 instead of 1/16 and 1/4), and the vocabulary:
# a few hundred English words built here, no download.

# LTX-Video 0.9.x's scheduler (Lightricks/LTX-Video scheduler/scheduler_config.json).
LTX_SCHEDULER_CONFIG = {
    "base_image_seq_len": 1024,
    "base_shift": 0.95,
    "invert_sigmas": False,
    "max_image_seq_len": 4096,
    "max_shift": 2.05,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.1,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

# Wan 2.2 TI2V-5B's scheduler (Wan-AI/Wan2.2-TI2V-5B-Diffusers scheduler/scheduler_config.json).
WAN_SCHEDULER_CONFIG = {
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 5.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}

TEXT_DIM = 32  # the tiny text encoders' width = the transformers' caption / text dim
TOKENS = 64  # the tiny tokenizers' model_max_length

TINY_LTX_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,
    "block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 8, 8, 8),
    "layers_per_block": (1, 1, 1, 1, 1),
    "decoder_layers_per_block": (1, 1, 1, 1, 1),
    "spatio_temporal_scaling": (True, True, False, False),
    "decoder_spatio_temporal_scaling": (True, True, False, False),
    "decoder_inject_noise": (False, False, False, False, False),
    "upsample_residual": (False, False, False, False),
    "upsample_factor": (1, 1, 1, 1),
    "timestep_conditioning": False,
    "patch_size": 1,
    "patch_size_t": 1,
    "encoder_causal": True,
    "decoder_causal": False,
}

TINY_LTX_TRANSFORMER_CONFIG = {
    "in_channels": 8,
    "out_channels": 8,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 4,
    "attention_head_dim": 8,
    "cross_attention_dim": 32,
    "num_layers": 1,
    "caption_channels": TEXT_DIM,
}

TINY_WAN_VAE_CONFIG = {
    "base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True],
    "scale_factor_temporal": 2,
    "scale_factor_spatial": 4,
    "latents_mean": [0.1, -0.2, 0.3, -0.1],
    "latents_std": [1.5, 2.0, 0.8, 1.2],
}

TINY_WAN_TRANSFORMER_CONFIG = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "in_channels": 4,  # TI2V: the noisy latent only (the image is the first latent frame, at timestep 0)
    "out_channels": 4,
    "text_dim": TEXT_DIM,
    "freq_dim": 32,
    "ffn_dim": 32,
    "num_layers": 1,
    "rope_max_seq_len": 32,
}

WORDS = (
    "a an the and or of to in on at from with toward into over under through across around behind "
    "camera move moves moving slow slowly smooth fast steady cinematic natural motion detailed push pull "
    "in out back zoom pan orbit orbits dolly spiral spirals truck trucks sideways crash still moment "
    "view scene picture photo subject background foreground sky water tree trees people person face "
    "upper lower left right centre center whole revealing turning as it goes near far things slide past "
    "stretches while keeps its size gentle parallax light shadow colour color bright dark warm cold "
    "city street mountain sea beach forest house room car road river cloud clouds sun night day "
    "blurry low quality static noise distorted ugly bad worst artifacts"
).split()


def build_tokenizer(max_length: int = TOKENS):
    """A word-level tokenizer over WORDS with T5's special tokens (<pad> 0, </s> 1, <unk> 2) and
    an end-of-sequence token after every text, as T5's tokenizer adds one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in dict.fromkeys(WORDS):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def _text_encoder(kind: str, vocab_size: int):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    shape = dict(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    if kind == "t5":
        return T5EncoderModel(T5Config(**shape))
    return UMT5EncoderModel(UMT5Config(**shape))


def _random_statistics(vae, channels: int, seed: int) -> None:
    """LTX keeps its latent mean and std as buffers: random ones, so a forgotten normalisation shows."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vae.latents_mean.copy_(0.2 * torch.randn(channels, generator=g))
    vae.latents_std.copy_(0.5 + torch.rand(channels, generator=g))


def build_tiny_ltx(*, seed: int = 0):
    """A tiny LTXConditionPipeline in memory (random weights from `seed`)."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLLTXVideo(**TINY_LTX_VAE_CONFIG)
        _random_statistics(vae, TINY_LTX_VAE_CONFIG["latent_channels"], seed)
        transformer = LTXVideoTransformer3DModel(**TINY_LTX_TRANSFORMER_CONFIG)
        text_encoder = _text_encoder("t5", len(tokenizer))
    return LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER_CONFIG),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )


def build_tiny_wan(*, seed: int = 0):
    """A tiny WanImageToVideoPipeline in memory, Wan 2.2 TI2V's layout: no image encoder, one
    transformer, `expand_timesteps` (the first latent frame is the image, at timestep 0)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**TINY_WAN_VAE_CONFIG)
        transformer = WanTransformer3DModel(**TINY_WAN_TRANSFORMER_CONFIG)
        text_encoder = _text_encoder("umt5", len(tokenizer))
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER_CONFIG),
        transformer=transformer.eval(),
        expand_timesteps=True,
    )


BUILDERS = {"svd": build_tiny_svd, "ltx": build_tiny_ltx, "wan": build_tiny_wan}


def make_tiny(base: str, directory: str | Path, *, seed: int = 0) -> Path:
    """Build the tiny pipeline of `base` (svd, ltx or wan) and `save_pretrained` it to `directory`."""
    if base not in BUILDERS:
        raise ValueError(f"unknown base {base!r}; one of {', '.join(BUILDERS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    BUILDERS[base](seed=seed).save_pretrained(directory)
    return directory
