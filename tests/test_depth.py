"""The depth stage (d2v.depth): a tiny random-weight Depth Anything built from configs,
saved with `save_pretrained` and loaded back through the loader users run; its depth in the
project's convention; the store's depth cache; broken models as named errors; and the
stage through `render_job`, batch and the `d2v` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from d2v.depth import (
    TINY_KINDS,
    DepthEstimator,
    cached_depth,
    depth_for,
    encode_depth_png,
    load_depth_model,
    make_tiny_depth,
    normalise_depth,
    planned_depth_source,
    shared_depth_model,
)
from d2v.errors import DepthModelError
from d2v.models import parse_request
from d2v.render import load_depth_map
from d2v.store import LocalStore
from tests.conftest import textured_image
from tests.test_cli import EXAMPLE, PATHS, d2v

PATH = {"canvas": {"width": 320, "height": 180}, "points": [{"x": 60, "y": 90}, {"x": 260, "y": 90}]}


@pytest.fixture(scope="module")
def tiny_depth(tmp_path_factory) -> Path:
    return make_tiny_depth(tmp_path_factory.mktemp("tiny-depth"))


def png_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture
def count_estimates(monkeypatch) -> list[int]:
    """Counts the model's runs (DepthEstimator.estimate), still running the real model."""
    calls: list[int] = []
    real = DepthEstimator.estimate

    def counting(self, rgb):
        calls.append(1)
        return real(self, rgb)

    monkeypatch.setattr(DepthEstimator, "estimate", counting)
    return calls


def test_tiny_model_loads_through_the_loader_and_gives_depth_in_the_renderers_convention(tiny_depth):
    import torch

    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in tiny_depth.iterdir()}
    estimator = load_depth_model(str(tiny_depth), "auto")
    assert estimator.device == "cpu" and not estimator.metric
    rgb = textured_image(320, 180)
    depth = estimator.estimate(rgb)
    assert depth.shape == (180, 320) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert depth.min() == 0.0 and depth.max() == 1.0 and depth.std() > 0.01
    # Larger predicted inverse depth (nearer) is brighter: the estimate is the model's own
    # prediction at the image's size, stretched, never flipped.
    inputs = estimator.processor(images=rgb, return_tensors="pt")
    with torch.inference_mode():
        raw = estimator.model(**inputs).predicted_depth[0].numpy()
    small = cv2.resize(depth, raw.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.corrcoef(small.ravel(), raw.ravel())[0, 1] > 0.9
    # What the renderer reads back from the 16-bit PNG is the same map.
    assert np.abs(load_depth_map(encode_depth_png(depth), 320, 180) - depth).max() <= 1 / 65535 + 1e-7


METRIC_KINDS = {"depth_anything_metric", "zoedepth", "glpn"}  # they predict distance: inverted


@pytest.mark.parametrize("kind", [k for k in TINY_KINDS if k != "depth_anything"])  # that one: the test above
def test_every_depth_model_kind_loads_and_estimates(kind, tmp_path):
    """Each kind the docs name, as a tiny random-weight model saved and loaded back through
    the loader, estimates a depth map in the renderer's convention: its own prediction at
    the photo's size, nearer brighter (a metric model's distance inverted)."""
    import torch
    from scipy.stats import spearmanr

    estimator = load_depth_model(str(make_tiny_depth(tmp_path / kind, kind=kind)), "cpu")
    assert estimator.metric == (kind in METRIC_KINDS)
    rgb = textured_image(160, 90, seed=2)
    depth = estimator.estimate(rgb)
    assert depth.shape == (90, 160) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert depth.min() == 0.0 and depth.max() == 1.0 and depth.std() > 0.01
    inputs = estimator.processor(images=rgb, return_tensors="pt")
    with torch.inference_mode():
        raw = estimator.model(**inputs).predicted_depth[0].numpy()
    pad_h, pad_w = estimator._padding(90, 160)  # ZoeDepth's model sees the photo padded
    k = raw.shape[0] / (90 + 2 * pad_h), raw.shape[1] / (160 + 2 * pad_w)
    raw = raw[round(pad_h * k[0]):raw.shape[0] - round(pad_h * k[0]), round(pad_w * k[1]):raw.shape[1] - round(pad_w * k[1])]
    nearness = -raw if estimator.metric else raw  # a distance: nearer is smaller
    small = cv2.resize(depth, nearness.shape[::-1], interpolation=cv2.INTER_AREA)
    assert spearmanr(small.ravel(), nearness.ravel())[0] > 0.8  # in the same order (the stretch clips 1%)


def test_zoedepth_jobs_get_depth(tmp_path, monkeypatch):
    """ZoeDepth pads the photo before the model sees it; the estimate crops exactly the padding
    its processor adds (checked against the processor at full size) and a job gets its depth."""
    model = make_tiny_depth(tmp_path / "zoe", kind="zoedepth")
    estimator = load_depth_model(str(model), "cpu")
    rgb = textured_image(200, 120, seed=3)
    padded = estimator.processor(images=rgb, do_resize=False, return_tensors="np")["pixel_values"].shape[-2:]
    pad_h, pad_w = estimator._padding(120, 200)
    assert pad_h > 0 and tuple(padded) == (120 + 2 * pad_h, 200 + 2 * pad_w)
    monkeypatch.setenv("D2V_DEPTH_MODEL", str(model))
    got = depth_for(png_bytes(rgb), rgb, LocalStore(tmp_path / "store"), parse_request({"path": PATH}))
    assert (got.source, got.model) == ("estimated", str(model)) and got.depth.shape == (120, 200)
    assert got.depth.std() > 0.01


def test_depth_pro_without_torchvision_is_a_named_error(tmp_path):
    """Depth Pro's image processor needs torchvision, which d2v does not install: loading one
    says so in one line instead of failing later."""
    from transformers import DepthProConfig

    DepthProConfig().save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "DepthProImageProcessor"}))
    with pytest.raises(DepthModelError, match="(?i)torchvision") as err:
        load_depth_model(str(tmp_path), "cpu")
    assert "D2V_DEPTH_MODEL" in str(err.value) and "\n" not in str(err.value)


