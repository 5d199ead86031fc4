"""Looks: colour grades as 3D LUTs, applied to every output frame after the post effects.

    look = look_for(request, lut_bytes)     # None: no grade
    frame = look.apply(frame)               # (h, w, 3) uint8 RGB -> graded, same shape
    frame = look.apply(frame, planes=True)  # graded as the encoder takes it (I420 once the table is built)

* Named looks (`d2v.models.LOOKS`) are grade functions evaluated once per process on a
  33^3 grid. White balance and exposure act in linear light (sRGB decoded), where
  multiplying a channel means what a camera's gain means; contrast curves and saturation
  act on the display (sRGB-encoded) values, where a curve's midpoint is a mid grey.
* `.cube` files (Adobe/Resolve's 3D LUT text format: TITLE, LUT_3D_SIZE, DOMAIN_MIN,
  DOMAIN_MAX, `#` comments, then size^3 "r g b" rows with red changing fastest) are parsed
  by `parse_cube`; a file that is not one is an `InvalidLookError` naming the line.
  1D LUTs (LUT_1D_SIZE) are refused: they cannot express a grade that mixes channels.
* Applying: frames are uint8, so there are only 2^24 colours to grade. Each is graded once
  into a table (64 MB) that frames then index: one gather per pixel, about 5x less CPU than
  Pillow's trilinear `ImageFilter.Color3DLUT` on every frame (bench/post_bench.py --looks).
  The table is the LUT's trilinear interpolant, built one axis at a time (trilinear is
  separable: along red, then green, then one blend of two planes per blue level) in float32
  and rounded once, one pair of grid planes at a time (no temporaries beyond 1 MB: the
  table is the only fresh memory): about 0.1 CPU-s, against 0.35-1.0 s for running Pillow's
  filter over every colour; every entry within 1 level of Pillow's fixed-point filter (98.7%
  equal). A job whose clip has BUILD_FOR pixels or more builds it at its first frame; where the
  clip's size is not said, a look grades its first BUILD_AFTER pixels with Pillow (a preview of
  a few small frames never pays for the table), then builds it. The process keeps the tables
  of the last two looks.
* Each entry is the graded colour as Y'RGB (d2v.encode): the encoder's luma beside R, G, B.
  A frame that goes straight to the encoder (`apply(frame, planes=True)`) becomes its I420
  planes from the gather with a half-size chroma pass, bit for bit what the encoder's own
  conversion makes of the graded RGB, so the look does most of the conversion the encoder
  would have done; a frame wanted in RGB (the poster) drops Y'.
"""

from __future__ import annotations

import functools
import hashlib
import math
import mmap
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFilter

from d2v.encode import I420, i420_from_yrgb, rgb_from_yrgb, yrgb_from_rgb
from d2v.errors import InvalidLookError
from d2v.models import LOOKS, LUT_SUFFIX, RenderRequest

GRID = 33  # the named looks' LUT size: the industry's usual, smooth curves need no more
MAX_CUBE_SIZE = 256  # larger .cube grids are refused (a 256^3 table is already 200 MB of text)
MAX_LUT_BYTES = 16 * 2**20  # .cube files larger are refused unread (a 65-point one is about 7 MiB of text)
PILLOW_MAX_SIZE = 65  # Color3DLUT's largest grid; larger .cube files are resampled to it


@dataclass(frozen=True)
class Look:
    """A 3D LUT over [0, 1]^3 (table[b, g, r] -> rgb, float32) and its name."""

    name: str
    table: np.ndarray  # (n, n, n, 3), indexed [b][g][r] like a .cube file's rows

    @functools.cached_property
    def _filter(self) -> ImageFilter.Color3DLUT:
        n = self.table.shape[0]
        # A float32 array, not a list: Pillow reads it as a buffer on every frame it grades.
        return ImageFilter.Color3DLUT(n, np.ascontiguousarray(self.table.reshape(-1), dtype=np.float32), channels=3)

    @functools.cached_property
    def _digest(self) -> str:  # what the graded-colour tables are kept by
        return hashlib.sha256(np.ascontiguousarray(self.table, np.float32).tobytes()).hexdigest()

    def apply(self, frame: np.ndarray, *, planes: bool = False, clip_pixels: int = 0) -> np.ndarray | I420:
        """The graded frame: RGB, or with `planes` the encoder's I420 once the table is built
        (RGB before: the encoder takes either). clip_pixels: how many the caller grades in all,
        where it knows (see BUILD_FOR)."""
        table = _tables.get(self, frame.shape[0] * frame.shape[1], clip_pixels)
        if table is None:
            return np.asarray(Image.fromarray(frame).filter(self._filter))
        yrgb = _index(table, frame)
        if planes:
            return i420_from_yrgb(yrgb)
        return rgb_from_yrgb(yrgb)

    def method(self) -> str:
        n = self.table.shape[0]
        return f"3D LUT {self.name} ({n}^3, trilinear, after the post effects)"


