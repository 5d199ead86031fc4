"""Named presets: bundles of request fields (effect, camera knobs, post effects, look,
duration) kept as data in `presets.yaml`. A request naming a preset gets the preset's
fields wherever it leaves a field out; its own fields always win."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from d2v.errors import InvalidRequestError

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
