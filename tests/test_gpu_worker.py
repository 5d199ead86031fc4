"""GPU worker base: device choice, fractional GPUs under real Ray + Serve, health.

Ray's logical GPUs (`ray.init(num_gpus=2)`) need no hardware: two 0.5-GPU Serve
replicas share one GPU id, a 1-GPU actor gets the other, and with no CUDA the same
code runs on the CPU.
"""

from __future__ import annotations

import logging
import time

import pytest

from actors import gpu_worker
from actors.gpu_worker import DeviceInfo, DeviceUnavailableError, GPUWorker, pick_device

pytestmark = pytest.mark.timeout(180)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


NO_CUDA = not _cuda_available()


# ---------------------------------------------------------------- outside Ray


def test_pick_device_outside_ray(monkeypatch):
    monkeypatch.delenv("D2V_DEVICE", raising=False)
    info = pick_device()
    assert isinstance(info, DeviceInfo)
    assert info.gpu_ids == [] and info.gpu_fraction == 0
    d = info.to_dict()
    assert set(d) == {"device", "gpu_ids", "cuda_visible_devices", "gpu_fraction", "torch_available", "reason"}
    assert "\n" not in info.reason and info.reason
    if NO_CUDA:
        assert info.device == "cpu"
        assert "CUDA absent" in info.reason or "torch not installed" in info.reason
    else:
        assert info.device == "cuda:0"


def test_d2v_device_cpu_is_honoured(monkeypatch):
    monkeypatch.setenv("D2V_DEVICE", "cpu")
    info = pick_device()
    assert info.device == "cpu" and "D2V_DEVICE=cpu" in info.reason
    # prefer wins over the environment
    monkeypatch.setenv("D2V_DEVICE", "cuda")
    assert pick_device("cpu").device == "cpu"


