"""Request and path validation: every bad input gets a named error with a message a user can act on."""

import json
import math

import pytest

from d2v.errors import InvalidPathError, InvalidRequestError, UnknownEffectError
from d2v.models import CameraTrajectory, DrawnPath, RenderRequest, job_id_for, parse_path, parse_request

PATH = {"canvas": {"width": 1024, "height": 576}, "points": [{"x": 100, "y": 200}, {"x": 300, "y": 220}]}


def req(**kw):
    return {"path": PATH, **kw}


def test_defaults_and_frame_count():
    r = parse_request(req(duration_s=2.5, fps=30))
    assert (r.effect, r.width, r.height, r.backend) == ("auto", 1024, 576, "camera")
    assert r.n_frames == 75


def test_bare_list_is_image_pixels_and_canvas_scales():
    bare = parse_path([{"x": 10, "y": 20}, {"x": 30, "y": 40}])
    assert bare.canvas is None
    assert bare.image_points(2000, 1000).tolist() == [[10, 20], [30, 40]]
    scaled = parse_path(PATH)
    assert scaled.image_points(2048, 1152).tolist() == [[200, 400], [600, 440]]


@pytest.mark.parametrize(
    "body, error, words",
    [
        (req(path={"points": [{"x": 1, "y": 1}, {"x": 1, "y": 1}]}), InvalidPathError, "at least 2 distinct points"),
        (req(path={"points": [{"x": 1, "y": 1}]}), InvalidPathError, "at least 2 distinct"),
        (req(path=[{"x": float("nan"), "y": 1}, {"x": 2, "y": 2}]), InvalidPathError, "finite"),
        (req(path=[{"x": float("inf"), "y": 1}, {"x": 2, "y": 2}]), InvalidPathError, "finite"),
        (req(path=[{"x": i, "y": 0} for i in range(10_001)]), InvalidPathError, "at most 10000"),
        (req(path={"canvas": {"width": 0, "height": 5}, "points": PATH["points"]}), InvalidPathError, "greater than 0"),
        (req(path={"canvas": {"width": -3, "height": 5}, "points": PATH["points"]}), InvalidPathError, "canvas"),
        (req(path=[{"x": 1, "y": 1, "t": 0}, {"x": 2, "y": 2}]), InvalidPathError, "'t'"),
        (req(path=[[1, 1], [2, 2]]), InvalidPathError, 'path.points.0: a point is an object {"x"'),
        (req(path={"points": [{"x": 1, "y": 1}, "2,2"]}), InvalidPathError, "path.points.1: a point is an object"),
        (req(effect="warp_drive"), UnknownEffectError, "unknown effect 'warp_drive'"),
        (req(duration_s=0.2), InvalidRequestError, "duration_s"),
        (req(duration_s=60), InvalidRequestError, "less than or equal to 20"),
        (req(fps=0), InvalidRequestError, "fps"),
        (req(fps=61), InvalidRequestError, "fps"),
        (req(width=32), InvalidRequestError, "width"),
        (req(height=4000), InvalidRequestError, "height"),
        (req(width=1023), InvalidRequestError, "even"),
        (req(backend="gan"), InvalidRequestError, "backend"),
        (req(colour="red"), InvalidRequestError, "colour: is not a known field"),
        ({"effect": "pan"}, InvalidPathError, "path: is required"),
        # s14 audit: true read as 1 (a 1 fps clip, a point at x=1), NaN as "out of range"
        (req(path=[{"x": True, "y": 1}, {"x": 2, "y": 2}]), InvalidPathError, "path.points.0.x: x must be a number, got true"),
        (req(path={"canvas": {"width": True, "height": 5}, "points": PATH["points"]}), InvalidPathError,
         "canvas width must be a number, got true"),
        (req(fps=True), InvalidRequestError, "fps: fps must be a number, got true"),
        (req(duration_s=False), InvalidRequestError, "duration_s must be a number, got false"),
        (req(duration_s=float("nan")), InvalidRequestError, "duration_s: Input should be a finite number"),
        (req(shake=float("inf")), InvalidRequestError, "shake: Input should be a finite number"),
        # s20 audit: eight boomerangs made a 1 s request a 224 s video
        (req(duration_s=1, fps=8, post=["boomerang"] * 8), InvalidRequestError,
         "post: 8 boomerangs make 224 s of video from 1 s; at most 40 s"),
        (req(duration_s=11, post=["boomerang", "boomerang"]), InvalidRequestError, "make 44 s of video from 11 s"),
        (req(path={"canvas": {"width": 1e308, "height": 5}, "points": PATH["points"]}), InvalidPathError,
         "canvas.width: Input should be less than or equal to 1000000000"),
    ],
)
def test_bad_requests_raise_named_errors(body, error, words):
    with pytest.raises(error) as info:
        parse_request(body)
    message = str(info.value)
    assert words in message
    assert "\n" not in message and "pydantic" not in message.lower()


