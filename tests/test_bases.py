"""The generative bases (d2v.bases): LTX-Video and Wan 2.2 beside SVD, with tiny random-weight
pipelines built by `make_tiny` and loaded back through the loaders users run (D2V_LTX_MODEL,
D2V_WAN_MODEL, D2V_SVD_MODEL pointing at them). Random weights make noise-like frames: the tests
check what does not depend on quality: the strength scale, the clocks seen through the step
callback, the step count against the transformer calls counted, seeding, the output's aspect,
the text in the manifest, `auto`, and segments' seams.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from d2v.bases import BASES, backends_table, choose_backend
from d2v.bases.common import (
    SIGMA_MAX,
    flow_start,
    make_guide,
    model_frame,
    model_frame_for,
    plan_keyframes,
    start_sigma,
)
from d2v.errors import InvalidRequestError, ModelNotConfiguredError
from d2v.models import parse_request
from d2v.render import CameraRenderer

from .conftest import textured_image

STEPS = 3
ASPECTS = {"4:5": (160, 200), "9:16": (108, 192), "1:1": (128, 128), "2.39:1": (240, 100)}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from d2v.bases.tiny import make_tiny

    root = tmp_path_factory.mktemp("tiny-bases")
    return {name: make_tiny(name, root / name) for name in ("svd", "ltx", "wan")}


@pytest.fixture(scope="module")
def models(tiny_dirs):
    """Each base loaded as a user's process loads it: through its setting."""
    from d2v.bases import configured, load_base

    env = {BASES[name].setting: str(path) for name, path in tiny_dirs.items()}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        found = configured()
        return {name: load_base(name, found[name], "cpu")[0] for name in ("svd", "ltx", "wan")}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return textured_image(240, 160, seed=5)


def make_request(**overrides):
    body = {"path": [{"x": 50, "y": 60}, {"x": 190, "y": 100}], "effect": "pan", "duration_s": 1.0, "fps": 8,
            "width": 96, "height": 64, "num_inference_steps": STEPS, "seed": 3, "auto_correct": False}
    return parse_request({**body, **overrides})


