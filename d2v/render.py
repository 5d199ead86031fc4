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
  upsampled and applied with `cv2.remap`.
  dolly_zoom and orbit keep their subject fixed on the image plane (that is how the
  trajectory builds them), so for them depth is measured from the subject: its layer
  becomes the plane, the background lies behind it (s > 1) and recedes or swings.
  Without a depth map dolly_zoom, which a flat picture shows as no change at all, uses a
  soft `pseudo_depth` blob around the subject, sized by its view; orbit stays flat (its keystoned arc reads
  as an orbit, and a fake depth stretches the picture into streaks as the camera swings).
  The trajectory keeps views inside the image at every depth shown here: it models
  the same depth range (`d2v.trajectory.depth_range`; pass `depth_parallax` to it).
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
_DEPTH_MAX_STEPS = 32  # most ray-march steps of the depth warp
_DEPTH_REFINE = 3  # regula-falsi steps after the march
_DEPTH_MAX_SIDE = 1024  # depth is sampled from a copy at most this large (it is smooth)
_BLEND_EPS = 0.02  # level fractions closer than this to a level use that level alone
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
        """Depth for a trajectory. dolly_zoom and orbit are built so their subject keeps
        its place and size on the image plane: the subject's layer is made the plane
        (pivot), so nearer things move against it and the background swings or recedes
        behind it. Without a depth map dolly_zoom gets a `pseudo_depth` blob of strength
        PSEUDO_PARALLAX (the strength the trajectory planned for), other effects none."""
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

        if _moved(frame, layers):
            qx, qy = self._depth_maps(frame, width, height, layers, scratch)
            sample = lambda lvl, dst: self._remap(lvl, qx, qy, dst)  # noqa: E731
        else:
            # No depth, or the camera sits at the reference centre (a pure rotation or
            # lens zoom): no parallax, the plane homography is exact.
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

    def _remap(self, level: int, qx: np.ndarray, qy: np.ndarray, dst: np.ndarray) -> None:
        # q* are image coordinates in OpenCV convention at level 0; scale for the level.
        if level:
            k = 0.5**level
            qx, qy = qx * k, qy * k
        cv2.remap(self._levels[level], qx, qy, cv2.INTER_LINEAR, dst=dst, borderMode=self._border)

    def _depth_maps(
        self, frame: CameraFrame, width: int, height: int, layers: _Layers, scratch: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel source coordinates (OpenCV convention, level 0) of the depth warp.

        Each output pixel's ray is parametrised by the layer s it is at: the point P(s)
        on the ray with Z = C0z (1 - s) came from image point Q(s) = C0 + (P(s) - C0) / s.
        The ray hits the scene where s = layers.s(Q(s)). A plain fixed-point
        iteration from the plane finds the background even where a near object should
        occlude it (near things shrink at their edges), so, as in parallax-occlusion
        mapping, march from the nearest layer to the farthest, stop at the first
        crossing, and refine it by regula falsi. Done on a grid every _DEPTH_GRID_STEP
        output pixels, then upsampled bilinearly (exact for the flat part of the map)."""
        step = _DEPTH_GRID_STEP
        key = ("grid", width, height)
        if key not in scratch:
            nx, ny = -(-(width - 1) // step) + 1, -(-(height - 1) // step) + 1
            gx = np.arange(nx, dtype=np.float64) * step + 0.5  # d2v coords of OpenCV pixels k*step
            gy = np.arange(ny, dtype=np.float64) * step + 0.5
            # Upsampling maps: output pixel (x, y) reads grid cell (x/step, y/step).
            ux = np.broadcast_to(np.arange(width, dtype=np.float32) / step, (height, width))
            uy = np.broadcast_to((np.arange(height, dtype=np.float32) / step)[:, None], (height, width))
            scratch[key] = (gx, gy, *cv2.convertMaps(np.ascontiguousarray(ux), np.ascontiguousarray(uy), cv2.CV_16SC2))
        gx, gy, up1, up2 = scratch[key]

        # World ray directions of the grid pixels, d = R^T K^-1 (u, v, 1), as slopes
        # e = (dx/dz, dy/dz). With u = 1/s, Q(s) = A + u B: linear in 1/s, per pixel.
        Kinv_R = frame.R().T @ np.linalg.inv(frame.K())
        d = Kinv_R[:, 0, None, None] * gx[None, None, :] + Kinv_R[:, 1, None, None] * gy[None, :, None]
        d = d + Kinv_R[:, 2, None, None]
        dz = np.where(np.abs(d[2]) < 1e-9, 1e-9, d[2])
        ex, ey = d[0] / dz, d[1] / dz
        C, c0 = frame.camera_center(), layers.c0
        dh, dw = layers.s.shape
        sx, sy = dw / self.width, dh / self.height
        # In depth-map OpenCV pixels: Q*s - 0.5.
        Ax = ((c0[0] - c0[2] * ex) * sx - 0.5).astype(np.float32)
        Ay = ((c0[1] - c0[2] * ey) * sy - 0.5).astype(np.float32)
        Bx = (((C[0] - c0[0]) + (c0[2] - C[2]) * ex) * sx).astype(np.float32)
        By = (((C[1] - c0[1]) + (c0[2] - C[2]) * ey) * sy).astype(np.float32)

        def layer_at(u):  # u: 1/s, a scalar or per-pixel array; stacked maps -> one remap
            mx, my = Ax + u * Bx, Ay + u * By
            shape = mx.shape
            mx, my = mx.reshape(-1, shape[-1]), my.reshape(-1, shape[-1])
            out = cv2.remap(layers.s, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            return out.reshape(shape)

        # Search only layers that hold something and lie in front of the camera.
        s_hi = layers.far
        s_cam = 1.0 - C[2] / c0[2]  # the layer through the camera centre
        s_lo = min(s_hi, max(layers.near, s_cam + 1e-3))
        if s_lo >= s_hi:
            s = np.full(Ax.shape, s_hi, np.float32)
        else:
            # March in steps of about 2 depth-map pixels along the longest ray.
            span = float(np.sqrt(np.max(Bx * Bx + By * By))) * (1.0 / s_lo - 1.0 / s_hi)
            n = int(np.clip(math.ceil(span / 2.0), 2, _DEPTH_MAX_STEPS))
            steps = (s_lo + (s_hi - s_lo) * np.arange(n + 1) / n).astype(np.float32)
            f = layer_at((1.0 / steps)[:, None, None]) - steps[:, None, None]  # > 0: still in front
            # First step at or behind the surface; the last (the farthest layer) always is.
            k = np.argmax(f <= 0, axis=0)
            kp = np.maximum(k - 1, 0)
            a, b = steps[kp], steps[k]
            fa = np.take_along_axis(f, kp[None], 0)[0]
            fb = np.take_along_axis(f, k[None], 0)[0]
            s = b
            for _ in range(_DEPTH_REFINE):
                bracket = (fa - fb) > 1e-9
                s = np.where(bracket, a + (b - a) * fa / np.where(bracket, fa - fb, 1.0), b)
                fs = layer_at(1.0 / s) - s
                front = fs > 0
                a, fa = np.where(front, s, a), np.where(front, fs, fa)
                b, fb = np.where(front, b, s), np.where(front, fb, fs)
        # The chosen layer's point, in depth-map pixels; where the move revealed what a near
        # layer hid, the background's own texture instead of the near edge stretched over it.
        px, py = Ax + Bx / s, Ay + By / s
        holes = _disocclusions(px, py, Ax, Ay, Bx, By, s)
        if holes.any():
            px, py, holes = _fill_from_background(px, py, s, holes)
        scratch["holes"] = holes  # for render_validity: these pixels are invented

        # Back to image coordinates (OpenCV convention), upsampled to every output pixel.
        grid = np.stack([(px + 0.5) / sx - 0.5, (py + 0.5) / sy - 0.5], axis=-1).astype(np.float32)
        full = cv2.remap(grid, up1, up2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return full[:, :, 0], full[:, :, 1]

    def _upsampled(self, grid: np.ndarray, width: int, height: int, scratch: dict) -> np.ndarray:
        """A (ny, nx) float32 map on the depth-warp grid at every output pixel."""
        _, _, up1, up2 = scratch[("grid", width, height)]
        return cv2.remap(grid, up1, up2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

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
            if not _moved(frame, layers):
                inside = cv2.warpPerspective(ones, camera.to_opencv(G), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                yield inside >= 128
                continue
            qx, qy = self._depth_maps(frame, w, h, layers, scratch)
            inside = cv2.remap(ones, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) >= 128
            revealed = self._upsampled(scratch["holes"].astype(np.float32), w, h, scratch) > 0.5
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


def _det_grad(fx: np.ndarray, fy: np.ndarray, gx: np.ndarray | None = None, gy: np.ndarray | None = None,
              inv_s: np.ndarray | None = None) -> np.ndarray:
    """det of the Jacobian (over grid x, y) of the map (fx, fy), plus (gx, gy) * inv_s with
    inv_s held constant when given."""
    fx_y, fx_x = np.gradient(fx)
    fy_y, fy_x = np.gradient(fy)
    if gx is not None:
        gx_y, gx_x = np.gradient(gx)
        gy_y, gy_x = np.gradient(gy)
        fx_x, fx_y = fx_x + gx_x * inv_s, fx_y + gx_y * inv_s
        fy_x, fy_y = fy_x + gy_x * inv_s, fy_y + gy_y * inv_s
    return fx_x * fy_y - fx_y * fy_x


def _disocclusions(px, py, Ax, Ay, Bx, By, s) -> np.ndarray:
    """Grid points (bool, grid shape) whose ray found its layer on a depth edge that the
    move pulled apart: the source there spreads STRETCH_INVENTED times wider than the layer
    itself would spread it. The layer's own spread is the map with s held constant, so a
    near layer seen closer (magnified evenly) or a keystoned plane is not a hole, and a
    smooth depth (the stand-in) stretches far less than this."""
    warped = np.abs(_det_grad(px, py))
    layer = np.abs(_det_grad(Ax, Ay, Bx, By, 1.0 / s))
    return warped * STRETCH_INVENTED < layer


def _fill_from_background(px, py, s, holes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source points for the holes, taken from the far side of each depth edge only: every
    hole point shows the background mirrored across the nearest background point, so the
    revealed band continues the background's own texture out of its edge (seamless there,
    and it travels with the background). Returns (px, py, the points filled).

    Around a hole (within twice its width, so each side sees the other across it) the local
    depth range splits the points: the far quarter is background and the only source; the
    near quarter is the near layer, never a source, so its edge is not stretched over the
    hole; what lies between is the depth edge itself, whose pixels are a blend of both
    layers (a real depth map's edge is a few pixels soft, and rarely exactly where the
    colours change): filled too, so no seam of the near layer's colour lines the band. A
    mirror point that is not background (a strip of background narrower than the hole)
    falls back to the nearest one."""
    ny, nx = s.shape
    dist = cv2.distanceTransform(holes.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_3)
    reach = int(min(max(ny, nx), 2 * math.ceil(2.0 * float(dist.max())) + 3))
    kernel = np.ones((reach, reach), np.uint8)
    s_max, s_min = cv2.dilate(s, kernel), cv2.erode(s, kernel)
    spread = s_max - s_min
    near_hole = cv2.dilate(holes.astype(np.uint8), kernel).astype(bool)
    edge = near_hole & (s > s_min + EDGE_QUARTER * spread) & (s < s_max - EDGE_QUARTER * spread)
    holes = holes | edge
    source = ~holes & (s >= s_max - EDGE_QUARTER * spread)
    if not source.any():
        return px, py, holes
    _, labels = cv2.distanceTransformWithLabels(
        (~source).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    ys, xs = np.nonzero(source)  # labels number source points in raster order, from 1
    hy, hx = np.nonzero(holes)
    nearest = labels[hy, hx] - 1
    by, bx = ys[nearest], xs[nearest]
    my, mx = 2 * by - hy, 2 * bx - hx
    inside = (my >= 0) & (my < ny) & (mx >= 0) & (mx < nx)
    ok = inside.copy()
    ok[inside] = source[my[inside], mx[inside]]
    my, mx = np.where(ok, my, by), np.where(ok, mx, bx)
    px, py = px.copy(), py.copy()
    px[hy, hx] = px[my, mx]
    py[hy, hx] = py[my, mx]
    return px, py, holes


def _moved(frame: CameraFrame, layers: _Layers | None) -> bool:
    """Whether the frame sees depth as parallax: there is depth and the camera left the
    reference centre (a pure rotation or lens zoom there: the plane homography is exact)."""
    return layers is not None and np.linalg.norm(frame.camera_center() - layers.c0) > 1e-6 * abs(layers.c0[2])


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
