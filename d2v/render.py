"""The `camera` backend: renders the photo through each frame's camera (2.5D).

* Flat scene: the image is the plane Z = 0 and each frame is that plane seen through
  the frame's camera, i.e. the plane-induced homography `camera.frame_homography`,
  sampled with `cv2.warpPerspective`.
* Anti-aliasing: when a large image is shown small, a plain bilinear warp skips source
  pixels and shimmers. A Gaussian pyramid (`cv2.pyrDown`) is built once; each frame
  picks the level from its local scale (source pixels per output pixel at the frame
  centre) and blends the two nearest levels (trilinear), so zooms never pop. The level
  is log2(scale) with no sharpening bias. Measured on a grating finer than the output
  can show (ideal: gone): under 8% of its contrast is left at 2x-6x minification,
  20-46% at 1.2x-1.5x; cv2.INTER_AREA leaves 28-52% everywhere. The price: some softness.
* Depth: with a depth map (brighter = nearer) a point at relative depth
  s = 1 - parallax * depth sits at P = C0 + s (Q - C0), C0 being the reference (first)
  camera's centre, so the reference frame is unchanged and any other camera centre
  sees parallax. Each output pixel's source point is found by marching its ray through
  the depth layers (first hit wins, so near things occlude), on a coarse grid, then
  upsampled and applied with `cv2.remap` (edge pixels: below). The march takes steps even in 1/s (each moves a
  ray's image point as far), bisects the step where a ray met the surface, and is done for
  all rays one layer at a time; a frame whose layers part by under SUBPIXEL_PARALLAX
  output pixels (the first frames of an eased move) is the plane homography. The grid
  march is about 4-6.5 ms a 1024x576 frame on the 2-core VM, against 1 ms without depth;
  the edge rays below cost more where depth edges are dense (bench/RESULTS.md).
  dolly_zoom, orbit and parallax are planned about a subject on the image plane (that is
  how the trajectory builds them), so for them depth is measured from the subject: its layer
  becomes the plane, the background lies behind it (s > 1) and recedes, swings or slides
  less. Without a depth map dolly_zoom and parallax, which a flat picture shows as no
  change at all or a plain pan, use a soft `pseudo_depth` blob around the subject, sized
  by its view; orbit stays flat (its keystoned arc reads as an orbit, and a fake depth
  stretches the picture into streaks as the camera swings).
  The trajectory keeps views inside the image at every depth shown here: it models
  the same depth range (`d2v.trajectory.depth_range`; pass `depth_parallax` to it).
* Depth edges at output resolution: bilinear upsampling of the grid would blend source
  points across a depth edge (dark fringes where they fall between near and far, a
  staircase of grid cells). Where the grid's map bends (`_bends`), the pixels of those
  cells whose corners part get a ray each, at the centre, tried on the nearest and the
  farthest layer its cell's corners found (`_settle`, nearest first: near things occlude).
  A ray sees the side of a step that the bilinear depth at its point lies nearer to, the
  depth-map pixel's own depth where that pixel is on this side (`_side`), so a soft step's
  in-between values (flying pixels) put it on one side or the other, and the edge follows the
  bilinear depth's half-way contour, which cuts the pixels' corners: not a staircase of
  depth-map pixels, magnified by a move that shows the photo larger (the motorcycle's rims
  under orbit). Soft steps of an estimated depth map are snapped to hard ones once
  (`snap_depth_edges`), and its speckle, lone pixels and pairs off their surroundings,
  taken out (`despeckle_depth`: each would be a hole punched through the near layer or a
  fragment floating in a revealed band); an edge pixel whose ray met the photo's layer alone
  among four neighbours that see what it hid is revealed too (`_across`, `_reveal`). Where a pixel's ray and a
  4-neighbour's see two sides of a step, the edge crosses the pixel: it is anti-aliased as
  a matte (`_matte`): the other side's colour at the pixel, its share how fully the depth
  map shows the front side at the pixel's point (bilinear: about a depth-map pixel of soft
  coverage), so a moving edge neither crawls nor shimmers and colours come from the two
  sides only. The edge rays (`_EdgeRays`, 100-150 thousand a frame on a depth map full of
  small near things, one a pixel) work in u = 1/s, where a ray's point is linear (no
  divisions), in chunks whose arrays stay in cache. A revealed band's far border needs none:
  there the torn corners' hidden background continues the other corners' layer (all within a
  step), and the hidden background is the photo there but for a pixel or two inpainted at
  the step (which rays on its rim show anyway), so those cells are upsampled on the hidden
  background's rows (on a derived depth full of small near things, half a late frame's edge
  pixels; a cell beside one that keeps its rays keeps them too, for the matte between them).
* Disocclusions: a ray that meets a step between its two sides (`_torn`) sees what the
  photo hid. The renderer keeps a second layer, as a layered depth image does: the photo
  with the near side of every step (as far as the trajectory's moves reveal) inpainted
  from the far side only, in colour and depth (`_background`; colour by
  `d2v.inpaint.fill_background`: a smooth pull-push continuation of the far side beside the
  band, with a fine grain synthesized at the photo's own amplitude, read from the far side only: the near side is
  no source however far inside it lies, nor is a small piece of a near object that is only
  the far side of a nearer part (`_near_islands`); depth by the same pull-push, smooth, from the same
  far side: `fill_smooth`. OpenCV's Telea, used before, is off by up to 1.5 on a float map,
  which made the hidden depth noise wherever the far side is not at depth 0, and real depth's
  revealed bands ragged blotches and horizontal streaks), made once per renderer in photo space
  and stacked under the photo in one texture; torn rays march that layer. Its colour is made at
  the finest pyramid level the trajectory's frames read (`_Reach.finest`, `_fill_at_level`: a
  12 MP photo shown at 1024x576 reads its half- and quarter-size levels; inpainted at full size
  it cost 2.3 s and 1.5 GB before the first frame that tears), composed as the pyramid of the
  photo filled at full size would be where the hole's edge crosses a level's pixels. So a band
  revealed frame by frame keeps what it showed, travelling with the background; the far
  side's pixels just beside a step (on its rim, which mix in the near layer's colours) are
  taken from it too. `render_validity` marks torn pixels as invented, but those that meet
  the hidden background where it is the photo's own pixel (`_Background.inpainted`).
  Measured against known truth (bench/view_synthesis.py, tests/test_parallax.py: a disc
  over a photo, 43-70 px of parallax): 45-52 dB where the photo shows the pixel, 29-33 dB in the 4 px band at
  the edge, no dark fringe; before, 43 and 17 dB, and the band changed 5x more between
  frames than the background beside it.
* Motion blur: sub-frame accumulation over a shutter centred on each frame, cameras
  interpolated with `camera.interpolate_camera`.
* Threads: a depth trajectory's frames are drawn on RENDER_THREADS threads, each frame alone
  (the same pixels as one thread draws), yielded in order: beside x264 the render is the
  slow side, and OpenCV and numpy let go of the GIL in their loops. The hidden background is
  made on a thread of its own meanwhile: the first frames of an eased move, whose layers part
  by TEAR_PX or less (`_Layers.tears`), cannot reveal anything and are drawn without it (the
  same pixels), so the encoder has frames while it is made.
* Flat warps (every frame without depth) run on an RGBA copy of the pyramid, made on first
  use, and are then made RGB: OpenCV warps 4 channels in 60% of the time it takes for 3
  (its SIMD paths), bit for bit the same RGB (a 1024x576 frame: 4.9 ms instead of 7.8).
* Frames as the encoder's planes: a plain move (no motion blur, post effect or look), flat or
  with depth, can be drawn straight into I420 (`render(planes=...)`): the textures converted
  once to BT.709 YUV (`d2v.encode`'s matrix) with a fourth channel (`_to_yuva`: the photo's
  pyramid on first use; the photo stacked above its hidden background on the thread that
  makes it), warped or remapped as the RGB ones are, Y taken per pixel and U and V as each
  2x2 block's average, which is what the encoder makes of the RGB frame but for rounding.
  Everything a frame does to colour is linear (the warp or the depth remap, the blend of two
  levels, an edge's matte), so Y is within 1 level (2 at a few edge pixels a million, whose
  matte rounds once more on each side) and U and V within 2 (bench/RESULTS.md, sessions 12
  and 14). It spares the RGB frame and its conversion: a flat 1024x576 frame 5.6 ms instead
  of 7.0; a depth frame 1.2-2.2 ms less. Warping Y alone at full size and U and V at half size
  is no faster in OpenCV (1- and 2-channel warps lack the 4-channel SIMD path: 5.9 ms) and
  samples chroma at a point instead of averaging the block (up to 45 levels off at the
  photo's sharp colour edges).

Coordinates follow `d2v.camera` (pixel centres at +0.5); OpenCV puts pixel centres at
integers, hence the T(-0.5) ... T(+0.5) wrapping of every matrix handed to it.
A renderer is read-only after construction and can be shared between threads.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Collection, Iterator, NamedTuple, Sequence

import cv2
import numpy as np

from d2v import camera
from d2v.encode import I420, RGB_TO_YUV709
from d2v.errors import DepthMapMismatchError, InvalidImageError
from d2v.inpaint import fill_background, fill_smooth, grain_noise
from d2v.models import CameraFrame, CameraTrajectory
from d2v.trajectory import DEFAULT_PARALLAX, PIVOT_EFFECTS, PSEUDO_DEPTH_EFFECTS, PSEUDO_PARALLAX

_DEPTH_GRID_STEP = 4  # output pixels between depth-warp grid points
# The depth warp's ray march: steps even in 1/s of about _DEPTH_STEP_PX depth-map pixels
# along the longest ray, at most _DEPTH_MAX_STEPS; then _DEPTH_REFINE bisections of the step
# where a ray met the surface, and the secant's zero in what is left. Measured on
# render_bench's hard-edged depth against a march in 0.5 px steps refined to convergence,
# every effect's frames come closer (PSNR 0.6-2.8 dB higher, a tenth to a third fewer pixels
# off by more than 8 levels, fewer disoccluded points misjudged) than with 32 steps even in
# s and three regula-falsi steps, for 30% fewer steps and one sample less: steps even in s
# move a ray 2 to 5 times farther at the near end than at the far, and regula falsi crawls
# at a depth edge, where bisection does not.
_DEPTH_STEP_PX = 2.75
_DEPTH_MAX_STEPS = 23
_DEPTH_REFINE = 2
_DEPTH_MAX_SIDE = 1024  # depth is sampled from a copy at most this large (it is smooth)
_BLEND_EPS = 0.02  # level fractions closer than this to a level use that level alone
# Frames with a hidden background whose share of the finer level is under this read the coarser
# alone: the background need not be made at the finer level, 4x the pixels, for a tenth of a frame.
_BG_BLEND_EPS = 0.1
# A hidden background's finest level is filled only where the frames reading it look, when
# that is under this share of it (`_Reach.window`), with this many of its pixels more around
# (a motion-blurred frame's sub-frames lie between frames), in whole multiples of WINDOW_ALIGN.
WINDOW_SHARE = 0.5
WINDOW_PAD = 48
WINDOW_ALIGN = 16
SUBPIXEL_PARALLAX = 0.25  # output pixels: a frame whose depth layers part by less shows the plane
RENDER_THREADS = 2  # threads drawing a depth trajectory's frames (`CameraRenderer.render`)
_ROUND_32 = np.float32(3 * 2**17)  # x + this - this in float32: x rounded to 1/32 (half to even) for |x| < 2**17
_FIXED_MAP_LIMIT = 30000.0  # |coordinate| fixed-point (int16) remap maps hold, with room to spare (and < 2**17: _ROUND_32)
# dolly_zoom's stand-in depth falls to half this far from the subject, x the first view's
# shorter side: the subject stays one piece while the view's edges lie well behind it.
PSEUDO_RADIUS = 0.5


class _Background(NamedTuple):
    """The second layer of a layered depth image: what the photo hides behind the near side
    of its depth steps, made once in photo space (so a band revealed frame by frame keeps
    what it showed). The near side of every step, as far as a move reveals (`reach`), is
    inpainted from the far side only (`d2v.inpaint`), in colour and in depth. It is made at
    the finest pyramid level the frames sample (`finest`, `_Reach`): a 12 MP phone photo
    shown at 1024x576 is read from its half- and quarter-size levels, and inpainting its
    full size took 2.3 s and 1.5 GB before the first frame could tear (bench/RESULTS.md); a
    push in that ends on a part of it, only there (`_Reach.window`, `_fill_window`)."""
    depth: np.ndarray  # depth [0, 1] at the depth map's size, the near side continued from the far
    # Pyramid of the photo stacked above the background, `offset` rows apart (offset >> k at
    # level k); None at the levels finer than `finest`, which no frame of its layers samples.
    levels: list
    # The same in the encoder's YUV with a fourth channel (`_to_yuva`), for frames drawn as I420
    # planes: empty until a render that draws them asks (`CameraRenderer._bg_yuva`).
    yuva_levels: list
    offset: int  # the background's first row in level 0's rows (a multiple of 2 ** len(levels))
    inpainted: np.ndarray  # (level `finest` h, w) bool: where the background is not the photo's own pixel, a pixel wider
    finest: int = 0  # the finest level made


class _Edges(NamedTuple):
    """The edge pixels' own rays (`_edge_rays`): x, y in the stacked texture (level 0, OpenCV
    convention)."""
    idx: np.ndarray  # flat indices of the pixels
    ys: np.ndarray  # their rows and columns (int32)
    xs: np.ndarray
    x: np.ndarray  # one ray each, at the pixel's centre
    y: np.ndarray
    torn: np.ndarray  # float32 per pixel: the share of it that sees hidden background
    aa: np.ndarray  # which of them (positions in idx) an edge crosses (`_matte`)
    aa_x: np.ndarray  # the other side's point at each of those pixels
    aa_y: np.ndarray
    aa_w: np.ndarray  # float32: the other side's share of the pixel (its coverage)


class _Layers(NamedTuple):
    s: np.ndarray  # relative depth of each image point, float32, at most _DEPTH_MAX_SIDE
    near: float  # its smallest value
    far: float  # its largest value
    c0: np.ndarray  # centre of the reference camera (sees the layers undistorted)
    s_min: np.ndarray | None = None  # s eroded and dilated over 3x3: the two sides of a step,
    s_max: np.ndarray | None = None  # to tell a ray that hit a step between them (`_torn`)
    bg_s: np.ndarray | None = None  # the hidden background's s (None: smooth depth, no steps)
    bg_near: float = 0.0  # its smallest and largest values
    bg_far: float = 0.0
    bg: _Background | None = None
    s_step: float = 0.0  # STEP_DEPTH in s: a smaller change is a slope, never a step
    # The edge rays work in u = 1/s (a ray's point is linear in it, no divisions):
    u: np.ndarray | None = None  # 1 / s
    u_rim: np.ndarray | None = None  # u dilated over RIM_PX: what lies within RIM_PX of a nearer layer
    # (h, w, 2) float32: within a pixel of a step (s_min and s_max more than s_step apart) its
    # far and near side's u, elsewhere u twice: which side a ray sees (`_side`).
    u_sides: np.ndarray | None = None
    bg_u: np.ndarray | None = None  # 1 / bg_s
    # Per frame of the trajectory the layers are for: whether it shows parallax (`_moved`),
    # known from the spreads that gave the reach (each costs a quarter of a millisecond).
    moved: tuple | None = None
    # And whether its layers part by more than TEAR_PX depth-map pixels anywhere, so that a ray
    # may see what the photo hid: a frame whose layers do not is drawn the same without the
    # hidden background, so it need not wait for it (`CameraRenderer.render`).
    tears: tuple | None = None
    # What the hidden background is made with, (reach, parallax, s_pivot, finest, window) (`_with_background`),
    # where the layers have steps and it is not yet added; None where there is none to add.
    hidden: tuple | None = None


class _Reach(NamedTuple):
    """What a trajectory's frames need of the hidden background (`CameraRenderer._reach`)."""
    reach: float  # the widest band any frame reveals, depth-map pixels
    moved: tuple  # per frame: whether it shows parallax (`_moved`)
    tears: tuple  # per frame: whether it may see what the photo hid (`_Layers.tears`)
    finest: int  # the finest pyramid level any frame reads (the background is made there)
    # Where on that level the frames that read it look, (x0, y0, x1, y1) in its pixels, when
    # that is under WINDOW_SHARE of it (a push in ends on a small part of a large photo); None:
    # anywhere.
    window: tuple | None = None


