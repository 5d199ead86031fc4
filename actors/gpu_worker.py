"""The base of every GPU stage: pin to the device Ray assigned, load once, stay healthy.

Serve deployments (``deployments/stages.py``) inherit :class:`GPUWorker`; plain Ray
actors that need a whole GPU outside Serve use :data:`GPUActor`.

How the device is chosen (:func:`pick_device`):

* Ray assigns GPU ids to a worker (``num_gpus`` in ``ray_actor_options`` or
  ``.options()``) and sets ``CUDA_VISIBLE_DEVICES`` to them, so the assigned GPU is
  local index 0: ``"cuda:0"``. Fractional GPUs (``num_gpus=0.5``) share one id; the
  worker caps its CUDA memory to its fraction.
* No torch, or ``torch.cuda.is_available()`` is False (a CPU machine, or Ray's logical
  GPUs declared with ``ray.init(num_gpus=2)`` on one): the same code runs on the CPU,
  and the process logs why once, at WARNING.
* A Ray worker that was assigned no GPU runs on the CPU even where CUDA is visible:
  it must not use a GPU that Ray handed to someone else.
* ``prefer`` (or the environment variable ``D2V_DEVICE``): ``cpu``, ``cuda``,
  ``cuda:N`` or ``auto``. Asking for CUDA where there is none raises
  :class:`DeviceUnavailableError`; it never falls back silently.

torch is imported lazily, inside functions, and ray only when it is needed, so
``import actors.gpu_worker`` is cheap and works without torch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

logger = logging.getLogger(__name__)

__all__ = [
    "DEVICE_ENV",
    "DeviceInfo",
    "DeviceUnavailableError",
    "GPUActor",
    "GPUWorker",
    "pick_device",
]

DEVICE_ENV = "D2V_DEVICE"
_CHOICES = "cpu, cuda, cuda:N or auto"

_warn_lock = threading.Lock()
_warned_cpu = False


class DeviceUnavailableError(RuntimeError):
    """The requested device cannot be used here (e.g. ``D2V_DEVICE=cuda`` without CUDA)."""


@dataclass
class DeviceInfo:
    device: str  # "cuda:0" or "cpu"
    gpu_ids: list[str] = field(default_factory=list)  # what Ray assigned; [] outside Ray
    cuda_visible_devices: str | None = None
    gpu_fraction: float = 0.0  # this worker's share of its GPU; 0 when none
    torch_available: bool = False
    reason: str = ""  # one line: why this device

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- helpers


def _normalize_prefer(value: str | None, source: str) -> str | None:
    """None/"auto"/"" -> None; "cpu"; "cuda"; "cuda:N". Anything else is a ValueError."""
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("", "auto"):
        return None
    if v in ("cpu", "cuda"):
        return v
    if v.startswith("cuda:") and v[5:].isdigit():
        return v
    raise ValueError(f"{source}={value!r} is not a device: use {_CHOICES}")


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _ray_assignment() -> tuple[bool, list[str], float]:
    """(inside a Ray worker process, GPU ids Ray assigned, GPU amount assigned).

    Outside Ray, and in a Ray driver (which has no assigned resources), this is
    (False, [], 0.0). ray is not imported here: if nobody imported it, we are not in Ray.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False, [], 0.0
    from ray._private import worker as ray_worker

    if ray_worker.global_worker.mode != ray_worker.WORKER_MODE:
        return False, [], 0.0
    ctx = ray.get_runtime_context()
    gpu_ids = [str(i) for i in ctx.get_accelerator_ids().get("GPU", [])]
    fraction = float(ctx.get_assigned_resources().get("GPU", 0.0))
    return True, sorted(gpu_ids, key=lambda s: (len(s), s)), fraction


def _local_index(gpu_id: str, cuda_visible_devices: str | None) -> int:
    """The CUDA index (inside this process) of the GPU that Ray calls ``gpu_id``.

    Ray narrows CUDA_VISIBLE_DEVICES to the assigned ids, so this is normally 0. With
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES the variable lists all GPUs (or is
    unset) and the index is the id's position in it (or the id itself).
    """
    if cuda_visible_devices:
        visible = [s.strip() for s in cuda_visible_devices.split(",") if s.strip()]
        if gpu_id in visible:
            return visible.index(gpu_id)
    if gpu_id.isdigit():
        return int(gpu_id)
    return 0


def _warn_cpu_once(reason: str) -> None:
    global _warned_cpu
    with _warn_lock:
        if _warned_cpu:
            return
        _warned_cpu = True
    logger.warning("d2v GPU worker (pid %d): %s", os.getpid(), reason)


