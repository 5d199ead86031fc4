"""Start-up: what `d2v` imports before it does anything. A flat camera render needs no torch,
transformers, Ray or scipy, and `d2v --help` not even numpy or pydantic; these tests fail
when someone adds a top-level import that pulls one of them in (`python -X importtime`
lists every module a process imports). Also: the numpy 1D filters that replaced
scipy.ndimage's in path planning give scipy's results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from d2v.upscale import nvidia_driver_present

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "ray", "scipy", "diffusers")


def imported_modules(args: list[str], tmp_path: Path) -> set[str]:
    """Every module `python -X importtime -m d2v.cli ARGS` imports (it must succeed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "D2V_DATA_DIR": str(tmp_path / "store")}
    env.pop("D2V_DEPTH_MODEL", None)
    env.pop("D2V_SVD_MODEL", None)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "d2v.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return set(lines[1:])  # the first is the header


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_a_flat_camera_render_imports_no_torch_transformers_ray_or_scipy(tmp_path):
    modules = imported_modules(
        ["render", "examples/hubble.jpg", "--path", "examples/paths/zoom_in.json", "--effect", "zoom_in",
         "--size", "128x72", "--duration", "0.5", "--fps", "8", "--depth", "none", "--no-cache", "-q",
         "-o", str(tmp_path / "out.mp4")], tmp_path)
    assert "d2v.pipeline" in modules and "av" in modules  # it did render
    assert heavy(modules) == [], "a flat camera render imported " + ", ".join(heavy(modules)[:8])
    assert "d2v.svd" not in modules and "d2v.depth" in modules  # the depth stage decides; no model loads
    assert (tmp_path / "out.mp4").stat().st_size > 0


@pytest.mark.parametrize("move", [
    ["--preset", "michael_bay"],  # handheld shake and motion blur: rotations slerped and turned
    ["--effect", "pan", "--shake", "0.5"],
    ["--camera", "CAMERA"],  # a typed camera: keyframes slerped
    ["--effect", "pan", "--look", "CUBE"],  # a .cube LUT off the unit domain, resampled
])
def test_shake_motion_blur_typed_cameras_and_cube_looks_import_no_scipy(tmp_path, move):
    """s18: their rotations were scipy's Rotation and Slerp, whose import (scipy.spatial, ~0.16 s)
    was most of such a render's start-up; now d2v.camera's own (the same matrices to 1e-12)."""
    camera = tmp_path / "camera.json"
    camera.write_text('{"keyframes": [{"t": 0, "pan": 0}, {"t": 0.5, "pan": 10, "tilt": -3, "roll": 200}]}')
    cube = tmp_path / "wide.cube"  # a LUT over [-0.1, 1.2]: resampled onto [0, 1] (once scipy.ndimage)
    cube.write_text("LUT_3D_SIZE 2\nDOMAIN_MIN -0.1 -0.1 -0.1\nDOMAIN_MAX 1.2 1.2 1.2\n"
                    + "".join(f"{r} {g} {b}\n" for b in (0, 1) for g in (0, 1) for r in (0, 1)))
    move = [str(camera) if a == "CAMERA" else str(cube) if a == "CUBE" else a for a in move]
    path = [] if "--camera" in move else ["--path", "examples/paths/orbit.json"]
    modules = imported_modules(
        ["render", "examples/hubble.jpg", *path, *move, "--size", "128x72", "--duration", "0.5", "--fps", "8",
         "--depth", "none", "--no-cache", "-q", "-o", str(tmp_path / "out.mp4")], tmp_path)
    assert "av" in modules and heavy(modules) == [], "imported " + ", ".join(heavy(modules)[:8])
    assert (tmp_path / "out.mp4").stat().st_size > 0


@pytest.mark.skipif(nvidia_driver_present(), reason="an NVIDIA driver: torch is asked about CUDA")
def test_upscale_on_a_machine_without_a_gpu_imports_no_torch(tmp_path):
    """s18: the automatic device imported torch (a second) to learn there was no CUDA device;
    without an NVIDIA driver the answer is known, and Lanczos + sharpening is OpenCV's."""
    from d2v.encode import encode_mp4, probe_video
    from tests.conftest import textured_image

    encode_mp4(iter([textured_image(160, 90, seed=i) for i in range(4)]), tmp_path / "in.mp4", 8)
    modules = imported_modules(["upscale", str(tmp_path / "in.mp4"), "--size", "320x180", "-o",
                                str(tmp_path / "out.mp4")], tmp_path)
    assert heavy(modules) == [], "imported " + ", ".join(heavy(modules)[:8])
    facts = probe_video(tmp_path / "out.mp4")
    assert (facts["width"], facts["height"], facts["frames"]) == (320, 180, 4)