ALL_COLOURS = 1 << 24  # 8-bit RGB
# When a look builds its table (bench/post_bench.py --looks, 2-core Sapphire Rapids VM): Pillow
# grades ~45 M pixels a CPU-second (13 ms a 1024x576 frame), the table ~270 M to I420 planes
# (2.2 ms), and the build costs ~0.1 s, so it pays for itself after ~5.5 M pixels. A caller that
# knows its clip's size (a job) builds at once for a clip past BUILD_FOR, and grades a smaller
# one directly; one that does not grades BUILD_AFTER pixels directly first (two 1024x576
# frames; a 4 s 256x144 preview's first 28), so a few small frames never pay for a build.
BUILD_FOR = 1 << 22
BUILD_AFTER = ALL_COLOURS >> 4


class _Tables:
    """Every 8-bit colour graded once per look (packed Y'RGB, indexed by R | G << 8 | B << 16),
    built for a clip of BUILD_FOR pixels or more, or once a look has graded BUILD_AFTER pixels
    the direct way; the last KEEP kept."""

    KEEP = 2

    def __init__(self):
        self._lock = threading.Lock()
        self._graded: dict[str, int] = {}  # pixels graded directly, by look
        self._built: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, look: Look, pixels: int, clip_pixels: int = 0) -> np.ndarray | None:
        if sys.byteorder != "little":  # the keys read R, G, B, 0 as one little-endian number
            return None
        key = look._digest
        with self._lock:
            if key in self._built:
                self._built.move_to_end(key)
                return self._built[key]
            seen = self._graded.get(key, 0)
            self._graded[key] = seen + pixels
            if seen < BUILD_AFTER and clip_pixels < BUILD_FOR:
                return None
            table = _grade_all_colours(look)
            self._built[key] = table
            self._graded.pop(key, None)
            while len(self._built) > self.KEEP:
                self._built.popitem(last=False)
            return table


def _fresh_table() -> np.ndarray:
    """(256, 256, 256, 4) uint8 of new memory, its pages mapped in one call (MAP_POPULATE):
    about 0.03 CPU-s. numpy's own allocation asks for huge pages, whose first touch took 0.02 s
    or, often once a render had churned through its frames, 0.15-0.17 s (the kernel compacting
    memory for them: defrag on madvise); 4 KB pages faulted in one at a time cost 0.06 s."""
    size = ALL_COLOURS * 4
    if not hasattr(mmap, "MAP_POPULATE"):  # not Linux
        return np.empty((256, 256, 256, 4), np.uint8)
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    return np.frombuffer(pages, np.uint8).reshape(256, 256, 256, 4)  # the array keeps the mapping


