"""Post effects: applied in the request's `post` order after upscaling, before the look and
the encoder.

    clip = CameraFrames(renderer, trajectory)      # or ClipFrames(frames, trajectory) (svd)
    clip = apply_post(clip, request.post, PostContext.for_job(request, trajectory, W, H, depth))
    for i in range(len(clip)): encode(clip.frame(i))

A clip here is lazy: its length, `frame(t)` (t may be fractional: a camera renders any
time exactly, a list of frames interpolates with optical flow) and `homography(t)` (where
the photo's plane lies in that frame: image pixels -> frame pixels). Each effect wraps a
clip, remapping times or transforming frames, so the camera backend keeps streaming into
the encoder: only what an effect must see is rendered, when it is asked for, and no clip is
held whole. The svd backend's frames are just another clip.

    reverse      frame i is frame N-1-i
    boomerang    2N-1 frames: forwards, then backwards from the turn (not shown twice)
    glitch       seeded bursts (RGB split, displaced bands, scanlines) on round(amount N)
                 frames; the others are untouched
    mirror_fold  a copy of the larger half of the picture, hinged on a horizontal line
                 through the path's centre (where it is in each frame), folds over the other
                 half like paper, seen in perspective; from 75% of the clip it lies flat: a
                 mirror image about the line
    bullet_time  keeps N frames: time slows (a smooth ramp), freezes for the middle 30% while
                 the camera swings around the path's centre (the frozen frame re-rendered by
                 `CameraRenderer`, with the job's depth when it has one), and ramps back up;
                 the rest of the move plays faster so the clip still ends where it ended
    tenet        a soft-edged disc around the path's end (where the move arrives on screen)
                 plays the clip backwards while the rest plays forwards
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from d2v import camera
from d2v.models import CameraFrame, CameraTrajectory, RenderRequest
from d2v.pathshape import clean_path, shape_of
from d2v.render import CameraRenderer
from d2v.render import _camera_at as render_camera_at  # one way to find a camera between frames

GLITCH_SALT = 0x61_17C4  # keeps glitch's random stream apart from shake's (both use the request's seed)
GLITCH_BURST = (1, 4)  # glitched frames come in runs of this many (a steady trickle reads as noise)
FOLD_SHARE = 0.75  # mirror_fold: the share of the clip the fold takes; then it lies flat
FOLD_FOCAL = 2.0  # mirror_fold: the virtual lens, x the frame's longer side (longer: less perspective)
FREEZE_SHARE = 0.3  # bullet_time: the share of the clip frozen
RAMP_SHARE = 0.12  # bullet_time: each speed ramp, as a share of the clip
BULLET_YAW_DEG = 15.0  # bullet_time: how far the camera swings around the path's centre (and back)
TENET_RADIUS = 0.3  # tenet: the reversed disc's radius, x the frame's shorter side
TENET_FEATHER = 0.5  # tenet: the seam's width, x the radius


class Frames:
    """A lazy clip: len, frame(t) and homography(t) for t in [0, len - 1]."""

    width: int
    height: int

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, t: float) -> np.ndarray:
        """(height, width, 3) uint8, a fresh array the caller may keep."""
        raise NotImplementedError

    def homography(self, t: float) -> np.ndarray:
        """Image (photo) pixels -> this frame's pixels, for the photo's plane."""
        raise NotImplementedError


def _camera_at(trajectory: CameraTrajectory, t: float) -> CameraFrame:
    """The camera at fractional frame time t, as the renderer's motion blur finds it."""
    return render_camera_at(trajectory.frames, float(t))


