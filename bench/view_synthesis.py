"""View synthesis against known truth: the camera backend's 2.5D (and DepthFlow's, when the
peers venv has it) region by region.

Scenes (1024x576 by default):
  layered  a textured disc (skimage's coffee, or --discs) in front of a textured photo
           (--backgrounds: skimage.data's names; grey ones as RGB), a two-level depth map
           (disc 1, the rest 0, or --far: a real depth map's far side is seldom at 0, and
           the hidden background's depth is then inpainted too). Each rendered frame's two
           planes are located from its own features (SIFT against the full background and
           the disc's texture, RANSAC homographies, refined by ECC on each plane's own
           pixels: within 0.15 px of the known camera's), and the true frame is composed from the
           full background and the disc through them: so a renderer is judged on what it
           shows, whatever camera it chose. Effects: parallax, orbit, dolly_zoom (d2v plans
           them from a drawn path; DepthFlow gets a sideways offset, an arc of its offset
           and a dolly, sized to part the planes about as far: d2v's orbit is measured with a
           weaker depth (orbit:0.1), its 30 degree swing at full depth parts them by ~390 px).
  stereo   skimage's Middlebury motorcycle: the right view rendered from the left view, its
           disparity (holes filled, bilateral-smoothed, as a depth model would give it) and
           the camera the baseline implies (a truck: 1/s is proportional to disparity).

Regions: visible (the photo shows it), edge (a 4 px band around the depth edge where the truth
is knowable), revealed (the photo hid it). Metrics: PSNR and SSIM per region, the dark-fringe
share of the edge band (pixels more than FRINGE_LEVELS darker than the darkest truth pixel
within 2 px), the parallax (how far the disc's rim moves against the background, most
over the clip), the band (how deep into the photo's disc the deepest revealed point lies, in
photo pixels, most over the clip: how wide a band the fill had to invent), seconds per frame
(render only; DepthFlow: its whole run, encode included, divided by its frames).

At the same parallax DepthFlow reveals a narrower band than d2v: it shows its near layer
magnified from the first frame on (its `height`: the disc 1.16x against the background), which
covers the rim's first pixels before the move starts. A narrower band is easier to fill, so each
row DepthFlow has also gets a "d2v at DepthFlow's band" row: d2v with its depth's parallax
scaled until its band is as wide (`equal_band`; --no-equal-band leaves it out).

    python bench/view_synthesis.py [--size 1024x576] [--frames 16] [--effects parallax,orbit,dolly_zoom]
        [--backgrounds astronaut,chelsea] [--discs coffee] [--far 0.0] [--no-depthflow] [--no-stereo]
        [--no-equal-band] [--save DIR]

DepthFlow runs as a subprocess of /work/peers/.venv (headless, Mesa's llvmpipe on the CPU),
always given the depth map (its own estimators would download weights); its frames come
back through lossless x264 (4:2:0 chroma).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from skimage.metrics import structural_similarity

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from d2v.models import parse_request  # noqa: E402
from d2v.render import CameraRenderer  # noqa: E402
from d2v.trajectory import DEFAULT_PARALLAX, plan_trajectory  # noqa: E402

PEERS_PYTHON = Path("/work/peers/.venv/bin/python")
EDGE_BAND = 4  # px either side of the depth edge
FRINGE_LEVELS = 24  # luma levels below the darkest truth nearby: a dark fringe pixel
DISC_RADIUS = 0.24  # of the height


# -- the layered scene -----------------------------------------------------------------


def cover(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """The image resized to cover w x h, centre-cropped."""
    ih, iw = image.shape[:2]
    k = max(w / iw, h / ih)
    big = cv2.resize(image, (math.ceil(iw * k), math.ceil(ih * k)), interpolation=cv2.INTER_AREA)
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])


def rgb(image: np.ndarray) -> np.ndarray:
    """skimage.data's grey photos (camera, brick, grass, ...) as RGB; RGBA less its alpha."""
    return np.ascontiguousarray(np.dstack([image] * 3) if image.ndim == 2 else image[:, :, :3])


