"""Autoscaling end to end on Ray's fake multi-node cluster: load on the d2v Serve app
scales the base stage up, Ray's autoscaler adds (fake) GPU nodes for the new replicas,
and both come back down when the load ends.

    pytest -m autoscale tests/test_autoscale.py      (its own invocation: see .ci/run)

The cluster is `ray.cluster_utils.AutoscalingCluster` (its fake_multinode provider
starts each "node" as a real raylet on this machine, declaring the GPUs its node type
says). Two things of the stock class are replaced:
  * the config: the 2.60 wheel lacks the fake_multi_node/example.yaml the class reads,
    so `_generate_config` builds the whole config here;
  * start and shutdown: the stock ones run `ray stop --force`, which kills every Ray
    cluster of the user on the machine, and use the fixed GCS port 6379. Here the head
    runs on free ports in its own session (tests.test_batch.RayHead) and the fake nodes,
    started by that head's autoscaler, are in that session too: stopping kills exactly
    those processes and nothing else.
It stays behind the `autoscale` marker all the same: it starts several raylets, which
the 2-core CI machine should not share with the rest of the suite.

The base stage takes one whole fake GPU per replica here, so replicas and GPU nodes
count one for one; its autoscaling keeps serve-gpu.yaml's per-replica settings
(max_ongoing_requests, target_ongoing_requests) with delays shortened for a test.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import pytest
import ray
import yaml
from ray import serve
from ray.cluster_utils import AutoscalingCluster

from tests.conftest import textured_image
from tests.seaweed import free_port
from tests.test_batch import BIN, RayHead

pytestmark = [pytest.mark.autoscale, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parent.parent
PAN = json.loads((REPO / "examples/paths/pan.json").read_text())
SERVE_GPU = yaml.safe_load((REPO / "deployments/configs/serve-gpu.yaml").read_text())
MAX_GPU_NODES = 3


class FakeGPUCluster(AutoscalingCluster):
    """AutoscalingCluster with our own config, on free ports, stopped without `ray stop`."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        config = {
            "cluster_name": "d2v-fake",
            "max_workers": sum(t.get("max_workers", 0) for t in worker_node_types.values()),
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 0.1,  # 6 s: an idle fake GPU node goes quickly
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                **worker_node_types,
                "ray.head.default": {"resources": dict(head_resources), "node_config": {}, "max_workers": 0},
            },
            "head_node_type": "ray.head.default",
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }
        config.update(config_kwargs)
        return config

    def start(self, env: dict[str, str]) -> None:  # type: ignore[override]
        resources = dict(self._head_resources)
        args = [f"--num-gpus={resources.pop('GPU', 0)}"]
        self.head = RayHead({**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}, args)
        # The fake nodes join the head's GCS at this address (the provider's default is :6379).
        self._config["provider"]["gcs_address"] = self.head.address
        fd, path = tempfile.mkstemp(prefix="d2v-fake-cluster-", suffix=".json", dir=self.head.temp_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(self._config, f)
        self.head.extra_args.append(f"--autoscaling-config={path}")
        assert resources.pop("CPU", 2) == 2, "RayHead starts heads with 2 CPUs"
        self.head.start()

    def shutdown(self) -> None:
        self.head.stop()


def gpu_nodes() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)


def base_replicas() -> int:
    status = serve.status().applications["d2v"].deployments["BaseStage"]
    return status.replica_states.get("RUNNING", 0)


