"""The camera model every stage shares. Pure numpy.

Coordinates
-----------
* Image: continuous pixel coordinates, u right, v down, origin at the top-left *corner*
  of the image; the image covers [0, W] x [0, H] and pixel (row i, col j) has its
  centre at (j + 0.5, i + 0.5). Output frames use the same convention.
* World: X right, Y down, Z forward (away from the viewer, into the picture). The image
  lies on the plane Z = 0 with pixel (u, v) at world (u, v, 0). World units are image
  pixels.
* Camera: world -> camera is X_c = R (X_w - C) = R X_w + t with t = -R C; intrinsics
  K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] in output pixels, principal point at the
  output's centre. Rotation rows are the camera's right, down and forward axes.

The reference camera (time 0) looks straight at the plane from C0 = (crop centre, -D)
with D = crop width and fx = fy = output width, so it sees exactly the largest centred
crop of the image with the output's aspect ("cover"). Zoom z spans 1/z of that crop:
either by moving to distance D / z (a dolly, which gives parallax with depth) or by
fx = z * W_out (a lens zoom, no parallax). On the flat plane both give the same frame.

A point at relative depth s (1 = on the plane, < 1 = nearer) sits on the ray from C0
through its pixel: P = C0 + s (Q - C0). Depth maps use this (see `d2v.render`).
"""

from __future__ import annotations

import math

import numpy as np

from d2v.models import CameraFrame


def cover_crop(image_w: float, image_h: float, out_w: float, out_h: float) -> tuple[float, float, float, float]:
    """The largest centred crop of the image with the output's aspect: (u0, v0, w, h)."""
    aspect = out_w / out_h
    if image_w / image_h > aspect:
        h = float(image_h)
        w = h * aspect
    else:
        w = float(image_w)
        h = w / aspect
    return (image_w - w) / 2.0, (image_h - h) / 2.0, w, h


def intrinsics(fx: float, fy: float, out_w: float, out_h: float) -> np.ndarray:
    return np.array([[fx, 0.0, out_w / 2.0], [0.0, fy, out_h / 2.0], [0.0, 0.0, 1.0]])


def rot_z(angle_rad: float) -> np.ndarray:
    """Rotation about the optical axis. In camera coordinates (x right, y down) a
    positive angle turns the camera clockwise as the viewer sees it, so the picture
    on screen turns counter-clockwise."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


# Rotations as rotation vectors (axis times angle) and back, and the slerp between two: what
# motion blur, shake and typed cameras need of scipy's Rotation, whose import (scipy.spatial,
# about 0.16 s) would otherwise be most of such a render's start-up.


def rotvec_matrices(v: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) -> rotation matrices (..., 3, 3) (Rodrigues' formula; the
    series near zero, where the formula's division loses digits)."""
    v = np.asarray(v, float)
    theta2 = np.sum(v * v, axis=-1)[..., None, None]
    theta = np.sqrt(theta2)
    small = theta2 < 1e-12
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)  # sin(t) / t
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / (safe * safe))  # (1 - cos t) / t^2
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    return np.eye(3) + a * k + b * (k @ k)


def matrix_rotvec(R: np.ndarray) -> np.ndarray:
    """A rotation matrix (3, 3) -> its rotation vector (3,), angle in [0, pi]: through the unit
    quaternion (the largest of its four components first, Shepperd's method, exact at any angle)."""
    R = np.asarray(R, float)
    t = np.trace(R)
    i = int(np.argmax([R[0, 0], R[1, 1], R[2, 2], t]))
    if i == 3:
        w = 0.5 * math.sqrt(1.0 + t)
        xyz = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (4.0 * w)
    else:
        j, k = (i + 1) % 3, (i + 2) % 3
        xyz = np.empty(3)
        xyz[i] = 0.5 * math.sqrt(max(0.0, 1.0 + R[i, i] - R[j, j] - R[k, k]))
        xyz[j] = (R[j, i] + R[i, j]) / (4.0 * xyz[i])
        xyz[k] = (R[k, i] + R[i, k]) / (4.0 * xyz[i])
        w = (R[k, j] - R[j, k]) / (4.0 * xyz[i])
    if w < 0.0:  # the same rotation; this one turns by at most pi
        w, xyz = -w, -xyz
    s = float(np.linalg.norm(xyz))
    angle = 2.0 * math.atan2(s, w)
    return xyz * (angle / s if s > 1e-12 else 2.0 / max(w, 1e-12))


def slerp(R0: np.ndarray, R1: np.ndarray, a) -> np.ndarray:
    """The rotation a fraction a of the way from R0 to R1 (the shorter way round, at a constant
    rate); a scalar gives (3, 3), an array (..., 3, 3)."""
    delta = matrix_rotvec(np.asarray(R0, float).T @ np.asarray(R1, float))
    return np.asarray(R0, float) @ rotvec_matrices(np.multiply.outer(np.asarray(a, float), delta))