def layered_scene(w: int, h: int, background: str = "astronaut", disc: str = "coffee", far: float = 0.0) -> dict:
    """background, disc texture, disc coverage (anti-aliased), photo, depth (two levels: 1 on
    the disc, `far` behind it)."""
    background, disc = (cover(rgb(getattr(skimage.data, name)()), w, h) for name in (background, disc))
    big = np.zeros((h * 4, w * 4), np.uint8)
    cv2.circle(big, (w * 2, h * 2), round(DISC_RADIUS * h * 4), 255, -1, lineType=cv2.LINE_AA)
    alpha = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    photo = (alpha[..., None] * disc + (1 - alpha[..., None]) * background + 0.5).astype(np.uint8)
    depth = np.where(alpha >= 0.5, np.float32(1.0), np.float32(far))
    return {"background": background, "disc": disc, "alpha": alpha, "photo": photo, "depth": depth}


def d2v_path(effect: str, w: int, h: int) -> dict:
    cx, cy, r = w / 2, h / 2, DISC_RADIUS * h
    if effect == "parallax":
        pts = [(cx - 0.3 * w + 0.6 * w * i / 11, cy) for i in range(12)]
    elif effect == "orbit":
        pts = [(cx + 1.6 * r * math.cos(2 * math.pi * i / 24), cy + 1.2 * r * math.sin(2 * math.pi * i / 24))
               for i in range(25)]
    else:  # dolly_zoom: toward the disc
        pts = [(cx - 0.3 * w + 0.3 * w * i / 11, cy - 0.15 * h + 0.15 * h * i / 11) for i in range(12)]
    return {"canvas": {"width": w, "height": h}, "points": [{"x": x, "y": y} for x, y in pts]}


def render_d2v(scene: dict, effect: str, w: int, h: int, frames: int) -> tuple[list, float]:
    effect, _, strength = effect.partition(":")  # orbit:0.1 -> the depth map's parallax 0.1
    renderer = CameraRenderer(scene["photo"], scene["depth"], **({"parallax": float(strength)} if strength else {}))
    request = parse_request({"path": d2v_path(effect, w, h), "effect": effect, "duration_s": frames / 12,
                             "fps": 12, "width": w, "height": h})
    tr = plan_trajectory(request, w, h, depth_parallax=renderer.depth_parallax)
    t0 = time.perf_counter()
    out = list(renderer.render(tr))
    return out, (time.perf_counter() - t0) / len(out)


DEPTHFLOW_SCRIPT = r'''
import json, math, sys
from attrs import define
from depthflow.scene import DepthScene
a = json.loads(sys.argv[1])
@define
class Move(DepthScene):
    def update(self):
        t = 0.5 - 0.5 * math.cos(math.pi * self.tau)  # eased, as d2v's moves
        self.state.height = a["height"]
        if a["effect"] == "parallax":
            self.state.offset = (a["amount"] * t, 0.0)
        elif a["effect"] == "orbit":
            self.state.offset = (a["amount"] * math.sin(math.pi * t), a["amount"] * 0.3 * (1 - math.cos(math.pi * t)))
        else:
            self.state.dolly = a["amount"] * t
scene = Move(backend="headless")
scene.ffmpeg.h264(preset="ultrafast", crf=0)
scene.input(image=a["image"], depth=a["depth"])
scene.main(output=a["output"], width=a["width"], height=a["height_px"], fps=12, time=a["frames"] / 12)
'''
# DepthFlow's move per effect: (height, amount), sized to part the planes about as far as d2v's.
DEPTHFLOW_MOVES = {"parallax": (0.2, 1.04), "orbit": (0.2, 1.0), "dolly_zoom": (0.2, 1.0)}


def render_depthflow(scene: dict, effect: str, w: int, h: int, frames: int, tmp: Path) -> tuple[list, float]:
    effect = effect.partition(":")[0]
    image, depth, output = tmp / "image.png", tmp / "depth.png", tmp / f"depthflow_{effect}.mp4"
    cv2.imwrite(str(image), scene["photo"][:, :, ::-1])
    cv2.imwrite(str(depth), (scene["depth"] * 255).astype(np.uint8))
    height, amount = DEPTHFLOW_MOVES[effect]
    args = {"effect": effect, "height": height, "amount": amount, "image": str(image), "depth": str(depth),
            "output": str(output), "width": w, "height_px": h, "frames": frames}
    t0 = time.perf_counter()
    subprocess.run([str(PEERS_PYTHON), "-c", DEPTHFLOW_SCRIPT, json.dumps(args)], check=True,
                   capture_output=True, cwd=tmp, timeout=1800)
    seconds = time.perf_counter() - t0
    cap, out = cv2.VideoCapture(str(output)), []
    while (ok := cap.read())[0]:
        out.append(np.ascontiguousarray(ok[1][:, :, ::-1]))
    return out, seconds / max(len(out), 1)