def test_unknown_effect_lists_the_choices():
    with pytest.raises(UnknownEffectError) as info:
        parse_request(req(effect="nope"))
    assert "zoom_in" in str(info.value) and "earth_zoom_out" in str(info.value)


def test_not_json_and_not_object():
    with pytest.raises(InvalidRequestError, match="not JSON"):
        parse_request("{nope")
    with pytest.raises(InvalidRequestError, match="expected a JSON object"):
        parse_request("[1, 2]")
    with pytest.raises(InvalidPathError, match="not JSON"):
        parse_path("{")


def test_nan_in_json_text_is_caught():
    # Python's json accepts NaN literals; d2v must still refuse them.
    text = json.dumps(req(path=[{"x": math.nan, "y": 0}, {"x": 1, "y": 1}]))
    with pytest.raises(InvalidPathError, match="finite"):
        parse_request(text)


def test_request_round_trips_and_job_id_is_content_addressed():
    r = parse_request(req(effect="pan", seed=3))
    assert RenderRequest.model_validate_json(r.model_dump_json()) == r
    assert job_id_for(b"img", r) == job_id_for(b"img", parse_request(req(effect="pan", seed=3)))
    assert job_id_for(b"img", r) != job_id_for(b"img2", r)
    assert job_id_for(b"img", r) != job_id_for(b"img", parse_request(req(effect="pan", seed=4)))


def test_drawn_path_times():
    p = DrawnPath.model_validate([{"x": 0, "y": 0, "t": 0}, {"x": 1, "y": 0, "t": 0.5}])
    assert p.times().tolist() == [0, 0.5]
    assert parse_path(PATH).times() is None


def test_trajectory_model_schema_has_cameras():
    fields = CameraTrajectory.model_fields
    assert {"frames", "effect", "clamped_frames", "subject"} <= set(fields)


POSE = {"center": [160, 120, -100], "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fov_deg": 60}
POLYGON = {"polygon": [{"x": 10, "y": 10}, {"x": 60, "y": 10}, {"x": 60, "y": 50}]}


@pytest.mark.parametrize("extra", [
    {"path": None, "camera": {"keyframes": [{"t": 0, "pose": POSE}, {"t": 1, "pose": {**POSE, "fov_deg": 40}}]}},
    {"path": None, "camera": {"keyframes": [{"t": 0, "zoom": 1.5}, {"t": 1, "dolly": 0.5, "pan": 10}]}},
    {"subjects": [{"region": POLYGON, "path": [{"x": 30, "y": 30}, {"x": 90, "y": 40}], "scale": 1.2}],
     "still": [{"brush": [{"x": 100, "y": 100}], "radius": 12}]},
    {"post": ["boomerang", "glitch"], "look": "noir", "shake": 0.3, "end_zoom": 2.0},
])
def test_a_stored_request_parses_back_to_itself(extra):
    """The farm stores request.json (every field dumped, defaults included) and its runner
    parses it again: a request that parses once must parse from its dump to the same request.
    A typed camera of poses did not (its dumped default axes beside each pose were 'both')."""
    r = parse_request({"path": [{"x": 10, "y": 20}, {"x": 200, "y": 100}], "width": 128, "height": 96,
                       "duration_s": 1, "fps": 8, **extra})
    assert parse_request(r.model_dump_json()) == r
