"""Named presets: bundles of request fields (effect, camera knobs, post effects, look,
duration) kept as data in `presets.yaml`. A request naming a preset gets the preset's
fields wherever it leaves a field out; its own fields always win.

    presets() -> {name: {"description", "settings"}}    the library, in the file's order
    expand_preset(data) -> data                         a request's fields over its preset's

No two presets may look alike in the gallery; what "alike" means is defined here, twice:
by the settings (`look_alike`, `look_alikes`) and by the planned camera (`PlannedMove`).
tests/test_presets.py holds the library to both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from d2v.camera import footprint
from d2v.errors import InvalidRequestError
from d2v.models import CameraFrame, CameraTrajectory, RenderRequest
from d2v.trajectory import DEFAULT_ZOOM

PRESETS_FILE = "presets.yaml"
# A preset may set any request field but these: they belong to the caller.
NOT_PRESETTABLE = frozenset({"path", "camera", "preset", "seed"})


class UnknownPresetError(InvalidRequestError):
    """The preset name is not one d2v knows."""


@lru_cache(maxsize=1)
def presets() -> dict[str, dict[str, Any]]:
    """name -> {"description": str, "settings": {field: value}}, in the file's order."""
    text = resources.files("d2v").joinpath(PRESETS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    out: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        settings = {k: v for k, v in entry.items() if k != "description"}
        bad = NOT_PRESETTABLE & settings.keys()
        if bad:
            raise ValueError(f"{PRESETS_FILE}: preset {name!r} sets {sorted(bad)}, which belong to the caller")
        out[name] = {"description": str(entry.get("description", "")), "settings": settings}
    return out


def expand_preset(data: dict[str, Any]) -> dict[str, Any]:
    """The request's fields over the named preset's (`data["preset"]` names it)."""
    name = data["preset"]
    table = presets()
    if name not in table:
        raise UnknownPresetError(f"unknown preset {name!r}; choose one of: {', '.join(table)}")
    return {**table[name]["settings"], **data}


# -- telling presets apart ----------------------------------------------------------------
# Every preset must look different from every other in the gallery (issue 26): none may
# differ from another only by a number nobody sees. Two presets are look-alikes when they
# have the same effect, loop, post effects (in order), look and any other setting, and each
# knob below is within a step a viewer could not see: a clip under 1.5x as long does not
# read as slower, a peak zoom under 40% tighter does not read as closer, and a quarter of
# the range of shake, speed ramp, shutter or glitch amount is the least that shows.
VISIBLE_RATIO = {"duration_s": 1.5, "end_zoom": 1.4}
VISIBLE_STEP = {"shake": 0.25, "speed_ramp": 0.25, "motion_blur": 0.25, "glitch_amount": 0.25}
# The fields the planned trajectory depends on; the rest (post effects, look, shutter, ...)
# is the finish, which the planned cameras do not show.
CAMERA_FIELDS = frozenset({"effect", "duration_s", "end_zoom", "shake", "speed_ramp", "loop"})
# Numerically, two planned moves pass for one another when, at every moment, the frame's
# corners lie within SAME_MOVE_PCT of the view's width of where the other's are at about the
# same moment (within TIME_SLACK of the clip): the frames then show nearly the same part of
# the photo, moving the same way. A peak zoom 40% tighter moves the corners about 25%.
SAME_MOVE_PCT = 20.0
TIME_SLACK = 0.1
FAR_LAYER = 2.0  # the background a depth render shows at twice the photo's distance (a dolly zoom moves it)
MOVE_SAMPLES = 41  # moments at which two moves are compared


def visible_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A preset's settings as its render sees them: the request's defaults filled in for the
    knobs, the effect's own peak zoom where end_zoom is unset, glitch_amount only with glitch."""
    fields = RenderRequest.model_fields
    out = {name: fields[name].default for name in (*VISIBLE_RATIO, *VISIBLE_STEP, "loop")}
    out.update(settings, post=list(settings.get("post", [])))
    out["end_zoom"] = out["end_zoom"] or DEFAULT_ZOOM.get(out["effect"], 1.0)
    if "glitch" not in out["post"]:
        del out["glitch_amount"]
    return out


def _indistinguishable(name: str, a: Any, b: Any) -> bool:
    if name in VISIBLE_RATIO:
        return abs(math.log(a / b)) < math.log(VISIBLE_RATIO[name])
    if name in VISIBLE_STEP:
        return abs(a - b) < VISIBLE_STEP[name]
    return a == b


def look_alike(a: dict[str, Any], b: dict[str, Any], ignore: frozenset[str] = frozenset()) -> bool:
    """Whether two presets' settings (less the `ignore`d fields) would look the same."""
    a, b = visible_settings(a), visible_settings(b)
    keys = a.keys() - ignore
    return keys == b.keys() - ignore and all(_indistinguishable(k, a[k], b[k]) for k in keys)


def look_alikes() -> list[tuple[str, str]]:
    """Pairs of presets in the library that a viewer could not tell apart (none, ever)."""
    table = presets()
    names = list(table)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if look_alike(table[a]["settings"], table[b]["settings"])]


