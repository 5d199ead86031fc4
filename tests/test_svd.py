"""The svd backend with a tiny random-weight SVD, on the CPU.

The model is built once per module with `make_tiny_svd`, saved, and loaded back through
`load_svd(svd_model_setting(), ...)` with D2V_SVD_MODEL pointing at it: the path users
take. Random weights make noise-like frames, so the tests check the plumbing that does
not depend on quality: counts and sizes, what guidance_strength 0 and 1 mean, seeding,
equality with diffusers' own pipeline for plain SVD, the error without a model, and
that the GPU benchmark's code runs (`--tiny`).
"""

from __future__ import annotations

import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from d2v.errors import ModelNotConfiguredError
from d2v.models import parse_request
from d2v.render import CameraRenderer
from d2v.bases.svd import (
    camera_speed,
    cover_frame,
    derive_motion,
    keyframe_count,
    keyframe_indices,
    load_svd,
    model_size,
    decode_chunks,
    start_sigma,
    svd_model_setting,
)
from d2v.trajectory import plan_trajectory

from .conftest import textured_image

REPO = Path(__file__).resolve().parent.parent
STEPS = 3  # denoising steps in most tests (g = 0.6 skips 1 of 3): the plumbing, not the quality


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from d2v.bases.tiny import make_tiny_svd

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
    code = "import sys, d2v.bases, d2v.bases.svd, d2v.bases.ltx, d2v.bases.wan, d2v.bases.tiny, d2v.svd, d2v.tiny_svd; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
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

    from d2v.bases.common import resolve_device

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


def test_strength_is_a_log_scale_of_noise():
    """The documented table (d2v.svd): sigma(g) = 0.002 * (700 / 0.002) ** g."""
    table = {0.1: 0.0072, 0.2: 0.026, 0.3: 0.092, 0.4: 0.33, 0.5: 1.18, 0.6: 4.3, 0.7: 15.4, 0.8: 55, 0.9: 199}
    for g, sigma in table.items():
        assert start_sigma(g) == pytest.approx(sigma, rel=0.02), g
    assert start_sigma(0.0) == 0.0 and start_sigma(1.0) == pytest.approx(700.0)
    values = [start_sigma(g / 100) for g in range(101)]
    assert all(a < b for a, b in zip(values, values[1:]))
    ratios = [b / a for a, b in zip(values[1:], values[2:])]  # equal steps of g: equal factors of noise
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)


