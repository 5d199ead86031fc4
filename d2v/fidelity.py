"""Path fidelity: did the video's camera go where the person drew? Measured from the
frames alone. Pure OpenCV and numpy.

    measure_fidelity(frames, photo, trajectory, depth=None) -> FidelityReport
    sample_indices(n_frames, max_samples) -> list[int]     which frames are measured
    tolerance_for(effect, has_depth) -> Tolerance          what counts as "followed"
    AutoCorrect.from_env()                                 when a generative base re-runs
    fidelity_image(photo, path_xy, report) -> (h, w, 3) uint8   fidelity.png

Locating a frame's view in the photo. The photo is measured at PHOTO_SIDE (enlarged when
smaller: a zoomed-in frame shows its pixels larger than they are). For each sampled frame:
1. Track: direct alignment (ECC, `cv2.findTransformECC`, coarse to fine, each level against
   the photo's pyramid level of about the same scale) from the last located view carried
   along by the plan's own frame-to-frame motion, then from the last located view as it
   was. The first fit whose correlation reaches ECC_MIN_CORRELATION wins.
2. Otherwise (the first frame, a lost track, a video that jumps) features: ORB on the frame
   at about the photo's scale, Lowe's ratio test against the photo's ORB features, a
   robust fit (MAGSAC), refined and vouched for by direct alignment; a fit the pixels do not
   bear out is dropped.
3. Otherwise direct alignment from the planned view (low texture, where features fail).
Frontal moves (all but orbit) are fitted as affine maps and reported as the nearest
similarity, the roll weighted by how much texture pins each frame axis: a frame of a mast
against the sky leaves its shear free, and that must not read as a roll.

What is compared, for each located frame i against the plan's camera i:
* centre: the measured view centre, seen through the planned camera, is this far from the
  frame's centre, in % of the view width (1% = 10 px on a 1024-wide frame; of its height for a
  frame taller than wide, `_span`), less RESOLVABLE_PHOTO_PX (a deep zoom's view spans few
  photo pixels: finer than that, the photo says nothing);
* zoom: measured / planned zoom - 1, in %; roll: measured - planned roll, in degrees;
* corners: the farthest frame corner from where the plan puts it, in % of the view width
  (this is what catches an orbit swinging the wrong way: same centre, other keystone).

Depth maps: located in 3D. With a depth map (given or estimated) every frame is a render of
a known camera through known geometry, so it is located as a camera, not a homography: the
photo's SIFT features are lifted to 3D exactly as the renderer lifts image points (its
layers, `CameraRenderer._trajectory_layers`, hung on the first camera), each frame's SIFT
features are matched to them (ratio test), and the frame's camera is solved from those
2D-3D pairs (`cv2.solvePnPRansac`, SQPnP, then Levenberg-Marquardt on the inliers) with the
plan's intrinsics. The picture plane (the subject's layer for pivoting moves) seen through
the solved and the planned camera gives the same centre, zoom, roll and corner errors as a
flat clip, and each frame also reports its rotation error (RotErr: the angle between the
solved and the planned orientation) and its yaw, so an orbit's arc is measured. On
scikit-image's motorcycle with its measured disparity (holes filled, smoothed), 1024x576:
parallax, orbit and dolly_zoom located 16 of 16 sampled frames (homographies: 5 to 9), RotErr
at most 0.23 degrees, the orbit's measured arc 29.95 degrees for the planned 30.
Where the photo's features cannot place a frame (a hilly depth map under an orbit
foreshortens the late frames past what features recognise; the spikes of a noise-like depth
map are hidden by the renderer, so the photo's features are not where the frames show them),
or place it beyond tolerance or more than POSE_RETRY_ROTATION_DEG from its planned
orientation (frames rendered small give few features: at 160x90 an orbit's frames were
solved up to 4.4 degrees off), the frame is solved again with its matches to a render of its
planned camera pooled in: that render's features are placed in 3D where the planned
camera's rays first meet the renderer's layers. One consensus over both sets: a faithful
frame matches its render closely, a video that went elsewhere hardly at all, so its
camera is still the one the photo's features give (bench/depth_general.py: 0 of 15 videos of
the path drawn the other way passed, on five depth maps).

Parallax without a depth map. A flat render is a homography of the photo, exactly, and the
plan's plane homography is the yardstick. With the stand-in depth of dolly_zoom and parallax
no homography is exact: the fit settles on a blend of the layers. Then the yardstick is the
same measurement of the camera backend's own render of the planned cameras (rendered small, the sampled frames only), so a video that follows
measures like the render, whatever its parallax. dolly_zoom, orbit and parallax pivot on
their subject (its layer stays on the image plane; for parallax the stroke's middle, which
near things slide past and far ones lag behind): they are measured on the plane of the
subject too. A patch around the subject (SUBJECT_PATCH) is fitted on its own, in the video
and in the render, and compared (the subject's place and size), so a move about another
point cannot pass for this one; a slide drawn the other way is a miss too, its views
travelling the other way (tests/test_parallax.py). A motion-blurred clip (the request's
shutter) is a blend of views: it, too, is compared with a render smeared alike, to which each
frame is first aligned directly (a surge smeared over half the frame cannot be located in the
photo itself). Views allowed past the photo's borders (allow_borders) are located in the photo
mirrored at its edges, as the renderer extends it. Tolerances:

    effect                                any frame / end frame   zoom   roll    corners
    planar moves (zoom_in, pull_back,       3% / 1%                5%    2 deg     5%
      pan, spiral, earth_zoom_out,
      crash_zoom)
    orbit (flat: a keystoned plane)         3% / 1%                5%    2 deg     5%
    parallax (stand-in depth)               3% / 1%                5%    2 deg     5%
    dolly_zoom (stand-in depth)             4% / 2%                8%    2 deg     6%
    any effect with a depth map             5% / 3%               10%    3 deg     8%

A faithful camera render measures far inside these: on scikit-image's photos, every effect,
the worst planar frame measured 0.2% off, the worst end 0.06%, zoom 2.4%, roll 0.9 deg;
dolly_zoom within about half its tolerances (bench/RESULTS.md, bench/fidelity_bench.py).

Verdicts: `followed` (every located frame within tolerance, the last frame among them, and
at least MIN_LOCATED_SHARE of the sampled frames located); `missed` (a located frame beyond a tolerance: the worst one
and by how much; with too few located, two such frames); `unmeasured` with the reason (a
flat or noise-like photo, too few frames located, the last frame not located). Measuring never raises for the user:
anything unexpected becomes `unmeasured` with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

from d2v import camera
from d2v.interpolate import camera_inbetweens
from d2v.models import CameraFrame, CameraTrajectory, FidelityFrame, FidelityReport
from d2v.trajectory import PIVOT_EFFECTS, PSEUDO_DEPTH_EFFECTS

PHOTO_SIDE = 1024  # the photo is measured at this size (long side)
ECC_SIDE = 256  # frames are aligned directly at most this wide (1% of the view: 2.6 px; ECC is sub-pixel)
FEATURE_MIN_SIDE, FEATURE_SIDE = 256, 512  # and matched by features at a width in this range
ECC_ITERATIONS = 50
MIN_SIDE = 160  # smaller frames (a model's keyframes) are enlarged to this width to be measured
MIN_ACROSS = 48  # and a frame shrunk to be measured keeps at least this many px on its short side
ORB_PHOTO_FEATURES, ORB_FRAME_FEATURES = 3000, 800
POSE_PHOTO_FEATURES, POSE_FRAME_FEATURES = 2000, 800  # depth clips: SIFT features located in 3D
POSE_RETRY_ROTATION_DEG = 1.0  # a depth clip's frame solved this far from its planned orientation is solved again
RATIO = 0.8  # Lowe's ratio test
RANSAC_PX = 3.0  # inlier threshold, in measured-frame pixels
MIN_INLIERS = 12
MIN_INLIER_SHARE = 0.2
ECC_MIN_CORRELATION = 0.85
RESOLVABLE_PHOTO_PX = 0.25  # a view centre this close to the plan's (photo px) is where the plan puts it
SAME_PICTURE_CORRELATION = 0.97  # a frame this close to its smeared render, unmoved, is that render
REFERENCE_SIDE = 384  # parallax: the camera backend's reference renders are this wide
SUBJECT_PATCH = 0.3  # dolly_zoom, orbit with depth: the subject is fitted alone in a patch this wide (x frame)
MIN_LOCATED_SHARE = 0.5  # fewer located frames than this share: unmeasured
# A frame whose view spans fewer photo pixels across than this (a typed camera's 200x push into
# a small photo: 1.6 px) shows a smear of a few pixels: not measured, as its tolerance (1% of the
# view) would be a sixtieth of a pixel. (A 16 px photo panned across, 6.4 px views, is measured
# and followed: the frames still hold its pixels' pattern.)
MIN_VIEW_PX = 4.0
DEFAULT_SAMPLES = 16  # frames measured per clip (the first and last always): 10% of a camera job's time
MIN_PHOTO_DETAIL = 2.0  # std of the photo's Laplacian (gray levels) below which it counts as flat
NOISE_SLOPE = -1.0  # power-spectrum slope above which the photo counts as noise (natural: about -2)


@dataclass(frozen=True)
class Tolerance:
    center_pct: float  # any frame
    end_center_pct: float  # the last frame
    zoom_pct: float
    roll_deg: float
    corner_pct: float

    def as_dict(self) -> dict[str, float]:
        return {"center_pct": self.center_pct, "end_center_pct": self.end_center_pct,
                "zoom_pct": self.zoom_pct, "roll_deg": self.roll_deg, "corner_pct": self.corner_pct}


PLANAR = Tolerance(3.0, 1.0, 5.0, 2.0, 5.0)
TOLERANCES = {"dolly_zoom": Tolerance(4.0, 2.0, 8.0, 2.0, 6.0)}
WITH_DEPTH = Tolerance(5.0, 3.0, 10.0, 3.0, 8.0)


def tolerance_for(effect: str, has_depth: bool = False) -> Tolerance:
    return WITH_DEPTH if has_depth else TOLERANCES.get(effect, PLANAR)


THRESHOLD_ENV, RETRIES_ENV = "D2V_FIDELITY_THRESHOLD", "D2V_FIDELITY_RETRIES"


@dataclass(frozen=True)
class AutoCorrect:
    """When a generative base stage re-runs closer to the camera render: its keyframes miss
    (any frame's centre more than `threshold_pct` of the view width off, or a miss on zoom,
    roll or framing, or frames that cannot be found in the photo at all), up to `retries`
    more times, each at `step` less guidance strength (strength is a log scale of noise:
    0.15 less starts from 6.7 times less noise). Settings: D2V_FIDELITY_THRESHOLD (percent,
    default 3) and D2V_FIDELITY_RETRIES (default 2, 0 = never)."""

    threshold_pct: float = 3.0
    retries: int = 2
    step: float = 0.15

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AutoCorrect":
        import os

        from d2v.errors import InvalidRequestError

        env = os.environ if env is None else env
        try:
            threshold = float(env.get(THRESHOLD_ENV, cls.threshold_pct))
            retries = int(env.get(RETRIES_ENV, cls.retries))
        except ValueError:
            raise InvalidRequestError(f"{THRESHOLD_ENV} must be a number (percent of the view width) and "
                                      f"{RETRIES_ENV} a whole number") from None
        if not (0.0 < threshold <= 100.0 and math.isfinite(threshold)) or not 0 <= retries <= 5:
            raise InvalidRequestError(f"{THRESHOLD_ENV} must be in (0, 100] and {RETRIES_ENV} in 0..5, got "
                                      f"{threshold:g} and {retries}")
        return cls(threshold, retries)

    def misses(self, report: FidelityReport) -> bool:
        if report.verdict == "missed":
            return True
        if report.verdict == "unmeasured":  # the frames are not of the photo: a miss, unless no frame was judged
            return report.sampled > 0 and not report.photo_unusable
        return (report.worst_center_pct or 0.0) > self.threshold_pct

    @staticmethod
    def rank(report: FidelityReport) -> tuple:
        """Lower is better: followed, then missed, then unmeasured; then the worst frame's error."""
        order = {"followed": 0, "clamped": 0, "missed": 1, "unmeasured": 2}[report.verdict]
        worst = report.worst_center_pct if report.worst_center_pct is not None else math.inf
        return order, -report.located, worst


