"""The svd backend with a tiny random-weight SVD, on the CPU.

The model is built once per module with `make_tiny_svd`, saved, and loaded back through
`load_svd(svd_model_setting(), ...)` with D2V_SVD_MODEL pointing at it: the path users
take. Random weights make noise-like frames, so the tests check the plumbing that does
not depend on quality: counts and sizes, what guidance_strength 0 and 1 mean, seeding,
equality with diffusers' own pipeline for plain SVD, the error without a model, and
that the GPU benchmark's code runs (`--tiny`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from d2v.errors import ModelNotConfiguredError
from d2v.models import parse_request
from d2v.render import CameraRenderer
from d2v.svd import (
    camera_speed,
    cover_frame,
    derive_motion,
    keyframe_count,
    keyframe_indices,
    load_svd,
    model_size,
    start_index,
    svd_model_setting,
)
from d2v.trajectory import plan_trajectory

from .conftest import textured_image

REPO = Path(__file__).resolve().parent.parent
STEPS = 3  # denoising steps in most tests (g = 0.6 skips 1 of 3): the plumbing, not the quality


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from d2v.tiny_svd import make_tiny_svd

    return make_tiny_svd(tmp_path_factory.mktemp("tiny-svd"))


@pytest.fixture(scope="module")
def svd(tiny_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("D2V_SVD_MODEL", str(tiny_dir))
        return load_svd(svd_model_setting(), "cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return textured_image(320, 200, seed=3)


def make_request(**overrides):
    body = {
        "path": [{"x": 60, "y": 60}, {"x": 200, "y": 120}, {"x": 260, "y": 150}],
        "effect": "zoom_in", "duration_s": 1.0, "fps": 12, "backend": "svd",
        "num_inference_steps": STEPS, "seed": 7,
    }  # fmt: skip
    return parse_request({**body, **overrides})


def guides_for(model, photo, request):
    """The trajectory at the model's size and the camera renders of its keyframes."""
    w, h = model_size(request, model)
    traj = plan_trajectory(request.model_copy(update={"width": w, "height": h}), photo.shape[1], photo.shape[0])
    keys = keyframe_indices(len(traj), keyframe_count(model))
    renderer = CameraRenderer(photo)
    return traj, np.stack([renderer.render_frame(traj.frames[i], w, h) for i in keys])


