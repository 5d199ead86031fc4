"""Malformed requests for the d2v HTTP API, deterministic from a seed (issue 13).

Every caller mistake must get a 4xx whose body is JSON with a `detail` string saying what
is wrong: never a 5xx, never a hang, never a 202 for a job that then fails because of its
input. This module makes the requests and judges the answers; bench/reliability.py sends
the full set (`--only malformed`), tests/test_reliability_inputs.py a small one in CI.

    cases = generate(2000, seed=0)     # one of every kind, then drawn ones; valid ones interleaved
    outcomes = send_all(url, cases, api_key=KEY)
    follow_accepted(url, outcomes, api_key=KEY)   # poll every 202 until it succeeds or fails
    print(format_table(summarize(outcomes)))

A kind of mistake is a `Maker`: a function rng -> Case, in one class (`body`, `fields`,
`json`, `path`, `image`, `format`, `odd_image`, `bomb`, `depth`, `auth`, `ids`, `protocol`,
`oversize`: the last sent once per run, tens of MiB each); legal requests are class `valid`.
`generate` calls every maker once (the hand-picked set),
then draws classes (equally often) and makers at random for the rest; makers use the rng
for their variations (truncation points, wrong types, random bytes), so the same seed gives
the same bytes. About 15% of the POSTs go to /v1/preview instead. `slow_body` (a body shorter
than its Content-Length on a connection held open) is added only when asked for: judging it
takes the full 10 s.

Each case says what it expects: `reject` (a 4xx), `either` (a 4xx, or accepted and then
succeeds: a degenerate but legal path, an unusual but advertised image) or `valid`
(accepted and succeeds). The farm must run with an API key (D2V_API_KEYS) for the `auth`
cases to mean anything; the sender puts the right key on every other request.
"""

from __future__ import annotations

import io
import json
import math
import random
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from PIL import Image

DEFAULT_AUTH = "default"  # Case.auth: the sender puts the right API key here
ANSWER_WITHIN_S = 10.0  # a request not answered within this counts as a hang
VALID_EVERY = 40  # one valid request among this many

# The smallest legal job: 2 frames of 64x64 from a 64x48 photo.
PHOTO_W, PHOTO_H = 64, 48
CANVAS = {"width": PHOTO_W, "height": PHOTO_H}
LINE = [{"x": 10.0, "y": 12.0}, {"x": 30.0, "y": 20.0}, {"x": 52.0, "y": 34.0}]
GOOD = {"path": {"canvas": CANVAS, "points": LINE}, "effect": "pan", "duration_s": 0.5, "fps": 4,
        "width": 64, "height": 64}
EFFECTS = ("auto", "zoom_in", "pull_back", "pan", "orbit", "dolly_zoom", "spiral", "earth_zoom_out", "crash_zoom")


@dataclass
class Case:
    cls: str
    name: str
    method: str = "POST"
    url: str = "/v1/jobs"  # path and query, already percent-encoded as it goes on the wire
    headers: dict[str, str | bytes] = field(default_factory=dict)
    body: bytes = b""
    stream_mib: int = 0  # > 0: body streamed chunked (no Content-Length): `body`, then this many MiB
    raw: bytes | None = None  # the request's head after the request line, sent on a bare socket
    half_close: bool = False  # raw: shut our side after sending (a body shorter than declared)
    auth: str | bytes | None = DEFAULT_AUTH  # None: no Authorization header; bytes: exactly this
    expect: str = "reject"  # reject | either | valid
    app_level: bool = True  # False: may be refused by the HTTP server before the app (no JSON)
    job_only: bool = False  # refused as a job, legal as a preview (which renders small, camera only)

    def key(self) -> tuple:
        """What identifies the request (for determinism checks)."""
        return (self.cls, self.name, self.method, self.url, tuple(sorted((k, str(v)) for k, v in self.headers.items())),
                zlib.crc32(self.body), self.stream_mib, self.raw, self.half_close, str(self.auth),
                self.expect)


@dataclass
class Outcome:
    case: Case
    status: int | None = None
    seconds: float = 0.0
    error: str | None = None  # transport: "timeout" (a hang) or why the connection ended
    detail: str | None = None  # the JSON `detail`, when there was one
    body_head: str = ""
    job_id: str | None = None
    final: str | None = None  # accepted jobs: succeeded | failed | stuck
    final_error: str | None = None

    @property
    def hang(self) -> bool:
        return self.error == "timeout" or (self.status is not None and self.seconds > ANSWER_WITHIN_S)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 400

    @property
    def detail_ok(self) -> bool:
        return isinstance(self.detail, str) and bool(self.detail.strip())


# --- assets: tiny images in every format, made with Pillow ---------------------------------


def photo_array(width: int = PHOTO_W, height: int = PHOTO_H, seed: int = 0) -> np.ndarray:
    """A small photo-like RGB image: smooth gradients, noise and a few blocks (texture to follow)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / max(width, 1), y / max(height, 1), (x + y) / max(width + height, 1)], -1) * 160
    img += rng.normal(0, 20, img.shape)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, max(1, width - 8))), int(rng.integers(0, max(1, height - 8)))
        img[y0:y0 + 8, x0:x0 + 8] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(im: Image.Image | np.ndarray, fmt: str, **kw) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, extra: bytes = b"") -> bytes:
    """A PNG that claims width x height with almost no data (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def png_zeros(width: int, height: int) -> bytes:
    """A real, complete PNG of black pixels (compresses to almost nothing at any size)."""
    row = b"\0" + b"\0" * (3 * width)
    data = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    i = jpeg.index(b"\xff\xc0") if b"\xff\xc0" in jpeg else jpeg.index(b"\xff\xc2")
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def _bmp_header(width: int, height: int) -> bytes:
    pixels = 54
    return (b"BM" + struct.pack("<IHHI", pixels + 16, 0, 0, pixels)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0) + b"\0" * 16)


def _tiff_header(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
        for tag, typ, count, value in entries) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 16


def _webp_vp8x(width: int, height: int) -> bytes:
    payload = b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@lru_cache(maxsize=1)
def _ztxt_bomb() -> bytes:
    """A PNG whose zTXt chunk inflates to 64 MiB of text."""
    text = b"Comment\0\0" + zlib.compress(b"a" * (64 * 2**20), 9)
    return png_header_only(PHOTO_W, PHOTO_H, extra=_chunk(b"zTXt", text))


def _jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