def sample_indices(n_frames: int, max_samples: int = DEFAULT_SAMPLES) -> list[int]:
    """Up to max_samples frame indices spread evenly over the clip, first and last included."""
    if n_frames <= 0:
        return []
    k = max(1, min(n_frames, int(max_samples)))
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, k)})


# -- geometry ---------------------------------------------------------------------------------


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised correlation of two images of one size (ECC's measure, at no motion)."""
    a = a.astype(np.float32).ravel() - float(a.mean())
    b = b.astype(np.float32).ravel() - float(b.mean())
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-6))


def _scale(s: float) -> np.ndarray:
    """d2v coordinates (pixel centres at +0.5) of an image resized by s, from the original's
    (exact for d2v's corner-origin coordinates)."""
    return np.diag([s, s, 1.0])


def _cv_to_d2v(pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) + 0.5


def _view(H: np.ndarray, out_w: int, out_h: int) -> tuple[np.ndarray, float, float]:
    """For a homography H (photo -> frame, d2v coordinates): the photo point under the frame's
    centre, photo pixels per frame pixel there, and the frame's horizontal's angle on the photo
    (degrees, clockwise as seen, like the trajectory's roll)."""
    centre, J = camera.local_affine(np.linalg.inv(H), out_w / 2.0, out_h / 2.0)  # J: d(photo) / d(frame)
    scale = math.sqrt(abs(np.linalg.det(J)))
    angle = math.degrees(math.atan2(J[1, 0], J[0, 0]))
    return centre, scale, angle


def _span(out_w: int, out_h: int) -> float:
    """What errors are a percentage of: the view's width, or its height when it is taller than
    wide. (A frame 64 wide and 3840 tall counted one pixel as 1.6%, and a tenth of a degree of
    roll moved its corners 5% of its width: its faithful render "missed".)"""
    return float(max(out_w, out_h))


def _compare(H: np.ndarray, planned: np.ndarray, out_w: int, out_h: int) -> tuple[list[float], float, float, float, float]:
    """(measured centre, centre error % of the view width, zoom error %, roll error degrees,
    corner error % of the view width) of the measured view H against the planned one (both
    photo px -> frame px). The corner error is how far the frame's corners land from where
    the plan puts them: it catches what centre, zoom and roll miss (an orbit's keystone
    swinging the wrong way)."""
    c_m, scale_m, angle_m = _view(H, out_w, out_h)
    _, scale_p, angle_p = _view(planned, out_w, out_h)
    seen = camera.apply_homography(planned, c_m[None])[0]  # the measured centre, in the planned frame
    span = _span(out_w, out_h)
    # What the photo cannot resolve is no error: a 20x zoom's last view of a 480 px wide photo
    # spans 24 photo px, one of them 10 frame px, and a quarter of one read as 1% off.
    unresolved = RESOLVABLE_PHOTO_PX / max(scale_p, 1e-9)  # frame px
    off = max(0.0, float(np.hypot(seen[0] - out_w / 2.0, seen[1] - out_h / 2.0)) - unresolved)
    centre_pct = 100.0 * off / span
    zoom_pct = 100.0 * (scale_p / scale_m - 1.0)
    roll = (angle_m - angle_p + 180.0) % 360.0 - 180.0
    corners = np.array([[0.0, 0.0], [out_w, 0.0], [out_w, out_h], [0.0, out_h]])
    moved = camera.apply_homography(planned @ np.linalg.inv(H), corners)
    corner_pct = 100.0 * float(np.max(np.linalg.norm(moved - corners, axis=1))) / span
    return [float(c_m[0]), float(c_m[1])], centre_pct, zoom_pct, roll, corner_pct


def _affine_at(M: np.ndarray, x: float, y: float) -> np.ndarray:
    """The affine map (3x3) that agrees with the homography M at (x, y) to first order."""
    q, J = camera.local_affine(M, x, y)
    return np.vstack([np.column_stack([J, q - J @ np.array([x, y])]), [0.0, 0.0, 1.0]])


def _similarity(H: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The similarity (photo -> frame) nearest an affine fit H, about the frame's centre.

    An affine fit of a frame whose texture runs one way (a mast against the sky) leaves its
    shear free: the axis across the texture turns at will. So the roll is each frame axis's
    turn weighted by how much texture pins it (horizontal edges pin the x axis: the energy of
    vertical gradients; vertical edges the y axis), and the scale is the fit's area scale."""
    h, w = frame.shape[:2]
    G = np.linalg.inv(H)
    c = G @ np.array([w / 2.0, h / 2.0, 1.0])
    c = c[:2] / c[2]
    J = G[:2, :2] / G[2, 2]  # frame -> photo, linear part (H is affine)
    g = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), 1.0)
    pin_x = float(np.square(cv2.Sobel(g, cv2.CV_32F, 0, 1)).sum())
    pin_y = float(np.square(cv2.Sobel(g, cv2.CV_32F, 1, 0)).sum())
    theta_x = math.atan2(J[1, 0], J[0, 0])
    theta_y = math.atan2(-J[0, 1], J[1, 1])
    diff = (theta_y - theta_x + math.pi) % (2 * math.pi) - math.pi
    theta = theta_x + diff * pin_y / max(pin_x + pin_y, 1e-12)
    scale = math.sqrt(abs(np.linalg.det(J)))
    R = scale * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    G_sim = np.eye(3)
    G_sim[:2, :2] = R
    G_sim[:2, 2] = c - R @ np.array([w / 2.0, h / 2.0])
    return np.linalg.inv(G_sim)


def _is_affine(H: np.ndarray, width: float, height: float) -> bool:
    """True when H's perspective terms change its scale by under 0.1% across the frame."""
    G = np.linalg.inv(H)
    G = G / G[2, 2]
    return abs(G[2, 0]) * width + abs(G[2, 1]) * height < 1e-3


