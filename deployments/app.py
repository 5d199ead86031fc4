"""The d2v Serve application: the stage deployments composed behind the HTTP ingress.

    serve run configs/serve-local.yaml        (or: d2v serve --config configs/serve-local.yaml)

`import_path: deployments.app:build_app` in a Serve config; the application's `args`
are the ingress settings (see deployments.ingress.IngressSettings), `svd_model` among
them (a model directory or hub id; default: the D2V_SVD_MODEL environment variable), and
`svd_options` (compile, decode_chunk_size, dtype, warmup: see d2v.svd.SVDOptions). Replicas,
resources and autoscaling of every deployment come from the config's `deployments`.
"""

from __future__ import annotations

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.stages import BaseStage, EncodeStage, InterpolateStage, TrajectoryStage, UpscaleStage


def build_app(args: dict | None = None) -> Application:
    settings = dict(args or {})  # `svd_model` here overrides D2V_SVD_MODEL for this app
    base = BaseStage.bind(settings.get("svd_model"), settings.pop("svd_options", None))
    return Ingress.bind(TrajectoryStage.bind(), base, InterpolateStage.bind(),
                        UpscaleStage.bind(), EncodeStage.bind(), settings=settings)


app = build_app()
