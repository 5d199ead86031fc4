"""Subject motion: things in the photo that move along their own drawn paths (a motion
brush), beside the camera's move.

    check_subjects(request, W, H)                   bad regions and tracks, before any work
    scene = SubjectScene.build(image, depth, request)   refine, cut out, fill the holes
    renderer = scene.renderer()                     renders like a CameraRenderer, subjects moving
    still_trajectory(request, W, H)                 the camera of a request with no path: a hold

A request's `subjects` each name a region (a brush stroke, a polygon or a mask image) and
a path; `still` regions must not move. The camera backend renders them in layers:

1. Refine: the region is what a person painted, roughly. OpenCV's GrabCut, seeded with the
   region as "probably the object", a band around it as "probably background" and the rest
   as background, pulls it to the object's edges (`refine_region`). Still regions are taken
   out of every subject.
2. Cut out: each subject becomes a sprite: the photo's pixels with a soft alpha (the refined
   mask, feathered by FEATHER_PX) and a depth: its own `depth`, else the depth map's median
   inside it, else its place in the photo (lower = nearer, as on a ground plane).
3. Fill: the background plate is the photo with every subject's place (grown by the feather)
   inpainted from the background around it (`fill_hole`: `d2v.inpaint.inpaint_hole` at a scale
   where the hole is narrow, softened inside, the subjects never a source), and the depth map
   filled alike, so nothing of a subject stays behind.
4. Render: the plate goes through the camera (`d2v.render.CameraRenderer`, depth and all);
   each sprite goes through the same camera as a flat layer at its depth, moved along its
   track (translation, `scale`, `rotate` about its centre), and is composited far to near.
   Subjects are in front of the background they pass over. `render_validity` marks the
   filled hole as invented (False) where no subject covers it.

Track timing: a subject's first path point is where it is grabbed; at clip fraction p it has
moved by path(p) - path(0). With `t` it moves at the speed drawn (the drawing's duration
stretched over the clip); without, at constant speed with eased ends. `scale` and `rotate`
grow with the distance travelled.

Motion blur: the request's `motion_blur` is the camera's shutter (d2v.render blurs the
background's move). A subject moving more than BLUR_FROM_PX a frame is blurred along its own
track over a shutter of at least half a frame (a film camera's 180 degrees): a car driving
out of the frame smears as a filmed one does. Its sub-frames move the subject, not the camera.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from d2v import camera
from d2v.errors import InvalidRequestError
from d2v.inpaint import fill_smooth, inpaint_hole
from d2v.models import (
    CameraTrajectory, Canvas, DrawnPath, Region, RenderRequest, Subject, parse_region, read_json_file,
)
from d2v.render import CameraRenderer
from d2v.trajectory import DEFAULT_PARALLAX, PIVOT_EFFECTS

MASK_PREFIX = "data:image/png;base64,"
MIN_REGION_PX = 16  # a region with fewer pixels than this (in the photo) is empty
MAX_REGION_SHARE = 0.9  # a region covering more of the photo leaves no background to move it over
GRABCUT_SIDE = 512  # GrabCut runs on a copy at most this large (long side)
GRABCUT_ITERATIONS = 4
SEGMENT_SIDE = 1024  # a segmentation model sees a copy at most this large (SAM's own input side)
SEGMENT_POINTS = 5  # point prompts spread over the painted region's core
CORE = 0.5  # deeper inside a painted region than this x its deepest point: surely the object
BRUSH_REACH = 1.0  # a brush stroke may fall this x its radius short of the object's edge (GrabCut's band)
FEATHER_PX = 1.5  # the sprite's soft edge (Gaussian sigma), image pixels at 1024 on the long side
HOLE_GROW = 3  # the hole left is the subject grown by this x the feather, so no edge pixel stays,
HOLE_MARGIN = 0.012  # and by at least this x the photo's long side: thin things hugging its outline go too
SUBJECT_SHUTTER = 0.5  # frames: a moving subject is blurred at least as a 180-degree shutter films it
BLUR_FROM_PX = 2.0  # a subject moving less than this a frame (frame pixels) stays sharp
BLUR_SAMPLES = 12  # sub-frame samples of a subject's move, at most
FILL_ACROSS_PX = 32  # a hole is filled at a scale where it is at most this wide (fill_hole)
EASE = 0.2  # an undrawn-speed track eases in and out over this share of the clip
COLOURS = ["#ff5a5a", "#4fb3ff", "#ffd23f", "#5ee07a", "#c77dff", "#ff9f40"]  # the page's and fidelity.png's


# -- the request's parts ----------------------------------------------------------------------


def mask_data_url(png_bytes: bytes, what: str = "mask") -> str:
    """A mask image file -> the `mask` value a validated request carries (re-encoded as PNG);
    `what` names the file in errors (a request may name several)."""
    if not png_bytes:
        raise InvalidRequestError(f"{what}: the file is empty (0 bytes; use a PNG: white = the region)")
    try:
        img = cv2.imdecode(np.frombuffer(png_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # (a header it chokes on, rather than declines)
        img = None
    if img is None or img.size == 0:
        raise InvalidRequestError(f"{what}: not an image OpenCV can read (use a PNG: white = the region)")
    ok, png = cv2.imencode(".png", _mask_plane(img))
    return MASK_PREFIX + base64.b64encode(png.tobytes()).decode()


def _mask_plane(img: np.ndarray) -> np.ndarray:
    """An image read with IMREAD_UNCHANGED -> uint8 0/255: alpha where it has one, else brightness."""
    if img.ndim == 3 and img.shape[2] == 4 and img[:, :, 3].min() < 255:
        plane = img[:, :, 3]
    elif img.ndim == 3:
        plane = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)
    else:
        plane = img
    if np.issubdtype(plane.dtype, np.floating):  # (a float TIFF: 0..1)
        plane = np.nan_to_num(plane.astype(np.float64)) * 255.0
    elif plane.dtype != np.uint8:
        plane = plane.astype(np.float64) * 255.0 / max(1.0, float(np.iinfo(plane.dtype).max))
    return np.where(plane >= 128, 255, 0).astype(np.uint8)


def attach_masks(request: RenderRequest, files: dict[str, bytes]) -> RenderRequest:
    """Regions whose `mask` names one of `files` (HTTP file parts, batch or CLI paths) get the
    file as a data URL. A named mask that was not sent is the caller's error."""
    def attach(region: Region, where: str) -> Region:
        if region.mask is None or region.mask.startswith(MASK_PREFIX):
            return region
        if region.mask not in files:
            raise InvalidRequestError(f"{where}.mask: {region.mask!r} was not sent: attach the mask image as a file "
                                      f"part named {region.mask!r}")
        return region.model_copy(update={"mask": mask_data_url(files[region.mask], f"{where}.mask {region.mask!r}")})

    subjects = [s.model_copy(update={"region": attach(s.region, f"subjects[{i}].region")})
                for i, s in enumerate(request.subjects)]
    still = [attach(r, f"still[{i}]") for i, r in enumerate(request.still)]
    return request.model_copy(update={"subjects": subjects, "still": still})


