"""The shapes d2v speaks: one pydantic model per thing, used by the CLI, the HTTP API,
batch jobs and the manifest alike.

    DrawnPath         the stroke a person drew (canvas + points, or a bare list in pixels)
    TypedCamera       a camera given directly: keyframes of axes (pan, tilt, roll, zoom, truck,
                      pedestal, dolly) or poses (docs/camera.md; planned by d2v.typed_camera)
    RenderRequest     what to render: path or camera, effect, duration, fps, size, backend, knobs
    CameraFrame       one frame's camera (intrinsics, rotation, translation, fov)
    CameraTrajectory  the per-frame cameras for a request on one image
    Manifest          what was rendered, how, and where it went

`parse_request` / `parse_path` turn untrusted JSON into these models and raise d2v's
named errors (`InvalidPathError`, `UnknownEffectError`, `InvalidRequestError`) with a
one-line message, never a raw pydantic traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from d2v.errors import D2VError, InvalidPathError, InvalidRequestError, UnknownEffectError
from d2v.cost import Cost
from d2v.names import EFFECTS, LOOKS, LUT_SUFFIX, POST_EFFECTS  # noqa: F401  (re-exported)

# The names and their descriptions live in d2v.names (cheap to import: `d2v --help` reads them).
EffectName = Literal[
    "auto", "zoom_in", "pull_back", "pan", "orbit", "dolly_zoom", "spiral", "earth_zoom_out", "crash_zoom", "parallax"
]
PostName = Literal["reverse", "boomerang", "glitch", "mirror_fold", "bullet_time", "tenet"]
MAX_POST_EFFECTS = 8
MAX_OUTPUT_S = 40  # seconds of video after post effects: 20 s played forward and back (RenderRequest._post_length)


X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"]
X264_PRESETS: tuple[str, ...] = get_args(X264Preset)

BackendName = Literal["camera", "svd", "ltx", "wan", "auto"]
GENERATIVE_BACKENDS = ("svd", "ltx", "wan")
MAX_PROMPT_CHARS = 2000  # a long paragraph; the text encoders read 128 (LTX) to 512 (Wan) tokens of it
DepthMode = Literal["auto", "none"]
DEPTH_MODES: tuple[str, ...] = get_args(DepthMode)
DepthSource = Literal["user", "estimated", "none"]

MAX_PATH_POINTS = 10_000
MIN_SIDE, MAX_SIDE = 64, 3840


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _not_a_bool(name: str, value: Any) -> Any:
    """true is not a number (pydantic would read it as 1)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {str(value).lower()}")
    return value


class PathPoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    x: float
    y: float
    t: float | None = Field(default=None, description="seconds since the stroke began")

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, v):
        # [x, y] pairs are the usual mistake: say what a point is, not pydantic's type name.
        if not isinstance(v, (dict, PathPoint)):
            raise ValueError(f'a point is an object {{"x": ..., "y": ...}} (and "t", optional), not {str(v)[:40]}')
        return v

    @field_validator("x", "y", "t", mode="before")
    @classmethod
    def _a_number(cls, v: Any, info) -> Any:
        return _not_a_bool(info.field_name, v)

    @field_validator("x", "y", "t")
    @classmethod
    def _check_finite(cls, v: float | None, info) -> float | None:
        return None if v is None else _finite(info.field_name, v)


class Canvas(BaseModel):
    # (At most 1e9 units: a wider canvas is a number gone wrong, and would squeeze every point
    # drawn on it into one pixel.)
    width: float = Field(gt=0, le=1e9, description="width of the drawing canvas, in canvas units")
    height: float = Field(gt=0, le=1e9, description="height of the drawing canvas, in canvas units")

    @field_validator("width", "height", mode="before")
    @classmethod
    def _a_number(cls, v: Any, info) -> Any:
        return _not_a_bool(f"canvas {info.field_name}", v)

    @field_validator("width", "height")
    @classmethod
    def _check_finite(cls, v: float, info) -> float:
        return _finite(f"canvas {info.field_name}", v)


class DrawnPath(BaseModel):
    """A drawn stroke. With `canvas`, points are in canvas units and scale to the image;
    without it (the bare-list form), points are already image pixels."""

    canvas: Canvas | None = None
    points: list[PathPoint]

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"canvas": None, "points": data}
        return data

    @field_validator("points")
    @classmethod
    def _check_points(cls, pts: list[PathPoint]) -> list[PathPoint]:
        if len(pts) > MAX_PATH_POINTS:
            raise ValueError(f"has {len(pts)} points; at most {MAX_PATH_POINTS} are allowed (simplify the stroke)")
        distinct = {(p.x, p.y) for p in pts}
        if len(distinct) < 2:
            raise ValueError(f"needs at least 2 distinct points, got {len(distinct)}")
        times = [p.t for p in pts]
        if any(t is not None for t in times) and any(t is None for t in times):
            raise ValueError("either every point has 't' or none does")
        if times and times[0] is not None:
            back = next((i for i in range(1, len(times)) if times[i] < times[i - 1]), None)
            if back is not None:  # (seconds since the stroke began: a clock that runs back is not a stroke)
                raise ValueError(f"'t' must not decrease: point {back} has t={times[back]:g} after "
                                 f"t={times[back - 1]:g}")
        return pts

    def image_points(self, image_width: int, image_height: int) -> np.ndarray:
        """Points in image pixels (continuous coordinates, origin at the top-left corner), (N, 2)."""
        return _image_points(self.canvas, self.points, image_width, image_height, "path", InvalidPathError)

    def times(self) -> np.ndarray | None:
        """Seconds since the stroke began, (N,), or None when the points carry no `t`."""
        if self.points[0].t is None:
            return None
        return np.array([p.t for p in self.points], dtype=np.float64)