def guide_for(model, photo, request, valid_half=False):
    total, _ = plan_keyframes(request.duration_s, model, request.fps)
    guide = make_guide(CameraRenderer(photo), request, total, model_frame_for(request, model))
    if valid_half:  # the right half "invented": the dual clock lets the model alone there
        guide.valid = guide.valid.copy()
        guide.valid[:, :, guide.valid.shape[2] // 2 :] = False
    return guide


# --- strength ---------------------------------------------------------------------------


def _table(doc: str, label: str) -> list[float]:
    line = next(line for line in doc.splitlines() if re.match(rf"\s*{label}\s+\d", line))
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", line[line.index(label) + len(label):])]


def test_strength_tables_match_the_code_and_rise(models):
    import d2v.bases.flow as flow
    import d2v.bases.svd as svd

    grid = [g / 10 for g in range(1, 11)]
    documented = _table(svd.__doc__, "sigma")[:10]
    assert documented == pytest.approx([start_sigma(g) for g in grid], rel=0.01)
    for shift in (1, 5):
        row = _table(flow.__doc__, f"shift {shift}")[:10]
        assert row == pytest.approx([flow_start(g, shift) for g in grid], rel=0.01, abs=1e-3)
    fine = np.linspace(0, 1, 101)
    for name in ("ltx", "wan"):
        from d2v.bases.flow import model_shift

        shift = model_shift(models[name].pipe.scheduler, 256)
        ts = [flow_start(g, shift) for g in fine]
        assert ts[0] == 0.0 and ts[-1] == 1.0 and all(b > a for a, b in zip(ts, ts[1:]))
    sigmas = [start_sigma(g) for g in fine]
    assert sigmas[0] == 0.0 and sigmas[-1] == pytest.approx(SIGMA_MAX) and all(b > a for a, b in zip(sigmas, sigmas[1:]))


@pytest.mark.parametrize("name", ["ltx", "wan"])
def test_strength_zero_is_the_guide_exactly(models, photo, name):
    request = make_request(backend=name, guidance_strength=0.0)
    guide = guide_for(models[name], photo, request)
    out = models[name].generate(photo, guide.frames, request, guide.cameras, valid=guide.valid)
    assert np.array_equal(out, guide.frames)


@pytest.mark.parametrize("name", ["ltx", "wan"])
def test_strength_one_differs_from_the_guide_and_is_seeded(models, photo, name):
    model = models[name]
    request = make_request(backend=name, guidance_strength=1.0, num_inference_steps=2)
    guide = guide_for(model, photo, request)
    a = model.generate(photo, guide.frames, request, guide.cameras)
    b = model.generate(photo, guide.frames, request, guide.cameras)
    c = model.generate(photo, guide.frames, request.model_copy(update={"seed": 4}), guide.cameras)
    assert a.shape == guide.frames.shape
    assert np.abs(a.astype(int) - guide.frames).mean() > 10  # not the camera render
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name,g", [("svd", 0.6), ("ltx", 0.6), ("ltx", 1.0), ("wan", 0.6), ("wan", 1.0)])
def test_step_count_is_the_calls_made(models, photo, name, g):
    """The manifest's denoise_steps = the UNet / transformer calls, counted by a forward hook."""
    model = models[name]
    request = make_request(backend=name, guidance_strength=g)
    guide = guide_for(model, photo, request)
    net = model.pipe.unet if name == "svd" else model.transformer
    calls, steps = [], []
    hook = net.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.generate(photo, guide.frames, request, guide.cameras, step_callback=lambda i, info: steps.append(i))
    finally:
        hook.remove()
    expected = model.settings_for(request, guide.cameras)["denoise_steps"]
    assert len(calls) == len(steps) == expected
    assert expected == (STEPS if g == 1.0 else len(steps)) and expected >= 1


@pytest.mark.parametrize("name", ["ltx", "wan"])
def test_dual_clock_holds_the_guide_inside_the_mask_until_the_late_clock(models, photo, name):
    """Through the step callback: while t is above t(guidance_strength), the valid cells are the
    guide re-noised to t, (1 - t) guide + t fresh noise: the residual (latents - (1 - t) guide) / t
    is unit noise, drawn anew at each step (uncorrelated from one step to the next); the invented
    cells evolve under the model from step to step (their residuals stay correlated); after the
    late clock nothing is held."""
    import torch

    model = models[name]
    g = {"ltx": 0.3, "wan": 0.5}[name]  # a late clock inside the schedule (Wan's shift 5 keeps its levels high)
    request = make_request(backend=name, guidance_strength=g, free_strength=0.9, num_inference_steps=6)
    guide = guide_for(model, photo, request, valid_half=True)
    seen = []
    model.generate(photo, guide.frames, request, guide.cameras, valid=guide.valid,
                   step_callback=lambda i, info: seen.append(
                       {"t": info["t"], "holding": info["holding"], "latents": info["latents"].clone(),
                        "guide": info["guide"], "mask": info["mask"]}))
    hold = flow_start(g, model_shift_of(model, guide))
    assert [s["holding"] for s in seen] == [s["t"] > hold * (1 + 1e-6) for s in seen]
    held = [s for s in seen if s["holding"]]
    assert len(held) >= 2 and not seen[-1]["holding"]

    def residual(s):
        return (s["latents"] - (1 - s["t"]) * s["guide"]) / s["t"]

    inside = held[0]["mask"].expand_as(held[0]["latents"]) > 0.5
    assert inside.any() and (~inside).any()
    for a, b in zip(held, held[1:]):
        ra, rb = residual(a), residual(b)
        assert float(rb[inside].std()) == pytest.approx(1.0, abs=0.15) and abs(float(rb[inside].mean())) < 0.15
        corr_in = float(torch.corrcoef(torch.stack([ra[inside], rb[inside]]))[0, 1])
        corr_out = float(torch.corrcoef(torch.stack([ra[~inside], rb[~inside]]))[0, 1])
        assert abs(corr_in) < 0.1, corr_in  # fresh noise each step: the guide, re-noised
        assert corr_out > 0.5, corr_out  # the model's own trajectory


def model_shift_of(model, guide):
    from d2v.bases.flow import model_shift

    f = (len(guide.frames) - 1) // model.temporal_compression + 1
    h, w = guide.frames.shape[1:3]
    spatial = model.spatial
    cells = f * (h // spatial) * (w // spatial)
    patch = model.patch if isinstance(model.patch, tuple) else (model.patch_t, model.patch, model.patch)
    return model_shift(model.pipe.scheduler, cells // (patch[0] * patch[1] * patch[2]))


# --- aspect -----------------------------------------------------------------------------


def test_the_view_has_the_outputs_aspect_for_every_base_and_size(models):
    sizes = {"svd-xt": (64, 1024 * 576), "ltx": (32, 768 * 512), "wan": (32, 1280 * 704)}
    sizes.update({f"tiny {n}": (m.size_multiple, m.native_area) for n, m in models.items()})
    for multiple, area in sizes.values():
        for w, h in [*ASPECTS.values(), (1080, 1350), (1280, 544), (256, 128), (1920, 1080)]:
            frame = model_frame(w / h, multiple, area)
            vx, vy, vw, vh = frame.view
            assert frame.width % multiple == 0 and frame.height % multiple == 0
            assert frame.width * frame.height <= max(area, multiple ** 2)
            assert 0 <= vx and vx + vw <= frame.width and 0 <= vy and vy + vh <= frame.height
            # within half a pixel on the cropped side: no stretch beyond rounding
            assert abs(vw / vh - w / h) <= 0.5 / min(vw, vh) * (w / h) + 1e-9


@pytest.mark.parametrize("name", ["svd", "ltx", "wan"])
def test_aspect_is_kept_not_stretched(models, photo, name):
    """Each aspect at strength 0 through the base's sizing: the view cropped from the canvas is
    the camera backend's render at the output's aspect (the same pixels), where a stretch to
    the output would be several percent off in scale."""
    import cv2

    renderer = CameraRenderer(photo)
    for w, h in ASPECTS.values():
        request = make_request(backend=name, width=w, height=h, guidance_strength=0.0)
        frame = model_frame_for(request, models[name])
        guide = make_guide(renderer, request, 3, frame)
        cropped = frame.crop(guide.frames)
        vw, vh = frame.view_size
        direct = np.stack(list(renderer.render(guide.cameras)))  # the view's cameras at the view's size
        assert cropped.shape[1:3] == (vh, vw) == direct.shape[1:3]
        assert np.abs(cropped.astype(int) - direct).mean() < 2.0
        # and the view's aspect is the output's: upscaled it lines up with the camera job's frame
        out_request = request.model_copy(update={"backend": "camera"})
        full = make_guide(renderer, out_request, 3, model_frame(w / h, 2, w * h))
        up = cv2.resize(cropped[-1], (w, h), interpolation=cv2.INTER_CUBIC)
        assert np.abs(up.astype(int) - full.frames[-1]).mean() < 12


# --- whole jobs: path check, text, auto -------------------------------------------------


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    import cv2

    path = tmp_path_factory.mktemp("photo") / "photo.png"
    cv2.imwrite(str(path), cv2.cvtColor(textured_image(320, 200, seed=9), cv2.COLOR_RGB2BGR))
    return path


def _render(tmp_path, photo_file, body, env, monkeypatch):
    from d2v.pipeline import render_job
    from d2v.store import LocalStore

    for key in ("D2V_SVD_MODEL", "D2V_LTX_MODEL", "D2V_WAN_MODEL", "D2V_DEPTH_MODEL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out.mp4"
    manifest = render_job(photo_file.read_bytes(), parse_request(body), LocalStore(tmp_path / "store"),
                          output_path=out, use_cache=False)
    return manifest, out


@pytest.mark.parametrize("name,effect,aspect", [("svd", "pan", "4:5"), ("ltx", "orbit", "9:16"),
                                                 ("wan", "dolly_zoom", "2.39:1"), ("ltx", "pan", "1:1")])
def test_strength_zero_jobs_follow_the_path(tmp_path, photo_file, tiny_dirs, monkeypatch, name, effect, aspect):
    """`d2v check` of each base's output at strength 0: followed, at the output's aspect."""
    from d2v.cli import main

    w, h = ASPECTS[aspect]
    path = [{"x": 90, "y": 70}, {"x": 200, "y": 120}] if effect != "orbit" else \
        [{"x": 160 + 50 * math.cos(a), "y": 100 + 40 * math.sin(a)} for a in np.linspace(0, 2 * math.pi, 24)]
    body = {"path": path, "effect": effect, "duration_s": 1.0, "fps": 8, "width": w, "height": h,
            "backend": name, "guidance_strength": 0.0, "prompt": "a quiet street, slow push in"}
    manifest, out = _render(tmp_path, photo_file, body, {BASES[name].setting: str(tiny_dirs[name])}, monkeypatch)
    assert manifest.backend == name and manifest.settings["mode"] == "camera render"
    assert (manifest.width, manifest.height) == (w, h)
    path_file = tmp_path / "path.json"
    path_file.write_text(json.dumps(path))
    code = main(["check", str(out), "--image", str(photo_file), "--path", str(path_file), "--effect", effect,
                 "--duration", "1", "--fps", "8", "--size", f"{w}x{h}"])
    assert code == 0, f"{name} {effect} {aspect}: {manifest.fidelity.summary() if manifest.fidelity else None}"
    if name == "svd":
        assert manifest.settings["text"].startswith("ignored")
    else:
        assert manifest.settings["prompt"] == "a quiet street, slow push in"
        assert manifest.settings["prompt_source"] == "request"


def test_without_a_prompt_the_effect_is_described(models, photo):
    request = make_request(backend="ltx", effect="zoom_in")
    guide = guide_for(models["ltx"], photo, request)
    settings = models["ltx"].settings_for(request, guide.cameras)
    assert settings["prompt_source"] == "effect" and "push in" in settings["prompt"]


@pytest.mark.parametrize("prompt", ["x" * 10_000, 12345, ["a", "b"], "bad \x00 text"])
def test_bad_prompts_are_refused(prompt):
    body = make_request().model_dump(mode="json")
    with pytest.raises(InvalidRequestError, match="prompt"):
        parse_request({**body, "prompt": prompt})
    with pytest.raises(InvalidRequestError, match="negative_prompt"):
        parse_request({**body, "negative_prompt": prompt})


def test_cli_refuses_a_long_prompt_with_exit_2(tmp_path, photo_file, capsys):
    from d2v.cli import main

    path = tmp_path / "path.json"
    path.write_text(json.dumps([{"x": 10, "y": 10}, {"x": 100, "y": 80}]))
    code = main(["render", str(photo_file), "--path", str(path), "--backend", "ltx", "--prompt", "y" * 10_000,
                 "-o", str(tmp_path / "o.mp4")])
    assert code == 2
    assert "prompt" in capsys.readouterr().err


def test_auto_with_nothing_configured_renders_camera_and_says_so(tmp_path, photo_file, monkeypatch):
    body = {"path": [{"x": 60, "y": 60}, {"x": 200, "y": 120}], "effect": "pan", "duration_s": 1.0, "fps": 8,
            "width": 96, "height": 64, "backend": "auto"}
    manifest, out = _render(tmp_path, photo_file, body, {}, monkeypatch)
    assert manifest.backend == "camera" and manifest.request.backend == "auto"
    assert any(n.startswith("auto: camera") for n in manifest.notes)
    assert out.stat().st_size > 0


def test_auto_picks_the_first_configured_base_in_order():
    assert choose_backend("auto", {"svd": "a", "ltx": "b"})[0] == "ltx"
    assert choose_backend("auto", {"svd": "a", "ltx": "b", "wan": "c"})[0] == "wan"
    assert choose_backend("auto", {"svd": "a"}) == ("svd", choose_backend("auto", {"svd": "a"})[1])
    assert choose_backend("svd", {}) == ("svd", None)
    table = {row["name"]: row for row in backends_table({"ltx": "/m"})}
    assert table["ltx"]["configured"] and not table["wan"]["configured"] and "D2V_WAN_MODEL" in table["wan"]["reason"]
    assert table["auto"]["renders_with"] == "ltx" and table["wan"]["licence"] == "Apache-2.0"


@pytest.mark.parametrize("name", ["ltx", "wan"])
def test_missing_model_names_the_setting(name, monkeypatch, tmp_path):
    from d2v.bases import load_base
    from d2v.pipeline import require_backend

    monkeypatch.delenv(BASES[name].setting, raising=False)
    with pytest.raises(ModelNotConfiguredError, match=BASES[name].setting):
        require_backend(make_request(backend=name))
    with pytest.raises(ModelNotConfiguredError, match=BASES[name].setting):
        load_base(name, str(tmp_path / "nothing-here"), "cpu")


# --- segments ---------------------------------------------------------------------------


def test_a_long_request_renders_as_segments_without_seams(models, photo, monkeypatch):
    """12 s on a base whose one generation is shorter (tiny LTX with 9-frame generations):
    overlapping segments along one guide; the change from frame to frame at a seam is within the
    clip's typical change."""
    from d2v.stages import render_keyframes

    model = models["ltx"]
    monkeypatch.setattr(model, "clip_frames", 17)
    request = make_request(backend="ltx", duration_s=12.0, fps=2, width=64, height=64, guidance_strength=0.3,
                           num_inference_steps=2, path=[{"x": 40, "y": 50}, {"x": 200, "y": 110}])
    from d2v.trajectory import plan_trajectory

    trajectory = plan_trajectory(request, photo.shape[1], photo.shape[0])
    clip = render_keyframes(CameraRenderer(photo), trajectory, request, model, photo, 0.0, lambda *a: None)
    segments = clip.settings["segments"]
    assert len(segments) >= 2 and clip.settings["keyframes"] == len(clip.frames)
    change = np.abs(np.diff(clip.frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    seams = [start - 1 for start, _ in segments[1:]]  # the step into each segment's first new frame
    seams = [s + clip.settings["segment_overlap"] for s in seams]
    typical = np.median(change)
    assert all(change[s] <= 2.0 * typical + 1.0 for s in seams if s < len(change)), (change, seams)


def test_a_long_request_at_strength_zero_follows_the_path(tmp_path, photo_file, tiny_dirs, models, monkeypatch):
    body = {"path": [{"x": 60, "y": 60}, {"x": 260, "y": 140}], "effect": "pan", "duration_s": 12.0, "fps": 4,
            "width": 96, "height": 64, "backend": "ltx", "guidance_strength": 0.0, "auto_correct": False}
    monkeypatch.setattr(models["ltx"], "clip_frames", 17)  # the process's shared model: render_job finds it
    manifest, _ = _render(tmp_path, photo_file, body, {"D2V_LTX_MODEL": str(tiny_dirs["ltx"])}, monkeypatch)
    assert manifest.fidelity.verdict == "followed"
    assert manifest.frames == 48 and len(manifest.settings["segments"]) >= 2


def test_gpu_check_runs_tiny_on_the_cpu(tmp_path):
    """bench/gpu_check.py --tiny: the GPU check's code (every base against its diffusers
    pipeline, the sharing and NVENC steps) runs on the CPU and writes its table."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parent.parent / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    # svd's half is bench/svd_gpu.py's, run by tests/test_svd.py: ltx and wan here
    assert gpu_check.main(["--tiny", "--out", str(tmp_path), "--steps", "2", "--bases", "ltx,wan"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    timed = {(r["base"], r["variant"]) for r in report["bases"] if "seconds" in r}
    for base in ("ltx", "wan"):
        assert {(base, "diffusers pipeline"), (base, "d2v, strength 1")} <= timed
    assert "| ltx | d2v, strength 1 |" in (tmp_path / "gpu_check.md").read_text()
    assert any(r["codec"] == "libx264" and "fps" in r["result"] for r in report["nvenc"])