# -- locating the planes and measuring -------------------------------------------------


# No cap on the keypoints: with a cap (4000 was used) a densely textured background (skimage's
# grass) takes nearly all of a frame's strongest keypoints, the disc is located from a few,
# and its homography was off by pixels (bench/RESULTS.md, "grass").
_sift = cv2.SIFT_create()
_ECC = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)


def locate(frame: np.ndarray, source: np.ndarray, mask: np.ndarray | None,
           hidden: np.ndarray | None = None) -> np.ndarray | None:
    """Homography source -> frame (OpenCV pixel centres): SIFT matches (source keypoints inside
    mask), RANSAC, least squares on the inliers; then refined on the plane's own pixels (ECC,
    over the mask less what `hidden`, a mask of the frame, says another plane covers there),
    which keypoints on a dense repetitive texture leave a pixel or more off."""
    g1 = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    g2 = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    k1, d1 = _sift.detectAndCompute(g1, None if mask is None else mask.astype(np.uint8) * 255)
    k2, d2 = _sift.detectAndCompute(g2, None)
    if d1 is None or d2 is None or len(k1) < 8 or len(k2) < 8:
        return None
    matches = cv2.BFMatcher().knnMatch(d1, d2, k=2)
    good = [m for m, n in (p for p in matches if len(p) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < 12:
        return None
    src = np.float32([k1[m.queryIdx].pt for m in good])
    dst = np.float32([k2[m.trainIdx].pt for m in good])
    H, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 1.5)
    if H is None:
        return None
    # Refit on the inliers only with least squares: a sharper estimate than RANSAC's pick.
    keep = inliers.ravel().astype(bool)
    H2, _ = cv2.findHomography(src[keep], dst[keep], 0)
    H = H2 if H2 is not None else H
    # ECC warps the source onto the frame (the warp maps frame -> source); the mask is the source's.
    # No pre-blur (gaussFiltSize 1): with OpenCV's default 5 the disc's homography settles up to
    # 0.37 px from the known camera's, without it within 0.12 px (grass, chelsea, astronaut).
    valid = np.ones(g1.shape, bool) if mask is None else mask.astype(bool)
    if hidden is not None:
        valid &= cv2.warpPerspective(hidden.astype(np.uint8), H, g1.shape[::-1],
                                     flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) == 0
    try:
        _, W = cv2.findTransformECC(g2.astype(np.float32), g1.astype(np.float32), np.linalg.inv(H).astype(np.float32),
                                    cv2.MOTION_HOMOGRAPHY, _ECC, valid.astype(np.uint8) * 255, 1)
    except cv2.error:  # did not converge: the keypoints' estimate stands
        return H
    refined = np.linalg.inv(W.astype(np.float64))
    return refined / refined[2, 2]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else float("nan")
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


class Scores:
    """Per-region squared errors, SSIM values and counts, summed over the frames measured."""

    def __init__(self):
        self.sq = {r: 0.0 for r in ("visible", "edge", "revealed")}
        self.n = dict.fromkeys(self.sq, 0)
        self.ssim = dict.fromkeys(self.sq, 0.0)
        self.fringe = 0
        self.parallax = 0.0
        self.band = 0.0
        self.located = 0
        self.measured = 0

    def add(self, frame: np.ndarray, truth: np.ndarray, regions: dict, fringe: int):
        _, smap = structural_similarity(frame, truth, channel_axis=2, full=True, data_range=255)
        smap = smap.mean(axis=2)
        err = (frame.astype(np.float64) - truth.astype(np.float64)) ** 2
        for r, m in regions.items():
            self.sq[r] += float(err[m].sum())
            self.n[r] += int(m.sum())
            self.ssim[r] += float(smap[m].sum())
        self.fringe += fringe

    def row(self) -> dict:
        out = {}
        for r in self.sq:
            mse = self.sq[r] / max(3 * self.n[r], 1)
            out[f"{r}_psnr"] = 10 * math.log10(255.0**2 / mse) if self.n[r] and mse > 0 else float("nan")
            out[f"{r}_ssim"] = self.ssim[r] / self.n[r] if self.n[r] else float("nan")
        out["fringe_pct"] = 100.0 * self.fringe / max(self.n["edge"], 1)
        out["parallax_px"] = self.parallax
        out["band_px"] = self.band
        out["located"] = f"{self.located}/{self.measured}"
        return out


def luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.int16)


