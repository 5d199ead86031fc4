"""The interpolate stage: flow interpolation against blending on a moving scene, timing
and counts for non-integer ratios, keyframes passing through, loops, exact camera
in-betweens, the learned-model hook, and `d2v interpolate` on an MP4."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from d2v.encode import decode_video, decode_video_times, encode_mp4, probe_video
from d2v.errors import ModelNotConfiguredError
from d2v.interpolate import (
    camera_inbetweens,
    interpolate_camera_frames,
    interpolate_frames,
    output_count,
    positions_for,
    positions_on_clock,
)
from tests.conftest import write_mp4

D2V = str(Path(sys.executable).parent / "d2v")

BG = skimage.data.coffee()  # real photos, so the flow sees real texture
FG = skimage.data.astronaut()[30:130, 180:280]


def scene(t: float, w: int = 320, h: int = 192) -> np.ndarray:
    """A panning background (3 px per unit of time) and a photo patch moving across it
    faster (10 px right, 2 px down): motion with occlusion and disocclusion."""
    bx = int(round(40 + 3 * t))
    f = BG[60 : 60 + h, bx : bx + w].copy()
    ox, oy = int(round(60 + 10 * t)), int(round(50 + 2 * t))
    f[oy : oy + 100, ox : ox + 100] = FG
    return f


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


@pytest.fixture(scope="module")
def moving():
    return np.stack([scene(t) for t in range(9)])  # ground truth at every time step


def test_flow_beats_blending_on_a_moving_scene(moving):
    keys = moving[::2]  # drop every other frame, interpolate back
    flow = interpolate_frames(keys, 1, 2, method="flow")
    blend = interpolate_frames(keys, 1, 2, method="blend")
    p_flow = np.mean([psnr(flow[i], moving[i]) for i in range(1, 9, 2)])
    p_blend = np.mean([psnr(blend[i], moving[i]) for i in range(1, 9, 2)])
    # Measured: flow 31.8 dB, blend 19.6 dB (+12.2). Assert most of that margin.
    assert p_flow >= p_blend + 7.0, (p_flow, p_blend)
    assert p_flow >= 27.0


def test_numpy_keeps_the_last_of_repeated_writes():
    """d2v.flow's forward projection relies on it for its collision priority."""
    a = np.full(4, -1, np.int32)
    idx = np.array([2, 0, 2, 2, 0, 3] * 1000)
    a[idx] = np.arange(idx.size, dtype=np.int32)
    assert a.tolist() == [idx.size - 2, -1, idx.size - 3, idx.size - 1]


def test_keyframes_pass_through_unchanged(moving):
    keys = moving[::2]
    out = interpolate_frames(keys, 12, 36, method="flow")
    assert len(out) == output_count(5, 12, 36) == 13
    for k in range(5):
        assert np.array_equal(out[3 * k], keys[k])


def object_x(frame: np.ndarray, t_ref: np.ndarray) -> float:
    """x of the moving patch, found by matching the patch along its row band."""
    import cv2

    res = cv2.matchTemplate(frame, t_ref, cv2.TM_SQDIFF)
    _, _, loc, _ = cv2.minMaxLoc(res)
    return float(loc[0])


@pytest.mark.parametrize("fps_in,fps_out", [(25, 24), (10, 24), (24, 60), (12, 25)])
def test_counts_and_timing_for_non_integer_ratios(fps_in, fps_out):
    n_in = 7
    keys = np.stack([scene(k) for k in range(n_in)])  # keyframe k at time k / fps_in
    out = interpolate_frames(keys, fps_in, fps_out, method="flow")
    span = (n_in - 1) / fps_in
    assert len(out) == output_count(n_in, fps_in, fps_out) == math.floor(span * fps_out + 1e-6) + 1
    # Frame i shows time i / fps_out: the patch is where it is at that time (10 px per
    # keyframe interval), within a pixel. Checked on the frames between keyframes.
    for i in range(len(out)):
        pos = i * fps_in / fps_out
        if abs(pos - round(pos)) < 1e-6:
            assert np.array_equal(out[i], keys[round(pos)])
            continue
        assert abs(object_x(out[i], FG) - (60 + 10 * pos)) <= 1.0, (i, pos)