def _plausible(H: np.ndarray | None) -> bool:
    if H is None or not np.all(np.isfinite(H)):
        return False
    A = H[:2, :2] / H[2, 2] if abs(H[2, 2]) > 1e-12 else None
    return A is not None and np.linalg.det(A) > 1e-8


# -- the photo --------------------------------------------------------------------------------


def _gray(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb
    return cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2GRAY)


def _spectral_slope(gray: np.ndarray) -> float:
    """Slope of the radially averaged power spectrum on log-log axes: natural photos fall
    off as about f^-2, white noise is flat (0)."""
    side = 256
    g = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    g -= g.mean()
    g *= np.outer(np.hanning(side), np.hanning(side)).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    yy, xx = np.indices(power.shape)
    r = np.hypot(xx - side / 2, yy - side / 2).astype(int)
    radial = np.bincount(r.ravel(), power.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    f = np.arange(len(radial))
    keep = (f >= 4) & (f <= side // 2 - 8) & (radial > 0)
    if keep.sum() < 8:
        return 0.0
    return float(np.polyfit(np.log(f[keep]), np.log(radial[keep]), 1)[0])


class PhotoIndex:
    """The photo as the measurement needs it, built once per photo: a gray copy at most
    PHOTO_SIDE on its long side, its ORB features, and whether it has enough structure
    to locate views by at all (`unusable` holds the reason when not)."""

    def __init__(self, photo: np.ndarray):
        gray = _gray(photo)
        self.height, self.width = gray.shape[:2]
        # Features and alignment work on the photo at PHOTO_SIDE, enlarged if smaller: a zoomed-in
        # frame shows the photo's pixels larger than they are, and ORB's pyramid only shrinks.
        self.scale = PHOTO_SIDE / max(self.width, self.height)  # feature px per photo px
        size = (max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale)))
        self.gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if self.scale < 1 else cv2.INTER_CUBIC)
        # Direct alignment samples the level nearest the frame's scale (blurred like the frames).
        self.levels = [cv2.GaussianBlur(self.gray, (0, 0), 1.0)]
        while min(self.levels[-1].shape[:2]) >= 32:
            self.levels.append(cv2.pyrDown(self.levels[-1]))
        # Is there anything to locate views by? Judged on the photo's own pixels, not enlarged.
        own = self.gray if self.scale <= 1 else gray
        detail = float(cv2.Laplacian(own, cv2.CV_32F).std())
        self.unusable: str | None = None
        if detail < MIN_PHOTO_DETAIL:
            self.unusable = (f"the photo is almost a flat colour (detail {detail:.1f} gray levels): there is "
                             "nothing in it to locate the views by")
        slope = _spectral_slope(own)
        if self.unusable is None and slope > NOISE_SLOPE:
            self.unusable = (f"the photo looks like noise (its detail does not fall off with scale: spectral "
                             f"slope {slope:.2f}, photos about -2), so views at different zooms cannot be told "
                             "apart")
        self._features: tuple | None = None  # computed on first use: tracking often needs none

    def _ensure_features(self) -> None:
        if self._features is None:
            orb = cv2.ORB_create(nfeatures=ORB_PHOTO_FEATURES, scaleFactor=1.2, nlevels=8, fastThreshold=10)
            keypoints, descriptors = orb.detectAndCompute(self.gray, None)
            points = _cv_to_d2v([k.pt for k in keypoints]).reshape(-1, 2) / self.scale  # photo px
            self._features = (points, descriptors, cv2.BFMatcher(cv2.NORM_HAMMING))

    @property
    def points(self) -> np.ndarray:
        self._ensure_features()
        return self._features[0]

    def match(self, descriptors: np.ndarray) -> list[tuple[int, int]]:
        """(frame feature, photo feature) pairs that pass the ratio test."""
        self._ensure_features()
        _, photo_descriptors, matcher = self._features
        if descriptors is None or photo_descriptors is None or len(descriptors) < 2 or len(photo_descriptors) < 2:
            return []
        pairs = []
        for m in matcher.knnMatch(descriptors, photo_descriptors, k=2):
            if len(m) == 2 and m[0].distance < RATIO * m[1].distance:
                pairs.append((m[0].queryIdx, m[0].trainIdx))
        return pairs


# -- one frame --------------------------------------------------------------------------------


def _smoothing(blur_px: float, S: np.ndarray) -> float:
    """ECC's blur for a frame smeared by `blur_px` (frame px) of motion, in the px of the
    frame shrunk by S: a smeared frame still correlates once both sides lose detail finer
    than the smear, so blur the template and the photo alike by about its length."""
    return 1.0 + blur_px * S[0, 0] / 3.0


