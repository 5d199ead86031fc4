"""The encoder: what a player (and a user's ffprobe) sees in the MP4 and the poster."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2v.encode import EncodeStats, Yuv420, decode_video, decode_video_times, encode_mp4, encode_poster, probe_video
from d2v.errors import InvalidRequestError, InvalidVideoError

from .conftest import textured_image


def moving_frames(n: int, w: int = 320, h: int = 180, seed: int = 0) -> list[np.ndarray]:
    big = textured_image(w + 2 * n, h, seed=seed)
    return [np.ascontiguousarray(big[:, 2 * i:2 * i + w]) for i in range(n)]


def smooth_frame(w: int = 320, h: int = 180) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([
        40 + 180 * xx / w,
        40 + 180 * yy / h,
        128 + 80 * np.sin(xx / w * 3 + yy / h * 2),
    ], axis=-1).astype(np.uint8)


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types, in file order."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        boxes.append(kind.decode("latin-1"))
        pos += size
    return boxes


@pytest.mark.parametrize("fps", [24, 25, 30])
def test_decoding_gives_every_frame_at_the_right_rate(tmp_path: Path, fps: int):
    frames = moving_frames(37)
    out = tmp_path / "v.mp4"
    stats = encode_mp4(frames, out, fps)
    assert isinstance(stats, EncodeStats)
    assert (stats.frames, stats.width, stats.height, stats.fps) == (37, 320, 180, fps)
    assert stats.bytes == out.stat().st_size > 0 and stats.seconds > 0

    video, got_fps = decode_video(out)
    assert video.shape == (37, 180, 320, 3) and video.dtype == np.uint8
    assert got_fps == pytest.approx(fps)
    info = probe_video(out)
    assert info["frames"] == 37 and (info["width"], info["height"]) == (320, 180)
    assert info["duration_s"] == pytest.approx(37 / fps, abs=1e-3)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    # Frames stay in order: each decoded frame is closest to its own source frame.
    for i in (0, 18, 36):
        errs = [np.abs(video[i].astype(int) - f).mean() for f in frames]
        assert int(np.argmin(errs)) == i


@pytest.mark.parametrize("size", [(320, 180), (480, 270)])  # 270: half of it odd, not a multiple of 4
def test_colours_survive(tmp_path: Path, size):
    frame = smooth_frame(*size)
    encode_mp4([frame] * 5, tmp_path / "c.mp4", 24, crf=18)
    video, _ = decode_video(tmp_path / "c.mp4")
    assert video.shape == (5, size[1], size[0], 3)
    err = np.abs(video.astype(int) - frame.astype(int))
    assert err.mean() < 1.5
    assert np.abs(video.mean(axis=(0, 1, 2)) - frame.mean(axis=(0, 1))).max() < 1.0  # no colour cast


def test_moov_comes_before_mdat(tmp_path: Path):
    encode_mp4(moving_frames(10), tmp_path / "f.mp4", 24)
    boxes = top_level_boxes((tmp_path / "f.mp4").read_bytes())
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_writes_to_a_file_object_with_faststart():
    buf = io.BytesIO()
    stats = encode_mp4(iter(moving_frames(12)), buf, 24)  # a generator streams in
    data = buf.getvalue()
    assert stats.bytes == len(data) and stats.frames == 12
    boxes = top_level_boxes(data)
    assert boxes.index("moov") < boxes.index("mdat")
    video, fps = decode_video(data)  # bytes in, too
    assert video.shape == (12, 180, 320, 3) and fps == pytest.approx(24)


def test_writes_to_a_stream_that_cannot_seek():
    class Pipe(io.RawIOBase):
        def __init__(self):
            self.chunks: list[bytes] = []

        def writable(self):
            return True

        def seekable(self):
            return False

        def write(self, b):
            self.chunks.append(bytes(b))
            return len(b)

    pipe = Pipe()
    encode_mp4(moving_frames(6), pipe, 24)
    video, _ = decode_video(b"".join(pipe.chunks))
    assert len(video) == 6


def test_crf_and_preset_are_used(tmp_path: Path):
    frames = moving_frames(12)
    hi = encode_mp4(frames, tmp_path / "hi.mp4", 24, crf=14, preset="ultrafast")
    lo = encode_mp4(frames, tmp_path / "lo.mp4", 24, crf=36, preset="ultrafast")
    assert lo.bytes < hi.bytes / 2
    with pytest.raises(InvalidRequestError):
        encode_mp4(frames, tmp_path / "x.mp4", 24, crf=60)
    with pytest.raises(InvalidRequestError, match="preset"):
        encode_mp4(frames, tmp_path / "x.mp4", 24, preset="warp-speed")


@pytest.mark.parametrize("size", [(321, 180), (320, 181)])
def test_odd_sizes_are_refused(tmp_path: Path, size):
    w, h = size
    with pytest.raises(InvalidRequestError, match="even"):
        encode_mp4([np.zeros((h, w, 3), np.uint8)] * 2, tmp_path / "o.mp4", 24)


def test_bad_frames_are_refused(tmp_path: Path):
    a = np.zeros((180, 320, 3), np.uint8)
    with pytest.raises(InvalidRequestError, match="frame 1"):
        encode_mp4([a, np.zeros((180, 322, 3), np.uint8)], tmp_path / "d.mp4", 24)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    with pytest.raises(InvalidRequestError):
        encode_mp4([a.astype(np.float32)], tmp_path / "f.mp4", 24)
    with pytest.raises(InvalidRequestError, match="no frames"):
        encode_mp4([], tmp_path / "e.mp4", 24)


def test_poster_is_a_jpeg_of_the_frame():
    frame = smooth_frame(320, 180)
    data = encode_poster(frame)
    assert data[:3] == b"\xff\xd8\xff"
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG" and img.size == (320, 180)
    assert np.abs(np.asarray(img.convert("RGB")).astype(int) - frame).mean() < 3
    assert len(encode_poster(frame, quality=40)) < len(data)


def test_non_video_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InvalidVideoError, match="not a video"):
        decode_video(b"this is not a video at all" * 10)
    (tmp_path / "still.txt").write_bytes(b"\x00" * 100)
    with pytest.raises(InvalidVideoError):
        decode_video(tmp_path / "still.txt")
    with pytest.raises(InvalidVideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_encoder_choice_is_checked_and_nvenc_is_probed_not_assumed(tmp_path):
    from d2v.encode import nvenc_available

    frames = [np.zeros((64, 64, 3), np.uint8)] * 2
    with pytest.raises(InvalidRequestError, match="unknown encoder 'x265'"):
        encode_mp4(iter(frames), tmp_path / "a.mp4", 24, codec="x265")
    assert isinstance(nvenc_available(), bool)  # False on a machine without an NVIDIA GPU, never an error


@pytest.mark.gpu
def test_nvenc_encodes_a_playable_clip(tmp_path):
    from d2v.encode import nvenc_available

    if not nvenc_available():
        pytest.skip("PyAV's FFmpeg has no working h264_nvenc here")
    frames = [np.full((144, 256, 3), 10 * i, np.uint8) for i in range(12)]
    stats = encode_mp4(iter(frames), tmp_path / "gpu.mp4", 12, codec="h264_nvenc")
    decoded, fps = decode_video(tmp_path / "gpu.mp4")
    assert stats.frames == 12 and decoded.shape == (12, 144, 256, 3) and fps == 12


def test_the_yuv_conversion_is_swscales_within_one_level_on_a_real_photo():
    """The encoder's own RGB -> I420 (BT.709, limited range, 2x2 chroma) against what PyAV's
    swscale gives with the same matrix and range: every sample within 1 level, no cast
    (mean offsets under 0.1 level)."""
    import cv2
    from av import VideoFrame
    from av.video.reformatter import Interpolation


    photo = cv2.cvtColor(cv2.imread("examples/hubble.jpg"), cv2.COLOR_BGR2RGB)
    # 480x270: chroma planes of an odd number of rows (135), not whole rows of the luma's width
    for w, h in ((1000, 576), (480, 270)):
        for frame in (np.ascontiguousarray(photo[:h, :w]), moving_frames(1, w, h, seed=3)[0]):
            ours = Yuv420(w, h)(frame).reshape(-1).astype(np.int16)
            theirs = VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p", interpolation=int(Interpolation.AREA | Interpolation.ACCURATE_RND),
                dst_colorspace="ITU709", dst_color_range="MPEG").to_ndarray().reshape(-1).astype(np.int16)
            diff = ours - theirs
            assert np.abs(diff).max() <= 1
            luma, chroma = w * h, w * h // 4
            for plane in (diff[:luma], diff[luma:luma + chroma], diff[luma + chroma:]):  # Y, U, V
                assert abs(plane.mean()) < 0.1  # OpenCV's 8-bit matrix pass rounds Y about 0.05 low


def test_the_index_is_reserved_up_front_when_the_frame_count_is_known(tmp_path: Path):
    """A list of frames: 'moov' goes in space reserved before 'mdat' (the rest a 'free' box);
    a generator: the muxer's faststart pass puts it there. Both play the same frames."""
    frames = moving_frames(12)
    encode_mp4(frames, tmp_path / "list.mp4", 24)
    encode_mp4(iter(frames), tmp_path / "stream.mp4", 24)
    reserved = top_level_boxes((tmp_path / "list.mp4").read_bytes())
    assert reserved.index("moov") < reserved.index("free") < reserved.index("mdat"), reserved
    listed, streamed = (decode_video(tmp_path / name)[0].astype(np.float64) for name in ("list.mp4", "stream.mp4"))
    assert listed.shape == streamed.shape == (12, 180, 320, 3)
    # The same pictures, to within x264's own run-to-run variation: on a loaded machine the
    # same frames encode a little differently (56 dB apart at worst in 300 tries, session 17;
    # CI once saw it), while a frame dropped or out of order is 22 dB.
    assert 10 * np.log10(255**2 / np.mean((listed - streamed) ** 2)) > 45