def test_the_cli_offers_every_tiny_kind():
    from d2v.cli import TINY_DEPTH_KINDS

    assert TINY_DEPTH_KINDS == tuple(TINY_KINDS)


def test_normalise_depth_makes_near_bright_for_relative_and_metric_models():
    near = np.zeros((40, 60), bool)
    near[10:30, 20:40] = True
    inverse_depth = np.where(near, 5.0, 1.0).astype(np.float32)  # relative models: larger = nearer
    distance = np.where(near, 2.0, 10.0).astype(np.float32)  # metric models: metres
    for prediction, metric in ((inverse_depth, False), (distance, True)):
        d = normalise_depth(prediction, metric=metric)
        assert d.dtype == np.float32 and d[near].min() == 1.0 and d[~near].max() == 0.0
    assert not normalise_depth(np.full((4, 4), 3.0)).any()  # a flat prediction: all on the image plane
    d = normalise_depth(np.where(near, np.nan, inverse_depth))
    assert np.isfinite(d).all() and 0.0 <= d.min() <= d.max() <= 1.0


def test_depth_is_cached_by_image_content(tiny_depth, tmp_path, monkeypatch, count_estimates):
    monkeypatch.setenv("D2V_DEPTH_MODEL", str(tiny_depth))
    store = LocalStore(tmp_path / "store")
    request = parse_request({"path": PATH})
    rgb = textured_image(320, 180, seed=1)
    image_bytes = png_bytes(rgb)

    first = depth_for(image_bytes, rgb, store, request)
    assert (first.source, first.model, first.cached) == ("estimated", str(tiny_depth), False)
    assert first.depth.shape == (180, 320) and len(count_estimates) == 1
    assert len(store.list("depth/")) == 1
    # Another job on the same photo (another effect, a resubmit): read back, the model not run.
    again = depth_for(image_bytes, rgb, store, request.model_copy(update={"effect": "orbit"}))
    assert again.cached and len(count_estimates) == 1
    assert np.array_equal(again.depth, first.depth)  # the first job used exactly what is cached
    # A different photo runs the model.
    other = textured_image(320, 180, seed=2)
    assert not depth_for(png_bytes(other), other, store, request).cached and len(count_estimates) == 2

    # depth "none", the request's own map, and no model configured: the model is not run.
    assert depth_for(image_bytes, rgb, store, request.model_copy(update={"depth": "none"})).source == "none"
    user = depth_for(image_bytes, rgb, store, request, user_depth=first.depth)
    assert user.source == "user" and user.model is None
    monkeypatch.delenv("D2V_DEPTH_MODEL")
    assert depth_for(image_bytes, rgb, store, request) == (None, "none", None, False)
    assert len(count_estimates) == 2


def _broken(source: Path, where: Path, damage) -> Path:
    shutil.copytree(source, where)
    damage(where)
    return where


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "config.json").write_text("{not json"), "JSONDecodeError"),
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
     "could not be loaded"),
    (lambda d: (d / "preprocessor_config.json").unlink(), "preprocessor_config.json"),
    (lambda d: (d / "config.json").unlink(), "no config.json"),
], ids=["garbage-config", "no-weights", "truncated-weights", "no-processor", "no-config"])
def test_a_broken_model_directory_is_a_named_error(tiny_depth, tmp_path, monkeypatch, damage, words):
    broken = _broken(tiny_depth, tmp_path / "broken", damage)
    with pytest.raises(DepthModelError) as err:
        load_depth_model(str(broken), "cpu")
    message = str(err.value)
    assert "D2V_DEPTH_MODEL" in message and str(broken) in message and words in message
    assert "\n" not in message
    # A job that asked for depth fails with it: never a silent flat render.
    monkeypatch.setenv("D2V_DEPTH_MODEL", str(broken))
    rgb = textured_image(160, 90)
    with pytest.raises(DepthModelError):
        depth_for(png_bytes(rgb), rgb, LocalStore(tmp_path / "store"), parse_request({"path": PATH}))


