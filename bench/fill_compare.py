"""The revealed-background fill alone, against truth, on many photos: what
`d2v.inpaint.fill_background` (and alternatives) put behind a disc, scored where a sideways
move of the disc reveals the background.

The scene is bench/view_synthesis.py's layered one (a disc of skimage's coffee over a photo,
1024x576), in photo space: the hole is the disc, widened by the 2 px the camera backend
fills beyond a depth step, its centre included; the truth is the photo without the disc.
Each hole pixel is weighted by how many of the frames the background there is revealed in,
for a disc slid left by 70 px (d2v's parallax at about that parallax), measured at a
quarter, half, three quarters and all of the slide, as view_synthesis measures every third
of twelve frames: so the crescent beside the rim weighs most. PSNR over those weights.

Fills: `d2v` (the library's), `smooth` (a pull-push of the whole far side, unweighted, no
grain: the library's before session 10 less its grain), `mirrored` (the
pull-push plus the background's 3 px-scale detail mirrored in across the hole's edge,
soft-limited to 2.5x its local amplitude: the fill before), `telea` (OpenCV's, the floor),
`stretch` (each hole pixel the first known pixel to its right: the far side continued along
the direction the band opens, as a stretched edge would).

    python bench/fill_compare.py [--photos astronaut,chelsea,...]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from d2v import inpaint  # noqa: E402
from view_synthesis import DISC_RADIUS, cover, rgb  # noqa: E402

W, H = 1024, 576
SLIDE = 70.0
PHOTOS = "astronaut,chelsea,coffee,rocket,immunohistochemistry,hubble_deep_field,retina,camera,brick,grass,gravel,moon"


def disc(dx: float = 0.0, grow: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.hypot(xx - W / 2 + 0.5 + dx, yy - H / 2 + 0.5) <= DISC_RADIUS * H + grow


def weights() -> np.ndarray:
    inside = disc()
    return sum((inside & ~disc(dx=SLIDE * t)).astype(np.float32) for t in (0.25, 0.5, 0.75, 1.0))


def smooth(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    known = (~hole).astype(np.float32)
    fill = inpaint._pull_push(image.astype(np.float32) * known[:, :, None], known)
    out = image.copy()
    out[hole] = np.clip(fill[hole] + 0.5, 0, 255).astype(np.uint8)
    return out


def mirrored(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The fill before: smooth plus the 3 px-scale detail mirrored across the hole's edge."""
    known = (~hole).astype(np.float32)
    img = image.astype(np.float32)
    stack = np.dstack([img * known[:, :, None], known])
    half = cv2.pyrDown(stack)
    blurred = cv2.pyrUp(cv2.pyrUp(cv2.pyrDown(half), dstsize=half.shape[1::-1]), dstsize=(W, H))
    detail = (img - blurred[:, :, :3] / np.maximum(blurred[:, :, 3:], 1e-3)) * known[:, :, None]
    amplitude = np.abs(detail).mean(axis=2)
    pushed = inpaint._pull_push(np.dstack([img * known[:, :, None], amplitude * known]), known)[hole]
    _, labels = cv2.distanceTransformWithLabels(hole.astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(hole)
    ny, nx = np.divmod(np.flatnonzero(~hole)[labels[ys, xs] - 1], W)
    my, mx = np.clip(2 * ny - ys, 0, H - 1), np.clip(2 * nx - xs, 0, W - 1)
    mirror = detail[my, mx] * ~hole[my, mx][:, None]
    limit = 2.5 * np.maximum(pushed[:, 3:], 1.0)
    out = image.copy()
    out[hole] = np.clip(pushed[:, :3] + limit * np.tanh(mirror / limit) + 0.5, 0, 255).astype(np.uint8)
    return out


def stretch(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    cols = np.where(~hole, np.arange(W)[None, :], W)
    nearest_right = np.minimum.accumulate(cols[:, ::-1], axis=1)[:, ::-1]
    ys, xs = np.nonzero(hole)
    out = image.copy()
    out[ys, xs] = image[ys, np.minimum(nearest_right[ys, xs], W - 1)]
    return out


FILLS = {"d2v": lambda img, hole: inpaint.fill_background(img, hole), "smooth": smooth, "mirrored": mirrored,
         "telea": lambda img, hole: cv2.inpaint(img, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA), "stretch": stretch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=PHOTOS)
    args = ap.parse_args()
    wt = weights()
    hole = disc(grow=2.0)
    coffee = cover(skimage.data.coffee(), W, H).astype(np.float32)
    print("| photo | " + " | ".join(FILLS) + " |")
    print("|---|" + "---|" * len(FILLS))
    totals = dict.fromkeys(FILLS, 0.0)
    names = args.photos.split(",")
    for name in names:
        truth = cover(rgb(getattr(skimage.data, name)()), W, H)
        photo = np.where(hole[:, :, None], coffee, truth).astype(np.uint8)
        cells = []
        for fill_name, fill in FILLS.items():
            err = ((fill(photo, hole).astype(np.float64) - truth) ** 2).mean(axis=2)
            db = 10 * math.log10(255.0**2 / float((err * wt).sum() / wt.sum()))
            totals[fill_name] += db / len(names)
            cells.append(f"{db:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("| mean | " + " | ".join(f"{v:.2f}" for v in totals.values()) + " |")


if __name__ == "__main__":
    main()
