"""The `d2v` command as a user runs it: a real subprocess of the installed entry point (one
test, of the commands that load a generative model, runs `main` in this process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from d2v.encode import probe_video
from d2v.models import EFFECTS

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/hubble.jpg"
PATHS = REPO / "examples/paths"


def d2v(*args, cwd, env_extra=None):
    exe = shutil.which("d2v", path=str(Path(sys.executable).parent)) or "d2v"
    env = {**os.environ, "D2V_DATA_DIR": str(Path(cwd) / "data"), **(env_extra or {})}
    env.pop("D2V_S3_ENDPOINT", None)
    return subprocess.run([exe, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_render_example_writes_video_poster_and_manifest(tmp_path):
    r = d2v("render", EXAMPLE, "--path", PATHS / "zoom_in.json", "--effect", "zoom_in", "--duration", "1",
            "--fps", "12", "--size", "320x180", "-o", "out/clip.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = probe_video(tmp_path / "out/clip.mp4")
    assert (info["frames"], info["width"], info["height"]) == (12, 320, 180)
    assert "poster:" in r.stdout and "manifest:" in r.stdout
    assert "\npath followed: end " in r.stdout and "(12/12 frames located)" in r.stdout
    manifest_path = Path(r.stdout.split("manifest:")[1].split()[0].removeprefix("file://"))
    manifest = json.loads(manifest_path.read_text())
    assert manifest["effect"] == "zoom_in" and manifest["frames"] == 12
    assert {"trajectory", "base", "encode", "total"} <= set(manifest["stage_seconds"])
    assert (manifest_path.parent / "poster.jpg").read_bytes()[:2] == b"\xff\xd8"
    # Same image and request again: served from the store, not rendered again.
    again = d2v("render", EXAMPLE, "--path", PATHS / "zoom_in.json", "--effect", "zoom_in", "--duration", "1",
                "--fps", "12", "--size", "320x180", "-o", "out/again.mp4", cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / "out/again.mp4").read_bytes() == (tmp_path / "out/clip.mp4").read_bytes()


def test_effects_lists_every_effect_with_a_description(tmp_path):
    r = d2v("effects", cwd=tmp_path)
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(EFFECTS)
    assert all(len(line.split()) > 3 for line in lines)


def test_trajectory_prints_cameras_as_json(tmp_path):
    r = d2v("trajectory", EXAMPLE, "--path", PATHS / "pan.json", "--effect", "pan", "--duration", "2",
            "--fps", "10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    traj = json.loads(r.stdout)
    assert traj["effect"] == "pan" and len(traj["frames"]) == 20
    assert set(traj["frames"][0]) >= {"fx", "fy", "cx", "cy", "rotation", "translation", "fov_deg"}


def _bad_path(tmp_path, name: str, content: str) -> Path:
    p = tmp_path / name
    p.write_text(content)
    return p


@pytest.mark.parametrize(
    "args, words",
    [
        (["--effect", "warp_drive"], "unknown effect 'warp_drive'"),
        (["--duration", "99"], "duration_s"),
        (["--fps", "0"], "fps"),
        (["--size", "1023x576"], "even"),
        (["--size", "big"], "size must look like 1024x576"),
        (["--backend", "svd"], "D2V_SVD_MODEL"),
        (["--path", "{bad1}"], "at least 2 distinct points"),
        (["--path", "{bad2}"], "finite"),
        (["--path", "{bad3}"], "not valid JSON"),
        (["--path", "missing.json"], "path file not found"),
        (["IMAGE=notes.txt"], "not an image"),
        (["IMAGE=missing.png"], "image not found"),
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(tmp_path, args, words):
    bad = {
        "{bad1}": _bad_path(tmp_path, "one.json", '{"points": [{"x": 1, "y": 1}, {"x": 1, "y": 1}]}'),
        "{bad2}": _bad_path(tmp_path, "nan.json", '[{"x": NaN, "y": 1}, {"x": 2, "y": 2}]'),
        "{bad3}": _bad_path(tmp_path, "broken.json", '{"points": [ oops'),
    }
    (tmp_path / "notes.txt").write_text("not a picture")
    image, rest = EXAMPLE, []
    path = PATHS / "zoom_in.json"
    it = iter(args)
    for a in it:
        if a.startswith("IMAGE="):
            image = a.split("=", 1)[1]
        elif a == "--path":
            v = next(it)
            path = bad.get(v, v)
        else:
            rest.append(a)
    r = d2v("render", image, "--path", path, *rest, "-o", "x.mp4", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_check_of_a_depth_clip_without_its_depth_map_says_to_give_it(tmp_path):
    """s17 note: a parallax rendered with a depth map, checked without it, was 'missed' (another
    planned move, frames located as a flat picture) with no word of why."""
    import cv2

    photo = cv2.imread(str(EXAMPLE))
    near = cv2.GaussianBlur(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), (0, 0), 4) > 20  # the galaxies near
    cv2.imwrite(str(tmp_path / "depth.png"), cv2.GaussianBlur(near.astype(np.uint8) * 255, (0, 0), 1.0))
    move = ["--image", EXAMPLE, "--path", PATHS / "parallax.json", "--effect", "parallax"]
    r = d2v("render", *move[1:], "--depth", "depth.png", "--size", "384x216", "--duration", "2", "--fps", "12",
            "-o", "clip.mp4", cwd=tmp_path)
    assert r.returncode == 0 and "path followed" in r.stdout, (r.stdout, r.stderr)
    note = "note: checked without a depth map: if the video was rendered with one"
    without = d2v("check", "clip.mp4", *move, cwd=tmp_path)
    assert without.returncode != 0 and note in without.stderr, (without.stdout, without.stderr)
    given = d2v("check", "clip.mp4", *move, "--depth", "depth.png", cwd=tmp_path)
    assert given.returncode == 0 and "path followed" in given.stdout and note not in given.stderr, given.stderr


def test_a_depth_map_made_without_the_photos_exif_turn_is_refused(tmp_path):
    """A phone photo stored landscape with EXIF orientation 6 is shown (and rendered) portrait;
    a depth tool that ignored the tag made a landscape map. Stretched onto the portrait photo,
    its edges would all be misplaced: exit 2, one line, before any work."""
    import io

    import cv2
    from PIL import Image

    from tests.conftest import textured_image

    stored = textured_image(320, 200, seed=3)  # as the sensor wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: 200x320
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", exif=exif.tobytes())
    (tmp_path / "phone.jpg").write_bytes(buf.getvalue())
    gray = cv2.cvtColor(stored, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "depth.png"), gray)  # the stored pixels' depth: 320x200, landscape
    r = d2v("render", "phone.jpg", "--path", PATHS / "parallax.json", "--effect", "parallax", "--depth", "depth.png",
            "--size", "128x72", "--duration", "0.5", "--fps", "4", "-o", "x.mp4", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "depth map is 320x200 (landscape) and the photo is 200x320 (portrait" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "data/jobs").exists()  # no job begun


@pytest.mark.parametrize("command", [
    ["render", EXAMPLE, "--path", PATHS / "pan.json", "--size", "64x64", "--duration", "0.5", "--fps", "2"],
    ["interpolate", REPO / "docs/page-laptop.jpg", "--fps", "4"],
])
def test_an_output_that_cannot_be_written_is_the_callers_one_line_error(tmp_path, command):
    """s14 audit: -o into a folder that cannot be made was an internal error (exit 1), after the work."""
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    r = d2v(*command, "-o", tmp_path / "notes.txt/out/clip.mp4", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "cannot write" in r.stderr and "notes.txt" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_check_of_a_file_that_is_no_video_says_so(tmp_path):
    """s14 audit: it said "invalid request: width: Input should be greater than or equal to 64"."""
    (tmp_path / "notes.jpg").write_text("not a video")  # (read as an MJPEG stream of no size)
    r = d2v("check", tmp_path / "notes.jpg", "--image", EXAMPLE, "--path", PATHS / "pan.json", cwd=tmp_path)
    assert r.returncode == 2 and "notes.jpg: no video picture could be read" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_models_make_tiny_check_and_svd_render(tmp_path, monkeypatch, capsys):
    """In this process (`main([...])`): the three commands import torch and diffusers, which
    this test process has already loaded (three subprocesses paid for them three times); the
    installed entry point as a subprocess is the other tests' here. One attempt
    (--no-auto-correct): the retries a random model's miss sets off are
    test_fidelity.py::test_svd_auto_correct_lowers_the_strength_and_ships_the_best_attempt's."""
    from d2v.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("D2V_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("D2V_SVD_MODEL", raising=False)
    assert main(["models", "make-tiny", str(tmp_path / "tiny")]) == 0, capsys.readouterr().err
    assert (tmp_path / "tiny/model_index.json").is_file()
    monkeypatch.setenv("D2V_SVD_MODEL", str(tmp_path / "tiny"))
    capsys.readouterr()
    assert main(["models", "check"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "loads" in out and "device: cpu" in out and "num_frames: 6" in out
    code = main(["render", str(EXAMPLE), "--path", str(PATHS / "pan.json"), "--effect", "pan", "--backend", "svd",
                 "--duration", "1", "--fps", "8", "--size", "160x96", "--no-auto-correct", "-o", "svd.mp4"])
    assert code == 0, capsys.readouterr().err
    info = probe_video(tmp_path / "svd.mp4")
    assert (info["frames"], info["width"], info["height"]) == (8, 160, 96)


def test_models_check_without_a_model_says_which_setting(tmp_path):
    r = d2v("models", "check", cwd=tmp_path)
    assert r.returncode == 2 and "D2V_SVD_MODEL" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = d2v("models", "check", cwd=tmp_path, env_extra={"D2V_SVD_MODEL": str(tmp_path / "missing")})
    assert r.returncode == 2 and "D2V_SVD_MODEL" in r.stderr and "Traceback" not in r.stderr


def test_serve_hands_every_app_the_malloc_settings_that_keep_its_memory_flat(tmp_path):
    """glibc's arenas and a fixed mmap threshold (bench/RESULTS.md: the soak): `d2v serve`'s
    config carries them to every replica, unless the caller set its own."""
    import yaml

    r = d2v("serve", "--print-config", cwd=tmp_path, env_extra={"D2V_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert r.returncode == 0, r.stderr
    for app in yaml.safe_load(r.stdout)["applications"]:
        env = app["runtime_env"]["env_vars"]
        assert (env["MALLOC_ARENA_MAX"], env["MALLOC_MMAP_THRESHOLD_"]) == ("2", "131072")
    mine = d2v("serve", "--print-config", cwd=tmp_path,
               env_extra={"D2V_REDIS_URL": "redis://127.0.0.1:1/0", "MALLOC_ARENA_MAX": "4"})
    assert yaml.safe_load(mine.stdout)["applications"][0]["runtime_env"]["env_vars"]["MALLOC_ARENA_MAX"] == "4"


def test_a_render_stopped_by_sigterm_fails_its_job_and_leaves_no_file(tmp_path):
    """`kill` (a service manager, a container stopping) is handled as Ctrl-C is: the job is
    failed with the reason, no temporary video is left beside the output, and rendering again
    starts at once. (SIGTERM's default would leave the job 'running' and a .part file behind.)"""
    import signal
    import time

    exe = shutil.which("d2v", path=str(Path(sys.executable).parent)) or "d2v"
    env = {**os.environ, "D2V_DATA_DIR": str(tmp_path / "data")}
    env.pop("D2V_S3_ENDPOINT", None)
    args = [exe, "render", str(EXAMPLE), "--path", str(PATHS / "pan.json"), "--effect", "pan", "--size", "640x360",
            "--duration", "20", "--fps", "24", "--motion-blur", "1", "-q", "--no-cache", "-o", "out/clip.mp4"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (found := list((tmp_path / "data").glob("jobs/*/status.json"))) or \
            json.loads(found[0].read_text())["status"] != "running":
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.0)  # into the frames
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip() == "d2v: stopped (SIGTERM)", (proc.returncode, err)
    status = json.loads(found[0].read_text())
    assert status["status"] == "failed" and status["error"] == "stopped (SIGTERM)", status
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
    short = [a if a != "20" else "1" for a in args]
    again = subprocess.run(short, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert probe_video(tmp_path / "out/clip.mp4")["frames"] == 24


def test_a_killed_renders_job_is_taken_over_at_once_on_the_same_machine(tmp_path):
    """SIGKILL leaves no chance to clean up: the job stays 'running' with a fresh heartbeat. Its
    owner is a process of this machine that no longer exists, so the next render takes the job
    over at once instead of refusing it for the rest of the lease."""
    import signal
    import time

    exe = shutil.which("d2v", path=str(Path(sys.executable).parent)) or "d2v"
    env = {**os.environ, "D2V_DATA_DIR": str(tmp_path / "data"), "D2V_LEASE_S": "600"}
    env.pop("D2V_S3_ENDPOINT", None)
    args = [exe, "render", str(EXAMPLE), "--path", str(PATHS / "pan.json"), "--effect", "pan", "--size", "320x180",
            "--duration", "6", "--fps", "24", "--motion-blur", "1", "-q", "-o", "out/clip.mp4"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (found := list((tmp_path / "data").glob("jobs/*/status.json"))) or \
            json.loads(found[0].read_text())["status"] != "running":
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(found[0].read_text())["status"] == "running"
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(found[0].read_text())["status"] == "succeeded"
    assert probe_video(tmp_path / "out/clip.mp4")["frames"] == 144


@pytest.mark.parametrize("case, words", [
    ("image ''", "image is an empty name"),
    ("-o ''", "--output is an empty name"),
    ("--depth ''", "--depth is an empty name"),
    ("camera null", "holds null"),
    ("subjects {}", "holds no subjects"),
    ("canvas 1e308", "path.canvas.width: Input should be less than or equal to 1000000000"),
    ("polygon 1e308", "invalid subject region: a point lies 1e+308 pixels from the image"),
    ("look 17 MiB", "the limit is 16 MiB"),
    ("check --picture x.mp4", "--picture must name a .png"),
    ("check --samples 0", "--samples must be 2..240"),
    ("check --manifest {}", "is not a d2v manifest: job_id: is required; request: is required"),
    ("make-tiny-depth FILE", "is a file: give a folder"),
    ("make-tiny-depth ''", "directory is an empty name: give a folder"),
    ("path t backwards", "'t' must not decrease: point 1 has t=0 after t=1"),
])
def test_more_bad_input_gives_one_line_and_exit_2(tmp_path, case, words):
    """An audit's findings: each once a traceback, an 'internal error', a wrong message or
    (an empty name read as '.') work done in the current folder."""
    (tmp_path / "null.json").write_text("null")
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "canvas.json").write_text('{"canvas": {"width": 1e308, "height": 1e308}, '
                                          '"points": [{"x": 200, "y": 200}, {"x": 800, "y": 700}]}')
    (tmp_path / "polygon.json").write_text('{"subjects": [{"region": {"polygon": [{"x": 1e308, "y": 0}, {"x": 10, "y": 0}, '
                                           '{"x": 10, "y": 10}]}, "path": [{"x": 100, "y": 100}, {"x": 150, "y": 120}]}]}')
    (tmp_path / "backwards.json").write_text('[{"x": 20, "y": 20, "t": 1}, {"x": 80, "y": 70, "t": 0}]')
    with open(tmp_path / "big.cube", "w") as f:
        f.write("LUT_3D_SIZE 256\n")
        f.truncate(17 * 2**20)
    path = str(PATHS / "zoom_in.json")
    render = ["render", EXAMPLE, "--size", "128x96", "--duration", "1", "--fps", "8"]
    check = ["check", "clip.mp4", "--image", EXAMPLE, "--path", path]
    args = {
        "image ''": ["render", "", "--path", path, "-o", "x.mp4"],
        "-o ''": [*render, "--path", path, "-o", ""],
        "--depth ''": [*render, "--path", path, "--depth", "", "-o", "x.mp4"],
        "camera null": [*render, "--camera", "null.json", "-o", "x.mp4"],
        "subjects {}": [*render, "--subjects", "empty.json", "-o", "x.mp4"],
        "canvas 1e308": [*render, "--path", "canvas.json", "-o", "x.mp4"],
        "polygon 1e308": [*render, "--subjects", "polygon.json", "-o", "x.mp4"],
        "look 17 MiB": [*render, "--path", path, "--look", "big.cube", "-o", "x.mp4"],
        "check --picture x.mp4": [*check, "--picture", "x.mp4"],
        "check --samples 0": [*check, "--samples", "0"],
        "check --manifest {}": ["check", "clip.mp4", "--manifest", "empty.json"],
        "make-tiny-depth FILE": ["models", "make-tiny-depth", "null.json"],
        "make-tiny-depth ''": ["models", "make-tiny-depth", ""],
        "path t backwards": [*render, "--path", "backwards.json", "-o", "x.mp4"],
    }[case]
    if case.startswith("check"):
        assert d2v(*render, "--path", path, "-o", "clip.mp4", cwd=tmp_path).returncode == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    r = d2v(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == [n for n in before if n != "data"]


def test_a_bom_in_json_and_latin1_in_a_cube_title_are_read(tmp_path):
    """Windows editors start JSON with a byte-order mark; older LUT tools write a TITLE in
    Latin-1. Both were refused ("Unexpected UTF-8 BOM", "not a text file")."""
    path = (PATHS / "zoom_in.json").read_text()
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + path.encode())
    cube = ['TITLE "caf\xe9"', "LUT_3D_SIZE 2"] + [f"{r} {g} {b}" for b in (0, 1) for g in (0, 1) for r in (0, 1)]
    (tmp_path / "title.cube").write_bytes("\n".join(cube).encode("latin-1"))
    r = d2v("render", EXAMPLE, "--path", "bom.json", "--look", "title.cube", "--size", "128x96", "--duration", "1",
            "--fps", "8", "-o", "x.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert probe_video(tmp_path / "x.mp4")["frames"] == 8


def test_a_job_whose_rerun_was_stopped_is_still_checked_by_its_video(tmp_path):
    """A render again (--no-cache) stopped half way fails the job, but the video it had is
    still in the store: `check --job` checks that one ('job is failed: there is no video to
    check yet' before)."""
    import signal
    import time

    exe = shutil.which("d2v", path=str(Path(sys.executable).parent)) or "d2v"
    env = {**os.environ, "D2V_DATA_DIR": str(tmp_path / "data")}
    env.pop("D2V_S3_ENDPOINT", None)
    args = [exe, "render", str(EXAMPLE), "--path", str(PATHS / "pan.json"), "--effect", "pan", "--size", "320x180",
            "--duration", "10", "--fps", "24", "--motion-blur", "1", "-q", "-o", "out/clip.mp4"]
    first = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    job = first.stdout.split("job ")[1].split(")")[0]
    status_file = tmp_path / "data" / "jobs" / job / "status.json"
    proc = subprocess.Popen([*args, "--no-cache"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while json.loads(status_file.read_text())["status"] != "running":
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert json.loads(status_file.read_text())["status"] == "failed"
    r = d2v("check", "--job", job, cwd=tmp_path)
    assert r.returncode == 0 and "path followed" in r.stdout, (r.stdout, r.stderr)