def _assignment_note(gpu_ids: list[str], fraction: float) -> str:
    if not gpu_ids:
        return ""
    return f"; Ray assigned GPU {','.join(gpu_ids)} x{fraction:g}"


# ---------------------------------------------------------------------------- pick_device


def pick_device(prefer: str | None = None) -> DeviceInfo:
    """Choose the torch device for this process (see the module docstring).

    ``prefer`` overrides the environment variable ``D2V_DEVICE``; both accept
    ``cpu``, ``cuda``, ``cuda:N`` and ``auto`` (the default).
    """
    source = "prefer" if prefer is not None else DEVICE_ENV
    requested = _normalize_prefer(prefer if prefer is not None else os.environ.get(DEVICE_ENV), source)

    in_worker, gpu_ids, fraction = _ray_assignment()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    info = DeviceInfo(
        device="cpu",
        gpu_ids=gpu_ids,
        cuda_visible_devices=cvd,
        gpu_fraction=fraction if gpu_ids else 0.0,
    )
    note = _assignment_note(gpu_ids, info.gpu_fraction)

    if requested == "cpu":
        # Told the CPU: torch is not imported to ask about CUDA. A farm's stage replicas
        # start that much sooner (about 2.5 CPU-seconds each), and the stages that never
        # use torch (trajectory, camera renders, encode) never load it.
        info.torch_available = importlib.util.find_spec("torch") is not None
        info.reason = f"{source}=cpu: running on the CPU{note}"
        logger.info("d2v GPU worker (pid %d): %s", os.getpid(), info.reason)
        return info

    torch = _import_torch()
    info.torch_available = torch is not None

    if torch is None:
        if requested is not None:
            raise DeviceUnavailableError(
                f"{source}={requested} but torch is not installed; install torch or set {DEVICE_ENV}=cpu"
            )
        info.reason = f"torch not installed: running on the CPU{note}"
        _warn_cpu_once(info.reason)
        return info

    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        if requested is not None:
            raise DeviceUnavailableError(
                f"{source}={requested} but CUDA is absent ({build}, "
                f"CUDA_VISIBLE_DEVICES={cvd!r}); set {DEVICE_ENV}=cpu or run on a GPU machine"
            )
        info.reason = f"CUDA absent: running on the CPU ({build}{note})"
        _warn_cpu_once(info.reason)
        return info

    count = torch.cuda.device_count()
    if requested is not None and requested.startswith("cuda:"):
        index = int(requested[5:])
        if index >= count:
            raise DeviceUnavailableError(
                f"{source}={requested} but this process sees {count} CUDA device(s) "
                f"(CUDA_VISIBLE_DEVICES={cvd!r})"
            )
        info.device = f"cuda:{index}"
        info.reason = f"{source}={requested}: {torch.cuda.get_device_name(index)}{note}"
        return info

    if gpu_ids:
        index = _local_index(gpu_ids[0], cvd)
        if index >= count:
            raise DeviceUnavailableError(
                f"Ray assigned GPU {gpu_ids[0]} but this process sees {count} CUDA device(s) "
                f"(CUDA_VISIBLE_DEVICES={cvd!r})"
            )
        info.device = f"cuda:{index}"
        info.reason = (
            f"Ray assigned GPU {','.join(gpu_ids)} x{info.gpu_fraction:g} "
            f"(CUDA_VISIBLE_DEVICES={cvd}): {torch.cuda.get_device_name(index)}"
        )
        return info

    if in_worker and requested is None:
        # CUDA is visible but Ray reserved none of it for this worker: using it would
        # take memory and time from whichever worker Ray did give it to.
        info.reason = (
            "Ray assigned no GPU to this worker: running on the CPU "
            f"(give it num_gpus, or set {DEVICE_ENV}=cuda to use CUDA unreserved)"
        )
        _warn_cpu_once(info.reason)
        return info

    info.device = "cuda:0"
    if requested == "cuda":
        where = "Ray assigned no GPU, CUDA used unreserved" if in_worker else "outside Ray"
        info.reason = f"{source}=cuda ({where}): {torch.cuda.get_device_name(0)}"
    else:
        info.reason = f"CUDA available outside Ray: {torch.cuda.get_device_name(0)}"
    return info


# ---------------------------------------------------------------------------- GPUWorker