class CameraFrames(Frames):
    """The camera backend's frames, rendered on demand. Runs of consecutive times (forwards or
    backwards) stream from one `CameraRenderer.render` generator each, so a reversed or
    tenet clip costs one render a frame, like the plain one. Frames at `keep` are kept as
    rendered (the path check measures them, not what post and look make of them). Frames at
    `planes` come as the encoder's `d2v.encode.I420` planes, not RGB (`CameraRenderer.render`):
    only for a clip that goes straight to the encoder."""

    def __init__(self, renderer: CameraRenderer, trajectory: CameraTrajectory, *, motion_blur: float = 0.0,
                 samples: int = 6, keep=(), planes=()):
        self.renderer, self.trajectory = renderer, trajectory
        self.width, self.height = trajectory.width, trajectory.height
        self.blur = {"motion_blur": motion_blur, "samples": samples}
        # Only a CameraRenderer draws planes; other renderers (subjects) are never asked to.
        self.draw = {"planes": frozenset(planes)} if planes else {}
        self.keep = set(keep)
        self.kept: dict[int, np.ndarray] = {}
        self._streams: dict[int, tuple] = {}  # next index -> (its generator, step)
        self._recent: list[int] = []  # the last few indices asked for: which way a new run goes

    def __len__(self) -> int:
        return len(self.trajectory)

    def frame(self, t: float) -> np.ndarray:
        i = round(t)
        if abs(t - i) > 1e-6:
            return self._between(t)
        stream = self._streams.pop(i, None)
        if stream is None:
            step = -1 if i + 1 in self._recent else 1
            order = range(i, -1, -1) if step < 0 else range(i, len(self))
            stream = (self.renderer.render(self.trajectory, indices=order, **self.draw, **self.blur), step)
            if len(self._streams) >= 4:  # runs nobody continues
                self._streams.pop(next(iter(self._streams)))
        out = next(stream[0])
        self._streams[i + stream[1]] = stream
        self._recent = [*self._recent[-3:], i]
        if i in self.keep:
            self.kept[i] = out
        return out

    def _between(self, t: float) -> np.ndarray:
        # The camera between two frames, rendered against the trajectory's first camera (the
        # depth reference), without motion blur (a retimed move has no shutter of its own).
        cam = _camera_at(self.trajectory, t)
        two = self.trajectory.model_copy(update={"frames": [self.trajectory.frames[0], cam]})
        return next(self.renderer.render(two, indices=[1]))

    def homography(self, t: float) -> np.ndarray:
        return camera.frame_homography(_camera_at(self.trajectory, t))


class ClipFrames(Frames):
    """Frames already made (the svd backend's, after interpolate and upscale) and the cameras
    of the move they follow. Fractional times are flow-interpolated (d2v.flow)."""

    def __init__(self, frames, trajectory: CameraTrajectory):
        self.frames, self.trajectory = frames, trajectory
        self.height, self.width = frames[0].shape[:2]
        self._pair: tuple[int, object] | None = None  # the last pair's flows: a slow stretch reuses them

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, t: float) -> np.ndarray:
        t = min(max(float(t), 0.0), len(self) - 1.0)
        j = int(t)
        if t - j < 1e-6 or j + 1 >= len(self):
            return np.array(self.frames[j])
        from d2v.flow import PairInterpolator

        if self._pair is None or self._pair[0] != j:
            self._pair = (j, PairInterpolator(self.frames[j], self.frames[j + 1]))
        return self._pair[1].at(t - j)

    def homography(self, t: float) -> np.ndarray:
        scale = (len(self.trajectory) - 1) / max(len(self) - 1, 1)
        return camera.frame_homography(_camera_at(self.trajectory, t * scale))


@dataclass
class PostContext:
    """What the effects need from the job: the path's centre and end on the photo (image
    pixels), the job's depth map (image-sized, or None), the seed and glitch_amount."""

    centre: tuple[float, float]
    end: tuple[float, float]
    depth: np.ndarray | None = None
    seed: int = 0
    glitch_amount: float = 0.3
    fps: int = 24

    @classmethod
    def for_job(cls, request: RenderRequest, trajectory: CameraTrajectory, image_width: int, image_height: int,
                depth: np.ndarray | None = None) -> "PostContext":
        if request.path is not None:
            shape = shape_of(clean_path(request.path.image_points(image_width, image_height)))
            centre, end = shape.centroid, shape.end
        else:  # a typed camera: the middle and the end of where its view centre goes
            k = np.array([image_width / trajectory.image_width, image_height / trajectory.image_height])
            views = np.array([f.center for f in trajectory.frames]) * k
            centre, end = tuple(views.mean(axis=0)), tuple(views[-1])
        return cls(centre, end, depth, request.seed, request.glitch_amount, trajectory.fps)


# -- time remapping ---------------------------------------------------------------------


class _Wrapped(Frames):
    def __init__(self, src: Frames):
        self.src = src
        self.width, self.height = src.width, src.height

    def __len__(self) -> int:
        return len(self.src)

    def homography(self, t: float) -> np.ndarray:
        return self.src.homography(t)


class Reverse(_Wrapped):
    def frame(self, t: float) -> np.ndarray:
        return self.src.frame(len(self.src) - 1 - t)

    def homography(self, t: float) -> np.ndarray:
        return self.src.homography(len(self.src) - 1 - t)


class Boomerang(_Wrapped):
    """Forwards, then backwards: 2N-1 frames, the turn (frame N-1) shown once."""

    def __len__(self) -> int:
        return 2 * len(self.src) - 1

    def _source_time(self, t: float) -> float:
        last = len(self.src) - 1
        return t if t <= last else 2 * last - t

    def frame(self, t: float) -> np.ndarray:
        return self.src.frame(self._source_time(t))

    def homography(self, t: float) -> np.ndarray:
        return self.src.homography(self._source_time(t))