def test_decode_chunks_never_leave_a_frame_alone():
    assert decode_chunks(25, 8) == [7, 6, 6, 6]  # not 8, 8, 8, 1
    assert decode_chunks(14, 8) == [7, 7] and decode_chunks(6, 8) == [6]
    for n in range(2, 60):
        for chunk in range(2, 17):
            sizes = decode_chunks(n, chunk)
            assert sum(sizes) == n and max(sizes) <= max(chunk, 3) and min(sizes) >= 2, (n, chunk, sizes)
            assert len(sizes) == (math.ceil(n / chunk) if chunk > 2 else n // 2)


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
    g = given["guidance_strength"]
    assert given["steps"] == STEPS and given["start_sigma"] == pytest.approx(start_sigma(g), rel=1e-6)
    assert given["mode"] == "sdedit" and given["denoise_steps"] == 1 + sum(
        1 for x in svd._scheduler_sigmas(STEPS) if x < start_sigma(g))


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
    # A small g starts from a sigma close to the smallest (0.002): the guide's latents come
    # back almost unchanged, so the frames are the VAE round trip of the camera render.
    request = make_request(guidance_strength=0.02, num_inference_steps=4)
    traj, guides = guides_for(svd, photo, request)
    sigma = svd.settings_for(request, traj)["start_sigma"]
    assert sigma == pytest.approx(start_sigma(0.02), rel=1e-3) and sigma < 0.003
    out = svd.generate(photo, guides, request, traj)
    round_trip = svd.round_trip(guides)
    vae_error = mean_abs(round_trip, guides)  # large: the tiny VAE's weights are random
    assert mean_abs(out, guides) <= 1.05 * vae_error + 1.0
    plain = svd.generate(photo, guides, make_request(guidance_strength=1.0, num_inference_steps=4), traj)
    assert mean_abs(out, round_trip) < 0.25 * mean_abs(plain, round_trip)


def test_strength_one_does_not_depend_on_the_guide(svd, photo):
    # Plain SVD: only the conditioning frame (the guide's frame 0, the first view) matters.
    request = make_request(guidance_strength=1.0)
    traj, guides = guides_for(svd, photo, request)
    other = guides.copy()
    other[1:] = guides[1:][::-1] // 2 + 40
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
    cond = guides[0]  # d2v conditions on the trajectory's first view

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


def test_gpu_bench_runs_tiny_on_cpu(monkeypatch, capsys):
    """`python bench/svd_gpu.py --tiny --steps 1`, its main() run in this process (which has
    torch and diffusers loaded already; a subprocess imported them again for nothing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("svd_gpu", REPO / "bench/svd_gpu.py")
    svd_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(svd_gpu)
    monkeypatch.setattr(sys, "argv", ["bench/svd_gpu.py", "--tiny", "--steps", "1"])
    code = svd_gpu.main()
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    table = out.out
    assert "| variant" in table and "TFLOP/s" in table
    for row in ("(a) diffusers pipeline", "(b) d2v, guidance_strength 1 ", "(b) d2v, guidance_strength 0.5",
                "(d) d2v + channels_last"):
        line = next(line for line in table.splitlines() if line.startswith(f"| {row}"))
        assert "skipped" not in line and "out of memory" not in line
    for row in ("(e) + compile max-autotune", "(f) d2v + channels_last in bf16"):  # CUDA only: said so
        assert "skipped: " in next(line for line in table.splitlines() if line.startswith(f"| {row}"))
    assert "guided UNet step" in table and "temporal VAE decode" in table
    assert "| libx264 veryfast (CPU)" in table and "h264_nvenc" in table


# --- CUDA ------------------------------------------------------------------------------


@pytest.mark.gpu
def test_tiny_model_on_cuda_fp16(tmp_path, photo):
    from d2v.bases.tiny import make_tiny_svd

    model = load_svd(str(make_tiny_svd(tmp_path / "tiny")), "cuda")
    assert model.device.startswith("cuda") and str(model.dtype) == "torch.float16"
    request = make_request()
    traj, guides = guides_for(model, photo, request)
    a = model.generate(photo, guides, request, traj)
    assert a.shape == guides.shape
    assert np.array_equal(a, model.generate(photo, guides, request, traj))
    assert np.array_equal(model.generate(photo, guides, make_request(guidance_strength=0.0), traj), guides)


# --- the guide, the conditioning frame and the dual clock (the path held through denoising)


@pytest.mark.parametrize("effect", ["zoom_in", "pull_back", "pan", "orbit", "dolly_zoom", "spiral", "earth_zoom_out",
                                    "crash_zoom"])
def test_the_guide_is_the_camera_backends_frames_at_exact_times(svd, photo, effect):
    from d2v.interpolate import positions_for
    from d2v.stages import svd_guide

    request = make_request(effect=effect, duration_s=2.0)
    w, h = model_size(request, svd)
    renderer = CameraRenderer(photo)
    guide = svd_guide(renderer, request, svd.num_frames, w, h)
    camera_frames = np.stack(list(CameraRenderer(photo).render(guide.cameras)))  # the camera backend, as is
    assert np.array_equal(guide.frames, camera_frames) and guide.frames.shape == (svd.num_frames, h, w, 3)
    # Keyframe j's camera is the move's at the time interpolation shows keyframe j.
    n = len(guide.full)
    at = positions_for(svd.num_frames, 1.0, 1.0, n, False)  # output frame i sits at keyframe position at[i]
    expected = np.interp(np.arange(svd.num_frames), at, np.arange(n)) / request.fps
    assert np.allclose([c.time_s for c in guide.cameras.frames], expected, atol=1e-6)
    assert guide.valid.shape == guide.frames.shape[:3] and guide.valid.all()  # all photo: nothing invented
    if effect == "dolly_zoom":  # the stand-in depth moves the background: the guide is no still
        assert min(mean_abs(a, b) for a, b in zip(guide.frames, guide.frames[1:])) > 0.5


def test_the_validity_mask_marks_invented_pixels(svd, photo):
    from d2v.stages import svd_guide

    # A pan whose view leaves the photo (allow_borders): the render invents what lies outside.
    request = make_request(effect="pan", allow_borders=True, end_zoom=1.0,
                           path=[{"x": -40, "y": 100}, {"x": 360, "y": 100}])
    w, h = model_size(request, svd)
    guide = svd_guide(CameraRenderer(photo), request, svd.num_frames, w, h)
    outside = 1.0 - guide.valid.reshape(len(guide.valid), -1).mean(axis=1)
    assert outside[0] > 0.2 and outside[-1] > 0.2 and outside.min() < outside[0]
    # The invented pixels are on the side the view left the photo by: left at the start, right at the end.
    def invented(mask, half):
        return (~mask[:, : w // 2]).mean() if half == "left" else (~mask[:, w // 2:]).mean()

    assert invented(guide.valid[0], "left") > invented(guide.valid[0], "right") + 0.1
    assert invented(guide.valid[-1], "right") > invented(guide.valid[-1], "left") + 0.1


@pytest.mark.parametrize("effect", ["pan", "pull_back", "orbit"])
def test_conditioning_is_the_trajectorys_first_view(svd, photo, effect):
    request = make_request(effect=effect, guidance_strength=0.5)
    traj, guides = guides_for(svd, photo, request)
    seen = []
    svd.generate(photo, guides, request, traj, step_callback=lambda i, info: seen.append(info["conditioning_frame"]))
    assert seen and all(np.array_equal(frame, guides[0]) for frame in seen)
    if effect == "pan":  # a pan starts zoomed in: not the photo's cover crop
        w, h = model_size(request, svd)
        assert mean_abs(guides[0], cover_frame(photo, w, h)) > 5


def test_dual_clock_holds_the_guide_where_it_is_valid(svd, photo):
    """Inside the mask the latents are the guide re-noised to each step's sigma until the
    late clock (sigma(guidance_strength)); outside, SVD denoises alone from the early one."""
    request = make_request(guidance_strength=0.3, free_strength=0.8, num_inference_steps=8)
    traj, guides = guides_for(svd, photo, request)
    k, h, w = guides.shape[:3]
    valid = np.ones((k, h, w), bool)
    valid[:, :, : w // 2] = False
    steps = []

    def watch(i, info):
        z = ((info["latents"] - info["guide"]) / info["sigma"]).float()
        inside = info["mask"].expand_as(z) > 0.5
        steps.append((info["sigma"], info["holding"], float(z[inside].mean()), float(z[inside].std()),
                      float(z[~inside].std())))

    out = svd.generate(photo, guides, request, traj, valid=valid, step_callback=watch)
    settings = svd.settings_for(request, traj)
    assert settings["mode"] == "dual clock" and settings["start_sigma"] == pytest.approx(start_sigma(0.8), rel=1e-6)
    assert settings["hold_sigma"] == pytest.approx(start_sigma(0.3), rel=1e-6)
    held = [s for s in steps if s[1]]
    assert held and all(s[0] > start_sigma(0.3) for s in held)
    assert all(abs(mean) < 0.1 and 0.9 < std < 1.1 for _, _, mean, std, _ in held)  # the re-noised guide
    assert any(abs(outside - 1.0) > 0.5 for *_, outside in held)  # outside: SVD's own way
    assert not any(s[1] for s in steps if s[0] <= start_sigma(0.3))  # the late clock lets go
    assert out.shape == guides.shape
    one_clock = svd.generate(photo, guides, make_request(guidance_strength=0.3, num_inference_steps=8), traj)
    assert svd.settings_for(make_request(guidance_strength=0.3), traj)["mode"] == "sdedit"
    assert not np.array_equal(out, one_clock)


def test_svd_options_from_the_environment_and_the_serve_config(monkeypatch):
    from d2v.bases.svd import SVDOptions

    monkeypatch.setenv("D2V_SVD_DECODE_CHUNK", "4")
    monkeypatch.setenv("D2V_SVD_COMPILE", "1")
    monkeypatch.setenv("D2V_SVD_DTYPE", "bf16")
    assert SVDOptions.resolve() == SVDOptions(compile=True, decode_chunk_size=4, dtype="bf16", warmup=True)
    assert SVDOptions.resolve({"decode_chunk_size": 2, "compile": False}).decode_chunk_size == 2  # config wins
    with pytest.raises(ModelNotConfiguredError, match="D2V_SVD_DECODE_CHUNK"):
        SVDOptions.resolve({"decode_chunk_size": 0})
    with pytest.raises(ModelNotConfiguredError, match="unknown speed"):
        SVDOptions.resolve({"speed": "max"})
    monkeypatch.setenv("D2V_SVD_WARMUP", "maybe")
    with pytest.raises(ModelNotConfiguredError, match="D2V_SVD_WARMUP"):
        SVDOptions.resolve()


def test_render_takes_the_svd_knobs_as_flags(tmp_path):
    from d2v.cli import _request_from_args, build_parser

    (tmp_path / "p.json").write_text('[{"x": 1, "y": 1}, {"x": 50, "y": 40}]')
    args = build_parser().parse_args([
        "render", "x.png", "--path", str(tmp_path / "p.json"), "--backend", "svd", "-o", "o.mp4",
        "--guidance-strength", "0.3", "--free-strength", "0.8", "--motion-bucket-id", "90",
        "--noise-aug-strength", "0.05", "--steps", "12", "--no-auto-correct"])
    request = _request_from_args(args)
    assert (request.guidance_strength, request.free_strength, request.motion_bucket_id, request.noise_aug_strength,
            request.num_inference_steps, request.auto_correct) == (0.3, 0.8, 90, 0.05, 12, False)
    defaults = _request_from_args(build_parser().parse_args(["render", "x.png", "--path", str(tmp_path / "p.json"),
                                                             "-o", "o.mp4"]))
    assert defaults.guidance_strength == 0.5 and defaults.free_strength is None and defaults.auto_correct