@dataclass(frozen=True)
class PlannedMove:
    """What a viewer sees of a planned move, to compare with another: the clip's length and
    where the frame's corners lie at MOVE_SAMPLES shares of it, on the photo's plane and on
    a background FAR_LAYER times as far (what a dolly zoom changes while the plane holds
    still), as a depth render places it from the first camera."""

    seconds: float
    corners: np.ndarray  # (MOVE_SAMPLES, 8, 2) image pixels: 4 on the plane, then 4 on the far layer
    widths: np.ndarray  # (MOVE_SAMPLES,) the view's width on the plane, image pixels

    @classmethod
    def of(cls, trajectory: CameraTrajectory) -> "PlannedMove":
        per_frame = np.stack([_corners(frame, trajectory.width, trajectory.height, trajectory.frames[0])
                              for frame in trajectory.frames])  # (n, 8, 2)
        shares = np.linspace(0.0, 1.0, len(per_frame))
        u = np.linspace(0.0, 1.0, MOVE_SAMPLES)
        corners = np.stack([[np.interp(u, shares, per_frame[:, k, axis]) for axis in (0, 1)]
                            for k in range(8)]).transpose(2, 0, 1)  # between frames: linear
        widths = np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1)
        return cls(len(trajectory) / trajectory.fps, corners, widths)

    def difference(self, other: "PlannedMove") -> float:
        """How far apart the two moves look: the farthest any frame corner of one lies from
        the other's nearest match within TIME_SLACK of the clip, in % of the narrower view."""
        apart = np.linalg.norm(self.corners[:, None] - other.corners[None], axis=3).max(axis=2)  # (S, S)
        pct = 100.0 * apart / np.minimum.outer(self.widths, other.widths)
        moments = np.arange(MOVE_SAMPLES)
        pct[np.abs(moments[:, None] - moments[None]) > TIME_SLACK * (MOVE_SAMPLES - 1)] = np.inf
        return float(max(pct.min(axis=1).max(), pct.min(axis=0).max()))

    def same_as(self, other: "PlannedMove") -> bool:
        """Whether two moves pass for one another: clips of about one length (under
        VISIBLE_RATIO's) whose frames stay within SAME_MOVE_PCT of each other throughout."""
        return _indistinguishable("duration_s", self.seconds, other.seconds) and self.difference(other) < SAME_MOVE_PCT


def _corners(frame: CameraFrame, width: int, height: int, first: CameraFrame) -> np.ndarray:
    """The frame's corners on the photo's plane and on the far layer, (8, 2) image pixels."""
    plane = footprint(frame, width, height)
    c0, C = first.camera_center(), frame.camera_center()
    pixels = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    rays = np.column_stack([(pixels - [frame.cx, frame.cy]) / frame.fx, np.ones(4)]) @ frame.R()  # world directions
    layer_z = c0[2] * (1.0 - FAR_LAYER)
    P = C + rays * ((layer_z - C[2]) / rays[:, 2])[:, None]
    far = c0[:2] + (P[:, :2] - c0[:2]) / FAR_LAYER
    return np.concatenate([plane, far])
