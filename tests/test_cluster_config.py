"""The cluster configs: cluster.yaml through the Ray cluster launcher's own validation
(what `ray up` runs before it touches a cloud), k8s/rayservice.yaml's structure, and
both consistent with configs/serve-gpu.yaml (same Serve config, enough GPUs for its
largest scale, every deployment fits some node type, no GPU work on the head)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

REPO = Path(__file__).resolve().parent.parent
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
SERVE_GPU = yaml.safe_load((REPO / "configs/serve-gpu.yaml").read_text())
RAYSERVICE = yaml.safe_load((REPO / "k8s/rayservice.yaml").read_text())
GPU_STAGES = ("BaseStage", "InterpolateStage", "UpscaleStage")


def deployments(serve_config: dict) -> dict[str, dict]:
    (app,) = serve_config["applications"]
    return {d["name"]: d for d in app["deployments"]}


def max_gpus_used(serve_config: dict) -> float:
    """GPUs the Serve app holds with every deployment at its max_replicas."""
    total = 0.0
    for d in deployments(serve_config).values():
        replicas = d.get("autoscaling_config", {}).get("max_replicas", d.get("num_replicas", 1))
        total += replicas * d.get("ray_actor_options", {}).get("num_gpus", 0)
    return total


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
    assert "minio server" in start and "serve deploy configs/serve-gpu.yaml" in start

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
    for name in ("Ingress", "TrajectoryStage"):  # the head can hold the light CPU stages
        assert deployments(SERVE_GPU)[name]["ray_actor_options"]["num_cpus"] <= head["CPU"]


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
        assert "autoscaling_config" in d, d["name"]


# ---------------------------------------------------------------- k8s/rayservice.yaml


def test_rayservice_serves_exactly_serve_gpu_yaml():
    assert RAYSERVICE["apiVersion"] == "ray.io/v1" and RAYSERVICE["kind"] == "RayService"
    served = yaml.safe_load(RAYSERVICE["spec"]["serveConfigV2"])
    assert served == SERVE_GPU, "k8s/rayservice.yaml's serveConfigV2 differs from configs/serve-gpu.yaml"


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