def test_exact_count_spans_the_input(moving):
    keys = moving[::2]
    out = interpolate_frames(keys, 25, 24, n_out=17, method="flow")
    assert len(out) == 17
    assert np.array_equal(out[0], keys[0]) and np.array_equal(out[-1], keys[-1])
    assert np.array_equal(out[4], keys[1])  # position 4 * 4/16 = 1


def test_loop_wraps_the_end_into_the_start(moving):
    keys = moving[::2]  # 5 keyframes, fps 1 -> 2: loop covers [0, 5) s
    out = interpolate_frames(keys, 1, 2, loop=True, method="blend")
    assert len(out) == output_count(5, 1, 2, loop=True) == 10
    assert np.array_equal(out[8], keys[4])
    # The last frame is halfway from the last keyframe back to the first.
    expect = (keys[4].astype(np.float32) + keys[0]) / 2
    assert np.abs(out[9].astype(np.float32) - expect).max() <= 1.0
    assert np.allclose(positions_for(5, 1, 2, 20, True), np.arange(20) * 0.25)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still supported
def test_learned_model_hook(tmp_path, monkeypatch, moving):
    torch = pytest.importorskip("torch")

    class Blend(torch.nn.Module):  # the RIFE calling convention: (img0, img1, t) -> img
        def forward(self, img0, img1, t):
            return img0 * (1 - t) + img1 * t

    path = tmp_path / "interp.pt"
    torch.jit.script(Blend()).save(str(path))
    monkeypatch.setenv("D2V_INTERP_MODEL", str(path))
    keys = moving[::2]
    out = interpolate_frames(keys, 1, 2)  # learned: D2V_INTERP_MODEL is set
    ref = interpolate_frames(keys, 1, 2, method="blend")
    assert np.array_equal(out[::2], keys)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1

    # torch.export's format (.pt2), exported with any height and width
    h, w = torch.export.Dim("h", min=2, max=4096), torch.export.Dim("w", min=2, max=4096)
    example = (torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48), torch.rand(1, 1, 1, 1))
    program = torch.export.export(Blend(), example, dynamic_shapes=({2: h, 3: w}, {2: h, 3: w}, None))
    torch.export.save(program, str(tmp_path / "interp.pt2"))
    monkeypatch.setenv("D2V_INTERP_MODEL", str(tmp_path / "interp.pt2"))
    assert np.array_equal(interpolate_frames(keys, 1, 2), out)

    monkeypatch.setenv("D2V_INTERP_MODEL", str(tmp_path / "missing.pt"))
    with pytest.raises(ModelNotConfiguredError, match="D2V_INTERP_MODEL=.*no such file"):
        interpolate_frames(keys, 1, 2)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    monkeypatch.setenv("D2V_INTERP_MODEL", str(bad))
    with pytest.raises(ModelNotConfiguredError, match="not a TorchScript"):
        interpolate_frames(keys, 1, 2)


# -- exact camera in-betweens ----------------------------------------------------------------

def _camera_setup(fps: int):
    from d2v.models import parse_request
    from d2v.render import CameraRenderer
    from d2v.trajectory import plan_trajectory

    image = skimage.data.chelsea()
    req = parse_request({"path": [{"x": 120, "y": 150}, {"x": 330, "y": 140}], "effect": "zoom_in",
                         "duration_s": 1.0, "fps": fps, "width": 160, "height": 96})
    traj = plan_trajectory(req, image.shape[1], image.shape[0])
    return image, req, traj, CameraRenderer(image)


