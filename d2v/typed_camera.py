"""A camera you can type: keyframes of axes or poses -> one camera per frame.

    typed_cameras(camera, times, view) -> (centres (n, 3), rotations (n, 3, 3), fx (n,), roll (n,))
    scaled_camera(camera, k) -> the same camera for the image resized by k (poses are in pixels)
    TYPED_EFFECT                          the trajectory's `effect` for a typed camera ("camera")

The request's `camera` (d2v.models.TypedCamera, docs/camera.md) gives keyframes with times,
each either axes as camera operators (and Runway's and Kling's camera controls) name them or
a pose placed exactly. Axes are measured from the first view, the reference camera of
d2v.camera: at (cover-crop centre, -D) looking straight at the picture, D = the cover
crop's width, fx = the output width.

    pan, tilt, roll    degrees: the camera turns about its own centre (pan right, tilt up;
                       roll clockwise, so the picture turns counter-clockwise); pan first,
                       then tilt about the panned camera's horizontal axis, then roll
    zoom               a lens factor: fx = zoom x output width (no parallax, like a zoom lens)
    truck, pedestal    a move along the camera's right and up axes (after pan and tilt), in
                       view widths: truck 0.1 moves the camera 0.1 D, so the picture plane
                       slides a tenth of the frame, and a layer at relative depth s
                       (d2v.render) slides 0.1 / s of it
    dolly              a move along the view, a share of the distance to the picture plane

Between keyframes every keyframe becomes a pose (centre, rotation, focal length) and the
camera moves from one to the next: centre and log focal length along a straight line,
rotation by slerp, each at the same eased progress (`easing`: ease_in_out, each move
starting and ending at rest, or linear). Before the first keyframe and after the last the
camera holds. d2v.trajectory then treats these cameras like any effect's: seeded shake, the
clamp that keeps views inside the image (unless allow_borders), the same CameraTrajectory.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from d2v.camera import rot_z, slerp
from d2v.models import CameraKeyframe, TypedCamera

TYPED_EFFECT = "camera"  # CameraTrajectory.effect of a typed camera: depth is measured from the picture plane


class ReferenceView(NamedTuple):
    """The first view, which axes are measured from (d2v.camera's reference camera)."""

    centre: np.ndarray  # cover-crop centre on the picture, image px, (2,)
    distance: float  # D: the reference camera's distance to the picture = the cover crop's width
    out_w: int  # output width: the reference focal length


def _pan_tilt(pan_deg: float, tilt_deg: float) -> np.ndarray:
    """World -> camera rotation of a camera panned right, then tilted up (no roll). Rows are
    the camera's right, down and forward axes in world coordinates (Y down, Z into the picture)."""
    a, b = math.radians(pan_deg), math.radians(tilt_deg)
    pan = np.array([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), math.sin(b)], [0.0, -math.sin(b), math.cos(b)]])
    return tilt @ pan


def keyframe_pose(key: CameraKeyframe, view: ReferenceView) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre (3,), rotation world -> camera (3, 3), fx) of one keyframe."""
    if key.pose is not None:
        fx = view.out_w / (2.0 * math.tan(math.radians(key.pose.fov_deg) / 2.0))
        return np.asarray(key.pose.center, float), np.asarray(key.pose.rotation, float), fx
    turned = _pan_tilt(key.pan, key.tilt)
    right, down, forward = turned
    D = view.distance
    centre = np.array([*view.centre, -D]) + D * (key.truck * right - key.pedestal * down + key.dolly * forward)
    return centre, rot_z(math.radians(key.roll)) @ turned, view.out_w * key.zoom


def _ease(u: np.ndarray, easing: str) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u if easing == "linear" else u * u * (3.0 - 2.0 * u)  # smoothstep: at rest at both ends


def typed_cameras(camera: TypedCamera, times: np.ndarray, view: ReferenceView
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cameras at `times` (seconds, (n,)): centres (n, 3), rotations (n, 3, 3) world ->
    camera, fx (n,) and roll (n,, radians: the summary field, the axes' roll interpolated)."""
    keys = camera.keyframes
    poses = [keyframe_pose(k, view) for k in keys]
    C = np.array([p[0] for p in poses])
    log_fx = np.log([p[2] for p in poses])
    rolls = np.radians([k.roll if k.pose is None else 0.0 for k in keys])
    times = np.asarray(times, dtype=np.float64)
    if len(keys) == 1:
        n = len(times)
        return np.repeat(C, n, 0), np.repeat(poses[0][1][None], n, 0), np.full(n, math.exp(log_fx[0])), \
            np.full(n, rolls[0])

    key_t = np.array([k.t for k in keys])
    seg = np.clip(np.searchsorted(key_t, times, side="right") - 1, 0, len(keys) - 2)
    u = _ease((times - key_t[seg]) / (key_t[seg + 1] - key_t[seg]), camera.easing)
    # Progress in "keyframe index" units: slerp and straight lines through the keyframes.
    x = seg + u
    centres = np.column_stack([np.interp(x, np.arange(len(keys)), C[:, j]) for j in range(3)])
    fx = np.exp(np.interp(x, np.arange(len(keys)), log_fx))
    roll = np.interp(x, np.arange(len(keys)), rolls)
    # Slerp takes the short way between keyframes; a roll of more than 180 degrees between two
    # keyframes must go the long way: turn the rolled-out camera, then roll about the axis.
    unrolled = [rot_z(-r) @ p[1] for r, p in zip(rolls, poses)]
    R = np.empty((len(times), 3, 3))
    for k in np.unique(seg):
        at = seg == k
        R[at] = slerp(unrolled[k], unrolled[k + 1], u[at])
    R = np.stack([rot_z(r) @ m for r, m in zip(roll, R)])
    return centres, R, fx, roll


def scaled_camera(camera: TypedCamera, k: float) -> TypedCamera:
    """The same camera for the image resized by k: poses are in image pixels (axes are in
    view widths and need nothing)."""
    if all(key.pose is None for key in camera.keyframes):
        return camera
    keys = [key if key.pose is None else key.model_copy(update={"pose": key.pose.model_copy(
        update={"center": tuple(float(c) * k for c in key.pose.center)})}) for key in camera.keyframes]
    return camera.model_copy(update={"keyframes": keys})