# -- glitch -----------------------------------------------------------------------------


def glitched_frames(n: int, amount: float, seed: int) -> np.ndarray:
    """Which of n frames glitch touches (bool, n): exactly round(amount n) of them, in short
    bursts, chosen by the seed alone."""
    k = min(n, round(amount * n))
    rng = np.random.default_rng((seed, GLITCH_SALT))
    touched = np.zeros(n, bool)
    while touched.sum() < k:
        start, length = int(rng.integers(n)), int(rng.integers(GLITCH_BURST[0], GLITCH_BURST[1] + 1))
        for j in range(start, min(n, start + length)):
            if touched.sum() >= k:
                break
            touched[j] = True
    return touched


def glitch_frame(frame: np.ndarray, seed: int, index: int) -> np.ndarray:
    """One glitched frame: the red and blue channels split sideways, bands of rows displaced,
    and a burst of bright scanlines; each frame's own draw from (seed, index)."""
    rng = np.random.default_rng((seed, GLITCH_SALT, index))
    h, w = frame.shape[:2]
    out = frame.copy()
    # RGB split: red one way, blue the other, edges held.
    s = max(1, int(w * rng.uniform(0.004, 0.02)))
    out[:, s:, 0], out[:, :s, 0] = frame[:, :-s, 0], frame[:, :1, 0]
    out[:, :-s, 2], out[:, -s:, 2] = frame[:, s:, 2], frame[:, -1:, 2]
    # Displaced bands: rows slid sideways, wrapping like a torn sync.
    for _ in range(int(rng.integers(3, 9))):
        y0 = int(rng.integers(0, h))
        bh = int(rng.integers(max(2, h // 80), max(3, h // 12)))
        out[y0:y0 + bh] = np.roll(out[y0:y0 + bh], int(rng.integers(-w // 8, w // 8 + 1)), axis=1)
    # Scanline burst: every other row of a band brightened.
    y0 = int(rng.integers(0, h))
    band = out[y0:y0 + int(rng.integers(h // 20, h // 4 + 2)):2]
    band[:] = np.minimum(band.astype(np.int16) + int(rng.integers(40, 100)), 255).astype(np.uint8)
    return out


class Glitch(_Wrapped):
    def __init__(self, src: Frames, amount: float, seed: int):
        super().__init__(src)
        self.seed = seed
        self.touched = glitched_frames(len(src), amount, seed)

    def frame(self, t: float) -> np.ndarray:
        i = min(max(round(t), 0), len(self) - 1)
        frame = self.src.frame(t)
        return glitch_frame(frame, self.seed, i) if self.touched[i] else frame


# -- mirror fold -------------------------------------------------------------------------


def _ease(x):
    """Smoothstep on [0, 1], held outside; scalars or arrays."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def fold_homography(width: int, height: int, line_y: float, keep_below: bool, angle: float) -> np.ndarray:
    """Where the kept half lands once folded by `angle` (0: on itself, pi: flat on the other
    side, mirrored) about the line y = line_y, seen by a pinhole at the frame's centre: a
    homography, frame pixels -> frame pixels (d2v coordinates)."""
    f = FOLD_FOCAL * max(width, height)
    sign = 1.0 if keep_below else -1.0
    reach = (height - line_y) if keep_below else line_y  # how far the kept half extends from the line
    src, dst = [], []
    for x in (0.0, float(width)):
        for d in (0.0, reach):
            # Hinged on the line, the point d from it turns toward the viewer (-Z).
            y, z = line_y + sign * d * math.cos(angle), -d * math.sin(angle)
            src.append((x, line_y + sign * d))
            dst.append((width / 2 + f * (x - width / 2) / (f + z), height / 2 + f * (y - height / 2) / (f + z)))
    return cv2.getPerspectiveTransform(np.float32(src), np.float32(dst)).astype(np.float64)


class MirrorFold(_Wrapped):
    """The half of the frame that holds more of the picture (judged over the whole clip, so
    it never flips) is copied and folded over the other half along a horizontal line through
    the path's centre, as it lies in each frame."""

    def __init__(self, src: Frames, centre):
        super().__init__(src)
        n = len(src)
        ys = np.array([camera.apply_homography(src.homography(i), [centre])[0, 1] for i in range(n)])
        self.line_y = np.clip(ys, 0.1 * self.height, 0.9 * self.height)
        self.keep_below = float(np.mean(self.line_y)) <= self.height / 2

    def angle(self, t: float) -> float:
        span = FOLD_SHARE * max(len(self) - 1, 1)
        return math.pi * float(_ease(t / span))

    def frame(self, t: float) -> np.ndarray:
        frame = self.src.frame(t)
        i = min(max(round(t), 0), len(self) - 1)
        w, h, y0 = self.width, self.height, float(self.line_y[i])
        H = fold_homography(w, h, y0, self.keep_below, self.angle(t))
        kept = np.zeros((h, w), np.uint8)
        rows = np.arange(h) + 0.5
        kept[(rows >= y0) if self.keep_below else (rows < y0)] = 255  # warped with the flap: its matte
        M = camera.to_opencv(H)
        flap = cv2.warpPerspective(frame, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpPerspective(kept, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        return _blend(frame, flap, alpha.astype(np.float32) * np.float32(1 / 255))


def _blend(under: np.ndarray, over: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """over * weight + under * (1 - weight), weight float32 (h, w) in [0, 1]; cv2's blend,
    about 1.4 ms a 1024x576 frame (numpy on the mixed pixels alone took 7)."""
    return cv2.blendLinear(over, under, weight, 1.0 - weight)


# -- bullet time --------------------------------------------------------------------------


def bullet_schedule(n: int) -> tuple[np.ndarray, int, int]:
    """Source time of each of n output frames, and the frozen section [a, b] (output frames).
    Speed 1 ramps smoothly to 0 before a, stays 0 to b, ramps back after; then every time is
    scaled so the clip still runs from source frame 0 to N-1."""
    if n < 5:
        return np.arange(n, dtype=np.float64), n // 2, n // 2
    freeze = max(2, round(FREEZE_SHARE * n))
    ramp = max(1, round(RAMP_SHARE * n))
    a = (n - 1 - freeze) // 2
    b = a + freeze
    i = np.arange(n, dtype=np.float64)
    speed = np.ones(n)
    speed[(i >= a) & (i <= b)] = 0.0
    down = (i > a - ramp) & (i < a)
    speed[down] = 1 - _ease((i[down] - (a - ramp)) / ramp)
    up = (i > b) & (i < b + ramp)
    speed[up] = _ease((i[up] - b) / ramp)
    tau = np.concatenate([[0.0], np.cumsum((speed[:-1] + speed[1:]) / 2)])
    return tau * (n - 1) / tau[-1], a, b


class BulletTime(_Wrapped):
    """Keeps the clip's length (its timing and the path check's frame count stay the move's):
    the frozen middle is paid for by the rest playing faster."""

    def __init__(self, src: Frames, centre, depth: np.ndarray | None = None):
        super().__init__(src)
        self.tau, self.a, self.b = bullet_schedule(len(src))
        self.frozen_at = float(self.tau[self.a])
        self.centre, self.depth = centre, depth
        self._frozen: tuple[CameraRenderer, CameraTrajectory] | None = None

    def _swing(self) -> tuple[CameraRenderer, CameraTrajectory]:
        """The frozen frame as a photo of its own, and the cameras that swing around the path's
        centre in it: yaw out and back, each view zoomed just enough to stay
        inside the frame. Its first and last cameras are the frame's own view."""
        if self._frozen is not None:
            return self._frozen
        w, h = self.width, self.height
        H = self.src.homography(self.frozen_at)
        frozen = self.src.frame(self.frozen_at)
        depth = None
        if self.depth is not None:  # the job's depth, seen as the frozen frame sees the photo
            depth = cv2.warpPerspective(self.depth.astype(np.float32), camera.to_opencv(H), (w, h),
                                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        g = camera.apply_homography(H, [self.centre])[0]
        g = np.array([np.clip(g[0], 0.2 * w, 0.8 * w), np.clip(g[1], 0.2 * h, 0.8 * h), 0.0])
        c0 = np.array([w / 2, h / 2, -float(w)])
        k = self.b - self.a
        cams = []
        for j in range(k + 1):
            # Out and back, starting and ending at rest (sin^2): the zoom that keeps the view
            # inside grows with the yaw, so it too eases in and out instead of jumping.
            yaw = math.radians(BULLET_YAW_DEG) * math.sin(math.pi * j / max(k, 1)) ** 2
            c, s = math.cos(yaw), math.sin(yaw)
            Ry = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
            C, R = g + Ry @ (c0 - g), Ry.T  # the rig turned about the vertical through the centre
            cams.append(self._fitted(j, C, R, w, h))
        trajectory = CameraTrajectory(effect="orbit", image_width=w, image_height=h, width=w, height=h,
                                      fps=30, base_distance=float(w), frames=cams, subject=[g[0], g[1]])
        self._frozen = (CameraRenderer(frozen, depth), trajectory)
        return self._frozen

    @staticmethod
    def _fitted(j: int, C, R, w: int, h: int) -> CameraFrame:
        """The least lens zoom (>= 1) at which the view lies inside the frozen frame."""
        def frame(z: float) -> CameraFrame:
            return camera.make_frame(j, 0.0, camera_center=C, R=R, fx=w * z, out_w=w, out_h=h, crop_w=float(w))

        def inside(z: float) -> bool:
            fp = camera.footprint(frame(z), w, h)
            return bool((fp[:, 0] >= -1e-6).all() and (fp[:, 0] <= w + 1e-6).all()
                        and (fp[:, 1] >= -1e-6).all() and (fp[:, 1] <= h + 1e-6).all())

        lo, hi = 1.0, 4.0
        if inside(lo):
            return frame(lo)
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if inside(mid) else (mid, hi)
        return frame(hi)

    def frame(self, t: float) -> np.ndarray:
        i = min(max(round(t), 0), len(self) - 1)
        if self.a < self.b and self.a <= i <= self.b:
            renderer, swing = self._swing()
            return next(renderer.render(swing, indices=[i - self.a]))
        return self.src.frame(float(np.interp(t, np.arange(len(self)), self.tau)))

    def homography(self, t: float) -> np.ndarray:
        i = min(max(round(t), 0), len(self) - 1)
        if self.a < self.b and self.a <= i <= self.b:
            _, swing = self._swing()
            return camera.frame_homography(swing.frames[i - self.a]) @ self.src.homography(self.frozen_at)
        return self.src.homography(float(np.interp(t, np.arange(len(self)), self.tau)))


# -- tenet -------------------------------------------------------------------------------


def tenet_mask(width: int, height: int, centre) -> np.ndarray:
    """uint8 (h, w): 255 inside the disc, a smoothstep seam TENET_FEATHER x radius wide, 0 outside."""
    r = TENET_RADIUS * min(width, height)
    feather = TENET_FEATHER * r
    cx = float(np.clip(centre[0], r, width - r)) if width > 2 * r else width / 2
    cy = float(np.clip(centre[1], r, height - r)) if height > 2 * r else height / 2
    x = np.arange(width, dtype=np.float32) + 0.5 - cx
    y = np.arange(height, dtype=np.float32) + 0.5 - cy
    d = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    s = np.clip((r + feather - d) / feather, 0.0, 1.0)
    return np.round(255 * s * s * (3 - 2 * s)).astype(np.uint8)


class Tenet(_Wrapped):
    """The disc sits where the path's end is in the clip's last frame (where the move arrives),
    fixed on screen; inside it frame i shows frame N-1-i."""

    def __init__(self, src: Frames, end):
        super().__init__(src)
        arrive = camera.apply_homography(src.homography(len(src) - 1), [end])[0]
        self.mask = tenet_mask(self.width, self.height, arrive)
        self._weight = self.mask.astype(np.float32) * np.float32(1 / 255)

    def frame(self, t: float) -> np.ndarray:
        forwards = self.src.frame(t)
        backwards = self.src.frame(len(self.src) - 1 - t)
        return _blend(forwards, backwards, self._weight)


# -- the chain ---------------------------------------------------------------------------


def apply_post(clip: Frames, names, ctx: PostContext) -> Frames:
    """The request's post effects, in order, over `clip`."""
    for name in names:
        if name == "reverse":
            clip = Reverse(clip)
        elif name == "boomerang":
            clip = Boomerang(clip)
        elif name == "glitch":
            clip = Glitch(clip, ctx.glitch_amount, ctx.seed)
        elif name == "mirror_fold":
            clip = MirrorFold(clip, ctx.centre)
        elif name == "bullet_time":
            clip = BulletTime(clip, ctx.centre, ctx.depth)
        elif name == "tenet":
            clip = Tenet(clip, ctx.end)
        else:
            raise ValueError(f"no post effect {name!r}")  # the request model admits only known names
    return clip


def post_method(names, seed: int, glitch_amount: float) -> str:
    """The manifest's `methods["post"]`."""
    parts = [f"glitch (amount {glitch_amount:g}, seed {seed})" if n == "glitch" else n for n in names]
    return (" -> ".join(parts) + ": after upscaling, before the look and the encoder; the path check measures "
            "the frames before post and look")


def frames_of(clip: Frames):
    """Every frame of the clip, in order."""
    for i in range(len(clip)):
        yield clip.frame(i)
