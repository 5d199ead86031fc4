"""The preset library (d2v/presets.yaml, issue 15): every preset is a valid request that
renders through the real camera pipeline, the request's own fields win over it, and the
CLI and batch surfaces name presets, looks and post effects the same way.

Renders are small and short (128x72 at 6 fps) to keep this fast; the move is the preset's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from d2v.errors import InvalidRequestError
from d2v.models import LOOKS, POST_EFFECTS, RenderRequest, parse_request
from d2v.presets import presets
from tests.conftest import textured_image
from tests.test_images import png_bytes

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/hubble.jpg"
PATH_FILE = REPO / "examples/paths/zoom_in.json"
REQUIRED = ("hitchcock", "michael_bay", "wes_anderson", "christopher_nolan", "earth_zoom_out", "eye_zoom",
            "product_orbit", "parallax_slide")
# A slightly curved stroke across the middle, in canvas units.
STROKE = {"canvas": {"width": 320, "height": 180},
          "points": [{"x": 80 + 6 * i, "y": 100 - 0.05 * i * i} for i in range(30)]}
SMALL = {"width": 128, "height": 72, "fps": 6}


def test_the_library_names_at_least_24_presets_each_a_bundle_with_one_line_saying_what_is_seen():
    table = presets()
    assert len(table) >= 24 and set(REQUIRED) <= set(table), sorted(table)
    fields = set(RenderRequest.model_fields)
    for name, entry in table.items():
        description, settings = entry["description"], entry["settings"]
        assert 20 < len(description) < 120 and "\n" not in description, (name, description)
        assert set(settings) <= fields and "effect" in settings and "duration_s" in settings, (name, settings)
        assert set(settings.get("post", [])) <= set(POST_EFFECTS), name
        assert settings.get("look") in LOOKS, name
        # The page's duration slider: 1..20 s in 0.5 s steps.
        assert 1 <= settings["duration_s"] <= 20 and settings["duration_s"] * 2 == int(settings["duration_s"] * 2)
    assert len({e["description"] for e in table.values()}) == len(table)  # no two say the same


def test_every_preset_expands_to_a_valid_request_and_renders(tmp_path):
    from d2v.encode import probe_video
    from d2v.pipeline import render_job
    from d2v.store import LocalStore

    store = LocalStore(tmp_path / "store")
    image = png_bytes(textured_image(320, 180, seed=5))
    for name, entry in presets().items():
        request = parse_request({"path": STROKE, "preset": name, **SMALL})
        for field, value in entry["settings"].items():
            assert getattr(request, field) == value, (name, field)
        out = tmp_path / f"{name}.mp4"
        manifest = render_job(image, request, store, output_path=out)
        assert manifest.request.preset == name and manifest.effect == entry["settings"]["effect"], name
        assert manifest.request.look == entry["settings"]["look"], name
        frames = round(entry["settings"]["duration_s"] * SMALL["fps"])
        for _ in range(entry["settings"].get("post", []).count("boomerang")):
            frames = 2 * frames - 1  # out and back, the turn frame once
        info = probe_video(out)
        assert (info["frames"], info["width"], info["height"]) == (frames, 128, 72), (name, info)


def test_the_request_own_fields_override_the_preset():
    request = parse_request({"path": STROKE, "preset": "michael_bay", "duration_s": 1.5, "shake": 0.0,
                             "look": "noir", "post": ["reverse"]})
    assert (request.duration_s, request.shake, request.look, request.post) == (1.5, 0.0, "noir", ["reverse"])
    assert (request.effect, request.speed_ramp, request.motion_blur) == ("orbit", 0.7, 0.5)  # the rest: the preset's
    # An empty post list is an explicit choice too: no post effects, whatever the preset says.
    assert parse_request({"path": STROKE, "preset": "christopher_nolan", "post": []}).post == []


@pytest.mark.parametrize("field, value, listed", [
    ("preset", "spielberg", ("hitchcock", "parallax_slide", "bullet_time")),
    ("look", "sepia", tuple(LOOKS)),
    ("post", ["slowmo"], tuple(POST_EFFECTS)),
])
def test_an_unknown_name_is_a_clear_error_listing_the_valid_ones(field, value, listed):
    with pytest.raises(InvalidRequestError) as err:
        parse_request({"path": STROKE, field: value})
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in listed), message


# --- the CLI -----------------------------------------------------------------------------

IDENTITY_CUBE = "TITLE \"identity\"\nLUT_3D_SIZE 2\n" + "".join(
    f"{r} {g} {b}\n" for b in (0.0, 1.0) for g in (0.0, 1.0) for r in (0.0, 1.0))


def d2v(*args, cwd):
    exe = shutil.which("d2v", path=str(Path(sys.executable).parent)) or "d2v"
    env = {**os.environ, "D2V_DATA_DIR": str(Path(cwd) / "data")}
    env.pop("D2V_S3_ENDPOINT", None)
    return subprocess.run([exe, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _manifest(stdout: str) -> dict:
    return json.loads(Path(stdout.split("manifest:")[1].split()[0].removeprefix("file://")).read_text())


def test_cli_lists_presets_and_looks(tmp_path):
    r = d2v("presets", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(presets()) and len(lines) >= 24
    assert lines[0].split(None, 1)[1] == presets()["hitchcock"]["description"]
    r = d2v("looks", cwd=tmp_path)
    assert [line.split()[0] for line in r.stdout.strip().splitlines()] == list(LOOKS)


def test_cli_render_with_a_preset_the_flags_given_override_and_a_cube_look_travels_with_the_job(tmp_path):
    cube = tmp_path / "grade.cube"
    cube.write_text(IDENTITY_CUBE)
    r = d2v("render", EXAMPLE, "--path", PATH_FILE, "--preset", "michael_bay", "--duration", "1", "--fps", "6",
            "--size", "128x72", "--look", cube, "--post", "boomerang", "--post", "reverse", "-o", "out.mp4",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = _manifest(r.stdout)
    request = manifest["request"]
    assert request["preset"] == "michael_bay" and manifest["effect"] == "orbit"
    assert (request["duration_s"], request["look"], request["post"]) == (1.0, "grade.cube", ["boomerang", "reverse"])
    assert (request["shake"], request["speed_ramp"], request["motion_blur"]) == (0.25, 0.7, 0.5)  # not given: preset's
    stored = tmp_path / "data/jobs" / manifest["job_id"] / "look.cube"
    assert stored.read_text() == IDENTITY_CUBE

    # The trajectory command takes the preset too: its effect, unless --effect says otherwise.
    r = d2v("trajectory", EXAMPLE, "--path", PATH_FILE, "--preset", "hitchcock", "--fps", "4", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["effect"] == "dolly_zoom" and len(json.loads(r.stdout)["frames"]) == 16


@pytest.mark.parametrize("flags, words", [
    (["--preset", "spielberg"], ["unknown preset 'spielberg'", "hitchcock", "bullet_time"]),
    (["--look", "sepia"], ["unknown look 'sepia'", "teal_orange", ".cube"]),
    (["--post", "slowmo"], ["'slowmo'", "mirror_fold", "tenet"]),
    (["--look", "missing.cube"], ["look file not found: missing.cube"]),
])
def test_cli_unknown_names_are_one_line_listing_the_valid_ones_exit_2(tmp_path, flags, words):
    r = d2v("render", EXAMPLE, "--path", PATH_FILE, *flags, "-o", "out.mp4", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("d2v: error: "), r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert not (tmp_path / "out.mp4").exists()


# --- batch -------------------------------------------------------------------------------


def test_batch_lines_take_presets_and_cube_looks_from_a_path_or_s3_a_bad_one_fails_alone(seaweed, tmp_path):
    from d2v.batch import Options, run_batch
    from d2v.s3store import S3Store

    env = seaweed.env("batch-presets")
    store = S3Store.from_env(env)
    store.put_bytes("luts/grade.cube", IDENTITY_CUBE.encode())
    (tmp_path / "photo.png").write_bytes(png_bytes(textured_image(320, 180, seed=6)))
    (tmp_path / "local.cube").write_text(IDENTITY_CUBE.replace("identity", "local"))
    lines = [
        {"id": "bay", "image": "photo.png", "path": STROKE, "preset": "michael_bay", "duration_s": 1, **SMALL,
         "look": "local.cube", "post": ["reverse"]},
        {"id": "s3look", "image": "photo.png", "path": STROKE, "preset": "eye_zoom", **SMALL,
         "look": f"s3://{store.bucket}/luts/grade.cube"},
        {"id": "nolut", "image": "photo.png", "path": STROKE, "look": "missing.cube", **SMALL},
        {"id": "nos3lut", "image": "photo.png", "path": STROKE, "look": f"s3://{store.bucket}/luts/none.cube", **SMALL},
        {"id": "nopreset", "image": "photo.png", "path": STROKE, "preset": "spielberg", **SMALL},
    ]
    jobs = tmp_path / "looks.jsonl"
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = run_batch(jobs, env, Options(use_ray=False), base_dir=tmp_path)
    assert [(r.id, r.status) for r in rows] == [("bay", "succeeded"), ("s3look", "succeeded"), ("nolut", "failed"),
                                               ("nos3lut", "failed"), ("nopreset", "failed")], rows
    assert "look 'missing.cube' not found" in rows[2].error and "luts/none.cube not found" in rows[3].error
    assert "unknown preset 'spielberg'" in rows[4].error and "hitchcock" in rows[4].error
    bay = json.loads(store.get_bytes("jobs/bay/manifest.json"))["request"]
    assert (bay["preset"], bay["duration_s"], bay["shake"], bay["look"], bay["post"]) == (
        "michael_bay", 1.0, 0.25, "local.cube", ["reverse"])
    assert store.get_bytes("jobs/bay/look.cube").decode() == IDENTITY_CUBE.replace("identity", "local")
    assert store.get_bytes("jobs/s3look/look.cube").decode() == IDENTITY_CUBE
    assert json.loads(store.get_bytes("jobs/s3look/manifest.json"))["request"]["end_zoom"] == 12.0