MAX_SUBJECTS = 6
MAX_STILL_REGIONS = 16
MAX_REGION_POINTS = 4_000
DEFAULT_BRUSH_RADIUS = 24.0  # canvas units


class Region(BaseModel):
    """A part of the photo (`d2v.subjects` refines it to the object's edges): a brush stroke
    (`brush` points and `radius`), a `polygon`, or a `mask` image (a `data:image/png;base64,`
    URL in a validated request; the CLI, the HTTP `mask` file parts and batch lines put the
    file there). Points are in canvas units with `canvas`, image pixels without."""

    model_config = ConfigDict(extra="forbid")

    canvas: Canvas | None = None
    brush: list[PathPoint] | None = Field(default=None, max_length=MAX_REGION_POINTS)
    radius: float = Field(default=DEFAULT_BRUSH_RADIUS, gt=0, le=10_000, description="brush radius, canvas units")
    polygon: list[PathPoint] | None = Field(default=None, max_length=MAX_REGION_POINTS)
    mask: str | None = Field(default=None, description="a mask image: white = the region")

    @model_validator(mode="after")
    def _one_kind(self) -> "Region":
        kinds = [k for k in ("brush", "polygon", "mask") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of brush, polygon or mask (got {', '.join(kinds) or 'none'})")
        if self.brush is not None and not self.brush:
            raise ValueError("is empty: the brush stroke has no points")
        if self.polygon is not None and len(self.polygon) < 3:
            raise ValueError(f"is empty: a polygon needs at least 3 points, got {len(self.polygon)}")
        return self

    def image_points(self, points: list[PathPoint], image_width: int, image_height: int) -> np.ndarray:
        """Brush or polygon points in image pixels, (N, 2)."""
        return _image_points(self.canvas, points, image_width, image_height, "subject region", InvalidRequestError)


def _image_points(canvas: Canvas | None, points: list[PathPoint], image_width: int, image_height: int, what: str,
                  error: type[D2VError]) -> np.ndarray:
    """Drawn points (canvas units with `canvas`, else image pixels) in image pixels, (N, 2),
    within `check_reach` of the image (`what` and `error` name them when not)."""
    from d2v.pathshape import check_reach

    xy = np.array([[p.x, p.y] for p in points], dtype=np.float64)
    if canvas is not None:
        with np.errstate(all="ignore"):  # (an overflow is refused by check_reach)
            xy[:, 0] *= image_width / canvas.width
            xy[:, 1] *= image_height / canvas.height
    check_reach(xy, what, error)
    return xy


class Subject(BaseModel):
    """A thing in the photo that moves along its own drawn path (`d2v.subjects`)."""

    model_config = ConfigDict(extra="forbid")

    region: Region
    path: DrawnPath = Field(description="where it goes: its first point is where it is grabbed; with `t` it "
                            "moves at the speed drawn")
    scale: float = Field(default=1.0, ge=0.1, le=10.0, description="its size at the end of the path (1 = as is)")
    rotate: float = Field(default=0.0, ge=-720.0, le=720.0, description="degrees it turns along the path, "
                          "clockwise on screen")
    depth: float | None = Field(default=None, ge=0.0, le=1.0, description="its depth, brighter = nearer as in a "
                                "depth map; None = from the job's depth map, or by its place in the photo")


# A typed camera (docs/camera.md): its axes, their units and bounds. Angles in degrees;
# zoom a lens factor (1 = the cover view); truck and pedestal in view widths (the picture
# plane slides that share of the frame); dolly a share of the distance to the picture.
CAMERA_AXES: dict[str, str] = {
    "pan": "degrees, positive turns the camera right",
    "tilt": "degrees, positive turns the camera up",
    "roll": "degrees, positive turns the camera clockwise (the picture turns counter-clockwise)",
    "zoom": "lens zoom factor, 1 = the first view (the largest centred crop), 2 = half as wide",
    "truck": "sideways move, in view widths (0.1: the picture plane slides a tenth of the frame), positive right",
    "pedestal": "vertical move, in view widths, positive up",
    "dolly": "move along the view, a share of the distance to the picture plane (0.5: halfway), positive forward",
}
CAMERA_EASINGS = ("ease_in_out", "linear")
MAX_CAMERA_KEYFRAMES = 100


class CameraPose(BaseModel):
    """A camera placed exactly, in d2v.camera's world (image pixels; the picture is the plane
    Z = 0, Z into it): a `CameraFrame`'s centre, rotation (world -> camera) and field of view,
    so a planned trajectory's frames can be typed back in."""

    model_config = ConfigDict(extra="forbid")

    center: tuple[float, float, float] = Field(description="camera centre, image pixels; z < 0 (in front)")
    rotation: tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]] = Field(
        description="world -> camera rotation, row-major 3x3 (rows: the camera's right, down, forward)")
    fov_deg: float = Field(gt=1.0, lt=170.0, description="horizontal field of view, degrees")

    @field_validator("center", "rotation")
    @classmethod
    def _check_finite(cls, v, info):
        flat = np.asarray(v, dtype=np.float64).ravel()
        if not np.all(np.isfinite(flat)):
            raise ValueError(f"{info.field_name} must be finite numbers")
        return v

    @model_validator(mode="after")
    def _check_pose(self) -> "CameraPose":
        R = np.asarray(self.rotation, dtype=np.float64)
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
            raise ValueError("rotation must be a rotation matrix (orthonormal rows, determinant +1)")
        if self.center[2] >= 0:
            raise ValueError(f"center z must be negative (the camera in front of the picture), got {self.center[2]}")
        if R[2, 2] <= 0.1:
            raise ValueError("the camera must look toward the picture (forward axis z above 0.1)")
        return self