def test_missing_settings_are_named_errors(tmp_path):
    for setting, words in ((None, "D2V_DEPTH_MODEL is not set"), (str(tmp_path / "nowhere"), "no such directory"),
                           ("no-org/not-cached", "local Hugging Face cache")):
        with pytest.raises(DepthModelError, match="D2V_DEPTH_MODEL") as err:
            shared_depth_model(setting)
        assert words in str(err.value)


def test_render_job_and_batch_use_the_estimated_depth(tiny_depth, tmp_path, monkeypatch, count_estimates):
    from d2v.batch import Options, run_batch
    from d2v.pipeline import render_job

    monkeypatch.setenv("D2V_DEPTH_MODEL", str(tiny_depth))
    store = LocalStore(tmp_path / "data")
    rgb = textured_image(320, 180, seed=3)
    image_bytes = png_bytes(rgb)
    request = parse_request({"path": PATH, "effect": "dolly_zoom", "duration_s": 0.5, "fps": 8,
                             "width": 160, "height": 96})
    manifest = render_job(image_bytes, request, store)
    assert (manifest.depth_source, manifest.depth_model) == ("estimated", str(tiny_depth))
    assert manifest.image["depth_map"] and "depth" in manifest.stage_seconds and len(count_estimates) == 1
    assert "+ depth warp" in manifest.methods["base"]  # dolly_zoom's parallax comes from the estimate
    none = render_job(image_bytes, request.model_copy(update={"depth": "none"}), store)
    assert (none.depth_source, none.depth_model, none.image["depth_map"]) == ("none", None, False)
    assert none.job_id != manifest.job_id

    # Batch: the same stage in-process; the photo's depth comes from the cache. A line's
    # `depth` is the request's mode ("none") or a depth map file.
    (tmp_path / "photo.png").write_bytes(image_bytes)
    (tmp_path / "map.png").write_bytes(encode_depth_png(np.tile(np.linspace(0, 1, 320, dtype=np.float32), (180, 1))))
    line = {"image": "photo.png", "path": PATH, "effect": "orbit", "duration_s": 0.5, "fps": 8, "width": 160,
            "height": 96}
    lines = [{**line, "id": "auto"}, {**line, "id": "off", "depth": "none"}, {**line, "id": "map", "depth": "map.png"}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = run_batch(jobs, {"D2V_DATA_DIR": str(tmp_path / "data")}, Options(use_ray=False), base_dir=tmp_path)
    assert [r.status for r in rows] == ["succeeded"] * 3, [r.error for r in rows]
    sources = {r.id: json.loads(store.get_bytes(r.keys["manifest"]))["depth_source"] for r in rows}
    assert sources == {"auto": "estimated", "off": "none", "map": "user"}
    assert len(count_estimates) == 1


def test_the_preview_plans_with_depth_when_the_job_will(tiny_depth, tmp_path, monkeypatch, count_estimates):
    """`auto` on a straight, level stroke: with a depth model configured the job slides
    (parallax), and so does its preview, which never runs the model: it renders with the
    estimate once the depth cache holds it. With depth "none", or no model, both pan as
    before (a short stroke: both zoom in)."""
    from d2v.pipeline import render_job
    from d2v.preview import preview

    monkeypatch.setenv("D2V_DEPTH_MODEL", str(tiny_depth))
    store = LocalStore(tmp_path / "data")
    rgb = textured_image(320, 180, seed=5)
    image_bytes = png_bytes(rgb)
    request = parse_request({"path": PATH, "effect": "auto", "duration_s": 0.5, "fps": 8, "width": 160,
                             "height": 96})

    def previewed(req, depth_given: bool = False) -> dict:
        source = planned_depth_source(req, depth_given=depth_given)
        return preview(rgb, req, depth_source=source, depth=cached_depth(image_bytes, store, 320, 180))

    first = previewed(request)
    assert (first["effect"], first["auto_effect"], first["depth_source"]) == ("parallax", "parallax", "estimated")
    assert not first["depth_shown"] and not count_estimates and not store.list("depth/")
    assert render_job(image_bytes, request, store).effect == "parallax"
    again = previewed(request)  # the job cached the estimate: the preview shows it
    assert again["effect"] == "parallax" and again["depth_shown"] and len(count_estimates) == 1
    assert previewed(request, depth_given=True)["depth_source"] == "user"

    flat = request.model_copy(update={"depth": "none"})
    assert previewed(flat)["effect"] == render_job(image_bytes, flat, store).effect == "pan"
    monkeypatch.delenv("D2V_DEPTH_MODEL")
    assert (previewed(request)["effect"], previewed(request)["depth_source"]) == ("pan", "none")
    short = parse_request({**request.model_dump(mode="json"),
                           "path": {**PATH, "points": [{"x": 130, "y": 90}, {"x": 190, "y": 90}]}})
    assert previewed(short)["effect"] == "zoom_in"
    assert len(count_estimates) == 1


def test_cli_make_tiny_depth_depth_and_render(tmp_path, monkeypatch, capsys):
    """In this process (`main([...])`, as tests/test_cli.py's make-tiny test): five
    subprocesses paid for torch and transformers five times; the installed entry point as a
    subprocess is test_cli_depth_without_a_model_or_with_bad_input_is_one_line's."""
    from d2v.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("D2V_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("D2V_DEPTH_MODEL", raising=False)

    def d2v_here(*args) -> str:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    out = d2v_here("models", "make-tiny-depth", tmp_path / "tiny")
    assert "D2V_DEPTH_MODEL=" in out and (tmp_path / "tiny/config.json").is_file()
    monkeypatch.setenv("D2V_DEPTH_MODEL", str(tmp_path / "tiny"))

    d2v_here("depth", EXAMPLE, "-o", "out/depth.png")
    written = cv2.imread(str(tmp_path / "out/depth.png"), cv2.IMREAD_UNCHANGED)
    photo = cv2.imread(str(EXAMPLE))
    assert written.dtype == np.uint16 and written.shape == photo.shape[:2]
    assert written.min() == 0 and written.max() == 65535

    def render(*flags, output):
        out = d2v_here("render", EXAMPLE, "--path", PATHS / "dolly_zoom.json", "--effect", "dolly_zoom", "--duration",
                       "0.5", "--fps", "8", "--size", "160x96", "-q", *flags, "-o", output)
        return json.loads(Path(out.split("manifest:")[1].split()[0].removeprefix("file://")).read_text())

    manifest = render("--depth", "auto", output="auto.mp4")
    assert (manifest["depth_source"], manifest["depth_model"]) == ("estimated", str(tmp_path / "tiny"))
    assert manifest["request"]["depth"] == "auto" and manifest["methods"]["depth"].startswith("estimated by")
    manifest = render("--depth", "none", output="none.mp4")
    assert (manifest["depth_source"], manifest["depth_model"], manifest["request"]["depth"]) == ("none", None, "none")
    manifest = render("--depth", "out/depth.png", output="user.mp4")  # what `d2v depth` wrote, given back
    assert (manifest["depth_source"], manifest["depth_model"]) == ("user", None)


def test_cli_depth_without_a_model_or_with_bad_input_is_one_line(tmp_path):
    for args, env, words in (
        ((EXAMPLE, "-o", "d.png"), {"D2V_DEPTH_MODEL": ""}, "D2V_DEPTH_MODEL is not set"),
        ((EXAMPLE, "-o", "d.png"), {"D2V_DEPTH_MODEL": str(tmp_path / "none-here")}, "no such directory"),
        ((tmp_path / "missing.jpg", "-o", "d.png"), {}, "image not found"),
        ((EXAMPLE, "-o", "d.jpg"), {}, "must be a .png"),
    ):
        r = d2v("depth", *args, cwd=tmp_path, env_extra=env)
        assert r.returncode == 2, r.stdout
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "d.png").exists()


def _animated_png() -> bytes:
    import io

    from PIL import Image

    frames = [Image.fromarray(np.full((32, 32), v, np.uint8)) for v in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize("depth, error, words", [
    (b"", "InvalidImageError", "depth map: the image is empty"),
    (png_bytes(np.zeros((12, 16), np.uint8)), "InvalidImageError", "depth map: image is 16x12"),
    (_animated_png(), "InvalidImageError", "depth map: the PNG has 3 frames"),
])
def test_a_bad_depth_file_is_refused_where_every_local_render_starts(tmp_path, depth, error, words):
    """s14 audit: `d2v render --depth EMPTY.png` (and a batch line) rendered without depth, and
    an animation or a header claiming gigapixels went to the decoder; the farm refused them."""
    from d2v.pipeline import render_job

    request = parse_request({"path": PATH, "effect": "parallax", "duration_s": 0.5, "fps": 2, "width": 64,
                             "height": 64})
    with pytest.raises(Exception) as info:
        render_job(png_bytes(textured_image(64, 48)), request, LocalStore(tmp_path / "data"), depth_bytes=depth)
    assert type(info.value).__name__ == error and words in str(info.value)
    assert not (tmp_path / "data/jobs").exists()  # refused before the job exists