class Assets:
    """The images the makers use, made once per process (Pillow is deterministic)."""

    def __init__(self):
        rgb = photo_array()
        self.rgb = rgb
        im = Image.fromarray(rgb)
        self.png = encode(im, "PNG")
        self.jpeg = encode(im, "JPEG", quality=85)
        frames = [Image.fromarray(photo_array(seed=i)) for i in range(3)]
        self.not_advertised = {  # name -> (bytes, filename, content type)
            "GIF (static)": (encode(im, "GIF"), "a.gif", "image/gif"),
            "animated GIF": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
                             "a.gif", "image/gif"),
            "APNG": (encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100), "a.png",
                     "image/png"),
            "animated WebP": (encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100),
                              "a.webp", "image/webp"),
            "multi-page TIFF": (encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "a.tif",
                                "image/tiff"),
            "MPO (two JPEGs)": (encode(frames[0], "MPO", save_all=True, append_images=frames[1:2]), "a.jpg",
                                "image/jpeg"),
            "ICO": (encode(im, "ICO"), "a.ico", "image/x-icon"),
            "TGA": (encode(im, "TGA"), "a.tga", "image/x-tga"),
            "PCX": (encode(im, "PCX"), "a.pcx", "image/x-pcx"),
            "PPM": (encode(im, "PPM"), "a.ppm", "image/x-portable-pixmap"),
            "QOI": (encode(im, "QOI"), "a.qoi", "image/qoi"),
            "JPEG 2000": (encode(im, "JPEG2000"), "a.jp2", "image/jp2"),
            "SGI": (encode(im, "SGI"), "a.sgi", "image/sgi"),
            "DDS": (encode(im.convert("RGBA"), "DDS"), "a.dds", "image/vnd-ms.dds"),
            "XBM": (encode(im.convert("1"), "XBM"), "a.xbm", "image/x-xbitmap"),
            "MSP": (encode(im.convert("1"), "MSP"), "a.msp", "application/octet-stream"),
            "PDF": (encode(im, "PDF"), "a.pdf", "application/pdf"),
            "EPS": (encode(im, "EPS"), "a.eps", "application/postscript"),
            "DIB": (encode(im, "DIB"), "a.bmp", "image/bmp"),
            "SVG": (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48"/>'
                    b'</svg>', "a.svg", "image/svg+xml"),
        }
        self.odd_advertised = {  # legal JPEG/PNG/WebP/AVIF/HEIC/BMP/TIFF in unusual modes
            "PNG 16-bit gray": encode(Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)), "PNG"),
            "PNG gray+alpha": encode(im.convert("LA"), "PNG"),
            "PNG palette with transparency": encode(im.convert("P"), "PNG", transparency=0),
            "PNG RGBA half transparent": encode(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "PNG"),
            "PNG 1-bit": encode(im.convert("1"), "PNG"),
            "JPEG CMYK": encode(im.convert("CMYK"), "JPEG"),
            "JPEG gray": encode(im.convert("L"), "JPEG"),
            "JPEG progressive": encode(im, "JPEG", progressive=True, quality=10),
            "JPEG quality 1": encode(im, "JPEG", quality=1),
            "JPEG EXIF orientation 6": encode(im, "JPEG", exif=_exif_orientation(6)),
            "JPEG EXIF orientation 8": encode(im, "JPEG", exif=_exif_orientation(8)),
            "JPEG EXIF orientation 0": encode(im, "JPEG", exif=_exif_orientation(0)),
            "JPEG EXIF orientation 9": encode(im, "JPEG", exif=_exif_orientation(9)),
            "JPEG EXIF orientation 65535": encode(im, "JPEG", exif=_exif_orientation(65535)),
            "JPEG with a corrupt EXIF block": _jpeg_with_app1(self.jpeg, b"Exif\0\0II*\0\x08\0\0\0\xff\xff\x12\x01"),
            "JPEG with a truncated EXIF header": _jpeg_with_app1(self.jpeg, b"Exif\0\0MM\0*"),
            "BMP 1-bit": encode(im.convert("1"), "BMP"),
            "BMP palette": encode(im.convert("P"), "BMP"),
            "BMP RGBA": encode(im.convert("RGBA"), "BMP"),
            "TIFF float": encode(Image.fromarray(rgb[..., 0].astype(np.float32) / 255), "TIFF"),
            "TIFF 16-bit gray": encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "TIFF"),
            "TIFF RGBA": encode(im.convert("RGBA"), "TIFF"),
            "TIFF CMYK": encode(im.convert("CMYK"), "TIFF"),
            "TIFF LZW": encode(im, "TIFF", compression="tiff_lzw"),
            "TIFF JPEG-compressed": encode(im, "TIFF", compression="jpeg"),
            "TIFF 1-bit group4": encode(im.convert("1"), "TIFF", compression="group4"),
            "WebP lossless with alpha": encode(im.convert("RGBA"), "WEBP", lossless=True),
            "WebP lossy": encode(im, "WEBP", quality=5),
            "AVIF": encode(im, "AVIF"),
            "HEIC": encode(im, "HEIF"),  # (pillow-heif's writer, registered in `encode`)
            "PNG 16x16 (the smallest allowed)": encode(im.resize((16, 16)), "PNG"),
            "PNG 16x4000 (a sliver)": png_zeros(16, 4000),
            "PNG 4000x16 (a sliver)": png_zeros(4000, 16),
            "PNG 40000x16 (extreme aspect)": png_zeros(40000, 16),
        }


@lru_cache(maxsize=1)
def assets() -> Assets:
    return Assets()


# --- building requests ---------------------------------------------------------------------

Part = tuple  # (name, content bytes, filename or None, content type or None[, extra header lines])


