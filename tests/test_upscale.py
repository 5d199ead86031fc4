"""The upscale stage: exact sizes for odd aspect changes, quality against bicubic on a
real photo, the torch path, the learned-SR loading hook, and `d2v upscale` on an MP4."""

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from d2v.encode import decode_video_times, encode_mp4, probe_video
from d2v.errors import InvalidRequestError, ModelNotConfiguredError
from d2v.upscale import load_sr_model, method_for, resize_frame, upscale_frames
from tests.conftest import write_mp4

D2V = str(Path(sys.executable).parent / "d2v")


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def frames(n=2, h=90, w=160):
    img = skimage.data.astronaut()
    return np.stack([cv2.resize(img[k * 10 : k * 10 + 400, :], (w, h), interpolation=cv2.INTER_AREA)
                     for k in range(n)])


SIZES = [(1024, 576), (100, 300), (66, 66), (1920, 1080), (333, 77), (77, 333), (1, 1), (160, 90), (161, 91)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("device", ["cpu", "cpu-torch"])
def test_upscale_exact_sizes(size, device):
    if device == "cpu-torch":
        pytest.importorskip("torch")
    out = upscale_frames(frames(), *size, device=device)
    assert out.shape == (2, size[1], size[0], 3) and out.dtype == np.uint8


def test_cover_crop_keeps_the_middle():
    # A 2:1 frame to a square: the middle square, not a squeeze.
    f = np.zeros((50, 100, 3), np.uint8)
    f[:, 25:75] = 200
    out = resize_frame(f, 50, 50)
    assert out.shape == (50, 50, 3) and np.all(out == 200)


def test_beats_bicubic_on_a_real_photo():
    """Downscale real photos 2x, upscale back: at least as good as plain bicubic."""
    for img in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()):
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        img = img[:h, :w]
        small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        ours = upscale_frames(small[None], w, h, device="cpu")[0]
        bicubic = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        # Measured (Lanczos + unsharp 0.3): +0.46, +0.39, +0.22 dB; +1.2 dB on video frames.
        assert psnr(ours, img) >= psnr(bicubic, img) + 0.15, (psnr(ours, img), psnr(bicubic, img))


def test_torch_path_matches_opencv():
    pytest.importorskip("torch")
    f = frames(1, 120, 200)
    a = upscale_frames(f, 400, 240, device="cpu")[0]
    b = upscale_frames(f, 400, 240, device="cpu-torch")[0]
    assert psnr(a, b) > 35


def test_same_size_passes_through():
    f = frames()
    assert upscale_frames(f, 160, 90) is f


@pytest.mark.parametrize("size", [(0, 10), (10, -2), (9000, 10)])
def test_bad_sizes_are_refused(size):
    with pytest.raises(InvalidRequestError):
        upscale_frames(frames(), *size)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still supported
def test_learned_sr_hook(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")

    class TinySR(torch.nn.Module):  # 2x: nearest upsampling then a learned-looking conv
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                for c in range(3):
                    self.conv.weight[c, c, 1, 1] = 1.0

        def forward(self, x):
            return self.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))

    path = tmp_path / "sr.pt"
    torch.jit.script(TinySR()).save(str(path))
    assert load_sr_model(path).scale == 2
    monkeypatch.setenv("D2V_SR_MODEL", str(path))
    f = frames(2, 40, 60)
    assert method_for(60, 40, 120, 80) == "sr: sr.pt"
    out = upscale_frames(f, 120, 80)
    assert out.shape == (2, 80, 120, 3)
    assert np.array_equal(out[0], np.repeat(np.repeat(f[0], 2, 0), 2, 1))  # the model ran, exactly 2x
    assert upscale_frames(f, 101, 33).shape == (2, 33, 101, 3)  # model then exact resize

    monkeypatch.setenv("D2V_SR_MODEL", str(tmp_path / "missing.pth"))
    with pytest.raises(ModelNotConfiguredError, match="D2V_SR_MODEL=.*no such file"):
        upscale_frames(f, 120, 80)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\0" * 64)
    monkeypatch.setenv("D2V_SR_MODEL", str(junk))
    with pytest.raises(ModelNotConfiguredError, match="junk.pth"):
        upscale_frames(f, 120, 80)