def _shrink(gray: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame at most `side` wide (and at least MIN_SIDE: a model's small keyframes are
    enlarged so ORB's patches and ECC's pyramid fit), and S: frame px -> that image's px.
    A sliver (3840x64) keeps MIN_ACROSS px across rather than `side` wide (256x4 could not be
    located: its check said missed), and a tall one (64x3840) is enlarged to at most
    4 * MIN_SIDE tall: it is no small keyframe."""
    h, w = gray.shape[:2]
    if w >= MIN_SIDE:
        k = min(1.0, max(side / w, MIN_ACROSS / min(w, h)))
    else:
        k = max(1.0, min(MIN_SIDE / w, 4 * MIN_SIDE / h))
    if k == 1.0:
        return gray, np.eye(3)
    small = cv2.resize(gray, (max(8, round(gray.shape[1] * k)), max(8, round(gray.shape[0] * k))),
                       interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    return small, np.diag([small.shape[1] / gray.shape[1], small.shape[0] / gray.shape[0], 1.0])


def _feature_side(gray: np.ndarray, planned: np.ndarray, photo_scale: float) -> int:
    """Frame width for feature matching: about the planned view's width in the photo's
    feature pixels, so ORB compares like with like (its pyramid covers the rest)."""
    _, scale, _ = _view(planned, gray.shape[1], gray.shape[0])  # photo px per frame px
    return int(np.clip(gray.shape[1] * scale * photo_scale, FEATURE_MIN_SIDE, FEATURE_SIDE))


class _FrameLocator:
    """Locates frames of one clip in the photo (see the module docstring)."""

    def __init__(self, photo: PhotoIndex, affine: bool = False):
        self.photo = photo
        # Frontal moves (all but orbit) map the photo to the frame by an affine map: fitting one
        # leaves no room for the perspective terms that a frame of little texture (a tower against
        # the sky) cannot pin down, and which would otherwise show up as roll or keystone.
        self.affine = affine
        self.orb = cv2.ORB_create(nfeatures=ORB_FRAME_FEATURES, scaleFactor=1.2, nlevels=8, fastThreshold=10)

    def _shrink(self, gray: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
        return _shrink(gray, side)

    def _feature_side(self, gray: np.ndarray, planned: np.ndarray) -> int:
        return _feature_side(gray, planned, self.photo.scale)

    def locate(self, rgb: np.ndarray, guesses: Sequence[np.ndarray], blur_px: float = 0.0
               ) -> tuple[np.ndarray, str] | None:
        """H (photo px -> frame px, d2v coordinates) and how it was found, or None. The last
        guess is the planned view.

        1. Track: direct alignment (ECC) from each guess (the last located view carried
           along, then the last located view as it was); the first fit that correlates wins.
        2. Otherwise features: matched to the photo's, a robust homography, refined and
           checked by direct alignment (a fit the pixels do not bear out is dropped).
        3. Otherwise direct alignment from the remaining guesses (the planned view)."""
        gray = _gray(rgb)
        small, S = self._shrink(gray, ECC_SIDE)
        smooth = _smoothing(blur_px, S)
        P = _scale(self.photo.scale)
        to_small = lambda H: S @ H @ np.linalg.inv(P)  # noqa: E731  photo px -> frame px  =>  feature -> small
        # The first frame has no track: its planned view is where direct alignment starts.
        tracking, fallback = (list(guesses[:-1]), list(guesses[-1:])) if len(guesses) > 1 else (list(guesses), [])
        found, method = None, None
        for guess in tracking:
            if (found := self._by_ecc(small, to_small(guess), smooth)) is not None:
                method = "tracked"
                break
        if found is None:
            fs, FS = self._shrink(gray, self._feature_side(gray, guesses[-1]))
            H_feat = self._by_features(fs)
            if H_feat is not None and (found := self._by_ecc(small, S @ np.linalg.inv(FS) @ H_feat, smooth)) is not None:
                method = "features"
        if found is None:
            for guess in fallback:
                if (found := self._by_ecc(small, to_small(guess), smooth)) is not None:
                    method = "ecc"
                    break
        if found is None:
            return None
        if self.affine:
            found = _similarity(found, small)
        return np.linalg.inv(S) @ found @ P, method

    def follow_render(self, rgb: np.ndarray, render: np.ndarray, H_render: np.ndarray
                      ) -> tuple[np.ndarray, str] | None:
        """H (photo px -> frame px) of a frame aligned directly to a render whose view of the
        photo is H_render (in this frame's px), starting from no motion between them; None when
        they do not correlate by ECC_MIN_CORRELATION (a video that went elsewhere: it is located
        in the photo instead)."""
        small, S = self._shrink(_gray(rgb), ECC_SIDE)
        if float(small.std()) < 1.0:
            return None
        other, _ = self._shrink(_gray(render), ECC_SIDE)  # (resampled as the frame: equal frames stay equal)
        if other.shape != small.shape:  # (a reference rendered smaller than the frame)
            other = cv2.resize(other, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_LINEAR)
        a, b = cv2.GaussianBlur(small, (0, 0), 1.0), cv2.GaussianBlur(other, (0, 0), 1.0)
        if _correlation(a, b) >= SAME_PICTURE_CORRELATION:
            # The render itself, but for the encoder's noise: where it is. (Aligning the two would
            # only fit that noise: a surge's radial smear hardly changes with zoom, and ECC slid
            # along it, 25% at the end of hyperspace's.)
            return H_render / H_render[2, 2], "tracked"
        fit = _ecc(a, b, np.eye(2, 3) if self.affine else np.eye(3), self.affine)
        if fit is None or fit[0] < ECC_MIN_CORRELATION:
            return None
        G = np.linalg.inv(S) @ camera.from_opencv(fit[1]) @ S  # this frame's px -> the render's
        H = np.linalg.inv(G) @ H_render
        return (H / H[2, 2], "tracked") if _plausible(H) else None

    def _by_features(self, small: np.ndarray) -> np.ndarray | None:
        """H (photo feature px -> small frame px) from ORB matches, or None."""
        keypoints, descriptors = self.orb.detectAndCompute(small, None)
        pairs = self.photo.match(descriptors)
        if len(pairs) < MIN_INLIERS:
            return None
        q, t = np.array(pairs).T
        frame_pts = _cv_to_d2v([keypoints[i].pt for i in q])
        photo_pts = self.photo.points[t] * self.photo.scale
        if self.affine:
            A, inliers = cv2.estimateAffine2D(photo_pts, frame_pts, method=cv2.USAC_MAGSAC,
                                              ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.999)
            H = None if A is None else np.vstack([A, [0.0, 0.0, 1.0]])
        else:
            H, inliers = cv2.findHomography(photo_pts, frame_pts, cv2.USAC_MAGSAC, RANSAC_PX, maxIters=2000,
                                            confidence=0.999)
        if H is None or inliers is None:
            return None
        count = int(inliers.sum())
        if count >= MIN_INLIERS and count >= MIN_INLIER_SHARE * len(pairs) and _plausible(H):
            return H / H[2, 2]
        return None

    def locate_subject(self, rgb: np.ndarray, H: np.ndarray, at: np.ndarray, blur_px: float = 0.0
                       ) -> np.ndarray | None:
        """The map (photo px -> frame px) of a patch of the frame around `at` (frame px), fitted
        alone, starting from the whole frame's fit H: how the layer there moved."""
        small, S = self._shrink(_gray(rgb), ECC_SIDE)
        h, w = small.shape[:2]
        side = max(32, round(SUBJECT_PATCH * w))
        c = S @ np.array([at[0], at[1], 1.0])
        x0 = int(np.clip(round(c[0] / c[2] - side / 2), 0, max(0, w - side)))
        y0 = int(np.clip(round(c[1] / c[2] - side / 2), 0, max(0, h - side)))
        patch = np.ascontiguousarray(small[y0:y0 + side, x0:x0 + side])
        T = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
        P = _scale(self.photo.scale)
        found = self._by_ecc(patch, T @ S @ H @ np.linalg.inv(P), _smoothing(blur_px, S), affine=True)
        return None if found is None else np.linalg.inv(T @ S) @ found @ P

    def _by_ecc(self, small: np.ndarray, guess: np.ndarray, smooth: float = 1.0,
                affine: bool | None = None) -> np.ndarray | None:
        """Direct alignment from a guess H (photo feature px -> small frame px): the refined H
        when the frame and the photo seen through it correlate by ECC_MIN_CORRELATION, else None.
        `smooth`: the Gaussian blur (small frame px) both sides get (see `_smoothing`).
        Coarse to fine, each level against the photo's pyramid level of about the same scale
        (sampling a finer level would alias)."""
        if not _plausible(guess) or float(small.std()) < 1.0:
            return None
        affine = self.affine if affine is None else affine
        H = guess / guess[2, 2]
        levels = [(cv2.pyrDown(small), 0.5), (small, 1.0)] if min(small.shape) >= 64 else [(small, 1.0)]
        cc = -1.0
        for image, k in levels:
            K = camera.from_opencv(np.diag([k, k, 1.0]))  # small frame px -> this level's (pyrDown: exact)
            G = np.linalg.inv(K @ H)  # this level's px -> photo feature px
            _, scale, _ = _view(K @ H, image.shape[1], image.shape[0])
            lvl = int(np.clip(math.floor(math.log2(max(scale, 1e-6)) + 0.3), 0, len(self.photo.levels) - 1))
            W = camera.to_opencv(G, lvl)  # onto the photo's pyramid level lvl
            W = W / W[2, 2]
            if affine:
                W = _affine_at(W, image.shape[1] / 2.0, image.shape[0] / 2.0)[:2]
            sigma = max(1.0, smooth * k)
            template = cv2.GaussianBlur(image, (0, 0), sigma)
            if lvl == 0 and scale < 0.5 and sigma <= 1.0:
                # A frame that enlarges the photo 2x or more (a 20x zoom: 5x) shows its pixels
                # interpolated, not blurred: against the level's blur (1 px, there 2-5 frame px) a
                # shifted fit at another zoom matched best (infinite_zoom's last frames, 3% off).
                photo = self.photo.gray
            else:
                photo = self.photo.levels[lvl] if sigma <= 1.0 else cv2.GaussianBlur(
                    self.photo.levels[lvl], (0, 0), math.sqrt(sigma * sigma - 1.0))
            fit = _ecc(template, photo, W, affine)
            if fit is None:
                return None
            cc, W = fit
            G = camera.from_opencv(W, lvl)
            H = np.linalg.inv(K) @ np.linalg.inv(G)
            H = H / H[2, 2]
        return H if cc >= ECC_MIN_CORRELATION and _plausible(H) else None


def _ecc(template: np.ndarray, image: np.ndarray, W: np.ndarray, affine: bool) -> tuple[float, np.ndarray] | None:
    """OpenCV's direct alignment of `image` to `template` from the warp W (OpenCV pixels, 2x3
    for an affine fit, else 3x3): (its correlation, the refined warp as 3x3), or None where it
    did not converge or had nothing to align."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 1e-4)
    try:
        cc, W = cv2.findTransformECC(template, image, W.astype(np.float32),
                                     cv2.MOTION_AFFINE if affine else cv2.MOTION_HOMOGRAPHY, criteria, None, 1)
    except cv2.error:
        return None
    W = W.astype(np.float64)
    return float(cc), (np.vstack([W, [0.0, 0.0, 1.0]]) if W.shape[0] == 2 else W)


class _PoseLocator:
    """Locates frames of a clip rendered with a depth map in 3D (see the module docstring):
    the photo's features lifted to 3D the way the renderer lifts them, each frame's features
    matched to them, and the frame's camera solved (PnP). Where that finds too few pairs (a
    view the move has turned far from the photo's: a hilly depth map under an orbit is
    foreshortened past what features recognise), or a camera beyond tolerance or more than
    POSE_RETRY_ROTATION_DEG off the planned orientation (a small frame's few features), the frame is
    solved again with, besides, its matches to a render of its planned camera, whose features
    are placed in 3D where that camera's rays meet the renderer's layers (`_on_layers`)."""

    MARCH_STEPS = 160  # samples of a ray through the layers' depth range

    def __init__(self, photo: PhotoIndex, photo_rgb: np.ndarray, trajectory: CameraTrajectory, depth: np.ndarray):
        from d2v.render import CameraRenderer

        self.photo = photo
        self.renderer = CameraRenderer(photo_rgb, depth)
        self.trajectory = trajectory
        # The renderer's own layers (relative depth s per image point, the subject's layer on
        # the plane for pivoting moves), hung on the camera it renders from: the first one.
        self.c0 = trajectory.frames[0].camera_center()
        self.s = self.renderer._trajectory_layers(trajectory, self.c0, background=False).s
        # SIFT, not the ORB of flat clips: its sub-pixel keypoints pin a camera solved in 3D
        # down more tightly (an orbit's yaw to a few tenths of a degree).
        self.sift = cv2.SIFT_create(nfeatures=POSE_PHOTO_FEATURES, contrastThreshold=0.01)
        keypoints, self.descriptors = self.sift.detectAndCompute(photo.gray, None)
        pts = _cv_to_d2v([k.pt for k in keypoints]).reshape(-1, 2) / photo.scale  # photo px
        flat = np.column_stack([pts, np.zeros(len(pts))])
        self.points = self.c0 + self._s_at(pts)[:, None] * (flat - self.c0)  # P = C0 + s (Q - C0), world (image px)
        self.frame_sift = cv2.SIFT_create(nfeatures=POSE_FRAME_FEATURES, contrastThreshold=0.01)
        self.matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 32})  # k-d trees
        # The photo's trees built once (given with each frame's query they were built anew each
        # time: 13 ms a frame against 6 for the query alone).
        self.photo_matcher = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 32})
        if self.descriptors is not None and len(self.descriptors) >= 2:
            self.photo_matcher.add([self.descriptors])
            self.photo_matcher.train()
        self.references: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # by frame: (descriptors, world points)

    def _s_at(self, pts: np.ndarray) -> np.ndarray:
        """The layers' s at image points (..., 2) (bilinear, as the renderer reads it)."""
        from d2v.render import _sample

        s = self.s
        sx, sy = s.shape[1] / self.photo.width, s.shape[0] / self.photo.height
        x = (pts[..., 0] * sx - 0.5).astype(np.float32).ravel()
        y = (pts[..., 1] * sy - 0.5).astype(np.float32).ravel()
        return _sample(s, x, y).reshape(pts.shape[:-1]).astype(np.float64)

    def _on_layers(self, plan: CameraFrame, xy: np.ndarray) -> np.ndarray:
        """Where the rays of camera `plan` through frame points xy (N, 2) first meet the
        layers, world (N, 3) (NaN where none does). A point P of relative depth s_P lies over
        image point Q = C0 + (P - C0) / s_P; the ray is marched from the nearest layer to the
        farthest until it is no longer in front of the layer there (s_P >= s(Q))."""
        C, R, K = plan.camera_center(), plan.R(), plan.K()
        rays = np.column_stack([xy, np.ones(len(xy))]) @ np.linalg.inv(K).T @ R  # world directions
        c0 = self.c0
        s_p = np.linspace(float(self.s.min()), float(self.s.max()) + 1e-6, self.MARCH_STEPS)  # (M,)
        z = c0[2] * (1.0 - s_p)  # the world depth of each s
        lam = (z[None, :] - C[2]) / rays[:, 2:3]  # (N, M) along each ray
        P = C[None, None, :] + lam[..., None] * rays[:, None, :]  # (N, M, 3)
        Q = c0[:2] + (P[..., :2] - c0[:2]) / s_p[None, :, None]
        ahead = s_p[None, :] - self._s_at(Q)  # < 0: in front of the layer
        ahead[lam <= 0] = -1.0  # behind the camera: not a hit
        behind = ahead >= 0
        k = np.argmax(behind, axis=1)
        hit = behind[np.arange(len(xy)), k] & (k > 0)
        k = np.maximum(k, 1)
        rows = np.arange(len(xy))
        a, b = ahead[rows, k - 1], ahead[rows, k]
        f = np.clip(a / np.where(a - b != 0, a - b, -1.0), 0.0, 1.0)[:, None]
        world = P[rows, k - 1] + f * (P[rows, k] - P[rows, k - 1])
        world[~hit] = np.nan
        return world

    def prepare_references(self, plans: dict[int, CameraFrame], indices: Sequence[int], n_video: int,
                           out_w: int) -> None:
        """Renders of the planned cameras of frames `indices` (at most FEATURE_SIDE wide), their
        features and those features' points on the layers."""
        r = min(1.0, FEATURE_SIDE / out_w)  # reference px per frame px
        tr = self.trajectory
        k = out_w / tr.width
        w, h = max(16, round(tr.width * k * r / 2) * 2), max(16, round(tr.height * k * r / 2) * 2)
        indices = [i for i in indices if i not in self.references]
        if not indices:
            return
        if n_video == len(tr):  # the trajectory's own frames: rendered as the clip shows them
            sub = tr.model_copy(update={"width": w, "height": h, "frames": [_resized(f, k * r) for f in tr.frames]})
            renders = self.renderer.render(sub, indices=indices)
        else:  # another tool's frame count: the planned cameras at the same fractions of the move
            sub = tr.model_copy(update={"width": w, "height": h, "frames": [
                _resized(tr.frames[0], k * r), *(_resized(plans[i], r) for i in indices)]})
            renders = list(self.renderer.render(sub))[1:]
        for i, render in zip(indices, renders):
            keypoints, descriptors = self.frame_sift.detectAndCompute(_gray(render), None)
            if descriptors is None or len(keypoints) < MIN_INLIERS:
                self.references[i] = (np.empty((0, 128), np.float32), np.empty((0, 3)))
                continue
            world = self._on_layers(_resized(plans[i], r), _cv_to_d2v([kp.pt for kp in keypoints]))
            keep = np.all(np.isfinite(world), axis=1)
            self.references[i] = (descriptors[keep], world[keep])

    def _match(self, descriptors: np.ndarray | None, against: np.ndarray | None = None) -> list[tuple[int, int]]:
        """(frame feature, photo feature) pairs that pass the ratio test (or against another
        set of descriptors: a reference render's)."""
        photo = against is None
        against = self.descriptors if photo else against
        if descriptors is None or against is None or len(descriptors) < 2 or len(against) < 2:
            return []
        matches = self.photo_matcher.knnMatch(descriptors, k=2) if photo else self.matcher.knnMatch(descriptors, against, k=2)
        return [(m[0].queryIdx, m[0].trainIdx) for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]

    def locate(self, rgb: np.ndarray, plan: CameraFrame, reference: int | None = None
               ) -> tuple[np.ndarray, np.ndarray] | None:
        """(R, t) of the frame's camera (world -> camera, the plan's intrinsics), or None. With
        `reference` (a frame index whose reference render is prepared), its matches to that
        render are pooled with those to the photo."""
        gray = _gray(rgb)
        small, S = _shrink(gray, _feature_side(gray, camera.frame_homography(plan), self.photo.scale))
        keypoints, descriptors = self.frame_sift.detectAndCompute(small, None)
        pairs = self._match(descriptors)
        image_pts = _cv_to_d2v([keypoints[i].pt for i, _ in pairs]).reshape(-1, 2) / np.diag(S)[:2]  # frame px
        world = self.points[[j for _, j in pairs]].reshape(-1, 3)
        if reference is not None and len(self.references[reference][0]) >= 2:
            ref_descriptors, ref_world = self.references[reference]
            r_small, RS = _shrink(gray, min(FEATURE_SIDE, gray.shape[1]))
            r_keypoints, r_descriptors = self.frame_sift.detectAndCompute(r_small, None)
            r_pairs = self._match(r_descriptors, ref_descriptors)
            if r_pairs:
                r_pts = _cv_to_d2v([r_keypoints[i].pt for i, _ in r_pairs]).reshape(-1, 2) / np.diag(RS)[:2]
                image_pts = np.vstack([image_pts, r_pts])
                world = np.vstack([world, ref_world[[j for _, j in r_pairs]]])
        if len(image_pts) < MIN_INLIERS:
            return None
        K = plan.K()
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(world, image_pts, K, None, reprojectionError=RANSAC_PX / S[0, 0],
                                                         iterationsCount=2000, confidence=0.999,
                                                         flags=cv2.SOLVEPNP_SQPNP)
        except cv2.error:
            # SQPnP refuses a sample of points that nearly coincide (OpenCV asserts on their
            # variance): matches that pile onto a few photo points, as a depth map of noise
            # gives them. The frame is not located, not the whole check failed.
            return None
        if not ok or inliers is None or len(inliers) < max(MIN_INLIERS, MIN_INLIER_SHARE * len(image_pts)):
            return None
        inliers = inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(world[inliers], image_pts[inliers], K, None, rvec, tvec)
        R = cv2.Rodrigues(rvec)[0]
        t = tvec.ravel()
        if not np.all((world[inliers] @ R.T + t)[:, 2] > 0):  # every inlier in front of the camera
            return None
        return R, t


def _rotation_deg(R: np.ndarray, planned: np.ndarray) -> float:
    """The angle of the rotation between two cameras' orientations, degrees (RotErr)."""
    cos = (np.trace(R @ planned.T) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0))))