def local_scale(G: np.ndarray, x, y):
    """Source pixels per output pixel of the map G (output -> image) at (x, y), scalars or
    arrays: sqrt(|det J|) of its Jacobian, where a homography's has det J = det G / w^3
    (w: the point's third coordinate)."""
    w = G[2, 0] * x + G[2, 1] * y + G[2, 2]
    return np.sqrt(abs(np.linalg.det(G)) / np.abs(w) ** 3)


def reference_center(image_w: int, image_h: int, out_w: int, out_h: int) -> np.ndarray:
    """Centre of the reference camera that sees the cover crop (see `d2v.camera`)."""
    u0, v0, cw, ch = camera.cover_crop(image_w, image_h, out_w, out_h)
    return np.array([u0 + cw / 2.0, v0 + ch / 2.0, -cw])


class CameraRenderer:
    """Renders one image through cameras. Build once per image (it builds the pyramid),
    then `render(trajectory)` streams frames or `render_frame` renders one.

    border: "reflect" (default; the trajectory keeps views inside the image, so this
    only touches sub-pixel edges) or "black" (for views allowed to leave the image).
    parallax: how far a user depth map moves things (see the module docstring); plan
    trajectories with `depth_parallax` so their views stay inside the image.
    """

    def __init__(
        self,
        image: np.ndarray,
        depth: np.ndarray | None = None,
        *,
        parallax: float = DEFAULT_PARALLAX,
        border: str = "reflect",
    ):
        image = np.asarray(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = np.ascontiguousarray(image[:, :, :3])
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got shape {image.shape} {image.dtype}")
        if not 0.0 <= parallax <= 0.9:
            raise ValueError(f"parallax must be in [0, 0.9], got {parallax}")
        if border not in ("reflect", "black"):
            raise ValueError(f"border must be 'reflect' or 'black', got {border!r}")
        self.height, self.width = image.shape[:2]
        # Depth warps remap as with fixed-point maps (coordinates up to _FIXED_MAP_LIMIT, 1/32 px:
        # `_remap`) when coordinates clipped there stay outside the image even interpolated a grid cell in.
        self._fixed_maps = _DEPTH_GRID_STEP * max(self.width, self.height) < _FIXED_MAP_LIMIT
        self.parallax = float(parallax)
        self._border = cv2.BORDER_REFLECT if border == "reflect" else cv2.BORDER_CONSTANT

        # Gaussian pyramid, down to about 32 px: levels past what any frame needs cost
        # a third of the image's memory in all.
        self._levels = [np.ascontiguousarray(image)]
        while min(self._levels[-1].shape[:2]) >= 64:
            self._levels.append(cv2.pyrDown(self._levels[-1]))

        self.depth = None if depth is None else self._prepare_depth(depth)
        self._bg_cache: dict[tuple, _Background] = {}  # by reach, finest level and window (see _background)
        self._bg_lock = threading.Lock()
        # The pyramid in RGBA and in YUV (`_rgba`, `_yuva`): each level made on first use.
        self._rgba_levels = _LazyLevels(self._levels, lambda level: cv2.cvtColor(level, cv2.COLOR_RGB2RGBA))
        self._yuva_levels = _LazyLevels(self._levels, _to_yuva)

    @property
    def image(self) -> np.ndarray:
        return self._levels[0]

    @property
    def depth_parallax(self) -> float | None:
        """The parallax of the user depth map, None without one: what
        `d2v.trajectory.plan_trajectory(..., depth_parallax=)` needs to keep views inside
        the image at every depth this renderer shows."""
        return None if self.depth is None else self.parallax

    # -- depth ------------------------------------------------------------------------

    def _prepare_depth(self, depth: np.ndarray) -> np.ndarray:
        """Depth as float32 [0, 1] at most _DEPTH_MAX_SIDE on its long side, covering
        the whole image (depth is only ever sampled through continuous coordinates)."""
        depth = np.asarray(depth, dtype=np.float32)
        if depth.ndim == 3:
            depth = depth[:, :, 0]
        if depth.ndim != 2:
            raise ValueError(f"depth must be HxW, got shape {depth.shape}")
        dw, dh = self._small_size()
        if depth.shape != (dh, dw):
            shrinking = depth.shape[0] > dh
            depth = cv2.resize(depth, (dw, dh), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return despeckle_depth(snap_depth_edges(np.clip(depth, 0.0, 1.0)))

    def _small_size(self) -> tuple[int, int]:
        scale = min(1.0, _DEPTH_MAX_SIDE / max(self.width, self.height))
        return max(2, round(self.width * scale)), max(2, round(self.height * scale))

    def _layers(self, depth: np.ndarray | None, c0: np.ndarray, pivot=None, parallax=None,
                reach: float = 0.0, finest: int = 0, window: tuple | None = None, background: bool = True
                ) -> _Layers | None:
        """Depth -> relative depth s of every image point (1 = on the plane, < 1 nearer,
        > 1 farther). With a pivot (an image point), s is divided by the pivot's own s,
        so the pivot's layer becomes the plane and what lies behind it gets s > 1.
        reach (depth-map pixels): the widest band any frame reveals; with it, the user
        depth map gets its hidden background (`_background`, made at pyramid level `finest`,
        within `window` there when given), or, background False, all but that
        (`_with_background` adds it)."""
        if depth is None:
            return None
        parallax = self.parallax if parallax is None else parallax
        s_pivot = 1.0
        if pivot is not None:
            dh, dw = depth.shape
            px = float(np.clip(pivot[0] * dw / self.width - 0.5, 0, dw - 1))
            py = float(np.clip(pivot[1] * dh / self.height - 0.5, 0, dh - 1))
            s_pivot = float(1.0 - parallax * cv2.getRectSubPix(depth, (1, 1), (px, py))[0, 0])
        s = np.ascontiguousarray((1.0 - parallax * depth) / s_pivot, dtype=np.float32)
        layers = _Layers(s, float(s.min()), float(s.max()), c0, u=np.float32(1.0) / s)
        if reach <= 0 or depth is not self.depth:
            return layers  # the stand-in depth is smooth: nothing to reveal
        k = np.ones((3, 3), np.uint8)
        s_min, s_max, s_step = cv2.erode(s, k), cv2.dilate(s, k), parallax * STEP_DEPTH / s_pivot
        step = (s_max - s_min) > s_step
        u = layers.u
        u_sides = cv2.merge([np.where(step, np.float32(1.0) / s_max, u), np.where(step, np.float32(1.0) / s_min, u)])
        layers = layers._replace(s_min=s_min, s_max=s_max, s_step=s_step, u_sides=u_sides,
                                 u_rim=cv2.dilate(layers.u, np.ones((2 * RIM_PX + 1,) * 2, np.uint8)),
                                 hidden=(reach, parallax, s_pivot, finest, window))
        return self._with_background(layers) if background else layers

    def _with_background(self, layers: _Layers, yuva: bool = False) -> _Layers:
        """Layers made by `_layers(reach=..., background=False)` with their hidden background;
        yuva: with its textures in YUV too (`_bg_yuva`), for frames drawn as I420 planes."""
        reach, parallax, s_pivot, finest, window = layers.hidden
        bg = self._background(reach, finest, window)
        if yuva:
            self._bg_yuva(bg)
        bg_s = np.ascontiguousarray((1.0 - parallax * bg.depth) / s_pivot, dtype=np.float32)
        return layers._replace(bg_s=bg_s, bg=bg, bg_u=np.float32(1.0) / bg_s, hidden=None,
                               bg_near=float(bg_s.min()), bg_far=float(bg_s.max()))

    def _bg_yuva(self, bg: _Background) -> list[np.ndarray]:
        """The hidden background's stacked textures in YUV, for frames drawn as I420 planes: made
        once per background, on first ask (`render` asks on the thread that makes the background:
        about 4 ms on a 1000 px photo; an RGB render need not hold twice the memory)."""
        with self._bg_lock:
            if not bg.yuva_levels:
                bg.yuva_levels.extend(None if level is None else _to_yuva(level) for level in bg.levels)
            return bg.yuva_levels

    def _background(self, reach: float, finest: int = 0, window: tuple | None = None) -> _Background:
        """The hidden background for bands up to `reach` depth-map pixels wide (rounded up
        to a multiple of 16, so a renderer makes it once or twice, shared by every
        trajectory and thread), made at pyramid level `finest` (only within `window` there,
        where one is given: `_Reach.window`) and coarser: `_Background`."""
        key = 16 * max(1, math.ceil(reach / 16)), finest, window
        with self._bg_lock:
            if key not in self._bg_cache:
                self._bg_cache[key] = self._make_background(*key)
            return self._bg_cache[key]

    def _make_background(self, reach: int, finest: int, window: tuple | None) -> _Background:
        # It is made before the first frame, while the encoder waits for it: what the next
        # steps do not wait for (the wide erosion, the grain's pattern, the hidden depth's
        # last fill) is made on a second thread beside them (numpy and OpenCV let go of the
        # GIL in their loops).
        with ThreadPoolExecutor(1, thread_name_prefix="d2v-build") as pool:
            return self._build_background(reach, finest, window, pool)

    def _build_background(self, reach: int, finest: int, window: tuple | None, pool: ThreadPoolExecutor
                          ) -> _Background:
        """`_make_background`, with a second thread (`pool`) for what the rest does not wait for."""
        depth = self.depth
        eroded = pool.submit(_erode_square, depth, 4 * reach + 1)  # (needed first)
        # (Colour is filled at that level; within a window, with its own pattern: `_fill_window`.)
        noise = pool.submit(grain_noise, self._levels[finest].shape[:2]) if window is None else None
        # The near side of a step: depth pixels within `reach` of a step (a jump of STEP_DEPTH
        # or more between neighbours) with something STEP_DEPTH farther within reach.
        k3 = np.ones((3, 3), np.uint8)
        low = cv2.erode(depth, k3)
        steps = (cv2.dilate(depth, k3) - low) > STEP_DEPTH
        # Twice as far as a band reaches: the fill's sources are the pixels around the hole,
        # and the near layer's beyond it must lie farther from the band than the far side.
        dist, nearest = cv2.distanceTransformWithLabels((~steps).view(np.uint8), cv2.DIST_L2, 3,
                                                        labelType=cv2.DIST_LABEL_PIXEL)
        within = dist <= 2 * reach
        near_side = within & (depth - eroded.result() > STEP_DEPTH)
        # Nearer than the far side of its nearest step: a slope, or another layer of the
        # background beyond the step, is background; the near side, however far inside it
        # lies, is never a source of the fill (its colours would bleed into the band).
        nearer = np.zeros_like(near_side)
        if steps.any():
            far = low.ravel()[np.flatnonzero(steps)]
            nearest -= 1
            nearer = depth - far.take(nearest) > STEP_DEPTH / 2
            near_side &= nearer
        hole = cv2.dilate(near_side.view(np.uint8), k3)  # and the step's own blended pixels
        # The near side, as the hole: its blended pixels (and a pixel more in colour, below);
        # and what a near object shows of a middle layer among its parts, not the far side:
        # no source, and hidden too, so that a band reaching it shows the far side continued,
        # not a piece of the object (an orbit of the motorcycle showed its tank's red there).
        near_px = cv2.dilate(nearer.view(np.uint8), k3)
        hole |= _near_islands(depth, ~(hole | near_px).view(bool))
        bg_depth = fill_smooth(depth, hole.view(bool), source=~near_px.view(bool))
        # A narrow spike toward the camera left in the hidden depth (a sliver of the near
        # object's soft edge the steps missed) is a post standing in the revealed band: every
        # ray near it hits it, and the band shows its colours smeared into rings. Such slivers
        # are hidden too, and the depth filled again without them.
        spikes = _spikes(bg_depth) & ~hole.view(bool)
        refilled = None
        if spikes.any():
            hole |= cv2.dilate(spikes.view(np.uint8), k3)  # (a hole pixel is no source, in depth or colour)
            # (Filled beside the colour, which does not need it.)
            refilled = pool.submit(fill_smooth, depth, hole.view(bool), source=~near_px.view(bool))
        big = cv2.resize(hole, (self.width, self.height), interpolation=cv2.INTER_NEAREST)
        # In colour a pixel more: a photo's edge pixels mix both sides (anti-aliased, or
        # a step the depth map puts a pixel off), and those colours must not be continued.
        big = cv2.dilate(big, k3).view(bool)
        near = cv2.resize(near_px, (self.width, self.height), interpolation=cv2.INTER_NEAREST)
        source = ~cv2.dilate(near, k3).view(bool)
        photo = self._levels[finest]
        background, inpainted = photo, np.zeros(photo.shape[:2], bool)
        if big.any() and window is not None:
            # Only frames reading `finest` look inside the window: there the level is filled; the
            # next level is filled whole and stands in, doubled, elsewhere (`_fill_window`).
            background, inpainted = _fill_window(self._levels, finest, big, source, window)
        elif big.any():
            background, inpainted = _fill_at_level(self._levels[0], photo, finest, big, source, noise.result())

        # Stacked, level by level: the photo's own pyramid (so a frame drawn without the
        # background, before it exists, reads the same pixels), rows of both reflected (so
        # neither reads the other), the background's pyramid; `offset` a multiple of
        # 2 ** levels, so each level halves it. None at the levels finer than `finest`.
        n = len(self._levels)
        unit = 1 << n
        offset = -(-(self.height + 4 * unit) // unit) * unit
        behind = [background]
        while finest + len(behind) < n:
            behind.append(cv2.pyrDown(behind[-1]))
        levels = [None] * finest + [_stack(self._levels[finest + k], back, offset >> (finest + k))
                                    for k, back in enumerate(behind)]
        if refilled is not None:
            bg_depth = refilled.result()
        # (Inpainted a pixel wider: a point is read bilinearly from the pixels round it.)
        return _Background(bg_depth, levels, [], offset, cv2.dilate(inpainted.view(np.uint8), k3).view(bool), finest)

    def _reach(self, frames: Sequence[CameraFrame], layers: _Layers, width: int, height: int) -> "_Reach":
        """What these frames need of the hidden background (`_Reach`): the widest band
        (depth-map pixels) any of them can reveal, how far a ray's source moves between the
        nearest and the farthest layer at the output's corners; for each frame whether it
        shows parallax (`_moved`) and whether it may tear (`_Layers.tears`), from the same
        spreads; and the finest pyramid level they read."""
        reach, moved, tears, finest = 0.0, [], [], len(self._levels) - 1
        sx = layers.s.shape[1] / self.width
        seen = []  # per frame: the finest level it reads, and where on the photo it looks
        for frame in frames:
            image_px, output_px = _layer_spread(frame, layers, width, height)
            reach = max(reach, image_px * sx)
            moved.append(output_px >= SUBPIXEL_PARALLAX)
            tears.append(image_px * sx > TEAR_PX)
            lo, frac = self._level(np.linalg.inv(camera.frame_homography(frame)), width, height)
            finest = min(finest, lo + 1 if frac > 1.0 - _BG_BLEND_EPS else lo)
            seen.append((lo, _layer_box(frame, layers, width, height)))
        # A view that looks past the picture's horizon has an infinite spread (the planner
        # refuses such cameras; a trajectory made by hand may not): no band is wider than the map.
        reach = min(reach, float(np.hypot(*layers.s.shape)))
        return _Reach(reach + 2.0, tuple(moved), tuple(tears), finest, self._window(finest, seen))

    def _window(self, level: int, seen: list) -> tuple | None:
        """`_Reach.window`: the box on pyramid `level` (its pixels, WINDOW_PAD more each way) that
        the frames reading it see (`seen`: (finest level read, (x0, y0, x1, y1) on the photo)),
        in whole multiples of WINDOW_ALIGN; None where it is WINDOW_SHARE of the level or more,
        or is not finite."""
        boxes = [box for lo, box in seen if lo <= level]
        if level + 1 >= len(self._levels) or not boxes:
            return None
        box = np.concatenate([np.min(boxes, axis=0)[:2], np.max(boxes, axis=0)[2:]]) / (1 << level)
        if not np.all(np.isfinite(box)):
            return None
        k = 1 << level
        w, h = self.width // k, self.height // k  # (whole level pixels of the photo's own)
        a = WINDOW_ALIGN
        x0, y0 = (max(0, int(v - WINDOW_PAD) // a * a) for v in box[:2])
        x1, y1 = min(w, -(-int(box[2] + WINDOW_PAD) // a) * a), min(h, -(-int(box[3] + WINDOW_PAD) // a) * a)
        if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) >= WINDOW_SHARE * w * h:
            return None
        return x0, y0, x1, y1

    def _trajectory_layers(self, trajectory: CameraTrajectory, c0: np.ndarray, background: bool = True
                           ) -> _Layers | None:
        """Depth for a trajectory. dolly_zoom, orbit and parallax are built so their
        subject keeps its place on the image plane: the subject's layer is made the plane
        (pivot), so nearer things move against it and the background swings, recedes or
        slides behind it. Without a depth map dolly_zoom and parallax get a `pseudo_depth`
        blob of strength PSEUDO_PARALLAX (the strength the trajectory planned for), other
        effects none. background False: without the hidden background (see `_layers`)."""
        pivot = trajectory.subject if trajectory.effect in PIVOT_EFFECTS else None
        if self.depth is not None:
            layers = self._layers(self.depth, c0, pivot)
            need = self._reach(trajectory.frames, layers, trajectory.width, trajectory.height)
            return self._layers(self.depth, c0, pivot, reach=need.reach, finest=need.finest, window=need.window,
                                background=background)._replace(moved=need.moved, tears=need.tears)
        if _pseudo_depth(trajectory):
            dw, dh = self._small_size()  # computed small: it is sampled at this size anyway
            # Sized by what the first frame shows, so the near blob holds the subject and
            # the rest of the view lies behind it, at any zoom.
            fp = camera.footprint(trajectory.frames[0], trajectory.width, trajectory.height)
            view = min(np.ptp(fp[:, 0]) * dw / self.width, np.ptp(fp[:, 1]) * dh / self.height)
            depth = pseudo_depth(
                dw, dh, (pivot[0] * dw / self.width, pivot[1] * dh / self.height),
                radius_frac=PSEUDO_RADIUS * view / min(dw, dh),
            )  # fmt: skip
            return self._layers(depth, c0, pivot, PSEUDO_PARALLAX)
        return None

    def draws_planes(self, trajectory: CameraTrajectory, motion_blur: float = 0.0) -> bool:
        """Whether `render(trajectory, planes=...)` can draw its frames as I420 planes: any
        frames, flat or with depth, but those with motion blur (averaged in RGB)."""
        return not motion_blur > 0

    # -- one frame --------------------------------------------------------------------

    def render_frame(
        self,
        frame: CameraFrame,
        width: int,
        height: int,
        *,
        reference: np.ndarray | None = None,
        pivot=None,
    ) -> np.ndarray:
        """Render one frame, (height, width, 3) uint8. Only with a depth map: `reference`
        is the centre of the camera that sees the depth map undistorted (default: the
        cover-crop reference camera; `render` uses the trajectory's first camera), and
        `pivot` an image point whose depth layer is put on the plane (see `render`)."""
        out = np.empty((height, width, 3), np.uint8)
        c0 = reference_center(self.width, self.height, width, height) if reference is None else reference
        layers = self._layers(self.depth, np.asarray(c0, float), pivot)
        if layers is not None:
            need = self._reach([frame], layers, width, height)
            layers = self._layers(self.depth, layers.c0, pivot, reach=need.reach, finest=need.finest, window=need.window)
        self._render_into(out, frame, layers, {})
        return out

    def _render_into(
        self, out: np.ndarray, frame: CameraFrame, layers: _Layers | None, scratch: dict, index: int | None = None,
        yuva: bool = False,
    ) -> None:
        # index: the frame's place in the layers' trajectory, when it is one of its frames (see `_moved`).
        # yuva: out is (h, w, 4), drawn from the YUV textures (`_render_planes`), not RGB.
        height, width = out.shape[:2]
        G = np.linalg.inv(camera.frame_homography(frame))  # output -> image
        lo, frac = self._level(G, width, height)

        if _moved(frame, layers, width, height, index):
            q = self._depth_maps(frame, width, height, layers, scratch)
            if layers.bg is None:
                levels = self._yuva() if yuva else self._levels
            else:
                levels = self._bg_yuva(layers.bg) if yuva else layers.bg.levels
                if lo < layers.bg.finest:  # (a frame of the trajectory only within _BG_BLEND_EPS of it)
                    lo, frac = layers.bg.finest, 0.0
            sample = lambda lvl, dst: self._remap(levels, lvl, q, dst, scratch)  # noqa: E731
        elif yuva:
            sample = lambda lvl, dst: self._warp_into(self._yuva(), lvl, G, dst)  # noqa: E731
        else:
            # No depth, or the camera sits at the reference centre (a pure rotation or
            # lens zoom): no parallax, the plane homography is exact; or it moved so little
            # that its layers part by under SUBPIXEL_PARALLAX: the homography is as good.
            sample = lambda lvl, dst: self._warp(lvl, G, dst, scratch)  # noqa: E731
        self._trilinear(sample, lo, frac, out, scratch, "yuva_blend" if yuva else "blend")

    def _trilinear(self, sample, lo: int, frac: float, out: np.ndarray, scratch: dict, key: str) -> None:
        """`sample(lo, out)`, blended with `sample(lo + 1, ...)` by `frac` (its buffer kept in
        scratch under `key`) unless that share is negligible or there is no next level. The next
        level is sampled first: a depth frame's remap rounds its map in place at level 0 (`_remap`)."""
        if frac >= _BLEND_EPS and lo + 1 < len(self._levels):
            nxt = _buffer(scratch, key, out.shape, out.dtype)
            sample(lo + 1, nxt)
            sample(lo, out)
            cv2.addWeighted(out, 1.0 - frac, nxt, frac, 0.0, dst=out)
        else:
            sample(lo, out)

    def _level(self, G: np.ndarray, width: int, height: int) -> tuple[int, float]:
        """The pyramid level a frame samples (output -> image map G) and the share of the next
        level blended in: trilinear, from the local scale at the frame centre."""
        level = math.log2(max(local_scale(G, width / 2.0, height / 2.0), 1e-9))
        level = min(max(level, 0.0), len(self._levels) - 1.0)
        lo = int(math.floor(level))
        frac = level - lo
        if frac > 1.0 - _BLEND_EPS:
            lo, frac = lo + 1, 0.0
        return lo, frac

    def _render_planes(self, frame: CameraFrame, planes: I420, layers: _Layers | None, scratch: dict,
                       index: int | None = None) -> None:
        """A frame drawn straight into the encoder's I420 planes: `_render_into` on the textures
        in YUV (the photo's pyramid, `_yuva`; with depth, the photo stacked above its hidden
        background, `_Background.yuva_levels`), then Y per pixel and U and V each 2x2 block's
        average, as `d2v.encode.Yuv420` takes them from an RGB frame. All a frame does to colour
        is linear (the warp or the depth remap, the blend of two levels, an edge's matte), so
        this is that conversion of the RGB frame but for rounding (within 1 level), for the draw
        alone: no RGB frame, no conversion."""
        w, h = planes.width, planes.height
        yuva = _buffer(scratch, "yuva", (h, w, 4), np.uint8)
        self._render_into(yuva, frame, layers, scratch, index, yuva=True)
        cv2.extractChannel(yuva, 0, dst=planes.y)
        half = _buffer(scratch, "yuva_half", (h // 2, w // 2, 4), np.uint8)
        cv2.resize(yuva, (w // 2, h // 2), dst=half, interpolation=cv2.INTER_AREA)
        cv2.extractChannel(half, 1, dst=planes.u)
        cv2.extractChannel(half, 2, dst=planes.v)

    def _warp_into(self, levels: list[np.ndarray], level: int, G: np.ndarray, dst: np.ndarray) -> None:
        M = camera.to_opencv(G, level)
        if M[2, 0] == 0.0 and M[2, 1] == 0.0:
            # A camera that does not turn (a push in, a pan, a truck: most moves) maps the
            # output onto the photo affinely: warpAffine samples the same points 20 % faster
            # (no divide per pixel; the same 1/32 px bilinear weights: identical frames).
            cv2.warpAffine(levels[level], M[:2] / M[2, 2], dst.shape[1::-1], dst=dst,
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=self._border)
            return
        cv2.warpPerspective(
            levels[level], M, dst.shape[1::-1], dst=dst,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=self._border,
        )

    def _warp(self, level: int, G: np.ndarray, dst: np.ndarray, scratch: dict) -> None:
        # On the RGBA copy (see the module docstring), then RGB: the same bytes as a 3-channel warp.
        h, w = dst.shape[:2]
        rgba = _buffer(scratch, "rgba", (h, w, 4), np.uint8)
        self._warp_into(self._rgba(), level, G, rgba)
        cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=dst)

    def _rgba(self) -> "_LazyLevels":
        """The pyramid with a fourth channel, for flat warps: each level made on first use (a
        depth render may never warp flat), once, shared by every thread."""
        return self._rgba_levels

    def _yuva(self) -> "_LazyLevels":
        """The pyramid as BT.709 limited-range YUV (the encoder's matrix) with a fourth channel,
        for frames drawn as I420 planes: each level made on first use (a large photo's finest,
        0.1 s of a 12 MP one, is often never read), once, shared by every thread."""
        return self._yuva_levels

    def _remap(self, levels: list, level: int, q: np.ndarray, dst: np.ndarray, scratch: dict) -> None:
        # q: (h, w, 2) image coordinates in OpenCV convention at level 0; scaled for the level.
        # For images small enough (see __init__), the coordinates are rounded to 1/32 px (half
        # to even) as cv2.convertMaps rounds them for a fixed-point remap, then remapped as a
        # float map: OpenCV 5's float-map remap is the faster (a 1024x576 frame of the stacked
        # YUVA texture, caches cold as in a frame: 1.7 ms, 2.5 with the rounding, against 3.3
        # for convertMaps and the fixed-point remap), and on points at whole 1/32 px it is the
        # fixed-point remap within a level (a value half way rounds either way). Straight from
        # the unrounded map it interpolates at the exact point: up to 5 levels off where the
        # texture is sharp (bench/RESULTS.md, session 15). Full-size maps live in scratch:
        # fresh multi-megabyte arrays every frame cost more in page faults than the work in them.
        # Then the pixels at depth edges (`_depth_maps`' scratch["edges"]): the mean of their
        # own rays' samples, so an edge is resolved and anti-aliased at output resolution.
        # (levels: RGB, or YUV with a fourth channel for I420 frames: the same arithmetic.)
        scale = np.float32(0.5**level)
        if level:
            q = np.multiply(q, scale, out=_buffer(scratch, "q_level", q.shape, np.float32))
        if self._fixed_maps:
            # (In place: at level 0 this is q's last use, `_trilinear` samples the next level
            # first; a separate rounded copy costs ~3 % of a frame in cache misses.)
            q += _ROUND_32
            q -= _ROUND_32
        cv2.remap(levels[level], q, None, cv2.INTER_LINEAR, dst=dst, borderMode=self._border)
        edges: _Edges | None = scratch.get("edges")
        if edges is not None and edges.aa.size:
            # (The map holds each edge pixel's own ray: what an edge crosses mixes in the other side.)
            at = edges.idx[edges.aa]
            # (Pixels as 3- or 4-byte items: one gather and one scatter, not a row per pixel.)
            channels = dst.shape[2]
            pixel = np.dtype(f"V{channels}")
            own = dst.reshape(-1).view(pixel)[at].view(np.uint8).reshape(-1, channels).astype(np.float32)
            other = _sample(levels[level], edges.aa_x * scale, edges.aa_y * scale, border=self._border)
            other = other.astype(np.float32)
            own += edges.aa_w[:, None] * (other - own)
            dst.reshape(-1).view(pixel)[at] = (own + 0.5).astype(np.uint8).reshape(-1).view(pixel)

    def _depth_maps(
        self, frame: CameraFrame, width: int, height: int, layers: _Layers, scratch: dict
    ) -> np.ndarray:
        """Per-pixel source coordinates (height, width, 2), OpenCV convention, level 0, of the
        depth warp; also leaves in scratch the grid points that see hidden background
        ("torn") and the edge pixels' own rays ("edges", see `_edge_rays`).

        Each output pixel's ray is parametrised by the layer s it is at: the point P(s)
        on the ray with Z = C0z (1 - s) came from image point Q(s) = C0 + (P(s) - C0) / s.
        The ray hits the scene where s = layers.s(Q(s)). A plain fixed-point
        iteration from the plane finds the background even where a near object should
        occlude it (near things shrink at their edges), so, as in parallax-occlusion
        mapping, march from the nearest layer to the farthest, stop at the first
        crossing, and refine it (bisection, then the secant). Done on a grid every
        _DEPTH_GRID_STEP output pixels, then upsampled bilinearly (exact for the flat part
        of the map)."""
        C, c0 = frame.camera_center(), layers.c0
        dh, dw = layers.s.shape
        sx, sy = dw / self.width, dh / self.height
        # World ray directions of the grid pixels, d = R^T K^-1 (u, v, 1), as slopes
        # e = (dx/dz, dy/dz). With u = 1/s, Q(s) = A + u B: linear in 1/s, per pixel. The
        # slopes and A depend on the camera's turn and lens only: the frames of a dolly, a
        # truck or a pan share them (computed once, kept in scratch), B moves with the camera.
        Kinv_R = frame.R().T @ np.linalg.inv(frame.K())
        key = (Kinv_R.tobytes(), c0.tobytes(), width, height, sx, sy)
        rays = scratch.get("rays")
        if rays is None or rays[0] != key:
            # (A turning camera, an orbit's, makes these anew every frame: each is made in
            # place, from the grid's rows and columns, 3x faster than in whole-grid temporaries.)
            gx, gy = _grid(width, height)
            dz = _grid_affine(Kinv_R[2], gx, gy)
            dz[np.abs(dz) < 1e-9] = 1e-9
            ex, ey = _grid_affine(Kinv_R[0], gx, gy), _grid_affine(Kinv_R[1], gx, gy)
            ex /= dz
            ey /= dz
            # In depth-map OpenCV pixels: Q*s - 0.5.
            Ax, Ay = _ray_origin(ex, c0[0], c0[2], sx), _ray_origin(ey, c0[1], c0[2], sy)
            rays = scratch["rays"] = (key, ex, ey, Ax, Ay)
        _, ex, ey, Ax, Ay = rays
        Bx = (((C[0] - c0[0]) + (c0[2] - C[2]) * ex) * sx).astype(np.float32)
        By = (((C[1] - c0[1]) + (c0[2] - C[2]) * ey) * sy).astype(np.float32)

        # Search only layers that hold something and lie in front of the camera.
        s_hi = layers.far
        s_cam = 1.0 - C[2] / c0[2]  # the layer through the camera centre
        s_lo = min(s_hi, max(layers.near, s_cam + 1e-3))
        if s_lo >= s_hi:
            s = np.full(Ax.shape, s_hi, np.float32)
        else:
            # March one layer at a time over the whole grid (small arrays that stay in cache),
            # in steps even in 1/s: a ray's image point moves as 1/s, so each step moves it
            # as far, along the longest ray about _DEPTH_STEP_PX depth-map pixels (at most
            # _DEPTH_MAX_STEPS steps), then each ray's first step at or behind the surface
            # (layer <= step; the last, the farthest layer, where every ray is, at the latest).
            span = float(np.sqrt(np.max(Bx * Bx + By * By))) * (1.0 / s_lo - 1.0 / s_hi)
            n = int(np.clip(math.ceil(span / _DEPTH_STEP_PX), 2, _DEPTH_MAX_STEPS))
            steps = (1.0 / (1.0 / s_lo + (1.0 / s_hi - 1.0 / s_lo) * np.arange(n + 1) / n)).astype(np.float32)
            steps[0], steps[-1] = s_lo, s_hi
            mx, my = np.empty_like(Ax), np.empty_like(Ay)
            # seen[j]: the layer each ray finds at step j.
            seen = _buffer(scratch, "march", (_DEPTH_MAX_STEPS + 1,) + Ax.shape, np.float32)[:n + 1]
            for j in range(n + 1):
                u = float(1.0 / steps[j])
                cv2.scaleAdd(Bx, u, Ax, dst=mx)
                cv2.scaleAdd(By, u, Ay, dst=my)
                cv2.remap(layers.s, mx, my, cv2.INTER_LINEAR, dst=seen[j], borderMode=cv2.BORDER_REPLICATE)
            k = _first_behind(seen[:n] > steps[:n, None, None])
            # Where the surface lies strictly between two steps, halve that bracket
            # _DEPTH_REFINE times, then take the secant's zero in what is left (exact on a
            # flat layer; at a depth edge, somewhere inside a quarter of a step). A ray that
            # met the surface exactly on a step (a flat layer there: the farthest one, the
            # plane) or at the first step is done. f = layer - step: > 0 in front, at the
            # first step behind (b) and the one before it (a); `seen` is contiguous: flat gathers.
            s, flat, size = steps[k], seen.ravel(), np.int32(k.size)
            fb = flat[k.ravel() * size + np.arange(size, dtype=np.int32)] - s.ravel()
            ii = np.flatnonzero((k.ravel() > 0) & (fb != 0))
            kp = k.ravel()[ii] - 1
            fa = flat[kp * size + ii] - steps[kp]
            keep = (fa - fb[ii]) > 1e-9
            ii, kp, fa = ii[keep], kp[keep], fa[keep]
            if ii.size:
                a, b, fb = steps[kp], s.ravel()[ii], fb[ii]
                ax, ay, bx, by = (v.ravel()[ii] for v in (Ax, Ay, Bx, By))
                for _ in range(_DEPTH_REFINE):
                    si = (a + b) * np.float32(0.5)
                    u = 1.0 / si
                    fs = _sample(layers.s, ax + u * bx, ay + u * by) - si
                    front = fs > 0
                    a, fa = _pick(front, si, a), _pick(front, fs, fa)
                    b, fb = _pick(front, b, si), _pick(front, fb, fs)
                den = fa - fb
                bracket = den > 1e-9
                secant = a + (b - a) * fa / _pick(bracket, den, np.ones_like(den))
                s.ravel()[ii] = _pick(bracket, secant, b)
        # The chosen layer's point, in depth-map pixels; where the move revealed what a near
        # layer hid (the ray met a step between its sides), the hidden background's instead.
        px, py = Ax + Bx / s, Ay + By / s
        row0 = np.zeros_like(px)  # where in the stacked texture: 0 the photo, bg.offset its background
        torn = np.zeros(px.shape, bool)
        seen = s  # the layer each ray sees: the hidden background's where torn
        if layers.bg is not None:
            torn = _torn(layers, px, py, s, Bx, By)
            if (i := np.flatnonzero(torn)).size:
                ax, ay, bx, by = (v.ravel()[i] for v in (Ax, Ay, Bx, By))
                bs = _march_points(layers.bg_s, ax, ay, bx, by, 1.0 / max(s_lo, layers.bg_near),
                                   1.0 / layers.bg_far, _DEPTH_STEP_PX, _DEPTH_MAX_STEPS)
                px.ravel()[i] = ax + bx / bs
                py.ravel()[i] = ay + by / bs
                row0.ravel()[i] = layers.bg.offset
                seen = s.copy()
                seen.ravel()[i] = bs
        scratch["torn"] = torn  # for render_validity: these pixels are invented

        # Back to image coordinates (OpenCV convention), upsampled to every output pixel.
        gx, gy = (px + 0.5) / sx - 0.5, (py + 0.5) / sy - 0.5 + row0
        grid = np.stack([gx, gy], axis=-1).astype(np.float32)
        if self._fixed_maps:
            # Rays that graze the plane land absurdly far away: held within what fixed-point
            # maps take, far enough out that no pixel interpolated toward them enters the image.
            np.clip(grid, -_FIXED_MAP_LIMIT, _FIXED_MAP_LIMIT, out=grid)
        q = _upsample(grid, width, height, scratch)
        big = scratch["upsampled"]  # q lies in this wider buffer
        step, wide = _DEPTH_GRID_STEP, big.shape[1]
        edges, band = self._edge_rays(frame, width, height, layers, s, seen, grid, torn, scratch)
        scratch["edges"], scratch["band"] = edges, None
        if band is not None:
            # A revealed band's far border: every corner on the hidden background's rows (the
            # photo's own colours outside what was inpainted), bilinear within each cell as
            # `_upsample` made it. The upsampled map is bilinear in the corners, so this is it
            # moved down by the background's offset times the bilinear share of the corners
            # that are not torn (`_PHOTO_SHARE`, by which of the four those are).
            cy, cx = band
            # (All the cells' pixels: those past the frame's edges land in the wider buffer's
            # margin, which q does not show; render_validity keeps the frame's own.)
            ys, xs, inside = _cell_pixels(cy, cx, width, height)
            scratch["band"] = ys, xs, inside
            nx = torn.shape[1]
            corner = (cy * nx + cx).astype(np.intp)  # (top left; then + 1, + nx, + nx + 1)
            on_photo = (~torn).view(np.uint8).ravel()
            code = on_photo[corner] | on_photo[corner + 1] << 1 | on_photo[corner + nx] << 2 | on_photo[corner + nx + 1] << 3
            at = (ys + step).astype(np.intp) * wide + (xs + step)
            rows = big.reshape(-1, 2)[:, 1]  # (the map's y)
            rows[at] += _PHOTO_SHARE[code].ravel() * np.float32(layers.bg.offset)
        if edges is not None:  # a pixel's centre ray
            at = (edges.ys + step).astype(np.intp) * wide + (edges.xs + step)
            xy = np.empty((edges.idx.size, 2), np.float32)
            xy[:, 0], xy[:, 1] = edges.x, edges.y
            big.view(np.int64).reshape(-1)[at] = xy.view(np.int64).ravel()  # (x and y as one item)
        return q

    def _edge_rays(self, frame: CameraFrame, width: int, height: int, layers: _Layers, s: np.ndarray,
                   seen: np.ndarray, grid: np.ndarray, torn: np.ndarray, scratch: dict):
        """Where the grid's map bends (a depth edge, or a revealed band's border) bilinear
        upsampling would blend source points across the edge (dark fringes, a staircase of
        grid cells). Those output pixels, in cells whose corners part (two layers, or torn
        and not), get their own ray, at the centre, judged torn or not and placed on the
        photo or its hidden background; where an edge crosses a pixel, the other side's
        colour too, as a matte (`_Edges`; None: no edges)."""
        # (And where a torn point meets one that is not: the photo's layer there may be the
        # hidden one's, as on a step's rim, yet which pixels are invented is for rays to say.)
        k = np.ones((3, 3), np.uint8)
        bent = _bends(grid, EDGE_BEND_PX) | (torn & ~cv2.erode(torn.view(np.uint8), k).view(bool))
        bent |= ~torn & cv2.dilate(torn.view(np.uint8), k).view(bool)
        if not bent.any():
            return None, None
        # The cells between two bent neighbours (the edge crosses between them), as output
        # pixels: pixel x lies in the cell of grid points (x + 2) // step and the next (see _grid).
        step = _DEPTH_GRID_STEP
        a, b, c, d = bent[:-1, :-1], bent[:-1, 1:], bent[1:, :-1], bent[1:, 1:]
        cells = (a & b) | (c & d) | (a & c) | (b & d)
        # Each cell's candidate layers: the nearest and the farthest its corners found, of
        # those not torn (a torn corner's layer is the step's inside, no layer at all). A cell
        # whose corners all lie on one layer, or all see hidden background, has no edge inside
        # that its corners saw: the upsampled map holds there, it needs no rays of its own.
        lo, hi = s.copy(), s.copy()
        lo[torn], hi[torn] = np.inf, -np.inf
        near_cell, far_cell = _over_corners(np.minimum, lo), _over_corners(np.maximum, hi)
        any_torn, all_torn = _over_corners(np.logical_or, torn), _over_corners(np.logical_and, torn)
        cells &= ~all_torn & (any_torn | (far_cell - near_cell > layers.s_step))
        # A revealed band's far border: the torn corners' hidden background continues the
        # other corners' layer (all seen within s_step). The hidden background is the photo
        # there (but where it was inpainted, which such a ray shows anyway: a rim), so these
        # cells are the hidden background's, upsampled (returned: their rows and columns).
        band = None
        if any_torn.any():
            seen_spread = _over_corners(np.maximum, seen) - _over_corners(np.minimum, seen)
            seamless = cells & any_torn & (seen_spread <= layers.s_step)
            # (But beside a cell that keeps its rays: a step may run between the two, whose
            # pixels then need each other's rays for the matte, `_across`.)
            seamless &= ~cv2.dilate((cells & ~seamless).view(np.uint8), _CROSS).view(bool)
            if seamless.any():
                cells &= ~seamless
                band = np.nonzero(seamless)
        cy, cx = np.nonzero(cells)
        if not cy.size:
            return None, band
        ys, xs, inside = _cell_pixels(cy, cx, width, height)
        near_c, far_c = (np.repeat(v[cy, cx], step * step) for v in (near_cell, far_cell))
        if inside is not None:  # (cells past the frame's edges)
            ys, xs, near_c, far_c = ys[inside], xs[inside], near_c[inside], far_c[inside]
        idx = ys.astype(np.intp) * width + xs
        rays = _EdgeRays.of(frame, layers, self.width, self.height)

        # One ray at each pixel's centre. Where a pixel and a 4-neighbour see two sides of a
        # step (two layers, or a layer and what it hid), the edge crosses the pixel: it gets
        # the other side's colour too, as a matte (`_matte`).
        xc, yc = xs.astype(np.float32) + np.float32(0.5), ys.astype(np.float32) + np.float32(0.5)
        qx, qy, torn1, rim1, u1 = rays.cast(layers, xc, yc, near_c, far_c)
        reveal = ((lambda i: _reveal(rays, layers, i, xc, yc, far_c, (qx, qy, torn1, rim1, u1)))
                  if layers.bg is not None and torn.any() else None)
        aa, o = _across(ys, xs, width, height, torn1, u1, layers.s_step, scratch, reveal)
        if not aa.size:
            return _Edges(idx, ys, xs, qx, qy, torn1.astype(np.float32), aa, qx[:0], qy[:0], qx[:0]), band
        aa_x, aa_y, aa_w = _matte(rays, layers, xc[aa], yc[aa], (u1[aa], torn1[aa]), (u1[o], torn1[o], rim1[o]),
                                  np.float32(1.0) / near_c[aa] - np.float32(1.0) / far_c[aa])
        torn_share = torn1.astype(np.float32)
        torn_share[aa] += aa_w * (torn1[o].astype(np.float32) - torn_share[aa])
        return _Edges(idx, ys, xs, qx, qy, torn_share, aa, aa_x, aa_y, aa_w), band

    # -- which pixels are the photo's ---------------------------------------------------

    def render_validity(self, trajectory: CameraTrajectory, indices: Sequence[int] | None = None
                        ) -> Iterator[np.ndarray]:
        """For each frame `render` would yield (same trajectory and indices): (height, width)
        bool, True where the frame shows the photo, False where the render had to invent
        pixels: outside the photo (a view allowed past its borders) and, with depth, where
        a near layer's edge was stretched over what the move revealed (disocclusions; the
        source spreads STRETCH_INVENTED times wider than the plane would spread it)."""
        frames = trajectory.frames
        w, h = trajectory.width, trajectory.height
        layers = self._trajectory_layers(trajectory, frames[0].camera_center()) if frames else None
        scratch: dict = {}
        ones = np.full((self.height, self.width), 255, np.uint8)
        for i in range(len(frames)) if indices is None else indices:
            frame = frames[i]
            G = np.linalg.inv(camera.frame_homography(frame))
            if not _moved(frame, layers, w, h, i):
                inside = cv2.warpPerspective(ones, camera.to_opencv(G), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                yield inside >= 128
                continue
            q = self._depth_maps(frame, w, h, layers, scratch)
            on_bg = None
            if layers.bg is not None:  # points on the hidden background: where they are in the photo
                q = q.copy()
                qy = q[..., 1]
                on_bg = qy > (self.height + layers.bg.offset) / 2
                qy -= on_bg * np.float32(layers.bg.offset)
            inside = cv2.remap(ones, q, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) >= 128
            revealed = _upsample(scratch["torn"].astype(np.float32), w, h) > 0.5
            if scratch["band"] is not None:
                # A revealed band's far border (`_edge_rays`): revealed where the photo shows
                # something half a step nearer than the hidden background at the pixel's point.
                ys, xs, kept = scratch["band"]
                if kept is not None:  # (the frame's own pixels)
                    ys, xs = ys[kept], xs[kept]
                at = ys.astype(np.intp) * w + xs
                dh, dw = layers.s.shape
                px = (q[..., 0].ravel()[at] + 0.5) * np.float32(dw / self.width) - 0.5
                py = (q[..., 1].ravel()[at] + 0.5) * np.float32(dh / self.height) - 0.5
                hidden = _sample(layers.bg_s, px, py) - _sample(layers.s, px, py)
                revealed.ravel()[at] = hidden > layers.s_step / 2
            if scratch["edges"] is not None:
                edges = scratch["edges"]
                revealed.ravel()[edges.idx] = edges.torn >= 0.5
            if on_bg is not None:
                # A ray that crossed a step yet met, on the hidden background, a point that was
                # not inpainted (a step's far side just beyond the hole, or a thin thing the
                # depth puts on the far layer) shows the photo's own pixel: not invented.
                at_level = q if not layers.bg.finest else q * np.float32(0.5 ** layers.bg.finest)
                inpainted = cv2.remap(layers.bg.inpainted.view(np.uint8), at_level, None, cv2.INTER_NEAREST,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=1).view(bool)
                revealed &= ~on_bg | inpainted
            yield inside & ~revealed

    # -- a whole trajectory -----------------------------------------------------------

    def render(
        self, trajectory: CameraTrajectory, *, motion_blur: float = 0.0, samples: int = 6,
        indices: Sequence[int] | None = None, planes: Collection[int] = (),
    ) -> Iterator[np.ndarray | I420]:
        """Yield each frame of the trajectory (or just those at `indices`, as the whole clip
        would show them), (height, width, 3) uint8, one at a time.

        motion_blur: shutter length in frames (0 = off); each frame averages `samples`
        renders at cameras spread evenly over [i - b/2, i + b/2], clamped to the move.
        planes: the frames to yield as the encoder's `I420` planes instead of RGB
        (`_render_planes`): renders without motion blur only."""
        if (trajectory.image_width, trajectory.image_height) != (self.width, self.height):
            raise ValueError(
                f"trajectory is for a {trajectory.image_width}x{trajectory.image_height} image, "
                f"the renderer has {self.width}x{self.height}"
            )
        frames = trajectory.frames
        layers = self._trajectory_layers(trajectory, frames[0].camera_center(), background=False) if frames else None
        if planes and float(motion_blur) > 0 and int(samples) > 1:
            raise ValueError("frames are drawn as I420 planes only without motion blur")
        if layers is not None and layers.hidden is not None:
            # The hidden background, most of the work before the first frame (a third of a second
            # on a 1000 px photo), is made on a thread of its own while the first frames, which
            # cannot tear (`_Layers.tears`), are drawn and go to the encoder, which would
            # otherwise wait for it with a core idle.
            with ThreadPoolExecutor(1, thread_name_prefix="d2v-hidden") as builder:
                hidden = builder.submit(self._with_background, layers, bool(planes))
                yield from self._frames(trajectory, layers, hidden, motion_blur, samples, indices, planes)
        else:
            yield from self._frames(trajectory, layers, None, motion_blur, samples, indices, planes)

    def _frames(self, trajectory: CameraTrajectory, layers: _Layers | None, hidden: Future | None,
                motion_blur: float, samples: int, indices: Sequence[int] | None, planes: Collection[int]
                ) -> Iterator[np.ndarray | I420]:
        """`render`'s frames, given the trajectory's layers; hidden: the layers with their hidden
        background, being made, which every frame but those that cannot tear waits for."""
        frames = trajectory.frames
        w, h, n = trajectory.width, trajectory.height, len(frames)
        blur = max(0.0, float(motion_blur))
        samples = max(1, int(samples))
        offsets = ((np.arange(samples) + 0.5) / samples - 0.5) * blur if blur > 0 and samples > 1 else None
        order = range(n) if indices is None else indices
        local = threading.local()  # each thread's scratch (see _render_into)
        planes = frozenset(planes)

        def layers_for(i: int) -> _Layers | None:
            if hidden is None or (offsets is None and not layers.tears[i]):
                return layers
            return hidden.result()

        def frame(i: int) -> np.ndarray | I420:
            scratch = local.__dict__.setdefault("scratch", {})
            if i in planes:
                drawn = I420(w, h)  # fresh: the consumer may keep it
                self._render_planes(frames[i], drawn, layers_for(i), scratch, i)
                return drawn
            out = np.empty((h, w, 3), np.uint8)  # fresh: the consumer may keep it
            cams = [_camera_at(frames, i + o) for o in offsets] if offsets is not None else []
            if offsets is None or all(_same_camera(cams[0], c) for c in cams[1:]):
                self._render_into(out, frames[i], layers_for(i), scratch, i)
            else:
                acc = _buffer(scratch, "shutter", (h, w, 3), np.float32)
                sub = _buffer(scratch, "sub", (h, w, 3), np.uint8)
                acc.fill(0.0)
                for cam in cams:
                    self._render_into(sub, cam, layers_for(i), scratch)
                    cv2.accumulate(sub, acc)
                cv2.convertScaleAbs(acc, dst=out, alpha=1.0 / len(cams))
            return out

        if layers is None or RENDER_THREADS < 2:  # flat warps: a millisecond a frame, nothing to share
            yield from map(frame, order)
            return
        # Depth frames on RENDER_THREADS threads, yielded in order: the render is the slow side
        # of render + encode, and OpenCV and numpy let go of the GIL in their loops, so a frame
        # renders on whatever core x264 leaves free (on the 2-core VM 11-12 % less wall beside
        # x264, for 6-8 % more CPU: bench/RESULTS.md, session 10). Each frame is drawn alone,
        # as one thread draws it: the same pixels.
        with ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="d2v-depth") as pool:
            pending: deque = deque()
            try:
                for i in order:
                    pending.append(pool.submit(frame, i))
                    if len(pending) > RENDER_THREADS:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # (a consumer that stops early: the frames not started are dropped)
                for future in pending:
                    future.cancel()


# Depth steps: neighbouring depth-map pixels this far apart (depth in [0, 1]) are two
# layers, the near one in front of a background the photo does not show.
STEP_DEPTH = 0.05
# A ray that met a step farther than this (depth-map pixels) from where either side would
# put it sees what the photo hid (`_torn`).
TEAR_PX = 0.75
# Flying pixels: where depth changes by SNAP_STEP within a SNAP_WINDOW window, about as much
# as in one twice as wide (a soft step, not a slope), each pixel takes the nearer side's depth.
RIM_PX = 2  # depth-map px: the far side's pixels this near a step are the hidden background's (`_EdgeRays.cast`)
SNAP_WINDOW = 5
SNAP_STEP = 0.1
EDGE_BEND_PX = 1.0  # image px a grid point may leave the line of its neighbours before its cells get own rays
_EDGE_REFINE = 4  # bisections of the hidden background's march (`_march_points`)
SPIKE_PX = 7  # depth-map px: a narrower peak toward the camera in the hidden depth is a sliver of the near object (`_spikes`)
ISLAND_SHARE = 0.01  # a piece of the far side under this share of the depth map may be a near object's (`_near_islands`)
_ERODE_CV_MAX = 65  # square erosions up to this wide by OpenCV, wider ones by `_erode_square`'s sparse table
_RAY_COLS = 1024  # scattered rays are folded into rows this wide for cv2.remap (`_fold`)
_REMAP_SIDE = 32767  # cv2.remap's maps take at most this many points a side
_RAY_CHUNK = 32 * _RAY_COLS  # edge rays cast at a time (their arrays stay in cache)


def snap_depth_edges(depth: np.ndarray) -> np.ndarray:
    """Depth with its soft steps made hard: an estimated depth map blurs a near object's
    edge over a few pixels ("flying pixels", half way between near and far, which a move
    would smear across the gap). Where depth changes by SNAP_STEP within SNAP_WINDOW pixels,
    and that window sees most of what one twice as wide does (a step, not a slope), each
    pixel takes the depth of the side it is nearer to in value."""
    k = np.ones((SNAP_WINDOW, SNAP_WINDOW), np.uint8)
    k2 = np.ones((2 * SNAP_WINDOW + 1, 2 * SNAP_WINDOW + 1), np.uint8)
    lo, hi = cv2.erode(depth, k), cv2.dilate(depth, k)
    rng = hi - lo
    soft = (rng > SNAP_STEP) & (rng > 0.7 * (cv2.dilate(depth, k2) - cv2.erode(depth, k2)))
    if not soft.any():
        return depth
    snapped = np.where(depth - lo < hi - depth, lo, hi)
    return np.where(soft, snapped, depth).astype(np.float32)


def despeckle_depth(depth: np.ndarray) -> np.ndarray:
    """Depth with its lone pixels and pairs (no 8-neighbour within STEP_DEPTH of their own
    depth but, for a pair, each other) set to the median of their 3x3: a measured or estimated
    depth map's speckle (a flying pixel left between near and far, a dropout inside a near
    object). Each is a step of its own, so a move shows it as a fragment a depth-map pixel wide
    floating in the revealed band, or a hole punched through the near layer. A line a pixel
    wide (a wire, a spoke) has two such neighbours along it and stays."""
    h, w = depth.shape
    pad = np.pad(depth, 1, mode="edge")
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    similar = [np.abs(pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] - depth) <= STEP_DEPTH for dy, dx in offsets]
    count = np.sum(similar, axis=0, dtype=np.int32)
    lone = count <= 1
    if not lone.any():
        return depth
    # A pixel with one similar neighbour is one of a pair only if that neighbour has no other.
    cpad = np.pad(count, 1, constant_values=9)
    for (dy, dx), sim in zip(offsets, similar):
        lone &= ~sim | (cpad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] <= 1)
    if not lone.any():
        return depth
    return np.where(lone, cv2.medianBlur(depth, 3), depth).astype(np.float32)


class _LazyLevels:
    """A pyramid made from another (`sources`, a list) level by level, on first use, each once
    (`make(source)`; thread-safe): a frame reads one or two levels, and a large photo's finest
    are often never read."""

    def __init__(self, sources: list, make):
        self._sources, self._make = sources, make
        self._made: list = [None] * len(sources)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._made)

    def __getitem__(self, k: int) -> np.ndarray:
        level = self._made[k]
        if level is None:
            with self._lock:
                if self._made[k] is None:
                    self._made[k] = self._make(self._sources[k])
                level = self._made[k]
        return level


def _to_yuva(rgb: np.ndarray) -> np.ndarray:
    """An RGB texture (h, w, 3) in the encoder's BT.709 limited-range YUV (`d2v.encode`'s matrix)
    with a fourth channel (unused: OpenCV warps and remaps 4 channels faster than 3), for frames
    drawn as I420 planes. U and V sit 1/8 level low: the 2x2 average that makes a chroma sample
    (`CameraRenderer._render_planes`) rounds halves up, which would lean them 1/8 level high.
    (A 3-row transform, then the fourth channel: 3.7 ms for a 1000x1744 texture, where one
    4-row transform takes 21: OpenCV has no SIMD path for it.)"""
    return cv2.cvtColor(cv2.transform(rgb, _TO_YUV), cv2.COLOR_RGB2RGBA)


_TO_YUV = RGB_TO_YUV709.copy()
_TO_YUV[1:3, 3] -= 0.125


def _fill_at_level(full: np.ndarray, photo: np.ndarray, level: int, hole: np.ndarray, source: np.ndarray,
                   noise: np.ndarray, anchor: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The photo (`full`, and its pyramid's `level`, `photo`) with `hole` (full size, bool)
    inpainted from `source` (full size, bool), at pyramid `level`: (that level of the filled
    photo's pyramid, where it is not the photo's own pixels). Level 0: `fill_background`.
    Coarser, the fill is made at that level and composed as the pyramid of the photo filled at
    full size has it: pyramid levels are linear in the photo, so a pixel is the photo's pixels
    outside the hole reduced level by level (P) plus the fill times the share of its footprint
    the hole covers (1 - W, W: the mask outside the hole reduced alike). Where W is half or
    more, P / W is the mean of the footprint's pixels outside the hole: known background, the
    fill's source, with none of the near object's colour in it. (Filling every pixel the hole
    touches from the others instead lost a background's thin parts beside a near object, 2 **
    level photo pixels of them, and the edge of the revealed band was 1 dB further from the
    truth.) anchor: (mask, values) at `level`, pixels the fill takes as known with those values
    where they are not (`_fill_window`'s border)."""
    if level == 0:
        image, unknown, sources = photo, hole, source
        if anchor is not None:
            mask, values = anchor
            image = photo.copy()
            image[mask] = values[mask]
            unknown, sources = hole & ~mask, source | mask
        return fill_background(image, unknown, source=sources, noise=noise), hole
    keep = (~hole).view(np.uint8)
    part = cv2.bitwise_and(full, full, mask=keep)  # (P at level 0: the photo outside the hole)
    weight = keep * np.uint8(255)  # (W, as bytes, then a share)
    sources = source.view(np.uint8) * np.uint8(255)
    part, weight, sources = cv2.pyrDown(part), cv2.pyrDown(weight), cv2.pyrDown(sources)  # (bytes: the big one)
    part, weight = part.astype(np.float32), weight.astype(np.float32) * np.float32(1 / 255)
    for _ in range(level - 1):
        part, weight, sources = cv2.pyrDown(part), cv2.pyrDown(weight), cv2.pyrDown(sources)
    touched = weight < np.float32(254.5 / 255)  # (a footprint wholly outside the hole reduces to 1)
    known = ~touched | (weight >= np.float32(0.5))
    # (By flat index, as `d2v.inpaint` does: a boolean index of a few megapixels costs more.)
    at, edge = np.flatnonzero(touched), np.flatnonzero(touched & known)
    parts, weights = part.reshape(-1, 3), weight.ravel()
    image = photo.copy()
    mean = parts[edge] / weights[edge, None] + np.float32(0.5)
    image.reshape(-1, 3)[edge] = np.clip(mean, 0, 255, out=mean).astype(np.uint8)
    fill_source = known & (sources == 255)
    if anchor is not None:
        mask, values = anchor
        add = mask & ~known
        image[add] = values[add]
        known, fill_source = known | add, fill_source | add
    filled = fill_background(image, ~known, source=fill_source, noise=noise)
    mix = parts[at] + filled.reshape(-1, 3)[at] * (np.float32(1) - weights[at])[:, None] + np.float32(0.5)
    out = photo.copy()
    out.reshape(-1, 3)[at] = np.clip(mix, 0, 255, out=mix).astype(np.uint8)
    return out, touched


def _fill_window(levels: list, level: int, hole: np.ndarray, source: np.ndarray, window: tuple
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`_fill_at_level` of pyramid `level` made within `window` (x0, y0, x1, y1, its pixels)
    only; elsewhere the next level's, filled whole, doubled (`cv2.pyrUp`), in the hole only. The
    window is filled with WINDOW_PAD of its pixels more round it (a crop's own pyramid is wrong
    at its border), where that doubled fill is taken as known: so a band the window's edge cuts
    continues what the whole fill makes beyond it, not only the crop's pixels. A push in that
    ends on a fifth of a 12 MP photo fills 3 MP and a fifth of 12, not 12."""
    photo = levels[level]
    coarse, coarse_hole = _fill_at_level(levels[0], levels[level + 1], level + 1, hole, source,
                                         grain_noise(levels[level + 1].shape[:2]))
    h, w = photo.shape[:2]
    doubled = cv2.pyrUp(coarse, dstsize=(w, h))
    doubled_hole = cv2.resize(coarse_hole.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).view(bool)
    out = photo.copy()
    at = np.flatnonzero(doubled_hole)
    out.reshape(-1, 3)[at] = doubled.reshape(-1, 3)[at]
    x0, y0, x1, y1 = window
    k = 1 << level
    cx0, cy0 = max(0, x0 - WINDOW_PAD), max(0, y0 - WINDOW_PAD)
    cx1, cy1 = min(x1 + WINDOW_PAD, levels[0].shape[1] // k), min(y1 + WINDOW_PAD, levels[0].shape[0] // k)
    crop, full = (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 * k, cy1 * k), slice(cx0 * k, cx1 * k))
    inner = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
    ring = np.ones((cy1 - cy0, cx1 - cx0), bool)
    ring[inner] = False
    filled, touched = _fill_at_level(levels[0][full], np.ascontiguousarray(photo[crop]), level,
                                     np.ascontiguousarray(hole[full]), np.ascontiguousarray(source[full]),
                                     grain_noise((cy1 - cy0, cx1 - cx0)), anchor=(ring, doubled[crop]))
    out[y0:y1, x0:x1] = filled[inner]
    doubled_hole[y0:y1, x0:x1] = touched[inner]
    return out, doubled_hole


def _stack(photo: np.ndarray, background: np.ndarray, offset: int) -> np.ndarray:
    """The photo above its background (both (h, w, 3)), the background's first row `offset`,
    the rows between filled with both reflected (half each)."""
    h = photo.shape[0]
    stacked = np.empty((offset + h,) + photo.shape[1:], np.uint8)
    stacked[:h] = photo
    stacked[offset:] = background
    top = (offset - h) // 2
    stacked[h: h + top] = photo[::-1][:top] if top <= h else photo[-1]
    rest = offset - h - top
    stacked[h + top: offset] = background[:rest][::-1] if rest <= h else background[0]
    return stacked


def _over_corners(op, grid: np.ndarray) -> np.ndarray:
    """`op` (a binary ufunc: np.minimum, np.logical_or, ...) over each grid cell's four
    corners: (H - 1, W - 1) from an (H, W) grid of points."""
    return op(op(grid[:-1, :-1], grid[:-1, 1:]), op(grid[1:, :-1], grid[1:, 1:]))


def _erode_square(image: np.ndarray, k: int) -> np.ndarray:
    """cv2.erode of a float32 image with a k x k square (k odd; pixels past the edges ignored),
    exactly, in time nearly independent of k: OpenCV's erosion costs time in proportion to k
    (170 ms for the hidden background's 1281-pixel window on a 1000x872 depth map, 45 ms so)."""
    if k <= _ERODE_CV_MAX:
        return cv2.erode(image, np.ones((k, k), np.uint8))
    return _min_lines(_min_lines(image, k, 1), k, 0)


def _min_lines(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """The minimum over windows of k (odd) centred on each element along `axis` of a 2-D
    float32 array, elements past the ends ignored: padded with +inf, then windows of 1, 2,
    4, ... elements, each the minimum of two of the one before (a sparse table), and each
    output window the minimum of two overlapping ones of the largest power of two within k."""
    n, r = a.shape[axis], k // 2
    if k >= 2 * n - 1:  # every window holds the whole line
        return np.repeat(a.min(axis=axis, keepdims=True), n, axis=axis)
    def cut(m, lo, length):
        return m[:, lo:lo + length] if axis == 1 else m[lo:lo + length]
    pad = ((0, 0), (r, r)) if axis == 1 else ((r, r), (0, 0))
    m, w = np.pad(a, pad, constant_values=np.inf), 1
    while 2 * w <= k:
        length = m.shape[axis] - w
        m, w = np.minimum(cut(m, 0, length), cut(m, w, length)), 2 * w
    return np.minimum(cut(m, 0, n), cut(m, k - w, n))


def _spikes(depth: np.ndarray) -> np.ndarray:
    """(H, W) bool: where `depth` stands out toward the camera by more than STEP_DEPTH / 2
    from what a grey opening of SPIKE_PX (the widest such sliver) leaves: narrow peaks only."""
    k = np.ones((SPIKE_PX, SPIKE_PX), np.uint8)
    return depth - cv2.morphologyEx(depth, cv2.MORPH_OPEN, k) > STEP_DEPTH / 2


def _near_islands(depth: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Of the fill's sources (`known`, bool), the small pieces (under ISLAND_SHARE of the map,
    cut off from the rest by the hole) that lie nearer than the far side around them, by more
    than STEP_DEPTH / 2 (uint8 0/1): a part of a near object (a lamp, a chrome highlight)
    that is the far side only of a still nearer part beside it. As sources they put blobs of
    the near object's colour and depth into the hidden background; the far side seen through
    a gap in a near object (floor between spokes, a wall through a bench's slats) lies at the
    depth around it and stays a source."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(known.view(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < ISLAND_SHARE * depth.size
    small[0] = False  # (the background label: not a source)
    if not small.any():
        return np.zeros(depth.shape, np.uint8)
    pieces = small.take(labels)
    around = fill_smooth(depth, pieces, source=known)
    # (Summed over the pieces' pixels only: elsewhere `around` is `depth`, and adds 0.)
    at = np.flatnonzero(pieces)
    lift = depth.ravel().take(at) - around.ravel().take(at)
    nearer = np.bincount(labels.ravel().take(at), lift, n) / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    return (small & (nearer > STEP_DEPTH / 2)).take(labels).view(np.uint8)


def _torn(layers: _Layers, px, py, s, Bx, By) -> np.ndarray:
    """Rays (any shape) whose hit (px, py) lies on a depth step between its two sides: more
    than TEAR_PX depth-map pixels from where the step's near side (the 3x3 minimum of s) and
    its far side (the maximum) would put it. The move pulled the step apart there: the ray
    sees what the photo hid. On a layer, or a slope, one side is where the ray already is."""
    lo, hi = _sample(layers.s_min, px, py), _sample(layers.s_max, px, py)
    b = np.hypot(Bx, By)
    inv = 1.0 / s
    return (b * (1.0 / lo - inv) > TEAR_PX) & (b * (inv - 1.0 / hi) > TEAR_PX) & (hi - lo > layers.s_step)


def _march_points(s_map, ax, ay, bx, by, u_near: float, u_far: float, step_px: float, max_steps: int,
                  refine: int = _EDGE_REFINE) -> np.ndarray:
    """The layer s each ray (1-D float32 arrays: Q(u) = a + u b in depth-map pixels, u = 1/s)
    meets first, marching u from u_near to u_far in even steps of about step_px pixels along
    the longest ray (at most max_steps), then `refine` bisections of the step where it met
    the surface and the secant in what is left. A ray that meets nothing ends on u_far. As in
    `_depth_maps`' march: one step at a time over all rays (more than fit one row of cv2.remap's
    maps padded to whole rows of _RAY_COLS, so each lookup is one cv2.remap without a copy:
    `_fold`), then the first step behind (`_first_behind`)."""
    n_rays = np.size(ax)
    if n_rays == 0:
        return np.empty(0, np.float32)
    size = _ray_count(n_rays)
    ax, ay, bx, by = (_pad_rays(v, size) for v in (ax, ay, bx, by))
    u_near, u_far = np.float32(u_near), np.float32(u_far)
    span = float(np.sqrt(np.max(bx * bx + by * by))) * abs(float(u_near) - float(u_far))
    n = int(np.clip(math.ceil(span / step_px), 1, max_steps))
    du = (u_far - u_near) / np.float32(n)
    f = np.empty((n + 1, size), np.float32)  # f[j]: the layer seen at step j less the step's
    mx, my = np.empty(size, np.float32), np.empty(size, np.float32)
    for j in range(n + 1):
        u = u_near + du * np.float32(j)
        cv2.scaleAdd(bx, float(u), ax, dst=mx)
        cv2.scaleAdd(by, float(u), ay, dst=my)
        np.subtract(_sample(s_map, mx, my), np.float32(1.0) / u, out=f[j])
    k = _first_behind(f[:n] > 0)
    u = u_near + du * k.astype(np.float32)
    fk = f.ravel()[k.astype(np.intp) * size + np.arange(size)]
    i = np.flatnonzero((k > 0) & (fk < 0))  # met the surface between two steps: refine there
    if i.size:
        b, fb = u[i], fk[i]
        a = b - du
        fa = f.ravel()[(k[i].astype(np.intp) - 1) * size + i]
        axi, ayi, bxi, byi = ax[i], ay[i], bx[i], by[i]
        half = np.float32(0.5)
        for _ in range(refine):
            m = (a + b) * half
            fm = _sample(s_map, axi + m * bxi, ayi + m * byi) - np.float32(1.0) / m
            front = fm > 0
            a, fa = _pick(front, m, a), _pick(front, fm, fa)
            b, fb = _pick(front, b, m), _pick(front, fb, fm)
        den = fa - fb
        ok = den > 1e-9
        u[i] = _pick(ok, a + (b - a) * fa / _pick(ok, den, np.ones_like(den)), b)
    return (np.float32(1.0) / u[:n_rays]).astype(np.float32)


def _first_behind(ahead: np.ndarray) -> np.ndarray:
    """Per ray, the first march step at or behind the surface: the number of steps in front
    of it before the first that is not (ahead[j]: step j in front; len(ahead) when all are,
    the last step, the farthest layer, where every ray ends). Whole passes over the rays, no
    masked writes (numpy's logical_and.accumulate along this axis is 10x slower)."""
    k, alive = np.zeros(ahead.shape[1:], np.int32), np.ones(ahead.shape[1:], bool)
    for row in ahead:
        alive &= row
        k += alive
    return k


def _settle(u_map, ax, ay, bx, by, tb, u0, sides=None) -> tuple[np.ndarray, np.ndarray]:
    """Rays (1-D: Q(u) = a + b u, depth-map pixels, u = 1/s) started at layer u0, moved to the
    layer of the depth-map pixel they see there, then to the layer they see from that one
    (a fixed point: exact on a flat layer at once, close on a gentle slope): (u, whether the
    ray meets the surface there: what it sees lies within TEAR_PX pixels (tb: TEAR_PX / |b|,
    in u) of where it is). What a ray sees is the depth-map pixel it falls in: between the
    pixels of a step, bilinear depth would be a ramp half way between near and far (a flying
    pixel) that every ray grazing the step meets; the pixel's own depth puts the ray on one
    side or the other. On a slope (the two agree within TEAR_PX) the bilinear depth is the
    finer. u_map: 1/s.

    sides (`_Layers.u_sides`, None: as above): what a ray sees is then the side of the step
    whose layer the bilinear depth at its point lies nearer to (`_side`): the edge runs along
    the bilinear depth's half-way contour, through the depth map's pixel corners, instead of
    along their borders, so a diagonal or curved edge is not a staircase of depth-map pixels
    (magnified by a move that shows the photo larger)."""
    u = _sample(u_map, ax + bx * u0, ay + by * u0, cv2.INTER_NEAREST)
    if sides is not None:
        seen = _side(sides, u_map, ax + bx * u, ay + by * u, tb)
        return seen, np.abs(seen - u) <= tb
    x, y = ax + bx * u, ay + by * u
    seen = _sample(u_map, x, y, cv2.INTER_NEAREST)
    smooth = _sample(u_map, x, y)
    return _pick(np.abs(smooth - seen) <= tb, smooth, seen), np.abs(seen - u) <= tb


def _side(sides: np.ndarray, u_map: np.ndarray, x: np.ndarray, y: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """The layer (u) a ray at depth-map points (x, y) sees (`_settle`): the bilinear u, but where
    it lies between the two sides of a step (`_Layers.u_sides`: their u), more than tb / 2 from
    each (a flying pixel's value, no layer at all), the side it lies nearer to: the depth-map
    pixel's own u where that pixel is on this side (exact on a sloping side), else the side's
    (the 3x3 extreme). So the edge follows the bilinear depth's half-way contour, which cuts
    the depth map's pixel corners, instead of the pixels' borders. (The sides are looked up only
    where the bilinear u is more than tb / 2 from the pixel's own, beside a step: on the
    motorcycle the render's CPU rose 0.6-2.5 %, bench/RESULTS.md.)"""
    own = _sample(u_map, x, y, cv2.INTER_NEAREST)
    u = _sample(u_map, x, y)
    half = np.float32(0.5) * tb
    i = np.flatnonzero(np.abs(u - own) > half)
    if i.size:
        ui, oi, hi_ = u[i], own[i], half[i]
        v = _sample(sides, x[i], y[i])
        lo, hi = np.ascontiguousarray(v[:, 0]), np.ascontiguousarray(v[:, 1])
        between = ((ui - lo) > hi_) & ((hi - ui) > hi_)
        near = (ui - lo) > (hi - ui)
        side, other = _pick(near, hi, lo), _pick(near, lo, hi)
        u[i] = _pick(between, _pick(np.abs(oi - side) < np.abs(oi - other), oi, side), ui)
    return u


class _EdgeRays(NamedTuple):
    """One frame's rays through any output points, for the edge pixels. A ray's point on the
    depth map at layer u = 1/s is Q(u) = A + u B (as in `_depth_maps`), A and B affine in the
    ray's slope e = (dx/dz, dy/dz): A = a1 e + a0, B = b1 e + b0 (per axis)."""
    M: np.ndarray  # R^T K^-1, float32: output point (x, y, 1) -> ray direction
    a0: np.ndarray  # (2,) float32 each
    a1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    to_image: np.ndarray  # (2,) image pixels per depth-map pixel

    @staticmethod
    def of(frame: CameraFrame, layers: _Layers, image_w: int, image_h: int) -> "_EdgeRays":
        C, c0 = frame.camera_center(), layers.c0
        dh, dw = layers.s.shape
        sc = np.array([dw / image_w, dh / image_h])
        f32 = lambda v: np.asarray(v, np.float32)  # noqa: E731
        # In depth-map OpenCV pixels (as `_depth_maps`): A = (c0 - c0z e) sc - 0.5, B = ((C - c0) + (c0z - Cz) e) sc.
        return _EdgeRays(f32(frame.R().T @ np.linalg.inv(frame.K())), f32(c0[:2] * sc - 0.5), f32(-c0[2] * sc),
                         f32((C[:2] - c0[:2]) * sc), f32((c0[2] - C[2]) * sc), f32(1.0 / sc))

    def cast(self, layers: _Layers, x: np.ndarray, y: np.ndarray, near_s: np.ndarray, far_s: np.ndarray):
        """Rays through output points (x, y) (1-D, d2v coordinates), each with its cell's
        candidate layers (s): (x, y in the stacked texture (level 0, OpenCV), torn, rim, u:
        the layer it sees, 1/s, on the hidden background where torn). The nearer candidate
        wins where the ray meets it (near things occlude), else the farther; a ray that meets
        neither met a step between its sides: it sees the hidden background; a rim ray sees
        the far side just beside a step, in the hidden background's colours. _RAY_CHUNK rays
        at a time: each of the many array operations then works in cache (twice as fast)."""
        n = x.size
        qx, qy, u = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
        torn, rim = np.empty(n, bool), np.empty(n, bool)
        for a in range(0, n, _RAY_CHUNK):
            b = min(n, a + _RAY_CHUNK)
            qx[a:b], qy[a:b], torn[a:b], rim[a:b], u[a:b] = self._cast(layers, x[a:b], y[a:b], near_s[a:b], far_s[a:b])
        return qx, qy, torn, rim, u

    def ends(self, x: np.ndarray, y: np.ndarray):
        """Rays through output points (x, y) (d2v coordinates): A and B of Q(u) = A + u B,
        depth-map pixels (OpenCV), float32 (Ax, Ay, Bx, By). Each an affine function of the
        ray's slope, one cv2.addWeighted pass (numpy takes two or three); a camera that does
        not turn (no perspective in M's last row) makes the slopes affine in (x, y) too."""
        M = self.M.astype(np.float64)
        a1, a0, b1, b0 = (v.astype(np.float64) for v in (self.a1, self.a0, self.b1, self.b0))
        if M[2, 0] == 0.0 and M[2, 1] == 0.0 and abs(M[2, 2]) >= 1e-9:
            k = 1.0 / M[2, 2]  # e = (M[:2, 0] x + M[:2, 1] y + M[:2, 2]) k
            return tuple(_affine(x, y, g * M[i, 0] * k, g * M[i, 1] * k, g * M[i, 2] * k + h)
                         for i, g, h in ((0, a1[0], a0[0]), (1, a1[1], a0[1]), (0, b1[0], b0[0]), (1, b1[1], b0[1])))
        dz = _affine(x, y, M[2, 0], M[2, 1], M[2, 2])
        dz[np.abs(dz) < 1e-9] = 1e-9
        inv = np.float32(1.0) / dz
        ex, ey = _affine(x, y, M[0, 0], M[0, 1], M[0, 2]) * inv, _affine(x, y, M[1, 0], M[1, 1], M[1, 2]) * inv
        return (_affine(ex, ex, a1[0], 0.0, a0[0]), _affine(ey, ey, a1[1], 0.0, a0[1]),
                _affine(ex, ex, b1[0], 0.0, b0[0]), _affine(ey, ey, b1[1], 0.0, b0[1]))

    def texture(self, px: np.ndarray, py: np.ndarray, row0) -> tuple[np.ndarray, np.ndarray]:
        """Depth-map points -> the stacked texture (level 0, OpenCV), row0 rows down (an array,
        or 0)."""
        sx, sy = float(self.to_image[0]), float(self.to_image[1])
        qx = _affine(px, px, sx, 0.0, 0.5 * sx - 0.5)
        qy = _affine(py, row0, sy, 1.0, 0.5 * sy - 0.5) if np.ndim(row0) else _affine(py, py, sy, 0.0, 0.5 * sy - 0.5 + row0)
        np.clip(qx, -_FIXED_MAP_LIMIT, _FIXED_MAP_LIMIT, out=qx)
        np.clip(qy, -_FIXED_MAP_LIMIT, _FIXED_MAP_LIMIT, out=qy)
        return qx, qy

    def _cast(self, layers: _Layers, x: np.ndarray, y: np.ndarray, near_s: np.ndarray, far_s: np.ndarray):
        """`cast` for up to _RAY_CHUNK rays, more than fit one row of cv2.remap's maps padded to
        whole rows of _RAY_COLS, so each depth lookup is one cv2.remap without a copy (`_fold`)."""
        n = x.size
        size = _ray_count(n)
        x, y = _pad_rays(x, size), _pad_rays(y, size)
        u_near, u_far = np.float32(1.0) / _pad_rays(near_s, size), np.float32(1.0) / _pad_rays(far_s, size)
        Ax, Ay, Bx, By = self.ends(x, y)
        tb = _tear_band(Bx, By)
        u, ok = _settle(layers.u, Ax, Ay, Bx, By, tb, u_near, layers.u_sides)
        torn = ~ok
        if (i := np.flatnonzero(torn)).size:
            u[i], ok_far = _settle(layers.u, Ax[i], Ay[i], Bx[i], By[i], tb[i], u_far[i], layers.u_sides)
            torn[i] = ~ok_far
        px, py = Ax + Bx * u, Ay + By * u
        if layers.bg is None:
            torn[:] = False
            row0 = np.zeros_like(px)  # where in the stacked texture: 0 the photo, bg.offset its background
            rim = np.zeros(px.shape, bool)
        else:
            # The far side of a step within RIM_PX of it: the photo's pixels there mix in the
            # near layer's colours (an anti-aliased edge, a depth map a pixel off), which the
            # near layer, moved away, no longer covers. They show the hidden background's
            # colours (the photo's own elsewhere: it differs only where it was inpainted).
            rim_u = _sample(layers.u_rim, px, py)
            nearer = rim_u - u
            rim = (nearer > tb) & (nearer > np.float32(layers.s_step) * u * rim_u) & ~torn
            row0 = rim * np.float32(layers.bg.offset)  # (a product: a masked write takes 10x longer)
            if (i := np.flatnonzero(torn)).size:
                u[i], _ = _settle(layers.bg_u, Ax[i], Ay[i], Bx[i], By[i], tb[i], u_far[i])
                px[i], py[i] = Ax[i] + Bx[i] * u[i], Ay[i] + By[i] * u[i]
                row0[i] = layers.bg.offset
        qx, qy = self.texture(px, py, row0)
        return qx[:n], qy[:n], torn[:n], rim[:n], u[:n]


def _reveal(rays: "_EdgeRays", layers: _Layers, i: np.ndarray, xc, yc, far_c, cast: tuple) -> None:
    """Edge pixels i (positions in the edge pixels) whose ray met the photo's layer while the
    rays of all four of their neighbours saw what the photo hid (`_across` finds them): a
    fragment a pixel wide floating in a revealed band (a ray that grazed a corner of the near
    layer, a depth-map pixel left between near and far), which a move makes flicker. They are
    taken as revealed: their rays are cast again on the hidden background, in place in `cast`
    (the arrays `_EdgeRays.cast` returned)."""
    qx, qy, torn1, rim1, u1 = cast
    Ax, Ay, Bx, By = rays.ends(np.ascontiguousarray(xc[i]), np.ascontiguousarray(yc[i]))
    u, _ = _settle(layers.bg_u, Ax, Ay, Bx, By, _tear_band(Bx, By), np.float32(1.0) / far_c[i])
    qx[i], qy[i] = rays.texture(Ax + Bx * u, Ay + By * u, np.float32(layers.bg.offset))
    torn1[i], rim1[i], u1[i] = True, False, u


def _tear_band(Bx: np.ndarray, By: np.ndarray) -> np.ndarray:
    """TEAR_PX in u for rays whose point moves (Bx, By) depth-map pixels per unit of u: how far
    apart two layers a ray meets must be to tear (inf: a ray without parallax never tears)."""
    with np.errstate(divide="ignore"):
        return np.float32(TEAR_PX) / np.sqrt(Bx * Bx + By * By)


def _bends(grid: np.ndarray, tol: float) -> np.ndarray:
    """Grid points (bool, grid shape) where the map (grid: (ny, nx, 2)) leaves the straight
    line of its neighbours, along x or y, by more than tol: bilinear upsampling would bend
    the picture there (a depth edge, a revealed band's border)."""
    bent = np.zeros(grid.shape[:2], bool)
    d2x = np.abs(grid[:, 2:] - 2.0 * grid[:, 1:-1] + grid[:, :-2])
    d2y = np.abs(grid[2:] - 2.0 * grid[1:-1] + grid[:-2])
    d2x = np.maximum(d2x[..., 0], d2x[..., 1]) > tol  # (numpy reduces a length-2 axis slowly)
    d2y = np.maximum(d2y[..., 0], d2y[..., 1]) > tol
    bent[:, 1:-1] |= d2x
    bent[1:-1] |= d2y
    return bent


def _across(ys, xs, width: int, height: int, torn: np.ndarray, u: np.ndarray, s_step: float,
            scratch: dict, reveal=None) -> tuple[np.ndarray, np.ndarray]:
    """The edge pixels (rows ys, columns xs; each centre ray torn or not, on layer u) that
    have a 4-neighbour across a step among the edge pixels, and that neighbour (positions in
    ys): one on the other side of a depth step (layers more than s_step apart in s), or one
    torn where the pixel is not (or the reverse); of several, the farthest in s. (The cells
    round the edge pixels lie on one layer each: none of them is across.)

    reveal (None: not asked): called first with the pixels that are not torn while all four
    of their neighbours are (fragments: `_reveal`), which it makes torn in place; the answer
    is then the one for the pixels as they are after it (the fragments and their neighbours
    looked at again: a handful a frame, not another pass)."""
    n, wide = ys.size, width + 2
    at = ((ys + 1) * wide + xs + 1).astype(np.intp)  # in a frame-sized image with a border (intp: 3x faster gathers)
    label = _pick(torn, np.full(n, _TORN, np.float32), np.float32(1.0) / u)  # all torn pixels alike: no layer
    # Each pixel's 4-neighbours' labels, NaN off the edge pixels (fmax and fmin pass it over):
    # four gathers, where a dilation and an erosion of the whole frame cost more.
    # (NaN everywhere between calls: each call puts back what it wrote, not a frame-sized fill.)
    image = scratch.get("labels")
    if image is None or image.shape != (height + 2, wide):
        image = scratch["labels"] = np.full((height + 2, wide), np.nan, np.float32)
    flat = image.ravel()
    flat[at] = label
    offsets = (1, -1, wide, -wide)  # right, left, below, above
    around = [flat[at + d] for d in offsets]
    most = np.fmax(np.fmax(around[0], around[1]), np.fmax(around[2], around[3]))
    least = np.fmin(np.fmin(around[0], around[1]), np.fmin(around[2], around[3]))
    pos = _buffer(scratch, "edge_pos", image.shape, np.int32).ravel()
    pos[at] = np.arange(n, dtype=np.int32)
    if reveal is not None and (i := np.flatnonzero((least == _TORN) & ~torn)).size:
        # (least: a NaN neighbour, off the edge pixels, is passed over: all four asked again)
        i = i[(around[0][i] == _TORN) & (around[1][i] == _TORN) & (around[2][i] == _TORN) & (around[3][i] == _TORN)]
        if i.size:
            reveal(i)
            label[i] = _TORN
            flat[at[i]] = _TORN
            # What the fragments' neighbours (edge pixels all) see around them has changed.
            again = np.unique(np.concatenate([i] + [pos[at[i] + d] for d in offsets]).astype(np.intp))
            for k, d in enumerate(offsets):
                around[k][again] = flat[at[again] + d]
            a = [around[k][again] for k in range(4)]
            most[again] = np.fmax(np.fmax(a[0], a[1]), np.fmax(a[2], a[3]))
            least[again] = np.fmin(np.fmin(a[0], a[1]), np.fmin(a[2], a[3]))
    flat[at] = np.nan
    up, down = most - label, label - least
    aa = np.flatnonzero(np.fmax(up, down) > s_step)  # (NaN: no neighbour among the edge pixels)
    # Which neighbour holds that label: the first that does.
    target = _pick(up[aa] >= down[aa], most[aa], least[aa])
    code = sum((around[k][aa] == target).view(np.uint8) << k for k in range(4))
    nb = at[aa] + _FIRST_HIT[code, 0] + wide * _FIRST_HIT[code, 1]
    return aa, pos[nb].astype(np.intp)


_TORN = np.float32(1000.0)  # `_across`'s label of a torn pixel: beyond any layer's s


# Of the 4-neighbours (right, left, below, above: bits 0-3 of a code), the first that holds
# the label: (column offset, row offset) for each code.
_FIRST_HIT = np.array([next(((1, 0), (-1, 0), (0, 1), (0, -1))[b] for b in range(4) if code >> b & 1)
                       if code else (0, -1) for code in range(16)], np.intp)


def _matte(rays: "_EdgeRays", layers: _Layers, x, y, own, other, gap_u):
    """An edge across output pixels (x, y): where the pixel's own centre ray sees one side of
    a step and a neighbour's the other (own: (u, torn), other: (u, torn, rim) of those rays),
    the other side's point at this pixel (in the stacked texture) and its share of the
    pixel's colour. The front side is the nearer layer (a torn side is what a layer hid, never
    in front); its share is how fully the depth map shows it at its point, bilinear: 1 inside,
    0 a depth-map pixel past the step, so the edge is anti-aliased over about a depth-map
    pixel, moving smoothly as the camera does, and colours come from the two sides only (never
    from source points between them: no dark fringe). gap_u: the step's height in u where the
    two rays do not tell it (one torn)."""
    u_own, torn_own = own
    u_oth, torn_oth, rim_oth = other
    Ax, Ay, Bx, By = rays.ends(x, y)
    offset = np.float32(0 if layers.bg is None else layers.bg.offset)
    ox, oy = rays.texture(Ax + Bx * u_oth, Ay + By * u_oth, offset * (torn_oth | rim_oth))
    own_front = ~torn_own & (torn_oth | (u_own >= u_oth))
    u_front = _pick(own_front, u_own, u_oth)
    seen = _sample(layers.u, Ax + Bx * u_front, Ay + By * u_front)
    gap = np.maximum(np.maximum(np.abs(u_own - u_oth), np.abs(gap_u)), np.float32(1e-6))
    cover = np.float32(1.0) - np.minimum(np.abs(seen - u_front) / gap, np.float32(1.0))
    return ox, oy, _pick(own_front, np.float32(1.0) - cover, cover)


def _corner_rays(frame: CameraFrame, layers: _Layers, width: int, height: int):
    """The rays through the output's corners, as in `_depth_maps`: a ray's image point is A + B u
    over the layers in front of the camera, u = 1/s from u_lo to u_hi (the plane's 1 among
    them): (corners (3, 4), A, B (2, 4), u_lo, u_hi), image pixels; None where a corner's ray
    does not meet the layers' side."""
    C, c0 = frame.camera_center(), layers.c0
    s_hi = layers.far
    s_lo = min(s_hi, max(layers.near, 1.0 - C[2] / c0[2] + 1e-3))
    corners = np.array([[0.0, width, width, 0.0], [0.0, 0.0, height, height], [1.0, 1.0, 1.0, 1.0]])
    d = frame.R().T @ np.linalg.inv(frame.K()) @ corners
    if np.any(d[2] <= 1e-9):
        return None
    A = c0[:2, None] - c0[2] * (d[:2] / d[2])
    B = (C[:2, None] - c0[:2, None]) + (c0[2] - C[2]) * d[:2] / d[2]
    return corners, A, B, min(1.0 / s_hi, 1.0), max(1.0 / s_lo, 1.0)


def _layer_spread(frame: CameraFrame, layers: _Layers, width: int, height: int) -> tuple[float, float]:
    """How far a ray's image point moves between the nearest layer in front of the camera
    and the farthest, at the output's corners (where it is largest): (in image pixels, in
    output pixels there). inf where a corner's ray does not meet the layers' side."""
    if np.linalg.norm(frame.camera_center() - layers.c0) <= 1e-6 * abs(layers.c0[2]):
        return 0.0, 0.0
    rays = _corner_rays(frame, layers, width, height)
    if rays is None:
        return math.inf, math.inf
    corners, _, B, u_lo, u_hi = rays
    G = np.linalg.inv(camera.frame_homography(frame))
    scale = local_scale(G, corners[0], corners[1])  # image pixels per output pixel
    moved = np.hypot(*B) * (u_hi - u_lo)
    return float(np.max(moved)), float(np.max(moved / np.maximum(scale, 1e-9)))


def _layer_box(frame: CameraFrame, layers: _Layers, width: int, height: int) -> np.ndarray:
    """Where on the photo the frame's rays look, at any of the layers in front of the camera:
    (x0, y0, x1, y1), image pixels (inf where a corner's ray does not meet the layers' side).
    At a layer the frame sees a quadrilateral of the photo whose corners move linearly in u
    (`_corner_rays`), so the box of the corners at the nearest and the farthest layer holds
    every point it reads."""
    rays = _corner_rays(frame, layers, width, height)
    if rays is None:
        return np.array([-math.inf, -math.inf, math.inf, math.inf])
    _, A, B, u_lo, u_hi = rays
    points = np.hstack([A + B * u_lo, A + B * u_hi])
    return np.concatenate([points.min(axis=1), points.max(axis=1)])


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the depth warp is computed: every _DEPTH_GRID_STEP output pixels, one point past
    each edge, at the places `_upsample`'s resize puts them (d2v coordinates, x and y)."""
    step = _DEPTH_GRID_STEP
    nx, ny = -(-width // step) + 2, -(-height // step) + 2
    offset = (step - 1) / 2.0 - step + 0.5  # OpenCV pixel (step - 1) / 2 - step, in d2v coordinates
    return np.arange(nx) * float(step) + offset, np.arange(ny) * float(step) + offset


def _grid_affine(m: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """m[0] x + m[1] y + m[2] at every point of the grid (columns gx, rows gy): float64."""
    d = np.add.outer(m[1] * gy, m[0] * gx)
    d += m[2]
    return d


def _ray_origin(e: np.ndarray, c: float, cz: float, scale: float) -> np.ndarray:
    """(c - cz e) scale - 0.5 as float32 (`_depth_maps`' A along one axis), computed in one
    temporary: bit for bit the expression's values."""
    t = np.multiply(e, cz)
    np.subtract(c, t, out=t)
    t *= scale
    t -= 0.5
    return t.astype(np.float32)


def _upsample(grid: np.ndarray, width: int, height: int, scratch: dict | None = None) -> np.ndarray:
    """A map on `_grid` at every output pixel, bilinear: cv2.resize by exactly the grid step
    samples output pixel x at grid coordinate (x + 0.5) / step - 0.5, which is where `_grid`
    put it, and the points past the edges keep every pixel interpolated, none extrapolated.
    With scratch, into a buffer kept there (valid until the next call with it)."""
    step = _DEPTH_GRID_STEP
    size = (grid.shape[0] * step, grid.shape[1] * step) + grid.shape[2:]
    dst = None if scratch is None else _buffer(scratch, "upsampled", size, grid.dtype)
    big = cv2.resize(grid, (size[1], size[0]), dst=dst, interpolation=cv2.INTER_LINEAR)
    return big[step:step + height, step:step + width]


def _cell_weights() -> np.ndarray:
    """Bilinear weights of a cell's corners (top-left, top-right, bottom-left, bottom-right)
    at its step * step pixels, row by row: (step * step, 4) float32."""
    f = (np.arange(_DEPTH_GRID_STEP) + 0.5) / _DEPTH_GRID_STEP
    fy, fx = np.repeat(f, f.size), np.tile(f, f.size)
    return np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1).astype(np.float32)


_CELL_WEIGHTS = _cell_weights()


def _photo_share() -> np.ndarray:
    """For each set of a cell's corners (bit k of the index: corner k, in `_cell_weights`'
    order), each of its pixels' bilinear share of those corners: (16, step * step) float32."""
    corners = (np.arange(16)[:, None] >> np.arange(4)) & 1
    return corners.astype(np.float32) @ _CELL_WEIGHTS.T


_PHOTO_SHARE = _photo_share()
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _cell_pixels(cy: np.ndarray, cx: np.ndarray, width: int, height: int):
    """The output pixels of grid cells (rows cy, columns cx), cell by cell: pixel x lies in the
    cell of grid points (x + 2) // step and the next (see `_grid`), so cell c holds pixels
    c * step - 2 to c * step + 1. (rows, columns) int32 of all, and which are inside the
    frame (None when all are: the callers keep per-pixel values of their own in step)."""
    step = _DEPTH_GRID_STEP
    oy, ox = np.divmod(np.arange(step * step, dtype=np.int32), np.int32(step))
    ys = (cy.astype(np.int32)[:, None] * np.int32(step) + (oy - 2)).ravel()
    xs = (cx.astype(np.int32)[:, None] * np.int32(step) + (ox - 2)).ravel()
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    return ys, xs, (None if inside.all() else inside)


def _affine(x: np.ndarray, y: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """a x + b y + c for 1-D float32 arrays, in one cv2.addWeighted pass (float32)."""
    return cv2.addWeighted(x.reshape(1, -1), float(a), y.reshape(1, -1), float(b), float(c)).reshape(-1)


def _pick(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.where(cond, a, b) for float32 arrays, exactly (by their bits), and many times
    faster: numpy's where and masked copies are slow on arrays this size."""
    ai, bi = a.view(np.int32), b.view(np.int32)
    return (bi + cond * (ai - bi)).view(np.float32)


def _fold(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (x, y) (1-D, or 2-D) as cv2.remap's maps, which take at most _REMAP_SIDE a side:
    float32 points as they are, in one row if 1-D (no copy); longer lists folded into rows of
    _RAY_COLS (without a copy where they fold exactly: `_EdgeRays.cast` pads its rays so)."""
    n = x.size
    if x.dtype == y.dtype == np.float32 and max(x.shape) <= _REMAP_SIDE:
        return (x, y) if x.ndim == 2 else (x.reshape(1, n), y.reshape(1, n))
    cols = _RAY_COLS
    rows = -(-n // cols)
    if n == rows * cols and x.dtype == y.dtype == np.float32:
        return x.reshape(rows, cols), y.reshape(rows, cols)
    mx, my = np.zeros(rows * cols, np.float32), np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = np.ravel(x), np.ravel(y)
    return mx.reshape(rows, cols), my.reshape(rows, cols)


def _ray_count(n: int) -> int:
    """How many rays to cast for n, so that each depth lookup is one cv2.remap without a copy
    (`_fold`): n where one row of its maps holds them, else n padded to whole rows of _RAY_COLS."""
    return n if n <= _REMAP_SIDE else -(-n // _RAY_COLS) * _RAY_COLS


def _pad_rays(v: np.ndarray, size: int) -> np.ndarray:
    """A 1-D array of rays as float32 of `size` (`_ray_count`), padded with its last value."""
    if v.size == size:
        return np.ascontiguousarray(v, np.float32)
    out = np.empty(size, np.float32)
    out[:v.size], out[v.size:] = v, v[-1]
    return out


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray, interpolation: int = cv2.INTER_LINEAR,
            border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """image (one channel; or (h, w, c): then c values a point) at the points (x, y) (1-D or
    2-D, OpenCV pixels; x's shape out), bilinear (or as `interpolation` says), edges
    replicated (or as `border` says): cv2.remap with the points as its maps (`_fold`)."""
    if not x.size:
        return np.empty(x.shape + image.shape[2:], image.dtype)
    mx, my = _fold(x, y)
    out = cv2.remap(image, mx, my, interpolation, borderMode=border)
    return out.reshape((-1,) + image.shape[2:])[:x.size].reshape(x.shape + image.shape[2:])


def _buffer(scratch: dict, key: str, shape: tuple, dtype) -> np.ndarray:
    """An array of this shape and type kept in scratch under key, made on first use."""
    buf = scratch.get(key)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
        buf = scratch[key] = np.empty(shape, dtype)
    return buf


def _moved(frame: CameraFrame, layers: _Layers | None, width: int, height: int, index: int | None = None) -> bool:
    """Whether the frame sees depth as parallax: there is depth, and the camera left the
    reference centre (a pure rotation or lens zoom there: the plane homography is exact) far
    enough that somewhere its layers, the plane among them, part by SUBPIXEL_PARALLAX output
    pixels or more (the first frames of a move, eased in, need not march a ray). index: the
    frame's place in the trajectory the layers were made for, whose answers they keep
    (`_Layers.moved`)."""
    if layers is None:
        return False
    if index is not None and layers.moved is not None:
        return layers.moved[index]
    return _layer_spread(frame, layers, width, height)[1] >= SUBPIXEL_PARALLAX


def _pseudo_depth(trajectory: CameraTrajectory) -> bool:
    """Whether a renderer without a depth map gives this trajectory a `pseudo_depth` (see
    `CameraRenderer._trajectory_layers`)."""
    effect = trajectory.effect
    return effect in PSEUDO_DEPTH_EFFECTS and effect in PIVOT_EFFECTS and trajectory.subject is not None


def _camera_at(frames: list[CameraFrame], t: float) -> CameraFrame:
    """The camera at fractional frame time t, clamped to the trajectory."""
    t = min(max(t, 0.0), len(frames) - 1.0)
    j = min(int(math.floor(t)), len(frames) - 2) if len(frames) > 1 else 0
    if len(frames) == 1 or t == j:
        return frames[j]
    return camera.interpolate_camera(frames[j], frames[j + 1], t - j)


def _same_camera(a: CameraFrame, b: CameraFrame) -> bool:
    return (
        np.allclose(a.translation, b.translation, atol=1e-6)
        and np.allclose(a.rotation, b.rotation, atol=1e-9)
        and abs(a.fx - b.fx) < 1e-9 and abs(a.fy - b.fy) < 1e-9
    )


# -- depth maps ---------------------------------------------------------------------


def load_depth_map(data: bytes | str | Path, width: int, height: int) -> np.ndarray:
    """A grayscale depth image (brighter = nearer; 8- or 16-bit, or float) -> float32
    (height, width) in [0, 1], for a width x height photo (`read_depth_map`). A map of another
    size is resized to the photo's, also one of another aspect (a depth model's raw output,
    made on the photo squeezed to a square, stretches back), but not one turned a quarter
    against it (`check_depth_map`)."""
    depth = check_depth_map(data, width, height)
    if depth.shape != (height, width):
        shrinking = depth.shape[0] * depth.shape[1] > width * height
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(depth, 0.0, 1.0)


def read_depth_map(data: bytes | str | Path) -> np.ndarray:
    """A depth image at its own size, float32 in [0, 1]: integer images scaled by their type's
    maximum, float images stretched to [0, 1], colour images converted to gray."""
    if isinstance(data, (str, Path)):
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise InvalidImageError(f"depth map {data}: cannot read ({e.strerror})") from None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if arr is None:
        raise InvalidImageError("depth map is not an image d2v can decode (use a grayscale PNG)")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY if arr.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    depth = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(depth.min()), float(depth.max())
    return (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)


# A picture this much wider than tall (or taller than wide) is landscape (portrait): a depth
# map of one and a photo of the other are turned against each other. Nearly square ones are
# neither (a model's square raw output stretches back to any photo).
TURNED_ASPECT = 1.15


def check_depth_shape(depth_w: int, depth_h: int, width: int, height: int) -> None:
    """Refuse a depth map turned a quarter against the width x height photo (as shown: after
    its EXIF orientation): stretched onto it, every depth edge would land in the wrong place.
    It is the depth of a photo whose EXIF turn the depth tool did not apply, or of another photo."""
    def shape(w: int, h: int) -> str | None:
        return "landscape" if w >= TURNED_ASPECT * h else "portrait" if h >= TURNED_ASPECT * w else None

    mine, photo = shape(depth_w, depth_h), shape(width, height)
    if mine and photo and mine != photo:
        raise DepthMapMismatchError(
            f"depth map is {depth_w}x{depth_h} ({mine}) and the photo is {width}x{height} ({photo}, as shown, "
            f"its EXIF orientation applied): it is turned a quarter or of another photo; give the depth map "
            f"of the photo as it is shown")


def check_depth_map(data: bytes | str | Path, width: int, height: int) -> np.ndarray:
    """The depth map for a width x height photo at its own size (`read_depth_map`), checked:
    decodable and not turned against the photo (`check_depth_shape`)."""
    depth = read_depth_map(data)
    check_depth_shape(depth.shape[1], depth.shape[0], width, height)
    return depth


def pseudo_depth(width: int, height: int, subject_uv, radius_frac: float = 0.4) -> np.ndarray:
    """A stand-in depth map (height, width) float32 for effects that need depth when none
    was given: a soft near blob around the subject, 1 at the subject, 0.5 at
    radius_frac * min(width, height), 0 far away (a Gaussian). Smooth on purpose: a
    2.5D warp stretches the picture where depth changes (a sideways move turns a steep
    edge into streaks); near the peak it is flat enough (within 1% over a tenth of the
    radius) that the subject moves as one piece."""
    su, sv = float(subject_uv[0]), float(subject_uv[1])
    radius = max(1e-6, radius_frac * min(width, height))
    x = ((np.arange(width, dtype=np.float32) + 0.5 - su) / radius) ** 2
    y = ((np.arange(height, dtype=np.float32) + 0.5 - sv) / radius) ** 2
    return np.exp(-math.log(2.0) * (y[:, None] + x[None, :])).astype(np.float32)
