"""Looks (d2v.looks): .cube files read as the industry writes them, malformed ones refused
with the line at fault, named looks doing what their names say, and a graded job's video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from d2v.encode import decode_video
from d2v.errors import InvalidLookError, InvalidRequestError
from d2v.lifecycle import Jobs, file_key
from d2v.looks import Look, identity_table, look_for, named_look, parse_cube, write_cube
from d2v.models import LOOKS, parse_request
from d2v.pipeline import content_job_id, render_job
from d2v.store import LocalStore
from tests.conftest import textured_image
from tests.test_images import png_bytes


def cube(rows, size: int, header: str = "") -> bytes:
    body = "\n".join(f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in rows)
    return f"{header}LUT_3D_SIZE {size}\n{body}\n".encode()


def grid_rows(size: int, fn):
    """.cube rows: red changes fastest, then green, then blue."""
    axis = np.linspace(0, 1, size)
    return [fn(r, g, b) for b in axis for g in axis for r in axis]


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return textured_image(320, 180, seed=9)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def saturation(rgb: np.ndarray) -> float:
    return float(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].mean())


# -- .cube files ----------------------------------------------------------------------


def test_an_identity_cube_leaves_frames_unchanged(frame):
    header = '# made by hand\nTITLE "identity"\n\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1.0 1.0 1.0\n'
    look = parse_cube(cube(grid_rows(17, lambda r, g, b: (r, g, b)), 17, header), "identity.cube")
    out = look.apply(frame)
    assert out.shape == frame.shape and np.abs(out.astype(int) - frame).max() <= 1


def test_a_known_lut_maps_known_colours():
    # Channels rotated (r, g, b) -> (b, r, g) and inverted: exact on a 2-point grid.
    look = parse_cube(cube(grid_rows(2, lambda r, g, b: (1 - b, 1 - r, 1 - g)), 2), "swap.cube")
    colours = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [200, 100, 50]]],
                       np.uint8)
    expected = np.array([[[255, 0, 255], [255, 255, 0], [0, 255, 255], [0, 0, 0], [255, 255, 255], [205, 55, 155]]])
    assert np.abs(look.apply(colours).astype(int) - expected).max() <= 1


def test_a_cube_over_a_wider_domain_is_resampled_onto_0_1():
    # Identity over [0, 2]: frames (in [0, 1]) use the table's lower half, unchanged.
    rows = grid_rows(9, lambda r, g, b: (2 * r, 2 * g, 2 * b))
    look = parse_cube(cube(rows, 9, "DOMAIN_MIN 0 0 0\nDOMAIN_MAX 2 2 2\n"), "wide.cube")
    colours = np.array([[[10, 128, 250], [64, 32, 16]]], np.uint8)
    assert np.abs(look.apply(colours).astype(int) - colours).max() <= 1


def test_a_named_look_round_trips_through_a_cube_file(frame):
    again = parse_cube(write_cube(named_look("teal_orange")), "teal.cube")
    assert np.abs(again.apply(frame).astype(int) - named_look("teal_orange").apply(frame)).max() <= 1


@pytest.mark.parametrize("text, says", [
    ("LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 1 0\n1 1 x\n0 0 1\n1 0 1\n0 1 1\n1 1 1\n", "line 5"),
    ("LUT_3D_SIZE 2\n0 0 0\n1 0 0\n", "needs 8 rows"),
    ("LUT_1D_SIZE 4\n0 0 0\n", "1D LUT"),
    ("TITLE \"x\"\n0 0 0\n", "line 2: a table row before LUT_3D_SIZE"),
    ("LUT_3D_SIZE 1\n", "line 1"),
    ("LUT_3D_SIZE 2\nDOMAIN_MAX 1 1\n", "line 2: DOMAIN_MAX needs 3"),
    ("LUT_3D_SIZE 2\nLUT_3D_FOO 3\n", "unknown keyword"),
    ("", "no LUT_3D_SIZE"),
])
def test_a_malformed_cube_is_a_named_one_line_error(text, says):
    with pytest.raises(InvalidLookError) as e:
        parse_cube(text.encode(), "bad.cube")
    message = str(e.value)
    assert says in message and "bad.cube" in message and "\n" not in message
    assert isinstance(e.value, InvalidRequestError) and e.value.status_code == 422


def test_binary_junk_is_not_a_cube():
    with pytest.raises(InvalidLookError, match="not a text file"):
        parse_cube(b"\xff\xfe\x00\x81junk", "junk.cube")


# -- named looks ------------------------------------------------------------------------


def test_named_looks_grade_the_way_their_names_say(frame):
    looks = {name: named_look(name).apply(frame) for name in LOOKS if name != "natural"}
    mean = {name: out.reshape(-1, 3).astype(float).mean(0) for name, out in looks.items()}
    plain = frame.reshape(-1, 3).astype(float).mean(0)
    assert look_for(parse_request({"path": [{"x": 0, "y": 0}, {"x": 9, "y": 9}], "look": "natural"})) is None
    # noir: no colour at all, and more contrast
    assert np.array_equal(looks["noir"][..., 0], looks["noir"][..., 1])
    assert np.array_equal(looks["noir"][..., 1], looks["noir"][..., 2])
    assert cv2.cvtColor(looks["noir"], cv2.COLOR_RGB2GRAY).std() > cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).std()
    # warm raises red against blue, cool the reverse; grey stays about as bright
    assert mean["warm"][0] / mean["warm"][2] > 1.1 * plain[0] / plain[2]
    assert mean["cool"][2] / mean["cool"][0] > 1.1 * plain[2] / plain[0]
    grey = np.full((1, 1, 3), 128, np.uint8)
    for name in ("warm", "cool"):
        g = named_look(name).apply(grey)[0, 0].astype(float)
        assert abs(g @ [0.2126, 0.7152, 0.0722] - 128) < 6
    # vibrant: more saturated; faded: less, with lifted blacks
    assert saturation(looks["vibrant"]) > 1.15 * saturation(frame)
    assert saturation(looks["faded"]) < 0.85 * saturation(frame)
    black = np.zeros((1, 1, 3), np.uint8)
    assert named_look("faded").apply(black).min() > 15
    # cinematic: lifted blacks with cool shadows, warm highlights
    lifted = named_look("cinematic").apply(black)[0, 0].astype(int)
    assert lifted.mean() > 5 and lifted[2] > lifted[0]
    white = named_look("cinematic").apply(np.full((1, 1, 3), 230, np.uint8))[0, 0].astype(int)
    assert white[0] > white[2]
    # teal_orange: shadows lean teal (blue-green over red), highlights lean orange
    dark, bright = np.full((1, 1, 3), 50, np.uint8), np.full((1, 1, 3), 210, np.uint8)
    d, b = named_look("teal_orange").apply(dark)[0, 0].astype(int), named_look("teal_orange").apply(bright)[0, 0]
    assert d[2] > d[0] and d[1] > d[0] and int(b[0]) > int(b[2])
    # cinematic: a graded picture, not the plain one
    assert np.abs(looks["cinematic"].astype(int) - frame).mean() > 3


def test_looks_are_built_once():
    assert named_look("warm") is named_look("warm")
    assert identity_table(5).shape == (5, 5, 5, 3) and isinstance(named_look("cool"), Look)


# -- jobs --------------------------------------------------------------------------------


def _request(**kw):
    body = {"path": [{"x": 90, "y": 110}, {"x": 390, "y": 150}], "effect": "pan", "duration_s": 1.0, "fps": 12,
            "width": 192, "height": 108, **kw}
    return parse_request(body)


def test_a_job_with_a_cube_look_and_a_post_effect(tmp_path):
    """render_job with boomerang and a .cube look: the video has 2N-1 frames, symmetric, each
    the plain render with its channels swapped; the manifest says so, and the check measured
    the ungraded frames."""
    photo = png_bytes(textured_image(480, 270, seed=21))
    swap = cube(grid_rows(2, lambda r, g, b: (b, g, r)), 2, "# red and blue swapped\n")
    store = LocalStore(tmp_path / "store")
    render_job(photo, _request(), store, output_path=tmp_path / "plain.mp4")
    graded = render_job(photo, _request(look="swap.cube", post=["boomerang"]), store, lut_bytes=swap,
                        output_path=tmp_path / "graded.mp4")
    a, _ = decode_video(tmp_path / "plain.mp4")
    b, _ = decode_video(tmp_path / "graded.mp4")
    n = len(a)
    assert len(b) == graded.frames == 2 * n - 1
    for i in range(2 * n - 1):
        plain = a[i if i < n else 2 * n - 2 - i]
        # (4:2:0 chroma, encoded twice: a few levels apart, not bit-exact)
        assert psnr(b[i], plain[..., ::-1]) > 30 and psnr(b[i], plain) < 25
    assert "swap.cube" in graded.methods["look"] and "boomerang" in graded.methods["post"]
    assert graded.stage_seconds["look"] > 0
    assert graded.fidelity.verdict == "followed"
    assert store.get_bytes(file_key(graded.job_id, "look.cube")) == swap


def test_a_cube_look_without_its_file_is_refused_before_the_job_exists(tmp_path):
    store = LocalStore(tmp_path / "store")
    photo = png_bytes(textured_image(160, 90, seed=2))
    bad = b"LUT_3D_SIZE 2\n1 2\n"
    with pytest.raises(InvalidLookError, match="names a .cube file, but the job has none"):
        render_job(photo, _request(look="mine.cube"), store)
    with pytest.raises(InvalidLookError, match="line 2"):
        render_job(photo, _request(look="bad.cube"), store, lut_bytes=bad)
    # The caller's mistake, found before any job was recorded: nothing running, nothing failed
    # (the farm's KPIs count jobs, not refusals).
    assert Jobs(store).get(content_job_id(photo, None, _request(look="bad.cube"), lut_bytes=bad)) is None
    assert not list((tmp_path / "store").rglob("status.json"))


def test_the_colour_table_grades_real_photos_as_pillow_does():
    """Frames graded through the table of every 8-bit colour (what a look switches to once it
    has graded BUILD_AFTER pixels) are within 1 level of Pillow's trilinear filter on the frame
    (mostly equal to it), for a named look and for a .cube file of another size."""
    from d2v.looks import _grade_all_colours, _index

    photo = cv2.cvtColor(cv2.imread("examples/hubble.jpg"), cv2.COLOR_BGR2RGB)
    frames = [photo[:288, :512], cv2.resize(photo, (320, 180), interpolation=cv2.INTER_AREA)]
    cube_look = parse_cube(cube(grid_rows(17, lambda r, g, b: (g ** 0.8, 0.3 + 0.5 * b, r * r)), 17), "odd.cube")
    for look in (named_look("teal_orange"), cube_look):
        table = _grade_all_colours(look)
        for f in frames:
            direct = np.asarray(Image.fromarray(np.ascontiguousarray(f)).filter(look._filter))
            diff = np.abs(_index(table, f)[..., 1:].astype(int) - direct)  # Y'RGB: R, G, B after the luma
            assert diff.max() <= 1 and diff.mean() < 0.15, look.name  # the two round differently


def _with_its_table(look: Look) -> Look:
    from d2v.looks import BUILD_FOR, _tables

    _tables.get(look, 0, clip_pixels=BUILD_FOR)  # as for a long clip's first frame
    return look


def test_a_graded_frame_for_the_encoder_is_the_planes_it_would_make_of_the_graded_rgb():
    """With its table built, a look grades a frame straight into the encoder's I420 planes
    (`planes=True`): bit for bit what the encoder's own conversion makes of the graded RGB
    frame (the table holds its luma; chroma from the same 2x2 averages of R, G, B), on real
    photos and an odd-sized frame; without `planes`, the same look gives RGB."""
    from d2v.encode import I420, Yuv420

    photo = cv2.cvtColor(cv2.imread("examples/hubble.jpg"), cv2.COLOR_BGR2RGB)
    frames = [photo[100:388, 200:712], cv2.resize(photo, (322, 182), interpolation=cv2.INTER_AREA)]
    cube_look = parse_cube(cube(grid_rows(17, lambda r, g, b: (g ** 0.8, 0.3 + 0.5 * b, r * r)), 17), "odd.cube")
    for look in (_with_its_table(named_look("cinematic")), _with_its_table(cube_look)):
        for f in frames:
            h, w = f.shape[:2]
            rgb = look.apply(f)
            assert isinstance(rgb, np.ndarray) and rgb.shape == (h, w, 3)
            planes = look.apply(f, planes=True)
            assert isinstance(planes, I420) and (planes.width, planes.height) == (w, h)
            assert np.array_equal(planes.buffer, Yuv420(w, h)(rgb)), look.name


def test_a_look_before_its_table_grades_to_rgb_for_the_encoder_too(frame):
    """A look new to the process grades its first frames with Pillow, in RGB, even for the
    encoder (which converts them itself): the planes come only from the table. A caller that
    says its clip is past BUILD_FOR pixels gets the table, and planes, from the first frame."""
    from d2v.encode import I420
    from d2v.looks import BUILD_FOR

    new = Look("fresh", named_look("warm").table + np.float32(1e-6))
    out = new.apply(frame, planes=True, clip_pixels=BUILD_FOR - 1)
    assert isinstance(out, np.ndarray) and out.shape == frame.shape
    assert np.abs(out.astype(int) - named_look("warm").apply(frame)).max() <= 1
    longer = Look("fresh, for a long clip", named_look("warm").table + np.float32(2e-6))
    assert isinstance(longer.apply(frame, planes=True, clip_pixels=BUILD_FOR), I420)


def test_a_long_clip_switches_to_the_table_without_a_visible_step():
    """After BUILD_AFTER pixels graded directly, later frames come from the table: the same
    frame graded before and after the switch is the same picture, within 1 level."""
    from d2v.looks import ALL_COLOURS, _tables

    look = named_look("faded")
    photo = cv2.cvtColor(cv2.imread("examples/hubble.jpg"), cv2.COLOR_BGR2RGB)
    frame = np.ascontiguousarray(photo[:512, :512])
    before = look.apply(frame)
    while _tables.get(look, 0) is None:  # count a big frame's worth at a time, without grading it
        _tables.get(look, ALL_COLOURS)
    assert np.abs(look.apply(frame).astype(int) - before).max() <= 1


def test_a_cube_off_the_unit_domain_is_resampled_as_scipy_would():
    """A .cube whose DOMAIN_MIN/MAX are not 0 and 1, or larger than Pillow's grid, is resampled
    (trilinear) onto [0, 1]: axis by axis, as scipy.ndimage.map_coordinates(order=1) does it in
    one go (the renderer no longer imports scipy for it)."""
    from scipy.ndimage import map_coordinates

    from d2v.looks import PILLOW_MAX_SIZE, _onto_unit_domain, identity_table

    rng = np.random.default_rng(5)
    for n, lo, hi in [(17, [-0.1, 0.0, 0.05], [1.2, 0.9, 1.0]), (70, [0, 0, 0], [1, 1, 1]),
                      (33, [0.2, 0.1, 0.0], [0.8, 2.0, 1.5])]:
        table = rng.random((n, n, n, 3)).astype(np.float32)
        m = min(n, PILLOW_MAX_SIZE)
        coords = np.clip((identity_table(m).astype(np.float64) - lo) / (np.subtract(hi, lo)) * (n - 1), 0, n - 1)
        axes = [coords[..., 2], coords[..., 1], coords[..., 0]]
        expected = np.stack([map_coordinates(table[..., c], axes, order=1, mode="nearest") for c in range(3)], -1)
        got = _onto_unit_domain(table, lo, hi)
        assert got.shape == (m, m, m, 3) and np.abs(got - expected).max() < 1e-6
