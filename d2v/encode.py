"""The encode stage: frames -> H.264 MP4, a JPEG poster, and decode/probe helpers.

* `encode_mp4` streams RGB frames (any iterable, e.g. `CameraRenderer.render`) into
  libx264 / yuv420p through PyAV. Frame i gets pts i in a 1/fps time base, so a decoder
  sees exactly N frames lasting N/fps seconds (or, given `times`, a variable-rate clip's
  own clock in 90 kHz ticks). The MP4 is written "faststart" (the 'moov' index before
  the media data) so browsers can play it while it downloads.
* `encode_poster` makes the JPEG shown before the video plays.
* `decode_video` / `probe_video` read a video back (tests, `d2v interpolate`,
  `d2v upscale`; `decode_video_times` with a variable-rate clip's frame times) and turn
  anything that is not a video into `InvalidVideoError`.

Colour: frames are converted RGB -> YUV with the BT.709 matrix, limited ("TV") range,
and the stream is tagged so; players assume BT.709 for HD, and decoding here reads the
tags back, so colours survive a round trip. The conversion (`Yuv420`) is a few OpenCV
passes into one reused I420 buffer, about twice as fast as swscale's accurate path and
within 1 level of it (chroma is the 2x2 average, as swscale's area filter gives it), so
x264 gets the planes it wants without PyAV's generic `reformat` per frame. A frame may
also come as those planes already (`I420`): the camera renderer draws a plain flat move's
frames so, from the photo converted once, and the encoder takes them as they are. So does a
look (d2v.looks): its colour table holds each graded colour as Y'RGB (`yrgb_from_rgb`: this
conversion's luma beside R, G, B), and `i420_from_yrgb` makes a graded frame's planes from one
gather, the same bits as `Yuv420` of the graded RGB.

Cores: x264 runs frame threads (with PyAV's default, slice threads, the same CPU takes
about 20% longer on two cores), and while it encodes, OpenCV runs single-threaded
(`encoder_owns_cores`): x264's frame threads fill both cores of a small machine, and OpenCV's pool (the render thread's warps,
the conversion) spinning beside them only costs CPU. The MP4's index ('moov') goes
first: when the frame count is known (`len(frames)`), into space reserved up front,
so the muxer never rewrites the file; otherwise by the muxer's faststart pass.
"""

from __future__ import annotations

import io
import numbers
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable

import cv2
import numpy as np

from d2v.errors import InvalidRequestError, InvalidVideoError
from d2v.store import publish_mode

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)
# libavutil enum values (AVCOL_*): BT.709 primaries / transfer / matrix, MPEG range.
_AVCOL_BT709 = 1
_AVCOL_RANGE_MPEG = 1


def _av():
    """PyAV, imported on first use: it loads FFmpeg's libraries (about 0.08 CPU-s), which a
    render's encoder then does after asking for its first frame, while the render thread makes
    the next ones, instead of before any work."""
    import av

    return av


def _sws_to_rgb() -> int:
    """swscale flags for decoding. Its defaults truncate (decoded colours come out 1-1.5 levels
    dark) and interpolate chroma crudely; accurate rounding fixes the cast, full chroma
    interpolation brings 4:2:0 chroma back smoothly."""
    from av.video.reformatter import Interpolation

    return int(Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT)


@dataclass
class EncodeStats:
    frames: int
    width: int
    height: int
    fps: int
    bytes: int
    seconds: float  # wall time of the whole call, including waiting for streamed frames
    input_seconds: float = 0.0  # of which spent waiting on the frame iterator (the producer)


# BT.709, limited range, as rows of cv2.transform's [matrix | offset]: Y' = Kr R + Kg G + Kb B
# scaled to 16..235, Cb and Cr = the scaled B - Y' and R - Y' centred on 128 (16..240).
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
_Y, _C = 219.0 / 255.0, 224.0 / 255.0
RGB_TO_YUV709 = np.array([
    [_KR * _Y, _KG * _Y, _KB * _Y, 16.0],
    [-_KR / (2 * (1 - _KB)) * _C, -_KG / (2 * (1 - _KB)) * _C, 0.5 * _C, 128.0],
    [0.5 * _C, -_KG / (2 * (1 - _KR)) * _C, -_KB / (2 * (1 - _KR)) * _C, 128.0],
], np.float32)