def _yaw_deg(R: np.ndarray) -> float:
    """Which way a camera looks, left-right: its forward axis's angle from straight at the
    picture, degrees, positive to the right."""
    return math.degrees(math.atan2(R[2, 0], R[2, 2]))


# -- a clip -----------------------------------------------------------------------------------


def _planned_frame(trajectory: CameraTrajectory, index: int, n_video: int) -> CameraFrame:
    """The plan's camera for video frame `index` of `n_video`: the same frame when the counts
    agree, else the plan at the same fraction of the move (another tool's frame count)."""
    frames = trajectory.frames
    if n_video == len(frames) or len(frames) == 1:
        return frames[min(index, len(frames) - 1)]
    return camera_inbetweens(frames, [index * (len(frames) - 1) / max(1, n_video - 1)])[0]


def _resized(frame: CameraFrame, k: float) -> CameraFrame:
    """The same camera rendering an output k times the size."""
    return frame.model_copy(update={"fx": frame.fx * k, "fy": frame.fy * k, "cx": frame.cx * k, "cy": frame.cy * k})


def has_parallax(trajectory: CameraTrajectory, depth: np.ndarray | None) -> bool:
    """Whether the camera backend renders this move with parallax (then no homography is exact)."""
    return depth is not None or trajectory.effect in PSEUDO_DEPTH_EFFECTS


