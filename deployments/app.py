"""The d2v Serve application: the HTTP API, the job runner, and the stage deployments.

    serve run deployments/configs/serve-local.yaml        (or: d2v serve --config deployments/configs/serve-local.yaml)

    Ingress (HTTP) --enqueue--> Redis --> JobRunner (task consumer) --> DepthStage -> TrajectoryStage -> BaseStage
                                                                       -> InterpolateStage -> UpscaleStage -> EncodeStage

`import_path: deployments.app:build_app` in a Serve config; the application's `args` are
the farm settings (deployments.settings.FarmSettings: `svd_model`, `queue`, limits...) and
`svd_options` (compile, decode_chunk_size, dtype, warmup: see d2v.svd.SVDOptions). The queue
is Redis at D2V_REDIS_URL (`d2v serve` starts one when unset). Replicas, resources and
autoscaling of every deployment come from the config's `deployments`.
"""

from __future__ import annotations

from ray import serve
from ray.serve import Application
from ray.serve.task_consumer import task_consumer, task_handler

from d2v.cost import price_table
from d2v.jobqueue import DEFAULT_QUEUE, RENDER_TASK, processor_config
from deployments.settings import FarmSettings
from deployments.ingress import Ingress
from deployments.runner import JobRunner
from deployments.stages import BaseStage, DepthStage, EncodeStage, InterpolateStage, TrajectoryStage, UpscaleStage

RUNNER_HEALTH_CHECK_S = 2.0


def runner_deployment(queue: str = DEFAULT_QUEUE, concurrency: int = 2):
    """The JobRunner as a consumer of `queue`. Made per app, because the decorator takes the
    queue's configuration when the class is made (two apps on one Redis need two queues)."""

    class QueuedJobRunner(JobRunner):
        @task_handler(name=RENDER_TASK)
        def render_task(self, job_id: str) -> str:
            return self.render(job_id)

    consumer = task_consumer(task_processor_config=processor_config(queue))(QueuedJobRunner)
    # max_ongoing_requests is also how many jobs a replica's Celery worker runs at once.
    # Health checked every 2 s, not Serve's 10: a runner whose consumer stopped (its Celery
    # worker ends when Redis goes away) takes no job until Serve replaces it, after three
    # failed checks in a row: about 6 s, not 30, after a Redis restart. (The check is two
    # thread lookups: deployments/runner.py.)
    return serve.deployment(name="JobRunner", max_ongoing_requests=concurrency,
                            health_check_period_s=RUNNER_HEALTH_CHECK_S, ray_actor_options={"num_cpus": 0.1})(consumer)


def build_app(args: dict | None = None) -> Application:
    settings = dict(args or {})
    svd_options = settings.pop("svd_options", None)
    base = BaseStage.bind(settings.get("svd_model"), svd_options, settings.get("ltx_model"), settings.get("wan_model"))
    farm = FarmSettings.from_args(settings)  # unknown args fail here, at deploy time
    price_table()  # and so does a bad price table (D2V_PRICES), not each job's end
    runner = runner_deployment(farm.queue, farm.max_running_jobs).bind(
        DepthStage.bind(farm.depth_model), TrajectoryStage.bind(), base, InterpolateStage.bind(), UpscaleStage.bind(),
        EncodeStage.bind(), settings=settings)
    return Ingress.bind(runner, settings=settings)


app = build_app()
