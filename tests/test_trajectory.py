"""Tests for the trajectory stage (d2v.trajectory, d2v.pathshape): CPU only, fast.

Paths are drawn here in image pixels (bare lists) on a 960x540 image rendered at
1024x576 (same aspect, so the cover crop is the whole image) unless a test says so.
Assertions look at what the cameras actually show: footprints on the image plane
(camera.footprint), view centres, zooms and camera positions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from d2v.camera import apply_homography, cover_crop, footprint, frame_homography
from d2v.models import EFFECTS, CameraTrajectory, RenderRequest
from d2v.pathshape import analyze_path, clean_path
from d2v.trajectory import DEFAULT_PARALLAX, PSEUDO_PARALLAX, depth_range, plan_trajectory, resolve_effect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
W, H = 960, 540
OUT_W, OUT_H = 1024, 576


def pts(xy, t=None):
    """Bare-list path JSON from an (N, 2) array (and optional times)."""
    if t is None:
        return [{"x": float(x), "y": float(y)} for x, y in xy]
    return [{"x": float(x), "y": float(y), "t": float(s)} for (x, y), s in zip(xy, t)]


def line(a, b, n=40):
    f = np.linspace(0, 1, n)[:, None]
    return np.asarray(a, float) * (1 - f) + np.asarray(b, float) * f


def circle(cx=480, cy=270, r=150, clockwise=True, turns=1.0, shrink=0.0, n=200, noise=0.0, seed=0):
    """Screen angles with v down: increasing angle = clockwise as the viewer sees it."""
    a = np.linspace(0, 2 * math.pi * turns, n) * (1 if clockwise else -1)
    rad = r * (1 - shrink * np.linspace(0, 1, n))
    xy = np.column_stack([cx + rad * np.cos(a), cy + rad * np.sin(a)])
    return xy + np.random.default_rng(seed).normal(0, noise, xy.shape)


def zigzag():
    return np.array([[120 + 100 * i, 270 + (70 if i % 2 else -70)] for i in range(8)], float)


def plan(path, effect="auto", w=W, h=H, depth_parallax=None, **kw) -> CameraTrajectory:
    kw.setdefault("duration_s", 2.0)
    req = RenderRequest(path=path, effect=effect, width=kw.pop("width", OUT_W), height=kw.pop("height", OUT_H), **kw)
    return plan_trajectory(req, w, h, depth_parallax=depth_parallax)


def footprints(tr: CameraTrajectory) -> np.ndarray:
    return np.array([footprint(f, tr.width, tr.height) for f in tr.frames])


def assert_inside(tr: CameraTrajectory, tol=1e-3):
    fp = footprints(tr)
    assert fp[..., 0].min() >= -tol and fp[..., 1].min() >= -tol
    assert fp[..., 0].max() <= tr.image_width + tol and fp[..., 1].max() <= tr.image_height + tol


def assert_inside_at_depth(tr: CameraTrajectory, near: float, far: float, tol=1e-3):
    """What the renderer can show with depth stays inside the image: the output corners'
    rays meet each layer s (plane Z = C0z (1 - s), C0 = the first camera) at P, which the
    renderer shows as image point C0 + (P - C0) / s (see d2v.render). Layers on a fine
    grid, skipping those behind the camera as the renderer does."""
    c0 = tr.frames[0].camera_center()
    corners = np.array([[0, 0, 1], [tr.width, 0, 1], [tr.width, tr.height, 1], [0, tr.height, 1]], float)
    for f in tr.frames:
        C = f.camera_center()
        rays = corners @ np.linalg.inv(f.K()).T @ f.R()  # world directions, rows
        s_cam = 1 - C[2] / c0[2]
        for s in np.linspace(max(near, s_cam + 1e-3), far, 9):
            lam = (c0[2] * (1 - s) - C[2]) / rays[:, 2]
            assert np.all(lam > 0)
            q = c0[:2] + (C[:2] + lam[:, None] * rays[:, :2] - c0[:2]) / s
            assert q.min() >= -tol and q[:, 0].max() <= tr.image_width + tol and q[:, 1].max() <= tr.image_height + tol


def screen_positions(tr: CameraTrajectory, point) -> np.ndarray:
    """Where an image point appears on screen in each frame, (n, 2)."""
    return np.array([apply_homography(frame_homography(f), np.array([point]))[0] for f in tr.frames])


def centres(tr):
    return np.array([f.center for f in tr.frames])


def zooms(tr):
    return np.array([f.zoom for f in tr.frames])


def cover_corners(w=W, h=H, out_w=OUT_W, out_h=OUT_H):
    u0, v0, cw, ch = cover_crop(w, h, out_w, out_h)
    return np.array([[u0, v0], [u0 + cw, v0], [u0 + cw, v0 + ch], [u0, v0 + ch]])


def screen_angle_of_horizontal(frame, at, out_w=OUT_W, out_h=OUT_H):
    """Angle on screen (atan2 with v down: growing = clockwise) of an image-horizontal
    segment through `at`."""
    a, b = apply_homography(frame_homography(frame), np.array([at, [at[0] + 20.0, at[1]]]))
    return math.atan2(b[1] - a[1], b[0] - a[0])


# --- every effect ----------------------------------------------------------------------


@pytest.mark.parametrize("effect", list(EFFECTS))
def test_every_effect_gives_n_frames_inside_the_image(effect):
    tr = plan(pts(circle(r=120)), effect, duration_s=1.5, fps=20)
    assert len(tr) == 30 and [f.index for f in tr.frames] == list(range(30))
    assert all(f.time_s == pytest.approx(i / 20) for i, f in enumerate(tr.frames))
    assert tr.effect != "auto" and tr.effect in EFFECTS and tr.base_distance == pytest.approx(W)
    assert_inside(tr)
    for f in tr.frames:  # summary fields agree with the camera itself
        np.testing.assert_allclose(f.camera_center(), -f.R().T @ f.t())
        assert np.isfinite(f.zoom) and f.zoom >= 0.999


def test_json_round_trip():
    tr = plan(pts(circle(r=120, shrink=0.8, turns=2.5)), "spiral", shake=0.5, seed=3)
    back = CameraTrajectory.model_validate_json(tr.model_dump_json())
    assert back == tr


def test_deterministic():
    a = plan(pts(zigzag()), "pan", shake=0.7, speed_ramp=0.5, seed=11)
    b = plan(pts(zigzag()), "pan", shake=0.7, speed_ramp=0.5, seed=11)
    assert a == b


# --- effects ---------------------------------------------------------------------------


def test_zoom_in_starts_on_cover_view_and_ends_on_path_end():
    path = line((300, 350), (640, 220))
    tr = plan(pts(path), "zoom_in")
    np.testing.assert_allclose(footprints(tr)[0], cover_corners(), atol=0.5)
    assert zooms(tr)[0] == pytest.approx(1.0, abs=1e-6)
    assert zooms(tr)[-1] == pytest.approx(3.0, rel=1e-3)
    assert np.linalg.norm(centres(tr)[-1] - path[-1]) < 0.01 * W
    z = zooms(tr)
    assert np.all(np.diff(z) >= -1e-9)  # zooms in all the way
    assert tr.subject == pytest.approx(list(path[-1]))


def test_zoom_in_first_frame_is_centred_cover_crop_when_aspects_differ():
    # A 4:3-ish photo at 16:9: the cover crop is a centred band; frame 0 must be it.
    tr = plan(pts(line((200, 700), (700, 300))), "zoom_in", w=1000, h=872)
    np.testing.assert_allclose(footprints(tr)[0], cover_corners(1000, 872), atol=0.5)
    assert_inside(tr)


def test_end_zoom_overrides_peak():
    tr = plan(pts(line((300, 350), (640, 220))), "zoom_in", end_zoom=5.0)
    assert zooms(tr)[-1] == pytest.approx(5.0, rel=1e-3)


def test_pull_back_is_zoom_in_reversed():
    path = line((300, 350), (640, 220))
    tr = plan(pts(path), "pull_back")
    z = zooms(tr)
    assert z[0] == pytest.approx(3.0, rel=1e-3) and z[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(z) <= 1e-9)
    assert np.linalg.norm(centres(tr)[0] - path[0]) < 0.01 * W
    np.testing.assert_allclose(footprints(tr)[-1], cover_corners(), atol=0.5)


def test_pan_keeps_zoom_and_follows_left_to_right():
    path = line((380, 270), (580, 270))  # the 1.5x view can follow this one anywhere
    tr = plan(pts(path), "pan")
    np.testing.assert_allclose(zooms(tr), 1.5, rtol=1e-6)
    x = centres(tr)[:, 0]
    assert np.all(np.diff(x) >= -1e-9) and x[[0, -1]] == pytest.approx([380, 580], abs=0.5)
    assert tr.clamped_frames == []


def test_pan_zooms_in_just_enough_to_follow_a_long_stroke():
    # 250 px from the left and right edges: a view centred there is 500 px wide, zoom 1.92.
    tr = plan(pts(line((250, 260), (710, 280))), "pan")
    np.testing.assert_allclose(zooms(tr), W / 500, rtol=1e-3)
    x = centres(tr)[:, 0]
    assert np.all(np.diff(x) >= -1e-9) and x[[0, -1]] == pytest.approx([250, 710], abs=0.5)
    assert tr.clamped_frames == [] and tr.notes == []
    # end_zoom is the least zoom, not a fixed one.
    assert zooms(plan(pts(line((380, 270), (580, 270))), "pan", end_zoom=2.5)) == pytest.approx(2.5)
    assert zooms(plan(pts(line((250, 260), (710, 280))), "pan", end_zoom=1.2)) == pytest.approx(W / 500, rel=1e-3)
    # At most 3x (a 320 px view); past that the clamp holds the view in.
    tr = plan(pts(line((60, 270), (900, 270))), "pan")
    np.testing.assert_allclose(zooms(tr), 3.0, rtol=1e-6)
    assert tr.clamped_frames and centres(tr)[:, 0].min() == pytest.approx(160, abs=0.5)
    assert_inside(tr)


def test_example_pan_follows_the_whole_stroke():
    # x 150 -> 850 on a 1000 px wide image. At 1.5x the view's centre could only travel
    # 333..667: the camera waited, moved, then stopped, with 64 of 96 frames clamped.
    path = json.loads((EXAMPLES / "paths" / "pan.json").read_text())
    tr = plan(path, "pan", w=1000, h=872, duration_s=4.0)
    assert zooms(tr) == pytest.approx(3.0)  # it would take 3.33 to reach 150 px from the edge
    x = centres(tr)[:, 0]
    assert np.ptp(x) >= 0.9 * 700
    still = np.abs(np.diff(x)) < 0.5  # the camera waiting against an edge
    assert still.sum() <= 0.15 * len(x)
    # The clamp only nudges the slow, eased ends, and by little.
    free = centres(plan(path, "pan", w=1000, h=872, duration_s=4.0, allow_borders=True))[:, 0]
    assert np.abs(x - free).max() < 20
    middle = [i for i in tr.clamped_frames if 0.15 * len(x) < i < 0.85 * len(x)]
    assert middle == [] and len(tr.clamped_frames) <= 0.25 * len(x)


def test_drawing_speed_sets_camera_progress():
    path = line((160, 270), (800, 270), 101)
    uniform = np.linspace(0, 1, 101)
    # First half of the stroke drawn in 80% of the time, the second half in 20%.
    slow_first = np.where(uniform <= 0.5, uniform / 0.5 * 0.8, 0.8 + (uniform - 0.5) / 0.5 * 0.2)
    a = plan(pts(path, uniform), "pan", end_zoom=1.0, allow_borders=True)
    b = plan(pts(path, slow_first), "pan", end_zoom=1.0, allow_borders=True)

    def progress_at_half(tr):
        x = centres(tr)[:, 0]
        return (x[len(x) // 2] - 160) / 640

    assert progress_at_half(a) == pytest.approx(0.5, abs=0.05)  # drawn evenly: constant speed
    assert progress_at_half(b) < 0.4  # drawn slowly at first: the camera is slow at first


def test_slow_dense_jittery_drawing_still_means_slow_camera():
    # Drawing slowly produces many closely spaced, jittery events; their jitter must not
    # count as distance (which would make the camera rush through the slow part).
    rng = np.random.default_rng(5)
    slow = line((160, 270), (480, 270), 400) + rng.normal(0, 1.0, (400, 2))
    fast = line((480, 270), (800, 270), 26)[1:]
    xy = np.concatenate([slow, fast])
    t = np.arange(len(xy)) / 60.0  # events at 60 Hz: 6.7 s for the first half, 0.4 s for the rest
    tr = plan(pts(xy, t), "pan", end_zoom=1.0, allow_borders=True)
    x = centres(tr)[:, 0]
    # Half the time in, the pen was about 27% along (213 of 400 slow events); counting
    # the jitter as distance would put the camera near 37%.
    assert (x[len(x) // 2] - 160) / 640 == pytest.approx(0.27, abs=0.04)
    assert analyze_path(xy).kind == "straight"


def test_without_times_speed_eases_in_and_out():
    tr = plan(pts(line((160, 270), (800, 270))), "pan", end_zoom=1.0, allow_borders=True)
    v = np.diff(centres(tr)[:, 0])
    assert v[0] < 0.3 * v[len(v) // 2] and v[-1] < 0.3 * v[len(v) // 2]
    mid = v[len(v) // 3 : 2 * len(v) // 3]
    assert np.ptp(mid) < 0.05 * mid.mean()  # constant speed in the middle


def test_speed_ramp_slows_the_ends():
    path = pts(line((160, 270), (800, 270)))
    a = plan(path, "pan", end_zoom=1.0, allow_borders=True)
    b = plan(path, "pan", end_zoom=1.0, allow_borders=True, speed_ramp=1.0)
    q = len(a) // 5
    assert centres(b)[q, 0] < centres(a)[q, 0] - 5
    assert centres(b)[-1, 0] == pytest.approx(centres(a)[-1, 0])


@pytest.mark.parametrize("clockwise", [True, False])
def test_orbit_direction_follows_the_drawing(clockwise):
    tr = plan(pts(circle(clockwise=clockwise)), "orbit")
    x = np.array([f.camera_center()[0] for f in tr.frames])
    moved = x[-1] - x[0]
    assert (moved > 0) == clockwise and abs(moved) > 0.3 * tr.base_distance  # a 20 degree arc
    # It looks at the loop's centre, from about the base distance.
    assert tr.subject == pytest.approx([480, 270], abs=3)
    dist = [np.linalg.norm(f.camera_center() - [*tr.subject, 0]) for f in tr.frames]
    assert np.allclose(dist, tr.base_distance, rtol=0.05)
    fwd = np.array([f.R()[2] for f in tr.frames])
    arc = math.degrees(math.acos(fwd[0] @ fwd[-1]))
    assert 19 < arc < 21  # +-10 degrees: more stretches the far side of the flat picture
    assert_inside(tr)


def test_orbit_holds_its_subject_still_on_screen():
    # Off centre, so the keystoned views need to be moved in to fit: by one offset for
    # the whole arc, not per frame (which would slide the subject about).
    tr = plan(pts(circle(cx=560, cy=300, r=120)), "orbit", duration_s=3.0)
    on_screen = screen_positions(tr, tr.subject)
    # 3 px here (the subject is 40 px from the point the camera looks at, which holds
    # exactly); per-frame clamping slid it 82 px.
    assert np.ptp(on_screen, axis=0).max() < 0.005 * OUT_W
    assert tr.clamped_frames == []
    assert 1.0 < zooms(tr).max() < 1.35
    assert_inside(tr)


@pytest.mark.parametrize("effect", ["orbit", "dolly_zoom", "pan", "zoom_in", "parallax"])
def test_views_stay_inside_at_every_depth_the_renderer_shows(effect):
    path = pts(circle(cx=520, cy=290, r=140)) if effect == "orbit" else pts(line((420, 300), (700, 200)))
    for shake in (0.0, 1.0):
        flat = plan(path, effect, shake=shake)
        assert_inside_at_depth(flat, *depth_range(effect))  # no depth map
        deep = plan(path, effect, shake=shake, depth_parallax=DEFAULT_PARALLAX)  # a user depth map
        assert_inside_at_depth(deep, *depth_range(effect, DEFAULT_PARALLAX))
        assert_inside(deep)


def test_depth_range():
    assert depth_range("orbit") == (1.0, 1.0) and depth_range("pan") == (1.0, 1.0)  # flat: no depth map
    assert depth_range("dolly_zoom") == pytest.approx((1.0, 1 / (1 - PSEUDO_PARALLAX)))  # stand-in depth
    assert depth_range("parallax") == depth_range("dolly_zoom")  # the same stand-in
    assert depth_range("parallax", 0.4) == pytest.approx((0.6, 1 / 0.6))  # about its subject
    assert depth_range("orbit", 0.4) == pytest.approx((0.6, 1 / 0.6))  # around the subject: either way
    assert depth_range("zoom_in", 0.4) == pytest.approx((0.6, 1.0))


@pytest.mark.parametrize("clockwise", [True, False])
def test_spiral_roll_follows_the_drawing(clockwise):
    tr = plan(pts(circle(clockwise=clockwise, turns=2.5, shrink=0.85)), "spiral")
    roll = np.array([f.roll_deg for f in tr.frames])
    assert 90 <= abs(roll[-1]) <= 180
    assert (roll[-1] < 0) == clockwise  # rot_z: positive roll turns the picture counter-clockwise
    # What the viewer sees: an image-horizontal line through the subject turns on screen.
    turn = [screen_angle_of_horizontal(f, tr.subject) for f in (tr.frames[0], tr.frames[-1])]
    delta = (turn[1] - turn[0] + math.pi) % (2 * math.pi) - math.pi
    assert (delta > 0) == clockwise  # atan2 with v down grows clockwise
    assert zooms(tr)[-1] == pytest.approx(3.0, rel=1e-2)
    assert_inside(tr)


def test_earth_zoom_out_decreases_from_ten_to_one():
    start = np.array([300.0, 200.0])
    tr = plan(pts(line(start, (500, 300))), "earth_zoom_out")
    z = zooms(tr)
    assert z[0] == pytest.approx(10.0, rel=1e-3) and z[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(z) <= 1e-9)
    assert np.linalg.norm(centres(tr)[0] - start) < 1.0


def test_crash_zoom_holds_then_jumps():
    end = np.array([700.0, 350.0])
    tr = plan(pts(line((500, 300), end)), "crash_zoom", duration_s=4.0, fps=24)
    z = zooms(tr)
    n = len(z)
    hold = int(0.45 * n)
    assert np.allclose(z[:hold], 1.0) and np.allclose(footprints(tr)[:hold], cover_corners(), atol=1e-6)
    moving = np.nonzero(np.abs(np.diff(z)) > 1e-6)[0]
    assert len(moving) <= 0.3 * 24 + 2  # about 0.3 s
    assert z[-1] == pytest.approx(4.0, rel=1e-3) and np.allclose(z[moving[-1] + 1 :], z[-1])
    assert np.linalg.norm(centres(tr)[-1] - end) < 1.0


def test_dolly_zoom_moves_toward_subject_and_keeps_its_size():
    end = np.array([560.0, 300.0])
    tr = plan(pts(line((400, 320), end)), "dolly_zoom")
    C = np.array([f.camera_center() for f in tr.frames])
    dist = -C[:, 2]
    assert dist[0] == pytest.approx(tr.base_distance) and dist[-1] == pytest.approx(tr.base_distance / 2, rel=1e-3)
    np.testing.assert_allclose(C[:, :2], np.broadcast_to(C[0, :2], C[:, :2].shape))  # straight in, not sideways
    fx = np.array([f.fx for f in tr.frames])
    np.testing.assert_allclose(fx / dist, fx[0] / dist[0])  # the lens widens as it closes in
    fp = footprints(tr)
    assert np.abs(fp - fp[0]).max() < 1e-6  # on a flat plane the frame does not change
    assert tr.subject == pytest.approx(list(end))
    assert np.linalg.norm(centres(tr)[0] - end) < 0.01 * W  # room enough to aim at the subject
    # The stand-in depth puts the background up to 1 / 0.65 behind the subject; from half
    # the distance the camera sees (1 + 2 * 0.54) / 1.54 = 1.35 times as much of it. The
    # view starts that much tighter than the 1.25x the background may span at its widest.
    far = 1 / (1 - PSEUDO_PARALLAX)
    assert zooms(tr) == pytest.approx(1.25 * (1 + 2 * (far - 1)) / far, rel=1e-6)
    assert tr.clamped_frames == []


def test_dolly_zoom_near_the_edge_keeps_the_background_inside():
    # The example: toward the orange galaxy near the right edge of the Hubble field.
    path = json.loads((EXAMPLES / "paths" / "dolly_zoom.json").read_text())
    tr = plan(path, "dolly_zoom", w=1000, h=872, duration_s=4.0)
    assert_inside_at_depth(tr, *depth_range("dolly_zoom"))
    assert tr.clamped_frames == []  # planned to fit: the clamp has nothing to move mid-dolly
    # The subject is still in the view, well inside it.
    u, v = screen_positions(tr, tr.subject)[0]
    assert 0.2 * OUT_W < u < 0.8 * OUT_W and 0.2 * OUT_H < v < 0.8 * OUT_H


# --- auto and path analysis --------------------------------------------------------------


@pytest.mark.parametrize(
    "xy, expected",
    [
        (circle(noise=1.5), "orbit"),
        (circle(clockwise=False, turns=1.1, noise=1.5), "orbit"),
        (circle(turns=2.5, shrink=0.85, noise=1.0), "spiral"),
        (line((400, 300), (600, 250)), "zoom_in"),
        (line((80, 300), (880, 250)) + np.random.default_rng(0).normal(0, 1.5, (40, 2)), "pan"),
        (zigzag(), "pan"),
    ],
    ids=["circle", "circle-ccw", "spiral", "short-line", "long-line", "zigzag"],
)
def test_auto_picks_from_shape(xy, expected):
    tr = plan(pts(xy), "auto")
    assert tr.effect == expected
    assert resolve_effect("auto", analyze_path(xy), W, H) == expected
    assert resolve_effect("crash_zoom", analyze_path(xy), W, H) == "crash_zoom"


@pytest.mark.parametrize("clockwise", [True, False])
def test_analyze_path_direction(clockwise):
    shape = analyze_path(circle(clockwise=clockwise, noise=1.0))
    sign = 1 if clockwise else -1
    assert shape.kind == "closed_loop" and shape.closed and shape.direction == sign
    assert shape.swept_angle_rad == pytest.approx(sign * 2 * math.pi, rel=0.1)
    assert shape.centroid == pytest.approx((480, 270), abs=3)


def test_analyze_path_straight_and_freeform():
    s = analyze_path(line((100, 100), (500, 400)))
    assert s.kind == "straight" and s.direction == 0 and s.straightness == pytest.approx(1.0)
    assert s.length == pytest.approx(500.0)
    assert analyze_path(zigzag()).kind == "freeform"
    spiral = analyze_path(circle(clockwise=False, turns=3, shrink=0.8))
    assert spiral.kind == "spiral" and spiral.direction == -1
    assert spiral.swept_angle_rad == pytest.approx(-6 * math.pi, rel=0.1)


def test_smoothing_keeps_corners_and_drops_jitter():
    rng = np.random.default_rng(0)
    ell = np.concatenate([line((100, 100), (400, 100), 60), line((400, 100), (400, 400), 60)[1:]])
    noisy = ell + rng.normal(0, 1.5, ell.shape)
    clean = clean_path(noisy)
    assert len(clean.corners) == 1
    assert np.hypot(*(clean.points - [400, 100]).T).min() < 4  # the corner stays sharp
    top = clean.points[(clean.points[:, 0] > 150) & (clean.points[:, 0] < 350) & (clean.points[:, 1] < 200)]
    assert np.std(top[:, 1]) < 0.6 * np.std(noisy[5:55, 1])  # jitter is reduced
    # Duplicate consecutive points change nothing.
    dup = np.repeat(ell, 3, axis=0)
    np.testing.assert_allclose(clean_path(dup).points, clean_path(ell).points)


def test_canvas_path_equals_bare_list_in_pixels():
    xy = circle(r=120, turns=1.0)
    canvas = {"canvas": {"width": 480, "height": 270}, "points": pts(xy / 2.0)}
    a = plan(pts(xy), "auto", shake=0.3)
    b = plan(canvas, "auto", shake=0.3)
    assert a == b


# --- clamp, shake, loop --------------------------------------------------------------------


def test_clamp_keeps_view_inside_and_reports():
    corner_path = pts(line((20, 20), (150, 60)))
    tr = plan(corner_path, "pan", end_zoom=2.0)
    assert_inside(tr)
    assert tr.clamped_frames and tr.notes and "inside the image" in tr.notes[0]
    free = plan(corner_path, "pan", end_zoom=2.0, allow_borders=True)
    assert free.clamped_frames == [] and free.notes == []
    fp = footprints(free)
    assert fp.min() < -10  # the view leaves the image
    np.testing.assert_allclose(centres(free)[-1], [150, 60], atol=1.0)


def test_clamp_zooms_in_when_rotation_needs_it():
    tr = plan(pts(circle(turns=3, shrink=0.9)), "spiral", end_zoom=1.2)
    assert_inside(tr)
    assert zooms(tr).max() > 1.25 and tr.clamped_frames and "zoomed in" in tr.notes[0]


def test_shake_is_seeded_and_small():
    path = pts(line((300, 270), (660, 270)))
    still = plan(path, "pan")
    a = plan(path, "pan", shake=1.0, seed=1)
    b = plan(path, "pan", shake=1.0, seed=1)
    c = plan(path, "pan", shake=1.0, seed=2)
    assert a == b and a != c
    view_w = W / 1.5
    dev = np.linalg.norm(centres(a) - centres(still), axis=1)
    assert 0.002 * view_w < dev.max() < 0.04 * view_w
    assert np.abs(np.array([f.roll_deg for f in a.frames])).max() < 1.5
    # Smooth: frame-to-frame jitter is small next to the shake itself.
    assert np.abs(np.diff(centres(a) - centres(still), 2, axis=0)).max() < 0.3 * dev.max()
    assert_inside(a)


@pytest.mark.parametrize("effect", ["pan", "orbit", "zoom_in"])
def test_loop_ends_where_it_started(effect):
    tr = plan(pts(circle(r=140)), effect, loop=True, shake=0.5)
    f0, fl = tr.frames[0], tr.frames[-1]
    step = np.linalg.norm(np.diff(centres(tr), axis=0), axis=1).max()
    assert np.linalg.norm(np.array(fl.center) - f0.center) <= step + 1e-6
    assert np.linalg.norm(fl.camera_center() - f0.camera_center()) < 0.02 * tr.base_distance
    assert fl.zoom == pytest.approx(f0.zoom, rel=0.03)


@pytest.mark.parametrize("name", sorted(p.stem for p in (EXAMPLES / "paths").glob("*.json")))
def test_bundled_example_paths(name):
    path = json.loads((EXAMPLES / "paths" / f"{name}.json").read_text())
    tr = plan(path, name, w=1000, h=872, duration_s=4.0)
    assert len(tr) == 96 and (tr.effect == name or name == "auto")
    assert_inside(tr)


def test_single_frame_request():
    tr = plan(pts(line((300, 300), (500, 300))), "zoom_in", duration_s=0.5, fps=1)
    assert len(tr) == 1
    assert_inside(tr)


# --- absurd numbers (issue 13) -----------------------------------------------------------


def finite_cameras(tr: CameraTrajectory) -> bool:
    return all(np.all(np.isfinite([f.fx, f.cx, f.cy, f.zoom, *f.translation, *np.ravel(f.rotation), *f.center]))
               for f in tr.frames)


@pytest.mark.parametrize("xy", [[(10, 10), (1e308, 20), (30, 30)], [(0, 0), (1e308, 1e308)], [(0, 0), (2e9, 0)]])
@pytest.mark.parametrize("effect", ["pan", "orbit"])
def test_points_absurdly_far_from_the_image_are_a_path_error(xy, effect):
    # Lengths and smoothing of 1e308-pixel coordinates overflowed to NaN: a ValueError (a 500
    # at submit) or NaN cameras (a job that failed after its 202).
    from d2v.errors import InvalidPathError

    with pytest.raises(InvalidPathError, match="pixels from the image"):
        plan(pts(xy), effect)


def test_points_far_outside_but_sane_are_refused_unless_borders_are_allowed():
    from d2v.errors import InvalidPathError

    # Almost all of the stroke lies outside the photo: no view kept inside could follow it.
    with pytest.raises(InvalidPathError, match=r"100% of it lies outside the photo .*allow borders"):
        plan(pts([(100, 100), (1e8, 300)]), "pan")
    assert finite_cameras(plan(pts([(100, 100), (1e8, 300)]), "pan", allow_borders=True))
    # Partly outside (a third of its length): planned, and kept inside.
    tr = plan(pts([(300, 270), (960 * 1.5, 270)]), "pan")
    assert finite_cameras(tr)
    assert_inside(tr)


@pytest.mark.parametrize("t", [[-1.7e308, -1e308, 1e308, 1.7e308], [0, 5e-324, 1e-323, 1.5e-323]])
def test_extreme_timestamps_give_finite_cameras(t):
    # The stroke's duration overflowed (-1.7e308 .. 1.7e308) to inf, and the cameras to NaN.
    xy = line((200, 200), (700, 300), 4)
    tr = plan(pts(xy, t), "pan")
    assert finite_cameras(tr)
    assert_inside(tr)


def test_only_the_ratios_of_timestamps_matter():
    xy = line((200, 200), (700, 300), 4)
    seconds = plan(pts(xy, [0, 1, 3, 4]), "pan")
    huge = plan(pts(xy, [0, 1e300, 3e300, 4e300]), "pan")
    assert np.allclose(centres(seconds), centres(huge))


def test_rotations_are_scipys():
    """d2v.camera's rotation vectors and slerp (motion blur, shake and typed cameras use them, so
    that such renders need not import scipy) give scipy's Rotation and Slerp, at every angle:
    near zero, where Rodrigues' formula divides by the angle, and near and at a half turn, where
    the matrix's antisymmetric part vanishes."""
    from scipy.spatial.transform import Rotation, Slerp

    from d2v.camera import matrix_rotvec, rotvec_matrices, slerp

    rng = np.random.default_rng(7)
    axes = rng.normal(size=(300, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, 1e-7, 50), rng.uniform(0, 3.1, 150), np.pi - rng.uniform(0, 1e-7, 50),
                             np.full(50, np.pi)])
    v = axes * angles[:, None]
    R = Rotation.from_rotvec(v).as_matrix()
    assert np.abs(rotvec_matrices(v) - R).max() < 1e-12
    back = np.array([matrix_rotvec(m) for m in R])
    assert np.abs(rotvec_matrices(back) - R).max() < 1e-12  # the same rotation
    assert np.all(np.linalg.norm(back, axis=1) <= np.pi + 1e-12)  # turning the short way
    short = angles < 3.1
    assert np.abs(back[short] - v[short]).max() < 1e-12
    R0, R1 = Rotation.random(40, random_state=3).as_matrix(), Rotation.random(40, random_state=4).as_matrix()
    a = np.linspace(0, 1, 9)
    for r0, r1 in zip(R0, R1):
        expected = Slerp([0, 1], Rotation.from_matrix([r0, r1]))(a).as_matrix()
        assert np.abs(slerp(r0, r1, a) - expected).max() < 1e-12
        assert np.abs(slerp(r0, r1, 0.3) - Slerp([0, 1], Rotation.from_matrix([r0, r1]))(0.3).as_matrix()).max() < 1e-12
