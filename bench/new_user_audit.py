"""A new user's audit of the `d2v` CLI on inputs the repo does not bundle (session 14).

Photos made from scikit-image's (odd sizes, panoramas, 16-bit and float gray, CMYK, every EXIF
orientation, animations, bombs, broken files), paths (one point, true as a coordinate, NaN,
100,000 points, views past the borders), output sizes (slivers, odd, too big), depth maps
(empty, animated, 16-bit, NaN) and outputs that cannot be written. Each case says what a user
should see: `ok` (exit 0, an MP4 of the frames and size asked for, the path check `followed` or
`clamped`) or `bad` (exit 2, one line `d2v: error: ...`, no traceback).

    python bench/new_user_audit.py [--only WORD] > table.md     # a markdown table; exit 1 if a case fails

Renders are small (96x64 to 256x144, 2-8 frames): the whole audit takes about a minute.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import av
import numpy as np
from PIL import Image
from skimage import data

D2V = shutil.which("d2v", path=str(Path(sys.executable).parent)) or "d2v"


def _png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow writes none)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_inputs(d: Path) -> None:
    ast, cat, cof = (Image.fromarray(a) for a in (data.astronaut(), data.chelsea(), data.coffee()))
    small = cat.resize((320, 240))
    ramp = np.tile(np.linspace(0, 1, 320), (240, 1))

    def save(im: Image.Image, name: str, **kw) -> None:
        im.save(d / name, **kw)

    save(cat.resize((4000, 600)), "pano_4000x600.jpg", quality=85)
    save(Image.fromarray(np.concatenate([data.astronaut(), data.astronaut()[:, ::-1]], 1)).resize((2000, 500)),
         "pano_2000x500.jpg")
    save(cof.resize((600, 4000)), "tall_600x4000.jpg", quality=85)
    save(ast.resize((1001, 777)), "odd_1001x777.png")
    save(ast.resize((480, 800)), "portrait_480x800.jpg")
    save(ast.resize((16, 16)), "min_16x16.png")
    for w, h in ((8, 8), (1, 1), (2, 3)):
        save(ast.resize((w, h)), f"tiny_{w}x{h}.png")
    Image.fromarray((np.asarray(small.convert("L")).astype(np.uint16) * 257)).save(d / "gray16.png")
    Image.fromarray((np.asarray(small.convert("L")).astype(np.uint16) * 257)).save(d / "gray16.tif")
    Image.fromarray(np.asarray(small.convert("L")).astype(np.float32) / 255).save(d / "float01.tif")
    (d / "rgb16.png").write_bytes(_png16_rgb(np.asarray(small).astype(np.uint16) * 257))
    save(small.convert("LA"), "gray_alpha.png")
    save(small.convert("P"), "palette.png")
    save(small.convert("CMYK"), "cmyk.jpg")
    save(small, "progressive.jpg", progressive=True)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        save(ast.resize((320, 200)), f"exif{o}.jpg", exif=exif.tobytes())
    save(small, "still.webp")
    save(small, "photo.bmp")
    save(small, "photo.png")
    frames = [small.rotate(10 * i) for i in range(3)]
    frames[0].save(d / "anim.webp", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(d / "multi.tif", save_all=True, append_images=frames[1:])

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0,
                                 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    buf = io.BytesIO()
    cat.save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("hello, this is not a jpeg\n")
    (d / "notes.txt").write_text("a file, not a folder")
    # depth maps (brighter = nearer)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(d / "depth16.png")
    Image.fromarray((ramp * 255).astype(np.uint8)).resize((100, 60)).save(d / "depth_wrong_size.png")
    # (the photo's depth turned a quarter: a portrait map for the landscape photo)
    Image.fromarray((ramp * 255).astype(np.uint8)).resize((240, 320)).save(d / "depth_turned.png")
    nan = ramp.astype(np.float32)
    nan[10:20, 10:20] = np.nan
    Image.fromarray(nan).save(d / "depth_nan.tif")
    # paths, in a 1000x1000 canvas
    canvas = {"width": 1000, "height": 1000}

    def path(name: str, points) -> None:
        (d / name).write_text(json.dumps({"canvas": canvas, "points": points}))

    xy = lambda pts: [{"x": x, "y": y} for x, y in pts]  # noqa: E731
    path("diag.json", xy([(200, 200), (800, 700)]))
    path("line.json", xy([(200, 500), (800, 500)]))
    path("one.json", xy([(500, 500)]))
    path("two_same.json", xy([(500, 500), (500, 500)]))
    path("outside.json", xy([(-500, -500), (1500, 1500)]))
    path("bool.json", [{"x": True, "y": False}, {"x": 300, "y": 400}])
    path("strings.json", [{"x": "100", "y": "200"}, {"x": "600", "y": "700"}])
    t = np.linspace(0, 1, 100_000)
    path("100k.json", xy(zip(200 + 600 * t, 200 + 600 * t)))
    (d / "nan.json").write_text('{"canvas": {"width": 1000, "height": 1000}, '
                                '"points": [{"x": NaN, "y": 1}, {"x": 3, "y": 4}]}')


SMALL = ["--size", "128x96", "--duration", "1", "--fps", "8"]


def cases() -> list[tuple[str, list[str], str, tuple | None]]:
    """(input, d2v arguments with IN/ for the inputs' folder and OUT for the MP4, ok | bad,
    (frames, width, height) for ok)."""
    r = lambda img, path="diag.json", *more: ["render", f"IN/{img}", "--path", f"IN/{path}", *more]  # noqa: E731
    out: list = []
    for img in ["pano_4000x600.jpg", "pano_2000x500.jpg", "tall_600x4000.jpg", "odd_1001x777.png",
                "portrait_480x800.jpg", "min_16x16.png", "gray16.png", "gray16.tif", "float01.tif", "rgb16.png",
                "gray_alpha.png", "palette.png", "cmyk.jpg", "progressive.jpg", "still.webp", "photo.bmp",
                *(f"exif{o}.jpg" for o in range(1, 9))]:
        out.append((img, r(img, "diag.json", *SMALL), "ok", (8, 128, 96)))
    for img in ["tiny_8x8.png", "tiny_1x1.png", "tiny_2x3.png", "anim.webp", "multi.tif", "bomb.png", "truncated.jpg",
                "zero.jpg", "text.jpg"]:
        out.append((img, r(img, "diag.json", *SMALL), "bad", None))
    for p in ["one.json", "two_same.json", "bool.json", "nan.json", "100k.json"]:
        out.append((f"path {p}", r("photo.png", p, *SMALL), "bad", None))
    out.append(("path strings.json", r("photo.png", "strings.json", *SMALL), "ok", (8, 128, 96)))
    out.append(("path outside, --allow-borders", r("photo.png", "outside.json", *SMALL, "--allow-borders"), "ok",
                (8, 128, 96)))
    for size, frames, ok in [("1023x577", 4, "bad"), ("2x2", 4, "bad"), ("4096x4096", 4, "bad"),
                             ("3840x64", 4, "ok"), ("64x3840", 4, "ok"), ("1920x64", 4, "ok"), ("64x64", 4, "ok")]:
        w, h = map(int, size.split("x"))
        out.append((f"--size {size}", r("odd_1001x777.png", "diag.json", "--size", size, "--duration", "1", "--fps",
                                        "4"), ok, (frames, w, h)))
    for name, flags, ok, frames in [("--duration 0.49", ["--duration", "0.49"], "bad", 0),
                                    ("--duration nan", ["--duration", "nan"], "bad", 0),
                                    ("--fps 61", ["--fps", "61"], "bad", 0),
                                    ("--duration 20 --fps 60", ["--duration", "20", "--fps", "60"], "ok", 1200)]:
        out.append((name, r("photo.png", "diag.json", "--size", "64x64", *flags), ok, (frames, 64, 64)))
    for depth, ok in [("zero.jpg", "bad"), ("anim.webp", "bad"), ("tiny_8x8.png", "bad"), ("depth16.png", "ok"),
                      ("depth_wrong_size.png", "ok"), ("depth_turned.png", "bad"), ("depth_nan.tif", "ok")]:
        out.append((f"--depth {depth}", r("photo.png", "diag.json", *SMALL, "--effect", "parallax", "--depth",
                                          f"IN/{depth}"), ok, (8, 128, 96)))
    out.append(("preset infinite_zoom (20x)", r("odd_1001x777.png", "diag.json", "--size", "256x144", "--fps", "4",
                                                "--preset", "infinite_zoom"), "ok", (24, 256, 144)))
    out.append(("-o under a file", r("photo.png", "diag.json", *SMALL, "-o", "IN/notes.txt/x.mp4"), "bad", None))
    out.append(("check of a text file", ["check", "IN/text.jpg", "--image", "IN/photo.png", "--path", "IN/diag.json"],
                "bad", None))
    return out


def probe(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        n, w, h = 0, 0, 0
        for frame in c.decode(video=0):
            n, w, h = n + 1, frame.width, frame.height
    return n, w, h


def run(args: list[str], expect: str, want: tuple | None, folder: Path, out: Path) -> tuple[bool, str]:
    args = [a.replace("IN/", f"{folder}/") for a in args]
    if args[0] == "render" and "-o" not in args:
        args += ["-o", str(out)]
    env = {**os.environ, "D2V_DATA_DIR": str(folder / "data")}
    env.pop("D2V_S3_ENDPOINT", None)
    p = subprocess.run([D2V, *args, "-q"] if args[0] == "render" else [D2V, *args], capture_output=True, text=True,
                       env=env, timeout=600)
    err = p.stderr.strip()
    if p.returncode != 0:
        one = len(err.splitlines()) == 1 and "Traceback" not in err
        what = f"exit {p.returncode}: {err.splitlines()[-1] if err else ''}"
        return expect == "bad" and p.returncode == 2 and one, what
    n, w, h = probe(out)
    check = re.search(r"path (\w+)", p.stdout)
    verdict = check.group(1) if check else "-"
    ok = expect == "ok" and (n, w, h) == want and verdict in ("followed", "clamped")
    return ok, f"exit 0: {n} frames {w}x{h}, path {verdict}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run the cases whose input contains this")
    args = ap.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="d2v-audit-") as tmp:
        folder = Path(tmp)
        make_inputs(folder)
        print("| input | expected | result | |\n|---|---|---|---|")
        for name, argv, expect, want in cases():
            if args.only and args.only not in name:
                continue
            t0 = time.perf_counter()
            ok, what = run(argv, expect, want, folder, folder / "out.mp4")
            failed += not ok
            shown = what.replace("|", "/").replace(str(folder) + "/", "")
            print(f"| {name} | {expect} | {shown} ({time.perf_counter() - t0:.1f} s) | {'pass' if ok else 'FAIL'} |",
                  flush=True)
    print(f"\n{failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