def dark_fringe(frame: np.ndarray, truth: np.ndarray, band: np.ndarray) -> int:
    darkest = cv2.erode(luma(truth), np.ones((5, 5), np.uint8))
    return int(((luma(frame) < darkest - FRINGE_LEVELS) & band).sum())


def measure_layered(scene: dict, frames: list, every: int) -> Scores:
    """Each measured frame: its two planes located, the truth composed, regions scored."""
    h, w = frames[0].shape[:2]
    scores = Scores()
    disc_mask = scene["alpha"] > 0.99
    bg_mask = scene["alpha"] < 0.01
    r = DISC_RADIUS * h
    rim = np.array([[[w / 2 + r * math.cos(a), h / 2 + r * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 16)]],
                   np.float32)
    ones = np.ones((h, w), np.float32)
    # How deep into the photo's disc each background point lies (photo pixels from the far side
    # it shows): the band a frame reveals is as wide as its deepest revealed point.
    hole_depth = cv2.distanceTransform((scene["alpha"] >= 0.01).view(np.uint8), cv2.DIST_L2, 5)
    start = None
    for i in sorted(set(range(0, len(frames), every)) | {len(frames) - 1}):
        frame = frames[i]
        scores.measured += 1
        H_disc = locate(frame, scene["disc"], cv2.erode(disc_mask.astype(np.uint8), np.ones((9, 9))).astype(bool))
        if H_disc is None:
            continue
        # The background's own pixels: not where the disc is now, nor within a few pixels of it.
        disc_now = cv2.warpPerspective(scene["alpha"], H_disc, (w, h)) > 0.0
        H_bg = locate(frame, scene["background"], bg_mask, cv2.dilate(disc_now.view(np.uint8), np.ones((9, 9), np.uint8)))
        if H_bg is None:
            continue
        scores.located += 1
        warp = lambda img, H, border=cv2.BORDER_REFLECT: cv2.warpPerspective(  # noqa: E731
            img, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)
        bg = warp(scene["background"], H_bg).astype(np.float32)
        disc = warp(scene["disc"], H_disc).astype(np.float32)
        alpha = warp(scene["alpha"], H_disc, cv2.BORDER_CONSTANT)
        truth = (alpha[..., None] * disc + (1 - alpha[..., None]) * bg + 0.5).astype(np.uint8)
        hidden = warp(scene["alpha"], H_bg, cv2.BORDER_CONSTANT)  # how much of the background here the photo hides
        inside = warp(ones, H_bg, cv2.BORDER_CONSTANT) > 0.999  # the background plane covers the pixel
        knowable = inside & ((alpha > 0.99) | (hidden < 0.01))
        edge_line = np.abs(alpha - 0.5) < 0.5
        near_edge = cv2.dilate(edge_line.astype(np.uint8), np.ones((2 * EDGE_BAND + 1,) * 2, np.uint8)).astype(bool)
        regions = {"visible": knowable & ~near_edge, "edge": knowable & near_edge,
                   "revealed": inside & ~knowable & (alpha < 0.01)}
        scores.add(frame, truth, regions, dark_fringe(frame, truth, regions["edge"]))
        if regions["revealed"].any():
            deepest = warp(hole_depth, H_bg, cv2.BORDER_CONSTANT)[regions["revealed"]].max()
            scores.band = max(scores.band, float(deepest))
        # The parallax: how far the planes part at the disc's rim (its farthest point from
        # where frame 0 put it, against the background's point there).
        gap = cv2.perspectiveTransform(rim, H_disc)[0] - cv2.perspectiveTransform(rim, H_bg)[0]
        if start is None:  # the first frame located (frame 0 unless its planes could not be)
            start = gap
        else:
            scores.parallax = max(scores.parallax, float(np.hypot(*(gap - start).T).max()))
    return scores