def multipart(parts: list[Part], boundary: str) -> bytes:
    out = []
    for name, content, filename, ctype, *extra in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        for line in (extra[0] if extra else []):
            head += line + "\r\n"
        out.append(head.encode("utf-8") + b"\r\n" + content + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def _boundary(rng: random.Random) -> str:
    return "d2v" + "".join(rng.choice("0123456789abcdef") for _ in range(16))


def form_case(cls: str, name: str, rng: random.Random, *, image: bytes | None = None, request=None,
              filename: str = "photo.png", ctype: str = "image/png", extra: list[Part] = (), expect: str = "reject",
              **kw) -> Case:
    """A multipart POST /v1/jobs: `image` (default: the tiny PNG) and `request` (a dict is
    dumped; a str or bytes goes as is; None: GOOD)."""
    a = assets()
    image = a.png if image is None else image
    request = GOOD if request is None else request
    text = json.dumps(request).encode() if isinstance(request, (dict, list)) else (
        request.encode("utf-8", "surrogatepass") if isinstance(request, str) else request)
    boundary = _boundary(rng)
    parts = [("image", image, filename, ctype), ("request", text, None, None), *extra]
    return Case(cls, name, body=multipart(parts, boundary),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, expect=expect, **kw)


def with_literal(base: dict, where: tuple, literal: str) -> str:
    """JSON text of `base` with the value at `where` (keys/indices) replaced by raw JSON text
    (NaN, Infinity, 1e400, a 5,000-digit number...), which json.dumps cannot write."""
    doc = json.loads(json.dumps(base))
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = "@@LITERAL@@"
    return json.dumps(doc).replace('"@@LITERAL@@"', literal)


def good_request(rng: random.Random) -> dict:
    """A legal request with a random effect, path and seed (a fresh job each time)."""
    n = rng.randint(2, 12)
    kind = rng.choice(["line", "arc", "loop"])
    pts = []
    for i in range(n):
        u = i / (n - 1)
        if kind == "line":
            x, y = 8 + u * 48, 10 + u * 28
        else:
            turn = (2.0 if kind == "loop" else 0.8) * math.pi * u
            x, y = 32 + 14 * math.cos(turn), 24 + 12 * math.sin(turn)
        pts.append({"x": round(x + rng.uniform(-0.5, 0.5), 2), "y": round(y + rng.uniform(-0.5, 0.5), 2)})
    return {**GOOD, "path": {"canvas": CANVAS, "points": pts}, "effect": rng.choice(EFFECTS),
            "seed": rng.randint(0, 2**32 - 1)}


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


# --- the makers, by class ------------------------------------------------------------------

Maker = Callable[[random.Random], Case]
MAKERS: dict[str, list[Maker]] = {}


def maker(cls: str):
    def register(fn: Maker) -> Maker:
        MAKERS.setdefault(cls, []).append(fn)
        return fn
    return register


def _plain(cls: str, name: str, body: bytes, ctype: str | None) -> Case:
    return Case(cls, name, body=body, headers={"Content-Type": ctype} if ctype else {})


# body: not multipart, or multipart that cannot be parsed
@maker("body")
def _json_body(rng):
    return _plain("body", "application/json body (the request alone)", json.dumps(GOOD).encode(), "application/json")


@maker("body")
def _urlencoded(rng):
    body = ("request=" + quote(json.dumps(GOOD)) + "&image=photo.png").encode()
    return _plain("body", "form-urlencoded body", body, "application/x-www-form-urlencoded")


@maker("body")
def _text_body(rng):
    return _plain("body", "text/plain body", b"please render my photo", "text/plain")


@maker("body")
def _no_content_type(rng):
    return _plain("body", "multipart body without a Content-Type", form_case("body", "", rng).body, None)


@maker("body")
def _empty_multipart(rng):
    return _plain("body", "empty body, multipart Content-Type", b"", f"multipart/form-data; boundary={_boundary(rng)}")


@maker("body")
def _no_boundary(rng):
    return _plain("body", "multipart Content-Type without a boundary", form_case("body", "", rng).body,
                  "multipart/form-data")


@maker("body")
def _wrong_boundary(rng):
    return _plain("body", "boundary in the header not the body's", form_case("body", "", rng).body,
                  f"multipart/form-data; boundary={_boundary(rng)}")


@maker("body")
def _no_final_boundary(rng):
    case = form_case("body", "multipart without its closing boundary", rng)
    case.body = case.body[: case.body.rindex(b"--d2v")]
    return case


@maker("body")
def _truncated_multipart(rng):
    case = form_case("body", "multipart cut at a random byte", rng)
    case.body = case.body[: rng.randint(1, len(case.body) - 1)]
    return case


@maker("body")
def _garbage_multipart(rng):
    return _plain("body", "random bytes, multipart Content-Type", _random_bytes(rng, rng.randint(1, 4096)),
                  f"multipart/form-data; boundary={_boundary(rng)}")


@maker("body")
def _no_disposition(rng):
    boundary = _boundary(rng)
    body = (f"--{boundary}\r\nContent-Type: image/png\r\n\r\n".encode() + assets().png
            + f"\r\n--{boundary}--\r\n".encode())
    return _plain("body", "a part without Content-Disposition", body, f"multipart/form-data; boundary={boundary}")


@maker("body")
def _header_without_colon(rng):
    boundary = _boundary(rng)
    body = f"--{boundary}\r\nthis is not a header\r\n\r\nx\r\n--{boundary}--\r\n".encode()
    return _plain("body", "a part header without a colon", body, f"multipart/form-data; boundary={boundary}")


@maker("body")
def _long_boundary(rng):
    boundary = "b" * 5000
    body = multipart([("image", assets().png, "p.png", "image/png"),
                      ("request", json.dumps(GOOD).encode(), None, None)], boundary)
    return _plain("body", "a 5,000-character boundary", body, f"multipart/form-data; boundary={boundary}")


@maker("body")
def _multipart_mixed(rng):
    case = form_case("body", "multipart/mixed instead of form-data", rng)
    case.headers["Content-Type"] = case.headers["Content-Type"].replace("form-data", "mixed")
    return case


@maker("body")
def _too_many_fields(rng):
    boundary = _boundary(rng)
    parts = [("image", assets().png, "p.png", "image/png"), ("request", json.dumps(GOOD).encode(), None, None)]
    parts += [(f"f{i}", b"x", None, None) for i in range(rng.choice([1001, 1500, 3000]))]
    return _plain("body", "over 1,000 fields", multipart(parts, boundary), f"multipart/form-data; boundary={boundary}")


@maker("body")
def _too_many_files(rng):
    boundary = _boundary(rng)
    parts = [("request", json.dumps(GOOD).encode(), None, None)]
    parts += [("image", b"x", f"{i}.png", "image/png") for i in range(1001)]
    return _plain("body", "over 1,000 files", multipart(parts, boundary), f"multipart/form-data; boundary={boundary}")


@maker("body")
def _base64_part(rng):
    import base64
    return form_case("body", "request field in base64 (Content-Transfer-Encoding)", rng,
                     request=base64.b64encode(json.dumps(GOOD).encode()))


# fields: missing, duplicated, misnamed
@maker("fields")
def _missing_image(rng):
    boundary = _boundary(rng)
    body = multipart([("request", json.dumps(GOOD).encode(), None, None)], boundary)
    return _plain("fields", "no image field", body, f"multipart/form-data; boundary={boundary}")


@maker("fields")
def _missing_request(rng):
    boundary = _boundary(rng)
    body = multipart([("image", assets().png, "p.png", "image/png")], boundary)
    return _plain("fields", "no request field", body, f"multipart/form-data; boundary={boundary}")


@maker("fields")
def _no_fields(rng):
    boundary = _boundary(rng)
    return _plain("fields", "only an unknown field", multipart([("hello", b"world", None, None)], boundary),
                  f"multipart/form-data; boundary={boundary}")


@maker("fields")
def _image_as_text(rng):
    boundary = _boundary(rng)
    body = multipart([("image", assets().png, None, None), ("request", json.dumps(GOOD).encode(), None, None)],
                     boundary)
    return _plain("fields", "image sent as a text field (no filename)", body,
                  f"multipart/form-data; boundary={boundary}")


@maker("fields")
def _misnamed(rng):
    boundary = _boundary(rng)
    names = rng.choice([("Image", "Request"), ("IMAGE", "request"), ("image ", "request"), ("img", "req"),
                        ("file", "json"), ("", "request")])
    body = multipart([(names[0], assets().png, "p.png", "image/png"),
                      (names[1], json.dumps(GOOD).encode(), None, None)], boundary)
    return _plain("fields", f"fields named {names!r}", body, f"multipart/form-data; boundary={boundary}")


@maker("fields")
def _duplicate_request(rng):
    bad = rng.choice(['{"path": 1}', "not json", json.dumps({**GOOD, "fps": 0})])
    first, second = (bad, json.dumps(GOOD)) if rng.random() < 0.5 else (json.dumps(GOOD), bad)
    case = form_case("fields", "two request fields, one bad", rng, request=first,
                     extra=[("request", second.encode(), None, None)])
    case.expect = "either"
    return case


@maker("fields")
def _duplicate_image(rng):
    bad = rng.choice([b"", b"not an image", assets().png[:40]])
    case = form_case("fields", "two image files, one bad", rng, extra=[("image", bad, "b.png", "image/png")])
    if rng.random() < 0.5:  # the bad one first
        boundary = case.headers["Content-Type"].split("=")[1]
        case.body = multipart([("image", bad, "b.png", "image/png"), ("image", assets().png, "p.png", "image/png"),
                               ("request", json.dumps(GOOD).encode(), None, None)], boundary)
    case.expect = "either"
    return case


@maker("fields")
def _empty_image_file(rng):
    return form_case("fields", "image file of 0 bytes", rng, image=b"")


@maker("fields")
def _empty_request(rng):
    return form_case("fields", "request field empty", rng, request=rng.choice([b"", b" ", b"\r\n"]))


@maker("fields")
def _request_as_file(rng):
    boundary = _boundary(rng)
    request = json.dumps(good_request(rng)).encode()
    body = multipart([("image", assets().png, "p.png", "image/png"),
                      ("request", request, "request.json", "application/json")], boundary)
    return Case("fields", "request sent as a file (legal)", body=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, expect="either")


@maker("fields")
def _hostile_filename(rng):
    name = rng.choice(["../../etc/passwd.png", "a\0b.png", "x" * 5000 + ".png", "日本語.png", "con.png", ".png",
                       "a\\..\\..\\b.png"])
    return form_case("fields", f"hostile filename {name[:24]!r}", rng, request=good_request(rng),
                     filename=name, expect="either")


@maker("fields")
def _huge_text_field(rng):
    return form_case("fields", "request field of 2 MB", rng, request=b" " * (2 * 2**20) + json.dumps(GOOD).encode())


@maker("fields")
def _invalid_utf8_request(rng):
    return form_case("fields", "request field not UTF-8", rng,
                     request=b'{"path": "\xff\xfe\xfd", "effect": "\xc3\x28"}')


@maker("fields")
def _utf16_request(rng):
    return form_case("fields", "request field in UTF-16", rng, request=json.dumps(good_request(rng)).encode("utf-16"),
                     expect="either")


# json: the request field
@maker("json")
def _not_json(rng):
    text = rng.choice(["{not json", "{'path': []}", '{"path": [],}', "", "null", "[]", "42", '"a string"', "true",
                       '{"path": ', "\ufeff" + json.dumps(GOOD)[:-1], "{}" * 3, "<xml/>"])
    return form_case("json", f"request {text[:20]!r}", rng, request=text)


@maker("json")
def _random_text(rng):
    text = "".join(rng.choice('{}[]",:0123456789.eE+-truefalsn \\') for _ in range(rng.randint(1, 200)))
    return form_case("json", "random JSON-ish characters", rng, request=text)


WRONG_TYPES = [None, True, "many", [], {}, [1, 2], {"a": 1}, "", 1.5, -1, 10**20, "1e3"]


@maker("json")
def _wrong_type(rng):
    fld = rng.choice(["path", "effect", "duration_s", "fps", "width", "height", "backend", "seed", "shake", "loop",
                      "end_zoom", "preset", "crf", "motion_blur_samples"])
    value = rng.choice(WRONG_TYPES)
    return form_case("json", f"{fld} = {value!r:.20}", rng, request={**GOOD, fld: value}, expect="either")


@maker("json")
def _unknown_effect(rng):
    name = rng.choice(["warp_drive", "ZOOM_IN", "zoom-in", "", " pan", "auto ", "Pan", "orbit\0", "x" * 10000,
                       "ズーム", "__class__"])
    return form_case("json", f"unknown effect {name[:20]!r}", rng, request={**GOOD, "effect": name})


@maker("json")
def _unknown_backend(rng):
    name = rng.choice(["gpu", "SVD", "", "camera ", "sora", "svd"])  # svd: no model configured here
    return form_case("json", f"backend {name!r}", rng, request={**GOOD, "backend": name}, job_only=name == "svd")


@maker("json")
def _unknown_field(rng):
    fld = rng.choice(["image", "depth", "id", "resolution", "Fps", "callback_url", "__proto__"])
    return form_case("json", f"unknown field {fld!r}", rng, request={**GOOD, fld: 1})


OUT_OF_RANGE = {
    "duration_s": [0, -1, 0.49, 20.01, 86400, 1e308, -0.0],
    "fps": [0, -24, 61, 1000, 2**63],
    "width": [0, -64, 63, 65, 3841, 7680, 10**9],
    "height": [0, -64, 63, 65, 3841, 4321, 10**9],
    "seed": [-1, 2**32, 2**64],
    "end_zoom": [0.5, 0, 21, 1e300],
    "shake": [-0.1, 1.01, 100],
    "crf": [-1, 52],
    "motion_blur_samples": [0, 1, 33, 10**6],
    "num_inference_steps": [0, 101],
}


@maker("json")
def _out_of_range(rng):
    fld = rng.choice(sorted(OUT_OF_RANGE))
    value = rng.choice(OUT_OF_RANGE[fld])
    return form_case("json", f"{fld} = {value!r:.24} (out of range)", rng, request={**GOOD, fld: value})


@maker("json")
def _too_many_frames(rng):
    request = {**GOOD, "width": 3840, "height": 2160, "duration_s": rng.choice([15, 20]), "fps": 60}
    return form_case("json", "4K, 60 fps, 15-20 s (too many GiB of frames)", rng, request=request, job_only=True)


@maker("json")
def _literal(rng):
    fld = rng.choice(["duration_s", "fps", "width", "seed", "shake", "end_zoom"])
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 5000, "9" * 4400,
                          "1e-400", "0.0000000000000000000000000000001", "-0", "1E+2"])
    expect = "either" if literal in ("1e-400", "-0", "1E+2", "0.0000000000000000000000000000001") else "reject"
    return form_case("json", f"{fld} = {literal[:12]}", rng, request=with_literal(GOOD, (fld,), literal), expect=expect)