def test_a_render_leaves_the_environment_as_it_found_it(tmp_path):
    """The render's imports start neither pydantic's plugin search nor OpenBLAS's thread pool
    (`_lean_imports`), and the environment is put back for what the process starts next."""
    code = (
        "import os, sys\n"
        "import d2v.cli\n"
        f"rc = d2v.cli.main(['render', 'examples/hubble.jpg', '--path', 'examples/paths/zoom_in.json', '--size', "
        f"'128x72', '--duration', '0.5', '--fps', '8', '--no-cache', '-q', '-o', {str(tmp_path / 'out.mp4')!r}])\n"
        "import ctypes\n"
        "blas = [line.split()[-1] for line in open('/proc/self/maps') if 'scipy_openblas' in line]\n"
        "threads = ctypes.CDLL(blas[0]).scipy_openblas_get_num_threads64_() if blas else 1\n"
        "print(rc, os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('PYDANTIC_DISABLE_PLUGINS'), threads)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "D2V_DATA_DIR": str(tmp_path / "store")}
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].split() == ["0", "None", "None", "1"]  # numpy's OpenBLAS on one thread
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_a_known_command_parses_as_with_every_command_built():
    """`main` builds only the named command's parser; it must take the same arguments, with the
    same defaults, as that command in the whole parser."""
    from d2v.cli import build_parser

    def actions(parser) -> dict:
        return {(a.dest, tuple(a.option_strings)): (a.default, a.nargs, a.required, repr(a.choices))
                for a in parser._actions}

    whole = build_parser()
    commands = whole._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        alone = build_parser(name)._subparsers._group_actions[0].choices
        assert list(alone) == [name]
        assert actions(alone[name]) == actions(parser), name
        assert alone[name].format_help() == parser.format_help(), name
    args = ["render", "x.jpg", "--path", "p.json", "--effect", "zoom_in", "--size", "128x72", "-o", "o.mp4"]
    assert build_parser("render").parse_args(args) == whole.parse_args(args)
    assert build_parser("no-such-command")._subparsers._group_actions[0].choices.keys() == commands.keys()


def test_help_imports_neither_numpy_nor_pydantic(tmp_path):
    modules = imported_modules(["--help"], tmp_path)
    assert {"numpy", "pydantic", "cv2", "av"}.isdisjoint(modules), sorted(
        m for m in modules if m.split(".")[0] in ("numpy", "pydantic", "cv2", "av"))


def test_a_d2v_process_still_finalizes_its_garbage_at_exit(tmp_path):
    """`d2v` freezes its objects at exit so Python's shutdown does not walk them all again; the
    garbage of that moment is collected first, so an object in a reference cycle still has its
    finalizer run (here: the one that writes a file)."""
    marker = tmp_path / "finalized"
    code = (
        "import d2v.cli, sys\n"
        "class Node:\n"
        "    def __del__(self):\n"
        f"        open({str(marker)!r}, 'w').write('done')\n"
        "a, b = Node(), Node()\n"
        "a.other, b.other = b, a\n"
        "del a, b\n"
        "import gc; gc.disable()  # nothing but the exit collects the cycle\n"
        "sys.exit(d2v.cli.main(['effects']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "zoom_in" in done.stdout
    assert marker.read_text() == "done"


@pytest.mark.parametrize("mode", ["nearest", "wrap"])
def test_the_path_filters_are_scipys(mode):
    from scipy import ndimage

    from d2v.pathshape import gaussian_filter1d, maximum_filter1d

    rng = np.random.default_rng(1)
    for n in (2, 5, 40, 97):
        x = rng.normal(size=n)
        xy = rng.normal(size=(n, 2))
        for sigma in (0.3, 1.0, 2.5, 30.0):
            assert np.allclose(gaussian_filter1d(x, sigma, mode=mode),
                               ndimage.gaussian_filter1d(x, sigma, mode=mode), rtol=0, atol=1e-12)
            assert np.allclose(gaussian_filter1d(xy, sigma, axis=0, mode=mode),
                               ndimage.gaussian_filter1d(xy, sigma, axis=0, mode=mode), rtol=0, atol=1e-12)
        for size in (1, 3, 9, 41):
            assert np.array_equal(maximum_filter1d(x, size, mode=mode), ndimage.maximum_filter1d(x, size, mode=mode))