def mean_abs(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- loading ---------------------------------------------------------------------------


def test_importing_the_backend_loads_no_torch():
    code = "import sys, d2v.svd, d2v.tiny_svd; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_setting(monkeypatch):
    monkeypatch.delenv("D2V_SVD_MODEL", raising=False)
    assert svd_model_setting() is None
    monkeypatch.setenv("D2V_SVD_MODEL", "  ")
    assert svd_model_setting() is None
    monkeypatch.setenv("D2V_SVD_MODEL", "/models/svd-xt")
    assert svd_model_setting() == "/models/svd-xt"


@pytest.mark.parametrize("kind", ["unset", "empty", "missing-dir", "not-a-pipeline", "hub-id-not-cached"])
def test_no_model_is_a_clear_error(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = {
        "unset": None,
        "empty": "",
        "missing-dir": str(tmp_path / "no-such-model"),
        "not-a-pipeline": str(tmp_path),
        "hub-id-not-cached": "nobody-d2v/no-such-svd",
    }[kind]
    with pytest.raises(ModelNotConfiguredError) as err:
        load_svd(model, "cpu")
    message = str(err.value)
    assert "D2V_SVD_MODEL" in message
    assert "\n" not in message
    if model:
        assert model in message
    assert err.value.status_code == 422


def test_broken_model_directory_is_a_clear_error(tiny_dir, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelNotConfiguredError, match="D2V_SVD_MODEL=.*could not be loaded"):
        load_svd(str(broken), "cpu")


def test_cuda_asked_for_without_cuda_runs_on_the_cpu():
    import torch

    from d2v.svd import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():  # Ray's logical GPUs on a CPU machine
        assert resolve_device("cuda:1") == "cpu"


def test_loaded_settings(svd):
    assert svd.device == "cpu"
    assert str(svd.dtype) == "torch.float32"
    assert keyframe_count(svd) == svd.num_frames == svd.pipe.unet.config.num_frames == 6
    from diffusers.models.attention_processor import AttnProcessor2_0

    for module in (svd.pipe.unet, svd.pipe.vae):
        assert {type(p) for p in module.attn_processors.values()} == {AttnProcessor2_0}
    assert svd.describe()["attention"] == "sdpa"


# --- sizes and settings ----------------------------------------------------------------


def test_model_size_for_svd_xt():
    xt = types.SimpleNamespace(size_multiple=64, native_area=768 * 768)
    for (w, h), expected in {
        (1024, 576): (1024, 576),
        (1920, 1080): (1024, 576),
        (576, 1024): (576, 1024),
        (512, 512): (768, 768),
    }.items():
        assert model_size(make_request(width=w, height=h), xt) == expected
    for w, h in ((1200, 800), (640, 480), (2560, 1080), (800, 1200)):
        mw, mh = model_size(make_request(width=w, height=h), xt)
        assert mw % 64 == 0 and mh % 64 == 0
        assert mw * mh <= 768 * 768
        assert abs(np.log((mw / mh) / (w / h))) < 0.12


def test_keyframe_indices():
    assert keyframe_indices(96, 25)[0] == 0 and keyframe_indices(96, 25)[-1] == 95
    assert keyframe_indices(12, 6) == [0, 2, 4, 7, 9, 11]
    assert len(keyframe_indices(3, 6)) == 6


def test_start_index():
    assert start_index(0.0, 25) == 25  # nothing to denoise: the guide
    assert start_index(1.0, 25) == 0  # the whole schedule: plain SVD
    assert start_index(0.6, 25) == 10
    assert start_index(0.6, 5) == 2  # (1 - 0.6) * 5 is 1.9999999999999998 in floats
    assert start_index(0.99, 25) == 0


def test_motion_follows_the_camera_speed(photo):
    slow = plan_trajectory(make_request(effect="pan", duration_s=8.0), 320, 200)
    fast = plan_trajectory(make_request(effect="pan", duration_s=1.0), 320, 200)
    # the same move over 11/12 s and over 95/12 s
    assert camera_speed(fast) == pytest.approx(95 / 11 * camera_speed(slow), rel=1e-3)
    (b_slow, a_slow, _), (b_fast, a_fast, _) = derive_motion(slow), derive_motion(fast)
    assert 1 <= b_slow < b_fast <= 255
    assert 0.02 <= a_slow < a_fast <= 0.08


def test_settings_record_overrides_and_derived_values(svd, photo):
    traj, _ = guides_for(svd, photo, make_request())
    derived = svd.settings_for(make_request(), traj)
    assert derived["derived"] == ["motion_bucket_id", "noise_aug_strength"]
    assert derived["motion_bucket_id"] == derive_motion(traj)[0]
    assert (derived["width"], derived["height"]) == model_size(make_request(), svd)
    assert derived["fps"] == 5  # 6 keyframes over 11/12 s
    given = svd.settings_for(make_request(motion_bucket_id=200, noise_aug_strength=0.1, seed=3), traj)
    assert (given["motion_bucket_id"], given["noise_aug_strength"], given["seed"]) == (200, 0.1, 3)
    assert given["derived"] == []
    assert given["steps"] == STEPS and given["denoise_steps"] == STEPS - start_index(0.6, STEPS)


# --- generation ------------------------------------------------------------------------


def test_keyframes_have_the_models_count_and_size(svd, photo):
    request = make_request()
    traj, guides = guides_for(svd, photo, request)
    w, h = model_size(request, svd)
    assert guides.shape == (svd.num_frames, h, w, 3)
    out = svd.generate(photo, guides, request, traj)
    assert out.shape == (svd.num_frames, h, w, 3) and out.dtype == np.uint8
    assert (w, h) == (80, 48)  # the tiny model's 64x64 native area at 16:9, multiples of 8


def test_strength_zero_is_the_camera_render(svd, photo):
    request = make_request(guidance_strength=0.0)
    traj, guides = guides_for(svd, photo, request)
    assert np.array_equal(svd.generate(photo, guides, request, traj), guides)


def test_low_strength_stays_within_the_vae_round_trip(svd, photo):
    # g = 1/steps runs one step from the smallest sigma (0.002): the guide's latents come
    # back almost unchanged, so the frames are the VAE round trip of the camera render.
    request = make_request(guidance_strength=0.25, num_inference_steps=4)
    traj, guides = guides_for(svd, photo, request)
    assert svd.settings_for(request, traj)["start_sigma"] == pytest.approx(0.002, rel=1e-3)
    out = svd.generate(photo, guides, request, traj)
    round_trip = svd.round_trip(guides)
    vae_error = mean_abs(round_trip, guides)  # large: the tiny VAE's weights are random
    assert mean_abs(out, guides) <= 1.05 * vae_error + 1.0
    plain = svd.generate(photo, guides, make_request(guidance_strength=1.0, num_inference_steps=4), traj)
    assert mean_abs(out, round_trip) < 0.25 * mean_abs(plain, round_trip)


def test_strength_one_does_not_depend_on_the_guide(svd, photo):
    request = make_request(guidance_strength=1.0)
    traj, guides = guides_for(svd, photo, request)
    other = guides[::-1].copy() // 2 + 40
    a = svd.generate(photo, guides, request, traj)
    b = svd.generate(photo, other, request, traj)
    assert np.array_equal(a, b)


def test_partial_strength_follows_the_guide(svd, photo):
    request = make_request(guidance_strength=0.6)
    traj, guides = guides_for(svd, photo, request)
    a = svd.generate(photo, guides, request, traj)
    b = svd.generate(photo, guides[::-1].copy() // 2 + 40, request, traj)
    assert not np.array_equal(a, b)


def test_seeded(svd, photo):
    request = make_request(guidance_strength=0.6)
    traj, guides = guides_for(svd, photo, request)
    a = svd.generate(photo, guides, request, traj)
    again = svd.generate(photo, guides, request, traj)
    other = svd.generate(photo, guides, request.model_copy(update={"seed": 8}), traj)
    assert np.array_equal(a, again)
    assert mean_abs(a, other) > 0.5


def test_plain_svd_is_diffusers_pipeline(svd, photo, monkeypatch):
    """g = 1 runs what StableVideoDiffusionPipeline.__call__ runs: same conditioning,
    noise, schedule, guidance and decode. The only thing d2v does differently is how
    it shrinks the photo to CLIP's 224x224, so the pipeline is given d2v's embedding."""
    import torch
    from PIL import Image

    request = make_request(guidance_strength=1.0)
    traj, guides = guides_for(svd, photo, request)
    ours = svd.generate(photo, guides, request, traj)

    s = svd.settings_for(request, traj)
    cond = cover_frame(photo, s["width"], s["height"])

    def encode_image(image, device, num_videos_per_prompt, do_classifier_free_guidance):
        embeds = svd._clip_embeds(cond)
        return torch.cat([torch.zeros_like(embeds), embeds]) if do_classifier_free_guidance else embeds

    monkeypatch.setattr(svd.pipe, "_encode_image", encode_image)
    theirs = svd.pipe(
        Image.fromarray(cond), height=s["height"], width=s["width"], num_frames=svd.num_frames,
        num_inference_steps=STEPS, fps=s["fps"], motion_bucket_id=s["motion_bucket_id"],
        noise_aug_strength=s["noise_aug_strength"], decode_chunk_size=svd.decode_chunk_size,
        generator=torch.Generator("cpu").manual_seed(request.seed), output_type="np",
    ).frames[0]  # fmt: skip
    theirs = (theirs * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_bad_guides_are_refused(svd, photo):
    from d2v.errors import InvalidRequestError

    request = make_request()
    traj, guides = guides_for(svd, photo, request)
    with pytest.raises(InvalidRequestError):
        svd.generate(photo, guides[:, :45], request, traj)  # 45 rows: not a multiple of 8
    with pytest.raises(InvalidRequestError):
        svd.generate(photo, guides.astype(np.float32), request, traj)


# --- the GPU benchmark's code path -------------------------------------------------------


def test_gpu_bench_runs_tiny_on_cpu():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, str(REPO / "bench/svd_gpu.py"), "--tiny", "--steps", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout
    assert "| variant" in table and "TFLOP/s" in table
    for row in ("(a) diffusers pipeline", "(b) d2v, guidance_strength 1 ", "(b) d2v, guidance_strength 0.6"):
        line = next(line for line in table.splitlines() if line.startswith(f"| {row}"))
        assert "skipped" not in line and "out of memory" not in line
    assert "guided UNet step" in table and "temporal VAE decode" in table


# --- CUDA ------------------------------------------------------------------------------


@pytest.mark.gpu
def test_tiny_model_on_cuda_fp16(tmp_path, photo):
    from d2v.tiny_svd import make_tiny_svd

    model = load_svd(str(make_tiny_svd(tmp_path / "tiny")), "cuda")
    assert model.device.startswith("cuda") and str(model.dtype) == "torch.float16"
    request = make_request()
    traj, guides = guides_for(model, photo, request)
    a = model.generate(photo, guides, request, traj)
    assert a.shape == guides.shape
    assert np.array_equal(a, model.generate(photo, guides, request, traj))
    assert np.array_equal(model.generate(photo, guides, make_request(guidance_strength=0.0), traj), guides)
