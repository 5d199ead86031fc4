"""Image decoding: limits are checked from the header, bad files get named errors."""

import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from d2v.errors import ImageTooLargeError, InvalidImageError
from d2v.images import check_image_header, decode_image, oriented_size


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height with almost no data: decoding it would be a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decodes_rgb_and_alpha_over_white(photo):
    img = decode_image(png_bytes(photo))
    assert img.rgb.shape == photo.shape and img.format == "PNG" and img.extension == "png"
    assert np.array_equal(img.rgb, photo)
    rgba = np.zeros((32, 32, 4), np.uint8)  # fully transparent
    assert decode_image(png_bytes(rgba)).rgb.min() == 255


def test_not_an_image():
    with pytest.raises(InvalidImageError, match="not an image"):
        decode_image(b"hello, this is text")
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")


def test_truncated_png(photo):
    data = png_bytes(photo)
    with pytest.raises(InvalidImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_huge_png_refused_from_header_alone():
    data = huge_png_header(20000, 20000)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        check_image_header(data)


def test_tiny_image_refused():
    with pytest.raises(InvalidImageError, match="at least 16"):
        decode_image(png_bytes(np.zeros((4, 4, 3), np.uint8)))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_the_size_from_the_header_is_the_decoded_size_exif_rotation_included(orientation):
    """`d2v render` checks the path against the photo's size read from its header alone: the
    size decode_image gives, a phone photo's quarter turn (EXIF orientation 6, 8) included."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(buf, format="JPEG", exif=exif.tobytes())
    h, w = decode_image(buf.getvalue()).rgb.shape[:2]
    assert oriented_size(buf.getvalue()) == (w, h) == ((40, 64) if orientation in (6, 8) else (64, 40))


def _saved(arr: np.ndarray, fmt: str, **kw) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, extension", [("HEIF", "heic"), ("AVIF", "avif")])
def test_phone_formats_decode(fmt, extension):
    """An iPhone's HEIC and an AVIF decode to the photo (lossy: near it), at the size the
    header gives, portrait stays portrait."""
    rng = np.random.default_rng(0)
    photo = np.kron(rng.integers(0, 255, (12, 8, 3), np.uint8), np.ones((8, 8, 1), np.uint8))  # 96x64, portrait
    data = _saved(photo, fmt, quality=95)
    assert check_image_header(data)[1:] == (64, 96)
    img = decode_image(data)
    assert img.format == fmt and img.extension == extension and img.rgb.shape == photo.shape
    assert np.abs(img.rgb.astype(int) - photo).mean() < 12
    with pytest.raises(InvalidImageError):  # a named error (which one depends on where it is cut)
        decode_image(data[: len(data) // 2])


def test_other_iso_media_is_not_a_photo():
    """An MP4 (an ISO media file like HEIC and AVIF) is named as not an image."""
    mp4_head = struct.pack(">I", 24) + b"ftypisom" + b"\0\0\2\0" + b"isomiso2" + b"\0" * 64
    with pytest.raises(InvalidImageError, match="not an image d2v can read; upload a JPEG, PNG, WebP, AVIF, HEIC"):
        decode_image(mp4_head)


_RAMP = np.tile(np.linspace(0.0, 1.0, 48), (32, 1))  # 48x32, black on the left to white on the right


@pytest.mark.parametrize("name, gray, fmt", [
    ("16-bit PNG", (_RAMP * 65535).astype(np.uint16), "PNG"),
    ("16-bit TIFF", (_RAMP * 65535).astype(np.uint16), "TIFF"),
    ("float TIFF, 0..1", _RAMP.astype(np.float32), "TIFF"),
    ("float TIFF, 0..255", (_RAMP * 255).astype(np.float32), "TIFF"),
])
def test_wide_gray_photos_keep_their_tones(name, gray, fmt):
    """A 16-bit or float grayscale photo decodes to its picture: Pillow's own conversion clips
    these at 255, and the 16-bit PNG came out white (s14 audit)."""
    rgb = decode_image(_saved(gray, fmt)).rgb
    assert rgb.shape == (32, 48, 3)
    assert np.abs(rgb[..., 0].astype(int) - np.rint(_RAMP * 255)).max() <= 1, name


@pytest.mark.parametrize("fmt, words", [("TIFF", "the TIFF has 3 pages (a multi-page file)"),
                                        ("WEBP", "the WEBP has 3 frames (an animation)")])
def test_many_pictures_in_one_file_are_named_as_what_they_are(fmt, words):
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match=re.escape(words)):
        check_image_header(buf.getvalue())
