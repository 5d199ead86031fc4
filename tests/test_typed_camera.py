"""A camera you can type (d2v.typed_camera, docs/camera.md): keyframes of axes or poses in
the request's `camera`, planned into the same CameraTrajectory as the drawn effects.

The truck is measured the way a viewer sees it: a two-plane scene rendered by the CLI, the
MP4 decoded, and each layer's slide found by matching a patch of the first frame in the last
(to a hundredth of a pixel by phase correlation), against what the geometry predicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from d2v.cli import main
from d2v.errors import InvalidPathError, InvalidRequestError
from d2v.models import parse_camera, parse_request
from d2v.preview import preview
from d2v.trajectory import DEFAULT_PARALLAX, move_points, plan_trajectory

from .conftest import textured_image
from .test_cli import d2v

W, H = 512, 288  # the photo, and the output
BOX = (200, 100, 330, 200)  # the near layer: x0, y0, x1, y1 (image px)
ZOOM, TRUCK = 1.5, 0.08


def request(camera, **kw):
    return parse_request({"camera": camera, "width": 256, "height": 144, "duration_s": 1, "fps": 8, **kw})


def _shift(first: np.ndarray, last: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(dx, dy) that the patch `box` (x0, y0, x1, y1) of `first` moved by in `last`: the best
    whole-pixel match, then the rest by phase correlation."""
    x0, y0, x1, y1 = box
    a, b = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in (first, last))
    patch = a[y0:y1, x0:x1]
    score = cv2.matchTemplate(b, patch, cv2.TM_CCOEFF_NORMED)
    _, best, _, (mx, my) = cv2.minMaxLoc(score)
    assert best > 0.9, f"patch {box} not found in the last frame (correlation {best:.2f})"
    window = cv2.createHanningWindow(patch.shape[::-1], cv2.CV_32F)
    (rx, ry), _ = cv2.phaseCorrelate(patch, b[my:my + y1 - y0, mx:mx + x1 - x0], window)
    return np.array([mx - x0 + rx, my - y0 + ry])


def test_a_truck_slides_each_layer_by_what_geometry_predicts(tmp_path):
    """truck 0.08 at zoom 1.5: the camera moves 0.08 D sideways, so the picture plane (the far
    layer) slides 1.5 x 0.08 x 512 = 61.4 px left and the near layer, at relative depth
    s = 1 - parallax, 1 / s times as far (94.5 px): measured on the decoded MP4 within half a pixel."""
    background = textured_image(W, H, seed=3)
    near = textured_image(W, H, seed=4)
    x0, y0, x1, y1 = BOX
    photo = background.copy()
    photo[y0:y1, x0:x1] = near[y0:y1, x0:x1]
    depth = np.zeros((H, W), np.uint8)
    depth[y0:y1, x0:x1] = 255
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "depth.png"), depth)
    cam = {"keyframes": [{"t": 0, "zoom": ZOOM}, {"t": 1, "zoom": ZOOM, "truck": TRUCK}]}
    (tmp_path / "camera.json").write_text(json.dumps(cam))

    r = d2v("render", "photo.png", "--camera", "camera.json", "--depth", "depth.png", "--duration", "1",
            "--fps", "6", "--size", f"{W}x{H}", "--crf", "6", "-q", "-o", "out.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = json.loads(Path(r.stdout.split("manifest:")[1].split()[0].removeprefix("file://")).read_text())
    assert manifest["effect"] == "camera" and manifest["request"]["camera"]["keyframes"][1]["truck"] == TRUCK
    assert manifest["clamped_frames"] == [] and manifest["fidelity"]["verdict"] == "followed"

    import av

    with av.open(str(tmp_path / "out.mp4")) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    plane_px = ZOOM * TRUCK * W  # output px the picture plane slides
    far = _shift(frames[0], frames[-1], (240, 6, 500, 70))  # background above the near layer
    near_layer = _shift(frames[0], frames[-1], (185, 95, 355, 210))  # inside the near layer
    assert np.abs(far - [-plane_px, 0.0]).max() < 0.5, far
    assert np.abs(near_layer - [-plane_px / (1.0 - DEFAULT_PARALLAX), 0.0]).max() < 0.5, near_layer


def test_axes_reach_their_keyframes_eased_between():
    keys = [{"t": 0}, {"t": 1, "pan": 10, "tilt": -5, "roll": 20, "zoom": 2}]
    eased = plan_trajectory(request(keys, allow_borders=True), 1024, 576)
    linear = plan_trajectory(request({"keyframes": keys, "easing": "linear"}, allow_borders=True), 1024, 576)
    assert eased.effect == "camera" and len(eased) == 8
    end = eased.frames[-1]
    forward = end.R()[2]
    assert math.degrees(math.atan2(forward[0], forward[2])) == pytest.approx(10.0, abs=1e-6)  # pan right
    assert math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2]))) == pytest.approx(-5.0, abs=1e-6)
    assert end.roll_deg == pytest.approx(20.0) and end.fx == pytest.approx(2 * 256)
    # Eased: slower than linear near the ends, the same at the middle of the move.
    zoom = lambda tr: np.array([f.fx for f in tr.frames]) / 256  # noqa: E731
    assert zoom(eased)[1] < zoom(linear)[1] and zoom(eased)[-2] > zoom(linear)[-2]
    mid = request({"keyframes": keys}, allow_borders=True, fps=3)  # frames at t = 0, 0.5, 1
    assert plan_trajectory(mid, 1024, 576).frames[1].fx / 256 == pytest.approx(math.sqrt(2))