def build_test_app(settings: dict):
    """deployments.app.build_app's graph with test-sized resources: every replica a sliver
    of the head's CPU, except the base stage, which takes one (fake) GPU per replica."""
    from deployments.app import runner_deployment
    from deployments.ingress import Ingress
    from deployments.settings import FarmSettings
    from deployments.stages import BaseStage, DepthStage, EncodeStage, InterpolateStage, TrajectoryStage, UpscaleStage

    (app,) = SERVE_GPU["applications"]
    base = next(d for d in app["deployments"] if d["name"] == "BaseStage")
    autoscaling = {
        **base["autoscaling_config"],
        "min_replicas": 1,
        "max_replicas": MAX_GPU_NODES,
        "upscale_delay_s": 1,
        # Long enough that a lull in the test's load (its own polling is slow on a loaded
        # 2-core machine) does not take back a replica still starting, whose GPU node would
        # then idle away (one reading of a CI run that stayed at 2 of 3 for 150 s).
        "downscale_delay_s": 12,
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2,
    }
    small = {"ray_actor_options": {"num_cpus": 0.05}}
    farm = FarmSettings.from_args(settings)
    runner = runner_deployment(farm.queue, farm.max_running_jobs).options(**small).bind(
        DepthStage.options(**small).bind(),
        # Two planners: a base call is counted as load only once its trajectory is planned
        # (Ray resolves a call's arguments first), and one planner starved of CPU by three
        # renders on two cores would hide the queue from the base stage's autoscaling.
        TrajectoryStage.options(num_replicas=2, **small).bind(),
        BaseStage.options(ray_actor_options={"num_cpus": 0.05, "num_gpus": 1},
                          max_ongoing_requests=base["max_ongoing_requests"],
                          autoscaling_config=autoscaling).bind(),
        InterpolateStage.options(**small).bind(),
        UpscaleStage.options(**small).bind(),
        EncodeStage.options(**small).bind(),
        settings=settings,
    )
    return Ingress.options(**small).bind(runner, settings=settings)


def wait_for(what: str, condition, timeout_s: float, during=None, logs: Path | None = None, jobs=None) -> float:
    """Polls `condition` (calling `during` each round, e.g. to keep load on); returns the
    seconds it took. A failure shows how replicas, nodes and (`jobs()`) the jobs went."""
    t0 = time.monotonic()
    timeline, noted = [], -10.0
    while time.monotonic() - t0 < timeout_s:
        if during is not None:
            during()
        if condition():
            return time.monotonic() - t0
        if time.monotonic() - noted >= 5:
            noted = time.monotonic()
            timeline.append(f"{noted - t0:5.0f} s: base replicas {base_replicas()}, GPU nodes {gpu_nodes()}"
                            + (f", jobs {jobs()}" if jobs else ""))
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s} s (base replicas {base_replicas()}, "
                         f"GPU nodes {gpu_nodes()})\n" + "\n".join(timeline[-30:]) + "\n"
                         f"{scaling_decisions(logs)}{cluster_status()}")


def scaling_decisions(logs: Path | None) -> str:
    """The Serve controller's up/down decisions (with the load it saw), from the head's logs,
    and any handle whose load it stopped counting (no report for 10 s: its calls then read as
    no load at all; a CI run went from 2 base replicas to 1 at "ongoing requests: 0.00" with six
    jobs in flight, and never back up)."""
    # (resolved: session_latest is a link to the session's own directory, read once)
    paths = sorted({p.resolve() for p in logs.glob("session_*/logs/serve/controller_*.log")}) if logs else []
    lines = [line.strip() for path in paths for line in path.read_text(errors="replace").splitlines()
             if ("scaling" in line.lower() and "BaseStage" in line) or "Dropping stale metrics" in line]
    return "Serve's scaling decisions for the base stage:\n" + "\n".join(lines[-30:]) + "\n"


def cluster_status() -> str:
    """`ray status -v` of the connected cluster: nodes, idle times, usage (for failures)."""
    import subprocess

    address = ray.get_runtime_context().gcs_address
    done = subprocess.run([str(BIN / "ray"), "status", "-v", "--address", address], capture_output=True,
                          text=True, timeout=60)
    held = []
    try:  # who still references objects of 1 MB or more (a clip left pinned keeps its node up)
        from ray.util.state import list_objects

        for o in list_objects(address=address, detail=True, limit=2000, raise_on_missing_output=False):
            if (o.object_size or 0) >= 2**20:
                held.append(f"{o.object_size} B, {o.reference_type}, held by pid {o.pid} on node {o.node_id}")
        from ray.util.state import list_actors

        for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=200,
                             raise_on_missing_output=False):
            held.append(f"actor {a.class_name} {a.name or ''} on node {a.node_id}")
    except Exception as e:
        held.append(f"(could not list objects or actors: {e})")
    return done.stdout[-6000:] + done.stderr[-2000:] + "\nlarge objects and live actors:\n" + "\n".join(held)