def look_at(center: np.ndarray, target: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """World->camera rotation for a camera at `center` looking at `target`, image-down
    aligned with world +Y (the picture's down) before the roll."""
    forward = np.asarray(target, float) - np.asarray(center, float)
    forward /= np.linalg.norm(forward)
    down_hint = np.array([0.0, 1.0, 0.0])
    right = np.cross(down_hint, forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return rot_z(roll_rad) @ R


def plane_homography(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """3x3 H mapping image (plane Z = 0) coordinates to output coordinates: H = K [r1 r2 t]."""
    H = K @ np.column_stack([R[:, 0], R[:, 1], t])
    return H / H[2, 2]


def local_affine(M: np.ndarray, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Where the homography M takes (x, y), and its Jacobian there (2x2): M to first order."""
    p = M @ np.array([x, y, 1.0])
    q = p[:2] / p[2]
    return q, (M[:2, :2] - np.outer(q, M[2, :2])) / p[2]


def _pixel_shift(d: float) -> np.ndarray:
    return np.array([[1.0, 0.0, d], [0.0, 1.0, d], [0.0, 0.0, 1.0]])


def to_opencv(M: np.ndarray, level: int = 0) -> np.ndarray:
    """A map onto an image in d2v coordinates (pixel centres at +0.5) -> the same map onto
    its pyramid level `level` in OpenCV's (centres at integers). pyrDown keeps pixel 2i as
    level pixel i, so in OpenCV coordinates level L is exactly level 0 scaled by 2^-L."""
    return np.diag([0.5**level, 0.5**level, 1.0]) @ _pixel_shift(-0.5) @ M @ _pixel_shift(0.5)


def from_opencv(W: np.ndarray, level: int = 0) -> np.ndarray:
    """The inverse of `to_opencv`."""
    return _pixel_shift(0.5) @ np.diag([2.0**level, 2.0**level, 1.0]) @ W @ _pixel_shift(-0.5)


def frame_homography(frame: CameraFrame) -> np.ndarray:
    return plane_homography(frame.K(), frame.R(), frame.t())


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2) points through H -> (N, 2)."""
    pts = np.asarray(pts, dtype=np.float64)
    homo = np.column_stack([pts, np.ones(len(pts))]) @ H.T
    return homo[:, :2] / homo[:, 2:3]


def footprint(frame: CameraFrame, out_w: float, out_h: float) -> np.ndarray:
    """The output frame's four corners on the image plane, (4, 2): TL, TR, BR, BL."""
    corners = np.array([[0.0, 0.0], [out_w, 0.0], [out_w, out_h], [0.0, out_h]])
    return apply_homography(np.linalg.inv(frame_homography(frame)), corners)


def make_frame(
    index: int,
    time_s: float,
    *,
    camera_center: np.ndarray,
    R: np.ndarray,
    fx: float,
    out_w: int,
    out_h: int,
    crop_w: float,
    roll_rad: float = 0.0,
) -> CameraFrame:
    """Build a CameraFrame and its summary fields (where the axis meets the plane, zoom)."""
    C = np.asarray(camera_center, dtype=np.float64)
    t = -R @ C
    forward = R[2]
    # The optical axis meets Z = 0 at C + lam * forward.
    lam = -C[2] / forward[2] if abs(forward[2]) > 1e-12 else 0.0
    hit = C + lam * forward
    # Zoom: width the view spans on the plane at its centre, against the cover crop.
    span = out_w * lam / fx
    zoom = crop_w / span if span > 0 else float("inf")
    return CameraFrame(
        index=index,
        time_s=float(time_s),
        fx=float(fx),
        fy=float(fx),
        cx=out_w / 2.0,
        cy=out_h / 2.0,
        rotation=R.tolist(),
        translation=t.tolist(),
        fov_deg=math.degrees(2.0 * math.atan(out_w / (2.0 * fx))),
        center=[float(hit[0]), float(hit[1])],
        zoom=float(zoom),
        roll_deg=math.degrees(roll_rad),
    )


def interpolate_camera(f0: CameraFrame, f1: CameraFrame, alpha: float) -> CameraFrame:
    """The camera a fraction `alpha` of the way from f0 to f1 (sub-frames for motion
    blur): centre linear, rotation by slerp, focal length log-linear (constant speed in
    zoom), principal point and time linear. Summary fields (`center`, `zoom`) are
    recomputed as `make_frame` does; `roll_deg` takes the short way round."""
    a = float(alpha)
    C = (1.0 - a) * f0.camera_center() + a * f1.camera_center()
    R = slerp(f0.R(), f1.R(), a)
    fx = math.exp((1.0 - a) * math.log(f0.fx) + a * math.log(f1.fx))
    fy = math.exp((1.0 - a) * math.log(f0.fy) + a * math.log(f1.fy))
    cx = (1.0 - a) * f0.cx + a * f1.cx
    cy = (1.0 - a) * f0.cy + a * f1.cy

    forward = R[2]
    lam = -C[2] / forward[2] if abs(forward[2]) > 1e-12 else 0.0
    hit = C + lam * forward
    # Zoom is span-relative to the cover crop; recover the crop width from f0.
    fwd0 = f0.R()[2]
    lam0 = -f0.camera_center()[2] / fwd0[2] if abs(fwd0[2]) > 1e-12 else 0.0
    crop_w = f0.zoom * (2.0 * f0.cx) * lam0 / f0.fx
    span = 2.0 * cx * lam / fx
    zoom = crop_w / span if span > 0 and math.isfinite(crop_w) else f0.zoom
    droll = (f1.roll_deg - f0.roll_deg + 180.0) % 360.0 - 180.0
    return CameraFrame(
        index=f0.index if a < 0.5 else f1.index,
        time_s=(1.0 - a) * f0.time_s + a * f1.time_s,
        fx=fx,
        fy=fy,
        cx=cx,
        cy=cy,
        rotation=R.tolist(),
        translation=(-R @ C).tolist(),
        fov_deg=math.degrees(2.0 * math.atan(cx / fx)),
        center=[float(hit[0]), float(hit[1])],
        zoom=float(zoom),
        roll_deg=f0.roll_deg + a * droll,
    )