# The inverse, for a frame drawn as planes that is wanted as a picture too (`I420.rgb`).
_YUV709_TO_RGB = np.hstack([np.linalg.inv(RGB_TO_YUV709[:, :3].astype(np.float64)),
                            -np.linalg.inv(RGB_TO_YUV709[:, :3].astype(np.float64)) @ RGB_TO_YUV709[:, 3:]]
                           ).astype(np.float32)


class I420:
    """One frame as x264 takes it: BT.709 limited-range YUV 4:2:0, the Y plane and then U and V
    at half size, back to back in one (height * 3/2, width) uint8 `buffer` (the shape PyAV's
    from_ndarray takes). `encode_mp4` takes these beside RGB frames and encodes them as they
    are: a renderer that draws the planes itself (`CameraRenderer.render(planes=...)`) spares
    the encoder its RGB -> YUV conversion."""

    def __init__(self, width: int, height: int):
        if width % 2 or height % 2:
            raise InvalidRequestError(f"frame size {width}x{height} must be even for H.264 (yuv420p)")
        w, h = self.width, self.height = width, height
        self.buffer = np.empty((h * 3 // 2, w), np.uint8)
        # The planes lie back to back in the flat buffer: a chroma plane is h/2 rows of w/2,
        # which is not a whole number of w-wide rows when h/2 is odd (270 -> 67.5 rows).
        flat, luma, chroma = self.buffer.reshape(-1), w * h, (w // 2) * (h // 2)
        self.y = flat[:luma].reshape(h, w)
        self.u = flat[luma : luma + chroma].reshape(h // 2, w // 2)
        self.v = flat[luma + chroma :].reshape(h // 2, w // 2)

    def rgb(self) -> np.ndarray:
        """The frame as a fresh (height, width, 3) uint8 RGB picture, as a player shows it: U and
        V upsampled bilinearly from the 2x2 blocks' centres, BT.709 limited range back to RGB."""
        size = (self.width, self.height)
        yuv = cv2.merge([self.y, cv2.resize(self.u, size, interpolation=cv2.INTER_LINEAR),
                         cv2.resize(self.v, size, interpolation=cv2.INTER_LINEAR)])
        return cv2.transform(yuv, _YUV709_TO_RGB)


class Yuv420:
    """RGB uint8 frames of one size -> I420 (the Y plane, then U and V at half size), BT.709
    limited range, in a buffer reused frame after frame (so read each result before the
    next call). Y from each pixel; Cb and Cr from the average colour of each 2x2 block
    (chroma sited between the pixels, as MPEG-1/JPEG and swscale's area filter put it).
    The block average is rounded in RGB first: its rounding leans the same way in all
    three channels, which the chroma rows (each summing to zero) cancel, so colours do not
    drift. Every sample within 1 level of swscale's accurate path; mean offsets under 0.1."""

    def __init__(self, width: int, height: int):
        self.planes = I420(width, height)
        w, h = width, height
        self._yuv = np.empty((h, w, 3), np.uint8)
        self._half = np.empty((h // 2, w // 2, 3), np.uint8)
        self._half_yuv = np.empty((h // 2, w // 2, 3), np.uint8)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The planes' buffer (see `I420`)."""
        p = self.planes
        w, h = p.width, p.height
        rgb = np.ascontiguousarray(rgb)  # a view (a crop, a flip) is copied; a frame as rendered is not
        # One 3-row pass is faster in OpenCV than a 1-row one; the chroma it makes is unused.
        cv2.transform(rgb, RGB_TO_YUV709, dst=self._yuv)
        cv2.extractChannel(self._yuv, 0, dst=p.y)
        cv2.resize(rgb, (w // 2, h // 2), dst=self._half, interpolation=cv2.INTER_AREA)
        _chroma(self._half, self._half_yuv, p)
        return p.buffer


def _chroma(half: np.ndarray, half_yuv: np.ndarray, planes: I420) -> None:
    """U and V from the 2x2 blocks' average RGB (`half`, rounded), through one 3-row pass."""
    cv2.transform(half, RGB_TO_YUV709, dst=half_yuv)
    cv2.extractChannel(half_yuv, 1, dst=planes.u)
    cv2.extractChannel(half_yuv, 2, dst=planes.v)


# Y'RGB: a colour as 4 bytes, its luma Y' (exactly as `Yuv420` makes it) and then R, G, B. A
# colour table of these (d2v.looks) turns a frame into its planes with one gather and
# `i420_from_yrgb`, bit for bit what `Yuv420` makes of the gathered RGB, and into RGB by
# dropping Y'.
_YRGB_TO_RGB = [1, 0, 2, 1, 3, 2]  # cv2.mixChannels pairs: Y'RGB -> RGB


def yrgb_from_rgb(rgb: np.ndarray, out: np.ndarray, yuv: np.ndarray) -> None:
    """(h, w, 3) uint8 RGB -> `out`, (h, w, 4) uint8 Y'RGB; `yuv` is (h, w, 3) uint8 scratch."""
    # The 3-row pass `Yuv420` makes: OpenCV's fixed-point arithmetic for 3 -> 3 channels, so the
    # same luma to the bit (a 3 -> 4 pass, its float path, differs by 1 in 5% of colours).
    cv2.transform(rgb, RGB_TO_YUV709, dst=yuv)
    cv2.mixChannels([yuv, rgb], [out], [0, 0, 3, 1, 4, 2, 5, 3])


def rgb_from_yrgb(yrgb: np.ndarray) -> np.ndarray:
    """(h, w, 4) uint8 Y'RGB -> a fresh (h, w, 3) uint8 RGB."""
    return cv2.mixChannels([yrgb], [np.empty((*yrgb.shape[:2], 3), np.uint8)], _YRGB_TO_RGB)[0]


def i420_from_yrgb(yrgb: np.ndarray) -> I420:
    """(h, w, 4) uint8 Y'RGB -> a fresh `I420`: Y' as it is, U and V from the 2x2 blocks'
    average R, G, B as `Yuv420` takes them (the same area filter on the same values)."""
    h, w = yrgb.shape[:2]
    planes = I420(w, h)
    cv2.extractChannel(yrgb, 0, dst=planes.y)
    half4 = cv2.resize(yrgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)  # each channel on its own
    half = rgb_from_yrgb(half4)
    _chroma(half, np.empty_like(half), planes)
    return planes


class _CoreShare:
    """OpenCV's thread count, lowered to 1 while any encode runs in this process and put
    back when the last one ends (counted: encodes may overlap on a farm's threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._saved = 1

    @contextmanager
    def encoding(self):
        with self._lock:
            if self._active == 0:
                self._saved = cv2.getNumThreads()
                cv2.setNumThreads(1)
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    cv2.setNumThreads(self._saved)


encoder_owns_cores = _CoreShare().encoding


def _moov_reserve(frames: int) -> int:
    """Bytes to reserve for the 'moov' index of a one-track H.264 MP4 of `frames` frames:
    its fixed boxes (about 1.5 KB) and, per frame at worst, sample size, chunk offset,
    chunk map, time-to-sample, composition offset, sync sample and dependency entries
    (45 bytes; 48 reserved). What is left over stays in the file as a 'free' box."""
    return 4096 + 48 * frames


def _check_frame(frame: np.ndarray | I420, size: tuple[int, int] | None, index: int) -> tuple[int, int]:
    if isinstance(frame, I420):
        w, h = frame.width, frame.height
    elif not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise InvalidRequestError(f"frame {index}: expected an HxWx3 uint8 RGB array, got shape {shape} {dtype}")
    else:
        h, w = frame.shape[:2]
    if size is None:
        if w % 2 or h % 2:
            raise InvalidRequestError(f"frame size {w}x{h} must be even for H.264 (yuv420p)")
        return w, h
    if (w, h) != size:
        raise InvalidRequestError(f"frame {index} is {w}x{h} but frame 0 was {size[0]}x{size[1]}; all frames must match")
    return size


def encode_mp4(
    frames: Iterable[np.ndarray | I420],
    out: str | Path | BinaryIO,
    fps: int,
    *,
    crf: int = 18,
    preset: str = "veryfast",
    threads: int = 0,
    codec: str = "libx264",
    times: np.ndarray | None = None,
) -> EncodeStats:
    """Encode RGB uint8 frames (all the same even size; any of them may come as `I420` planes
    instead, encoded as they are) to an H.264 MP4 at `out`
    (a path or a binary file object). `threads=0` lets x264 pick. Frames are consumed
    one at a time, so a generator streams straight through without holding the video;
    when `frames` has a length, the MP4's index is written in space reserved for it.
    codec "h264_nvenc" encodes on an NVIDIA GPU (`nvenc_available()`): crf becomes NVENC's
    constant quality, and the x264 preset its nearest (p1 fastest .. p7 slowest).
    `times` (seconds, from 0, increasing; one per frame) keeps a variable-rate clip's clock
    (`decode_video_times`): frame i is shown at times[i] instead of i/fps, the last for 1/fps."""
    if codec not in ("libx264", "h264_nvenc"):
        raise InvalidRequestError(f"unknown encoder {codec!r}; choose libx264 or h264_nvenc")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Integral) or fps < 1:
        raise InvalidRequestError(f"fps must be a positive integer, got {fps!r}")
    if not 0 <= int(crf) <= 51:
        raise InvalidRequestError(f"crf must be in 0..51, got {crf}")
    if preset not in X264_PRESETS:
        raise InvalidRequestError(f"unknown x264 preset {preset!r}; choose one of: {', '.join(X264_PRESETS)}")
    if times is not None:
        times = np.asarray(times, np.float64)
        if times.ndim != 1 or not (np.all(np.isfinite(times)) and times[0] >= 0 and np.all(np.diff(times) > 0)):
            raise InvalidRequestError("times must be finite seconds from 0, increasing, one per frame")
    t_start = time.perf_counter()

    fps = int(fps)
    # Encode to a temporary file, then move or copy it: a failed encode leaves nothing
    # half-written at `out`, and the muxer seeks back to write the index (into the space
    # reserved for it, or in its faststart pass), which a pipe or socket cannot do.
    to_path = isinstance(out, (str, Path))
    fd, tmp = tempfile.mkstemp(
        suffix=".mp4.part", prefix=".d2v-encode-", dir=Path(out).parent if to_path else None
    )
    os.close(fd)
    try:
        count = len(frames) if hasattr(frames, "__len__") else None
        with encoder_owns_cores():
            stats = _encode_to_path(frames, Path(tmp), fps, crf, preset, threads, codec, count, times)
        if to_path:
            publish_mode(tmp)
            os.replace(tmp, out)
        else:
            with open(tmp, "rb") as f:
                shutil.copyfileobj(f, out, length=1 << 20)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stats.seconds = time.perf_counter() - t_start
    return stats


_NVENC_PRESET = {"ultrafast": "p1", "superfast": "p2", "veryfast": "p3", "faster": "p4", "fast": "p4",
                 "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7", "placebo": "p7"}
_nvenc: list[bool] = []


def nvenc_available() -> bool:
    """Whether PyAV's FFmpeg has h264_nvenc and it opens here (an NVIDIA GPU and driver):
    tried once per process on two small frames."""
    if not _nvenc:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                blank = np.zeros((64, 64, 3), np.uint8)
                _encode_to_path(iter([blank, blank]), Path(tmp) / "probe.mp4", 24, 23, "veryfast", 0, "h264_nvenc")
            _nvenc.append(True)
        except Exception:
            _nvenc.append(False)
    return _nvenc[0]


def _encode_to_path(
    frames: Iterable[np.ndarray | I420], path: Path, fps: int, crf: int, preset: str, threads: int,
    codec: str = "libx264", count: int | None = None, times: np.ndarray | None = None,
) -> EncodeStats:
    it = iter(frames)
    t_wait = time.perf_counter()
    first = next(it, None)
    input_seconds = time.perf_counter() - t_wait
    if first is None:
        raise InvalidRequestError("no frames to encode")
    size = _check_frame(first, None, 0)
    w, h = size

    av = _av()  # (after the first frame: see _av)
    rate = Fraction(fps, 1)
    # A variable-rate clock needs ticks finer than a frame: MPEG's 90 kHz.
    time_base = 1 / rate if times is None else Fraction(1, 90000)
    if times is not None:
        ticks = np.append(np.rint(times * 90000).astype(np.int64), 0)
        ticks[-1] = ticks[-2] + round(90000 / fps)  # the end of the last frame
    to_yuv = Yuv420(w, h)
    # 'moov' first either way; reserved space spares the faststart pass's rewrite of the file.
    index = {"moov_size": str(_moov_reserve(count))} if count else {"movflags": "faststart"}
    n = 0
    try:
        with av.open(str(path), "w", format="mp4", options=index) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.time_base = time_base
            cc = stream.codec_context
            cc.time_base = time_base
            cc.thread_count = int(threads)
            if codec == "libx264":
                # Frame threads, as the ffmpeg command uses: PyAV asks for slice threads, which
                # on two cores leave x264 ~20% slower in wall time for the same CPU (bench/RESULTS.md).
                cc.thread_type = "FRAME"
            cc.colorspace = cc.color_primaries = cc.color_trc = _AVCOL_BT709
            cc.color_range = _AVCOL_RANGE_MPEG
            if codec == "h264_nvenc":
                stream.options = {"rc": "vbr", "cq": str(int(crf)), "preset": _NVENC_PRESET[preset]}
            else:
                stream.options = {"crf": str(int(crf)), "preset": str(preset)}
            if times is not None:
                # No B-frames: the MP4's sample durations are decode-time steps, which, with
                # frames reordered on an uneven clock, no longer add up to the clip's length.
                stream.options = {**stream.options, "bf": "0"}

            # libx264 copies each picture into its own frames before `encode` returns, so it can
            # read our I420 buffer in place (the buffer is reused for the next frame); NVENC may
            # hold a frame queued, so it gets a copy. PyAV's in-place wrapper takes the height
            # as rows // 6 * 4: wrong (270 -> 268) unless the height is a multiple of 4.
            in_place = codec == "libx264" and size[1] % 4 == 0
            wrap = av.VideoFrame.from_numpy_buffer if in_place else av.VideoFrame.from_ndarray
            frame = first
            while frame is not None:
                _check_frame(frame, size, n)
                # Our own conversion, not cv2's COLOR_RGB2YUV_I420: that one has BT.601's
                # matrix and point-samples the chroma (4x the bitrate on texture).
                planes = frame.buffer if isinstance(frame, I420) else to_yuv(frame)
                vf = wrap(planes, format="yuv420p")
                vf.colorspace, vf.color_range = _AVCOL_BT709, _AVCOL_RANGE_MPEG
                if times is None:
                    vf.pts = n
                    vf.duration = 1  # the last frame lasts 1/fps too, so duration = N/fps
                elif n < len(times):
                    vf.pts, vf.duration = int(ticks[n]), int(ticks[n + 1] - ticks[n])
                else:
                    raise InvalidRequestError(f"{len(times)} times for more frames than that")
                vf.time_base = time_base
                container.mux(stream.encode(vf))
                n += 1
                t_wait = time.perf_counter()
                frame = next(it, None)
                input_seconds += time.perf_counter() - t_wait
            container.mux(stream.encode(None))
        if times is not None and n != len(times):
            raise InvalidRequestError(f"{len(times)} times for {n} frames")
    except av.error.FFmpegError as e:
        raise InvalidRequestError(f"encoding failed: {e} (preset {preset!r}, crf {crf})") from None
    return EncodeStats(
        frames=n, width=w, height=h, fps=fps, bytes=path.stat().st_size, seconds=0.0, input_seconds=input_seconds
    )


def encode_poster(frame: np.ndarray, quality: int = 90) -> bytes:
    """One RGB uint8 frame -> JPEG bytes (the video's poster image)."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InvalidRequestError("poster: expected an HxWx3 uint8 RGB array")
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise InvalidRequestError("poster: JPEG encoding failed")
    return buf.tobytes()


def _open_input(src: str | Path | bytes | BinaryIO):
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
        name = "<bytes>"
    elif isinstance(src, (str, Path)):
        name = str(src)
        if not Path(src).is_file():
            raise InvalidVideoError(f"video {name}: no such file")
        src = name
    else:
        name = getattr(src, "name", "<stream>")
    av = _av()
    try:
        container = av.open(src, "r")
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise InvalidVideoError(f"{name} is not a video d2v can decode ({e})") from None
    if not container.streams.video:
        container.close()
        raise InvalidVideoError(f"{name} has no video stream")
    return container, name


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def decode_video(src: str | Path | bytes | BinaryIO) -> tuple[np.ndarray, float]:
    """Decode every frame: ((N, H, W, 3) uint8 RGB, frames per second)."""
    frames, fps, _ = decode_video_times(src)
    return frames, fps


def decode_video_times(src: str | Path | bytes | BinaryIO) -> tuple[np.ndarray, float, np.ndarray | None]:
    """`decode_video` and the frames' clock: each frame's presentation time in seconds
    from the first (pts x time_base), for a variable-frame-rate video; None where frame k
    is at k / fps (within a tenth of a frame: a millisecond time base jitters that much)
    or where the timestamps are missing or do not increase, so frame k is taken at k / fps."""
    container, name = _open_input(src)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        out: list[np.ndarray] = []
        pts: list[float | None] = []
        sws = _sws_to_rgb()
        try:
            for frame in container.decode(stream):
                # to_ndarray converts with the frame's own colour tags (BT.709 for ours).
                out.append(frame.to_ndarray(format="rgb24", interpolation=sws))
                pts.append(None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base))
        except _av().error.FFmpegError as e:
            raise InvalidVideoError(f"{name}: decoding failed after {len(out)} frames ({e})") from None
    if not out:
        raise InvalidVideoError(f"{name} has a video stream but no decodable frames")
    times = None
    if None not in pts and len(pts) > 1:
        t = np.asarray(pts) - pts[0]
        steady = fps > 0 and np.all(np.abs(t - np.arange(len(t)) / fps) < 0.1 / fps)
        times = None if steady or not np.all(np.diff(t) > 0) else t
    return np.stack(out), fps, times


def decode_frames(src: str | Path | bytes | BinaryIO, indices) -> tuple[dict[int, np.ndarray], int, float]:
    """Decode the whole stream but keep only the frames at `indices`: ({index: (H, W, 3) uint8
    RGB}, frames decoded, frames per second). Memory stays at the frames kept."""
    wanted = set(int(i) for i in indices)
    container, name = _open_input(src)
    kept: dict[int, np.ndarray] = {}
    count = 0
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        sws = _sws_to_rgb()
        try:
            for frame in container.decode(stream):
                if count in wanted:
                    kept[count] = frame.to_ndarray(format="rgb24", interpolation=sws)
                count += 1
        except _av().error.FFmpegError as e:
            raise InvalidVideoError(f"{name}: decoding failed after {count} frames ({e})") from None
    if not count:
        raise InvalidVideoError(f"{name} has a video stream but no decodable frames")
    return kept, count, fps


def probe_video(src: str | Path | bytes | BinaryIO) -> dict:
    """Stream facts without decoding pixels: frames, width, height, fps, duration_s, codec, pix_fmt."""
    container, _ = _open_input(src)
    with container:
        stream = container.streams.video[0]
        frames = stream.frames
        if not frames:  # not in the header (e.g. some MKV/WebM): count packets instead
            frames = sum(1 for p in container.demux(stream) if p.size)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / _av().time_base
        else:
            duration = 0.0
        cc = stream.codec_context
        return {
            "frames": int(frames),
            "width": int(cc.width),
            "height": int(cc.height),
            "fps": _stream_fps(stream),
            "duration_s": duration,
            "codec": cc.name,
            "pix_fmt": cc.pix_fmt,
        }
