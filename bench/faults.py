"""Faults with jobs in flight, against a real farm: real S3 (SeaweedFS), real Redis, real Serve.

Shared by bench/reliability.py (the full run, its table in bench/RESULTS.md) and
tests/test_reliability_faults.py (a fast subset in CI). Each scenario submits jobs, does
something an operator's week brings (a replica killed, S3 or Redis frozen or restarted), then
waits for every accepted job and counts:

    lost      accepted, then gone (no status) or never finished within the wait
    failed    finished 'failed' (none of these faults is the job's fault)
    stuck     still queued/running at the end of the wait
    503s      submissions refused during the outage, and whether each came with Retry-After
              and a JSON detail within 2 s

A submission refused with a 503 is retried by the harness, as a client would, until accepted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PAN = [{"x": 60, "y": 100}, {"x": 560, "y": 140}]
FARM_ARGS = {"lease_s": 6, "max_running_jobs": 2, "max_queued_jobs": 1000, "reconcile_s": 2}


def job_request(seed: int, slow: bool = False) -> dict:
    """A job of a fraction of a second (or a few seconds with `slow`: motion blur sub-frames)."""
    request = {"path": PAN, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160, "height": 90, "seed": seed}
    if slow:
        request.update(width=480, height=270, duration_s=2, fps=12, motion_blur=1.0, motion_blur_samples=16)
    return request


def photo_png(seed: int = 0) -> bytes:
    import cv2

    from tests.conftest import textured_image

    return cv2.imencode(".png", textured_image(640, 360, seed=seed)[:, :, ::-1])[1].tobytes()


@dataclass
class Outcome:
    scenario: str
    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    stuck: int = 0
    refused: int = 0  # 503s during the outage
    refused_ok: int = 0  # ... each with Retry-After and a JSON detail, answered within 2 s
    slowest_refusal_s: float = 0.0
    other_5xx: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)  # who refused (first words of the detail): count

    @property
    def clean(self) -> bool:
        return not (self.failed or self.lost or self.stuck or self.other_5xx) and self.refused == self.refused_ok


class FaultFarm:
    """The farm with its S3 and Redis started here, so the scenarios can stop them."""

    def __init__(self, num_cpus: int = 4, farm_args: dict | None = None, env: dict | None = None):
        self.num_cpus, self.farm_args = num_cpus, {**FARM_ARGS, **(farm_args or {})}
        self.extra_env = dict(env or {})
        self.stack = ExitStack()
        self.image = photo_png(3)
        self.seed = 1000

    def __enter__(self) -> "FaultFarm":
        from d2v.jobqueue import RedisServer
        from tests.farm import serve_farm
        from tests.seaweed import SeaweedS3

        work = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="d2v-faults-")))
        self.s3 = self.stack.enter_context(SeaweedS3(work / "s3"))
        self.redis = self.stack.enter_context(RedisServer(work / "redis"))
        self.env = {**self.s3.env("faults"), "D2V_DEVICE": "cpu", "D2V_REDIS_URL": self.redis.url, **self.extra_env}
        url = self.stack.enter_context(serve_farm(self.env, {"/": self.farm_args}, num_cpus=self.num_cpus))
        self.client = self.stack.enter_context(httpx.Client(base_url=url, timeout=30))
        self.url = url
        return self

    def __exit__(self, *exc) -> None:
        self.s3.proc and os.killpg(self.s3.proc.pid, signal.SIGCONT)  # never leave S3 frozen
        self.stack.close()

    # -- jobs ---------------------------------------------------------------------------

    def post(self, slow: bool = False, client: httpx.Client | None = None) -> httpx.Response:
        self.seed += 1
        files = {"image": ("photo.png", self.image, "image/png")}
        return (client or self.client).post("/v1/jobs", files=files, data={"request": json.dumps(job_request(self.seed, slow))})

    def submit(self, outcome: Outcome, slow: bool = False, deadline_s: float = 300) -> str:
        """Submit until accepted (a client retrying 503s); every 503 is checked as it comes."""
        deadline = time.monotonic() + deadline_s
        while True:
            t0 = time.monotonic()
            try:
                r = self.post(slow)
            except httpx.HTTPError as e:  # the HTTP replica restarting after a kill
                outcome.errors.append(f"POST: {type(e).__name__}")
                time.sleep(1)
                continue
            took = time.monotonic() - t0
            if r.status_code == 202:
                outcome.accepted += 1
                return r.json()["job_id"]
            if r.status_code == 503:
                outcome.refused += 1
                outcome.slowest_refusal_s = max(outcome.slowest_refusal_s, took)
                if took <= 2.0 and r.headers.get("Retry-After") and _detail(r):
                    outcome.refused_ok += 1
                else:
                    outcome.errors.append(f"503 in {took:.1f} s: {r.headers} {r.text[:200]}")
            elif r.status_code >= 500:
                outcome.other_5xx += 1
                outcome.errors.append(f"POST {r.status_code}: {r.text[:200]}")
            else:
                raise AssertionError(f"a legal job was refused: {r.status_code} {r.text}")
            assert time.monotonic() < deadline, "no submission accepted"
            time.sleep(0.5)

    def status(self, job_id: str) -> dict | None:
        try:
            r = self.client.get(f"/v1/jobs/{job_id}", timeout=10)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code in (200, 404) else None

    def settle(self, outcome: Outcome, jobs: list[str], timeout_s: float = 300) -> Outcome:
        """Wait for every accepted job; count how each ended."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, dict | None] = {}
        pending = list(jobs)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                s = self.status(job_id)
                last[job_id] = s
                if s is not None and s.get("status") in ("succeeded", "failed"):
                    pending.remove(job_id)
            time.sleep(0.5)
        for job_id in jobs:
            s = last.get(job_id)
            if s is None or "status" not in s:
                outcome.lost += 1
                outcome.errors.append(f"{job_id}: {s}")
            elif s["status"] == "succeeded":
                outcome.succeeded += 1
            elif s["status"] == "failed":
                outcome.failed += 1
                outcome.errors.append(f"{job_id} failed: {s.get('error')}")
            else:
                outcome.stuck += 1
                outcome.errors.append(f"{job_id} stuck: {s['status']} / {s.get('stage')}")
        return outcome

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.client.get("/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("the farm did not become healthy again")

    # -- faults -------------------------------------------------------------------------

    def kill_replicas(self, deployment: str) -> int:
        import ray

        actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
        for a in actors:
            ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
        return len(actors)

    def freeze_s3(self) -> None:
        os.killpg(self.s3.proc.pid, signal.SIGSTOP)

    def thaw_s3(self) -> None:
        os.killpg(self.s3.proc.pid, signal.SIGCONT)

    def kill_s3(self) -> None:
        os.killpg(self.s3.proc.pid, signal.SIGKILL)
        self.s3.proc.wait(10)
        self.s3.proc = None

    def start_s3(self) -> None:
        self.s3.start()

    def kill_redis(self) -> None:
        self.redis.stop(kill=True)

    def start_redis(self) -> None:
        self.redis.start()


def _detail(r: httpx.Response) -> bool:
    try:
        return isinstance(r.json().get("detail"), str) and bool(r.json()["detail"])
    except ValueError:
        return False


# ---------------------------------------------------------------------------- scenarios


def replica_kills(farm: FaultFarm, deployment: str, kills: int, jobs_per_kill: int = 1) -> Outcome:
    """Kill the deployment's replicas `kills` times, each while jobs run."""
    out = Outcome(f"{kills} {deployment} kills")
    t0 = time.monotonic()
    jobs: list[str] = []
    for _ in range(kills):
        batch = [farm.submit(out, slow=True) for _ in range(jobs_per_kill)]
        jobs += batch
        _wait_running(farm, batch[0])
        farm.kill_replicas(deployment)
        time.sleep(0.5)
    farm.settle(out, jobs, timeout_s=120 + 30 * kills)
    out.seconds = time.monotonic() - t0
    return out


def outage(farm: FaultFarm, name: str, down, up, hold_s: float, jobs_before: int = 4,
           posts_during: int = 5) -> Outcome:
    """Jobs in flight, then `down()` for `hold_s` seconds (POSTing meanwhile: each must be a
    quick 503), then `up()`; every job accepted before or after must finish."""
    out = Outcome(name)
    t0 = time.monotonic()
    jobs = [farm.submit(out, slow=True) for _ in range(jobs_before)]
    _wait_running(farm, jobs[0])
    down()
    try:
        end = time.monotonic() + hold_s
        sent = 0
        while time.monotonic() < end:
            if sent < posts_during:
                _refused_during(farm, out)
                sent += 1
            time.sleep(max(0.2, hold_s / max(1, posts_during) - 2))
    finally:
        up()
    farm.wait_healthy()
    jobs += [farm.submit(out) for _ in range(2)]  # the farm takes new work again
    farm.settle(out, jobs)
    out.seconds = time.monotonic() - t0
    return out


def _refused_during(farm: FaultFarm, out: Outcome) -> None:
    """One POST while a dependency is away: it must be a 503 + Retry-After + detail in 2 s."""
    t0 = time.monotonic()
    try:
        r = farm.post()
    except httpx.HTTPError as e:
        out.errors.append(f"POST during outage: {type(e).__name__} after {time.monotonic() - t0:.1f} s")
        out.refused += 1
        return
    took = time.monotonic() - t0
    if r.status_code == 202:  # the outage did not touch this request's path (S3 frozen after it)
        out.accepted += 1
        out.errors.append("accepted during the outage")
        return
    out.refused += 1
    out.slowest_refusal_s = max(out.slowest_refusal_s, took)
    if r.status_code == 503 and r.headers.get("Retry-After") and _detail(r) and took <= 2.0:
        out.refused_ok += 1
    else:
        out.errors.append(f"during outage: {r.status_code} in {took:.1f} s: {r.text[:200]}")


def concurrent_submissions(farm: FaultFarm, n: int) -> Outcome:
    """`n` POSTs at once, each on its own connection (httpx's pool holds 100 by default, which
    would queue the rest in the client): each a 202, or a 503 with Retry-After and a JSON
    detail; every accepted job finishes."""
    out = Outcome(f"{n} concurrent submissions")
    t0 = time.monotonic()
    lock = threading.Lock()
    jobs: list[str] = []
    client = httpx.Client(base_url=farm.url, timeout=60, limits=httpx.Limits(max_connections=n))

    def one(_):
        try:
            r = farm.post(client=client)
        except httpx.HTTPError as e:  # a dropped connection: neither a 202 nor a 503
            with lock:
                out.errors.append(f"POST: {type(e).__name__}: {e!r} (cause: {e.__cause__!r})")
                out.other_5xx += 1
            return
        with lock:
            if r.status_code == 202:
                out.accepted += 1
                jobs.append(r.json()["job_id"])
            elif r.status_code == 503 and r.headers.get("Retry-After") and _detail(r):
                out.refused += 1
                out.refused_ok += 1
                who = re.sub(r"\d+", "N", r.json()["detail"])[:60]
                out.refusals[who] = out.refusals.get(who, 0) + 1
            else:
                out.other_5xx += 1
                out.errors.append(f"{r.status_code}: {r.text[:200]}")

    with client, ThreadPoolExecutor(n) as pool:
        list(pool.map(one, range(n)))
    farm.settle(out, jobs, timeout_s=60 + 3 * n)
    out.seconds = time.monotonic() - t0
    return out


def _wait_running(farm: FaultFarm, job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = farm.status(job_id)
        if s and s.get("status") in ("running", "succeeded", "failed"):
            return
        time.sleep(0.1)


def table(outcomes: list[Outcome]) -> str:
    head = ("scenario", "accepted", "succeeded", "failed", "lost", "stuck", "503s", "503 ok", "slowest 503 s",
            "other 5xx", "seconds")
    rows = [head] + [(o.scenario, o.accepted, o.succeeded, o.failed, o.lost, o.stuck, o.refused, o.refused_ok,
                      f"{o.slowest_refusal_s:.2f}", o.other_5xx, f"{o.seconds:.0f}") for o in outcomes]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def cli_killed_then_farm(farm: FaultFarm, cli_lease_s: float | None = None) -> Outcome:
    """`d2v render` on the farm's store, killed mid-render (SIGKILL: no chance to clean up);
    then the same image and request sent to the farm. The farm's job must finish, and the
    CLI's job must not stay 'running' for ever: the reconciler fails it with the reason once
    its heartbeat is over two leases old (rendering it again takes it over). `cli_lease_s`:
    the CLI's lease (D2V_LEASE_S; None: its default, 30 s), which sets how long that takes."""
    import subprocess
    import sys

    from d2v.lifecycle import Jobs
    from d2v.s3store import S3Store

    out = Outcome("CLI killed mid-render, same job to the farm")
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="d2v-cli-"))
    (work / "photo.png").write_bytes(farm.image)
    farm.seed += 1
    # 144 frames at 720p with motion blur: seconds of rendering still ahead when the CLI is
    # killed 2 s in (checked below: it must die mid-render); no longer, as the farm renders it
    # all again (12 s of video cost the test 20 s more).
    request = {"path": PAN, "effect": "pan", "duration_s": 6, "fps": 24, "width": 1280, "height": 720,
               "seed": farm.seed, "motion_blur": 1.0}
    (work / "path.json").write_text(json.dumps(request["path"]))
    exe = Path(sys.executable).parent / "d2v"
    cmd = [str(exe), "render", str(work / "photo.png"), "--path", str(work / "path.json"), "--effect", "pan",
           "--duration", "6", "--fps", "24", "--size", "1280x720", "--seed", str(farm.seed), "--motion-blur", "1",
           "-o", str(work / "out.mp4")]
    env = {**os.environ, **farm.env, **({"D2V_LEASE_S": str(cli_lease_s)} if cli_lease_s else {})}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jobs = Jobs(S3Store.from_env(farm.env))
    deadline = time.monotonic() + 120
    cli_job = None
    while cli_job is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            out.errors.append(f"the CLI did not get going: {proc.poll()} {proc.stderr.read()[-500:]!r}")
            out.lost += 1
            return out
        for job_id in jobs.unfinished():
            if (status := jobs.get(job_id)) and (status.owner or "").startswith("cli:"):
                cli_job = job_id
        time.sleep(0.2)
    time.sleep(2)  # mid-render
    proc.kill()
    proc.wait()
    if jobs.get(cli_job).status != "running":  # it must die mid-render for this to mean anything
        out.errors.append(f"the CLI's job was {jobs.get(cli_job).status} when killed: render longer")
        out.stuck += 1
        return out
    files = {"image": ("photo.png", farm.image, "image/png")}
    r = farm.client.post("/v1/jobs", files=files, data={"request": json.dumps(request)})
    assert r.status_code == 202, r.text
    out.accepted += 1
    farm.settle(out, [r.json()["job_id"]], timeout_s=300)
    # The CLI's own lease (its heartbeats stopped with it) twice over, and a few reconcile passes.
    deadline = time.monotonic() + 2 * jobs.get(cli_job).lease_s + 4 * farm.farm_args["reconcile_s"] + 10
    while (s := jobs.get(cli_job)).status == "running" and time.monotonic() < deadline:
        time.sleep(1)
    if s.status == "running":
        out.stuck += 1
        out.errors.append(f"the killed CLI's job {cli_job} is still running: {s.owner}")
    out.seconds = time.monotonic() - t0
    return out


