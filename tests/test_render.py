"""The camera renderer: what the viewer sees for known cameras.

Cameras are built here with `camera.make_frame` / `camera.look_at` (not the trajectory
planner), so each test knows exactly where things must appear.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from d2v import camera
from d2v.errors import DepthMapMismatchError, InvalidImageError
from d2v.models import EFFECTS, CameraFrame, CameraTrajectory, RenderRequest
from d2v.render import CameraRenderer, load_depth_map, pseudo_depth, reference_center
from d2v.trajectory import plan_trajectory

from .conftest import textured_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def view(
    W: int, H: int, w: int, h: int, *, center=None, zoom: float = 1.0, lens: bool = False,
    offset=(0.0, 0.0, 0.0), fx_scale: float = 1.0, index: int = 0,
) -> CameraFrame:
    """A camera looking straight at the image point `center` (default: the cover crop's
    centre) with zoom z: by dollying to distance D/z, or (lens=True) by fx = z * w.
    `offset` moves the camera centre afterwards without turning it."""
    u0, v0, cw, ch = camera.cover_crop(W, H, w, h)
    c = np.array([u0 + cw / 2, v0 + ch / 2]) if center is None else np.asarray(center, float)
    dist = cw if lens else cw / zoom
    C = np.array([c[0], c[1], -dist]) + np.asarray(offset, float)
    fx = w * (zoom if lens else 1.0) * fx_scale
    return camera.make_frame(index, index / 24, camera_center=C, R=np.eye(3), fx=fx, out_w=w, out_h=h, crop_w=cw)


def trajectory(frames: list[CameraFrame], W: int, H: int, w: int, h: int, **kw) -> CameraTrajectory:
    frames = [f.model_copy(update={"index": i, "time_s": i / 24}) for i, f in enumerate(frames)]
    u0, v0, cw, ch = camera.cover_crop(W, H, w, h)
    return CameraTrajectory(
        effect=kw.pop("effect", "pan"), image_width=W, image_height=H, width=w, height=h, fps=24,
        base_distance=cw, frames=frames, **kw,
    )


def shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far content moved from a to b (phase correlation), (dx, dy)."""
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
    return np.array([dx, dy])


# -- flat scene ----------------------------------------------------------------------


@pytest.mark.parametrize("size,interp", [((1024, 576), cv2.INTER_LINEAR), ((640, 360), cv2.INTER_AREA)])
def test_reference_camera_shows_the_cover_crop(size, interp):
    img = textured_image(960, 700, seed=1)  # 16:9 cover crop = rows 80..620, all columns
    w, h = size
    out = CameraRenderer(img).render_frame(view(960, 700, w, h), w, h)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert psnr(out, cv2.resize(img[80:620], (w, h), interpolation=interp)) > 35


def test_same_size_reference_is_the_image_itself(photo):
    out = CameraRenderer(photo).render_frame(view(960, 540, 960, 540), 960, 540)
    assert np.array_equal(out, photo)