def test_planes_shown_as_rgb_are_the_picture_they_were_made_from():
    """`I420.rgb`, the planes of a frame drawn as planes shown as a picture (the path check's
    samples, the poster): flat colours, saturated ones too, come back within 2 levels (8-bit
    limited range rounds each of Y, U and V; a BT.601 inverse puts the saturated ones 10 to 15
    levels off, a full-range one white 20), and a photo as a player shows it, its chroma at a
    quarter of the pixels (over 35 dB)."""
    import skimage.data

    colours = [(200, 50, 30), (0, 0, 255), (255, 255, 0), (16, 128, 240), (128, 128, 128), (0, 0, 0), (255, 255, 255)]
    convert = Yuv420(64, 36)
    for colour in colours:
        flat = np.full((36, 64, 3), colour, np.uint8)
        convert(flat)
        back = convert.planes.rgb()
        assert back.shape == flat.shape and back.dtype == np.uint8
        assert np.abs(back.astype(int) - colour).max() <= 2, (colour, back[18, 32])
    photo = np.ascontiguousarray(skimage.data.astronaut()[::2, ::2][:254])
    convert = Yuv420(photo.shape[1], photo.shape[0])
    convert(photo)
    back = convert.planes.rgb()
    assert 10 * np.log10(255**2 / ((back.astype(np.float64) - photo) ** 2).mean()) > 35