def job_queue(farm: FaultFarm):
    """The farm's queue (the app at "/" of tests.farm.serve_farm), as a runner sees it."""
    from d2v.jobqueue import JobQueue

    return JobQueue("d2v-jobs", farm.redis.url)


def store_jobs(farm: FaultFarm):
    from d2v.lifecycle import Jobs
    from d2v.s3store import S3Store

    return Jobs(S3Store.from_env(farm.env))


def duplicate_deliveries(farm: FaultFarm, jobs: int = 2, copies: int = 2) -> Outcome:
    """Slow jobs, each delivered `copies` more times while it runs (its id enqueued again, as
    a reconciler pass or a redelivered message would): every copy must be dropped without
    touching the job. With one runner replica, the copies reach the replica running it."""
    out = Outcome(f"{jobs} running jobs delivered {copies} more times each")
    t0 = time.monotonic()
    queue, stored = job_queue(farm), store_jobs(farm)
    ids = [farm.submit(out, slow=True) for _ in range(jobs)]
    for job_id in ids:
        _wait_running(farm, job_id)
        for _ in range(copies):
            queue.enqueue(job_id)
    farm.settle(out, ids)
    for job_id in ids:
        if (attempts := stored.get(job_id).attempts) != 1:
            out.errors.append(f"{job_id}: {attempts} attempts (renders); one expected")
            out.failed += 1
    out.seconds = time.monotonic() - t0
    return out


