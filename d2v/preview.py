"""An instant, low-resolution preview of a request's camera move (for the web page).

    preview(image, request, depth_source=, depth=, lut_bytes=) -> dict   (JSON-ready; see `preview`)

The same trajectory planner and camera renderer as a full render, on a copy of the
image at most PREVIEW_MAX_SIDE pixels on a side, at PREVIEW_SIDE pixels on the output's
longer side and at most PREVIEW_FPS: tens of milliseconds for a few seconds of video.
Paths are in canvas units, so planning on the smaller copy gives the same move, scaled.

Depth: the preview plans as the job will (`depth_source`, from
`d2v.depth.planned_depth_source`: with depth the planner keeps every layer's view inside
the image, orbit arcs wider and `auto` may pick parallax), but it never waits for a depth
model: it renders with the depth it is given (the request's map, or an estimate already in
the depth cache), else as the job would without one (the stand-in depth of dolly_zoom and
parallax). The request's post effects and look are applied as the job applies them (the
preset gallery shows each preset as it will look); motion blur and the svd backend are left
out. Pure numpy/OpenCV/PyAV, no Ray.
"""

from __future__ import annotations

import base64
import io
import time

import cv2
import numpy as np

from d2v.camera import apply_homography
from d2v.encode import encode_mp4
from d2v.looks import look_for
from d2v.models import MIN_SIDE, Canvas, DepthSource, DrawnPath, RenderRequest
from d2v.pathshape import clean_path, shape_of
from d2v.post import CameraFrames, PostContext, apply_post
from d2v.subjects import canvas_of, renderer_for, subjects_on_canvas
from d2v.stages import plan
from d2v.trajectory import move_points, resolve_effect
from d2v.typed_camera import scaled_camera

PREVIEW_SIDE = 256  # output pixels on the preview's longer side
PREVIEW_FPS = 12
PREVIEW_MAX_SIDE = 1024  # the image is shrunk to at most this before planning and rendering
PATH_POINTS = 200  # the smoothed path is sent back with at most this many points


def _even(x: float) -> int:
    return max(MIN_SIDE, int(round(x / 2)) * 2)


def preview_size(width: int, height: int, side: int = PREVIEW_SIDE) -> tuple[int, int]:
    """The preview's (width, height): the output's aspect ratio, `side` on the longer side."""
    scale = side / max(width, height)
    return _even(width * scale), _even(height * scale)


def working_size(width: int, height: int, max_side: int = PREVIEW_MAX_SIDE) -> tuple[int, int]:
    """The (width, height) of the copy of a width x height image the preview plans and
    renders on: at most max_side on a side (a depth map for it is wanted at this size)."""
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = working_size(w, h, max_side)
    if size == (w, h):
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def preview(rgb: np.ndarray, request: RenderRequest, *, depth_source: DepthSource = "none",
            depth: np.ndarray | None = None, lut_bytes: bytes | None = None) -> dict:
    """Plan and render `request` small on the RGB image `rgb` (H, W, 3 uint8).

    depth_source: where the job's depth will come from (`d2v.depth.planned_depth_source`);
    anything but "none" plans with depth, as the job will. depth: a depth map (brighter =
    nearer, any size) to render with, when one is at hand without waiting for a model.
    lut_bytes: the .cube file when the request's look names one (a bad one: InvalidLookError).

    Returns: effect (what was chosen; `auto` resolved; "camera" for a typed camera),
    requested_effect, auto_effect (what `auto` would pick for this path, whatever was
    requested; None without a path), depth_source (as given), depth_shown (whether the
    preview rendered with that depth), path_shape (None without a path), direction
    (+1 clockwise on screen, -1 counter-clockwise, 0 none),
    canvas (the path's canvas, or the image size for a bare list of pixel points or a typed
    camera alone), path (the smoothed path as it will be used, [[x, y], ...] in canvas units;
    a typed camera alone: where its view centre goes), views
    (each frame's view on the image as 4 corners TL, TR, BR, BL in canvas units), fps,
    frames, width, height, duration_s, clamped_frames (how many frames the view was kept
    inside the image), notes, video (a data: URL of the H.264 MP4) and seconds taken."""
    t0 = time.perf_counter()
    full_h, full_w = rgb.shape[:2]
    path = request.path
    if path is not None and path.canvas is None:  # a bare list is in image pixels: the image is its canvas
        path = DrawnPath(canvas=Canvas(width=full_w, height=full_h), points=path.points)
    request = subjects_on_canvas(request, full_w, full_h)  # the preview renders a smaller copy
    # A typed camera alone has no canvas: its views come back in image pixels (subjects: theirs).
    canvas = path.canvas if path is not None else canvas_of(request, full_w, full_h)
    small = _shrink(rgb, PREVIEW_MAX_SIDE)
    h, w = small.shape[:2]
    pw, ph = preview_size(request.width, request.height)
    req = request.model_copy(update={
        "path": path, "width": pw, "height": ph, "fps": min(request.fps, PREVIEW_FPS),
        "backend": "camera", "motion_blur": 0.0,
        "camera": None if request.camera is None else scaled_camera(request.camera, w / full_w),
    })  # fmt: skip
    has_depth = depth_source != "none"
    trajectory = plan(req, w, h, has_depth=has_depth)

    look = look_for(req, lut_bytes)
    buf = io.BytesIO()
    renderer = renderer_for(small, depth if has_depth else None, req)  # subjects move in the preview too
    clip = apply_post(CameraFrames(renderer, trajectory), req.post,
                      PostContext.for_job(req, trajectory, w, h, depth if has_depth else None))
    frames = (look.apply(clip.frame(i)) if look else clip.frame(i) for i in range(len(clip)))
    encode_mp4(frames, buf, trajectory.fps, crf=28, preset="ultrafast", threads=1)

    sx, sy = canvas.width / w, canvas.height / h  # small-image pixels -> canvas units
    to_canvas = np.array([sx, sy])
    shape, clean = None, move_points(req, trajectory)  # no path: where a typed camera's view centre goes
    if path is not None:
        cleaned = clean_path(path.image_points(w, h))
        shape, clean = shape_of(cleaned), cleaned.points
    pick = np.unique(np.linspace(0, len(clean) - 1, min(len(clean), PATH_POINTS)).round().astype(int))
    # Each video frame's view: post effects remap time (reverse, boomerang, bullet_time's
    # swing), so the views follow the clip's own homographies, frame by frame.
    corners = np.array([[0.0, 0.0], [pw, 0.0], [pw, ph], [0.0, ph]])
    views = [(apply_homography(np.linalg.inv(clip.homography(i)), corners) * to_canvas).round(1).tolist()
             for i in range(len(clip))]
    return {
        "effect": trajectory.effect,
        "requested_effect": request.effect,
        "auto_effect": None if shape is None else resolve_effect("auto", shape, w, h, has_depth=has_depth),
        "depth_source": depth_source,
        "depth_shown": renderer.depth is not None,
        "path_shape": None if shape is None else shape.kind,
        "direction": 0 if shape is None else shape.direction,
        "canvas": {"width": canvas.width, "height": canvas.height},
        "path": (clean[pick] * to_canvas).round(1).tolist() if clean is not None else [],
        "views": views,
        "fps": trajectory.fps,
        "frames": len(clip),
        "width": pw,
        "height": ph,
        "duration_s": len(clip) / trajectory.fps,
        "post": list(req.post),
        "look": req.look,
        "clamped_frames": len(trajectory.clamped_frames),
        "notes": trajectory.notes,
        "video": "data:video/mp4;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