def test_poses_type_a_planned_camera_back_in():
    """Every frame of a planned orbit, typed back as poses, gives the same cameras."""
    orbit = parse_request({"path": [{"x": 400, "y": 200}, {"x": 600, "y": 250}, {"x": 500, "y": 400},
                                    {"x": 380, "y": 260}, {"x": 410, "y": 205}],
                           "effect": "orbit", "width": 256, "height": 144, "duration_s": 1, "fps": 8})
    planned = plan_trajectory(orbit, 1024, 576)
    keys = [{"t": i / 7, "pose": {"center": f.camera_center().tolist(), "rotation": f.rotation,
                                  "fov_deg": f.fov_deg}} for i, f in enumerate(planned.frames)]
    typed = plan_trajectory(request({"keyframes": keys, "easing": "linear"}), 1024, 576)
    for a, b in zip(planned.frames, typed.frames):
        assert np.allclose(a.R(), b.R(), atol=1e-9) and np.allclose(a.t(), b.t(), atol=1e-6)
        assert a.fx == pytest.approx(b.fx)
    assert typed.clamped_frames == []  # the orbit's views were inside already


def test_views_stay_inside_unless_allow_borders():
    keys = [{"t": 0}, {"t": 1, "truck": 0.2}]  # at zoom 1 the view fills the image: no room to truck
    kept = plan_trajectory(request(keys), 1024, 576)
    free = plan_trajectory(request(keys, allow_borders=True), 1024, 576)
    assert kept.clamped_frames and "kept the view inside the image" in kept.notes[0]
    assert free.frames[-1].center[0] - free.frames[0].center[0] == pytest.approx(0.2 * 1024)
    assert not free.clamped_frames