class CameraKeyframe(BaseModel):
    """One keyframe of a typed camera: a time and either axes or a pose (docs/camera.md).
    Axes left out are 0 (zoom: 1), measured from the first view."""

    model_config = ConfigDict(extra="forbid")

    t: float = Field(ge=0.0, le=60.0, description="seconds from the start of the clip")
    pan: float = Field(default=0.0, ge=-60.0, le=60.0, description=CAMERA_AXES["pan"])
    tilt: float = Field(default=0.0, ge=-60.0, le=60.0, description=CAMERA_AXES["tilt"])
    roll: float = Field(default=0.0, ge=-720.0, le=720.0, description=CAMERA_AXES["roll"])
    zoom: float = Field(default=1.0, ge=0.25, le=20.0, description=CAMERA_AXES["zoom"])
    truck: float = Field(default=0.0, ge=-2.0, le=2.0, description=CAMERA_AXES["truck"])
    pedestal: float = Field(default=0.0, ge=-2.0, le=2.0, description=CAMERA_AXES["pedestal"])
    dolly: float = Field(default=0.0, ge=-4.0, le=0.9, description=CAMERA_AXES["dolly"])
    pose: CameraPose | None = Field(default=None, description="the camera placed exactly, instead of axes")

    @field_validator("t", "pan", "tilt", "roll", "zoom", "truck", "pedestal", "dolly", mode="before")
    @classmethod
    def _a_number(cls, v: Any, info) -> Any:
        """true is not a number (pydantic would read it as 1), NaN and infinity are not amounts.
        (Before the bounds: after them, a non-finite value would only be "out of range".)"""
        _not_a_bool(info.field_name, v)
        return _finite(info.field_name, v) if isinstance(v, float) else v

    @model_validator(mode="after")
    def _axes_or_pose(self) -> "CameraKeyframe":
        if self.pose is not None:
            # (An axis at its default with a pose is no conflict: a stored request.json, dumped
            # with every field, has them so, and is parsed again by the farm's runner.)
            axes = [a for a in CAMERA_AXES
                    if a in self.model_fields_set and getattr(self, a) != type(self).model_fields[a].default]
            if axes:
                raise ValueError(f"give either axes or a pose, not both (this keyframe has a pose and {', '.join(axes)})")
        return self


class TypedCamera(BaseModel):
    """A camera given directly instead of (or beside) a drawn path: keyframes eased into one
    camera per frame (d2v.typed_camera). A bare list of keyframes is also accepted."""

    model_config = ConfigDict(extra="forbid")

    keyframes: list[CameraKeyframe] = Field(min_length=1, max_length=MAX_CAMERA_KEYFRAMES)
    easing: Literal["ease_in_out", "linear"] = Field(
        default="ease_in_out", description="between keyframes: ease_in_out (each move starts and ends at rest) or "
        "linear (constant speed)")

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"keyframes": data}
        return data

    @field_validator("keyframes")
    @classmethod
    def _increasing(cls, keyframes: list[CameraKeyframe]) -> list[CameraKeyframe]:
        times = [k.t for k in keyframes]
        for i in range(1, len(times)):
            if times[i] <= times[i - 1]:
                raise ValueError(f"keyframe {i} has t={times[i]:g}, not after keyframe {i - 1}'s t={times[i - 1]:g}: "
                                 "times must increase")
        return keyframes


# What a request's camera move can come from; a request needs at least one.
MOVE_FIELDS: dict[str, str] = {
    "path": "a drawn path",
    "camera": "a typed camera, docs/camera.md",
    "subjects": "subjects that move, docs/subjects.md",
}