# -- the CLI -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("up") / "in.mp4"
    encode_mp4(iter(frames(6, 72, 128)), path, 24)
    return path


def run_d2v(*args):
    return subprocess.run([D2V, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_upscale_mp4(clip_mp4, tmp_path):
    out = tmp_path / "out.mp4"
    r = run_d2v("upscale", clip_mp4, "--size", "300x100", "-o", out)
    assert r.returncode == 0, r.stderr
    info = probe_video(out)
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (300, 100, 6, 24)


@pytest.mark.parametrize("case", ["missing", "not_video", "size_text", "size_odd", "size_zero", "bad_output"])
def test_cli_upscale_refuses_bad_input(case, clip_mp4, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01 not a video")
    o = tmp_path / "o.mp4"
    args = {
        "missing": [tmp_path / "nope.mp4", "--size", "256x144", "-o", o],
        "not_video": [junk, "--size", "256x144", "-o", o],
        "size_text": [clip_mp4, "--size", "big", "-o", o],
        "size_odd": [clip_mp4, "--size", "255x144", "-o", o],
        "size_zero": [clip_mp4, "--size", "0x144", "-o", o],
        "bad_output": [clip_mp4, "--size", "256x144", "-o", tmp_path / "o.avi"],
    }[case]
    r = run_d2v("upscale", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("d2v: error: "), r.stderr
    assert not o.exists()


# -- s20 audit: sharpen's range, an uneven clock ---------------------------------------------------

@pytest.mark.parametrize("amount", ["nan", "inf", "1e9", "-5", "3.5"])
def test_cli_upscale_refuses_a_sharpen_out_of_range(amount, clip_mp4, tmp_path):
    """NaN made an all-white video, 1e9 a black-and-white one, -5 was taken as "off"."""
    o = tmp_path / "o.mp4"
    r = run_d2v("upscale", clip_mp4, "--size", "256x144", "--sharpen", amount, "-o", o)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"d2v: error: --sharpen must be in 0..3 (0 = off), got {float(amount)}"]
    assert not o.exists()


@pytest.mark.parametrize("device", ["cpu", "cpu-torch"])
def test_the_library_checks_sharpen_and_its_strongest_stays_a_picture(device):
    if device == "cpu-torch":
        pytest.importorskip("torch")
    f = frames()
    for bad in (float("nan"), float("inf"), -0.5, 3.5):
        with pytest.raises(InvalidRequestError, match=r"sharpen must be a number in 0\.\.3"):
            upscale_frames(f, 320, 180, sharpen_amount=bad, device=device)
    plain = upscale_frames(f, 320, 180, sharpen_amount=0.0, device=device)
    strongest = upscale_frames(f, 320, 180, sharpen_amount=3.0, device=device)
    # Sharper, not binarised: few more pixels clipped to black or white (1e9: all of them).
    clipped = [np.isin(x, (0, 255)).mean() for x in (plain, strongest)]
    assert clipped[1] < clipped[0] + 0.1 and psnr(strongest, plain) > 20, clipped


def test_cli_upscale_keeps_an_uneven_clock(tmp_path):
    """8 frames at 0..3 s on an uneven clock came out at 4 fps, 2 s long: each frame keeps its time."""
    uneven = np.array([0.0, 0.01, 0.02, 0.5, 0.51, 2.0, 2.01, 3.0])
    greys = [20 + 20 * k for k in range(8)]
    src = write_mp4(tmp_path / "in.mp4", [np.full((48, 64, 3), v, np.uint8) for v in greys], uneven)
    r = run_d2v("upscale", src, "--size", "128x96", "-o", tmp_path / "out.mp4")
    assert r.returncode == 0, r.stderr
    out, _, times = decode_video_times(tmp_path / "out.mp4")
    assert out.shape == (8, 96, 128, 3) and np.allclose(times, uneven, atol=1e-3), times
    assert probe_video(tmp_path / "out.mp4")["duration_s"] > 3.0
    assert np.allclose(out.reshape(8, -1).mean(axis=1), greys, atol=3)