def enqueue_failure_then_retry(farm: FaultFarm) -> Outcome:
    """Redis refuses writes (out of memory: reads still work, so the POST gets as far as the
    enqueue, after its inputs and status are stored): a 503; then Redis recovers and the client
    sends the same request again: one job renders, and the refused one never runs later."""
    import redis

    out = Outcome("enqueue failed, then the client retried")
    t0 = time.monotonic()
    admin = redis.Redis.from_url(farm.redis.url)
    farm.seed += 1
    seed = farm.seed
    files = {"image": ("photo.png", farm.image, "image/png")}
    data = {"request": json.dumps(job_request(seed))}
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every write refused from now on
    try:
        r = farm.client.post("/v1/jobs", files=files, data=data)
    finally:
        admin.config_set("maxmemory", 0)
    if r.status_code != 503 or not r.headers.get("Retry-After"):
        out.errors.append(f"with Redis refusing writes: {r.status_code} {r.text[:200]}")
        out.other_5xx += 1
    out.refused, out.refused_ok = 1, int(r.status_code == 503 and _detail(r))
    r = farm.client.post("/v1/jobs", files=files, data=data)
    assert r.status_code == 202, r.text
    out.accepted += 1
    farm.settle(out, [r.json()["job_id"]])
    # Two reconcile passes after the retry finished, and time for what one would enqueue to
    # render (a second of this small job): the refused job must stay put.
    time.sleep(2 * farm.farm_args["reconcile_s"] + 2)
    stored = store_jobs(farm)
    renders = []
    for key in stored.store.list("jobs/"):
        if key.endswith("/request.json") and json.loads(stored.store.get_bytes(key)).get("seed") == seed:
            status = stored.get(key.split("/")[1])
            renders.append((status.status, status.attempts))
    if sorted(renders) != [("failed", 0), ("succeeded", 1)]:
        out.errors.append(f"jobs of this request (status, renders): {renders}")
        out.failed += 1
    out.seconds = time.monotonic() - t0
    return out