def test_a_plain_flat_render_converts_no_frame_to_planes(tmp_path, yuv_conversions):
    """A plain flat move's frames reach x264 as I420 planes the renderer draws, every one: the
    path check's samples and the poster are those planes shown as RGB (`I420.rgb`), and the
    check follows the move on them. Post effects or motion blur need every frame in RGB; a
    look whose table is built grades each frame into planes itself, all but the poster."""
    import cv2

    from d2v.models import parse_request
    from d2v.pipeline import render_job
    from d2v.render import CameraRenderer
    from d2v.stages import plan
    from d2v.store import LocalStore

    photo = textured_image(480, 270, seed=3)
    image = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))[1].tobytes()
    path = {"canvas": {"width": 1000, "height": 1000}, "points": [{"x": 350 + 10 * i, "y": 600 - 8 * i} for i in range(13)]}
    request = parse_request({"path": path, "effect": "zoom_in", "duration_s": 2.0, "fps": 12, "width": 320, "height": 180})
    n = request.n_frames
    manifest = render_job(image, request, LocalStore(tmp_path / "store"), output_path=tmp_path / "plain.mp4")
    assert not yuv_conversions
    report = manifest.fidelity
    assert report.verdict == "followed" and report.located == report.sampled, report.one_line()
    # As close to the frames as rendered as the same frames encoded from RGB (4:2:0 and x264's own loss).
    rendered = list(CameraRenderer(photo).render(plan(request, 480, 270)))
    encode_mp4(rendered, tmp_path / "rgb.mp4", 12)

    def psnr(video: str) -> float:
        frames, _ = decode_video(tmp_path / video)
        assert len(frames) == n
        return 10 * np.log10(255**2 / ((frames.astype(np.float64) - rendered) ** 2).mean())

    assert abs(psnr("plain.mp4") - psnr("rgb.mp4")) < 0.2
    poster = cv2.cvtColor(cv2.imdecode(np.frombuffer(LocalStore(tmp_path / "store").get_bytes(manifest.keys["poster"]),
                                                     np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert 10 * np.log10(255**2 / ((poster.astype(np.float64) - rendered[n // 2]) ** 2).mean()) > 30  # the middle frame

    from d2v.looks import BUILD_FOR, _tables, named_look

    _tables.get(named_look("vibrant"), 0, clip_pixels=BUILD_FOR)  # its table, as a long clip's job builds it
    yuv_conversions.clear()
    store = LocalStore(tmp_path / "store")
    graded = render_job(image, request.model_copy(update={"look": "vibrant"}), store)
    assert len(yuv_conversions) == 1  # the poster, graded in RGB
    assert store.get_bytes(graded.keys["poster"]) == encode_poster(named_look("vibrant").apply(rendered[n // 2]))


UNEVEN = np.array([0.0, 0.01, 0.02, 0.5, 0.51, 2.0, 2.01, 3.0])  # seconds: bursts and gaps


def test_an_uneven_clock_is_kept(tmp_path: Path):
    """`times` (what `d2v upscale` passes for a variable-frame-rate video): every frame at its
    time, the last lasting 1/fps, and the MP4's length saying so (B-frames would shorten it)."""
    frames = moving_frames(8)
    encode_mp4(frames, tmp_path / "v.mp4", 4, times=UNEVEN)
    video, _, times = decode_video_times(tmp_path / "v.mp4")
    assert len(video) == 8 and np.allclose(times, UNEVEN, atol=1e-4), times
    assert probe_video(tmp_path / "v.mp4")["duration_s"] == pytest.approx(3.25, abs=1e-3)
    nearest = [int(np.argmin([np.abs(v.astype(int) - f).mean() for f in frames])) for v in video]
    assert nearest == list(range(8))  # in order, none dropped or repeated
    encode_mp4(frames, tmp_path / "c.mp4", 4)
    _, fps, times = decode_video_times(tmp_path / "c.mp4")
    assert fps == 4 and times is None  # an even clock is told by its rate alone


@pytest.mark.parametrize("times", [UNEVEN[::-1], UNEVEN + np.nan, UNEVEN[:5], np.append(UNEVEN, 4.0)],
                         ids=["decreasing", "nan", "too_few", "too_many"])
def test_times_that_are_not_one_increasing_clock_per_frame_are_refused(tmp_path: Path, times):
    with pytest.raises(InvalidRequestError, match="times"):
        encode_mp4(moving_frames(8), tmp_path / "v.mp4", 4, times=times)
    assert list(tmp_path.iterdir()) == []