@maker("json")
def _literal_in_path(rng):
    where = rng.choice([("path", "points", 1, "x"), ("path", "points", 0, "y"), ("path", "canvas", "width")])
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 5000])
    return form_case("json", f"{'.'.join(map(str, where))} = {literal[:12]}", rng,
                     request=with_literal(GOOD, where, literal))


@maker("json")
def _deep_nesting(rng):
    depth = rng.choice([17, 100, 1000, 10_000, 100_000])
    where = rng.choice(["top", "path", "points", "effect", "object"])
    if where == "top":
        text = "[" * depth + "]" * depth
    elif where == "object":
        text = '{"a":' * depth + "1" + "}" * depth
    else:
        nest = "[" * depth + "]" * depth
        text = with_literal(GOOD, {"path": ("path",), "points": ("path", "points"), "effect": ("effect",)}[where], nest)
    return form_case("json", f"JSON nested {depth:,} deep in {where}", rng, request=text)


@maker("json")
def _duplicate_keys(rng):
    text = json.dumps(GOOD)[:-1] + ', "fps": "x"}'
    return form_case("json", "duplicate key (the second bad)", rng, request=text)


# path: degenerate drawn paths
def _path_case(name: str, rng, path, expect: str = "either", **overrides) -> Case:
    return form_case("path", name, rng, request={**GOOD, "seed": rng.randint(0, 9), **overrides, "path": path},
                     expect=expect)


def _pts(xy, t=None):
    if t is None:
        return [{"x": x, "y": y} for x, y in xy]
    return [{"x": x, "y": y, "t": tt} for (x, y), tt in zip(xy, t)]


@maker("path")
def _one_point(rng):
    return _path_case("one point", rng, {"canvas": CANVAS, "points": _pts([(10, 10)])}, "reject")


@maker("path")
def _no_points(rng):
    return _path_case("no points", rng, rng.choice([{"canvas": CANVAS, "points": []}, [], {"canvas": CANVAS}]),
                      "reject")


@maker("path")
def _identical(rng):
    n = rng.choice([2, 10, 1000])
    return _path_case(f"{n} identical points", rng, {"canvas": CANVAS, "points": _pts([(20.0, 20.0)] * n)}, "reject")


@maker("path")
def _near_identical(rng):
    gap = rng.choice([1e-10, 1e-12, 1e-15, 1e-7])
    return _path_case(f"two points {gap:g} apart", rng, {"canvas": CANVAS, "points": _pts([(20.0, 20.0),
                                                                                          (20.0 + gap, 20.0)])})


@maker("path")
def _jittered_cloud(rng):
    n = rng.choice([1000, 3000])
    spread = rng.choice([1e-9, 1e-6, 1e-3])
    xy = [(20 + rng.uniform(-spread, spread), 20 + rng.uniform(-spread, spread)) for _ in range(n)]
    return _path_case(f"{n} near-identical points (±{spread:g})", rng, {"canvas": CANVAS, "points": _pts(xy)})


@maker("path")
def _huge_coordinates(rng):
    v = rng.choice([1e308, 1.7e308, -1e308, 1e200, 1e20])
    xy = rng.choice([[(0, 0), (v, v)], [(v, 0), (-v, 0)], [(10, 10), (v, 20), (30, 30)]])
    return _path_case(f"coordinates of {v:g}", rng, {"canvas": CANVAS, "points": _pts(xy)})


@maker("path")
def _huge_canvas(rng):
    side = rng.choice([1e300, 1e308, 1e20])
    return _path_case(f"canvas {side:g} wide", rng, {"canvas": {"width": side, "height": side}, "points": LINE})


@maker("path")
def _tiny_canvas(rng):
    side = rng.choice([1e-300, 5e-324, 1e-10])
    return _path_case(f"canvas {side:g} wide", rng, {"canvas": {"width": side, "height": side}, "points": LINE})


@maker("path")
def _bad_canvas(rng):
    canvas = rng.choice([{"width": 0, "height": 0}, {"width": -64, "height": 48}, {"width": 64, "height": -1},
                         {"width": 64}, {"width": "64", "height": "48"}, {"width": None, "height": 48}, [64, 48]])
    expect = "either" if canvas == {"width": "64", "height": "48"} else "reject"
    return _path_case(f"canvas {canvas!r}", rng, {"canvas": canvas, "points": LINE}, expect)


@maker("path")
def _too_many_points(rng):
    n = rng.choice([10_001, 20_000])
    xy = [(10 + 40 * i / n, 10 + 20 * i / n) for i in range(n)]
    return _path_case(f"{n:,} points", rng, {"canvas": CANVAS, "points": _pts(xy)}, "reject")


@maker("path")
def _max_points(rng):
    n = 10_000
    xy = [(10 + 40 * i / n + rng.uniform(-0.3, 0.3), 10 + 20 * i / n) for i in range(n)]
    return _path_case("10,000 points (the most allowed)", rng, {"canvas": CANVAS, "points": _pts(xy)})


