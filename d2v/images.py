"""Decoding uploaded images safely: the format and size are checked from the header
before the pixels are decoded, so a 20000x20000 PNG or a truncated file costs nothing
and gets a named error a user can act on."""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from d2v.errors import ImageTooLargeError, InvalidImageError

# Limits; operators change them by environment (the same names in Serve configs).
MAX_IMAGE_BYTES = int(os.environ.get("D2V_MAX_IMAGE_BYTES", 50 * 1024 * 1024))
MAX_IMAGE_PIXELS = int(os.environ.get("D2V_MAX_IMAGE_PIXELS", 40_000_000))
MIN_IMAGE_SIDE = 16
# The formats d2v takes: what cameras and phones write. Pillow would open dozens more
# (animated GIF, ICO, PSD, EPS through Ghostscript...): none of them is a photo to film.
_STILL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
# And the two in ISO media files ("ftyp" at byte 4): AVIF (Pillow's own) and HEIF (an iPhone's
# HEIC, through pillow-heif), tried only on such files (see `_media_formats`).
PHOTO_FORMATS = _STILL_FORMATS + ("AVIF", "HEIF")
FORMAT_NAMES = "JPEG, PNG, WebP, AVIF, HEIC, BMP or TIFF"  # as users know them

# We check pixels ourselves, before decoding; PIL's own bomb check would only warn.
Image.MAX_IMAGE_PIXELS = None

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "HEIF": "heic", "BMP": "bmp", "TIFF": "tif",
              "GIF": "gif"}


@functools.cache
def _media_formats() -> tuple[str, ...]:
    """AVIF and HEIF, where this Pillow build and pillow-heif read them (their plugins load on
    the first such file: 55 ms of imports the other formats never pay)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.init()
    return tuple(f for f in ("AVIF", "HEIF") if f in Image.OPEN)


def _open(data: bytes) -> Image.Image:
    """Pillow's image of a photo in one of PHOTO_FORMATS, its header read, no pixels decoded."""
    formats = _media_formats() if data[4:8] == b"ftyp" else _STILL_FORMATS
    return Image.open(io.BytesIO(data), formats=formats)


@dataclass
class LoadedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    format: str  # "PNG", "JPEG", ...

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.format, "img")

    def info(self) -> dict:
        """What the manifest and the store need to know of the image (small: crosses stages)."""
        return {"width": self.width, "height": self.height, "format": self.format, "extension": self.extension}


def read_image_bytes(source: str | Path, what: str = "image") -> bytes:
    """Read an image file (`what`: "image", "depth map") for the CLI/batch, with the byte limit
    and a clear error."""
    path = Path(source)
    if not path.is_file():
        raise InvalidImageError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(f"{what} {path} is {size / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
    return path.read_bytes()


def check_image_header(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, int, int]:
    """(format, width, height) from the header alone; raises before any pixel is decoded."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(f"image is {len(data) / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)")
    try:
        with _open(data) as im:
            fmt, (w, h) = im.format or "unknown", im.size
            frames = getattr(im, "n_frames", 1)
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"not an image d2v can read; upload a {FORMAT_NAMES} photo"
        ) from None
    except Exception as e:  # PIL raises assorted errors on corrupt headers
        raise InvalidImageError(f"the image header is corrupt ({e})") from None
    if frames > 1:
        what = "pages (a multi-page file)" if fmt == "TIFF" else "frames (an animation)"
        raise InvalidImageError(f"the {fmt} has {frames} {what}; upload a single photo")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"image is {w}x{h} ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP: downscale it first"
        )
    if min(w, h) < MIN_IMAGE_SIDE:
        raise InvalidImageError(f"image is {w}x{h}; both sides must be at least {MIN_IMAGE_SIDE} pixels")
    return fmt, w, h


def check_depth_header(data: bytes) -> None:
    """A depth map checked as a photo is (format, frames, pixel limits, from the header alone),
    its errors named as the depth map's: an empty file is no depth map, not "no depth"."""
    try:
        check_image_header(data)
    except (InvalidImageError, ImageTooLargeError) as e:
        raise type(e)(f"depth map: {e}") from None


# EXIF orientations that turn the picture a quarter (transposed, rotated 90 or 270 degrees).
_QUARTER_TURNS = (5, 6, 7, 8)


def oriented_size(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) as `decode_image` will give them (EXIF orientation applied), from the
    header alone: the same checks and errors, no pixels decoded."""
    _, w, h = check_image_header(data, max_pixels=max_pixels)
    try:
        with _open(data) as im:
            turned = im.getexif().get(0x0112) in _QUARTER_TURNS  # 0x0112: Orientation
    except Exception:  # an unreadable EXIF block: decode_image says what is wrong, if anything
        turned = False
    return (h, w) if turned else (w, h)


# Gray pictures with more than 8 bits a pixel: 16-bit (PNG, TIFF), 32-bit integer and float (TIFF).
WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float gray picture as 8-bit gray. Pillow's own convert("RGB") clips
    such pixels at 255, so a 16-bit PNG would come out white. Integers are scaled by the range
    their values use (16-bit ones are often held in 32); floats by 1 (0..1 is how TIFFs keep
    them) unless they go past it."""
    values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(values.max(initial=0.0))
    if im.mode == "F":
        full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    else:
        full = 255.0 if im.mode == "I" and top <= 255.0 else 65535.0 if top <= 65535.0 else 2.0**32 - 1
    return Image.fromarray(np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8), "L")


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> LoadedImage:
    """Bytes -> RGB uint8, honouring EXIF orientation. Named errors for everything a user can cause."""
    fmt, _, _ = check_image_header(data, max_pixels=max_pixels)
    try:
        with _open(data) as im:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # (in place: a photo needing no turn is not copied)
            if im.mode in WIDE_GRAY_MODES:
                im = _eight_bit(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # Transparent pixels become white, as a viewer would show them on a page.
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"the {fmt} image could not be decoded: {e} (is the file truncated?)") from None
    return LoadedImage(rgb=np.ascontiguousarray(rgb), format=fmt)


def load_image(source: str | Path) -> LoadedImage:
    return decode_image(read_image_bytes(source))
