"""Post effects (d2v.post): each effect's defining property on real renders, and the
pipeline's video (real encode and decode) showing them, on the camera and svd backends."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from d2v import camera
from d2v.encode import decode_video
from d2v.models import parse_request
from d2v.pathshape import clean_path, shape_of
from d2v.pipeline import render_job
from d2v.post import (
    BulletTime, CameraFrames, ClipFrames, Glitch, PostContext, Tenet, apply_post, frames_of,
)
from d2v.render import CameraRenderer
from d2v.store import LocalStore
from d2v.trajectory import plan_trajectory
from tests.conftest import textured_image
from tests.test_images import png_bytes

W, H = 480, 270  # the photo
PATH = [{"x": 90, "y": 110}, {"x": 250, "y": 140}, {"x": 390, "y": 150}]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def request(**kw):
    body = {"path": PATH, "effect": "pan", "duration_s": 2.0, "fps": 12, "width": 320, "height": 180, **kw}
    return parse_request(body)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return textured_image(W, H, seed=21)


@pytest.fixture(scope="module")
def scene(photo):
    """A pan over the photo: its request, trajectory, renderer and plain frames."""
    req = request()
    traj = plan_trajectory(req, W, H)
    renderer = CameraRenderer(photo)
    return req, traj, renderer, list(renderer.render(traj))


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from d2v.flow import make_dis

    return make_dis().calc(*[cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (a, b)], None)


# -- reverse and boomerang, end to end ----------------------------------------------------


def test_reverse_plays_the_same_render_backwards(photo, tmp_path):
    # crf 12: the photo is noise at every scale, the hardest case for the encoder; the
    # comparison is of two encodes, each frame at another place in its group of pictures.
    store = LocalStore(tmp_path / "store")
    plain = render_job(png_bytes(photo), request(crf=12), store, output_path=tmp_path / "plain.mp4")
    rev = render_job(png_bytes(photo), request(crf=12, post=["reverse"]), store, output_path=tmp_path / "rev.mp4")
    a, _ = decode_video(tmp_path / "plain.mp4")
    b, _ = decode_video(tmp_path / "rev.mp4")
    n = len(a)
    assert len(b) == n == rev.frames == plain.frames
    assert min(psnr(b[i], a[n - 1 - i]) for i in range(n)) > 35
    assert psnr(b[0], a[0]) < 30  # it does move: reversed is not the same clip
    assert "reverse" in rev.methods["post"] and "before post and look" in rev.methods["post"]
    # The path check measured the camera move (the frames before post), as for the plain job.
    assert rev.fidelity.verdict == plain.fidelity.verdict == "followed"


def test_boomerang_is_2n_minus_1_frames_symmetric_about_the_turn(scene):
    req, traj, renderer, plain = scene
    n = len(plain)
    out = list(frames_of(apply_post(CameraFrames(renderer, traj), ["boomerang"], PostContext((0, 0), (0, 0)))))
    assert len(out) == 2 * n - 1
    assert all(np.array_equal(out[i], out[2 * n - 2 - i]) for i in range(2 * n - 1))
    assert all(np.array_equal(out[i], plain[i]) for i in range(n))
    assert not np.array_equal(out[n - 2], out[n - 1])  # the turn frame shown once, not twice


# -- glitch -------------------------------------------------------------------------------


def test_glitch_is_seeded_and_touches_its_share_of_frames(scene):
    req, traj, renderer, plain = scene
    clip = ClipFrames(np.stack(plain), traj)
    n = len(plain)
    for amount in (0.0, 0.25, 0.5, 1.0):
        out = list(frames_of(Glitch(clip, amount, seed=5)))
        touched = [i for i in range(n) if not np.array_equal(out[i], plain[i])]
        assert len(touched) == round(amount * n)
        if 0 < amount < 1:
            # A glitched frame is visibly broken: channels split apart, not a faint change.
            worst = min(psnr(out[i], plain[i]) for i in touched)
            assert worst < 25
    again = list(frames_of(Glitch(clip, 0.5, seed=5)))
    other = list(frames_of(Glitch(clip, 0.5, seed=6)))
    first = list(frames_of(Glitch(clip, 0.5, seed=5)))
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


# -- mirror fold --------------------------------------------------------------------------


def test_mirror_fold_ends_as_a_mirror_about_the_line_through_the_paths_centre(scene):
    req, traj, renderer, plain = scene
    ctx = PostContext.for_job(req, traj, W, H)
    out = list(frames_of(apply_post(CameraFrames(renderer, traj), ["mirror_fold"], ctx)))
    h, w = plain[0].shape[:2]
    last = len(plain) - 1
    centre = shape_of(clean_path(req.path.image_points(W, H))).centroid
    y0 = camera.apply_homography(camera.frame_homography(traj.frames[last]), [centre])[0, 1]
    assert 0.2 * h < y0 < 0.8 * h
    rows = np.arange(h) + 0.5
    src_y = (2 * y0 - rows - 0.5).astype(np.float32)  # OpenCV row of each row's mirror point
    mx = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    my = np.tile(src_y[:, None], (1, w))
    mirror = cv2.remap(plain[last], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    above, below = rows < y0 - 1, rows > y0 + 1
    reach = (rows > 2 * y0 - h + 1) & (rows < 2 * y0 - 1)  # rows whose mirror lies inside the frame
    # One half (the larger) is unchanged; the other is that half mirrored about y = y0.
    kept, folded = (below, above) if np.array_equal(out[last][below], plain[last][below]) else (above, below)
    assert np.array_equal(out[last][kept], plain[last][kept])
    folded &= reach
    assert kept.sum() >= folded.sum() > 20
    assert psnr(out[last][folded], mirror[folded]) > 35
    assert psnr(out[last][folded], plain[last][folded]) < 20  # and that is not what was there
    # On the way, the folding half is in perspective: neither the picture nor its mirror.
    mid = round(0.6 * last)
    assert psnr(out[mid], plain[mid]) < 25


# -- bullet time --------------------------------------------------------------------------


def _moving_scene(plain: list[np.ndarray]) -> np.ndarray:
    """The camera's frames plus something moving by itself: a square sliding down 3 px a frame."""
    frames = np.stack(plain).copy()
    for i, f in enumerate(frames):
        cv2.rectangle(f, (60, 10 + 3 * i), (84, 34 + 3 * i), (250, 40, 40), -1)
        cv2.circle(f, (72, 22 + 3 * i), 5, (20, 20, 220), -1)
    return frames