@pytest.mark.parametrize("camera, words", [
    ({"keyframes": [{"t": 0}, {"t": 1, "pan": 100}]}, "camera.keyframes.1.pan: Input should be less than or equal to 60"),
    ({"keyframes": [{"t": 1}, {"t": 0.5}]}, "camera.keyframes: keyframe 1 has t=0.5, not after keyframe 0's"),
    ({"keyframes": []}, "camera.keyframes: List should have at least 1 item"),
    ([{"t": 0, "zoom": 0}], "camera.keyframes.0.zoom"),
    ([{"t": 0, "swoosh": 1}], "camera.keyframes.0.swoosh: is not a known field"),
    ([{"t": 0, "zoom": 2, "pose": {"center": [0, 0, -500], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                   "fov_deg": 50}}], "camera.keyframes.0: give either axes or a pose"),
    ([{"t": 0, "pose": {"center": [0, 0, -500], "rotation": [[2, 0, 0], [0, 1, 0], [0, 0, 1]], "fov_deg": 50}}],
     "camera.keyframes.0.pose: rotation must be a rotation matrix"),
    ({"keyframes": [{"t": 0}], "easing": "bouncy"}, "camera.easing"),
    ([{"t": 0, "zoom": True}], "camera.keyframes.0.zoom: zoom must be a number, got true"),
    ([{"t": 0, "pan": float("nan")}], "camera.keyframes.0.pan: pan must be a finite number, got nan"),
    ([{"t": float("inf")}], "camera.keyframes.0.t: t must be a finite number"),
])
def test_bad_cameras_are_named_errors_naming_the_field(camera, words):
    with pytest.raises(InvalidRequestError) as err:
        request(camera)
    assert words in str(err.value)


def test_a_view_past_the_pictures_horizon_is_a_named_error():
    """Panned and tilted 60 degrees at zoom 1 with borders allowed, a corner of the frame looks
    past the picture's horizon: nothing to show there (with a depth map the render raised
    OverflowError). Refused, naming the keyframe; inside the image the clamp turns it back."""
    keys = [{"t": 0}, {"t": 1, "pan": -60, "tilt": -60, "dolly": 0.9}]
    with pytest.raises(InvalidRequestError, match=r"camera.keyframes.1: at t=.* looks past the picture's horizon"):
        plan_trajectory(request(keys, allow_borders=True), 1024, 576, depth_parallax=DEFAULT_PARALLAX)
    assert plan_trajectory(request(keys), 1024, 576, depth_parallax=DEFAULT_PARALLAX).clamped_frames
    assert plan_trajectory(request([{"t": 0}, {"t": 1, "pan": 60}], allow_borders=True), 1024, 576)


def test_a_request_needs_a_path_or_a_camera():
    with pytest.raises(InvalidPathError, match="path: is required .* or give camera"):
        parse_request({"effect": "pan"})
    with pytest.raises(InvalidRequestError, match="invalid camera: keyframes.0.t"):
        parse_camera('[{"t": -1}]')