def measure_fidelity(
    frames: Mapping[int, np.ndarray] | Sequence[np.ndarray] | Iterable[np.ndarray],
    photo: np.ndarray,
    trajectory: CameraTrajectory,
    *,
    n_frames: int | None = None,
    depth: np.ndarray | None = None,
    photo_index: PhotoIndex | None = None,
    motion_blur: float = 0.0,
    blur_samples: int = 6,
    max_samples: int = DEFAULT_SAMPLES,
) -> FidelityReport:
    """Measure how closely the frames follow the trajectory.

    frames: the clip's frames (a sequence, any iterable), or {index: frame} for just the
    sampled ones (then pass n_frames, the clip's length). photo: the input photo, RGB;
    depth: the depth map the camera backend used, if any; motion_blur and blur_samples: the
    request's shutter (frames) and sub-frames, so smeared frames are compared with renders
    smeared alike. A clip whose frame count differs from the trajectory's is compared at the
    same fraction of the move. Never raises: a failure becomes `unmeasured` with the reason."""
    tolerance = tolerance_for(trajectory.effect, depth is not None)
    try:
        report = _measure(frames, photo, trajectory, n_frames, depth, photo_index, tolerance, max_samples,
                          motion_blur, blur_samples)
        return _against_drawing(report, trajectory, tolerance)
    except Exception as e:  # the check must never cost the user their video
        return _unmeasured(f"the measurement failed ({type(e).__name__}: {e})", 0, tolerance, trajectory.effect)


def _measure(frames, photo, trajectory, n_frames, depth, photo_index, tolerance, max_samples,
             motion_blur, blur_samples) -> FidelityReport:
    if isinstance(frames, Mapping):
        picked = frames  # read in order, one at a time: a mapping may hand each over as it is rendered
        n = int(n_frames if n_frames is not None else (max(picked) + 1 if picked else 0))
        indices = sorted(picked)
    else:
        if not isinstance(frames, (Sequence, np.ndarray)):
            frames = list(frames)
        n = len(frames)
        indices = sample_indices(n, max_samples)
        picked = {i: frames[i] for i in indices}
    if n == 0 or not indices:
        return _unmeasured("the video has no frames", 0, tolerance, trajectory.effect)
    index = photo_index or PhotoIndex(photo)
    if index.unusable:
        return _unmeasured(index.unusable, len(indices), tolerance, trajectory.effect, photo=True)

    out_h, out_w = np.asarray(picked[indices[0]]).shape[:2]
    if abs(out_w / out_h - trajectory.width / trajectory.height) > 0.01:
        raise ValueError(f"frames are {out_w}x{out_h}, not the trajectory's aspect ({trajectory.width}x"
                         f"{trajectory.height})")
    # The plan's cameras for the sampled frames, at the frames' size.
    k = out_w / trajectory.width
    plans = {i: _resized(_planned_frame(trajectory, i, n), k) for i in indices}
    too_close = _too_close(plans, out_w, out_h)  # (not judged, whichever way they are located)
    if depth is None and (pad := _border_reach(plans, photo, out_w, out_h)):
        # Views allowed past the photo's borders show it mirrored there (the renderer's reflect
        # border), which the photo alone matches at the mirrored place, or not at all: they are
        # located in the photo as the renderer extends it, and reported in the photo's pixels.
        photo = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        shifted = _shifted(trajectory, pad)
        results = _measure_views(PhotoIndex(photo), photo, picked, shifted,
                                 {i: _resized(_planned_frame(shifted, i, n), k) for i in indices}, None, n, k,
                                 motion_blur, blur_samples)
        back = lambda xy: None if xy is None else [xy[0] - pad, xy[1] - pad]  # noqa: E731
        results = [r.model_copy(update={"center": back(r.center), "planned_center": back(r.planned_center)})
                   for r in results]
        return _verdict(results, n, tolerance, trajectory.effect, too_close)
    if depth is not None:  # a depth map: frames are located in 3D, against the planned cameras
        results = _measure_in_3d(_PoseLocator(index, photo, trajectory, depth), picked, plans, n, tolerance)
        if not all(r.located for r in results):
            # Too few features to solve a camera (a close-up of a smooth surface): those frames
            # are measured as before, as views against the renders of the planned cameras.
            flat = _measure_views(index, photo, picked, trajectory, plans, depth, n, k, motion_blur, blur_samples)
            results = [r if r.located else f for r, f in zip(results, flat)]
        return _verdict(results, n, tolerance, trajectory.effect, too_close)
    results = _measure_views(index, photo, picked, trajectory, plans, depth, n, k, motion_blur, blur_samples)
    return _verdict(results, n, tolerance, trajectory.effect, too_close)


def _too_close(plans: Mapping[int, CameraFrame], out_w: int, out_h: int) -> dict[int, float]:
    """The sampled frames whose planned view spans under MIN_VIEW_PX photo pixels: how many it spans."""
    spans = {i: _span(out_w, out_h) * _view(camera.frame_homography(f), out_w, out_h)[1] for i, f in plans.items()}
    return {i: span for i, span in spans.items() if span < MIN_VIEW_PX}


def _border_reach(plans: Mapping[int, CameraFrame], photo: np.ndarray, out_w: int, out_h: int) -> int:
    """How many px past the photo's edges the planned views reach (0: they stay inside, as they
    do unless the request allows borders), at most the photo's long side."""
    h, w = photo.shape[:2]
    corners = np.array([[0.0, 0.0], [out_w, 0.0], [out_w, out_h], [0.0, out_h], [out_w / 2.0, out_h / 2.0]])
    reach = 0.0
    for plan in plans.values():
        xy = camera.apply_homography(np.linalg.inv(camera.frame_homography(plan)), corners)
        reach = max(reach, -xy[:, 0].min(), xy[:, 0].max() - w, -xy[:, 1].min(), xy[:, 1].max() - h)
    return 0 if reach < 1.0 else min(int(math.ceil(reach)) + 2, max(w, h))


def _shifted(trajectory: CameraTrajectory, d: float) -> CameraTrajectory:
    """The same cameras over the photo padded by d px on every side (the world moved by (d, d))."""
    offset = np.array([d, d, 0.0])

    def frame(f: CameraFrame) -> CameraFrame:
        return f.model_copy(update={"translation": (f.t() - f.R() @ offset).tolist(),
                                    "center": [f.center[0] + d, f.center[1] + d]})

    subject = None if trajectory.subject is None else [trajectory.subject[0] + d, trajectory.subject[1] + d]
    return trajectory.model_copy(update={"frames": [frame(f) for f in trajectory.frames],
                                         "image_width": trajectory.image_width + 2 * round(d),
                                         "image_height": trajectory.image_height + 2 * round(d), "subject": subject})


def _measure_views(index: PhotoIndex, photo: np.ndarray, picked: Mapping[int, np.ndarray],
                   trajectory: CameraTrajectory, plans: dict[int, CameraFrame], depth: np.ndarray | None, n: int,
                   k: float, motion_blur: float, blur_samples: int) -> list[FidelityFrame]:
    """Each sampled frame located as a view of the photo (a homography; see the module
    docstring) and compared with its yardstick."""
    indices = list(plans)
    out_h, out_w = np.asarray(picked[indices[0]]).shape[:2]
    frontal = all(_is_affine(camera.frame_homography(f), out_w, out_h) for f in plans.values())
    locator = _FrameLocator(index, affine=frontal)
    # A parallax move pivots on its subject's layer: the subject is also fitted on its own, in
    # a patch around it, so a move about another point cannot pass for this one.
    pivots = has_parallax(trajectory, depth) and trajectory.effect in PIVOT_EFFECTS and trajectory.subject is not None
    # With parallax or motion blur no homography is exact: the yardstick is then a render.
    rendered_yardstick = has_parallax(trajectory, depth) or motion_blur > 0
    smeared: dict[int, np.ndarray] = {}
    references, subject_refs = _references(locator, photo, trajectory, depth, plans, k, n, motion_blur,
                                           blur_samples, rendered_yardstick, pivots, smeared)

    results: list[FidelityFrame] = []
    last: tuple[np.ndarray, np.ndarray] | None = None
    for i in indices:
        planned_H = references.get(i)
        if planned_H is None:  # parallax, and its reference could not be measured: no yardstick
            results.append(FidelityFrame(index=i, located=False))
            continue
        # Where a render was measured as the yardstick (parallax, motion blur), the fit of a
        # blend of layers or views has more than one optimum: start where the render's fit
        # ended, so a faithful video lands on the same one.
        guesses = [planned_H] if rendered_yardstick else []
        if last is not None:  # the last located view, carried along by the plan's motion since
            H_prev, planned_prev = last
            guesses += [planned_H @ np.linalg.inv(planned_prev) @ H_prev, H_prev]
        guesses.append(planned_H)
        blur = motion_blur * _motion_px(trajectory, i, n, k) if motion_blur > 0 else 0.0
        # A smeared frame is first aligned to the render smeared alike, frame to frame: a deep
        # zoom's surge smears a frame over half its width, and located in the photo (blurred as
        # much) its fit wandered far from the render's (hyperspace, heist_crash_zoom: "missed").
        found = locator.follow_render(np.asarray(picked[i]), smeared[i], planned_H) if i in smeared else None
        if found is None:
            found = locator.locate(np.asarray(picked[i]), guesses, blur)
        if found is None:
            results.append(FidelityFrame(index=i, located=False))
            continue
        H, method = found
        centre, c_err, z_err, r_err, k_err = _compare(H, planned_H, out_w, out_h)
        subject = (None, None)
        if pivots:
            at = _subject_at(trajectory, camera.frame_homography(plans[i]))
            found_subject = locator.locate_subject(np.asarray(picked[i]), H, at, blur)
            subject = _subject_errors(found_subject, subject_refs.get(i), at, trajectory, _span(out_w, out_h))
        results.append(FidelityFrame(index=i, located=True, method=method, center=centre,
                                     planned_center=[float(v) for v in plans[i].center],
                                     center_pct=round(c_err, 3), zoom_pct=round(z_err, 3),
                                     roll_deg=round(r_err, 3), corner_pct=round(k_err, 3),
                                     subject_pct=subject[0], subject_zoom_pct=subject[1]))
        last = (H, planned_H)
    return results