def mask_names(request: RenderRequest) -> set[str]:
    """The mask files a request names and does not carry yet."""
    regions = [s.region for s in request.subjects] + list(request.still)
    return {r.mask for r in regions if r.mask is not None and not r.mask.startswith(MASK_PREFIX)}


def region_mask(region: Region, width: int, height: int, where: str = "region") -> np.ndarray:
    """The region as painted, (height, width) bool, before refinement."""
    if region.mask is not None:
        if not region.mask.startswith(MASK_PREFIX):
            raise InvalidRequestError(f"{where}.mask: {region.mask[:60]!r} is not attached: give the mask image "
                                      "(CLI --subject MASK.png:PATH.json, an HTTP file part of that name)")
        try:
            raw = base64.b64decode(region.mask[len(MASK_PREFIX):], validate=True)
        except ValueError:
            raise InvalidRequestError(f"{where}.mask: the data URL is not base64") from None
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise InvalidRequestError(f"{where}.mask: not a readable image")
        plane = _mask_plane(img)
        if plane.shape != (height, width):
            plane = cv2.resize(plane, (width, height), interpolation=cv2.INTER_NEAREST)
        return plane >= 128
    out = np.zeros((height, width), np.uint8)
    shift = 4
    if region.polygon is not None:
        pts = region.image_points(region.polygon, width, height)
        cv2.fillPoly(out, [np.round((pts - 0.5) * (1 << shift)).astype(np.int32)], 255, cv2.LINE_8, shift)
    else:
        pts = region.image_points(region.brush, width, height)
        k = width / region.canvas.width if region.canvas is not None else 1.0
        r = max(1, round(region.radius * k))
        ipts = np.round((pts - 0.5) * (1 << shift)).astype(np.int32)
        for p in ipts:
            cv2.circle(out, (int(p[0]), int(p[1])), r << shift, 255, -1, cv2.LINE_8, shift)
        if len(ipts) > 1:
            cv2.polylines(out, [ipts], False, 255, 2 * r, cv2.LINE_8, shift)
    return out > 0


def check_region(region: Region, width: int, height: int, where: str = "region") -> None:
    """A region must hold some of the photo and leave background around it."""
    area = int(region_mask(region, width, height, where).sum())
    if area < MIN_REGION_PX:
        raise InvalidRequestError(f"{where}: is empty: it covers {area} pixels of the photo (paint over the "
                                  "thing, inside the photo)")
    if area > MAX_REGION_SHARE * width * height:
        raise InvalidRequestError(f"{where}: covers {100 * area / (width * height):.0f}% of the photo; a region "
                                  f"may cover at most {100 * MAX_REGION_SHARE:.0f}% (leave background around it)")


