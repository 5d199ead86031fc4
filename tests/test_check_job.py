"""`d2v check` as a user runs it after `d2v render` (issue 24): every setting from the job's
manifest (`--job`, `--manifest`), every render flag accepted, and the path held to the
drawing: a path outside the photo is refused before any job exists, and a plan the clamp had
to move far from the drawing is `clamped`, never `followed`. Real renders (small), the real
CLI in a subprocess, a local store in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/hubble.jpg"  # 1000x872
ZOOM_PATH = REPO / "examples/paths/zoom_in.json"
SMALL = ["--duration", "1", "--fps", "12", "--size", "320x180"]


def d2v(*args, cwd: Path, data: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("D2V_")}
    if data is not None:
        env["D2V_DATA_DIR"] = str(data)
    return subprocess.run([str(Path(sys.executable).parent / "d2v"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def job_of(render: subprocess.CompletedProcess) -> str:
    return render.stdout.split(", job ")[1].split(")")[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("check") / "data"


def test_check_job_takes_the_preset_and_every_setting_from_the_manifest(store, tmp_path):
    render = d2v("render", EXAMPLE, "--path", ZOOM_PATH, "--preset", "eye_zoom", *SMALL, "-o", tmp_path / "a.mp4",
                 cwd=tmp_path, data=store)
    assert render.returncode == 0, render.stderr
    job = job_of(render)
    # --job: effect, end zoom, speed ramp and look from the preset, as rendered.
    check = d2v("check", "--job", job, cwd=tmp_path, data=store)
    assert check.returncode == 0 and check.stdout.startswith("path followed: "), (check.stdout, check.stderr)
    manifest = store / "jobs" / job / "manifest.json"
    by_file = d2v("check", "--manifest", manifest, "--json", cwd=tmp_path)  # no store needed: the files beside it
    assert by_file.returncode == 0 and json.loads(by_file.stdout)["verdict"] == "followed", by_file.stderr
    # The render's own flags, look and post effects included, are accepted (the look does not move the camera).
    flags = d2v("check", tmp_path / "a.mp4", "--image", EXAMPLE, "--path", ZOOM_PATH, "--preset", "eye_zoom",
                "--look", "noir", "--post", "glitch", "--glitch-amount", "0.1", cwd=tmp_path)
    assert flags.returncode == 0 and flags.stdout.startswith("path followed: "), (flags.stdout, flags.stderr)
    # Without the preset, the flags describe another move: the check says so.
    plain = d2v("check", tmp_path / "a.mp4", "--image", EXAMPLE, "--path", ZOOM_PATH, cwd=tmp_path)
    assert plain.returncode == 1 and plain.stdout.startswith("path missed: "), plain.stdout
    # From another directory the default store is not there: one line, and no ./d2v-data made.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["check", "--job", job], ["report"]):
        gone = d2v(*command, cwd=elsewhere)
        assert gone.returncode == 2 and "no store at" in gone.stderr and gone.stderr.count("\n") == 1, gone.stderr
    assert not (elsewhere / "d2v-data").exists()


def test_a_path_outside_the_photo_is_refused_and_a_clamped_one_is_not_followed(store, tmp_path):
    outside = tmp_path / "outside.json"  # x 1500..2000 on a 1000 px wide photo
    outside.write_text(json.dumps([{"x": 1500 + 50 * i, "y": 300} for i in range(11)]))
    before = set((store / "jobs").iterdir()) if (store / "jobs").exists() else set()
    refused = d2v("render", EXAMPLE, "--path", outside, *SMALL, "-o", tmp_path / "o.mp4", cwd=tmp_path, data=store)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "100% of it lies outside the photo" in refused.stderr and "--allow-borders" in refused.stderr
    assert (set((store / "jobs").iterdir()) if (store / "jobs").exists() else set()) == before  # no job

    # Along the top edge: the view is kept inside, a quarter of its width below the drawing.
    edge = tmp_path / "edge.json"
    edge.write_text(json.dumps([{"x": 300 + 40 * i, "y": 20} for i in range(11)]))
    render = d2v("render", EXAMPLE, "--path", edge, "--effect", "zoom_in", *SMALL, "-o", tmp_path / "e.mp4",
                 cwd=tmp_path, data=store)
    assert render.returncode == 0, render.stderr
    assert "\npath clamped: the plan kept the view inside the photo" in render.stdout, render.stdout
    assert "--allow-borders" in render.stdout  # the note names the flag
    check = d2v("check", "--job", job_of(render), "--json", cwd=tmp_path, data=store)
    report = json.loads(check.stdout)
    assert check.returncode == 4 and report["verdict"] == "clamped", check.stdout
    assert "of the view width from the path as drawn" in report["reason"]
    # Measured against the plan, the video did follow it: the clamp is what is reported.
    assert report["worst_center_pct"] < 3.0