def _unexplained_motion(a: np.ndarray, b: np.ndarray) -> float:
    """How far things move between two frames beyond one homography (a camera's move over a
    flat picture): the 99.5th percentile of the flow's residual after a robust fit, pixels."""
    f = flow(a, b)
    h, w = f.shape[:2]
    ys, xs = np.mgrid[8:h - 8:4, 8:w - 8:4]
    p0 = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float32)
    p1 = p0 + f[ys.ravel(), xs.ravel()]
    M, _ = cv2.findHomography(p0, p1, cv2.RANSAC, 1.0)
    pred = cv2.perspectiveTransform(p0[None], M)[0]
    return float(np.percentile(np.linalg.norm(pred - p1, axis=1), 99.5))


def test_bullet_time_freezes_the_scene_while_the_camera_swings(photo):
    req = request(duration_s=3.0)  # 36 frames: an 11-frame swing, a few degrees a frame as at 24 fps
    traj = plan_trajectory(req, W, H)
    plain = list(CameraRenderer(photo).render(traj))
    moving = _moving_scene(plain)
    bt = BulletTime(ClipFrames(moving, traj), PostContext.for_job(req, traj, W, H).centre)
    out = list(frames_of(bt))
    n = len(out)
    assert n == len(plain)  # it keeps the clip's length
    assert np.array_equal(out[0], moving[0]) and np.array_equal(out[-1], moving[-1])
    a, b = bt.a, bt.b
    assert b - a >= 3
    # Frozen: between consecutive frames only the camera moves (one homography explains all).
    frozen = [_unexplained_motion(out[i], out[i + 1]) for i in range(a, b)]
    assert max(frozen) < 1.5, frozen
    # ... and it does move: the camera swings around the path's centre.
    assert min(psnr(out[i], out[a]) for i in range(a + 1, b)) < 25
    # Playing (before the ramp down): the square moves against the background.
    playing = _unexplained_motion(out[0], out[1])
    assert playing > 3.0, playing
    # The ramps: the scene's time slows into the freeze and speeds out of it, no jumps.
    step = np.diff(bt.tau)
    assert step[a - 1] < step[0] and step[b] < step[-1]
    assert np.all(step >= -1e-9) and step.max() < 2.5


# -- tenet --------------------------------------------------------------------------------


def test_tenet_region_moves_against_the_rest(scene):
    req, traj, renderer, plain = scene
    tenet = Tenet(CameraFrames(renderer, traj), PostContext.for_job(req, traj, W, H).end)
    out = list(frames_of(tenet))
    n = len(out)
    inside = tenet.mask == 255
    outside = tenet.mask == 0
    assert inside.sum() > 500 and outside.sum() > 500
    seam = (tenet.mask > 0) & (tenet.mask < 255)
    assert seam.sum() > inside.sum() * 0.3  # a soft seam, not a hard cut
    i = n // 4  # well into the move (the pan is still at the very ends and the middle of tenet)
    fx = flow(out[i], out[i + 1])[..., 0]
    plain_fx = np.median(flow(plain[i], plain[i + 1])[..., 0])
    assert abs(plain_fx) > 1.0
    assert np.sign(np.median(fx[outside])) == np.sign(plain_fx)
    assert np.sign(np.median(fx[inside])) == -np.sign(plain_fx)


# -- the pipeline, end to end --------------------------------------------------------------