class RenderRequest(BaseModel):
    """What to render. The same model is the CLI's flags, the HTTP `request` field,
    a batch line (plus `image` and `id`) and the manifest's `request`."""

    # NaN and infinity are no amounts: "should be a finite number", not "less than or equal to 20".
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: DrawnPath | None = Field(default=None, description="the drawn stroke the camera follows; with a typed camera or subjects it may be left out (with subjects alone the camera holds still on the whole photo)")
    camera: TypedCamera | None = Field(
        default=None, description="a typed camera: keyframes of pan, tilt, roll, zoom, truck, pedestal, dolly or "
        "poses (docs/camera.md); when given it is the move, and `effect` is not used",
    )
    effect: str = Field(default="auto", description="one of `d2v effects`")
    duration_s: float = Field(default=4.0, ge=0.5, le=20.0, description="seconds of video")
    fps: int = Field(default=24, ge=1, le=60, description="output frames per second")
    width: int = Field(default=1024, ge=MIN_SIDE, le=MAX_SIDE, description="output width, even")
    height: int = Field(default=576, ge=MIN_SIDE, le=MAX_SIDE, description="output height, even")
    backend: BackendName = "camera"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    depth: DepthMode = Field(
        default="auto", description="auto: without a depth map of its own, the job's depth is estimated when a "
        "depth model is configured (D2V_DEPTH_MODEL); none: never estimated",
    )

    # Camera knobs.
    end_zoom: float | None = Field(
        default=None, ge=1.0, le=20.0, description="peak zoom of the move; None = the effect's default"
    )
    shake: float = Field(default=0.0, ge=0.0, le=1.0, description="seeded handheld shake, 0 = none")
    speed_ramp: float = Field(default=0.0, ge=0.0, le=1.0, description="slow-fast-slow speed ramp strength")
    motion_blur: float = Field(default=0.0, ge=0.0, le=1.0, description="shutter as a fraction of a frame, 0 = off")
    motion_blur_samples: int = Field(default=6, ge=2, le=32, description="sub-frames accumulated per frame")
    loop: bool = Field(default=False, description="end where it started, for a seamless loop")
    allow_borders: bool = Field(default=False, description="let the view leave the image instead of clamping")

    # svd backend knobs (ignored by the camera backend).
    guidance_strength: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="how far SVD may depart from the camera render, on a log scale of noise (d2v.svd): "
        "0 = the render unchanged, 0.5 = noise about the size of the picture's own signal, 1 = plain SVD",
    )
    free_strength: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="dual-clock denoising: where the render had to invent pixels (outside the photo, "
        "disocclusions) SVD starts from this strength, while the photo's pixels hold to the guide until "
        "guidance_strength; None = one clock",
    )
    motion_bucket_id: int | None = Field(default=None, ge=1, le=255, description="None = derived from the move")
    noise_aug_strength: float | None = Field(default=None, ge=0.0, le=1.0, description="None = derived")
    num_inference_steps: int = Field(default=25, ge=1, le=100)
    prompt: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS,
        description="what the video shows and how things move, for bases that read text (ltx, wan; svd "
        "ignores it, and the manifest says so); None: a short description of the camera move is used",
    )
    negative_prompt: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS, description="what to avoid (ltx, wan)",
    )
    auto_correct: bool = Field(
        default=True, description="svd: when the path check finds the keyframes off the path, re-run them closer "
        "to the camera render (D2V_FIDELITY_THRESHOLD, D2V_FIDELITY_RETRIES)",
    )

    # Presets, grading and post effects.
    preset: str | None = Field(
        default=None, description="a named bundle of effect, knobs, post effects, look and duration (`d2v presets`, "
        "GET /v1/presets); the request's own fields override it",
    )
    look: str | None = Field(
        default=None, description="colour grade: a name from `d2v looks`, or the name of a `.cube` 3D LUT that "
        "travels with the job (CLI --look FILE.cube, HTTP `lut` file part, batch a path or s3:// key)",
    )
    post: list[PostName] = Field(
        default_factory=list, max_length=MAX_POST_EFFECTS,
        description="post effects applied in order after upscaling, before encoding: " + ", ".join(POST_EFFECTS),
    )
    glitch_amount: float = Field(default=0.3, ge=0.0, le=1.0, description="glitch: the share of frames touched")

    # Subject motion (d2v.subjects): things that move along their own paths; regions that hold still.
    subjects: list[Subject] = Field(default_factory=list, description=f"up to {MAX_SUBJECTS}: each a region of "
                                    "the photo and its own path")
    still: list[Region] = Field(default_factory=list, max_length=MAX_STILL_REGIONS,
                                description="regions that must not move (generative bases hold them)")

    # Encoder knobs.
    crf: int = Field(default=18, ge=0, le=51, description="H.264 constant rate factor (lower = better)")
    x264_preset: X264Preset = Field(default="veryfast", description="x264 speed preset (CLI --x264-preset)")

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """A named preset fills the fields the request leaves out. Requests from before
        named presets carried the x264 preset in `preset`: those still mean the encoder."""
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
            return data  # absent, or not a name: the field's own check says so (a 422, not a 500)
        data = dict(data)
        if data["preset"] in X264_PRESETS:
            data.setdefault("x264_preset", data.pop("preset"))
            return data
        from d2v.presets import expand_preset

        return expand_preset(data)

    @field_validator("duration_s", "fps", "width", "height", "seed", "end_zoom", "shake", "speed_ramp", "motion_blur",
                     "motion_blur_samples", "guidance_strength", "free_strength", "motion_bucket_id",
                     "noise_aug_strength", "num_inference_steps", "glitch_amount", "crf", mode="before")
    @classmethod
    def _a_number(cls, v: Any, info) -> Any:
        return _not_a_bool(info.field_name, v)

    @field_validator("subjects", mode="before")
    @classmethod
    def _few_subjects(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > MAX_SUBJECTS:
            raise ValueError(f"{len(v)} subjects given; at most {MAX_SUBJECTS} are allowed (remove subject "
                             f"{MAX_SUBJECTS + 1} and on)")
        return v

    @field_validator("look")
    @classmethod
    def _known_look(cls, v: str | None) -> str | None:
        if v is None or v in LOOKS or (v.lower().endswith(LUT_SUFFIX) and 0 < len(v) <= 200):
            return v
        raise ValueError(f"unknown look {v!r}; choose one of: {', '.join(LOOKS)}, or a {LUT_SUFFIX} file")

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _text(cls, v: str | None, info) -> str | None:
        """Printable text: no control characters but newlines and tabs (nor lone surrogates, which
        are no UTF-8); blank means none."""
        if v is None:
            return None
        if any((ord(c) < 32 and c not in "\n\t") or 0xD800 <= ord(c) <= 0xDFFF or ord(c) == 127 for c in v):
            raise ValueError(f"{info.field_name} must be printable UTF-8 text (no control characters)")
        return v.strip() or None

    @field_validator("effect")
    @classmethod
    def _known_effect(cls, v: str) -> str:
        if v not in EFFECTS:
            raise ValueError(f"unknown effect {v!r}; choose one of: {', '.join(EFFECTS)}")
        return v

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int, info) -> int:
        if v % 2:
            raise ValueError(f"{info.field_name} must be even for H.264 (yuv420p), got {v}")
        return v

    @model_validator(mode="after")
    def _has_a_move(self) -> "RenderRequest":
        """A request needs something to move the camera by (MOVE_FIELDS)."""
        if not any(getattr(self, name) for name in MOVE_FIELDS):
            (first, what), *others = MOVE_FIELDS.items()
            alternatives = " or ".join(f"{name} ({also})" for name, also in others)
            raise PydanticCustomError("missing_move", f"{first}: is required ({what}), or give {alternatives}")
        return self

    @model_validator(mode="after")
    def _post_length(self) -> "RenderRequest":
        """Each boomerang doubles the clip (2n - 1 frames): eight of them made a 1 s request a
        224 s video. At most MAX_OUTPUT_S seconds after post effects."""
        if (frames := self.output_frames) > MAX_OUTPUT_S * self.fps:
            raise ValueError(f"post: {self.post.count('boomerang')} boomerangs make {frames / self.fps:.0f} s of video "
                             f"from {self.duration_s:g} s; at most {MAX_OUTPUT_S} s after post effects (the longest "
                             "clip, played forward and back): use fewer, or a shorter clip")
        return self

    @property
    def n_frames(self) -> int:
        return max(1, round(self.duration_s * self.fps))

    @property
    def output_frames(self) -> int:
        """The video's frames after post effects (only boomerang changes the count: 2n - 1)."""
        n = self.n_frames
        for _ in range(self.post.count("boomerang")):
            n = 2 * n - 1
        return n

    def canonical_json(self) -> str:
        # A move field (or still regions) left unset is left out, so requests that never had it keep
        # their job ids.
        unset = {name for name in (*MOVE_FIELDS, "still") if not getattr(self, name)}
        return json.dumps(self.model_dump(mode="json", exclude=unset), sort_keys=True, separators=(",", ":"))


