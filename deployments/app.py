"""The d2v Serve application: the stage deployments composed behind the HTTP ingress.

    serve run configs/serve-local.yaml        (or: d2v serve --config configs/serve-local.yaml)

`import_path: deployments.app:build_app` in a Serve config; the application's `args`
are the ingress settings (see deployments.ingress.IngressSettings). Replicas,
resources and autoscaling of every deployment come from the config's `deployments`.
"""

from __future__ import annotations

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.stages import BaseStage, EncodeStage, InterpolateStage, TrajectoryStage, UpscaleStage


def build_app(args: dict | None = None) -> Application:
    return Ingress.bind(TrajectoryStage.bind(), BaseStage.bind(), InterpolateStage.bind(), UpscaleStage.bind(),
                        EncodeStage.bind(), settings=dict(args or {}))


app = build_app()