class GPUWorker:
    """Base of a GPU stage: a Serve deployment class or a Ray actor inherits it.

    Construction picks the device, caps CUDA memory to the GPU fraction Ray assigned,
    then runs the subclass hooks :meth:`load` (load the model once per replica) and
    :meth:`warmup`. An exception in either propagates, so Serve marks the replica
    failed (and retries it) instead of serving a broken one.
    """

    stage: str = "gpu"

    def __init__(self, *, warmup: bool = True, device: str | None = None):
        self.device_info: DeviceInfo = pick_device(device)
        self.device: str = self.device_info.device
        self.memory_fraction: float | None = None
        self.load_s: float = 0.0
        self.warmup_s: float = 0.0
        self._unhealthy: str | None = None

        fraction = self.device_info.gpu_fraction
        if self.device.startswith("cuda") and 0 < fraction < 1:
            import torch

            torch.cuda.set_per_process_memory_fraction(fraction, torch.device(self.device))
            self.memory_fraction = fraction

        phase = "load"
        try:
            t0 = time.perf_counter()
            self.load()
            self.load_s = time.perf_counter() - t0
            if warmup:
                phase = "warmup"
                t0 = time.perf_counter()
                self.warmup()
                self.warmup_s = time.perf_counter() - t0
        except BaseException as exc:
            logger.error("stage %s: %s failed on %s: %r", self.stage, phase, self.device, exc)
            if hasattr(exc, "add_note"):
                exc.add_note(f"d2v stage {self.stage!r}: {phase}() failed on {self.device}")
            raise
        logger.info(
            "stage %s ready on %s (load %.2f s, warmup %.2f s): %s",
            self.stage, self.device, self.load_s, self.warmup_s, self.device_info.reason,
        )

    # -- hooks ---------------------------------------------------------------------

    def load(self) -> None:
        """Load the model once per replica. Default: nothing."""

    def warmup(self) -> None:
        """Run once after load. Default: a tiny op on a CUDA device (creating its context
        now, not on the first job); nothing on the CPU, which has nothing to warm."""
        if not self.device.startswith("cuda"):
            return
        import torch

        x = torch.ones(8, device=self.device)
        float((x * 2).sum())
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    # -- health --------------------------------------------------------------------

    def mark_unhealthy(self, reason: str) -> None:
        """Make every later :meth:`check_health` fail, so Serve replaces this replica
        (e.g. after a CUDA error that leaves the context unusable)."""
        self._unhealthy = reason

    def check_health(self) -> None:
        """Serve calls this periodically. Raises if the device is unusable. Cheap: on
        CUDA one tiny tensor op and a synchronize; on the CPU nothing heavy."""
        if self._unhealthy is not None:
            raise RuntimeError(f"stage {self.stage} on {self.device} marked unhealthy: {self._unhealthy}")
        if not self.device.startswith("cuda"):
            return
        import torch

        try:
            x = torch.ones(1, device=self.device)
            x.add_(1)
            torch.cuda.synchronize(self.device)
        except Exception as exc:
            raise RuntimeError(f"stage {self.stage}: {self.device} is unusable: {exc}") from exc

    # -- introspection -------------------------------------------------------------

    def describe(self) -> dict:
        """Where this worker runs and how long it took to start: stage, device info,
        memory cap, load/warmup seconds, pid, host, Ray node/actor id, Serve replica id."""
        out: dict[str, Any] = {"stage": self.stage}
        out.update(self.device_info.to_dict())
        out.update(
            memory_fraction=self.memory_fraction,
            load_s=round(self.load_s, 4),
            warmup_s=round(self.warmup_s, 4),
            pid=os.getpid(),
            hostname=socket.gethostname(),
            node_id=None,
            actor_id=None,
            replica_id=None,
            deployment=None,
        )
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ctx = ray.get_runtime_context()
            out["node_id"] = ctx.get_node_id()
            out["actor_id"] = ctx.get_actor_id()
        serve_context = sys.modules.get("ray.serve.context")
        if serve_context is not None:
            replica = serve_context._get_internal_replica_context()
            if replica is not None:
                out["replica_id"] = replica.replica_id.unique_id
                out["deployment"] = replica.deployment
        return out


# ---------------------------------------------------------------------------- GPUActor


class _GPUActorImpl(GPUWorker):
    """A plain Ray actor holding a whole GPU (by default) outside Serve.

    ``GPUActor.options(num_gpus=1).remote()``; then ``describe``, ``check_health``, or
    ``run(fn, *args)``, which calls ``fn(worker, *args, **kwargs)`` in the actor, with
    ``worker.device`` the device it pinned.
    """

    stage = "gpu-actor"

    def __init__(self, *, warmup: bool = True, device: str | None = None, stage: str | None = None):
        if stage is not None:
            self.stage = stage
        super().__init__(warmup=warmup, device=device)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self, *args, **kwargs)


def __getattr__(name: str):
    # GPUActor is made on first use, so importing this module does not import ray.
    if name == "GPUActor":
        import ray

        actor_cls = ray.remote(num_gpus=1)(_GPUActorImpl)
        globals()["GPUActor"] = actor_cls
        return actor_cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