def _lerp_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each 8-bit level v: the LUT grid point below it and how far toward the next
    (v / 255 on a grid of n points over [0, 1])."""
    pos = np.arange(256, dtype=np.float64) * (n - 1) / 255.0
    below = np.minimum(pos.astype(np.int64), n - 2)
    return below, (pos - below).astype(np.float32)


def _grade_all_colours(look: Look) -> np.ndarray:
    """The table of every 8-bit colour graded: the LUT's trilinear interpolant, one axis at a
    time, rounded once to 8 bits; packed Y', R, G, B as little-endian uint32, [b][g][r]."""
    n = look.table.shape[0]  # table[b, g, r] -> rgb
    below, frac = _lerp_weights(n)
    lut = look.table * np.float32(255)  # in 8-bit units

    def red_green(grid_plane: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One blue grid plane (n, n, 3) at every red and green level: (256, 256, 3) in `out`.
        (Into kept buffers: a new 0.8 MB array is fresh memory, page faults and all.)"""
        a, b = grid_plane[:, below], grid_plane[:, below + 1]
        along_red = a + (b - a) * frac[None, :, None]
        np.take(along_red, below, axis=0, out=out)
        np.take(along_red, below + 1, axis=0, out=spare)
        np.subtract(spare, out, out=spare)
        np.multiply(spare, frac[:, None, None], out=spare)
        return np.add(out, spare, out=out)

    table = _fresh_table()  # [b][g][r] -> Y', R, G, B
    lower, upper, step, plane, spare = (np.empty((256, 256, 3), np.float32) for _ in range(5))
    rgb, yuv = np.empty((256, 256, 3), np.uint8), np.empty((256, 256, 3), np.uint8)
    k_lower = -2
    for level in range(256):  # each blue level: one blend of two grid planes, rounded to uint8
        k = int(below[level])
        if k != k_lower:  # the next pair of grid planes (the last pair's upper one is this lower)
            if k == k_lower + 1:
                lower, upper = upper, lower
            else:
                red_green(lut[k], lower)
            red_green(lut[k + 1], upper)
            np.subtract(upper, lower, out=step)
            k_lower = k
        cv2.scaleAdd(step, float(frac[level]), lower, dst=plane)
        cv2.convertScaleAbs(plane, dst=rgb)
        yrgb_from_rgb(rgb, table[level], yuv)
    return table.reshape(-1).view(np.uint32)


def _index(table: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The frame's colours looked up: (h, w, 4) uint8 Y'RGB, in this thread's scratch buffer
    (read it before the next call)."""
    h, w = frame.shape[:2]
    rgba, key, graded = _scratch(h, w)
    # R, G, B, 255 read as one little-endian number, the alpha masked off: the colour's index,
    # as int64, the type np.take converts any other index to first (0.43 ms a 1024x576 frame,
    # against 0.64 for cv2.mixChannels into zeroed 8-byte keys).
    cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2RGBA, dst=rgba)
    np.bitwise_and(rgba.view(np.uint32)[..., 0], 0xFFFFFF, out=key)
    # mode="clip" (every key is in range anyway): with "raise", np.take writes to a copy of `out`.
    np.take(table, key, out=graded.view(np.uint32)[..., 0], mode="clip")
    return graded


_buffers = threading.local()


def _scratch(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's buffers for a gather: the frame as RGBA, its (h, w) int64 keys and the
    gathered (h, w, 4) Y'RGB. Kept, not made per frame: fresh memory costs a page fault per
    4 KB (about 0.5 ms of a 1024x576 frame's 2.5)."""
    kept = getattr(_buffers, "kept", None)
    if kept is None or kept[0].shape[:2] != (h, w):
        kept = _buffers.kept = (np.empty((h, w, 4), np.uint8), np.empty((h, w), np.int64),
                                np.empty((h, w, 4), np.uint8))
    return kept


_tables = _Tables()


# -- named looks ----------------------------------------------------------------------

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 luminance weights


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, None)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def _white_balance(rgb: np.ndarray, gains, exposure_stops: float = 0.0) -> np.ndarray:
    """Channel gains in linear light, normalised so a grey keeps its luminance."""
    gains = np.asarray(gains, np.float32)
    gains = gains / float(gains @ _LUMA) * 2.0**exposure_stops
    return linear_to_srgb(srgb_to_linear(rgb) * gains)


def _saturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    luma = (rgb @ _LUMA)[..., None]
    return luma + (rgb - luma) * amount


def _s_curve(x: np.ndarray, strength: float) -> np.ndarray:
    """Contrast about mid grey that never clips: a blend toward smoothstep."""
    x = np.clip(x, 0.0, 1.0)
    return (1 - strength) * x + strength * x * x * (3 - 2 * x)


def _split_tone(rgb: np.ndarray, shadows, highlights, amount: float) -> np.ndarray:
    """Tint the shadows toward one colour and the highlights toward another, by luminance."""
    luma = (rgb @ _LUMA)[..., None]
    w_hi = np.clip((luma - 0.35) / 0.5, 0, 1)
    w_lo = np.clip((0.65 - luma) / 0.5, 0, 1)
    tint = w_lo * (np.asarray(shadows, np.float32) - 0.5) + w_hi * (np.asarray(highlights, np.float32) - 0.5)
    return rgb + amount * tint


def _grade(name: str, rgb: np.ndarray) -> np.ndarray:
    """The named look on display-referred RGB in [0, 1], (..., 3)."""
    if name == "natural":
        return rgb
    if name == "cinematic":
        out = _s_curve(rgb, 0.35)
        out = 0.04 + 0.94 * out  # lifted blacks, rolled-off whites
        out = _split_tone(out, shadows=(0.42, 0.5, 0.6), highlights=(0.58, 0.52, 0.44), amount=0.5)
        return _saturate(out, 0.9)
    if name == "vibrant":
        return _saturate(_s_curve(rgb, 0.2), 1.35)
    if name == "noir":
        luma = linear_to_srgb(srgb_to_linear(rgb) @ _LUMA)  # true luminance, not an average of codes
        grey = _s_curve(_s_curve(luma, 0.6), 0.4)
        return np.repeat(grey[..., None], 3, axis=-1)
    if name == "teal_orange":
        out = _split_tone(rgb, shadows=(0.36, 0.56, 0.6), highlights=(0.64, 0.52, 0.4), amount=0.6)
        # Warm hues (skin) toward orange, cool ones toward teal: R - B decides which.
        warmth = np.clip((rgb[..., :1] - rgb[..., 2:]) * 2.0, -1, 1)
        push = np.where(warmth > 0, np.array([1.0, 0.45, -0.6], np.float32), np.array([-0.6, 0.25, 0.45], np.float32))
        out = out + 0.08 * np.abs(warmth) * push
        return _saturate(_s_curve(out, 0.2), 1.1)
    if name == "warm":
        return _white_balance(rgb, (1.14, 1.0, 0.84))
    if name == "cool":
        return _white_balance(rgb, (0.86, 1.0, 1.16))
    if name == "faded":
        out = 0.08 + 0.84 * _s_curve(rgb, -0.25)  # lifted blacks, dimmed whites, flatter mids
        return _saturate(out, 0.7)
    raise InvalidLookError(f"unknown look {name!r}; choose one of: {', '.join(LOOKS)}, or a {LUT_SUFFIX} file")


def identity_table(n: int) -> np.ndarray:
    """The (n, n, n, 3) grid points themselves, [b][g][r] -> (r, g, b)."""
    axis = np.linspace(0.0, 1.0, n, dtype=np.float32)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r, g, b], axis=-1)


