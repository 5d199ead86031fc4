"""What operators see of the farm: its metrics (Prometheus, through Ray) and its logs.

Metrics are `ray.util.metrics` objects, defined here once. Ray serves them with its own on
every node's metrics port (`d2v serve --metrics-port`, default 8080; `ray start
--metrics-export-port` on a cluster), each name prefixed `ray_`, counters suffixed `_total`:

    ray_d2v_jobs_total{status,backend,effect,queue}        jobs that ended: succeeded | failed (ours) |
                                                           rejected (the caller's input) | retried
    ray_d2v_job_failures_total{reason}                     failed jobs by reason (the error's class)
    ray_d2v_jobs_submitted_total{backend,effect}           accepted by POST /v1/jobs (202)
    ray_d2v_requests_refused_total{code,reason}            refused at the edge (4xx, 503)
    ray_d2v_job_seconds_{bucket,sum,count}{status,backend,effect}   claim to end, per job
    ray_d2v_stage_seconds_{bucket,sum,count}{stage,backend}         per stage run
    ray_d2v_jobs_queued{queue}, ray_d2v_jobs_running{queue}         from the job queue (Redis)
    ray_d2v_gpu_seconds_total{gpu_type}, ray_d2v_cpu_seconds_total  resource-seconds of finished jobs
    ray_d2v_cost_total{currency}                           their cost (d2v.cost's price table)
    ray_d2v_fidelity_verdicts_total{verdict,backend,effect}  the path check: followed | missed | unmeasured

Logs: replicas log through Serve's logger, so the Serve config's `logging_config`
(`encoding: JSON` in configs/) applies to d2v's lines too, and every line about a job
carries `job_id` as a field of its own (`job_log`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

# Seconds: a trajectory takes milliseconds, a camera job a few seconds, an SVD job minutes.
SECONDS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600, 1800]

# name -> (kind, tag keys, description). Exported as ray_<name> (+ _total for counters).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "d2v_jobs": ("counter", ("status", "backend", "effect", "queue"), "jobs that ended, by how"),
    "d2v_job_failures": ("counter", ("reason",), "failed jobs by reason (the error's class)"),
    "d2v_jobs_submitted": ("counter", ("backend", "effect"), "jobs accepted by POST /v1/jobs"),
    "d2v_requests_refused": ("counter", ("code", "reason"), "requests refused at the HTTP edge"),
    "d2v_job_seconds": ("histogram", ("status", "backend", "effect"), "seconds per job, claim to end"),
    "d2v_stage_seconds": ("histogram", ("stage", "backend"), "seconds per stage run"),
    "d2v_jobs_queued": ("gauge", ("queue",), "jobs waiting in the queue"),
    "d2v_jobs_running": ("gauge", ("queue",), "jobs being run"),
    "d2v_gpu_seconds": ("counter", ("gpu_type",), "GPU-seconds of finished jobs (fraction x seconds)"),
    "d2v_cpu_seconds": ("counter", (), "CPU core-seconds of finished jobs"),
    "d2v_cost": ("counter", ("currency",), "cost of finished jobs, by the price table"),
    "d2v_fidelity_verdicts": ("counter", ("verdict", "backend", "effect"), "path-check verdicts"),
}


def exported_names() -> set[str]:
    """Every series name Prometheus sees for the metrics above."""
    names = set()
    for name, (kind, _, _) in METRICS.items():
        full = "ray_" + name
        names |= {full + "_total"} if kind == "counter" else \
            {full + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {full}
    return names


@cache
def _metric(name: str):
    from ray.util import metrics

    kind, tags, description = METRICS[name]
    if kind == "counter":
        return metrics.Counter(name, description, tag_keys=tags)
    if kind == "histogram":
        return metrics.Histogram(name, description, boundaries=SECONDS_BUCKETS, tag_keys=tags)
    return metrics.Gauge(name, description, tag_keys=tags)


_failed: set[str] = set()


def _record(name: str, value: float, **tags) -> None:
    """Best effort: a metric that cannot be recorded (no Ray here) never fails a job."""
    try:
        metric = _metric(name)
        tags = {k: str(v) for k, v in tags.items()}
        kind = METRICS[name][0]
        if kind == "counter":
            metric.inc(value, tags=tags)
        elif kind == "histogram":
            metric.observe(value, tags=tags)
        else:
            metric.set(value, tags=tags)
    except Exception as e:
        if name not in _failed:  # said once per metric and process, not on every job
            _failed.add(name)
            logging.getLogger("d2v.telemetry").warning("metric %s not recorded: %s", name, e)


@dataclass
class JobOutcome:
    """How one job ended, for the metrics: what the runner knows when it lets the job go."""

    status: str  # succeeded | failed | rejected (the caller's mistake) | retried | lost (another attempt has it now)
    backend: str
    effect: str
    queue: str
    seconds: float
    reason: str | None = None  # failed/retried: the error's class
    manifest: object | None = None  # succeeded: d2v.models.Manifest (cost, fidelity)


def job_ended(outcome: JobOutcome) -> None:
    o = outcome
    _record("d2v_jobs", 1, status=o.status, backend=o.backend, effect=o.effect, queue=o.queue)
    if o.status in ("retried", "lost"):  # not an ending: the job goes on elsewhere
        return
    _record("d2v_job_seconds", o.seconds, status=o.status, backend=o.backend, effect=o.effect)
    if o.status in ("failed", "rejected"):
        _record("d2v_job_failures", 1, reason=o.reason or "unknown")
        return
    cost = getattr(o.manifest, "cost", None)
    if cost is not None:
        _record("d2v_cpu_seconds", cost.cpu_seconds)
        if cost.gpu_seconds:
            _record("d2v_gpu_seconds", cost.gpu_seconds, gpu_type=cost.gpu_type or "unknown")
        _record("d2v_cost", cost.total, currency=cost.currency)
    fidelity = getattr(o.manifest, "fidelity", None)
    if fidelity is not None:
        _record("d2v_fidelity_verdicts", 1, verdict=fidelity.verdict, backend=o.backend, effect=o.effect)


def stage_ran(stage: str, seconds: float, backend: str) -> None:
    _record("d2v_stage_seconds", seconds, stage=stage, backend=backend)


def submitted(backend: str, effect: str) -> None:
    _record("d2v_jobs_submitted", 1, backend=backend, effect=effect)


def refused(code: int, reason: str) -> None:
    _record("d2v_requests_refused", 1, code=code, reason=reason)


def queue_depth(queue: str, queued: int, running: int) -> None:
    _record("d2v_jobs_queued", queued, queue=queue)
    _record("d2v_jobs_running", running, queue=queue)


def held_resources() -> dict:
    """This replica's resources as Ray assigned them ({"cpus", "gpus", "device"}: the Serve
    config's num_cpus and GPU fraction, and the GPU's name): what each stage run here is
    charged (d2v.cost.StageUsage)."""
    import ray

    from d2v.cost import cuda_device_name

    held = ray.get_runtime_context().get_assigned_resources()
    gpus = float(held.get("GPU", 0.0))
    return {"cpus": float(held.get("CPU", 0.0)), "gpus": gpus, "device": cuda_device_name() if gpus else None}


# -- logs ---------------------------------------------------------------------------------


class _ToServeLogger(logging.Handler):
    """Hands each record to Serve's logger, whatever handlers it has at the time (Serve
    sets them up per replica, and again when the config's logging_config changes)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("ray.serve").handle(record)


def replica_logging() -> None:
    """d2v's loggers (`d2v.*`) write where Serve's own do: the replica's log file, in the
    encoding the Serve config's `logging_config` chose. Called in each replica's constructor."""
    d2v = logging.getLogger("d2v")
    if not any(isinstance(h, _ToServeLogger) for h in d2v.handlers):
        d2v.addHandler(_ToServeLogger())
    d2v.setLevel(logging.getLogger("ray.serve").getEffectiveLevel())
    d2v.propagate = False


def job_log(logger: logging.Logger, job_id: str) -> logging.LoggerAdapter:
    """`logger` with the job's id on every line: a `job_id` field in JSON logs. Passed in
    Serve's `ray_serve_extra_fields` (fields it adds to each line as they are): a plain
    `job_id` attribute is Ray's own job id to Serve, and it strips it."""
    return logging.LoggerAdapter(logger, {"ray_serve_extra_fields": {"job_id": job_id}})