def test_cli_bad_camera_json_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.json").write_text('{"keyframes": [{"t": 0}, {"t": 2, "dolly": 1.5}]}')
    (tmp_path / "broken.json").write_text('{"keyframes": [')
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), textured_image(128, 72))
    monkeypatch.chdir(tmp_path)
    for camera, words in (("bad.json", "camera.keyframes.1.dolly: Input should be less than or equal to 0.9"),
                          ("broken.json", "camera file broken.json is not valid JSON"),
                          ("missing.json", "camera file not found")):
        assert main(["trajectory", str(photo), "--camera", camera]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err


def test_the_preview_and_the_move_points_of_a_typed_camera():
    photo = textured_image(640, 360, seed=5)
    req = request([{"t": 0, "zoom": 1.5}, {"t": 1, "zoom": 1.5, "truck": -0.1}])
    shown = preview(photo, req)
    assert shown["effect"] == "camera" and shown["path_shape"] is None and shown["frames"] == 8
    assert shown["path"][-1][0] < shown["path"][0][0]  # the view centre went left (truck -0.1)
    points = move_points(req, plan_trajectory(req, 640, 360))
    assert points.shape == (8, 2) and points[-1, 0] == pytest.approx(320 - 0.1 * 640)


@pytest.mark.parametrize("first, last", [
    ({"zoom": 1.5}, {"zoom": 1.5, "pedestal": -0.04}),
    ({"zoom": 1.5}, {"zoom": 1.5, "pan": -10}),
    ({"zoom": 1.5}, {"zoom": 1.5, "tilt": 5}),
    ({"zoom": 1.5}, {"zoom": 1.5, "roll": -30}),
    ({"zoom": 2.0}, {"zoom": 1.3}),
    ({"zoom": 1.5}, {"zoom": 1.5, "dolly": 0.2}),
    ({"zoom": 1.8}, {"zoom": 1.8, "truck": 0.05, "pedestal": 0.03, "pan": 3, "roll": 5}),
])
def test_every_axis_moves_each_layer_where_the_documented_geometry_puts_it(first, last):
    """Beyond the truck: pedestal, pan, tilt, roll, zoom, dolly and a mix, on the two-plane
    scene (bench/depth_general.py: the layers' maps built from docs/camera.md's words, not
    from d2v.typed_camera). The first frame warped by each layer's predicted map matches the
    last frame, patch by patch, to within half a pixel (median; a pan or roll has no
    parallax: both layers turn alike), and the path check follows the typed camera."""
    from bench.depth_general import layer_errors

    far, near, report = layer_errors(first, last, fps=2)
    assert far[0] < 0.5 and near[0] < 0.5 and max(far[1], near[1]) < 1.0, (far, near)
    assert report.verdict == "followed", report.one_line()


def test_a_trajectory_made_past_the_horizon_still_renders(monkeypatch):
    """The renderer itself, given such a view by a library caller (the planner's refusal taken
    away), draws the frames instead of raising OverflowError from an infinite band width."""
    import d2v.trajectory as trajectory_module
    from d2v.render import CameraRenderer

    monkeypatch.setattr(trajectory_module, "_check_sees_the_picture", lambda *args: None)
    keys = [{"t": 0}, {"t": 1, "pan": -60, "tilt": -60, "dolly": 0.9}]
    photo = np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)
    depth = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (96, 1))
    plan = plan_trajectory(request(keys, allow_borders=True, fps=2, width=128, height=72), 128, 96,
                           depth_parallax=DEFAULT_PARALLAX)
    frames = list(CameraRenderer(photo, depth).render(plan))
    assert len(frames) == len(plan.frames) and frames[-1].shape == (72, 128, 3)


def test_a_push_past_the_photos_pixels_is_unmeasured_not_missed(tmp_path):
    """A typed camera that enlarges a 320 px photo 200x ends on a view 1.6 photo px wide: a
    smear the check cannot place to 1% of its width (0.02 px). It said 'missed' ("end 25% off",
    0.6 photo px); such frames are not measured, and the verdict says why."""
    cv2.imwrite(str(tmp_path / "photo.png"), textured_image(320, 240, seed=3))
    (tmp_path / "cam.json").write_text(json.dumps({"keyframes": [{"t": 0, "zoom": 1.5},
                                                                 {"t": 1, "dolly": 0.9, "zoom": 20}]}))
    r = d2v("render", "photo.png", "--camera", "cam.json", "--size", "128x96", "--duration", "1", "--fps", "8",
            "-o", "x.mp4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "path unmeasured: the last frame (frame 7) shows 1.6 px of the photo across" in r.stdout, r.stdout


def test_a_tiny_photo_panned_across_is_still_measured(tmp_path):
    """The floor under which frames are not judged must not take small photos' checks away: a
    16 px photo panned across shows 6.4 px views, and its faithful video is followed."""
    photo = cv2.resize(textured_image(320, 240, seed=5), (16, 16), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    (tmp_path / "path.json").write_text(json.dumps({"canvas": {"width": 1000, "height": 1000}, "points": [
        {"x": 200, "y": 200}, {"x": 800, "y": 700}]}))
    r = d2v("render", "photo.png", "--path", "path.json", "--size", "128x96", "--duration", "1", "--fps", "8",
            "-o", "x.mp4", cwd=tmp_path)
    assert r.returncode == 0 and "path followed" in r.stdout, (r.stdout, r.stderr)