def test_exact_camera_inbetweens_match_direct_renders():
    image, req, traj, renderer = _camera_setup(8)
    keys = np.stack(list(renderer.render(traj)))
    out = interpolate_camera_frames(renderer, traj, 8, 24)
    assert len(out) == output_count(len(keys), 8, 24)
    for i in range(0, len(out), 3):
        assert np.array_equal(out[i], keys[i // 3])  # keyframes unchanged
    cams = camera_inbetweens(traj.frames, positions_for(len(keys), 8, 24, None, False))
    for i in (1, 5, 10):  # an in-between is exactly the render of its camera
        assert np.array_equal(out[i], renderer.render_frame(cams[i], 160, 96))


def test_retime_uses_the_camera_when_the_clip_carries_it():
    from d2v.stages import CameraSource, Clip, retime

    image, req24, traj24, renderer = _camera_setup(24)
    _, req8, traj8, _ = _camera_setup(8)
    keys = np.stack(list(renderer.render(traj8)))
    fps_keys = (len(keys) - 1) / ((req24.n_frames - 1) / 24)
    clip = Clip(keys, fps_keys, camera=CameraSource(image, traj8))
    out = retime(clip, req24)
    assert len(out.frames) == req24.n_frames and out.methods["interpolate"].startswith("camera")
    assert np.array_equal(out.frames[0], keys[0]) and np.array_equal(out.frames[-1], keys[-1])
    assert np.array_equal(out.frames, interpolate_camera_frames(renderer, traj8, fps_keys, 24, n_out=req24.n_frames))
    # Against the clip planned at 24 fps directly: as close as the two plans' easing allows.
    direct = np.stack(list(renderer.render(traj24)))
    flow = retime(Clip(keys, fps_keys), req24)
    p_cam = np.mean([psnr(a, b) for a, b in zip(out.frames, direct)])
    p_flow = np.mean([psnr(a, b) for a, b in zip(flow.frames, direct)])
    assert p_cam > 30 and p_cam >= p_flow, (p_cam, p_flow)


# -- the CLI -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("interp") / "in.mp4"
    encode_mp4(iter([np.ascontiguousarray(scene(k)[::2, ::2]) for k in range(10)]), path, 12)
    return path


def run_d2v(*args):
    return subprocess.run([D2V, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_interpolate_mp4(clip_mp4, tmp_path):
    out = tmp_path / "out.mp4"
    r = run_d2v("interpolate", clip_mp4, "--fps", 25, "-o", out)
    assert r.returncode == 0, r.stderr
    info = probe_video(out)
    assert info["fps"] == 25 and info["frames"] == output_count(10, 12, 25) == 19
    assert (info["width"], info["height"]) == (160, 96)


@pytest.mark.parametrize("case", ["missing", "not_video", "fps_zero", "fps_text", "bad_output"])
def test_cli_interpolate_refuses_bad_input(case, clip_mp4, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_text("hello")
    args = {
        "missing": [tmp_path / "nope.mp4", "--fps", 25, "-o", tmp_path / "o.mp4"],
        "not_video": [junk, "--fps", 25, "-o", tmp_path / "o.mp4"],
        "fps_zero": [clip_mp4, "--fps", 0, "-o", tmp_path / "o.mp4"],
        "fps_text": [clip_mp4, "--fps", "fast", "-o", tmp_path / "o.mp4"],
        "bad_output": [clip_mp4, "--fps", 25, "-o", tmp_path / "o.gif"],
    }[case]
    r = run_d2v("interpolate", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d2v: error: "), r.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_flow_at_an_odd_size_above_the_flow_working_size():
    """531x301: the flow runs at a rounded smaller size (512x290) and is scaled back per axis."""
    truth = np.stack([scene(t, 531, 301) for t in range(5)])
    flow = interpolate_frames(truth[::2], 1, 2, method="flow")
    blend = interpolate_frames(truth[::2], 1, 2, method="blend")
    assert flow.shape == truth.shape and np.array_equal(flow[::2], truth[::2])
    p_flow = np.mean([psnr(flow[i], truth[i]) for i in (1, 3)])
    p_blend = np.mean([psnr(blend[i], truth[i]) for i in (1, 3)])
    assert p_flow >= p_blend + 7.0, (p_flow, p_blend)


# -- inputs other tools make: tiny and thin frames, odd sizes, an uneven clock (s20 audit) ---------

LEVELS = [20 + 20 * k for k in range(8)]  # one grey per frame: an in-between's grey says where it sits
UNEVEN = np.array([0.0, 0.01, 0.02, 0.5, 0.51, 2.0, 2.01, 3.0])


def greys(w: int, h: int) -> list[np.ndarray]:
    return [np.full((h, w, 3), v, np.uint8) for v in LEVELS]


@pytest.mark.parametrize("size", [(2, 2), (200, 12), (1024, 20)])
def test_cli_interpolates_tiny_and_thin_videos(size, tmp_path):
    """2x2 was an internal error from OpenCV (its DIS flow needs 12 px); 200x12, and 1024x20
    (flow at 512x10), crashed the process inside DIS. Frames under 16 px a side blend; larger
    ones keep a flow working size of 16 px or more."""
    w, h = size
    src = write_mp4(tmp_path / "in.mp4", greys(w, h), np.arange(8) / 8)
    r = run_d2v("interpolate", src, "--fps", 16, "-o", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    out, fps = decode_video(tmp_path / "out.mp4")
    assert out.shape == (15, h, w, 3) and fps == 16
    grey = out.reshape(15, -1).mean(axis=1)
    assert np.allclose(grey, np.interp(np.arange(15) / 2, np.arange(8), LEVELS), atol=3), grey


def test_cli_interpolate_pads_an_odd_size_to_even(tmp_path):
    """101x77 was refused ("must be even for H.264") though `d2v upscale` reads it. The output
    is 102x78: every input pixel where it was, the last column and row repeated."""
    truth = [np.ascontiguousarray(BG[60 + 2 * k : 137 + 2 * k, 40 + 3 * k : 141 + 3 * k]) for k in range(8)]
    src = write_mp4(tmp_path / "in.mp4", truth, np.arange(8) / 8, codec="mpeg4")  # x264 refuses odd sizes
    keys, _ = decode_video(src)
    r = run_d2v("interpolate", src, "--fps", 16, "-o", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    assert "101x77 -> 102x78" in r.stdout
    out, fps = decode_video(tmp_path / "out.mp4")
    assert out.shape == (15, 78, 102, 3) and fps == 16
    assert min(psnr(out[2 * k, :77, :101], keys[k]) for k in range(8)) > 35
    assert np.abs(out[:, :, 101].astype(int) - out[:, :, 100]).mean() < 3
    assert np.abs(out[:, 77].astype(int) - out[:, 76]).mean() < 3


def test_cli_interpolate_follows_an_uneven_clock(tmp_path):
    """Frames at 0..3 s on an uneven clock came out as 31 frames over 0-1.875 s (frame index
    over the average rate). DESIGN.md: output frame i shows time i/fps of the input, up to
    its last frame's time."""
    src = write_mp4(tmp_path / "in.mp4", greys(64, 48), UNEVEN)
    r = run_d2v("interpolate", src, "--fps", 16, "-o", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    out, fps, times = decode_video_times(tmp_path / "out.mp4")
    assert len(out) == 49 and fps == 16 and times is None
    assert probe_video(tmp_path / "out.mp4")["duration_s"] == pytest.approx(49 / 16, abs=1e-3)
    grey = out.reshape(49, -1).mean(axis=1)
    assert np.allclose(grey, np.interp(np.arange(49) / 16, UNEVEN, LEVELS), atol=3), grey


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("n_out", [None, 7])
@pytest.mark.parametrize(("fps_in", "fps_out"), [(12, 25), (24, 30), (8, 16), (30, 24)])
def test_an_even_clock_places_frames_as_its_rate_does(loop, n_out, fps_in, fps_out):
    """The clock's positions agree with the constant-rate ones, from any first timestamp."""
    clock = 5.0 + np.arange(10) / fps_in
    assert np.allclose(positions_on_clock(clock, fps_out, n_out, loop),
                       positions_for(10, fps_in, fps_out, n_out, loop), atol=1e-9)