@maker("path")
def _outside(rng):
    far = rng.choice([1e3, 1e6, -1e6, 1e12])
    xy = rng.choice([[(far, far), (far + 50, far + 10)], [(10, 10), (far, 20)], [(-far, -far), (far, far)]])
    return _path_case(f"points far outside the canvas ({far:g})", rng, {"canvas": CANVAS, "points": _pts(xy)})


@maker("path")
def _times(rng):
    xy = [(10, 10), (20, 15), (30, 20), (40, 25)]
    t, name = rng.choice([
        ([3, 2, 1, 0], "t decreasing"), ([0, 0, 0, 0], "t all equal"), ([-5, -4, -3, -2], "t negative"),
        ([0, 1e308, 1.7e308, 1.79e308], "t up to 1.79e308"), ([0, 1e-300, 2e-300, 3e-300], "t 1e-300 apart"),
        ([0, 5, 1, 9], "t out of order"), ([-1.7e308, -1e308, 1e308, 1.7e308], "t from -1.7e308 to 1.7e308"),
        ([0, 5e-324, 1e-323, 1.5e-323], "t 5e-324 apart"),
    ])
    effect = rng.choice(["pan", "zoom_in", "auto"])
    return _path_case(name, rng, {"canvas": CANVAS, "points": _pts(xy, t)}, effect=effect)


@maker("path")
def _bad_times(rng):
    xy = [(10, 10), (20, 15), (30, 20)]
    base = {"canvas": CANVAS, "points": _pts(xy, [0, 0.1, 0.2])}
    choice = rng.choice(["NaN", "Infinity", "mixed", "string"])
    if choice == "mixed":
        base["points"][1].pop("t")
        return _path_case("t on some points only", rng, base, "reject")
    if choice == "string":
        base["points"][1]["t"] = "soon"
        return _path_case("t a string", rng, base, "reject")
    return form_case("path", f"t {choice}", rng, request=with_literal({**GOOD, "path": base},
                                                                     ("path", "points", 1, "t"), choice))


@maker("path")
def _bare_list(rng):
    pts = rng.choice([[[10, 10], [20, 20]], [{"x": 10}, {"x": 20}], [{"x": 10, "y": 10}, "a"], [1, 2, 3],
                      [{"x": 10, "y": 10}, {"x": 50, "y": 40}], [{"x": True, "y": False}, {"x": False, "y": True}],
                      [{"x": "10", "y": "10"}, {"x": "50", "y": "40"}]])
    return _path_case(f"bare list {json.dumps(pts)[:32]}", rng, pts)


@maker("path")
def _pixel_path_outside(rng):
    pts = [{"x": rng.uniform(-1e4, 1e4), "y": rng.uniform(-1e4, 1e4)} for _ in range(rng.randint(2, 6))]
    return _path_case("bare pixel path mostly outside the photo", rng, pts, effect=rng.choice(EFFECTS))


@maker("path")
def _random_path(rng):
    pts = [{"x": rng.uniform(-10, 74), "y": rng.uniform(-10, 58)} for _ in range(rng.randint(2, 40))]
    return _path_case("random scribble", rng, {"canvas": CANVAS, "points": pts}, effect=rng.choice(EFFECTS),
                      loop=rng.random() < 0.3, shake=rng.choice([0, 1]), speed_ramp=rng.choice([0, 1]),
                      allow_borders=rng.random() < 0.3, end_zoom=rng.choice([None, 1.0, 20.0]))


@maker("path")
def _zigzag(rng):
    n = rng.choice([50, 500])
    xy = [(10 + 40 * i / n, 10 + (i % 2) * rng.choice([1e-6, 0.5, 30])) for i in range(n)]
    return _path_case(f"zigzag of {n} points", rng, {"canvas": CANVAS, "points": _pts(xy)}, effect=rng.choice(EFFECTS))


# image: not images
@maker("image")
def _text_image(rng):
    return form_case("image", "text named .png", rng, image=b"this is not a picture " * rng.randint(1, 50))