# -- the stereo pair ---------------------------------------------------------------------


def motorcycle_depth() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, disparity of the left view): holes filled, bilateral-smoothed."""
    left, right, disp = skimage.data.stereo_motorcycle()
    holes = ~np.isfinite(disp)
    d = np.where(holes, 0, disp).astype(np.float32)
    d = cv2.inpaint(d, holes.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    d = cv2.bilateralFilter(d, 9, 4.0, 5.0)
    return left, right, d


def render_stereo(left: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, float]:
    """The right view from the left: a truck by the baseline. With s = d_min / d (the farthest
    point on the image plane), parallax p = 1 - d_min / d_max and depth (1 - s) / p, the
    camera moved by d_min image pixels sideways shows a point of disparity d shifted by d."""
    h, w = disp.shape
    d_min, d_max = float(disp.min()), float(disp.max())
    p = 1.0 - d_min / d_max
    depth = (1.0 - d_min / disp) / p
    renderer = CameraRenderer(left, depth, parallax=min(p, 0.9))
    from d2v import camera
    from d2v.render import reference_center

    c0 = reference_center(w, h, w, h)
    frame = camera.make_frame(0, 0.0, camera_center=c0 + np.array([d_min, 0.0, 0.0]), R=np.eye(3),
                              fx=float(w), out_w=w, out_h=h, crop_w=float(w))
    t0 = time.perf_counter()
    out = renderer.render_frame(frame, w, h, reference=c0)
    return out, time.perf_counter() - t0


def measure_stereo(frame: np.ndarray, right: np.ndarray, disp: np.ndarray) -> dict:
    """Regions of the right view: revealed where no left pixel lands (forward-splatted by its
    disparity, nearest wins), edge within EDGE_BAND px of a disparity step, visible the rest."""
    h, w = disp.shape
    landed = np.full((h, w), -1.0, np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    xr = np.round(xs - disp).astype(int)
    ok = (xr >= 0) & (xr < w)
    order = np.argsort(disp[ok])  # far first, near written last
    landed[ys[ok][order], xr[ok][order]] = disp[ok][order]
    seen = cv2.morphologyEx((landed >= 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 3), np.uint8)).astype(bool)
    filled = cv2.inpaint(np.maximum(landed, 0), (~seen).astype(np.uint8), 3, cv2.INPAINT_NS)
    k = np.ones((3, 3), np.uint8)
    steps = (cv2.dilate(filled, k) - cv2.erode(filled, k)) > 2.0
    near_edge = cv2.dilate(steps.astype(np.uint8), np.ones((2 * EDGE_BAND + 1,) * 2, np.uint8)).astype(bool)
    border = np.zeros((h, w), bool)
    border[:, : int(disp.max()) + 2] = True  # the left view never saw the right view's left margin
    regions = {"visible": seen & ~near_edge & ~border, "edge": seen & near_edge & ~border, "revealed": ~seen & ~border}
    scores = Scores()
    scores.measured = scores.located = 1
    scores.add(frame, right, regions, dark_fringe(frame, right, regions["edge"]))
    return scores.row()


# -- the table ----------------------------------------------------------------------------


COLUMNS = ("visible_psnr", "edge_psnr", "revealed_psnr", "visible_ssim", "edge_ssim", "revealed_ssim",
           "fringe_pct", "parallax_px", "band_px", "s_per_frame", "located")


def table(rows: list[tuple[str, str, dict]]) -> str:
    head = "| scene | renderer | visible dB | edge dB | revealed dB | visible SSIM | edge SSIM | revealed SSIM | dark fringe % | parallax px | band px | s/frame | located |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for scene, who, r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) and ("ssim" in c or c == "s_per_frame")
                         else f"{v:.1f}" if isinstance(v, float) else str(v))
        lines.append(f"| {scene} | {who} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def equal_band(scene: dict, effect: str, w: int, h: int, args, scored: dict) -> dict | None:
    """d2v again, its depth's parallax scaled so that it reveals a band as wide as DepthFlow's
    (photo pixels into the disc), when DepthFlow's is narrower: DepthFlow shows its near layer
    magnified from the first frame (its `height`: the disc 1.16x against the background at 0.2),
    so the rim's first pixels are hidden before the move starts and at the same parallax it
    reveals a narrower band, which is easier to fill. None when the bands already match."""
    ours, theirs = scored["d2v"]["band_px"], scored["DepthFlow"]["band_px"]
    if not (theirs > 0 and ours > theirs + 1.0):
        return None
    name, _, strength = effect.partition(":")
    parallax = float(strength) if strength else DEFAULT_PARALLAX
    for _ in range(2):  # the band is about proportional to the depth's parallax: twice, to settle
        parallax *= theirs / ours
        frames, spf = render_d2v(scene, f"{name}:{parallax:.4f}", w, h, args.frames)
        row = measure_layered(scene, frames, args.every).row() | {"s_per_frame": spf}
        ours = row["band_px"]
        if abs(ours - theirs) <= 1.0 or ours <= 0:
            break
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1024x576")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--every", type=int, default=3, help="measure every n-th frame (and the last)")
    ap.add_argument("--effects", default="parallax,orbit:0.1,dolly_zoom",
                    help="effect[:depth parallax] (d2v's orbit swings 30 degrees with depth; at 0.1 its "
                         "planes part about as far as DepthFlow's can)")
    ap.add_argument("--no-depthflow", action="store_true")
    ap.add_argument("--backgrounds", default="astronaut,chelsea",
                    help="skimage.data photos behind the disc")
    ap.add_argument("--discs", default="coffee", help="skimage.data photos on the disc, each with every background")
    ap.add_argument("--far", type=float, default=0.0,
                    help="the background's depth (the disc's is 1): off 0, as a real depth map's far side is")
    ap.add_argument("--no-stereo", action="store_true")
    ap.add_argument("--no-equal-band", action="store_true",
                    help="no extra d2v row at DepthFlow's revealed band (see equal_band)")
    ap.add_argument("--save", help="write the last frame of each render here as PNG")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    depthflow = not args.no_depthflow and PEERS_PYTHON.exists() and subprocess.run(
        [str(PEERS_PYTHON), "-c", "import depthflow"], capture_output=True).returncode == 0
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, disc in ((b, d) for d in args.discs.split(",") for b in args.backgrounds.split(",")):
            scene = layered_scene(w, h, name, disc, args.far)
            label = f"{name} + disc" if disc == "coffee" else f"{name} + {disc} disc"
            name = name if disc == "coffee" else f"{name}_{disc}"
            for effect in args.effects.split(","):
                renders = [("d2v", render_d2v)]
                if depthflow:
                    renders.append(("DepthFlow", lambda *a: render_depthflow(*a, Path(tmp))))
                scored = {}
                for who, render in renders:
                    frames, spf = render(scene, effect, w, h, args.frames)
                    scores = measure_layered(scene, frames, args.every)
                    row = scored[who] = scores.row() | {"s_per_frame": spf}
                    rows.append((f"{label}, {effect}", who, row))
                    print(f"layered {name} {effect} {who}: {json.dumps(row)}", flush=True)
                    if save:
                        cv2.imwrite(str(save / f"layered_{name}_{effect}_{who}.png"), frames[-1][:, :, ::-1])
                if depthflow and not args.no_equal_band:
                    if (row := equal_band(scene, effect, w, h, args, scored)) is not None:
                        rows.append((f"{label}, {effect}", "d2v at DepthFlow's band", row))
                        print(f"layered {name} {effect} d2v at DepthFlow's band: {json.dumps(row)}", flush=True)
    if args.no_stereo:
        print()
        print(table(rows))
        return
    left, right, disp = motorcycle_depth()
    frame, seconds = render_stereo(left, disp)
    row = measure_stereo(frame, right, disp) | {"s_per_frame": seconds}
    rows.append(("motorcycle, right from left", "d2v", row))
    print(f"stereo d2v: {json.dumps(row)}", flush=True)
    if save:
        cv2.imwrite(str(save / "stereo_d2v.png"), frame[:, :, ::-1])
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