def _measure_in_3d(locator: _PoseLocator, picked: Mapping[int, np.ndarray], plans: dict[int, CameraFrame],
                   n_video: int, tolerance: Tolerance) -> list[FidelityFrame]:
    """Each sampled frame's camera, solved in 3D, against the plan's: the picture plane (the
    subject's layer for pivoting moves) seen through both gives the usual centre, zoom, roll
    and corner errors; the cameras' orientations give the rotation error and the yaw. A frame
    not located, beyond tolerance or POSE_RETRY_ROTATION_DEG off from its matches to the
    photo alone is solved again
    with its matches to a render of its planned camera pooled in (see `_PoseLocator`): more
    evidence, one consensus; a video that went elsewhere matches that render little."""

    def measured(i: int, reference: int | None) -> FidelityFrame:
        frame = np.asarray(picked[i])
        plan = plans[i]
        found = locator.locate(frame, plan, reference)
        if found is None:
            return FidelityFrame(index=i, located=False)
        R, t = found
        h, w = frame.shape[:2]
        H = camera.plane_homography(plan.K(), R, t)
        centre, c_err, z_err, r_err, k_err = _compare(H, camera.frame_homography(plan), w, h)
        return FidelityFrame(index=i, located=True, method="pose", center=centre,
                             planned_center=[float(v) for v in plan.center], center_pct=round(c_err, 3),
                             zoom_pct=round(z_err, 3), roll_deg=round(r_err, 3), corner_pct=round(k_err, 3),
                             rotation_deg=round(_rotation_deg(R, plan.R()), 3),
                             yaw_deg=round(_yaw_deg(R), 3), planned_yaw_deg=round(_yaw_deg(plan.R()), 3))

    last = max(plans)
    results = {i: measured(i, None) for i in plans}
    again = [i for i, r in results.items()
             if not r.located or r.rotation_deg > POSE_RETRY_ROTATION_DEG
             or _excess(r, tolerance, i == n_video - 1 and i == last)[0] > 1.0]
    if again:
        out_w = np.asarray(picked[again[0]]).shape[1]
        locator.prepare_references(plans, again, n_video, out_w)
        for i in again:
            retry = measured(i, i)
            if retry.located:
                results[i] = retry
    return [results[i] for i in plans]


def _motion_px(trajectory: CameraTrajectory, index: int, n_video: int, k: float) -> float:
    """How far the picture moves in one frame around video frame `index`, in frame px (the
    farthest of the frame's corners and centre between the neighbouring planned cameras)."""
    before = camera.frame_homography(_resized(_planned_frame(trajectory, max(0, index - 1), n_video), k))
    after = camera.frame_homography(_resized(_planned_frame(trajectory, min(n_video - 1, index + 1), n_video), k))
    w, h = trajectory.width * k, trajectory.height * k
    pts = np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h], [w / 2, h / 2]])
    moved = camera.apply_homography(after @ np.linalg.inv(before), pts)
    steps = min(n_video - 1, index + 1) - max(0, index - 1)
    return float(np.max(np.linalg.norm(moved - pts, axis=1))) / max(1, steps)


def _subject_at(trajectory: CameraTrajectory, planned: np.ndarray) -> np.ndarray:
    """Where the plan puts the subject in a frame whose plane homography is `planned`."""
    return camera.apply_homography(planned, np.asarray(trajectory.subject, dtype=np.float64)[None])[0]


def _subject_errors(found: np.ndarray | None, reference: np.ndarray | None, at: np.ndarray,
                    trajectory: CameraTrajectory, span: float) -> tuple[float | None, float | None]:
    """(how far the subject is from where the yardstick shows it, % of the view width; its
    size against the yardstick's, %) from the patch fits around it (photo px -> frame px)."""
    if found is None or reference is None:
        return None, None
    subject = np.asarray(trajectory.subject, dtype=np.float64)[None]
    seen = camera.apply_homography(found, subject)[0]
    expected = camera.apply_homography(reference, subject)[0]

    def size(M: np.ndarray) -> float:  # photo px per frame px at the subject
        return _view(M, 2.0 * at[0], 2.0 * at[1])[1]

    return (round(100.0 * float(np.hypot(*(seen - expected))) / span, 3),
            round(100.0 * (size(reference) / size(found) - 1.0), 3))


def _references(locator: _FrameLocator, photo: np.ndarray, trajectory: CameraTrajectory,
                depth: np.ndarray | None, plans: dict[int, CameraFrame], k: float, n_video: int,
                motion_blur: float, blur_samples: int, rendered: bool, pivots: bool,
                smeared: dict[int, np.ndarray] | None = None) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """What each sampled frame should measure as (photo px -> frame px). A sharp flat render
    is the plan's plane homography exactly. With parallax no homography is exact (the fit
    settles on a blend of the layers), and a motion-blurred frame is a blend of views: the
    yardstick is then the same measurement of the camera backend's own render of the planned
    cameras (small, the sampled frames only, with the same depth and shutter). With `pivots`,
    also the fits of the patch around the subject in those renders. `smeared`, when given, gets
    the motion-blurred renders themselves (by frame index)."""
    smeared = {} if smeared is None else smeared
    if not rendered:
        return {i: camera.frame_homography(f) for i, f in plans.items()}, {}
    from d2v.render import CameraRenderer

    r = min(1.0, REFERENCE_SIDE / (trajectory.width * k))  # reference px per frame px
    w, h = max(16, round(trajectory.width * k * r / 2) * 2), max(16, round(trajectory.height * k * r / 2) * 2)
    renderer = CameraRenderer(photo, depth)
    if n_video == len(trajectory):  # the trajectory's own frames, shutter included
        sub = trajectory.model_copy(update={"width": w, "height": h,
                                            "frames": [_resized(f, k * r) for f in trajectory.frames]})
        renders = renderer.render(sub, motion_blur=motion_blur, samples=blur_samples, indices=list(plans))
    else:  # another tool's frame count: the planned cameras at the same fractions of the move
        first = _resized(trajectory.frames[0], k * r)  # the renderer's layers hang on the first camera
        sub = trajectory.model_copy(update={"width": w, "height": h,
                                            "frames": [first, *(_resized(f, r) for f in plans.values())]})
        renders = list(renderer.render(sub))[1:]
    S = np.diag([r, r, 1.0])
    out: dict[int, np.ndarray] = {}
    subjects: dict[int, np.ndarray] = {}
    last = None
    for (i, f), frame in zip(plans.items(), renders):
        if motion_blur > 0:
            smeared[i] = np.array(frame)  # (a copy: the renderer may reuse its frame buffer)
        planned = S @ camera.frame_homography(f)
        guesses = ([planned @ np.linalg.inv(last[1]) @ last[0]] if last else []) + [planned]
        blur = motion_blur * _motion_px(trajectory, i, n_video, k * r) if motion_blur > 0 else 0.0
        found = locator.locate(frame, guesses, blur)
        if found is not None:
            out[i] = np.linalg.inv(S) @ found[0]
            last = (found[0], planned)
            if pivots and (patch := locator.locate_subject(frame, found[0], _subject_at(trajectory, planned),
                                                           blur)) is not None:
                subjects[i] = np.linalg.inv(S) @ patch
    return out, subjects


def _unmeasured(reason: str, sampled: int, tolerance: Tolerance, effect: str, photo: bool = False) -> FidelityReport:
    return FidelityReport(verdict="unmeasured", reason=reason, effect=effect, located=0, sampled=sampled,
                          tolerance=tolerance.as_dict(), frames=[], photo_unusable=photo)