class CameraFrame(BaseModel):
    """One frame's pinhole camera; conventions in `d2v.camera`.

    Intrinsics are in output pixels; `rotation` is world->camera (row-major 3x3) and
    `translation` is t = -R C, so a world point X maps to K (R X + t). The summary
    fields (`center`, `zoom`, `roll_deg`) describe the view on the image plane.
    """

    index: int
    time_s: float
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: list[list[float]]
    translation: list[float]
    fov_deg: float = Field(description="horizontal field of view, degrees")
    center: list[float] = Field(description="where the optical axis meets the image, image pixels")
    zoom: float = Field(description="1 = the full cover crop, 2 = half its width, ...")
    roll_deg: float = 0.0

    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def R(self) -> np.ndarray:
        return np.asarray(self.rotation, dtype=np.float64)

    def t(self) -> np.ndarray:
        return np.asarray(self.translation, dtype=np.float64)

    def camera_center(self) -> np.ndarray:
        return -self.R().T @ self.t()


class CameraTrajectory(BaseModel):
    """Per-frame cameras for one request on one image; JSON round-trips exactly."""

    effect: str = Field(description="the effect used (what `auto` resolved to)")
    image_width: int
    image_height: int
    width: int
    height: int
    fps: int
    base_distance: float = Field(description="distance from the first camera to the image plane, image pixels")
    frames: list[CameraFrame]
    clamped_frames: list[int] = Field(default_factory=list, description="frames moved to keep the view inside")
    drawn_offset_pct: list[float] = Field(
        default_factory=list, description="per frame, how far keeping the view inside moved its centre from where "
        "the path as drawn put it, % of the view width (empty: nothing was moved)")
    notes: list[str] = Field(default_factory=list)
    path_shape: str | None = Field(default=None, description="straight | closed_loop | spiral | freeform")
    subject: list[float] | None = Field(
        default=None, description="the image point the move is about (dolly_zoom: path end; orbit: path centre)"
    )
    seconds: float | None = Field(default=None, description="how long planning took")

    def __len__(self) -> int:
        return len(self.frames)