def check_subjects(request: RenderRequest, width: int, height: int) -> None:
    """A request's subjects and still regions against the photo: each region must hold some of
    it and leave background around it, each track must stay on it. InvalidRequestError names
    the subject (counted from 0) and the field."""
    for i, subject in enumerate(request.subjects):
        check_region(subject.region, width, height, f"subjects[{i}].region")
        xy = subject.path.image_points(width, height)
        outside = np.flatnonzero((xy[:, 0] < -0.5) | (xy[:, 0] > width + 0.5) | (xy[:, 1] < -0.5)
                                 | (xy[:, 1] > height + 0.5))
        if len(outside):
            j = int(outside[0])
            raise InvalidRequestError(
                f"subjects[{i}].path: point {j} ({xy[j, 0]:.0f}, {xy[j, 1]:.0f}) is outside the {width}x{height} "
                f"photo ({len(outside)} of {len(xy)} points are): a track must stay on the photo")
    for i, region in enumerate(request.still):
        check_region(region, width, height, f"still[{i}]")


def refine_region(image: np.ndarray, painted: np.ndarray, grow_px: float = 0.0) -> np.ndarray:
    """A painted region -> the object's own outline, (H, W) bool. The object is found by the
    segmentation model D2V_SEGMENT_MODEL names (`d2v.segment`, prompted with the region), else by
    GrabCut; either answer is held to the same rules: it lies within grow_px of the region (a
    brush stroke may fall short of the object's edge; a polygon or mask already encloses it: 0),
    the region's core is always in (a thing's parts coloured like the background around it, a
    nose cone against white masts, are not dropped from inside the stroke), and only the pieces
    that touch the region stay. Falls back to the painted region when too little of it is kept."""
    from d2v.segment import segment_model_setting, shared_segment_model

    model = segment_model_setting()
    h, w = painted.shape
    k = min(1.0, (SEGMENT_SIDE if model else GRABCUT_SIDE) / max(h, w))
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA) \
        if k < 1 else image
    seed = cv2.resize(painted.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    if seed.sum() < MIN_REGION_PX:
        return painted
    band = round(grow_px * k)
    reach = seed
    if band > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1,) * 2)
        reach = cv2.dilate(seed.astype(np.uint8), kernel) > 0
    inside = cv2.distanceTransform(seed.astype(np.uint8), cv2.DIST_L2, 5)
    core = inside > max(2.0, CORE * float(inside.max()))
    if model:
        fg = shared_segment_model(model).segment(small, _prompt_box(reach), _prompt_points(core if core.any() else seed))
    else:
        fg = _grabcut(small, seed, reach, core)
        if fg is None:
            return painted
    fg = ((fg & reach) | core).astype(np.uint8)
    # Keep the pieces that touch what was painted; fill pinholes.
    n, labels = cv2.connectedComponents(fg)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[seed & (fg > 0)])] = True
    keep[0] = False
    fg = keep[labels].astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    if fg.sum() < 0.25 * seed.sum():
        return painted
    return cv2.resize(fg * 255, (w, h), interpolation=cv2.INTER_LINEAR) >= 128