def test_bad_device_names_the_setting(monkeypatch):
    monkeypatch.setenv("D2V_DEVICE", "gpu7")
    with pytest.raises(ValueError, match="D2V_DEVICE"):
        pick_device()


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is present")
def test_asking_for_cuda_without_it_fails_loudly(monkeypatch):
    monkeypatch.setenv("D2V_DEVICE", "cuda")
    with pytest.raises(DeviceUnavailableError, match="D2V_DEVICE=cuda"):
        pick_device()
    with pytest.raises(DeviceUnavailableError):
        GPUWorker()


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is present")
def test_cpu_fallback_is_logged_once(monkeypatch, caplog):
    monkeypatch.delenv("D2V_DEVICE", raising=False)
    monkeypatch.setattr(gpu_worker, "_warned_cpu", False)
    with caplog.at_level(logging.WARNING, logger="actors.gpu_worker"):
        pick_device()
        pick_device()
        GPUWorker()
    warnings = [r for r in caplog.records if r.name == "actors.gpu_worker" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running on the CPU" in warnings[0].getMessage()


def test_worker_hooks_timing_and_health(monkeypatch):
    monkeypatch.delenv("D2V_DEVICE", raising=False)
    calls = []

    class Stage(GPUWorker):
        stage = "probe"

        def load(self):
            calls.append("load")
            time.sleep(0.02)

        def warmup(self):
            calls.append("warmup")

    w = Stage()
    assert calls == ["load", "warmup"]
    assert w.load_s >= 0.02 and w.warmup_s >= 0
    w.check_health()  # cheap, passes on the CPU
    d = w.describe()
    assert d["stage"] == "probe" and d["device"] == w.device
    assert d["replica_id"] is None and d["pid"] > 0
    assert Stage(warmup=False) and calls[-1] == "load"  # warmup skipped

    # the default warmup runs a tiny op on the device
    plain = GPUWorker()
    assert plain.describe()["stage"] == "gpu"

    w.mark_unhealthy("CUDA error: an illegal memory access")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        w.check_health()


def test_failing_load_fails_construction():
    class Broken(GPUWorker):
        stage = "broken"

        def load(self):
            raise OSError("model weights not found at /nowhere")

    with pytest.raises(OSError, match="/nowhere") as excinfo:
        Broken()
    assert any("broken" in note for note in getattr(excinfo.value, "__notes__", ["broken"]))


def _fresh_python(code: str) -> str:
    """What `code` prints, run in a new interpreter (nothing imported yet, no D2V_DEVICE: the
    shared farm, when an earlier module started it, has D2V_DEVICE=cpu in this process's
    environment); it must succeed."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "D2V_DEVICE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_does_not_need_ray_or_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # make `import torch` fail
        "import actors.gpu_worker as g\n"
        "assert 'ray' not in sys.modules\n"
        "info = g.pick_device()\n"
        "assert info.device == 'cpu' and not info.torch_available, info\n"
        "assert 'torch not installed' in info.reason\n"
        "w = g.GPUWorker(); w.check_health(); print(w.describe()['device'])\n"
    )
    assert _fresh_python(code) == "cpu"


def test_a_worker_told_the_cpu_starts_without_importing_torch():
    # A farm's stage replicas on the CPU (D2V_DEVICE=cpu, as serve-local.yaml sets it) start
    # without torch's import; torch is still reported as installed.
    code = (
        "import os, sys; os.environ['D2V_DEVICE'] = 'cpu'\n"
        "import actors.gpu_worker as g\n"
        "w = g.GPUWorker(); w.check_health()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(w.device, w.device_info.torch_available, w.device_info.reason)\n"
    )
    assert _fresh_python(code) == "cpu True D2V_DEVICE=cpu: running on the CPU"


# ---------------------------------------------------------------- real Ray + Serve


# The replicas here pick their device as an unconfigured one does (the shared farm tells its
# own apps D2V_DEVICE=cpu): "auto", what no D2V_DEVICE means.
AUTO_DEVICE = {"env_vars": {"D2V_DEVICE": "auto"}}


@pytest.fixture(scope="module")
def ray_two_gpus(shared_farm):
    """Ray with two logical GPUs and Serve: the session's shared farm (tests/conftest.py)."""
    import ray

    shared_farm.base()
    assert ray.cluster_resources().get("GPU") == 2
    return ray


def _probe_deployment():
    from ray import serve

    @serve.deployment(num_replicas=2, ray_actor_options={"num_gpus": 0.5, "num_cpus": 0.25,
                                                         "runtime_env": AUTO_DEVICE})
    class Probe(GPUWorker):
        stage = "probe"

        def __call__(self) -> dict:
            return self.describe()

    return Probe


def test_fractional_replicas_share_a_gpu_and_an_actor_gets_the_other(ray_two_gpus):
    import ray
    from ray import serve

    handle = serve.run(_probe_deployment().bind(), name="probe", route_prefix=None)

    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        for d in [r.result(timeout_s=30) for r in [handle.remote() for _ in range(16)]]:
            seen[d["replica_id"]] = d
    assert len(seen) == 2, f"only these replicas answered: {list(seen)}"

    a, b = seen.values()
    for d in (a, b):
        assert d["stage"] == "probe" and d["deployment"] == "Probe"
        assert len(d["gpu_ids"]) == 1
        assert d["gpu_fraction"] == pytest.approx(0.5)
        assert d["cuda_visible_devices"] == d["gpu_ids"][0]
        assert d["actor_id"] and d["node_id"]
        if NO_CUDA:
            assert d["device"] == "cpu"
            assert "CUDA absent" in d["reason"], d["reason"]
            assert d["memory_fraction"] is None
        else:
            assert d["device"] == "cuda:0"
            assert d["memory_fraction"] == pytest.approx(0.5)
    assert a["gpu_ids"] == b["gpu_ids"]  # the two halves share one GPU
    assert a["pid"] != b["pid"]
    shared = a["gpu_ids"][0]

    # The whole-GPU actor gets the other logical GPU.
    actor = gpu_worker.GPUActor.options(num_gpus=1, num_cpus=0.25, runtime_env=AUTO_DEVICE).remote()
    d = ray.get(actor.describe.remote(), timeout=60)
    assert d["stage"] == "gpu-actor"
    assert len(d["gpu_ids"]) == 1 and d["gpu_ids"][0] != shared
    assert {shared, d["gpu_ids"][0]} == {"0", "1"}
    assert d["cuda_visible_devices"] == d["gpu_ids"][0]
    assert d["gpu_fraction"] == pytest.approx(1.0) and d["memory_fraction"] is None
    assert d["replica_id"] is None and d["actor_id"]
    assert d["device"] == ("cpu" if NO_CUDA else "cuda:0")
    ray.get(actor.check_health.remote(), timeout=30)
    assert ray.get(actor.run.remote(lambda w, x: (w.device, x + 1), 41), timeout=30) == (d["device"], 42)
    ray.kill(actor)

    serve.delete("probe", _blocking=False)  # not waited for: nothing after this needs it gone


def test_replica_whose_load_fails_is_not_served(ray_two_gpus):
    from ray import serve

    @serve.deployment(
        num_replicas=1,
        max_constructor_retry_count=1,  # Serve retries 3 times by default; once shows it
        ray_actor_options={"num_gpus": 0.5, "num_cpus": 0.25, "runtime_env": AUTO_DEVICE},
    )
    class Broken(GPUWorker):
        stage = "broken"

        def load(self):
            raise OSError("model weights not found at /nowhere")

        def __call__(self):
            return "served"

    with pytest.raises(RuntimeError, match="broken failed"):
        serve.run(Broken.bind(), name="broken", route_prefix=None)
    app = serve.status().applications["broken"]
    assert app.status == "DEPLOY_FAILED"
    dep = app.deployments["Broken"]
    assert dep.status == "DEPLOY_FAILED" and dep.replica_states.get("RUNNING", 0) == 0
    assert "/nowhere" in dep.message, dep.message  # the load() error reaches the status
    serve.delete("broken", _blocking=False)