# ---------------------------------------------------------------------------- long jobs


def stage_counts() -> dict[str, float]:
    """ray_d2v_stage_seconds_count per stage, from this node's metrics port (Ray's agent)."""
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    port = ray._private.worker._global_node.metrics_export_port
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "ray_d2v_stage_seconds_count":
                counts[sample.labels["stage"]] = counts.get(sample.labels["stage"], 0) + sample.value
    return counts


def settled_stage_counts(quiet_s: float = 12.0, timeout_s: float = 120.0) -> dict[str, float]:
    """The counts once they stop moving (replicas push their metrics every few seconds)."""
    deadline = time.monotonic() + timeout_s
    last = stage_counts()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = stage_counts()
        if now == last:
            return now
        last = now
    return last


@dataclass
class LongJobs:
    outcome: Outcome
    jobs: int
    visibility_s: float
    shortest_job_s: float
    per_job: dict[str, float]  # stage -> executions per job, measured on one job before the faults
    executions: dict[str, float]  # stage -> executions during the run
    interrupted: int  # attempts a kill interrupted (sum over jobs of attempts - 1)
    reruns_outside_kills: list[str]  # jobs run again that no kill touched (must be none)
    injected: list[str]

    @property
    def extra(self) -> dict[str, float]:
        return {stage: self.executions.get(stage, 0) - self.jobs * n for stage, n in self.per_job.items()}

    @property
    def exact(self) -> bool:
        """Every stage ran jobs x stages times plus at most one per interrupted attempt."""
        return (not self.reruns_outside_kills and self.outcome.clean
                and all(0 <= extra <= self.interrupted for extra in self.extra.values()))

    def table(self) -> str:
        rows = [("stage", "per job", "expected (jobs x per job)", "executions", "extra", "interrupted attempts")]
        for stage, n in sorted(self.per_job.items()):
            rows.append((stage, f"{n:g}", f"{self.jobs * n:g}", f"{self.executions.get(stage, 0):g}",
                         f"{self.extra[stage]:g}", str(self.interrupted)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def long_jobs(farm: FaultFarm, n: int = 20, freeze_s: float = 10.0, redis_down_s: float = 5.0) -> LongJobs:
    """`n` jobs each longer than the queue's visibility timeout (the farm started with
    D2V_QUEUE_VISIBILITY_S short), with faults injected while they run: every running job
    delivered again (each second), the runner replica killed, S3 frozen longer than the lease,
    Redis killed and restarted. Counts every stage execution from the metrics."""
    from d2v.jobqueue import visibility_timeout_s

    visibility = visibility_timeout_s(farm.env)
    queue, stored = job_queue(farm), store_jobs(farm)
    # One job alone first: what one job costs in stage executions.
    before = settled_stage_counts()
    probe = Outcome("probe")
    farm.settle(probe, [farm.submit(probe, slow=True)])
    after = settled_stage_counts()
    per_job = {stage: after.get(stage, 0) - before.get(stage, 0) for stage in after}
    per_job = {stage: count for stage, count in per_job.items() if count}

    out = Outcome(f"{n} long jobs (visibility {visibility:g} s): duplicates, a runner kill, S3 frozen "
                  f"{freeze_s:g} s, Redis restarted")
    t0 = time.monotonic()
    ids = [farm.submit(out, slow=True) for _ in range(n)]
    injected, killed_while_running = [], set()
    stop = threading.Event()

    def duplicates() -> None:  # every running job, delivered again every second
        while not stop.wait(1.0):
            try:
                for job_id in queue.running_since():
                    queue.enqueue(job_id)
            except Exception:  # Redis restarting
                pass

    def running() -> set[str]:
        return {job_id for job_id in ids if (s := farm.status(job_id)) and s.get("status") == "running"}

    dup = threading.Thread(target=duplicates, daemon=True)
    dup.start()
    try:
        _wait_running(farm, ids[0])
        time.sleep(2)
        killed_while_running |= running()
        farm.kill_replicas("JobRunner")
        killed_while_running |= running()  # status.json may lag the claim by a beat
        injected.append(f"JobRunner killed with {sorted(killed_while_running)} running")
        time.sleep(8)
        farm.freeze_s3()
        time.sleep(freeze_s)
        farm.thaw_s3()
        injected.append(f"S3 frozen {freeze_s:g} s (lease {farm.farm_args['lease_s']} s)")
        time.sleep(5)
        farm.kill_redis()
        time.sleep(redis_down_s)
        farm.start_redis()
        injected.append(f"Redis killed, restarted after {redis_down_s:g} s")
        farm.settle(out, ids, timeout_s=600)
    finally:
        stop.set()
        dup.join(5)
    out.seconds = time.monotonic() - t0
    executions = settled_stage_counts()
    executions = {stage: executions.get(stage, 0) - after.get(stage, 0) for stage in per_job}
    interrupted, reruns = 0, []
    for job_id in ids:
        status = stored.get(job_id)
        if status.attempts > 1:
            interrupted += status.attempts - 1
            if job_id not in killed_while_running:
                reruns.append(f"{job_id}: {status.attempts} attempts")
    # How long each job ran (its last attempt, claim to end): the finished-job records.
    from datetime import datetime, timedelta, timezone

    records = stored.records(datetime.now(timezone.utc) - timedelta(hours=1))
    shortest = min((r.seconds for r in records if r.job_id in ids and r.seconds is not None), default=float("nan"))
    return LongJobs(out, n, visibility, shortest, per_job, executions, interrupted, reruns, injected)
