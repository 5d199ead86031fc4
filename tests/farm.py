"""The d2v Serve app for tests: a fresh local Ray (never one a `ray start` left running),
Serve on a free loopback port, the given apps, a real Redis for their job queue (unless
`env` names one in D2V_REDIS_URL), environment set for the driver and every replica;
everything shut down and restored afterwards."""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack, contextmanager
from typing import Iterator

import ray
from ray import serve

from tests.seaweed import free_port


@contextmanager
def serve_farm(env: dict[str, str], apps: dict[str, dict], *, num_cpus: int = 2, num_gpus: int = 0,
               metrics_every_s: float | None = None) -> Iterator[str]:
    """`apps`: route prefix -> build_app args (each gets its own queue unless it names one).
    `num_gpus`: logical GPUs (no hardware needed). `metrics_every_s`: how often every process
    exports its metrics (Ray's default is every 10 s; a module that waits for its jobs' counts
    on the metrics port asks for less). Yields the base URL."""
    from d2v.jobqueue import RedisServer

    stack = ExitStack()
    from deployments.proxy import CALLBACK

    env = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": CALLBACK, **env}  # uploads cut at the proxy
    if not env.get("D2V_REDIS_URL"):
        redis_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="d2v-redis-"))
        env["D2V_REDIS_URL"] = stack.enter_context(RedisServer(redis_dir)).url
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if ray.is_initialized():
        ray.shutdown()  # (Serve's handle cached in this process is dropped with the session)
    system = {"metrics_report_interval_ms": int(metrics_every_s * 1000)} if metrics_every_s else None
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             runtime_env={"env_vars": env}, _system_config=system)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for prefix, args in apps.items():
            deploy(prefix, args)
        yield f"http://127.0.0.1:{port}"
    finally:
        # No graceful drain for a test's farm: ray.shutdown() ends every process of this local
        # Ray, replicas and Serve's actors with them, at once (serve.shutdown() first spent
        # ~8 s of a loaded 2-core VM on each farm's teardown draining replicas nobody uses).
        if ray.is_initialized():
            ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stack.close()


def deploy(prefix: str, args: dict) -> None:
    """One more d2v app on the running farm, at route `prefix`, with its own queue unless `args` names one."""
    from deployments.app import build_app

    name = app_name(prefix)
    # JSON logs, as deployments/configs/serve-*.yaml set them (logging_config).
    serve.run(build_app({"queue": name + "-jobs", **args}), name=name, route_prefix=prefix,
              logging_config={"encoding": "JSON"})


def app_name(prefix: str) -> str:
    """The Serve application name of the d2v app at route `prefix`: "d2v", "d2v-keyed", ..."""
    return "d2v" + prefix.rstrip("/").replace("/", "-")
