"""The job registry: one detached Ray actor per store that owns every job's status.

Why an actor: status changes come from the ingress and from stage replicas at once;
one actor serialises them (no lost updates), answers status reads from memory, and
hands out leases so that a job whose runner died is picked up again, not left
"running" forever.

Why nothing is lost: every change is written through to the store
(`jobs/{id}/status.json`), and the set of unfinished jobs to `registry/active.json`.
The actor restarts itself when it dies (max_restarts=-1) and reloads both.

Leases: a runner (an ingress replica) claims a job and renews the lease while it
works. A job whose lease ran out is an orphan; `claim_orphans` hands it to a live
runner, which retries it. Attempts are bounded: past `max_attempts` the job fails with
the last error.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

import ray

from d2v.errors import JobNotFoundError, ObjectNotFoundError
from d2v.models import JobResult, JobStatus
from d2v.stages import now_iso
from d2v.store import Store, job_key, store_from_env

ACTIVE_KEY = "registry/active.json"
NAMESPACE = "d2v"


class JobRegistryImpl:
    def __init__(self, store: Store | dict | None = None, *, lease_s: float = 30.0, max_attempts: int = 3):
        # A dict is store settings (see d2v.store.store_settings): what crosses to an actor.
        self.store = store if isinstance(store, Store) else store_from_env(store)
        self.lease_s, self.max_attempts = lease_s, max_attempts
        self.jobs: dict[str, JobStatus] = {}
        self.leases: dict[str, tuple[str, float]] = {}  # job id -> (owner, expires at)
        self._last_write: dict[str, float] = {}
        self._load_active()

    # -- persistence -------------------------------------------------------------------

    def _load_active(self) -> None:
        try:
            active = json.loads(self.store.get_bytes(ACTIVE_KEY))
        except ObjectNotFoundError:
            return
        for job_id in active:
            try:
                self.jobs[job_id] = JobStatus.model_validate_json(self.store.get_bytes(job_key(job_id, "status.json")))
            except ObjectNotFoundError:
                continue
        # Leases did not survive the restart: give the old runners one lease period to
        # renew before their jobs count as orphans.
        deadline = time.time() + self.lease_s
        for job_id in self.jobs:
            self.leases[job_id] = ("unknown", deadline)

    def _persist(self, status: JobStatus, *, active_changed: bool = False) -> None:
        status.updated_at = now_iso()
        self.store.put_bytes(job_key(status.job_id, "status.json"), status.model_dump_json(indent=2).encode())
        self._last_write[status.job_id] = time.monotonic()
        if active_changed:
            active = sorted(j for j, s in self.jobs.items() if s.status in ("queued", "running"))
            self.store.put_bytes(ACTIVE_KEY, json.dumps(active).encode())

    def _forget_if_done(self, job_id: str) -> None:
        if self.jobs[job_id].status in ("succeeded", "failed"):
            self.leases.pop(job_id, None)

    # -- the API -----------------------------------------------------------------------

    def submit(self, job_id: str, owner: str) -> tuple[JobStatus, bool]:
        """Queue a job and lease it to `owner`. Returns (status, is_new): an existing
        unfinished or finished job is returned as it is, not queued twice."""
        existing = self.get(job_id)
        if existing is not None and existing.status != "failed" and not self._abandoned(existing):
            return existing, False
        status = JobStatus(job_id=job_id, status="queued", stage="queued", progress=0.0)
        self.jobs[job_id] = status
        self.leases[job_id] = (owner, time.time() + self.lease_s)
        self._persist(status, active_changed=True)
        return status, True

    def _abandoned(self, status: JobStatus) -> bool:
        """Queued or running in the store, run by nobody in this farm (a `d2v render` or batch
        task that was killed) and silent for longer than a lease: anyone may take it over."""
        if status.job_id in self.jobs or status.status not in ("queued", "running"):
            return False
        try:
            updated = datetime.fromisoformat(status.updated_at or "").timestamp()
        except ValueError:
            return True
        return time.time() - updated > self.lease_s

    def get(self, job_id: str) -> JobStatus | None:
        if job_id in self.jobs:
            return self.jobs[job_id]
        try:
            return JobStatus.model_validate_json(self.store.get_bytes(job_key(job_id, "status.json")))
        except ObjectNotFoundError:
            return None

    def require(self, job_id: str) -> JobStatus:
        """For the runner's own calls, where a missing job is a bug."""
        status = self.get(job_id)
        if status is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return status

    def start_attempt(self, job_id: str, owner: str) -> JobStatus:
        status = self.require(job_id)
        was_active = status.status in ("queued", "running")
        status.status, status.stage, status.progress, status.error = "running", "trajectory", 0.0, None
        status.attempts += 1
        self.jobs[job_id] = status
        self.leases[job_id] = (owner, time.time() + self.lease_s)
        # queued -> running leaves the set of unfinished jobs as it was: one write, not two.
        self._persist(status, active_changed=not was_active)
        return status

    def progress(self, job_id: str, stage: str, fraction: float) -> None:
        """Cheap and frequent: kept in memory, written through at most twice a second."""
        status = self.jobs.get(job_id)
        if status is None or status.status != "running":
            return
        status.stage, status.progress = stage, max(0.0, min(1.0, fraction))
        if time.monotonic() - self._last_write.get(job_id, 0.0) > 0.5:
            self._persist(status)

    def renew(self, owner: str, job_ids: list[str]) -> None:
        expires = time.time() + self.lease_s
        for job_id in job_ids:
            if job_id in self.jobs and self.jobs[job_id].status in ("queued", "running"):
                self.leases[job_id] = (owner, expires)

    def succeed(self, job_id: str, result: dict) -> JobStatus:
        status = self.require(job_id)
        status.status, status.stage, status.progress, status.error = "succeeded", "done", 1.0, None
        status.result = JobResult.model_validate(result)
        self.jobs[job_id] = status
        self._persist(status, active_changed=True)
        self._forget_if_done(job_id)
        return status

    def fail(self, job_id: str, error: str) -> JobStatus:
        status = self.require(job_id)
        status.status, status.error = "failed", error
        self.jobs[job_id] = status
        self._persist(status, active_changed=True)
        self._forget_if_done(job_id)
        return status

    def claim_orphans(self, owner: str, limit: int = 4) -> list[str]:
        """Unfinished jobs whose lease ran out, now leased to `owner` (who must run them).
        Jobs out of attempts are failed here instead, with the reason."""
        now = time.time()
        claimed = []
        for job_id, status in list(self.jobs.items()):
            if status.status not in ("queued", "running"):
                continue
            holder, expires = self.leases.get(job_id, ("unknown", 0.0))
            if expires > now:
                continue
            if status.attempts >= self.max_attempts:
                self.fail(job_id, f"gave up after {status.attempts} attempts: its worker stopped during "
                                  f"'{status.stage}' and did not come back")
                continue
            if len(claimed) < limit:
                self.leases[job_id] = (owner, now + self.lease_s)
                claimed.append(job_id)
        return claimed

    def unfinished(self) -> list[str]:
        return sorted(j for j, s in self.jobs.items() if s.status in ("queued", "running"))


def registry_name(settings: dict[str, str]) -> str:
    """One registry per store: apps that write to different stores never share one."""
    where = settings.get("D2V_S3_ENDPOINT", "") + "/" + settings.get("D2V_S3_BUCKET", "d2v") \
        if settings.get("D2V_S3_ENDPOINT") else settings.get("D2V_DATA_DIR", "")
    return "d2v-job-registry-" + hashlib.sha256(where.encode()).hexdigest()[:12]


JobRegistry = ray.remote(JobRegistryImpl)


def get_registry(settings: dict[str, str], **kwargs):
    """The registry actor of the store these settings name, created on first use.
    Detached: it outlives the Serve app that created it, so an app restart finds its
    jobs again."""
    return JobRegistry.options(
        name=registry_name(settings),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        # On the head node: a 0-CPU actor could land on a GPU worker and keep it from
        # ever scaling down.
        resources={"node:__internal_head__": 0.001},
        max_restarts=-1,
        max_task_retries=-1,
        max_concurrency=1,
    ).remote(settings, **kwargs)