def test_camera_job_with_post_effects_streams_every_effect(photo, tmp_path):
    """All six in one job through the streaming pipeline: the video has the chain's frames,
    the manifest says so, and the path check still measured the plain move."""
    store = LocalStore(tmp_path / "store")
    post = ["bullet_time", "tenet", "mirror_fold", "glitch", "boomerang", "reverse"]
    manifest = render_job(png_bytes(photo), request(post=post), store, output_path=tmp_path / "all.mp4")
    frames, _ = decode_video(tmp_path / "all.mp4")
    n = request().n_frames
    assert len(frames) == manifest.frames == 2 * n - 1
    assert manifest.duration_s == pytest.approx((2 * n - 1) / 12)
    assert " -> ".join(post[:3]) in manifest.methods["post"]
    assert manifest.fidelity.verdict == "followed"


def test_svd_job_with_a_post_effect(photo, tmp_path, monkeypatch, tmp_path_factory):
    from d2v.tiny_svd import make_tiny_svd

    monkeypatch.setenv("D2V_SVD_MODEL", str(make_tiny_svd(tmp_path_factory.mktemp("tiny-svd"))))
    store = LocalStore(tmp_path / "store")
    req = request(backend="svd", post=["boomerang"], num_inference_steps=2, fps=8, width=128, height=72,
                  auto_correct=False)
    manifest = render_job(png_bytes(photo), req, store, output_path=tmp_path / "svd.mp4")
    frames, _ = decode_video(tmp_path / "svd.mp4")
    n = req.n_frames
    assert manifest.backend == "svd" and len(frames) == manifest.frames == 2 * n - 1
    assert min(psnr(frames[i], frames[2 * n - 2 - i]) for i in range(n)) > 35
    assert "boomerang" in manifest.methods["post"] and "post" in manifest.stage_seconds


def test_bullet_time_swings_through_the_jobs_depth(photo, tmp_path):
    """With a depth map the frozen frame is re-rendered with it: a near disc slides against
    the background as the camera swings (no one homography explains the frozen frames), where
    without one the swing is a flat picture turning. Run as a job with the depth map."""
    from d2v.render import load_depth_map

    depth_png = np.zeros((H, W), np.uint8)
    cv2.circle(depth_png, (W // 2, H // 2), 70, 255, -1)
    depth_bytes = png_bytes(cv2.cvtColor(cv2.GaussianBlur(depth_png, (0, 0), 3), cv2.COLOR_GRAY2RGB))
    depth = load_depth_map(depth_bytes, W, H)
    req = request(duration_s=3.0, effect="zoom_in")
    traj = plan_trajectory(req, W, H, depth_parallax=0.35)
    ctx = PostContext.for_job(req, traj, W, H, depth)

    def swing_motion(with_depth: bool) -> float:
        renderer = CameraRenderer(photo, depth if with_depth else None)
        bt = BulletTime(CameraFrames(renderer, traj), ctx.centre, depth if with_depth else None)
        frozen = [bt.frame(i) for i in range(bt.a, bt.b + 1)]
        return max(_unexplained_motion(x, y) for x, y in zip(frozen, frozen[1:]))

    assert swing_motion(False) < 1.5 < 3.0 < swing_motion(True)
    store = LocalStore(tmp_path / "store")
    manifest = render_job(png_bytes(photo), req.model_copy(update={"post": ["bullet_time"]}), store,
                          depth_bytes=depth_bytes, output_path=tmp_path / "bt.mp4")
    frames, _ = decode_video(tmp_path / "bt.mp4")
    assert len(frames) == manifest.frames == req.n_frames and manifest.depth_source == "user"


def test_the_preview_shows_the_post_effects_and_the_look_with_views_that_follow_them():
    """The page's previews (and the preset gallery) show what the job will: a boomerang is
    2N-1 frames whose views run out and back, and noir is grey."""
    import base64

    from d2v.preview import preview

    image = textured_image(480, 270, seed=8)
    path = {"canvas": {"width": 480, "height": 270}, "points": PATH}
    plain = preview(image, parse_request({"path": path, "effect": "zoom_in", "duration_s": 1, "fps": 12}))
    shown = preview(image, parse_request({"path": path, "effect": "zoom_in", "duration_s": 1, "fps": 12,
                                          "post": ["boomerang"], "look": "noir"}))
    n = plain["frames"]
    assert (shown["frames"], len(shown["views"]), shown["post"], shown["look"]) == (2 * n - 1, 2 * n - 1,
                                                                                   ["boomerang"], "noir")
    views, out_and_back = np.array(plain["views"]), np.array(shown["views"])
    assert np.allclose(out_and_back[:n], views) and np.allclose(out_and_back[n:], views[-2::-1])
    frames, _ = decode_video(base64.b64decode(shown["video"].split(",", 1)[1]))
    assert len(frames) == 2 * n - 1
    assert np.abs(frames[..., 0].astype(int) - frames[..., 2]).mean() < 2  # noir: no colour left
    colour, _ = decode_video(base64.b64decode(plain["video"].split(",", 1)[1]))
    assert np.abs(colour[..., 0].astype(int) - colour[..., 2]).mean() > 10
