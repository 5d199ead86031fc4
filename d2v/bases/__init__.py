"""The generative bases: models that make the keyframes, steered by the camera render of the
drawn path. One module per model family, what they share in `common` (and `flow` for the
flow-matching ones):

    svd   Stable Video Diffusion (2023), image-conditioned, no text     D2V_SVD_MODEL
    ltx   LTX-Video, flow matching, text + guide                        D2V_LTX_MODEL
    wan   Wan 2.2 TI2V-5B, flow matching, text + first frame + guide    D2V_WAN_MODEL

    BASES[name] -> Base                     the setting, limits and loader of each
    configured(env) -> {name: model}        the bases this process may run
    choose_backend(request, models) -> (backend, why)   what `backend: "auto"` renders with
    load_base(name, model, device, options) -> (model, loaded now)

`auto` takes the first configured base in AUTO_ORDER: Wan 2.2 (the most detail and the best
motion of the three, Apache-2.0), then LTX-Video (faster, shorter on detail), then SVD (no text,
short clips); the camera backend when none is configured. Importing this package imports
neither torch nor diffusers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from d2v.errors import ModelNotConfiguredError

AUTO_ORDER = ("wan", "ltx", "svd")


@dataclass(frozen=True)
class Base:
    name: str
    setting: str  # the environment variable naming its model
    module: str  # d2v.bases.<module>: load_<name>, shared_<name>
    title: str
    licence: str
    weights: str  # what its model is called in messages
    limits: dict[str, Any] = field(default_factory=dict)

    def model(self, env=None) -> str | None:
        """The configured model (a directory or a hub id); None when the setting is unset."""
        env = os.environ if env is None else env
        return (env.get(self.setting) or "").strip() or None

    def not_configured(self, detail: str) -> ModelNotConfiguredError:
        """The error for a missing or unloadable model: what is wrong, and the setting to fix."""
        return ModelNotConfiguredError(
            f"backend '{self.name}' needs {self.weights} weights: {detail}. Set {self.setting} to a model "
            "directory or a hub id in the local Hugging Face cache (try "
            f"`d2v models make-tiny --base {self.name} DIR` for a tiny test model), or use --backend camera"
        )


BASES: dict[str, Base] = {
    "svd": Base("svd", "D2V_SVD_MODEL", "svd", "Stable Video Diffusion (img2vid-xt)",
                "Stability AI Community License (free under USD 1M annual revenue, else an enterprise licence)",
                "Stable Video Diffusion",
                {"native_size": "1024x576", "clip_frames": 25, "frame_rule": "any", "text": False,
                 "size_multiple": 64}),
    "ltx": Base("ltx", "D2V_LTX_MODEL", "ltx", "LTX-Video (Lightricks)",
                "LTX-Video Open Weights License (free under USD 10M annual revenue, else a commercial licence)",
                "LTX-Video",
                {"native_size": "768x512", "clip_frames": 121, "frame_rule": "8k+1", "text": True,
                 "size_multiple": 32, "fps": 24}),
    "wan": Base("wan", "D2V_WAN_MODEL", "wan", "Wan 2.2 TI2V-5B (Alibaba)", "Apache-2.0", "Wan 2.2",
                {"native_size": "1280x704", "clip_frames": 121, "frame_rule": "4k+1", "text": True,
                 "size_multiple": 32, "fps": 24}),
}


def configured(env=None, overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """{base: model} for every base whose setting is set (or given in `overrides`, e.g. a farm's
    Serve config)."""
    out = {}
    for name, base in BASES.items():
        model = (overrides or {}).get(name) or base.model(env)
        if model:
            out[name] = model
    return out


def choose_backend(backend: str, models: dict[str, str]) -> tuple[str, str | None]:
    """The backend a request renders with, and why when it was chosen for it (`auto`)."""
    if backend != "auto":
        return backend, None
    for name in AUTO_ORDER:
        if name in models:
            return name, (f"auto: {name} ({BASES[name].title}), the first configured base in the order "
                          f"{', '.join(AUTO_ORDER)}")
    return "camera", (f"auto: camera, because no generative base is configured "
                      f"({', '.join(BASES[n].setting for n in AUTO_ORDER)} are unset)")


def load_base(name: str, model: str, device: str | None = "auto", options=None):
    """(the loaded model, True when this call loaded it), one per process and settings."""
    module = import_module(f"d2v.bases.{BASES[name].module}")
    return getattr(module, f"shared_{name}")(model, device, options)


def backends_table(models: dict[str, str]) -> list[dict[str, Any]]:
    """GET /v1/backends: each base, configured or not, with its limits and licence."""
    rows: list[dict[str, Any]] = [
        {"name": "camera", "available": True, "configured": True, "reason": None,
         "description": "renders the photo through the camera move (2.5D); needs no model",
         "limits": {"text": False, "clip_frames": None}},
    ]
    for name, base in BASES.items():
        ok = name in models
        rows.append({"name": name, "available": ok, "configured": ok, "model": models.get(name),
                     "reason": None if ok else f"no {base.title} model is configured on this farm ({base.setting})",
                     "description": f"{base.title}, steered by the camera render: the scene moves too"
                                    + ("; reads a text prompt" if base.limits.get("text") else ""),
                     "licence": base.licence, "limits": base.limits})
    chosen, why = choose_backend("auto", models)
    rows.append({"name": "auto", "available": True, "configured": True, "reason": None, "renders_with": chosen,
                 "description": why, "limits": {"order": list(AUTO_ORDER)}})
    return rows
