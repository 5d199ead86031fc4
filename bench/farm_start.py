"""What one test farm's start costs, phase by phase: S3 (SeaweedFS) and Redis, `ray.init`,
`serve.start`, each d2v app's deploy (8 replicas), then the teardown. The suite starts a
handful of these (tests/farm.py, tests/conftest.py's shared farm); most of its Ray time is here.

    python bench/farm_start.py [--apps 1] [--runs 1]

Prints one line per run (seconds per phase). Compare two versions of the code in the same
run of the machine, interleaved (the numbers swing with load): bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_farm(apps: int) -> dict[str, float]:
    import ray
    from ray import serve

    from d2v.jobqueue import RedisServer
    from deployments.proxy import CALLBACK
    from tests.farm import deploy
    from tests.seaweed import SeaweedS3, free_port

    took: dict[str, float] = {}
    t = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal t
        now = time.perf_counter()
        took[phase], t = now - t, now

    with tempfile.TemporaryDirectory(prefix="d2v-farm-start-") as tmp, SeaweedS3(Path(tmp) / "s3") as s3, \
            RedisServer(Path(tmp) / "redis") as redis:
        env = {**s3.env("farm-start"), "D2V_DEVICE": "cpu", "D2V_API_KEYS": "", "D2V_REDIS_URL": redis.url,
               "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": CALLBACK}
        os.environ.update(env)
        lap("s3+redis")
        ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": env},
                 log_to_driver=False)
        lap("ray.init")
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        lap("serve.start")
        for i in range(apps):
            deploy("/" if i == 0 else f"/app{i}", {"max_running_jobs": 2})
            lap(f"deploy {i + 1}")
        ray.shutdown()
        lap("ray.shutdown")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.runs):
        took = one_farm(args.apps)
        print("  ".join(f"{phase} {s:.1f}" for phase, s in took.items()) + f"  total {sum(took.values()):.1f}",
              flush=True)


if __name__ == "__main__":
    main()