@maker("image")
def _html_png(rng):
    return form_case("image", "an HTML page named .png", rng,
                     image=b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>")


@maker("image")
def _zero_bytes(rng):
    return form_case("image", "zero bytes", rng, image=b"")


@maker("image")
def _random_image_bytes(rng):
    return form_case("image", "random bytes", rng, image=_random_bytes(rng, rng.randint(1, 20000)))


@maker("image")
def _truncated_png(rng):
    data = assets().png
    return form_case("image", "truncated PNG", rng, image=data[: rng.randint(8, len(data) - 13)])


@maker("image")
def _truncated_jpeg(rng):
    data = assets().jpeg
    return form_case("image", "truncated JPEG", rng, image=data[: rng.randint(2, len(data) - 3)],
                     filename="p.jpg", ctype="image/jpeg")


@maker("image")
def _magic_only(rng):
    magic = rng.choice([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\0\0\0\0WEBP", b"BM", b"II*\0", b"MM\0*"])
    return form_case("image", f"magic {magic[:4]!r} and nothing else", rng, image=magic)


@maker("image")
def _flipped_bytes(rng):
    data = bytearray(rng.choice([assets().png, assets().jpeg]))
    for _ in range(rng.randint(1, 20)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return form_case("image", "a photo with random bytes changed", rng, image=bytes(data), expect="either")


@maker("image")
def _bad_crc(rng):
    data = bytearray(assets().png)
    data[29] ^= 0xFF  # inside IHDR's CRC
    return form_case("image", "PNG with a bad IHDR CRC", rng, image=bytes(data))


@maker("image")
def _png_zero_height(rng):
    return form_case("image", "PNG declaring 0 rows", rng, image=png_header_only(64, 0))


@maker("image")
def _tiny(rng):
    w, h = rng.choice([(1, 1), (15, 64), (64, 15), (2, 2)])
    return form_case("image", f"a {w}x{h} PNG", rng, image=encode(photo_array(w, h), "PNG"))


@maker("image")
def _archive(rng):
    data = rng.choice([b"PK\x03\x04" + _random_bytes(rng, 64), b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", b"\x1f\x8b\x08\0",
                       b"#!/bin/sh\nrm -rf /\n"])
    return form_case("image", f"not an image ({data[:4]!r})", rng, image=data)


# format: images Pillow can read that d2v does not advertise
def _format_maker(name: str) -> Maker:
    def make(rng):
        data, filename, ctype = assets().not_advertised[name]
        return form_case("format", name, rng, image=data, filename=filename, ctype=ctype)
    return make


for _name in ("GIF (static)", "animated GIF", "APNG", "animated WebP", "multi-page TIFF", "MPO (two JPEGs)", "ICO",
              "TGA", "PCX", "PPM", "QOI", "JPEG 2000", "SGI", "DDS", "XBM", "MSP", "PDF", "EPS", "DIB",
              "SVG"):
    MAKERS.setdefault("format", []).append(_format_maker(_name))


# odd_image: advertised formats in unusual modes: a 4xx, or a job that succeeds
def _odd_maker(name: str) -> Maker:
    def make(rng):
        return form_case("odd_image", name, rng, image=assets().odd_advertised[name],
                         request={**GOOD, "effect": rng.choice(["auto", "orbit", "zoom_in"])}, expect="either")
    return make


for _name in ("PNG 16-bit gray", "PNG gray+alpha", "PNG palette with transparency", "PNG RGBA half transparent",
              "PNG 1-bit", "JPEG CMYK", "JPEG gray", "JPEG progressive", "JPEG quality 1", "JPEG EXIF orientation 6",
              "JPEG EXIF orientation 8", "JPEG EXIF orientation 0", "JPEG EXIF orientation 9",
              "JPEG EXIF orientation 65535", "JPEG with a corrupt EXIF block", "JPEG with a truncated EXIF header",
              "BMP 1-bit", "BMP palette", "BMP RGBA", "TIFF float", "TIFF 16-bit gray", "TIFF RGBA", "TIFF CMYK",
              "TIFF LZW", "TIFF JPEG-compressed", "TIFF 1-bit group4", "WebP lossless with alpha", "WebP lossy",
              "AVIF", "HEIC",
              "PNG 16x16 (the smallest allowed)", "PNG 16x4000 (a sliver)", "PNG 4000x16 (a sliver)",
              "PNG 40000x16 (extreme aspect)"):
    MAKERS.setdefault("odd_image", []).append(_odd_maker(_name))


# bomb: huge declared dimensions
@maker("bomb")
def _png_bomb(rng):
    w, h = rng.choice([(20000, 20000), (65535, 65535), (2**31 - 1, 2**31 - 1), (1, 100_000_000), (100_000_000, 16),
                       (7000, 6000)])
    return form_case("bomb", f"PNG header claiming {w}x{h}", rng, image=png_header_only(w, h))


@maker("bomb")
def _jpeg_bomb(rng):
    w, h = rng.choice([(65500, 65500), (65535, 1000), (10000, 10000)])
    return form_case("bomb", f"JPEG SOF claiming {w}x{h}", rng, image=_patch_jpeg_size(assets().jpeg, w, h),
                     filename="p.jpg", ctype="image/jpeg")


@maker("bomb")
def _bmp_bomb(rng):
    w, h = rng.choice([(50000, 50000), (2**31 - 1, 1), (100000, -100000)])
    return form_case("bomb", f"BMP header claiming {w}x{h}", rng, image=_bmp_header(w, h), filename="p.bmp",
                     ctype="image/bmp")


@maker("bomb")
def _tiff_bomb(rng):
    w, h = rng.choice([(100000, 100000), (2**32 - 1, 2**32 - 1), (40000, 40000)])
    return form_case("bomb", f"TIFF header claiming {w}x{h}", rng, image=_tiff_header(w, h), filename="p.tif",
                     ctype="image/tiff")


@maker("bomb")
def _webp_bomb(rng):
    w, h = rng.choice([(16384, 16384), (2**24, 2**24)])
    return form_case("bomb", f"WebP VP8X claiming {w}x{h}", rng, image=_webp_vp8x(w, h), filename="p.webp",
                     ctype="image/webp")


@maker("bomb")
def _ztxt(rng):
    return form_case("bomb", "PNG with a zTXt chunk inflating to 64 MiB", rng, image=_ztxt_bomb())


# depth: the optional depth map
def _depth_case(name: str, rng, depth: bytes | str, expect: str = "reject", filename: str = "d.png") -> Case:
    if isinstance(depth, str):  # a text field, not a file: ignored
        extra = [("depth", depth.encode(), None, None)]
    else:
        extra = [("depth", depth, filename, "image/png")]
    return form_case("depth", name, rng, request={**GOOD, "effect": rng.choice(["dolly_zoom", "orbit", "pan"]),
                                                  "seed": rng.randint(0, 3)}, extra=extra, expect=expect)


@maker("depth")
def _depth_text(rng):
    return _depth_case("depth map that is text", rng, b"depth please")


@maker("depth")
def _depth_truncated(rng):
    data = encode(photo_array(seed=3)[..., 0], "PNG")
    return _depth_case("truncated depth PNG", rng, data[: rng.randint(8, len(data) - 13)])


@maker("depth")
def _depth_empty(rng):
    return _depth_case("depth map of 0 bytes", rng, b"")


@maker("depth")
def _depth_bomb(rng):
    return _depth_case("depth PNG header claiming 30000x30000", rng, png_header_only(30000, 30000))


@maker("depth")
def _depth_animated(rng):
    return _depth_case("depth map an animated GIF", rng, assets().not_advertised["animated GIF"][0], filename="d.gif")


@maker("depth")
def _depth_tiny(rng):
    return _depth_case("depth map 8x8", rng, encode(np.zeros((8, 8), np.uint8), "PNG"))


@maker("depth")
def _depth_random(rng):
    return _depth_case("depth map of random bytes", rng, _random_bytes(rng, rng.randint(1, 5000)))


@maker("depth")
def _depth_as_text_field(rng):
    return _depth_case("depth as a text field (ignored)", rng, "not a file", expect="either")


@maker("depth")
def _depth_odd(rng):
    name, data = rng.choice([
        ("depth 16-bit PNG", encode(Image.fromarray(photo_array(seed=4)[..., 0].astype(np.uint16) * 257), "PNG")),
        ("depth colour JPEG", encode(photo_array(seed=5), "JPEG")),
        ("depth float TIFF", encode(Image.fromarray(photo_array(seed=6)[..., 0].astype(np.float32)), "TIFF")),
        ("depth all one value", encode(np.full((48, 64), 7, np.uint8), "PNG")),
        ("depth 2000x2000 of zeros", png_zeros(2000, 2000)),
        ("depth a 16x4000 sliver", png_zeros(16, 4000)),
    ])
    return _depth_case(name, rng, data, expect="either")


# auth: with API keys set on the farm, every one of these is a 401
def _auth_case(name: str, rng, header: bytes | None, method: str = "POST") -> Case:
    if method == "GET":
        return Case("auth", name, method="GET", url="/v1/jobs/0123456789abcdef01234567", auth=header)
    case = form_case("auth", name, rng, request=good_request(rng))
    case.auth = header
    return case


@maker("auth")
def _no_auth(rng):
    return _auth_case("no Authorization header", rng, None, rng.choice(["POST", "GET"]))


@maker("auth")
def _bad_auth(rng):
    header = rng.choice([b"Bearer ", b"Bearer", b"bearer wrong", b"Basic dXNlcjpwYXNz", b"Bearer wrong-key",
                         b"Bearer \xc3\xa9\xc3\xa8\xe2\x82\xac", b"Bearer \xff\xfe", b"Bearer " + b"k" * 8000,
                         b"Token abc", b"Bearer  ", b"Bearer a b c", b"\xe2\x80\x8bBearer x"])
    return _auth_case(f"Authorization {header[:24]!r}", rng, header, rng.choice(["POST", "GET"]))


@maker("auth")
def _auth_huge(rng):
    return _auth_case("Authorization of 60 KB", rng, b"Bearer " + b"x" * 60_000)


# ids: GET with bad job ids (sent raw, as written)
def _get(name: str, url: str, app_level: bool = True) -> Case:
    return Case("ids", name, method="GET", url=url, app_level=app_level)


BAD_IDS = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "../../../etc/passwd", "..", "%2E%2E",
           "a" * 129, "a" * 1000, "%C3%A9t%C3%A9", "%F0%9F%98%80", "%E2%80%AE%E2%80%8B", "%00", "abc%00def", "%",
           "%zz", "%20", "-leading-dash", "_underscore", "a.b", "a%0Ab", "a%0D%0AX-Injected:%201", "%2F", "",
           "jobs%5C..%5C..%5Cwindows", "0123456789abcdef01234567", "ZZZZZZZZZZZZZZZZZZZZZZZZ", "%25", "*", "$(id)"]


@maker("ids")
def _bad_status(rng):
    job = rng.choice(BAD_IDS)
    return _get(f"status of {job[:24]!r}", f"/v1/jobs/{job}")


@maker("ids")
def _bad_video(rng):
    job = rng.choice(BAD_IDS)
    sub = rng.choice(["video", "poster", "fidelity", "../video", "video/extra", "nope"])
    return _get(f"{sub} of {job[:24]!r}", f"/v1/jobs/{job}/{sub}")


@maker("ids")
def _bad_wait(rng):
    value = rng.choice(["-1", "31", "nan", "inf", "-inf", "1e400", "soon", "", "1" * 5000, "0x10"])
    return _get(f"wait_s={value[:12]!r}", f"/v1/jobs/0123456789abcdef01234567?wait_s={quote(value)}")


@maker("ids")
def _random_id(rng):
    job = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_%./~") for _ in range(rng.randint(1, 300)))
    return _get("random id", "/v1/jobs/" + quote(job, safe="%/~"))


@maker("ids")
def _wrong_method(rng):
    method, url = rng.choice([("DELETE", "/v1/jobs/0123456789abcdef01234567"), ("PUT", "/v1/jobs"),
                              ("PATCH", "/v1/preview"), ("GET", "/v1/preview"), ("POST", "/v1/effects"),
                              ("GET", "/v2/jobs"), ("GET", "/v1/jobs?limit=-1"), ("GET", "/v1/jobs?limit=abc"),
                              ("GET", "/v1/jobs?limit=100000000000")])
    return Case("ids", f"{method} {url}", method=method, url=url)


# protocol: the HTTP framing itself lies (bare socket)
def _raw(name: str, head: str | bytes, body: bytes = b"", *, half_close: bool = False, url: str = "/v1/jobs",
         method: str = "POST", app_level: bool = False) -> Case:
    head = head.encode() if isinstance(head, str) else head
    return Case("protocol", name, method=method, url=url, raw=head, body=body, half_close=half_close,
                app_level=app_level)


def _form(rng) -> tuple[str, bytes]:
    case = form_case("protocol", "", rng)
    return case.headers["Content-Type"], case.body


@maker("protocol")
def _length_longer(rng):
    ctype, body = _form(rng)
    declared = len(body) + rng.choice([1, 1000, 10_000])
    return _raw(f"Content-Length {declared - len(body)} bytes more than sent, then EOF",
                f"Content-Type: {ctype}\r\nContent-Length: {declared}\r\n", body, half_close=True)


def make_slow_body(rng) -> Case:
    """A body shorter than its Content-Length on a connection held open: the server can only
    answer by timing out the read (a slow client, or slowloris). Not in `generate`'s set
    unless asked for (`slow_body=True`): it takes ANSWER_WITHIN_S to judge."""
    ctype, body = _form(rng)
    case = _raw("Content-Length 1,000 bytes more than sent, connection held open",
                f"Content-Type: {ctype}\r\nContent-Length: {len(body) + 1000}\r\n", body, app_level=True)
    case.cls = "slow_body"
    return case


@maker("protocol")
def _length_shorter(rng):
    ctype, body = _form(rng)
    declared = rng.randint(1, len(body) - 1)
    return _raw("Content-Length shorter than the body", f"Content-Type: {ctype}\r\nContent-Length: {declared}\r\n",
                body, app_level=True)


@maker("protocol")
def _length_huge(rng):
    ctype, body = _form(rng)
    declared = rng.choice([10**12, 2**63 - 1, 60 * 2**20])
    return _raw(f"Content-Length {declared} (over the limit) for a small body",
                f"Content-Type: {ctype}\r\nContent-Length: {declared}\r\n", body, app_level=True)


@maker("protocol")
def _length_bad(rng):
    ctype, body = _form(rng)
    value = rng.choice(["-1", "abc", "1e3", " ", "0x10", "99999999999999999999999999"])
    return _raw(f"Content-Length {value!r}", f"Content-Type: {ctype}\r\nContent-Length: {value}\r\n", body,
                half_close=True)


@maker("protocol")
def _length_twice(rng):
    ctype, body = _form(rng)
    return _raw("two different Content-Length headers",
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nContent-Length: {len(body) + 5}\r\n", body,
                half_close=True)


@maker("protocol")
def _length_and_chunked(rng):
    ctype, body = _form(rng)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return _raw("Content-Length and Transfer-Encoding: chunked",
                f"Content-Type: {ctype}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", chunked,
                half_close=True)


@maker("protocol")
def _bad_chunks(rng):
    ctype, body = _form(rng)
    bad = rng.choice([b"zz\r\n" + body + b"\r\n0\r\n\r\n", f"{len(body) + 500:x}\r\n".encode() + body,
                      f"{len(body):x}\r\n".encode() + body + b"\r\n"])
    return _raw("malformed chunked encoding", f"Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n", bad,
                half_close=True)


@maker("protocol")
def _huge_header(rng):
    return _raw("one header of 100 KB", "X-Padding: " + "p" * 100_000 + "\r\nContent-Length: 0\r\n", half_close=True)


@maker("protocol")
def _long_url(rng):
    return _raw("a 100 KB URL", "", url="/v1/jobs/" + "a" * 100_000, method="GET")


@maker("protocol")
def _raw_utf8_path(rng):
    return _raw("raw UTF-8 bytes in the request target", "", url="/v1/jobs/\u00e9t\u00e9", method="GET")


# oversize: bodies over the 50 MiB image limit
@maker("oversize")
def _chunked_over_limit(rng):
    case = form_case("oversize", "chunked upload past the limit (no Content-Length)", rng)
    boundary = case.headers["Content-Type"].split("=")[1]
    head = multipart([("request", json.dumps(GOOD).encode(), None, None)], boundary)
    head = head[: head.rindex(b"--" + boundary.encode() + b"--")]
    case.body = head + (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
                        f"Content-Type: image/png\r\n\r\n").encode()
    case.stream_mib = 60  # generate(big_upload_mib=...) sets the size
    return case


@maker("oversize")
def _honest_too_large(rng):
    case = form_case("oversize", "Content-Length of 52 MiB, sent", rng, image=b"\0" * (52 * 2**20))
    return case


# --- the set -------------------------------------------------------------------------------

HAND_PICKED_ONLY = {"oversize"}  # sent once each (tens of MiB apiece), never drawn


def generate(n: int, seed: int = 0, *, big_upload_mib: int = 60, valid_every: int = VALID_EVERY,
             only: set[str] | None = None, slow_body: bool = False) -> list[Case]:
    """At least `n` cases: every maker once (the hand-picked set), the rest drawn at random
    from every class, shuffled, with a valid request every `valid_every`. Same seed, same bytes."""
    rng = random.Random(seed)
    classes = [c for c in MAKERS if only is None or c in only]
    cases = [make(rng) for cls in classes for make in MAKERS[cls]]
    if slow_body:
        cases.append(make_slow_body(rng))
    drawn = [c for c in classes if c not in HAND_PICKED_ONLY]
    n_valid = max(3, n // valid_every)
    while len(cases) < n - n_valid and drawn:
        cases.append(rng.choice(MAKERS[rng.choice(drawn)])(rng))  # classes equally often
    for case in cases:
        if case.stream_mib:
            case.stream_mib = big_upload_mib
        # Some of the POSTs go to the preview: the same body, answered at once with a render.
        if case.method == "POST" and case.url == "/v1/jobs" and case.raw is None and not case.stream_mib \
                and rng.random() < 0.15:
            case.url = "/v1/preview"
            if case.job_only:
                case.expect = "either"
    rng.shuffle(cases)
    for i in range(n_valid):
        valid = form_case("valid", "a legal request", rng, request=good_request(rng), expect="valid")
        if i % 5 == 4:
            valid.url = "/v1/preview"
        cases.insert(min(len(cases), i * valid_every + rng.randrange(valid_every)), valid)
    return cases


# --- sending -------------------------------------------------------------------------------


def _auth_header(case: Case, api_key: str | None) -> bytes | None:
    if case.auth == DEFAULT_AUTH:
        return f"Bearer {api_key}".encode() if api_key else None
    return case.auth


def _body_stream(head: bytes, mib: int) -> Iterator[bytes]:
    yield head
    block = b"\0" * 2**20
    for _ in range(mib):
        yield block


def _judge(outcome: Outcome, status: int, body: bytes) -> None:
    outcome.status = status
    outcome.body_head = body[:300].decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except ValueError:
        return
    if isinstance(data, dict):
        outcome.detail = data.get("detail") if isinstance(data.get("detail"), str) else None
        if status == 202 and isinstance(data.get("job_id"), str):
            outcome.job_id = data["job_id"]


def send_http(client: httpx.Client, case: Case, api_key: str | None) -> Outcome:
    headers = dict(case.headers)
    if (auth := _auth_header(case, api_key)) is not None:
        headers["Authorization"] = auth
    out = Outcome(case)
    content = _body_stream(case.body, case.stream_mib) if case.stream_mib else (case.body or None)
    t0 = time.perf_counter()
    try:
        r = client.request(case.method, case.url, headers=headers, content=content, timeout=ANSWER_WITHIN_S)
        out.seconds = time.perf_counter() - t0
        _judge(out, r.status_code, r.content)
    except httpx.TimeoutException:
        out.seconds, out.error = time.perf_counter() - t0, "timeout"
    except httpx.HTTPError as e:
        out.seconds, out.error = time.perf_counter() - t0, f"{type(e).__name__}: {e}"
    return out


def send_raw(base_url: str, case: Case, api_key: str | None) -> Outcome:
    """The request exactly as written, on a bare socket; the answer read until the server
    closes (Connection: close) or ANSWER_WITHIN_S passes."""
    parts = urlsplit(base_url)
    host, port = parts.hostname, parts.port or 80
    target = parts.path.rstrip("/") + case.url  # an app at a route prefix (http://host/prefix) gets it too
    head = f"{case.method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n".encode("utf-8")
    if (auth := _auth_header(case, api_key)) is not None:
        head += b"Authorization: " + auth + b"\r\n"
    if case.raw is None:  # an ordinary request, its header bytes exactly as given
        for name, value in case.headers.items():
            head += name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("utf-8")) + b"\r\n"
        if case.body or case.method == "POST":
            head += f"Content-Length: {len(case.body)}\r\n".encode()
    out = Outcome(case)
    t0 = time.perf_counter()
    deadline = t0 + ANSWER_WITHIN_S
    data = b""
    try:
        with socket.create_connection((host, port), timeout=ANSWER_WITHIN_S) as sock:
            try:
                sock.sendall(head + (case.raw or b"") + b"\r\n" + case.body)
                if case.half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer and close before taking everything: read what it said
            while time.perf_counter() < deadline:
                sock.settimeout(max(0.05, deadline - time.perf_counter()))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                data += chunk
                if _complete(data):
                    break
    except OSError as e:
        out.error = f"{type(e).__name__}: {e}"
    out.seconds = time.perf_counter() - t0
    if data.startswith(b"HTTP/"):
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        try:
            status = int(head_bytes.split(b" ", 2)[1])
        except (IndexError, ValueError):
            out.error = f"unparseable answer {data[:80]!r}"
            return out
        if b"transfer-encoding: chunked" in head_bytes.lower():
            body = _dechunk(body)
        out.error = None
        _judge(out, status, body)
    elif out.error is None:
        out.error = "timeout" if out.seconds >= ANSWER_WITHIN_S else (
            "closed without an answer" if not data else f"not HTTP: {data[:80]!r}")
    return out


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            try:
                return len(body) >= int(line.split(b":", 1)[1])
            except ValueError:
                return False
    return body.endswith(b"0\r\n\r\n")


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def send(client: httpx.Client, base_url: str, case: Case, api_key: str | None) -> Outcome:
    # Bare socket: what httpx would refuse or rewrite (lying framing, odd header bytes, raw paths).
    if case.raw is not None or case.cls in ("ids", "protocol", "auth"):
        return send_raw(base_url, case, api_key)
    return send_http(client, case, api_key)


def send_all(base_url: str, cases: list[Case], *, api_key: str | None = None, concurrency: int = 4,
             progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
    """Every case, `concurrency` at a time, in order; each answered or given up after
    ANSWER_WITHIN_S (a hang)."""
    done = [0]
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=base_url, limits=limits, timeout=ANSWER_WITHIN_S) as client:
        def one(case: Case) -> Outcome:
            out = send(client, base_url, case, api_key)
            with lock:
                done[0] += 1
                if progress:
                    progress(done[0], len(cases))
            return out

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, cases))


def follow_accepted(base_url: str, outcomes: list[Outcome], *, api_key: str | None = None,
                    timeout_s: float = 120.0, concurrency: int = 8) -> None:
    """Poll every job a POST /v1/jobs accepted until it succeeds or fails (`final`);
    one not finished within timeout_s is 'stuck'."""
    jobs = [o for o in outcomes if o.job_id]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout_s
    finals: dict[str, tuple[str, str | None]] = {}
    lock = threading.Lock()

    def poll(job_id: str) -> None:
        with lock:
            if job_id in finals:
                return
            finals[job_id] = ("stuck", None)
        status: dict = {}
        with httpx.Client(base_url=base_url, timeout=40, headers=headers) as client:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    status = client.get(f"/v1/jobs/{job_id}", params={"wait_s": min(20, max(1, int(left)))}).json()
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.5)
                    continue
                if status.get("status") in ("succeeded", "failed"):
                    break
        with lock:
            if status.get("status") in ("succeeded", "failed"):
                finals[job_id] = (status["status"], status.get("error"))
            else:  # what it was doing when we gave up
                finals[job_id] = ("stuck", f"still {status.get('status')} after {timeout_s:g} s (stage "
                                           f"{status.get('stage')}, attempts {status.get('attempts')})")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(poll, sorted({o.job_id for o in jobs})))
    for o in jobs:
        o.final, o.final_error = finals[o.job_id]