# clamped: the video followed the plan, but the plan had to keep the view inside the photo, farther
# from the path as drawn than the effect's tolerance (never reported as followed).
FidelityVerdict = Literal["followed", "clamped", "missed", "unmeasured"]


class FidelityFrame(BaseModel):
    """One sampled frame of the path check (`d2v.fidelity`)."""

    index: int
    located: bool
    method: Literal["tracked", "features", "ecc", "pose"] | None = Field(
        default=None, description="how the frame was located (pose: its camera solved in 3D, with a depth map)")
    center: list[float] | None = Field(default=None, description="measured view centre, image pixels")
    planned_center: list[float] | None = Field(default=None, description="the plan's view centre, image pixels")
    center_pct: float | None = Field(default=None, description="centre error, % of the view width")
    zoom_pct: float | None = Field(default=None, description="measured / planned zoom - 1, %")
    roll_deg: float | None = Field(default=None, description="measured - planned roll, degrees")
    corner_pct: float | None = Field(default=None, description="farthest frame corner from the plan's, % of the "
                                     "view width")
    subject_pct: float | None = Field(default=None, description="parallax moves: the subject's distance from "
                                      "where the plan keeps it, % of the view width")
    subject_zoom_pct: float | None = Field(default=None, description="parallax moves: the subject's size against "
                                           "the plan's, %")
    rotation_deg: float | None = Field(default=None, description="located in 3D: the angle between the measured "
                                       "camera's orientation and the plan's, degrees (RotErr)")
    yaw_deg: float | None = Field(default=None, description="located in 3D: the measured camera's yaw, degrees, "
                                  "positive looking right")
    planned_yaw_deg: float | None = Field(default=None, description="located in 3D: the plan's yaw, degrees")


class SubjectFrame(BaseModel):
    """One sampled frame of a subject's check (`d2v.subject_check`)."""

    index: int
    located: bool
    planned: list[float] | None = Field(default=None, description="where its track puts it, image pixels")
    found: list[float] | None = Field(default=None, description="where it was found, image pixels")
    error_pct: float | None = Field(default=None, description="distance between them in the frame, % of the view "
                                    "width")
    score: float | None = Field(default=None, description="how well its appearance matched there, -1..1")


class SubjectFidelity(BaseModel):
    """Did a subject go where its path says? (`fidelity.subjects`)"""

    subject: int = Field(description="its place in the request's `subjects`, from 0")
    verdict: FidelityVerdict
    reason: str | None = None
    worst_pct: float | None = None
    median_pct: float | None = None
    located: int = 0
    sampled: int = 0
    tolerance_pct: float = 3.0
    frames: list[SubjectFrame] = Field(default_factory=list)


class FidelitySummary(BaseModel):
    """The path check in short: the verdict and its numbers (GET /v1/jobs/{id} `result.fidelity`)."""

    verdict: FidelityVerdict
    reason: str | None = Field(default=None, description="why missed (the worst frame) or unmeasured")
    effect: str | None = None
    end_center_pct: float | None = Field(default=None, description="last frame's centre error, % of the view width")
    median_center_pct: float | None = None
    worst_center_pct: float | None = None
    worst_zoom_pct: float | None = None
    worst_roll_deg: float | None = None
    worst_corner_pct: float | None = None
    worst_frame: int | None = None
    located: int = 0
    sampled: int = 0
    tolerance: dict[str, float] = Field(default_factory=dict, description="what counts as followed for this effect")
    photo_unusable: bool = Field(default=False, description="unmeasured because of the photo itself (flat, noise)")
    subjects: list[SubjectFidelity] = Field(default_factory=list, description="each subject against its own path; "
                                            "`followed` needs the camera and every subject to follow")

    def one_line(self) -> str:
        """'path followed: end 0.3% off, worst 1.1% (24/24 frames located)'."""
        counts = f"({self.located}/{self.sampled} frames located)"
        if self.verdict == "unmeasured":
            return f"path unmeasured: {self.reason}"
        end = f"end {self.end_center_pct:.1f}% off" if self.end_center_pct is not None else "end not located"
        worst = f"worst {self.worst_center_pct:.1f}%" if self.worst_center_pct is not None else "camera unmeasured"
        if self.subjects:
            worst += f"; {len(self.subjects)} subject(s) " + ", ".join(
                f"{s.verdict}" + (f" (worst {s.worst_pct:.1f}%)" if s.worst_pct is not None else "")
                for s in self.subjects)
        if self.verdict == "followed":
            return f"path followed: {end}, {worst} {counts}"
        if self.verdict == "clamped":
            return f"path clamped: {self.reason}; the video followed that plan: {end}, {worst} {counts}"
        return f"path missed: {self.reason}; {end}, {worst} {counts}"