def test_load_scales_base_stage_and_gpu_nodes_up_then_down(tmp_path, monkeypatch):
    from d2v.jobqueue import RedisServer

    redis_server = RedisServer(tmp_path / "redis").start()  # the farm's job queue
    d2v_env = {"D2V_DATA_DIR": str(tmp_path / "store"), "D2V_DEVICE": "cpu", "D2V_REDIS_URL": redis_server.url}
    # Token auth off for this throwaway cluster: this process imported Ray (and fixed its
    # auth mode, 'disabled' when unset) long before the test could hand it a token.
    env = {**os.environ, **d2v_env, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")

    cluster = FakeGPUCluster(
        head_resources={"CPU": 2},  # and no GPU: GPU work can only go to the fake GPU nodes
        worker_node_types={"fake_gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {},
                                        "min_workers": 0, "max_workers": MAX_GPU_NODES}},
    )
    t_start = time.monotonic()
    cluster.start(env)
    client = None
    try:
        ray.init(address=cluster.head.address, runtime_env={"env_vars": d2v_env}, logging_level="WARNING")
        assert gpu_nodes() == 0
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        # The one warm base replica needs a GPU: the autoscaler adds the first node for it.
        serve.run(build_test_app({"max_running_jobs": 8, "max_queued_jobs": 64, "lease_s": 30}),
                  name="d2v", route_prefix="/")
        assert base_replicas() == 1 and gpu_nodes() == 1
        t_ready = time.monotonic()
        logs = Path(cluster.head.temp_dir)

        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        image = cv2.imencode(".png", textured_image(640, 360, seed=9)[:, :, ::-1])[1].tobytes()
        in_flight: list[str] = []
        finished: list[dict] = []
        seed = [0]
        states: dict[str, str] = {}  # job in flight -> its status:stage at the last poll

        def jobs() -> str:
            return f"{len(finished)} finished, in flight {dict(collections.Counter(states.values()))}"

        def keep_load(target: int = 6) -> None:
            """Poll the jobs in flight; top them up to `target` (each a new job: the
            result cache would answer a repeated request, so every job gets its own seed)."""
            for url in list(in_flight):
                r = client.get(url)
                if r.status_code == 503:  # the farm busy (a slow machine): asked again next round
                    continue
                assert r.status_code == 200, r.text
                status = r.json()
                states[url] = f"{status['status']}:{status.get('stage')}"
                if status["status"] in ("succeeded", "failed"):
                    in_flight.remove(url)
                    states.pop(url)
                    finished.append(status)
            while len(in_flight) < target:
                seed[0] += 1
                request = {"path": PAN, "effect": "pan", "duration_s": 2, "fps": 12, "width": 480,
                           "height": 270, "motion_blur": 1.0, "motion_blur_samples": 32, "seed": seed[0]}
                r = client.post("/v1/jobs", files={"image": ("photo.png", image, "image/png")},
                                data={"request": json.dumps(request)})
                if r.status_code == 503:
                    break
                assert r.status_code == 202, r.text
                in_flight.append(r.json()["status_url"])

        up_s = wait_for("scale up to the max", lambda: base_replicas() == MAX_GPU_NODES == gpu_nodes(),
                        timeout_s=270, during=keep_load, logs=logs, jobs=jobs)
        drain_s = wait_for("the jobs in flight to finish", lambda: not in_flight, timeout_s=240,
                           during=lambda: keep_load(target=0), logs=logs, jobs=jobs)
        assert finished and all(s["status"] == "succeeded" for s in finished), \
            [s for s in finished if s["status"] != "succeeded"][:2]

        # A GPU node is idle only when nothing of it is in use, its object store included:
        # a finished job's clip still referenced anywhere keeps its node up (a fake GPU
        # node below with object_store_memory in use and no GPU in use is that).
        down_s = wait_for("scale down to one replica on one GPU node",
                          lambda: base_replicas() == 1 and gpu_nodes() == 1, timeout_s=150, logs=logs)
        print(f"\ncluster + app up {t_ready - t_start:.0f} s; scaled up to {MAX_GPU_NODES} replicas on "
              f"{MAX_GPU_NODES} fake GPU nodes in {up_s:.0f} s; {len(finished)} jobs drained in {drain_s:.0f} s; "
              f"back to 1 + 1 in {down_s:.0f} s")
    finally:
        if client is not None:
            client.close()
        try:
            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()
        cluster.shutdown()
        redis_server.stop()
