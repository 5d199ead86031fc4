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
  upsampled and applied with `cv2.remap`. The march takes steps even in 1/s (each moves a
  ray's image point as far), bisects the step where a ray met the surface, and is done for
  all rays one layer at a time; a frame whose layers part by under SUBPIXEL_PARALLAX
  output pixels (the first frames of an eased move) is the plane homography. About 4-6.5
  ms a 1024x576 frame on the 2-core VM, against 1 ms without depth (bench/RESULTS.md).
  dolly_zoom, orbit and parallax are planned about a subject on the image plane (that is
  how the trajectory builds them), so for them depth is measured from the subject: its layer
  becomes the plane, the background lies behind it (s > 1) and recedes, swings or slides
  less. Without a depth map dolly_zoom and parallax, which a flat picture shows as no
  change at all or a plain pan, use a soft `pseudo_depth` blob around the subject, sized
  by its view; orbit stays flat (its keystoned arc reads as an orbit, and a fake depth
  stretches the picture into streaks as the camera swings).
  The trajectory keeps views inside the image at every depth shown here: it models
  the same depth range (`d2v.trajectory.depth_range`; pass `depth_parallax` to it).
* Disocclusions: where a near layer moves off what it hid, the march finds the depth edge
  and would stretch it over the revealed band (streaks of the near edge's colours). Those
  grid points are found by how much wider the warp spreads them than their own layer would
  (`STRETCH_INVENTED`), and filled from the far side of the edge only: the background
  beside the band, mirrored into it along the axis of the move (`_fill_from_background`),
  so the band continues the background's texture and travels with it. The near layer is
  never a source. `render_validity` marks these pixels as invented. Measured on a textured
  near square over a textured background (tests/test_parallax.py): the band's mean colour
  is 3 levels from the hidden background's and 109 from the near square's (the stretched
  edge: 63 and 49), its texture across the move 1.02x the background's (stretched: 0.18x),
  PSNR against the background it hid 17.6 dB (stretched: 14.0 dB). The price: about 1.5 ms
  a 1024x576 frame where a fifth of it is revealed (bench/render_bench.py's parallax row).
* Motion blur: sub-frame accumulation over a shutter centred on each frame, cameras
  interpolated with `camera.interpolate_camera`.

Coordinates follow `d2v.camera` (pixel centres at +0.5); OpenCV puts pixel centres at
integers, hence the T(-0.5) ... T(+0.5) wrapping of every matrix handed to it.
A renderer is read-only after construction and can be shared between threads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np

from d2v import camera
from d2v.errors import InvalidImageError
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
SUBPIXEL_PARALLAX = 0.25  # output pixels: a frame whose depth layers part by less shows the plane
_FIXED_MAP_LIMIT = 30000.0  # |coordinate| fixed-point (int16) remap maps hold, with room to spare
# dolly_zoom's stand-in depth falls to half this far from the subject, x the first view's
# shorter side: the subject stays one piece while the view's edges lie well behind it.
PSEUDO_RADIUS = 0.5


class _Layers(NamedTuple):
    s: np.ndarray  # relative depth of each image point, float32, at most _DEPTH_MAX_SIDE
    near: float  # its smallest value
    far: float  # its largest value
    c0: np.ndarray  # centre of the reference camera (sees the layers undistorted)


def local_scale(G: np.ndarray, x: float, y: float) -> float:
    """Source pixels per output pixel of the map G (output -> image) at (x, y):
    sqrt(|det J|) of its Jacobian."""
    _, J = camera.local_affine(G, x, y)
    return math.sqrt(abs(np.linalg.det(J)))


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
        # Depth warps remap with fixed-point maps (coordinates up to _FIXED_MAP_LIMIT) when
        # coordinates clipped there stay outside the image even interpolated a grid cell in.
        self._fixed_maps = _DEPTH_GRID_STEP * max(self.width, self.height) < _FIXED_MAP_LIMIT
        self.parallax = float(parallax)
        self._border = cv2.BORDER_REFLECT if border == "reflect" else cv2.BORDER_CONSTANT

        # Gaussian pyramid, down to about 32 px: levels past what any frame needs cost
        # a third of the image's memory in all.
        self._levels = [np.ascontiguousarray(image)]
        while min(self._levels[-1].shape[:2]) >= 64:
            self._levels.append(cv2.pyrDown(self._levels[-1]))

        self.depth = None if depth is None else self._prepare_depth(depth)

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
        return np.clip(depth, 0.0, 1.0)

    def _small_size(self) -> tuple[int, int]:
        scale = min(1.0, _DEPTH_MAX_SIDE / max(self.width, self.height))
        return max(2, round(self.width * scale)), max(2, round(self.height * scale))

    def _layers(self, depth: np.ndarray | None, c0: np.ndarray, pivot=None, parallax=None) -> _Layers | None:
        """Depth -> relative depth s of every image point (1 = on the plane, < 1 nearer,
        > 1 farther). With a pivot (an image point), s is divided by the pivot's own s,
        so the pivot's layer becomes the plane and what lies behind it gets s > 1."""
        if depth is None:
            return None
        s = 1.0 - (self.parallax if parallax is None else parallax) * depth
        if pivot is not None:
            dh, dw = depth.shape
            px = float(np.clip(pivot[0] * dw / self.width - 0.5, 0, dw - 1))
            py = float(np.clip(pivot[1] * dh / self.height - 0.5, 0, dh - 1))
            s_pivot = cv2.getRectSubPix(s, (1, 1), (px, py))[0, 0]
            s = s / s_pivot
        return _Layers(np.ascontiguousarray(s, dtype=np.float32), float(s.min()), float(s.max()), c0)

    def _trajectory_layers(self, trajectory: CameraTrajectory, c0: np.ndarray) -> _Layers | None:
        """Depth for a trajectory. dolly_zoom, orbit and parallax are built so their
        subject keeps its place on the image plane: the subject's layer is made the plane
        (pivot), so nearer things move against it and the background swings, recedes or
        slides behind it. Without a depth map dolly_zoom and parallax get a `pseudo_depth`
        blob of strength PSEUDO_PARALLAX (the strength the trajectory planned for), other
        effects none."""
        pivot = trajectory.subject if trajectory.effect in PIVOT_EFFECTS else None
        if self.depth is not None:
            return self._layers(self.depth, c0, pivot)
        if trajectory.effect in PSEUDO_DEPTH_EFFECTS and pivot is not None:
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
        self._render_into(out, frame, self._layers(self.depth, np.asarray(c0, float), pivot), {})
        return out

    def _render_into(
        self, out: np.ndarray, frame: CameraFrame, layers: _Layers | None, scratch: dict
    ) -> None:
        height, width = out.shape[:2]
        G = np.linalg.inv(camera.frame_homography(frame))  # output -> image
        level = math.log2(max(local_scale(G, width / 2.0, height / 2.0), 1e-9))
        level = min(max(level, 0.0), len(self._levels) - 1.0)
        lo = int(math.floor(level))
        frac = level - lo
        if frac > 1.0 - _BLEND_EPS:
            lo, frac = lo + 1, 0.0

        if _moved(frame, layers, width, height):
            q = self._depth_maps(frame, width, height, layers, scratch)
            sample = lambda lvl, dst: self._remap(lvl, q, dst, scratch)  # noqa: E731
        else:
            # No depth, or the camera sits at the reference centre (a pure rotation or
            # lens zoom): no parallax, the plane homography is exact; or it moved so little
            # that its layers part by under SUBPIXEL_PARALLAX: the homography is as good.
            sample = lambda lvl, dst: self._warp(lvl, G, dst)  # noqa: E731

        sample(lo, out)
        if frac >= _BLEND_EPS and lo + 1 < len(self._levels):
            nxt = scratch.get("blend")
            if nxt is None or nxt.shape != out.shape:
                nxt = scratch["blend"] = np.empty_like(out)
            sample(lo + 1, nxt)
            cv2.addWeighted(out, 1.0 - frac, nxt, frac, 0.0, dst=out)

    def _warp(self, level: int, G: np.ndarray, dst: np.ndarray) -> None:
        h, w = dst.shape[:2]
        cv2.warpPerspective(
            self._levels[level], camera.to_opencv(G, level), (w, h), dst=dst,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=self._border,
        )

    def _remap(self, level: int, q: np.ndarray, dst: np.ndarray, scratch: dict) -> None:
        # q: (h, w, 2) image coordinates in OpenCV convention at level 0; scaled for the level.
        # Fixed-point maps (what remap makes of float ones anyway, 1/32 px) remap twice as
        # fast, for images small enough (see __init__). Full-size maps live in scratch: fresh
        # multi-megabyte arrays every frame cost more in page faults than the work in them.
        if level:
            q = np.multiply(q, np.float32(0.5**level), out=_buffer(scratch, "q_level", q.shape, np.float32))
        if self._fixed_maps:
            m1 = _buffer(scratch, "map1", q.shape, np.int16)
            m2 = _buffer(scratch, "map2", q.shape[:2], np.uint16)
            cv2.convertMaps(q, None, cv2.CV_16SC2, dstmap1=m1, dstmap2=m2)
            cv2.remap(self._levels[level], m1, m2, cv2.INTER_LINEAR, dst=dst, borderMode=self._border)
        else:
            cv2.remap(self._levels[level], q, None, cv2.INTER_LINEAR, dst=dst, borderMode=self._border)

    def _depth_maps(
        self, frame: CameraFrame, width: int, height: int, layers: _Layers, scratch: dict
    ) -> np.ndarray:
        """Per-pixel source coordinates (height, width, 2), OpenCV convention, level 0, of the
        depth warp; also leaves the grid's filled holes in scratch["holes"].

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
            gx, gy = _grid(width, height)
            d = Kinv_R[:, 0, None, None] * gx[None, None, :] + Kinv_R[:, 1, None, None] * gy[None, :, None]
            d = d + Kinv_R[:, 2, None, None]
            dz = np.where(np.abs(d[2]) < 1e-9, 1e-9, d[2])
            ex, ey = d[0] / dz, d[1] / dz
            # In depth-map OpenCV pixels: Q*s - 0.5.
            Ax = ((c0[0] - c0[2] * ex) * sx - 0.5).astype(np.float32)
            Ay = ((c0[1] - c0[2] * ey) * sy - 0.5).astype(np.float32)
            rays = scratch["rays"] = (key, ex, ey, Ax, Ay, _gradients(Ax, Ay))
        _, ex, ey, Ax, Ay, ja = rays
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
            # _DEPTH_MAX_STEPS steps). Each ray's first step at or behind the surface (layer <=
            # step) is found from the last step back, the farthest layer, where every ray is.
            span = float(np.sqrt(np.max(Bx * Bx + By * By))) * (1.0 / s_lo - 1.0 / s_hi)
            n = int(np.clip(math.ceil(span / _DEPTH_STEP_PX), 2, _DEPTH_MAX_STEPS))
            steps = (1.0 / (1.0 / s_lo + (1.0 / s_hi - 1.0 / s_lo) * np.arange(n + 1) / n)).astype(np.float32)
            steps[0], steps[-1] = s_lo, s_hi
            mx, my = np.empty_like(Ax), np.empty_like(Ay)
            # seen[j]: the layer each ray finds at step j.
            seen = _buffer(scratch, "march", (_DEPTH_MAX_STEPS + 1,) + Ax.shape, np.float32)[:n + 1]
            k = np.full(Ax.shape, n, np.int32)
            for j in range(n, -1, -1):
                u = float(1.0 / steps[j])
                cv2.scaleAdd(Bx, u, Ax, dst=mx)
                cv2.scaleAdd(By, u, Ay, dst=my)
                cv2.remap(layers.s, mx, my, cv2.INTER_LINEAR, dst=seen[j], borderMode=cv2.BORDER_REPLICATE)
                if j < n:
                    np.copyto(k, j, where=seen[j] <= steps[j])
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
        # layer hid, the background's own texture instead of the near edge stretched over it.
        px, py = Ax + Bx / s, Ay + By / s
        jp = _gradients(px, py)
        holes = _disocclusions(px, py, Ax, Ay, Bx, By, s, jp, ja)
        if holes.any():
            photo = (px >= -0.5) & (px <= dw - 0.5) & (py >= -0.5) & (py <= dh - 0.5)
            px, py, holes = _fill_from_background(px, py, s, holes, photo, jp)
        scratch["holes"] = holes  # for render_validity: these pixels are invented

        # Back to image coordinates (OpenCV convention), upsampled to every output pixel.
        grid = np.stack([(px + 0.5) / sx - 0.5, (py + 0.5) / sy - 0.5], axis=-1).astype(np.float32)
        if self._fixed_maps:
            # Rays that graze the plane land absurdly far away: held within what fixed-point
            # maps take, far enough out that no pixel interpolated toward them enters the image.
            np.clip(grid, -_FIXED_MAP_LIMIT, _FIXED_MAP_LIMIT, out=grid)
        return _upsample(grid, width, height, scratch)

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
            if not _moved(frame, layers, w, h):
                inside = cv2.warpPerspective(ones, camera.to_opencv(G), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                yield inside >= 128
                continue
            q = self._depth_maps(frame, w, h, layers, scratch)
            inside = cv2.remap(ones, q, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) >= 128
            revealed = _upsample(scratch["holes"].astype(np.float32), w, h) > 0.5
            yield inside & ~revealed

    # -- a whole trajectory -----------------------------------------------------------

    def render(
        self, trajectory: CameraTrajectory, *, motion_blur: float = 0.0, samples: int = 6,
        indices: Sequence[int] | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield each frame of the trajectory (or just those at `indices`, as the whole clip
        would show them), (height, width, 3) uint8, one at a time.

        motion_blur: shutter length in frames (0 = off); each frame averages `samples`
        renders at cameras spread evenly over [i - b/2, i + b/2], clamped to the move."""
        if (trajectory.image_width, trajectory.image_height) != (self.width, self.height):
            raise ValueError(
                f"trajectory is for a {trajectory.image_width}x{trajectory.image_height} image, "
                f"the renderer has {self.width}x{self.height}"
            )
        frames = trajectory.frames
        w, h, n = trajectory.width, trajectory.height, len(frames)
        layers = self._trajectory_layers(trajectory, frames[0].camera_center()) if frames else None
        scratch: dict = {}
        blur = max(0.0, float(motion_blur))
        samples = max(1, int(samples))
        offsets = ((np.arange(samples) + 0.5) / samples - 0.5) * blur
        acc = np.zeros((h, w, 3), np.float32) if blur > 0 and samples > 1 else None
        sub = np.empty((h, w, 3), np.uint8) if acc is not None else None

        for i in range(n) if indices is None else indices:
            out = np.empty((h, w, 3), np.uint8)  # fresh: the consumer may keep it
            cams = [_camera_at(frames, i + o) for o in offsets] if acc is not None else []
            if acc is None or all(_same_camera(cams[0], c) for c in cams[1:]):
                self._render_into(out, frames[i], layers, scratch)
            else:
                acc.fill(0.0)
                for cam in cams:
                    self._render_into(sub, cam, layers, scratch)
                    cv2.accumulate(sub, acc)
                cv2.convertScaleAbs(acc, dst=out, alpha=1.0 / len(cams))
            yield out


# A depth warp that spreads a source pixel over this many times the area its own layer
# would give it has stretched a layer edge over what the move revealed (a disocclusion):
# those pixels are filled from the background and count as invented.
STRETCH_INVENTED = 4.0
EDGE_QUARTER = 0.25  # around a hole: the far and near quarters of the local depth range are the layers


def _gradients(fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, ...]:
    """The Jacobian (over grid x, y) of the map (fx, fy): (fx_x, fx_y, fy_x, fy_y)."""
    fx_y, fx_x = np.gradient(fx)
    fy_y, fy_x = np.gradient(fy)
    return fx_x, fx_y, fy_x, fy_y


def _det_grad(jf: tuple[np.ndarray, ...], jg: tuple[np.ndarray, ...] | None = None,
              inv_s: np.ndarray | None = None) -> np.ndarray:
    """det of the Jacobian jf (`_gradients`) of a map, plus jg * inv_s with inv_s held
    constant when given."""
    fx_x, fx_y, fy_x, fy_y = jf
    if jg is not None:
        gx_x, gx_y, gy_x, gy_y = jg
        fx_x, fx_y = fx_x + gx_x * inv_s, fx_y + gx_y * inv_s
        fy_x, fy_y = fy_x + gy_x * inv_s, fy_y + gy_y * inv_s
    return fx_x * fy_y - fx_y * fy_x


def _disocclusions(px, py, Ax, Ay, Bx, By, s, jp=None, ja=None) -> np.ndarray:
    """Grid points (bool, grid shape) whose ray found its layer on a depth edge that the
    move pulled apart: the source there spreads STRETCH_INVENTED times wider than the layer
    itself would spread it. The layer's own spread is the map with s held constant, so a
    near layer seen closer (magnified evenly) or a keystoned plane is not a hole, and a
    smooth depth (the stand-in) stretches far less than this. jp, ja: the Jacobians
    (`_gradients`) of (px, py) and (Ax, Ay), when the caller has them."""
    warped = np.abs(_det_grad(_gradients(px, py) if jp is None else jp))
    layer = np.abs(_det_grad(_gradients(Ax, Ay) if ja is None else ja, _gradients(Bx, By), 1.0 / s))
    return warped * STRETCH_INVENTED < layer


def _fill_from_background(px, py, s, holes, photo, jp=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source points for the holes, taken from the far side of each depth edge only: every
    hole point shows the background mirrored across the nearest background point along the
    axis the warp stretched (the move's, on screen), so the revealed band continues the
    background's own texture out of its edge: seamless there, it travels with the
    background, and neighbouring rows of a band mirror alike (a nearest point in any
    direction would switch sides at the band's corners, and the upsampled map would sweep
    across the near layer there). Returns (px, py, the points filled).

    Around a hole (within twice its width, so each side sees the other across it) the local
    depth range splits the points: the far quarter is background and the only source; the
    near quarter is the near layer, never a source, so its edge is not stretched over the
    hole; what lies between is the depth edge itself, whose pixels are a blend of both
    layers (a real depth map's edge is a few pixels soft, and rarely exactly where the
    colours change): filled too (from the nearer side of either axis), so no seam of the near
    layer's colour lines the band. Only points that show the photo (`photo`: their source
    lies inside it) are sources: a view that touches the photo's edge has grid points past it.
    jp: the Jacobian of (px, py) (`_gradients`), when the caller has it."""
    ny, nx = s.shape
    holes8 = holes.view(np.uint8)
    dist = cv2.distanceTransform(holes8, cv2.DIST_L2, cv2.DIST_MASK_3)
    reach = int(min(max(ny, nx), 2 * math.ceil(2.0 * float(dist.max())) + 3))
    kernel = np.ones((reach, reach), np.uint8)
    s_max, s_min = cv2.dilate(s, kernel), cv2.erode(s, kernel)
    quarter = EDGE_QUARTER * (s_max - s_min)
    near_hole = cv2.dilate(holes8, kernel).view(bool)
    far_side = s >= s_max - quarter
    edge = near_hole & ~holes & (s > s_min + quarter) & ~far_side
    filled = holes | edge
    source = ~filled & far_side & photo

    # The points filled, by flat index; gathers and scatters through ravel() views are cheap.
    fi = np.flatnonzero(filled)
    hy, hx = np.divmod(fi.astype(np.int32), np.int32(nx))
    # Holes mirror along the axis the warp stretched (along which the source barely moved);
    # the depth edge around them from the nearer source; an axis with none: the other. So
    # a hole needs the other axis's mirror only when its own has no source.
    px_x, px_y, py_x, py_y = _gradients(px, py) if jp is None else jp
    stretched_x = (np.hypot(px_x.ravel()[fi], py_x.ravel()[fi])
                   <= np.hypot(px_y.ravel()[fi], py_y.ravel()[fi]))
    is_hole = holes.ravel()[fi]
    rows, cols = _Mirrors(source.T), _Mirrors(source)  # along x (in the rows), along y
    bx, mx, by, my = (np.full(fi.size, -1, np.int32) for _ in range(4))
    for first in (True, False):  # each axis: the points that look along it first, then the rest
        want_x = ~is_hole | stretched_x if first else is_hole & ~stretched_x & (by < 0)
        want_y = ~is_hole | ~stretched_x if first else is_hole & stretched_x & (bx < 0)
        if (i := np.flatnonzero(want_x)).size:
            bx[i], mx[i] = rows.at(hx[i], hy[i])
        if (i := np.flatnonzero(want_y)).size:
            by[i], my[i] = cols.at(hy[i], hx[i])
    nearer_x = np.abs(hx - bx) <= np.abs(hy - by)
    along_x = (bx >= 0) & ((is_hole & stretched_x) | (~is_hole & nearer_x) | (by < 0))
    some = (bx >= 0) | (by >= 0)
    sx, sy = hx + along_x * (mx - hx), my + along_x * (hy - my)
    to, src = fi[some], (sy * np.int32(nx) + sx)[some]
    px, py = px.copy(), py.copy()
    px.ravel()[to] = px.ravel()[src]
    py.ravel()[to] = py.ravel()[src]
    return px, py, filled


class _Mirrors:
    """Mirrors in the lines of a grid: the columns of `lines`, a bool grid of the source
    points (along a grid's rows: `_Mirrors(grid.T)`; along its columns: `_Mirrors(grid)`).
    `at(pos, line)`, for points at place `pos` of line `line`: the place of the nearest
    source point in the same line (-1: none in it), and the point's mirror in the run of
    source points that starts there (-1 where there is none). A point d places from the
    run's edge shows the one d - 1 places into it, and where the run is shorter than that
    the reflection turns back at its other end (as BORDER_REFLECT does), so a hole wider than
    the background beside it repeats that background instead of smearing one pixel of it
    across the hole."""

    def __init__(self, lines: np.ndarray):
        lines = np.ascontiguousarray(lines)  # rows contiguous, for the scans
        n = self.n = np.int32(lines.shape[0])
        self.m = np.int32(lines.shape[1])
        idx = np.arange(n, dtype=np.int32)[:, None]
        # Running max down the lines (the last source at or before each place) and running
        # min up them (the first at or after); with no source on a side, a place so far off
        # that the other side wins and the pick is out of range. Likewise the gaps (non-source
        # places) around each place, for the runs.
        # (np.where(lines, x, y) spelled y + lines * (x - y): many times faster.)
        far = np.int32(4 * n + 4)
        self.last = _scan(lines * (idx + far) - far, np.maximum).ravel()
        self.next = _scan(far - lines * (far - idx), np.minimum, up=True).ravel()
        self.gap_before = _scan(idx - lines * (idx + 1), np.maximum).ravel()
        self.gap_after = _scan(idx + lines * (n - idx), np.minimum, up=True).ravel()

    def at(self, pos: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, m = self.n, self.m
        at = pos * m + line
        before, after = self.last[at], self.next[at]
        take_before = pos - before <= after - pos
        b = after + take_before * (before - after)
        found = (b >= 0) & (b < n)
        bb = b * found
        at = bb * m + line  # the run of source places from b away from the point ends before the next gap
        back, on = bb - self.gap_before[at], self.gap_after[at] - bb
        run = on + take_before * (back - on)
        k = (np.abs(pos - bb) - 1) % (2 * np.maximum(run, 1))
        into = k + (k >= run) * (2 * (run - k) - 1)  # k, or turned back at the run's end
        mirror = bb + into - take_before * (2 * into)
        return (b + 1) * found - 1, (mirror + 1) * found - 1


def _scan(a: np.ndarray, op, up: bool = False) -> np.ndarray:
    """The running op (np.maximum, np.minimum) of `a` down axis 0 (up it: from the last row
    back), by doubling strides: log2(len) passes over contiguous rows, several times faster
    than ufunc.accumulate. `a` is overwritten."""
    b = np.empty_like(a)
    d = 1
    while d < len(a):
        if up:
            b[-d:] = a[-d:]
            op(a[:-d], a[d:], out=b[:-d])
        else:
            b[:d] = a[:d]
            op(a[d:], a[:-d], out=b[d:])
        a, b, d = b, a, 2 * d
    return a


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the depth warp is computed: every _DEPTH_GRID_STEP output pixels, one point past
    each edge, at the places `_upsample`'s resize puts them (d2v coordinates, x and y)."""
    step = _DEPTH_GRID_STEP
    nx, ny = -(-width // step) + 2, -(-height // step) + 2
    offset = (step - 1) / 2.0 - step + 0.5  # OpenCV pixel (step - 1) / 2 - step, in d2v coordinates
    return np.arange(nx) * float(step) + offset, np.arange(ny) * float(step) + offset


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


def _pick(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.where(cond, a, b) for float32 arrays, exactly (by their bits), and many times
    faster: numpy's where and masked copies are slow on arrays this size."""
    ai, bi = a.view(np.int32), b.view(np.int32)
    return (bi + cond * (ai - bi)).view(np.float32)


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """image (one channel) at the points (x, y) (1-D, OpenCV pixels), bilinear, edges
    replicated: cv2.remap through maps folded into rows (it takes at most 32767 a side)."""
    n, cols = x.size, 1024
    rows = -(-n // cols)
    mx, my = np.zeros(rows * cols, np.float32), np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(image, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.ravel()[:n]


def _buffer(scratch: dict, key: str, shape: tuple, dtype) -> np.ndarray:
    """An array of this shape and type kept in scratch under key, made on first use."""
    buf = scratch.get(key)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
        buf = scratch[key] = np.empty(shape, dtype)
    return buf


def _moved(frame: CameraFrame, layers: _Layers | None, width: int, height: int) -> bool:
    """Whether the frame sees depth as parallax: there is depth, and the camera left the
    reference centre (a pure rotation or lens zoom there: the plane homography is exact) far
    enough that somewhere its layers, the plane among them, part by SUBPIXEL_PARALLAX output
    pixels or more (the first frames of a move, eased in, need not march a ray)."""
    if layers is None:
        return False
    C, c0 = frame.camera_center(), layers.c0
    if np.linalg.norm(C - c0) <= 1e-6 * abs(c0[2]):
        return False
    # As in _depth_maps: a ray's image point is A + B / s over the layers in front of the
    # camera; how far it moves between them and the plane, at the output's corners (where
    # |B| is largest), in output pixels there.
    s_hi = layers.far
    s_lo = min(s_hi, max(layers.near, 1.0 - C[2] / c0[2] + 1e-3))
    spread = max(1.0 / s_lo, 1.0) - min(1.0 / s_hi, 1.0)
    corners = np.array([[0.0, width, width, 0.0], [0.0, 0.0, height, height], [1.0, 1.0, 1.0, 1.0]])
    d = frame.R().T @ np.linalg.inv(frame.K()) @ corners
    if np.any(d[2] <= 1e-9):
        return True
    B = (C[:2, None] - c0[:2, None]) + (c0[2] - C[2]) * d[:2] / d[2]
    G = np.linalg.inv(camera.frame_homography(frame))
    scale = [local_scale(G, x, y) for x, y in corners[:2].T]  # image pixels per output pixel
    return bool(np.max(np.hypot(*B) * spread / np.maximum(scale, 1e-9)) >= SUBPIXEL_PARALLAX)


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
    (height, width) in [0, 1]. Integer images are scaled by their type's maximum; float
    images are stretched to [0, 1]. Colour images are converted to gray."""
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
        depth = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    else:
        depth = arr.astype(np.float32)
        depth = np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(depth.min()), float(depth.max())
        depth = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
    if depth.shape != (height, width):
        shrinking = depth.shape[0] * depth.shape[1] > width * height
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(depth, 0.0, 1.0)


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