class FidelityAttempt(BaseModel):
    """One generation of a generative base stage and how it measured (auto-correct)."""

    attempt: int
    guidance_strength: float
    fidelity: FidelitySummary
    shipped: bool = False


class FidelityReport(FidelitySummary):
    """`fidelity` in the manifest: the summary, every sampled frame, and the base stage's
    attempts when a generative backend was re-run closer to the camera render."""

    frames: list[FidelityFrame] = Field(default_factory=list)
    attempts: list[FidelityAttempt] = Field(default_factory=list)

    def summary(self) -> FidelitySummary:
        return FidelitySummary.model_validate(self.model_dump(include=set(FidelitySummary.model_fields)))


class Manifest(BaseModel):
    """Written next to every video as `manifest.json`."""

    job_id: str
    request: RenderRequest
    effect: str
    backend: BackendName
    model: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict, description="backend settings used (svd: strengths, "
                                     "motion bucket, steps, dtype, device...)")
    seed: int
    frames: int
    fps: int
    width: int
    height: int
    duration_s: float
    image: dict[str, Any] = Field(default_factory=dict, description="input image: width, height, sha256, format")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    clamped_frames: list[int] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    methods: dict[str, str] = Field(default_factory=dict, description="stage -> method used")
    keys: dict[str, str] = Field(default_factory=dict, description="object-store keys of the results")
    fidelity: FidelityReport | None = Field(default=None, description="the path check: did the video follow the path")
    depth_source: DepthSource = Field(default="none", description="where the depth came from: the request's depth "
                                      "map (user), the depth model (estimated), or no depth (none)")
    depth_model: str | None = Field(default=None, description="the depth model, when the depth was estimated")
    cost: Cost | None = Field(default=None, description="resource-seconds per stage and the total by the price "
                              "table (d2v.cost)")
    created_at: str
    d2v_version: str