@pytest.mark.parametrize("lens", [False, True], ids=["dolly", "lens"])
def test_zoom_2x_on_a_point_puts_it_at_the_frame_centre(lens):
    img = (textured_image(960, 540, seed=2) // 3).astype(np.uint8)  # dark, so the dot stands out
    p = (700.0, 150.0)  # continuous coordinates: the dot covers pixels 697..702
    cv2.circle(img, (int(p[0]), int(p[1])), 2, (255, 255, 255), -1, lineType=cv2.LINE_8)
    p = (int(p[0]) + 0.5, int(p[1]) + 0.5)  # cv2.circle centres on pixel (700, 150)
    w, h = 640, 360
    out = CameraRenderer(img).render_frame(view(960, 540, w, h, center=p, zoom=2.0, lens=lens), w, h)
    gray = out.min(axis=2).astype(np.float64)
    ys, xs = np.nonzero(gray > 170)  # half way between the dark photo (<= 85) and the dot
    assert len(xs) > 0, "the dot is not in the frame"
    weights = gray[ys, xs]
    cx, cy = np.average(xs + 0.5, weights=weights), np.average(ys + 0.5, weights=weights)
    assert abs(cx - w / 2) < 1.0 and abs(cy - h / 2) < 1.0
    # Zoom 2 of a 960-wide cover crop at 640 px: 1 image px = 4/3 output px, so the dot
    # (5 px across) spans about 6.7 px.
    assert 6 <= xs.max() - xs.min() + 1 <= 8


def test_large_image_shown_small_does_not_alias():
    W, H, w, h = 4000, 2250, 640, 360
    cam = view(W, H, w, h)  # 6.25 source pixels per output pixel
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = CameraRenderer(noise).render_frame(cam, w, h)
    area = cv2.resize(noise, (w, h), interpolation=cv2.INTER_AREA)
    naive = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    assert psnr(out, area) > 27  # a plain bilinear warp gets about 15
    assert psnr(naive, area) < 20  # (the test can tell)

    # A grating finer than the output can show must vanish, not turn into a moire.
    x = np.arange(W) + 0.5
    row = 127.5 + 100 * np.cos(2 * np.pi * x / (1.4 * W / w))
    grating = np.repeat(np.broadcast_to(row, (H, W)).astype(np.uint8)[:, :, None], 3, axis=2)
    out = CameraRenderer(grating).render_frame(cam, w, h).astype(np.float64)
    assert out.std() < 0.1 * 70.7  # 70.7 = the grating's own std
    assert cv2.resize(grating, (w, h), interpolation=cv2.INTER_LINEAR).std() > 0.5 * 70.7


def test_zoom_through_a_pyramid_level_does_not_pop():
    """Around 2 source px per output px the renderer moves to the next pyramid level; it
    blends levels, so the picture's sharpness changes smoothly through a slow zoom
    (picking one level would halve or double it in one frame)."""
    img = textured_image(2400, 1350, seed=3)  # 2.34 source px per output px at zoom 1
    r = CameraRenderer(img)
    energy = []
    for z in np.linspace(1.10, 1.24, 15):  # 2.13 -> 1.89 source px per output px
        g = cv2.cvtColor(r.render_frame(view(2400, 1350, 1024, 576, zoom=z, lens=True), 1024, 576), cv2.COLOR_RGB2GRAY)
        g = g.astype(np.float64)
        energy.append(np.mean(np.diff(g, axis=1) ** 2) + np.mean(np.diff(g, axis=0) ** 2))
    assert np.abs(np.diff(np.log(energy))).max() < 0.05


def test_render_streams_frames(photo):
    frames = [view(960, 540, 512, 288, zoom=1 + 0.1 * i) for i in range(5)]
    gen = CameraRenderer(photo).render(trajectory(frames, 960, 540, 512, 288))
    assert inspect.isgenerator(gen)
    out = list(gen)
    assert len(out) == 5 and all(f.shape == (288, 512, 3) and f.dtype == np.uint8 for f in out)
    assert not np.shares_memory(out[0], out[1])  # each frame is its own array


def test_flat_frames_take_the_homography_path(photo, monkeypatch):
    """Without depth every frame is one plane warp; never the per-pixel maps of the depth
    path (several times slower: bench/render_bench.py times both)."""
    def per_pixel(*args, **kwargs):
        raise AssertionError("a flat frame built per-pixel depth maps")

    monkeypatch.setattr(CameraRenderer, "_depth_maps", per_pixel)
    r = CameraRenderer(photo)
    cams = [view(960, 540, 1024, 576, zoom=1.2 + 0.02 * i, center=(480 + i, 270)) for i in range(5)]
    frames = [r.render_frame(c, 1024, 576) for c in cams]
    assert all(f.shape == (576, 1024, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1  # the camera did move


def test_flat_frames_are_the_three_channel_warp_bit_for_bit(photo):
    """Flat warps run on an RGBA copy of the pyramid (faster in OpenCV): every byte is what a
    3-channel warp of the same level gives, through a blend of two levels too."""
    r = CameraRenderer(photo)
    for (w, h), cam in (((512, 288), view(960, 540, 512, 288, zoom=1.3, center=(500.3, 260.7))),  # 2 levels
                        ((640, 360), view(960, 540, 640, 360, zoom=2.7, center=(300, 200)))):  # magnified: level 0
        G = np.linalg.inv(camera.frame_homography(cam))
        level = min(max(math.log2(math.sqrt(abs(np.linalg.det(camera.local_affine(G, w / 2, h / 2)[1])))), 0.0),
                    len(r._levels) - 1.0)
        lo, frac = int(level), level - int(level)

        def warp3(lvl):
            return cv2.warpPerspective(r._levels[lvl], camera.to_opencv(G, lvl), (w, h),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

        expected = warp3(lo) if frac < 0.02 else cv2.addWeighted(warp3(lo), 1 - frac, warp3(lo + 1), frac, 0.0)
        assert np.array_equal(r.render_frame(cam, w, h), expected)


def test_flat_frames_drawn_as_i420_planes_are_the_rgb_frames_converted(photo):
    """A plain flat move reaches the encoder as I420 planes the renderer draws itself (the
    pyramid in YUV): what the encoder's own conversion makes of the RGB frame, but for
    rounding. A wrong matrix (BT.601), chroma sited or filtered otherwise than the 2x2 block
    average, or a level picked otherwise is several levels off at the photo's hard colour edges."""
    from d2v.encode import I420, Yuv420

    tilted = cv2.Rodrigues(np.array([0.04, -0.03, 0.2]))[0]  # roll and tilt: a true perspective warp
    base = view(960, 540, 512, 288, zoom=1.5, center=(470.4, 281.9))
    cams = [view(960, 540, 512, 288, zoom=2.7, center=(300.2, 200.6)),  # magnified: level 0
            view(960, 540, 512, 288, zoom=1.3, center=(500.3, 260.7)),  # minified: two levels blended
            base.model_copy(update={"rotation": [list(row) for row in tilted @ np.asarray(base.rotation)]})]
    traj = trajectory(cams, 960, 540, 512, 288)
    r = CameraRenderer(photo)
    assert r.draws_planes(traj)
    to_yuv = Yuv420(512, 288)
    for rgb, planes in zip(r.render(traj), r.render(traj, planes=[0, 1, 2]), strict=True):
        assert isinstance(planes, I420)
        want = to_yuv(rgb).astype(np.int16)
        got = planes.buffer
        for name, rows in (("Y", slice(0, 288)), ("U and V", slice(288, None))):
            d = got[rows].astype(np.int16) - want[rows]
            # (Each side rounds three or four times: 2 levels apart at 1 sample in 10^4.)
            # (2 levels at 16-31 Y samples of 57.6 k a frame here, where two levels are blended or
            # a flat warp's: each side rounds twice. Real clips: 2-4 a million, bench/RESULTS.md.)
            assert np.abs(d).max() <= 2 and (np.abs(d) > 1).mean() < 6e-4, name
            assert np.abs(d).mean() < 0.3 and abs(d.mean()) < 0.2, name


def test_frames_with_motion_blur_are_not_drawn_as_planes(photo):
    """Any frame but those with motion blur (averaged in RGB) can be drawn as planes: flat,
    with a depth map or with the stand-in depth; only the frames asked for come as planes."""
    cams = [view(960, 540, 320, 180, zoom=1.2 + 0.1 * i, offset=(8.0 * i, 0, 0)) for i in range(3)]
    traj = trajectory(cams, 960, 540, 320, 180)
    flat, deep = CameraRenderer(photo), CameraRenderer(photo, near_square_depth(960, 540, (300, 200, 600, 400)))
    assert flat.draws_planes(traj) and not flat.draws_planes(traj, motion_blur=0.5)
    assert deep.draws_planes(traj) and not deep.draws_planes(traj, motion_blur=0.5)
    dolly = _plan(json.loads((EXAMPLES / "paths" / "dolly_zoom.json").read_text()), "dolly_zoom", 960, 540)
    assert flat.draws_planes(dolly)  # (a stand-in depth about its subject)
    for renderer in (flat, deep):
        with pytest.raises(ValueError, match="I420 planes"):
            next(renderer.render(traj, planes=[0], motion_blur=0.5))
        kinds = [type(f).__name__ for f in renderer.render(traj, planes=[1])]
        assert kinds == ["ndarray", "I420", "ndarray"]  # the others stay RGB


# -- depth ---------------------------------------------------------------------------


def near_square_depth(W: int, H: int, box) -> np.ndarray:
    depth = np.zeros((H, W), np.float32)
    x0, y0, x1, y1 = box
    depth[y0:y1, x0:x1] = 1.0
    return depth


def test_depth_frames_drawn_as_i420_planes_are_the_rgb_frames_converted(photo):
    """Depth frames reach the encoder as I420 planes too: the remap, the blend of two levels,
    an edge's matte and the revealed background drawn from YUV copies of the textures give what
    the encoder's conversion makes of the RGB frame but for rounding (Y 2 levels off only at a
    few matte pixels, which round once more on each side). Reading the RGB hidden background,
    or the photo's rows for it, is tens of levels off in the revealed band."""
    from d2v.encode import I420, Yuv420

    W, H, w, h = 960, 540, 320, 180
    depth = near_square_depth(W, H, (330, 120, 630, 420))
    # Sideways (the band revealed: hidden background, edge rays, mattes), then pulled back (two
    # levels blended); the first frame's layers do not part: a plain warp.
    cams = [view(W, H, w, h), view(W, H, w, h, offset=(40, 0, 0)),
            view(W, H, w, h, offset=(-30, 10, 0), zoom=0.66, center=(480.3, 270.6))]
    traj = trajectory(cams, W, H, w, h)
    r = CameraRenderer(photo, depth, parallax=0.35)
    layers = r._trajectory_layers(traj, traj.frames[0].camera_center())
    assert layers.tears == (False, True, True) and r._level(np.linalg.inv(camera.frame_homography(cams[2])), w, h)[1] > 0.1
    to_yuv = Yuv420(w, h)
    rgb, planes = list(r.render(traj)), list(r.render(traj, planes=[0, 1, 2]))
    for a, p in zip(rgb, planes, strict=True):
        assert isinstance(p, I420)
        want, got = to_yuv(a).astype(np.int16), p.buffer
        for name, rows in (("Y", slice(0, h)), ("U and V", slice(h, None))):
            d = got[rows].astype(np.int16) - want[rows]
            # (2 levels at 16-31 Y samples of 57.6 k a frame here, where two levels are blended or
            # a flat warp's: each side rounds twice. Real clips: 2-4 a million, bench/RESULTS.md.)
            assert np.abs(d).max() <= 2 and (np.abs(d) > 1).mean() < 6e-4, name
            # (0.31 where two levels are blended: a flat frame's planes too.)
            assert np.abs(d).mean() < 0.35 and abs(d.mean()) < 0.2, name
    assert np.abs(rgb[1].astype(int) - rgb[0]).mean() > 5  # (the move shows)


def test_reference_frame_is_unchanged_by_depth(photo):
    depth = near_square_depth(960, 540, (300, 150, 600, 400))
    cam = view(960, 540, 640, 360)
    flat = CameraRenderer(photo).render_frame(cam, 640, 360)
    assert np.array_equal(CameraRenderer(photo, depth).render_frame(cam, 640, 360), flat)
    # Also as frame 0 of a trajectory that then moves.
    traj = trajectory([cam, view(960, 540, 640, 360, offset=(30, 0, 0))], 960, 540, 640, 360)
    assert np.array_equal(next(CameraRenderer(photo, depth).render(traj)), flat)


def test_sideways_move_shifts_near_things_more(photo):
    W, H, w, h = 960, 540, 960, 540
    depth = near_square_depth(W, H, (330, 120, 630, 420))  # a 300 px near square
    r = CameraRenderer(photo, depth, parallax=0.35)
    traj = trajectory([view(W, H, w, h), view(W, H, w, h, offset=(24, 0, 0))], W, H, w, h)
    a, b = list(r.render(traj))
    near = shift(a[170:370, 380:580], b[170:370, 380:580])
    far = shift(a[:, :250], b[:, :250])
    # Plane at distance D = 960 seen with fx = 960: moving 24 px right shifts it 24 px
    # left; the near square (s = 0.65, distance 0.65 D) moves 24 / 0.65 = 37 px.
    assert far[0] == pytest.approx(-24, abs=1.0)
    assert near[0] == pytest.approx(-24 / 0.65, abs=1.5)
    assert abs(far[1]) < 0.5 and abs(near[1]) < 0.5


def test_depth_frames_drawn_on_threads_are_one_threads_frames(photo, monkeypatch):
    """Depth frames are drawn on RENDER_THREADS threads (the render is the slow side of render
    + encode): in order, every pixel what one thread draws, with a shutter too; a consumer that
    stops early leaves no thread drawing."""
    import threading

    from d2v import render

    W, H, w, h = 960, 540, 320, 180
    depth = near_square_depth(W, H, (330, 120, 630, 420))
    traj = trajectory([view(W, H, w, h, offset=(6 * i, 0, 0)) for i in range(6)], W, H, w, h)
    r = CameraRenderer(photo, depth, parallax=0.35)
    threaded = list(r.render(traj)), list(r.render(traj, motion_blur=1.0, samples=3))
    monkeypatch.setattr(render, "RENDER_THREADS", 1)
    alone = list(r.render(traj)), list(r.render(traj, motion_blur=1.0, samples=3))
    assert all(np.array_equal(a, b) for run in range(2) for a, b in zip(threaded[run], alone[run], strict=True))
    assert np.abs(alone[0][0].astype(int) - alone[0][-1]).mean() > 1  # the frames differ: order is checked
    monkeypatch.setattr(render, "RENDER_THREADS", 2)
    frames = r.render(traj)
    assert np.array_equal(next(frames), alone[0][0])
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("d2v-depth")]


def test_frames_that_cannot_tear_come_while_the_hidden_background_is_made(photo, monkeypatch):
    """The hidden background is made on a thread of its own (a third of a second on a 1000 px
    photo, which the encoder would wait for): the first frames of a move, whose layers part too
    little to reveal anything, come while it is still being made, flat or with depth, with the
    pixels of frames drawn after it; the others wait for it."""
    import threading

    W, H, w, h = 960, 540, 480, 270
    depth = near_square_depth(W, H, (330, 120, 630, 420))
    # The layers part by 0, 0.16, 0.32, 0.54 (drawn with depth: over a quarter of an output
    # pixel), 3.2 and 6.5 image pixels: the last two may tear (more than TEAR_PX).
    traj = trajectory([view(W, H, w, h, offset=(dx, 0, 0)) for dx in (0, 0.3, 0.6, 1.0, 6, 12)], W, H, w, h)
    renderer = CameraRenderer(photo, depth, parallax=0.35)
    layers = renderer._trajectory_layers(traj, traj.frames[0].camera_center())  # with its hidden background
    assert layers.moved == (False, False, False, True, True, True)
    assert layers.tears == (False, False, False, False, True, True)
    after = []
    for i, frame in enumerate(traj.frames):
        after.append(np.empty((h, w, 3), np.uint8))
        renderer._render_into(after[-1], frame, layers, {}, i)

    release = threading.Event()
    make = CameraRenderer._with_background

    def held(self, layers, yuva=False):
        assert release.wait(60)
        return make(self, layers, yuva)

    monkeypatch.setattr(CameraRenderer, "_with_background", held)
    frames = CameraRenderer(photo, depth, parallax=0.35).render(traj)
    first = [next(frames) for _ in range(4)]  # (the background is held: these did not wait for it)
    release.set()
    drawn = first + list(frames)
    assert all(np.array_equal(a, b) for a, b in zip(drawn, after, strict=True))
    assert np.abs(after[-1].astype(int) - after[3]).mean() > 1  # (the move shows)


def _marked_scene(W=960, H=540, half=40):
    """Grey texture, a red square subject at the centre, blue markers left and right."""
    img = (textured_image(W, H, seed=4) // 2 + 40).astype(np.uint8)
    img[..., 0] = np.minimum(img[..., 0], 150)
    cx, cy = W // 2, H // 2
    img[cy - half:cy + half, cx - half:cx + half] = (255, 0, 0)
    for dx in (-250, 250):  # near enough the centre to stay in view as it widens
        cv2.circle(img, (cx + dx, cy), 6, (0, 0, 255), -1)
    return img, (cx - half, cy - half, cx + half, cy + half)


def _measure(frame: np.ndarray) -> tuple[float, float]:
    """(red square's width, distance between the blue markers) in output pixels."""
    f = frame.astype(int)
    red = (f[..., 0] > 200) & (f[..., 1] < 80) & (f[..., 2] < 80)
    blue = (f[..., 2] > 200) & (f[..., 0] < 80) & (f[..., 1] < 80)
    cols = np.nonzero(red.any(axis=0))[0]
    n, labels, stats, cent = cv2.connectedComponentsWithStats(blue.astype(np.uint8))
    blobs = sorted(cent[1:][stats[1:, cv2.CC_STAT_AREA] > 10][:, 0])
    assert len(blobs) == 2, f"expected 2 markers, found {len(blobs)}"
    return cols.max() - cols.min() + 1, blobs[1] - blobs[0]


@pytest.mark.parametrize("with_depth_map", [True, False], ids=["depth_map", "pseudo_depth"])
def test_dolly_zoom_keeps_the_subject_size_while_the_background_shrinks(with_depth_map):
    """A dolly zoom as the trajectory builds it: toward the subject on the plane while
    the lens widens so the plane keeps its scale. For dolly_zoom the renderer puts the
    subject's depth layer on the plane, so the background lies behind it."""
    W, H, w, h = 960, 540, 960, 540
    img, box = _marked_scene(W, H)
    depth = near_square_depth(W, H, box) if with_depth_map else None
    r = CameraRenderer(img, depth, parallax=0.35)
    s = 0.65  # the background's depth relative to the subject's: 1 / s behind it
    u0, v0, cw, ch = camera.cover_crop(W, H, w, h)
    ks = (0.0, 0.25, 0.5)  # fraction of the way to the plane
    cams = [view(W, H, w, h, offset=(0, 0, k * cw), fx_scale=1 - k) for k in ks]
    traj = trajectory(cams, W, H, w, h, effect="dolly_zoom", subject=[W / 2, H / 2])
    frames = list(r.render(traj))
    assert np.array_equal(frames[0], r.render_frame(cams[0], w, h))
    (sq0, bg0), (sq1, bg1), (sq2, bg2) = [_measure(f) for f in frames]
    assert sq1 == pytest.approx(sq0, rel=0.05) and sq2 == pytest.approx(sq0, rel=0.05)
    if with_depth_map:
        # Background at distance D / s, then D / s - k D, seen with focal (1 - k) fx:
        # its scale goes as (1 - k) / (1 - k s).
        for k, bg in zip(ks[1:], (bg1, bg2)):
            assert bg / bg0 == pytest.approx((1 - k) / (1 - k * s), rel=0.02)
    else:
        # The pseudo-depth blob fades out gradually, so the markers (half way down it)
        # recede less than a true background would, but they do recede.
        assert bg2 < bg1 < bg0 and bg2 / bg0 < 0.92


def _orbit_step(W, H, w, h):
    """An orbit step: the camera moves right while turning to keep looking at the subject."""
    subject = np.array([W / 2, H / 2, 0.0])
    c0 = view(W, H, w, h)
    C1 = c0.camera_center() + np.array([60.0, 0.0, 0.0])
    c1 = camera.make_frame(1, 1 / 24, camera_center=C1, R=camera.look_at(C1, subject), fx=w,
                           out_w=w, out_h=h, crop_w=W)
    return trajectory([c0, c1], W, H, w, h, effect="orbit", subject=[W / 2, H / 2]), c1


def test_orbit_with_a_depth_map_keeps_the_subject_still_and_swings_the_background(photo):
    """The subject stays put; the background behind it moves with the camera."""
    W, H, w, h = 960, 540, 960, 540
    traj, _ = _orbit_step(W, H, w, h)
    depth = pseudo_depth(W, H, (W / 2, H / 2))  # a user depth map: near in the middle
    a, b = list(CameraRenderer(photo, depth).render(traj))
    centre = shift(a[240:300, 450:510], b[240:300, 450:510])
    corner = shift(a[:160, :240], b[:160, :240])
    assert np.abs(centre).max() < 0.5
    assert corner[0] > 10  # about 29 px here


def test_orbit_without_a_depth_map_is_the_flat_picture(photo):
    """No stand-in depth for orbit: a fake one smears the picture as the camera swings."""
    W, H, w, h = 960, 540, 960, 540
    traj, c1 = _orbit_step(W, H, w, h)
    r = CameraRenderer(photo)
    assert np.array_equal(list(r.render(traj))[1], r.render_frame(c1, w, h))


def _plan(path, effect: str, W: int, H: int, depth_parallax=None, **kw) -> CameraTrajectory:
    req = RenderRequest(path=path, effect=effect, **{"duration_s": 1.0, "fps": 8, "width": 256, "height": 144, **kw})
    return plan_trajectory(req, W, H, depth_parallax=depth_parallax)


def test_planned_dolly_zoom_holds_the_subject_and_shrinks_the_background():
    """The example dolly_zoom, as planned, with the stand-in depth: the subject (the path's
    end, near the right edge) keeps its size while the background visibly recedes."""
    W, H = 1000, 872
    path = json.loads((EXAMPLES / "paths" / "dolly_zoom.json").read_text())
    traj = _plan(path, "dolly_zoom", W, H, width=640, height=360)
    img = (textured_image(W, H, seed=4) // 2 + 40).astype(np.uint8)  # as _marked_scene, markers where planned
    img[..., 0] = np.minimum(img[..., 0], 150)
    su, sv = (int(round(c)) for c in traj.subject)
    img[sv - 20:sv + 20, su - 20:su + 20] = (255, 0, 0)
    fp = camera.footprint(traj.frames[0], 640, 360)
    cu, cv, half_w = fp[:, 0].mean(), fp[:, 1].mean(), np.ptp(fp[:, 0]) / 2
    for u in (cu - 0.85 * half_w, cu + 0.85 * half_w):  # background near the view's sides
        cv2.circle(img, (int(u), int(cv) + 60), 5, (0, 0, 255), -1)
    frames = list(CameraRenderer(img).render(traj))
    (sq0, bg0), (sq1, bg1) = _measure(frames[0]), _measure(frames[-1])
    assert sq1 == pytest.approx(sq0, rel=0.05)
    assert bg1 / bg0 < 0.85  # about 0.80


@pytest.fixture(scope="module")
def bright_hubble():
    """examples/hubble.jpg lifted to 40..255, so anything from outside it (black) shows."""
    hubble = cv2.imread(str(EXAMPLES / "hubble.jpg"))[:, :, ::-1]
    return (40 + hubble.astype(np.float32) * (215 / 255)).astype(np.uint8)


def _darkest(frames) -> int:
    return int(min(f.max(axis=2).min() for f in frames))


@pytest.mark.parametrize("variant", [{}, {"loop": True}, {"shake": 1.0}], ids=["plain", "loop", "shake"])
@pytest.mark.parametrize("effect", list(EFFECTS))
def test_no_frame_shows_anything_outside_the_image(bright_hubble, effect, variant):
    """Every effect with its example path: rendered with a black border, no pixel is
    near black (edge pixels blend a little of the border: they stay above 30)."""
    H, W = bright_hubble.shape[:2]
    path = json.loads((EXAMPLES / "paths" / f"{effect}.json").read_text())
    traj = _plan(path, effect, W, H, **variant)
    assert _darkest(CameraRenderer(bright_hubble, border="black").render(traj)) > 16


@pytest.mark.parametrize("hard", [False, True], ids=["smooth", "hard-edged"])
@pytest.mark.parametrize("effect", ["orbit", "dolly_zoom", "pan", "zoom_in", "parallax"])
def test_no_frame_shows_anything_outside_the_image_with_a_depth_map(bright_hubble, effect, hard):
    """Planned for the renderer's depth map (depth_parallax), near and far layers swing
    and spread without bringing in anything from outside the image; nor does what fills
    the holes a hard-edged near layer leaves as it moves."""
    H, W = bright_hubble.shape[:2]
    depth = pseudo_depth(W, H, (0.6 * W, 0.55 * H), radius_frac=0.3)
    if hard:
        depth = (depth > 0.5).astype(np.float32)
    r = CameraRenderer(bright_hubble, depth, border="black")
    path = json.loads((EXAMPLES / "paths" / f"{effect}.json").read_text())
    for shake in (0.0, 1.0):
        traj = _plan(path, effect, W, H, depth_parallax=r.depth_parallax, shake=shake)
        assert _darkest(r.render(traj)) > 16


def test_pseudo_depth_is_a_soft_blob_at_the_subject():
    d = pseudo_depth(400, 300, (100.0, 200.0), radius_frac=0.2)
    assert d.shape == (300, 400) and d.dtype == np.float32
    assert 0.0 <= d.min() and d.max() <= 1.0
    assert d[200, 100] > 0.99 and d[0, 399] < 0.01
    assert d[200, 100 + 60] == pytest.approx(0.5, abs=0.05)  # 0.5 at the radius (60 px)


def test_load_depth_map_from_png_bytes():
    ramp8 = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (100, 1))
    ok, png8 = cv2.imencode(".png", ramp8)
    d = load_depth_map(png8.tobytes(), 400, 200)
    assert d.shape == (200, 400) and d.dtype == np.float32
    assert d[:, 0].max() < 0.01 and d[:, -1].min() > 0.99
    ramp16 = (np.tile(np.linspace(0, 1, 200), (100, 1)) * 65535).astype(np.uint16)
    ok, png16 = cv2.imencode(".png", ramp16)
    d16 = load_depth_map(png16.tobytes(), 200, 100)
    assert np.allclose(d16, np.linspace(0, 1, 200)[None, :], atol=1e-3)
    with pytest.raises(InvalidImageError):
        load_depth_map(b"not an image", 10, 10)


def test_a_depth_map_of_another_size_is_stretched_but_a_turned_one_is_refused():
    """A depth model's raw output (square, or a few percent off the photo's aspect) stretches back
    onto the photo; a portrait map for a landscape photo (or the reverse: a phone photo's EXIF
    turn the depth tool did not apply) would put every depth edge in the wrong place."""
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))  # near on the right
    for w, h in ((64, 64), (64, 37)):  # square; 1.73 for a 1.78 photo
        d = load_depth_map(cv2.imencode(".png", ramp[:h, :w])[1].tobytes(), 320, 180)
        assert d.shape == (180, 320) and d[:, :10].max() < 0.05 and d[:, -10:].min() > 0.95
    turned = cv2.imencode(".png", np.ascontiguousarray(ramp[:, :36]))[1].tobytes()  # 36x64: portrait
    with pytest.raises(DepthMapMismatchError) as e:
        load_depth_map(turned, 320, 180)
    assert str(e.value).startswith("depth map is 36x64 (portrait) and the photo is 320x180 (landscape")
    assert load_depth_map(turned, 180, 320).shape == (320, 180)  # the portrait photo it belongs to


# -- motion blur ---------------------------------------------------------------------


def _grad_energy(img: np.ndarray) -> tuple[float, float]:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.mean(np.diff(g, axis=1) ** 2)), float(np.mean(np.diff(g, axis=0) ** 2))


def test_motion_blur_smears_along_the_motion_only(photo):
    # Squares: vertical edges (x gradients) and horizontal edges (y gradients) apart.
    W, H, w, h = 960, 540, 640, 360
    yy, xx = np.mgrid[0:H, 0:W]
    board = np.where((xx // 80 + yy // 80) % 2 == 0, 40, 215).astype(np.uint8)
    board = np.repeat(board[:, :, None], 3, axis=2)
    # A fast pan: the view moves 16 image px (about 16 output px at zoom 1.5) per frame.
    cams = [view(W, H, w, h, zoom=1.5, center=(400 + 16 * i, 270)) for i in range(5)]
    traj = trajectory(cams, W, H, w, h)
    r = CameraRenderer(board)
    sharp = list(r.render(traj))
    blurred = list(r.render(traj, motion_blur=1.0, samples=8))
    assert np.array_equal(sharp[2], r.render_frame(cams[2], w, h))
    gx0, gy0 = _grad_energy(sharp[2])
    gx1, gy1 = _grad_energy(blurred[2])
    assert gx1 < 0.3 * gx0  # vertical edges smeared along the motion
    assert gy1 > 0.75 * gy0  # horizontal edges stay sharp (but near the corners)
    # The shutter is centred on the frame's own camera: a dot smears into a streak
    # about one frame's motion long, centred where the sharp frame shows the dot.
    dot = np.zeros((H, W, 3), np.uint8)
    cv2.circle(dot, (480, 270), 2, (255, 255, 255), -1)
    r = CameraRenderer(dot)
    a = r.render_frame(cams[2], w, h)[..., 0].astype(np.float64)
    b = list(r.render(traj, motion_blur=1.0, samples=8))[2][..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w]
    ca, cb = [(np.sum(xs * m) / m.sum(), np.sum(ys * m) / m.sum()) for m in (a, b)]
    assert cb == pytest.approx(ca, abs=0.3)
    streak = np.nonzero(b.max(axis=0) > 4)[0]
    assert 14 <= streak.max() - streak.min() + 1 - 5 <= 19  # ~16 px of motion + the dot


def test_motion_blur_leaves_a_still_camera_sharp(photo):
    cams = [view(960, 540, 640, 360, zoom=1.3)] * 3
    traj = trajectory(cams, 960, 540, 640, 360)
    r = CameraRenderer(photo)
    assert all(np.array_equal(a, b) for a, b in zip(r.render(traj), r.render(traj, motion_blur=1.0)))


def test_interpolate_camera():
    a = view(960, 540, 640, 360, zoom=1.0, center=(300, 200))
    R1 = camera.look_at(np.array([500.0, 300.0, -400.0]), np.array([520.0, 280.0, 0.0]), roll_rad=0.4)
    b = camera.make_frame(1, 1 / 24, camera_center=np.array([500.0, 300.0, -400.0]), R=R1, fx=2560,
                          out_w=640, out_h=360, crop_w=960)
    assert np.allclose(camera.frame_homography(camera.interpolate_camera(a, b, 0.0)), camera.frame_homography(a))
    assert np.allclose(camera.frame_homography(camera.interpolate_camera(a, b, 1.0)), camera.frame_homography(b))
    m = camera.interpolate_camera(a, b, 0.5)
    assert np.allclose(m.camera_center(), (a.camera_center() + b.camera_center()) / 2)
    assert m.fx == pytest.approx(math.sqrt(a.fx * b.fx))
    # Slerp: the middle rotation is half way in angle from each end.
    ang = lambda P, Q: math.acos(np.clip((np.trace(P.T @ Q) - 1) / 2, -1, 1))  # noqa: E731
    assert ang(a.R(), m.R()) == pytest.approx(ang(a.R(), b.R()) / 2, rel=1e-6)
    assert ang(m.R(), b.R()) == pytest.approx(ang(a.R(), b.R()) / 2, rel=1e-6)
    assert 0 < m.zoom and a.time_s < m.time_s < b.time_s


def test_reference_center_matches_the_camera_conventions():
    c = reference_center(1000, 872, 1024, 576)
    u0, v0, cw, ch = camera.cover_crop(1000, 872, 1024, 576)
    assert np.allclose(c, [500, 436, -cw])


def test_the_path_check_reads_frames_as_they_are_rendered_and_never_waits_on_a_stopped_render():
    """A camera job's check (d2v.pipeline) starts with the render: each sampled frame is handed
    over once rendered; a render that stopped early releases it with an error (no hang)."""
    import threading

    from d2v.pipeline import _Arriving

    kept: dict[int, np.ndarray] = {}
    arriving = _Arriving(kept, [0, 5, 9])
    got: list = []
    stopped: list[RuntimeError] = []

    def check() -> None:  # reads the sampled frames in order, as the path check does
        try:
            got.extend(arriving[i] for i in arriving)
        except RuntimeError as e:
            stopped.append(e)

    reader = threading.Thread(target=check)
    reader.start()
    for i in range(6):  # frames 0..5 rendered; the render then stops
        if i in (0, 5):
            kept[i] = np.full((2, 2, 3), i, np.uint8)
        arriving.rendered()
    reader.join(timeout=0.5)
    assert reader.is_alive() and [int(f[0, 0, 0]) for f in got] == [0, 5]  # waiting for frame 9
    arriving.close()
    reader.join(timeout=5)
    assert not reader.is_alive() and "stopped before frame 9" in str(stopped[0])


@pytest.mark.parametrize("k", [3, 65, 67, 129, 301, 401, 799])
def test_wide_erosion_is_opencvs(k):
    """The hidden background's wide erosion (windows of up to 4x the widest band, past the
    image's size) is exactly cv2.erode's, edges ignored, for windows narrower than the image,
    as wide as one side, and wider than both."""
    from d2v.render import _erode_square

    rng = np.random.default_rng(k)
    image = rng.random((150, 320), dtype=np.float32)
    image[40:60, 100:130] = -1.0  # a deep pit, so the windows' reach shows
    expected = cv2.erode(image, np.ones((k, k), np.uint8))
    assert np.array_equal(_erode_square(image, k), expected)


@pytest.mark.parametrize("level", [0, 1])
def test_the_depth_remap_is_the_fixed_point_remap_within_a_level(level):
    """A depth frame's remap runs OpenCV's float-map path on coordinates rounded to 1/32 px, as
    cv2.convertMaps rounds them: within a level of the fixed-point remap (which frames were drawn
    with before), on a texture of noise (as sharp as a texture gets) and points past its edges.
    The unrounded float map interpolates at the exact point: 5-6 levels off here."""
    rng = np.random.default_rng(3)
    texture = rng.integers(0, 256, (120, 160, 4), np.uint8)
    q = np.stack([rng.uniform(-20, 180, (90, 110)), rng.uniform(-20, 140, (90, 110))], axis=-1).astype(np.float32)
    r = CameraRenderer(np.ascontiguousarray(texture[..., :3]))
    got = np.empty((90, 110, 4), np.uint8)
    at_level = q * np.float32(0.5**level)
    r._remap([texture, texture], level, q, got, {})  # (at level 0 it rounds q in place)
    fixed = cv2.remap(texture, *cv2.convertMaps(at_level, None, cv2.CV_16SC2), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
    d = np.abs(got.astype(int) - fixed)
    assert d.max() <= 1 and (d > 0).mean() < 0.02