# --- judging -------------------------------------------------------------------------------


def problems(o: Outcome) -> list[str]:
    """What is wrong with one answer (empty: it is what issue 13 asks)."""
    found = []
    if o.hang:
        found.append(f"no answer within {ANSWER_WITHIN_S:g} s")
    if o.status is not None and o.status >= 500:
        found.append(f"{o.status}")
    if o.status is not None and 400 <= o.status < 500 and o.case.app_level and not o.detail_ok:
        found.append(f"{o.status} without a JSON detail: {o.body_head[:80]!r}")
    if o.final in ("failed", "stuck"):
        found.append(f"accepted, then {o.final}: {o.final_error}")
    if o.case.expect == "reject" and o.accepted:
        found.append(f"accepted ({o.status}); expected a 4xx")
    if o.case.expect == "valid" and (not o.accepted or (o.status == 202 and o.final != "succeeded")):
        found.append(f"a legal request got {o.status} {o.final or ''} {o.error or ''} {o.detail or ''}".strip())
    if o.status is None and not o.hang and o.case.app_level:
        found.append(f"no answer: {o.error}")
    return found


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


COLUMNS = ("class", "requests", "4xx", "5xx", "hangs", "no answer", "accepted", "accepted-then-failed", "should-4xx",
           "bad detail", "p50 ms", "p99 ms", "max ms")