def read_json_file(path: str | Path, what: str, error: type[D2VError] = InvalidRequestError) -> Any:
    """A request's part from a JSON file (`what`: "path", "camera", "--subjects"): a UTF-8
    byte-order mark allowed (Windows editors write one); `null` or a missing or broken file
    is `error`, naming the file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{what} file {p} is not valid JSON: {e or 'nested too deep'}") from None
    if data is None:
        raise error(f"{what} file {p} holds null: nothing to read")
    return data


def one_line_errors(err: ValidationError, limit: int | None = None) -> str:
    """A validation error's problems on one line, field by field (the first `limit`, and how
    many more)."""
    parts = []
    problems = err.errors()
    for e in problems[:limit]:
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "extra_forbidden":
            msg = "is not a known field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(problems) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more else "")


def _raise_named(err: ValidationError, what: str) -> None:
    message = f"invalid {what}: {one_line_errors(err)}"
    locs = [e["loc"] for e in err.errors()]
    if any(loc and loc[0] == "effect" for loc in locs):
        raise UnknownEffectError(message) from None
    no_move = any(e["type"] == "missing_move" for e in err.errors())  # a request without path or camera
    if what == "path" or no_move or any(loc and loc[0] == "path" for loc in locs):
        raise InvalidPathError(message) from None
    raise InvalidRequestError(message) from None


def _decoded(data: Any, what: str, error: type[D2VError]) -> Any:
    """`data` as given, or decoded when it is JSON text; `error` naming `what` when it is not."""
    if not isinstance(data, (str, bytes)):
        return data
    if isinstance(data, bytes):
        data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Windows editors write one)
    else:
        data = data.removeprefix("\ufeff")
    try:
        return json.loads(data, parse_int=_json_int)
    except (ValueError, RecursionError) as e:  # RecursionError: thousands of nested brackets
        reason = f"nested deeper than {MAX_JSON_DEPTH}" if isinstance(e, RecursionError) else str(e)
        raise error(f"invalid {what}: not JSON ({reason})") from None


def _json_int(text: str) -> int:
    # Python refuses integers over 4300 digits with advice for programmers (sys.set_int_max_str_digits);
    # no field takes anything near 100 digits, so the first 100 (sign kept) stand in and the field
    # says its own range ("seed: Input should be less than or equal to 4294967295").
    return int(text[:100])


def _json_type(value: Any) -> str:
    """A decoded JSON value's type in JSON's words (not Python's NoneType or dict)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "a number")


def parse_path(data: Any) -> DrawnPath:
    """Untrusted JSON (already decoded, or a str) -> DrawnPath, or InvalidPathError."""
    data = _decoded(data, "path", InvalidPathError)
    try:
        return DrawnPath.model_validate(data)
    except ValidationError as e:
        _raise_named(e, "path")
    raise AssertionError("unreachable")


def parse_camera(data: Any) -> TypedCamera:
    """Untrusted JSON (already decoded, or a str) -> TypedCamera, or InvalidRequestError
    naming the field ("invalid camera: keyframes.1.pan: ...")."""
    data = _decoded(data, "camera", InvalidRequestError)
    try:
        return TypedCamera.model_validate(data)
    except ValidationError as e:
        raise InvalidRequestError(f"invalid camera: {one_line_errors(e)}") from None


def parse_region(data: Any) -> Region:
    """Untrusted JSON (already decoded, or a str) -> Region (POST /v1/subjects/outline's `region`),
    or InvalidRequestError naming the field, as a request's errors do."""
    data = _decoded(data, "region", InvalidRequestError)
    if not isinstance(data, dict):
        raise InvalidRequestError(f"invalid region: expected a JSON object (brush, polygon or mask), "
                                  f"got {_json_type(data)}")
    try:
        return Region.model_validate(data)
    except ValidationError as e:
        raise InvalidRequestError(f"invalid region: {one_line_errors(e, limit=3)}") from None


MAX_JSON_DEPTH = 16  # a request nests 4 deep (request > path > points > point); allow some slack


def _depth(value: Any, limit: int) -> int:
    """How deep a decoded JSON value nests, counting no further than limit + 1."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_request(data: Any) -> RenderRequest:
    """Untrusted JSON (already decoded, or a str) -> RenderRequest, or a named error."""
    data = _decoded(data, "request", InvalidRequestError)
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidRequestError(f"invalid request: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise InvalidRequestError(f"invalid request: expected a JSON object, got {_json_type(data)}")
    try:
        return RenderRequest.model_validate(data)
    except ValidationError as e:
        _raise_named(e, "request")
    raise AssertionError("unreachable")


def job_id_for(image_bytes: bytes, request: RenderRequest) -> str:
    """Content address of a job: the same image and request give the same id."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(image_bytes).digest())
    h.update(request.canonical_json().encode())
    return h.hexdigest()[:24]


JobState = Literal["queued", "running", "succeeded", "failed"]


class JobResult(BaseModel):
    video_url: str | None = None
    poster_url: str | None = None
    video_key: str
    poster_key: str | None = None
    manifest_key: str | None = None
    fidelity_key: str | None = None
    fidelity_url: str | None = None
    fidelity: FidelitySummary | None = None
    cost: Cost | None = None  # what rendering it cost (the manifest's `cost`)
    frames: int
    fps: int
    width: int
    height: int


class JobStatus(BaseModel):
    """`status.json` in the store, and the body of GET /v1/jobs/{job_id}."""

    job_id: str
    status: JobState
    stage: str | None = None
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    error: str | None = None
    result: JobResult | None = None
    attempts: int = 0
    updated_at: str | None = None
    created_at: str | None = None
    # The lifecycle's bookkeeping (d2v.lifecycle); kept in status.json, not shown to callers.
    owner: str | None = None  # who runs it now: 'farm:<replica>', 'cli:<host>:<pid>'
    attempt_id: str | None = None  # which of the owner's attempts: (owner, attempt_id) is the one writer
    heartbeat_at: float | None = None  # epoch seconds of the owner's last sign of life
    lease_s: float = 30.0  # silent longer than this: the owner is gone, anyone may take the job
    tenant: str | None = None  # fingerprint of the API key that submitted it (d2v.lifecycle.tenant_of)
    content: str | None = None  # content address of image + request: the result cache's key
    cached_from: str | None = None  # answered from this earlier job's result
    queue: str | None = None  # the farm queue that runs it (None: a CLI or batch render)
    # A failed job's kind of failure, so `d2v report` counts only ours against the success rate:
    # 'rejected' (the caller's input, found only once it ran), 'stopped' (by the user, Ctrl-C).
    # None: ours (and every job written before this field).
    failure: Literal["rejected", "stopped"] | None = None

    PRIVATE: ClassVar[set[str]] = {"updated_at", "owner", "heartbeat_at", "lease_s", "tenant", "content", "cached_from", "queue",
                                   "attempt_id", "failure"}

    def public(self) -> dict:
        """The body of GET /v1/jobs/{id}: what a caller may see."""
        return self.model_dump(mode="json", exclude=self.PRIVATE)


def field_bounds(name: str) -> dict[str, float]:
    """A RenderRequest field's bounds, {"min", "max"} (GET /v1/limits: the page checks before it sends)."""
    out = {}
    for rule in RenderRequest.model_fields[name].metadata:
        for attr, key in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if getattr(rule, attr, None) is not None:
                out[key] = getattr(rule, attr)
    return out