@functools.lru_cache(maxsize=None)
def named_look(name: str) -> Look:
    """A named look's LUT, built once per process."""
    table = np.clip(_grade(name, identity_table(GRID)), 0.0, 1.0).astype(np.float32)
    return Look(name, table)


# -- .cube files ----------------------------------------------------------------------


def parse_cube(data: bytes, name: str = "look.cube") -> Look:
    """A `.cube` 3D LUT -> Look. Raises InvalidLookError naming the line of the first problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Older tools write a TITLE or comments in Latin-1: the table itself is ASCII either way.
        if b"\0" in data:
            raise InvalidLookError(f"{name}: not a text file (a .cube LUT is text: LUT_3D_SIZE, then rows of r g b)"
                                   ) from None
        text = data.decode("latin-1")
    size = None
    domain_min, domain_max = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    rows: list[tuple[float, float, float]] = []

    def fail(lineno: int, what: str) -> None:
        raise InvalidLookError(f"{name}, line {lineno}: {what}")

    def numbers(lineno: int, parts: list[str], count: int, what: str) -> list[float]:
        if len(parts) != count:
            fail(lineno, f"{what} needs {count} number(s), got {len(parts)}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            fail(lineno, f"{what}: {' '.join(parts)!r} is not {count} number(s)")
        if not all(math.isfinite(v) for v in values):
            fail(lineno, f"{what}: numbers must be finite")
        return values

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        key = parts[0].upper()
        if key == "TITLE":
            continue
        if key == "LUT_1D_SIZE":
            fail(lineno, "a 1D LUT (LUT_1D_SIZE); d2v takes 3D LUTs (LUT_3D_SIZE), which can mix channels")
        if key == "LUT_3D_SIZE":
            (n,) = numbers(lineno, parts[1:], 1, "LUT_3D_SIZE")
            if n != int(n) or not 2 <= n <= MAX_CUBE_SIZE:
                fail(lineno, f"LUT_3D_SIZE must be a whole number from 2 to {MAX_CUBE_SIZE}, got {parts[1]}")
            if rows:
                fail(lineno, "LUT_3D_SIZE must come before the table rows")
            size = int(n)
            continue
        if key in ("DOMAIN_MIN", "DOMAIN_MAX"):
            values = numbers(lineno, parts[1:], 3, key)
            (domain_min if key == "DOMAIN_MIN" else domain_max)[:] = values
            continue
        if key == "LUT_3D_INPUT_RANGE":  # Resolve's form of the domain: one min and max for all channels
            lo, hi = numbers(lineno, parts[1:], 2, key)
            domain_min[:], domain_max[:] = [lo] * 3, [hi] * 3
            continue
        if key[0].isalpha() and key not in ("NAN", "INF"):
            fail(lineno, f"unknown keyword {parts[0]!r} (a .cube file has TITLE, LUT_3D_SIZE, DOMAIN_MIN, "
                         "DOMAIN_MAX and rows of r g b)")
        if size is None:
            fail(lineno, "a table row before LUT_3D_SIZE")
        rows.append(tuple(numbers(lineno, parts, 3, "a table row")))  # type: ignore[arg-type]
    if size is None:
        raise InvalidLookError(f"{name}: no LUT_3D_SIZE line; is it a .cube 3D LUT?")
    if len(rows) != size**3:
        raise InvalidLookError(f"{name}: LUT_3D_SIZE {size} needs {size**3} rows of r g b, the file has {len(rows)}")
    if any(hi <= lo for lo, hi in zip(domain_min, domain_max)):
        raise InvalidLookError(f"{name}: DOMAIN_MAX must be above DOMAIN_MIN in every channel")
    table = np.asarray(rows, np.float32).reshape(size, size, size, 3)
    return Look(name, np.clip(_onto_unit_domain(table, domain_min, domain_max), 0.0, 1.0))


def _onto_unit_domain(table: np.ndarray, lo, hi) -> np.ndarray:
    """The LUT resampled (trilinear) onto a grid over [0, 1]^3, the domain frames live in, at
    most PILLOW_MAX_SIZE a side. A LUT already on [0, 1] at a size Pillow takes is returned as is.
    The new grid's points along each axis depend on that axis alone, so trilinear is linear
    interpolation along the three axes in turn (no scipy.ndimage: its import is a look's start-up)."""
    n = table.shape[0]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if np.allclose(lo, 0) and np.allclose(hi, 1) and n <= PILLOW_MAX_SIZE:
        return table
    m = min(n, PILLOW_MAX_SIZE)
    points = np.linspace(0.0, 1.0, m, dtype=np.float32).astype(np.float64)  # identity_table's, per axis
    out = np.asarray(table, np.float64)
    for axis, channel in ((0, 2), (1, 1), (2, 0)):  # the table's axes are b, g, r
        at = np.clip((points - lo[channel]) / (hi[channel] - lo[channel]) * (n - 1), 0, n - 1)
        below = np.floor(at).astype(np.intp)
        above = np.minimum(below + 1, n - 1)
        w = (at - below).reshape([-1 if a == axis else 1 for a in range(4)])
        out = np.take(out, below, axis=axis) * (1.0 - w) + np.take(out, above, axis=axis) * w
    return out.astype(np.float32)


def write_cube(look: Look, title: str | None = None) -> bytes:
    """The LUT as a .cube file (for tests, and to hand a named look to another tool)."""
    n = look.table.shape[0]
    lines = [f'TITLE "{title or look.name}"', f"LUT_3D_SIZE {n}", "DOMAIN_MIN 0 0 0", "DOMAIN_MAX 1 1 1"]
    lines += [f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in look.table.reshape(-1, 3)]
    return ("\n".join(lines) + "\n").encode()


# -- a request's look -----------------------------------------------------------------


def look_for(request: RenderRequest, lut_bytes: bytes | None = None) -> Look | None:
    """The request's grade: None for no look (or `natural`, the photo's own colours), a named
    look, or the .cube file that travels with the job (`lut_bytes`)."""
    name = request.look
    if name is None or name == "natural":
        return None
    if name.lower().endswith(LUT_SUFFIX):
        if lut_bytes is None:
            raise InvalidLookError(f"look {name!r} names a {LUT_SUFFIX} file, but the job has none: send the file "
                                   "(CLI --look FILE.cube, HTTP a `lut` file part, batch a path or s3:// key)")
        return _job_cube(lut_bytes, name)
    return named_look(name)


@functools.lru_cache(maxsize=4)
def _job_cube(lut_bytes: bytes, name: str) -> Look:
    """A job's .cube, parsed once per process: render_job checks it before the job exists and
    the encoding stage grades with it (a 65^3 file is 275k rows of Python parsing). Errors are
    not cached: a bad file raises every time."""
    return parse_cube(lut_bytes, name)