def summarize(outcomes: list[Outcome]) -> list[dict]:
    by: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by.setdefault(o.case.cls, []).append(o)
    rows = []
    for cls, group in sorted(by.items()) + [("all", outcomes)]:
        ms = [o.seconds * 1000 for o in group if o.status is not None and not o.case.stream_mib]
        rows.append({
            "class": cls,
            "requests": len(group),
            "4xx": sum(1 for o in group if o.status is not None and 400 <= o.status < 500),
            "5xx": sum(1 for o in group if o.status is not None and o.status >= 500),
            "hangs": sum(1 for o in group if o.hang),
            "no answer": sum(1 for o in group if o.status is None and not o.hang),
            "accepted": sum(1 for o in group if o.accepted),
            "accepted-then-failed": sum(1 for o in group if o.final in ("failed", "stuck")),
            "should-4xx": sum(1 for o in group if o.case.expect == "reject" and o.accepted),
            "bad detail": sum(1 for o in group if o.status is not None and 400 <= o.status < 500
                              and o.case.app_level and not o.detail_ok),
            "p50 ms": round(_pct(ms, 0.5), 1),
            "p99 ms": round(_pct(ms, 0.99), 1),
            "max ms": round(max(ms), 1) if ms else float("nan"),
        })
    return rows


def format_table(rows: list[dict], columns: tuple[str, ...] | None = None) -> str:
    columns = columns or tuple(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:  # the first column left-aligned, numbers right-aligned
        return "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def describe(o: Outcome) -> str:
    """One line naming the request and what came back (for reports and assertion messages)."""
    c = o.case
    answer = f"{o.status}" if o.status is not None else (o.error or "?")
    said = f": {o.detail[:160]}" if o.detail else (f" body {o.body_head[:80]!r}" if o.body_head else "")
    job = f" -> job {o.final}: {o.final_error}" if o.final else ""
    request = f"[{c.cls}] {c.name} ({c.method} {c.url[:60]}, expect {c.expect})"
    return f"{request} -> {answer} in {o.seconds:.2f} s{said}{job}"