def _against_drawing(report: FidelityReport, trajectory: CameraTrajectory, tolerance: Tolerance) -> FidelityReport:
    """A video that followed a plan which had to keep the view inside the photo, farther from
    the path as drawn than the effect's tolerance, did not follow the drawing: `clamped`, with
    the frame and the distance (never `followed`)."""
    offsets = trajectory.drawn_offset_pct
    if report.verdict != "followed" or not offsets:
        return report
    # Held to the effect's framing tolerance: moving a view by d moves each of its corners by d.
    # (A pan's eased ends, pushed in from a stroke 15% from the edge, move by 5.0%: within it.)
    i = int(np.argmax(offsets))
    if round(offsets[i], 1) <= tolerance.corner_pct:
        return report
    reason = (f"the plan kept the view inside the photo, frame {i} {offsets[i]:.1f}% of the view width from the "
              f"path as drawn (tolerance {tolerance.corner_pct:g}%): draw inside the photo, or allow borders")
    return report.model_copy(update={"verdict": "clamped", "reason": reason})


def _excess(r: FidelityFrame, tolerance: Tolerance, is_end: bool) -> tuple[float, str]:
    """How far past its tolerance a located frame is (> 1: a miss), and in words."""
    limit_c = tolerance.end_center_pct if is_end else tolerance.center_pct
    options = [(r.center_pct / limit_c, f"{r.center_pct:.1f}% of the view width off (tolerance {limit_c:g}%)"),
               (abs(r.zoom_pct) / tolerance.zoom_pct,
                f"zoomed {r.zoom_pct:+.1f}% from the plan (tolerance {tolerance.zoom_pct:g}%)"),
               (abs(r.roll_deg) / tolerance.roll_deg,
                f"rolled {r.roll_deg:+.1f} degrees from the plan (tolerance {tolerance.roll_deg:g})"),
               (r.corner_pct / tolerance.corner_pct,
                f"framed differently: a corner {r.corner_pct:.1f}% of the view width from the plan's "
                f"(tolerance {tolerance.corner_pct:g}%)")]
    if r.subject_pct is not None:
        options += [(r.subject_pct / tolerance.center_pct,
                     f"showing the subject {r.subject_pct:.1f}% of the view width from where the plan keeps it "
                     f"(tolerance {tolerance.center_pct:g}%)"),
                    (abs(r.subject_zoom_pct) / tolerance.zoom_pct,
                     f"showing the subject {r.subject_zoom_pct:+.1f}% larger than planned (tolerance "
                     f"{tolerance.zoom_pct:g}%)")]
    return max(options, key=lambda o: o[0])


def _verdict(results: list[FidelityFrame], n: int, tolerance: Tolerance, effect: str,
             too_close: Mapping[int, float] | None = None) -> FidelityReport:
    """followed: every located frame within tolerance, and at least MIN_LOCATED_SHARE located.
    missed: a located frame beyond it (two, when too few were located to vouch for the rest).
    unmeasured: too few located and no clear miss among them. `too_close`: frames not measured
    for showing too few photo pixels (`_too_close`), whatever their fit said."""
    too_close = too_close or {}
    results = [FidelityFrame(index=r.index, located=False) if r.index in too_close else r for r in results]
    if results and results[-1].index == n - 1 and (span := too_close.get(n - 1)) is not None:
        end_unseen = (f"the last frame (frame {n - 1}) shows {span:.1f} px of the photo across: too few to locate, "
                      "so where the move ended was not checked")
    else:
        end_unseen = None
    located = [r for r in results if r.located]
    base = dict(effect=effect, located=len(located), sampled=len(results), tolerance=tolerance.as_dict(),
                frames=results)
    need = max(2, math.ceil(MIN_LOCATED_SHARE * len(results))) if len(results) > 1 else 1
    end = results[-1] if results and results[-1].index == n - 1 and results[-1].located else None
    scored = [(r, *_excess(r, tolerance, r is end)) for r in located]
    misses = [x for x in scored if x[1] > 1.0]
    if len(located) < need and len(misses) < 2:
        return FidelityReport(
            verdict="unmeasured", **base,
            reason=end_unseen or f"only {len(located)} of {len(results)} sampled frames could be located in the photo "
                                 f"(at least {need} needed): the video may not be of this photo, or shows too little "
                                 "of its detail")
    centres = np.sort([r.center_pct for r in located])
    middle = [(len(centres) - 1) // 2, len(centres) // 2]  # the median (np.median imports numpy.ma: 16 ms)
    summary = dict(end_center_pct=end.center_pct if end else None,
                   median_center_pct=round(float(centres[middle].mean()), 3),
                   worst_center_pct=round(float(centres.max()), 3),
                   worst_zoom_pct=round(float(max(abs(r.zoom_pct) for r in located)), 3),
                   worst_roll_deg=round(float(max(abs(r.roll_deg) for r in located)), 3),
                   worst_corner_pct=round(float(max(r.corner_pct for r in located)), 3))
    worst, ratio, how = max(scored, key=lambda x: x[1])
    if ratio > 1.0:
        return FidelityReport(verdict="missed", reason=f"frame {worst.index} is {how}", worst_frame=worst.index,
                              **summary, **base)
    if end is None:  # where the move ends is what a path is judged by: unchecked, it is not followed
        return FidelityReport(
            verdict="unmeasured", worst_frame=worst.index, **summary, **base,
            reason=(end_unseen or f"the last frame (frame {n - 1}) could not be located in the photo, so where "
                    "the move ended was not checked") + f" ({len(located)} of {len(results)} sampled frames located)")
    return FidelityReport(verdict="followed", reason=None, worst_frame=worst.index, **summary, **base)


# -- the picture ------------------------------------------------------------------------------

_DRAWN, _PLANNED, _FOLLOWED, _MISSED = (255, 255, 255), (0, 200, 255), (60, 220, 60), (255, 60, 60)
_CLAMPED = (255, 170, 40)


def _wrap(text: str, scale: float, max_px: int) -> list[str]:
    """`text` in lines no wider than max_px at this font scale, broken between words."""
    lines = [""]
    for word in text.split():
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > max_px:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def fidelity_image(photo: np.ndarray, path_xy: np.ndarray, report: FidelityReport, max_side: int = 768) -> np.ndarray:
    """fidelity.png: the photo (dimmed) with the drawn path (white), the planned view centres
    (blue) and the measured ones (green when followed, red when missed), (h, w, 3) RGB uint8."""
    photo = np.asarray(photo)[:, :, :3] if np.asarray(photo).ndim == 3 else cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB)
    h, w = photo.shape[:2]
    k = min(1.0, max_side / max(w, h))
    img = cv2.resize(photo, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA) \
        if k < 1.0 else photo.copy()
    img = cv2.addWeighted(img, 0.55, np.zeros_like(img), 0.45, 0.0)
    thick = max(1, round(max(img.shape[:2]) / 400))
    shift = 4  # sub-pixel drawing

    def pts(xy) -> np.ndarray:
        return np.round(np.asarray(xy, np.float64).reshape(-1, 2) * k * (1 << shift)).astype(np.int32)

    def polyline(xy, colour, width) -> None:
        if len(xy) >= 2:
            cv2.polylines(img, [pts(xy)], False, colour, width, cv2.LINE_AA, shift)

    polyline(path_xy, _DRAWN, thick * 2)
    planned = [f.planned_center for f in report.frames if f.planned_center is not None]
    polyline(planned, _PLANNED, thick)
    colour = {"missed": _MISSED, "clamped": _CLAMPED}.get(report.verdict, _FOLLOWED)
    measured = [f.center for f in report.frames if f.located and f.center is not None]
    polyline(measured, colour, thick)
    for c in pts(measured):
        cv2.circle(img, (int(c[0]), int(c[1])), (thick * 2) << shift, colour, -1, cv2.LINE_AA, shift)
    if measured:
        end = tuple(int(v) for v in pts(measured[-1:])[0])
        cv2.circle(img, end, (thick * 6) << shift, colour, thick, cv2.LINE_AA, shift)
    scale = max(0.4, img.shape[1] / 1400)
    lines = _wrap(report.one_line(), scale, img.shape[1] - 16)  # a long reason on as many lines as it takes
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    step = th + base + 4
    # The verdict in a band above the photo, not over it (a path near the top edge stays seen).
    header = np.zeros((step * len(lines) + 8, img.shape[1], 3), np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(header, line, (8, th + 6 + k * step), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    colour if report.verdict != "unmeasured" else _DRAWN, 1, cv2.LINE_AA)
    x, y = 8, img.shape[0] - 8
    cv2.rectangle(img, (0, y - th - base - 6), (img.shape[1], img.shape[0]), (0, 0, 0), -1)
    for text, c in (("drawn path", _DRAWN), ("planned view centre", _PLANNED), ("measured view centre", colour)):
        cv2.putText(img, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, c, 1, cv2.LINE_AA)
        x += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] + 24
    return np.vstack([header, img])