def _grabcut(image: np.ndarray, seed: np.ndarray, reach: np.ndarray, core: np.ndarray) -> np.ndarray | None:
    """GrabCut seeded with the region as probable object, the band of its reach as probable
    background, its core as object and the rest as background: (H, W) bool, or None when it
    has nothing to go on."""
    gc = np.full(seed.shape, cv2.GC_BGD, np.uint8)
    gc[reach] = cv2.GC_PR_BGD
    gc[seed] = cv2.GC_PR_FGD
    gc[core] = cv2.GC_FGD
    if (gc == cv2.GC_BGD).sum() < MIN_REGION_PX:  # no sure background: nothing to tell the object from
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models with k-means++ from OpenCV's (per-thread) RNG
    try:
        cv2.grabCut(np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), gc, None, bgd, fgd,
                    GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return None
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def _prompt_box(reach: np.ndarray) -> tuple[float, float, float, float]:
    """The box around where the object may be (x0, y0, x1, y1), pixel edges."""
    ys, xs = np.nonzero(reach)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _prompt_points(core: np.ndarray, n: int = SEGMENT_POINTS) -> np.ndarray:
    """Up to n points spread over the region's core (farthest-point sampling), pixel centres:
    a long stroke over a rocket names its nose and its tail, not n points at its middle."""
    ys, xs = np.nonzero(core)
    pts = np.column_stack([xs, ys]).astype(np.float64) + 0.5
    chosen = [len(pts) // 2]
    far = np.hypot(*(pts - pts[chosen[0]]).T)
    while len(chosen) < min(n, len(pts)):
        chosen.append(int(far.argmax()))
        far = np.minimum(far, np.hypot(*(pts - pts[chosen[-1]]).T))
    return pts[chosen]


def region_reach(region: Region, width: int) -> float:
    """How far past a region its object may reach, image pixels: a brush's radius (strokes fall
    short of edges), nothing for a polygon or a mask (they enclose it)."""
    if region.brush is None:
        return 0.0
    k = width / region.canvas.width if region.canvas is not None else 1.0
    return BRUSH_REACH * region.radius * k


OUTLINE_SIDE = 768  # the page's outline is refined on a copy of the photo at most this large


def outline_answer(image_bytes: bytes, region_json: str | bytes, mask_bytes: bytes | None = None) -> dict:
    """POST /v1/subjects/outline: a painted region refined to its object's edges, at once (on a
    copy of the photo at most OUTLINE_SIDE). Returns {"canvas", "outlines" ([[x, y], ...] each,
    in the region's canvas units), "share" (of the photo)}; a bad region is InvalidRequestError."""
    from d2v.images import decode_image

    region = parse_region(region_json)
    if region.mask is not None and not region.mask.startswith(MASK_PREFIX):
        if mask_bytes is None:
            raise InvalidRequestError("region.mask: send the mask image as a file part named 'mask'")
        region = region.model_copy(update={"mask": mask_data_url(mask_bytes, "region.mask 'mask'")})
    rgb = decode_image(image_bytes).rgb
    full_h, full_w = rgb.shape[:2]
    k = min(1.0, OUTLINE_SIDE / max(full_w, full_h))
    small = cv2.resize(rgb, (max(1, round(full_w * k)), max(1, round(full_h * k))), interpolation=cv2.INTER_AREA) \
        if k < 1 else rgb
    h, w = small.shape[:2]
    canvas = region.canvas or Canvas(width=full_w, height=full_h)
    # The region in the small copy's pixels: scale its canvas to it.
    scaled = region.model_copy(update={"canvas": canvas})
    check_region(scaled, w, h)
    mask = refine_region(small, region_mask(scaled, w, h, "region"), region_reach(scaled, w))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    eps = 0.002 * (w + h)
    sx, sy = canvas.width / w, canvas.height / h
    outlines = [[[round(float(x + 0.5) * sx, 2), round(float(y + 0.5) * sy, 2)] for x, y in cv2.approxPolyDP(c, eps, True)[:, 0]]
                for c in contours if len(c) >= 3]
    return {"canvas": canvas.model_dump(), "outlines": outlines, "share": round(float(mask.mean()), 4)}


# -- tracks -----------------------------------------------------------------------------------


@dataclass
class Track:
    """A subject's path in image pixels and when it is where."""

    xy: np.ndarray  # (N, 2)
    times: np.ndarray | None  # seconds drawn, (N,), or None
    duration_s: float  # the clip's
    fps: int
    n_frames: int
    loop: bool

    @classmethod
    def of(cls, path: DrawnPath, request: RenderRequest, width: int, height: int) -> "Track":
        return cls(path.image_points(width, height), path.times(), request.n_frames / request.fps, request.fps,
                   request.n_frames, request.loop)

    def clip_fraction(self, time_s: float) -> float:
        """0..1 through the move at a frame's time (a loop goes there and back)."""
        if self.loop:
            u = time_s * self.fps / max(self.n_frames, 1)
            return float(np.clip(1.0 - abs(1.0 - 2.0 * u), 0.0, 1.0))
        return float(np.clip(time_s * self.fps / max(self.n_frames - 1, 1), 0.0, 1.0))

    def progress(self, time_s: float) -> float:
        """The share of the track's length travelled, 0..1."""
        tau = self.clip_fraction(time_s)
        seg = np.hypot(*np.diff(self.xy, axis=0).T)
        length = np.concatenate([[0.0], np.cumsum(seg)])
        if length[-1] <= 0:
            return 0.0
        if self.times is not None and self.times[-1] > self.times[0]:
            drawn = self.times[0] + tau * (self.times[-1] - self.times[0])
            return float(np.interp(drawn, self.times, length) / length[-1])
        return _ease(tau)

    def at(self, time_s: float) -> tuple[np.ndarray, float]:
        """(the displacement from the grab point, image pixels; the progress 0..1)."""
        p = self.progress(time_s)
        seg = np.hypot(*np.diff(self.xy, axis=0).T)
        length = np.concatenate([[0.0], np.cumsum(seg)])
        d = p * length[-1]
        pos = np.array([np.interp(d, length, self.xy[:, 0]), np.interp(d, length, self.xy[:, 1])])
        return pos - self.xy[0], p


def _ease(tau: float) -> float:
    """Constant speed with smooth starts and stops over EASE of the clip at each end."""
    a = EASE
    if tau <= 0:
        return 0.0
    if tau >= 1:
        return 1.0
    v = 1.0 / (1.0 - a)  # the cruising speed that covers 1 in time 1 with ramps of length a
    if tau < a:
        return 0.5 * v * tau * tau / a
    if tau > 1 - a:
        return 1.0 - 0.5 * v * (1 - tau) ** 2 / a
    return 0.5 * v * a + v * (tau - a)


# -- layers -----------------------------------------------------------------------------------


@dataclass
class SubjectLayer:
    index: int
    mask: np.ndarray  # (H, W) bool, refined
    rgba: np.ndarray  # (h, w, 4) float32, premultiplied, the cut-out's bounding box
    origin: np.ndarray  # (x, y) of the box's top-left corner, image pixels
    centre: np.ndarray  # the mask's centroid: scale and rotate turn about it
    track: Track
    scale: float
    rotate_deg: float
    depth: float  # brighter = nearer, 0..1
    bottom: float  # its lowest row: the tie-break for depth (lower = nearer)

    def motion(self, time_s: float) -> np.ndarray:
        """Image -> image: where the photo's subject pixels are at a frame's time, 3x3."""
        d, p = self.track.at(time_s)
        s = self.scale ** p
        a = math.radians(self.rotate_deg * p)
        c, sn = math.cos(a), math.sin(a)
        cx, cy = self.centre
        # y points down: a positive angle turns clockwise on screen.
        T = np.array([[s * c, -s * sn, 0.0], [s * sn, s * c, 0.0], [0.0, 0.0, 1.0]])
        return _translate(cx + d[0], cy + d[1]) @ T @ _translate(-cx, -cy)

    def planned_at(self, time_s: float) -> np.ndarray:
        """Where its centre is, image pixels, at a frame's time."""
        return camera.apply_homography(self.motion(time_s), self.centre[None])[0]


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def layer_homography(trajectory: CameraTrajectory, index_frame, s: float) -> np.ndarray:
    """Image -> frame pixels for a flat layer at relative depth s (1 = the image plane) seen
    by `index_frame` (a CameraFrame), the trajectory's first camera being the reference that
    sees every layer undistorted (as `d2v.render` places depth): P = C0 + s (Q - C0)."""
    c0 = trajectory.frames[0].camera_center()
    L = np.array([[s, 0.0, (1 - s) * c0[0]], [0.0, s, (1 - s) * c0[1]], [0.0, 0.0, (1 - s) * c0[2]],
                  [0.0, 0.0, 1.0]])
    Rt = np.column_stack([index_frame.R(), index_frame.t()])
    return index_frame.K() @ Rt @ L


class SubjectScene:
    """One photo's subjects, cut out, and the background plate they leave. Build once a job."""

    def __init__(self, image: np.ndarray, depth: np.ndarray | None, plate: np.ndarray, plate_depth,
                 hole: np.ndarray, still: np.ndarray, layers: list[SubjectLayer], parallax: float = DEFAULT_PARALLAX):
        self.image, self.depth, self.plate, self.plate_depth = image, depth, plate, plate_depth
        self.hole, self.still, self.layers, self.parallax = hole, still, layers, parallax

    @classmethod
    def build(cls, image: np.ndarray, depth: np.ndarray | None, request: RenderRequest) -> "SubjectScene":
        h, w = image.shape[:2]
        check_subjects(request, w, h)
        still = np.zeros((h, w), bool)
        for i, region in enumerate(request.still):
            still |= region_mask(region, w, h, f"still[{i}]")
        feather = FEATHER_PX * max(w, h) / 1024.0
        grow = max(2, math.ceil(HOLE_GROW * feather), round(HOLE_MARGIN * max(w, h)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
        depth_img = None
        if depth is not None:
            depth_img = np.asarray(depth, np.float32)
            if depth_img.ndim == 3:
                depth_img = depth_img[:, :, 0]
            if depth_img.shape != (h, w):
                depth_img = cv2.resize(depth_img, (w, h), interpolation=cv2.INTER_LINEAR)
        layers, hole = [], np.zeros((h, w), bool)
        for i, subject in enumerate(request.subjects):
            painted = region_mask(subject.region, w, h, f"subjects[{i}].region")
            mask = refine_region(image, painted, region_reach(subject.region, w)) & ~still
            if mask.sum() < MIN_REGION_PX:
                raise InvalidRequestError(f"subjects[{i}].region: is empty once the still regions are taken out")
            hole |= (cv2.dilate(mask.astype(np.uint8), kernel) > 0) & ~still  # still regions stay as they are
            layers.append(_cut_out(i, image, mask, depth_img, subject, request, feather))
        plate = fill_hole(image, hole)
        plate_depth = None
        if depth_img is not None:
            # (Not Telea: on a float map in [0, 1] OpenCV's is off by up to 1.5, `d2v.inpaint.fill_smooth`.)
            plate_depth = fill_smooth(depth_img, hole)
        return cls(image, depth_img, plate, plate_depth, hole, still, layers)

    def ordered(self) -> list[SubjectLayer]:
        """Far to near: by depth, then by how low in the photo, then by order given."""
        return sorted(self.layers, key=lambda L: (L.depth, L.bottom, L.index))

    def layer_depth(self, layer: SubjectLayer, trajectory: CameraTrajectory) -> float:
        """A subject's relative depth s as `d2v.render` places the depth map's layers (1 = the plane;
        pivot moves put their subject's layer on the plane). Flat without a depth map."""
        if self.plate_depth is None:
            return 1.0
        s = 1.0 - self.parallax * layer.depth
        if trajectory.effect in PIVOT_EFFECTS and trajectory.subject is not None:
            h, w = self.plate_depth.shape
            px = int(np.clip(trajectory.subject[0], 0, w - 1))
            py = int(np.clip(trajectory.subject[1], 0, h - 1))
            s /= 1.0 - self.parallax * float(self.plate_depth[py, px])
        return s

    def sprite_into_frame(self, layer: SubjectLayer, trajectory: CameraTrajectory, frame,
                          time_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The subject as a frame sees it (where its track has it at `time_s`, default the
        frame's): (premultiplied RGB float32 (h, w, 3), alpha (h, w))."""
        t = frame.time_s if time_s is None else time_s
        return self._warp(layer, trajectory, [self._placement(layer, trajectory, frame) @ layer.motion(t)])

    def blurred_sprite(self, layer: SubjectLayer, trajectory: CameraTrajectory, frame,
                       shutter: float) -> tuple[np.ndarray, np.ndarray]:
        """The subject as a frame films it with a shutter open `shutter` frames: where it moves
        more than BLUR_FROM_PX a frame (in the frame's pixels), the average of sub-frame
        samples of its own move across the open shutter, about a pixel apart (at most
        BLUR_SAMPLES); else sprite_into_frame's sharp one."""
        H = self._placement(layer, trajectory, frame)
        dt = shutter / trajectory.fps
        ends = [camera.apply_homography(H @ layer.motion(frame.time_s + d), layer.centre[None])[0]
                for d in (-0.5 / trajectory.fps, 0.5 / trajectory.fps)]
        step = float(np.hypot(*(ends[1] - ends[0])))
        if step <= BLUR_FROM_PX or dt <= 0:
            return self.sprite_into_frame(layer, trajectory, frame)
        n = int(np.clip(math.ceil(step * shutter), 2, BLUR_SAMPLES))
        return self._warp(layer, trajectory, [H @ layer.motion(frame.time_s + ((k + 0.5) / n - 0.5) * dt)
                                              for k in range(n)])

    def _placement(self, layer: SubjectLayer, trajectory: CameraTrajectory, frame) -> np.ndarray:
        """Image -> frame pixels for the subject's layer, before its own move."""
        return layer_homography(trajectory, frame, self.layer_depth(layer, trajectory))

    @staticmethod
    def _warp(layer: SubjectLayer, trajectory: CameraTrajectory, moves: list[np.ndarray]
              ) -> tuple[np.ndarray, np.ndarray]:
        """The cut-out through each of `moves` (image -> frame), averaged: full-frame
        (premultiplied RGB, alpha), each warp made only over the box the cut-out can reach."""
        w, h = trajectory.width, trajectory.height
        out = np.zeros((h, w, 4), np.float32)
        bh, bw = layer.rgba.shape[:2]
        corners = np.array([[0.0, 0.0], [bw, 0.0], [0.0, bh], [bw, bh]])
        maps = [M @ _translate(*layer.origin) for M in moves]
        reach = np.concatenate([camera.apply_homography(M, corners) for M in maps])
        x0, y0 = np.maximum(np.floor(reach.min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 2, [w, h])
        if x1 <= x0 or y1 <= y0:
            return out[:, :, :3], out[:, :, 3]
        box = out[y0:y1, x0:x1]
        for M in maps:
            box += cv2.warpPerspective(layer.rgba, camera.to_opencv(_translate(-x0, -y0) @ M), (x1 - x0, y1 - y0),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if len(maps) > 1:
            box /= len(maps)
        return out[:, :, :3], out[:, :, 3]

    def renderer(self) -> "SubjectRenderer":
        return SubjectRenderer(self)


def fill_hole(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The photo with the subjects' places filled from the background around them (never from a
    subject). Telea's fill marches in from the hole's edge and, across a hole hundreds of pixels
    wide, draws fans of streaks from the edge's colours (a garage smeared where a motorcycle
    stood); computed at a scale where the hole is at most FILL_ACROSS_PX across, it is a soft
    continuation of the colours around, as an out-of-focus background would be."""
    if not hole.any():
        return image.copy()
    inward = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
    across = 2.0 * float(inward.max())
    scale = float(np.clip(FILL_ACROSS_PX / max(across, 1.0), 0.05, 1.0))
    plate = inpaint_hole(image, hole, source=~hole, scale=scale)
    if across <= FILL_ACROSS_PX:
        return plate
    # What is left of the fans at that scale, softened away from the edge (the edge itself
    # keeps Telea's match to the pixels beside it).
    sigma = across / 8.0
    h, w = hole.shape
    small = cv2.resize(plate, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    soft = cv2.resize(cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma * scale), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    w = np.clip(inward[hole] / sigma, 0.0, 1.0)[:, None]
    plate[hole] = np.clip(w * soft[hole] + (1.0 - w) * plate[hole] + 0.5, 0, 255).astype(np.uint8)
    return plate


def _cut_out(i: int, image: np.ndarray, mask: np.ndarray, depth: np.ndarray | None, subject: Subject,
             request: RenderRequest, feather: float) -> SubjectLayer:
    h, w = mask.shape
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), feather) if feather > 0 else mask.astype(np.float32)
    alpha = np.minimum(alpha * 2.0, 1.0) * (alpha > 0.02)  # the soft edge lies outside the object, not inside
    ys, xs = np.nonzero(alpha > 0)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    a = alpha[y0:y1, x0:x1, None]
    rgba = np.concatenate([image[y0:y1, x0:x1].astype(np.float32) * a, a], axis=2)
    # Zero-padded by one pixel so the warp's bilinear edge fades out rather than smears.
    rgba = np.pad(rgba, ((1, 1), (1, 1), (0, 0)))
    my, mx = np.nonzero(mask)
    if subject.depth is not None:
        depth_value = float(subject.depth)
    elif depth is not None:
        depth_value = float(np.median(depth[mask]))
    else:
        depth_value = 0.0
    return SubjectLayer(index=i, mask=mask, rgba=np.ascontiguousarray(rgba), origin=np.array([x0 - 1.0, y0 - 1.0]),
                        centre=np.array([mx.mean() + 0.5, my.mean() + 0.5]),
                        track=Track.of(subject.path, request, w, h), scale=subject.scale,
                        rotate_deg=subject.rotate, depth=depth_value, bottom=float(my.max()))


class SubjectRenderer:
    """Renders a SubjectScene through cameras: the same calls as `d2v.render.CameraRenderer`
    (render, render_validity; width, height, depth, depth_parallax), so the
    camera backend's streaming, post effects and the svd guide take it as they take that."""

    def __init__(self, scene: SubjectScene):
        self.scene = scene
        self.background = CameraRenderer(scene.plate, scene.plate_depth)
        self.width, self.height = self.background.width, self.background.height

    @property
    def image(self) -> np.ndarray:
        return self.scene.image

    @property
    def depth(self) -> np.ndarray | None:
        return self.background.depth

    @property
    def depth_parallax(self) -> float | None:
        return self.background.depth_parallax

    def render(self, trajectory: CameraTrajectory, *, motion_blur: float = 0.0, samples: int = 6,
               indices: Sequence[int] | None = None) -> Iterator[np.ndarray]:
        order = list(range(len(trajectory.frames)) if indices is None else indices)
        layers = self.scene.ordered()
        shutter = max(float(motion_blur), SUBJECT_SHUTTER)
        for i, out in zip(order, self.background.render(trajectory, motion_blur=motion_blur, samples=samples,
                                                        indices=order)):
            frame = trajectory.frames[i]
            acc = None
            for layer in layers:
                rgb, a = self.scene.blurred_sprite(layer, trajectory, frame, shutter)
                if not a.any():
                    continue
                if acc is None:
                    acc = out.astype(np.float32)
                acc *= (1.0 - a)[:, :, None]
                acc += rgb
            if acc is not None:
                np.clip(acc + 0.5, 0, 255, out=acc)
                out = acc.astype(np.uint8)
            yield out

    def render_validity(self, trajectory: CameraTrajectory, indices: Sequence[int] | None = None
                        ) -> Iterator[np.ndarray]:
        """True where the frame shows the photo: the background's validity less the filled
        holes, plus wherever a subject (the photo's own pixels) covers them."""
        order = list(range(len(trajectory.frames)) if indices is None else indices)
        hole = self.scene.hole.astype(np.float32)
        w, h = trajectory.width, trajectory.height
        for i, valid in zip(order, self.background.render_validity(trajectory, indices=order)):
            frame = trajectory.frames[i]
            H = camera.frame_homography(frame)
            filled = cv2.warpPerspective(hole, camera.to_opencv(H), (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.01
            covered = np.zeros((h, w), bool)
            for layer in self.scene.layers:
                covered |= self.scene.sprite_into_frame(layer, trajectory, frame)[1] > 0.5
            yield (valid & ~filled) | covered


def renderer_for(image: np.ndarray, depth: np.ndarray | None, request: RenderRequest):
    """The camera backend's renderer for a job: subjects moving when it has any."""
    if not request.subjects:
        return CameraRenderer(image, depth)
    return SubjectScene.build(image, depth, request).renderer()


def still_trajectory(request: RenderRequest, width: int, height: int) -> CameraTrajectory:
    """A request with subjects and no camera path: the camera holds on the whole photo."""
    u0, v0, cw, ch = camera.cover_crop(width, height, request.width, request.height)
    centre = np.array([u0 + cw / 2.0, v0 + ch / 2.0, -cw])
    frames = [camera.make_frame(i, i / request.fps, camera_center=centre, R=np.eye(3), fx=float(request.width),
                                out_w=request.width, out_h=request.height, crop_w=cw)
              for i in range(request.n_frames)]
    return CameraTrajectory(effect="still", image_width=width, image_height=height, width=request.width,
                            height=request.height, fps=request.fps, base_distance=cw, frames=frames,
                            notes=["no camera path: the camera holds still; the subjects move"], path_shape=None)


def canvas_of(request: RenderRequest, width: int, height: int) -> Canvas:
    """The canvas the request's subjects were drawn on (the image itself for pixel points)."""
    for s in request.subjects:
        if s.path.canvas is not None:
            return s.path.canvas
    return Canvas(width=width, height=height)


# -- from files (the CLI, batch lines) --------------------------------------------------------


def _with_mask_files(regions: list, base: Path, what: str) -> list:
    """Regions (JSON) whose `mask` is a file path (relative to `base`) carry the file instead."""
    out = []
    for i, region in enumerate(regions):
        if isinstance(region, dict) and isinstance(region.get("mask"), str) \
                and not region["mask"].startswith(MASK_PREFIX):
            f = base / region["mask"]
            if not f.is_file():
                raise InvalidRequestError(f"{what}[{i}].mask: file not found: {f}")
            region = {**region, "mask": mask_data_url(f.read_bytes(), f"{what}[{i}].mask {str(f)!r}")}
        out.append(region)
    return out


def subject_fields(subject_args: Sequence[str] = (), subjects_file: str | None = None,
                   still_args: Sequence[str] = (), base: Path | None = None) -> dict:
    """The request's `subjects` and `still` from the CLI: `--subject MASK.png:PATH.json`
    (repeatable), `--subjects FILE.json` (a list of subjects, or {"subjects": [...], "still":
    [...]}, masks as paths relative to it) and `--still MASK.png`."""
    subjects, still = [], []
    if subjects_file:
        f = Path(subjects_file)
        data = read_json_file(f, "--subjects")
        if isinstance(data, list):
            data = {"subjects": data}
        listed = (data.get("subjects", []), data.get("still", [])) if isinstance(data, dict) else (None, None)
        if not all(isinstance(v, list) for v in listed):
            raise InvalidRequestError(f"--subjects: {f} must hold a list of subjects or {{\"subjects\": [...]}}")
        if not any(listed):
            raise InvalidRequestError(f"--subjects: {f} holds no subjects (and no still regions)")
        subjects += listed[0]
        still += listed[1]
        folder = f.parent
        subjects = [{**s, "region": _with_mask_files([s.get("region")], folder, f"subjects[{i}].region")[0]}
                    if isinstance(s, dict) else s for i, s in enumerate(subjects)]
        still = _with_mask_files(still, folder, "still")
    for arg in subject_args:
        mask, sep, path = arg.rpartition(":")
        if not sep or not mask or not path:
            raise InvalidRequestError(f"--subject {arg!r}: give MASK.png:PATH.json (the region as a mask image and "
                                      "its path)")
        i = len(subjects)
        if not Path(mask).is_file():
            raise InvalidRequestError(f"subjects[{i}].region.mask: file not found: {mask}")
        data_url = mask_data_url(Path(mask).read_bytes(), f"subjects[{i}].region.mask {mask!r}")
        subjects.append({"region": {"mask": data_url},
                         "path": read_json_file(path, f"subjects[{i}].path")})
    for arg in still_args:
        still += _with_mask_files([{"mask": arg}], base or Path("."), "still")
    fields = {}
    if subjects:
        fields["subjects"] = subjects
    if still:
        fields["still"] = still
    return fields


def subjects_on_canvas(request: RenderRequest, width: int, height: int) -> RenderRequest:
    """The request with every subject's region and path that is in image pixels (no canvas) put
    on a canvas of the image's size, so it scales with a smaller copy of the photo."""
    if not request.subjects and not request.still:
        return request
    canvas = Canvas(width=width, height=height)

    def placed(region: Region) -> Region:
        return region if region.canvas is not None else region.model_copy(update={"canvas": canvas})

    subjects = [s.model_copy(update={
        "region": placed(s.region),
        "path": s.path if s.path.canvas is not None else s.path.model_copy(update={"canvas": canvas})})
        for s in request.subjects]
    return request.model_copy(update={"subjects": subjects, "still": [placed(r) for r in request.still]})
