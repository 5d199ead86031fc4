"""The job lifecycle: the one place that knows a job's states, who runs it, and where its files are.

    queued --claim--> running --succeed--> succeeded
       |                 |--fail-------> failed --claim--> running   (a rerun of the same id)
       |                 |--release----> queued                       (a clean stop hands it back)
       |                 `--claim------> running                      (its owner went silent: taken over)
       `--fail--> failed                                              (its inputs never arrived)

Who runs a job: an attempt. Each claim starts one, named by `owner` ("farm:<replica>",
"cli:<host>:<pid>", ...) and a fresh `attempt_id` in status.json; `heartbeat_at` is refreshed
while it works (a `Heartbeat` thread). A running job whose heartbeat is older than its lease
has no live owner: anyone may claim it, whoever wrote it. The CLI, batch and the farm all go
through `Jobs`; the farm adds an atomic lock per job in Redis, held by one attempt's token
(`attempt_token`), since two consumers (or two threads of one) may be handed the same job.

Every write an attempt makes (heartbeat, hand-back, succeed, fail) is compare-and-set on
(owner, attempt): checked first against the fence (the Redis lock, renewed by the check) when
`Jobs` has one, else against status.json itself, and then written through a store whose calls
give up well within the lease. A stale attempt's write is refused (`StaleAttempt`, logged),
never applied: its runner stops. Where status.json decides (no fence: `d2v render`; a fence
whose lock is gone; the reconciler's `abandon`), the compare and the write are one step: the
write is conditional on the version that was read (`Store.put_if_version`: If-Match on S3, a
folder lock on a directory), so a write that lands in between makes it fail, not vanish.

The object store is the durable record. Keys (the bucket layout, see DESIGN.md):

    jobs/{id}/input.<ext> request.json depth.png status.json manifest.json video.mp4 poster.jpg fidelity.png
    active/{id}          one empty marker per unfinished job: what the reconciler lists
    cache/{content}.json content address of a request -> the job that rendered it (finished jobs only)
    recent/{tenant}/{newest-first time}-{id}  one empty marker per farm job, so GET /v1/jobs lists
                         a caller's latest jobs with one short listing, whatever the store's size
    depth/{content}.png  an estimated depth map (16-bit, brighter = nearer), by image bytes + depth model
    stats/{day}/{record} one empty object per finished job, its KPIs in the key (`JobRecord`):
                         what `d2v report` lists, a day at a time, without reading any job
    tenant-stats/{tenant}/stats/{day}/{record}   the same, per tenant: what its /v1/stats lists
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

from d2v.errors import D2VError, ObjectNotFoundError, StoreUnavailableError, user_error
from d2v.models import JobResult, JobStatus, Manifest, RenderRequest
from d2v.store import ABSENT, Store, VersionChanged, job_key, validate_job_id

# Names of a job's files under jobs/{id}/.
REQUEST = "request.json"
STATUS = "status.json"
MANIFEST = "manifest.json"
VIDEO = "video.mp4"
POSTER = "poster.jpg"
FIDELITY = "fidelity.png"
DEPTH = "depth.png"
LUT = "look.cube"  # the request's own 3D LUT, when its `look` names a .cube file
INPUT_PREFIX = "input."
ACTIVE_PREFIX = "active/"
CACHE_PREFIX = "cache/"
DEPTH_CACHE_PREFIX = "depth/"
RECENT_PREFIX = "recent/"
NO_TENANT = "_"  # the recent-jobs folder of a farm without API keys
_TIME_CEILING_MS = 10**13  # past the year 2286: inverted times keep 13 digits
STATS_PREFIX = "stats/"
TENANT_STATS_PREFIX = "tenant-stats/"  # tenant-stats/{tenant}/stats/{day}/{record}: one tenant's records

log = logging.getLogger("d2v.lifecycle")

UNFINISHED = ("queued", "running")
TRANSITIONS: dict[str, set[str]] = {
    "queued": {"running", "failed"},
    "running": {"running", "queued", "succeeded", "failed"},
    "failed": {"running"},
    "succeeded": {"running"},  # only a forced re-render (`d2v render --no-cache`)
}
DEFAULT_LEASE_S = 30.0
LEASE_ENV = "D2V_LEASE_S"  # a `d2v render` / `d2v batch` process's own lease (the farm's is its app arg lease_s)


def lease_setting(env: dict[str, str] | None = None) -> float:
    """The lease of this process's own jobs (`d2v render`, `d2v batch`): D2V_LEASE_S seconds,
    DEFAULT_LEASE_S when unset. A job whose process was killed is failed by a farm's
    reconciler once its heartbeat is two leases old, so a shorter lease frees it sooner (at
    one heartbeat every third of it)."""
    raw = (os.environ if env is None else env).get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_S
    try:
        lease_s = float(raw)
    except ValueError:
        lease_s = float("nan")
    if not 1.0 <= lease_s <= 3600.0:  # (NaN fails both)
        raise D2VError(f"{LEASE_ENV}={raw!r}: give the lease in seconds, from 1 to 3600 (unset: {DEFAULT_LEASE_S:g})")
    return lease_s


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class IllegalTransition(RuntimeError):
    """A bug in a caller: the lifecycle was asked for a move it does not allow."""


class StaleAttempt(RuntimeError):
    """An attempt that is no longer its job's tried to write the job's status: refused.
    Its runner must stop (another attempt runs the job, or the job has ended)."""


class Fence(Protocol):
    """What guards a farm attempt's writes (d2v.jobqueue.JobQueue): the job's lock."""

    def holds(self, job_id: str, token: str, lease_s: float) -> bool | None: ...


def attempt_token(status: JobStatus) -> str:
    """The attempt's name in the job's lock: owner and attempt id."""
    return f"{status.owner}#{status.attempt_id}"


def new_attempt_id() -> str:
    return secrets.token_hex(6)


def file_key(job_id: str, name: str) -> str:
    return job_key(job_id, name)


def input_key(job_id: str, extension: str) -> str:
    return job_key(job_id, INPUT_PREFIX + extension)


def depth_cache_key(content: str) -> str:
    """Where the depth stage keeps an estimate (`d2v.depth.depth_for`): `content` is the hex
    digest of the image's bytes and the depth model."""
    return f"{DEPTH_CACHE_PREFIX}{content}.png"


def new_job_id() -> str:
    """Random, unguessable: knowing a photo and a request says nothing about a farm job's id."""
    return secrets.token_hex(12)


def tenant_of(api_key: str | None) -> str | None:
    """Who submitted a job, as stored: a fingerprint of the API key, never the key itself."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:16] if api_key else None


def recent_key(tenant: str | None, job_id: str, at: float | None = None) -> str:
    """The index entry of a job: its tenant's folder, then the time counted down, so keys
    in S3's (lexicographic) order are newest first."""
    inverted = _TIME_CEILING_MS - int((time.time() if at is None else at) * 1000)
    return f"{RECENT_PREFIX}{tenant or NO_TENANT}/{inverted:013d}-{validate_job_id(job_id)}"


def process_owner(kind: str) -> str:
    """An owner name for this process: 'cli:host:pid'."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def has_live_owner(status: JobStatus, now: float | None = None) -> bool:
    """Running, with an owner whose last heartbeat is within the lease, unless the owner is a
    process of this machine that is gone (a `d2v render` killed: nobody need wait out its lease)."""
    if status.status != "running" or not status.owner or status.heartbeat_at is None:
        return False
    if (now or time.time()) - status.heartbeat_at > status.lease_s:
        return False
    return not _gone_here(status.owner)


def _gone_here(owner: str) -> bool:
    """Whether `owner` ('kind:host:pid', `process_owner`) names a process of this host that no
    longer exists. (A pid reused since by another process reads as alive: the lease decides.)"""
    _, host, pid = (owner.split(":") + ["", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # (another user's process: alive)
        return False
    return False


@dataclass(frozen=True)
class JobRecord:
    """One finished job, as `d2v report` counts it. Its fields are its key, so a report over
    10,000 jobs is ten LIST calls and no GETs:

        stats/2026-12-01/013502.<job_id>.succeeded.camera.zoom_in.4210.USD.1834

    (finished at 01:35:02 UTC; 4210 ms from claim to end; cost 1834 nano-USD; 'x' where
    unknown). A job rerun gets a record per ending; the report keeps the latest."""

    finished_at: datetime
    job_id: str
    status: str  # succeeded | failed (ours) | rejected, stopped (a failed job's `failure`: not ours)
    backend: str
    effect: str  # the effect rendered ('auto' resolved); for a failed job, the one asked for
    seconds: float | None  # the last attempt, claim to end
    currency: str | None = None
    cost: float | None = None

    def key(self) -> str:
        ms = "x" if self.seconds is None else str(round(self.seconds * 1000))
        cost = "x" if self.cost is None else str(round(self.cost * 1e9))
        return (f"{STATS_PREFIX}{self.finished_at:%Y-%m-%d}/{self.finished_at:%H%M%S}.{self.job_id}."
                f"{self.status}.{self.backend}.{self.effect}.{ms}.{self.currency or 'x'}.{cost}")

    @classmethod
    def from_key(cls, key: str) -> "JobRecord | None":
        """None for a key that is not a record (a stray object under stats/)."""
        try:
            day, name = key[len(STATS_PREFIX):].split("/")
            hms, job_id, status, backend, effect, ms, currency, cost = name.split(".")
            return cls(finished_at=datetime.strptime(f"{day} {hms}", "%Y-%m-%d %H%M%S").replace(tzinfo=timezone.utc),
                       job_id=job_id, status=status, backend=backend, effect=effect,
                       seconds=None if ms == "x" else int(ms) / 1000, currency=None if currency == "x" else currency,
                       cost=None if cost == "x" else int(cost) / 1e9)
        except ValueError:
            return None


CALLERS_MISTAKES = (413, 415, 422)  # too large, not an image, a request (or model setting) that cannot render


def failure_of(e: BaseException) -> str | None:
    """The kind of failure of a job that raised `e` (JobStatus.failure): 'stopped' by the user,
    'rejected' for the caller's own input (a D2VError whose status is one of CALLERS_MISTAKES);
    None: ours. Other 4xx inside a job are ours: a 404 or 400 there is an input the store lost
    (deployments.runner), a 409 another attempt."""
    if isinstance(e, KeyboardInterrupt):
        return "stopped"
    user = user_error(e)
    return "rejected" if user is not None and user.status_code in CALLERS_MISTAKES else None


@dataclass
class Claim:
    """What `Jobs.claim` answers: the job is now ours (`status`), or why not (`reason`)."""

    status: JobStatus | None
    reason: str = ""


class Jobs:
    """The lifecycle over a store: every status change of every job goes through here."""

    def __init__(self, store: Store, lease_s: float = DEFAULT_LEASE_S, fence: Fence | None = None):
        self.store, self.lease_s, self.fence = store, lease_s, fence
        self._claimed_at: dict[str, float] = {}  # job id -> when this process claimed it (generation time)

    @functools.cached_property
    def attempt_store(self) -> Store:
        """For an attempt's own writes: each call gives up within a sixth of the lease, so a
        check and the write after it land within the lease the check renewed, or not at all."""
        return self.store.bounded(max(0.5, self.lease_s / 6))

    # -- reading ----------------------------------------------------------------------

    def get(self, job_id: str) -> JobStatus | None:
        try:
            return JobStatus.model_validate_json(self.store.get_bytes(job_key(job_id, STATUS)))
        except ObjectNotFoundError:
            return None

    def recent(self, tenant: str | None, limit: int = 20) -> list[str]:
        """Ids of a tenant's latest farm jobs, newest first: one listing of at most `limit`
        index keys (no status reads; the caller reads the statuses it shows)."""
        keys = self.store.list(f"{RECENT_PREFIX}{tenant or NO_TENANT}/", limit=limit)
        return [key.rsplit("/", 1)[1].split("-", 1)[1] for key in keys]  # ids may hold '-' too

    def unfinished(self) -> list[str]:
        """Ids of the jobs not yet finished, from their markers (one listing, no status reads)."""
        return [key[len(ACTIVE_PREFIX):] for key in self.store.list(ACTIVE_PREFIX)]

    # -- moving -----------------------------------------------------------------------

    def _put(self, status: JobStatus, store: Store | None = None, version: str | None = None,
             claiming: bool = False) -> None:
        """Write status.json; with `version`, only if it is still the one read (else StaleAttempt:
        logged, but for a claim, where losing to another claimant is the normal outcome)."""
        key, data = job_key(status.job_id, STATUS), status.model_dump_json(indent=2).encode()
        if version is None:
            (store or self.store).put_bytes(key, data)
            return
        try:
            (store or self.store).put_if_version(key, data, version)
        except VersionChanged:
            if claiming:
                raise StaleAttempt(f"job {status.job_id}: another attempt claimed it first") from None
            self._refuse(status, "the job's status was written by someone else since it was read")

    def check_attempt(self, status: JobStatus) -> str | None:
        """Is the attempt `status` names still the job's? Raises StaleAttempt when not. With a
        fence, its lock decides (and is renewed): None. Without one, or when the lock had gone,
        the stored status must still be this attempt's, running: the version read, on which the
        write that follows is conditional."""
        held = None
        if self.fence is not None:
            try:
                held = self.fence.holds(status.job_id, attempt_token(status), self.lease_s)
            except Exception as e:  # Redis away: no other farm attempt can take the lock either
                log.info("job %s: fence not checked (%s); the store decides", status.job_id, e)
        if held is False:
            self._refuse(status, "another attempt holds the job's lock")
        if held:
            return None
        try:
            data, version = self.attempt_store.get_versioned(job_key(status.job_id, STATUS))
        except ObjectNotFoundError:
            self._refuse(status, "the job's status is gone")
        stored = JobStatus.model_validate_json(data)
        if (stored.status, stored.owner, stored.attempt_id) != ("running", status.owner, status.attempt_id):
            self._refuse(status, f"the job is {stored.status}"
                                 f"{f' (attempt {stored.attempt_id} of {stored.owner})' if stored.owner else ''}")
        return version

    @staticmethod
    def _refuse(status: JobStatus, why: str) -> None:
        log.warning("job %s: refused a write of attempt %s (%s): %s", status.job_id, status.attempt_id,
                    status.owner, why)
        raise StaleAttempt(f"job {status.job_id}: attempt {status.attempt_id} of {status.owner} is no longer "
                           f"the job's ({why}); its write was refused")

    def _write(self, status: JobStatus, to: str, *, checked: bool = False, version: str | None = None,
               claiming: bool = False) -> JobStatus:
        """Move the job to `to`. `checked`: an attempt's write that `check_attempt` has just
        passed; it goes through the bounded store, to land within the lease the check renewed.
        `version`: written only if status.json is still at it."""
        if to != status.status and to not in TRANSITIONS[status.status]:
            raise IllegalTransition(f"job {status.job_id}: {status.status} -> {to} is not allowed")
        was_unfinished = status.status in UNFINISHED
        status.status = to
        status.updated_at = now_iso()
        self._put(status, self.attempt_store if checked else None, version, claiming)
        # The marker follows the status: written before a job can be lost, removed after it is done.
        if to in UNFINISHED and not was_unfinished:
            self.store.put_bytes(ACTIVE_PREFIX + status.job_id, b"")
        elif to not in UNFINISHED:
            self.store.delete(ACTIVE_PREFIX + status.job_id)
        return status

    def create(self, job_id: str, *, queue: str | None = None, tenant: str | None = None,
               content: str | None = None) -> JobStatus:
        """A new queued job (its inputs are stored by the caller first)."""
        status = JobStatus(job_id=validate_job_id(job_id), status="queued", stage="queued", tenant=tenant,
                           content=content, queue=queue, lease_s=self.lease_s, created_at=now_iso(),
                           updated_at=now_iso())
        self._put(status)
        self.store.put_bytes(ACTIVE_PREFIX + job_id, b"")
        self.store.put_bytes(recent_key(tenant, job_id), b"")
        return status

    def claim(self, job_id: str, owner: str, *, rerun: bool = False, status: JobStatus | None = None,
              attempt_id: str | None = None) -> Claim:
        """Start an attempt of `owner` on the job, unless it is finished (a rerun of a finished
        job only with `rerun`) or another attempt is alive (this owner's own included: a
        duplicate delivery to the same replica is refused too). An id not in the store yet (a
        CLI render) is created running. `attempt_id`: the one whose token the caller has locked.

        Without `status` (no lock held: `d2v render`, batch), the claim is written only over
        the status.json it read, so of two takeovers of the same silent job exactly one wins."""
        version = None
        if status is None:
            try:
                data, version = self.store.get_versioned(job_key(job_id, STATUS))
                status = JobStatus.model_validate_json(data)
            except ObjectNotFoundError:
                version = ABSENT  # (of two renders of a new job started together, one creates it)
        fresh = status is None
        if fresh:
            status = JobStatus(job_id=validate_job_id(job_id), status="queued", created_at=now_iso())
        elif status.status == "succeeded" and not rerun:
            return Claim(None, "it has already succeeded")
        elif has_live_owner(status):
            ago = time.time() - (status.heartbeat_at or 0)
            return Claim(None, f"it is being run by {status.owner} (attempt {status.attempt_id}, last heartbeat "
                               f"{ago:.0f} s ago)")
        status.owner, status.heartbeat_at, status.lease_s = owner, time.time(), self.lease_s
        status.attempt_id = attempt_id or new_attempt_id()
        status.stage, status.progress, status.error, status.result, status.failure = "trajectory", 0.0, None, None, None
        status.attempts += 1
        if fresh:  # a stored queued job has its marker from `create`; _write adds it for the rest
            self.store.put_bytes(ACTIVE_PREFIX + job_id, b"")
        try:
            claimed = Claim(self._write(status, "running", version=version, claiming=True))
        except StaleAttempt:
            return Claim(None, "another attempt claimed it at the same moment")
        self._claimed_at[job_id] = time.monotonic()
        return claimed

    def _move(self, status: JobStatus, to: str, *, checked: bool = False, version: str | None = None,
              **changes) -> JobStatus:
        """Write `status` with `changes`, moved to `to`; `checked`: as the attempt `status` names
        (`check_attempt` first); `version`: only over the status.json read at that version. The
        caller's object takes the changes only once the write has landed (a failed write leaves
        it as it was, to fail it after)."""
        if to != status.status and to not in TRANSITIONS[status.status]:
            raise IllegalTransition(f"job {status.job_id}: {status.status} -> {to} is not allowed")
        if checked:
            version = self.check_attempt(status)
        moved = status.model_copy(update=changes)
        self._write(moved, to, checked=checked, version=version)
        for name, value in moved:
            setattr(status, name, value)
        return status

    def heartbeat(self, status: JobStatus, stage: str | None = None, progress: float | None = None) -> None:
        changes = {"heartbeat_at": time.time()}
        if stage is not None:
            changes["stage"] = stage
        if progress is not None:
            changes["progress"] = max(0.0, min(1.0, progress))
        self._move(status, "running", checked=True, **changes)

    def release(self, status: JobStatus, reason: str = "") -> JobStatus:
        """Hand a running job back (a clean stop, or a retry later): queued, no owner."""
        self._move(status, "queued", checked=True, owner=None, attempt_id=None, heartbeat_at=None, stage="queued",
                   progress=0.0, error=reason or None)
        self._claimed_at.pop(status.job_id, None)
        return status

    def succeed(self, status: JobStatus, result: JobResult, manifest: Manifest | None = None) -> JobStatus:
        """`manifest`: the job's, when the caller has it (else it is read from the store, for the record)."""
        checked = status.attempt_id is not None
        self._move(status, "succeeded", checked=checked, stage="done", progress=1.0, error=None, result=result,
                   owner=None, attempt_id=None, heartbeat_at=None)
        if status.content:
            self.remember(status.content, status.job_id)
        self._record(status, manifest=manifest)
        return status

    def fail(self, status: JobStatus, error: str, failure: str | None = None) -> JobStatus:
        """The attempt `status` names ends the job as failed (checked like every attempt's write).
        `failure`: 'rejected' or 'stopped' when it was not ours (`failure_of`)."""
        checked = status.attempt_id is not None
        self._move(status, "failed", checked=checked, error=error, owner=None, attempt_id=None, heartbeat_at=None,
                   failure=failure)
        self._record(status)
        return status

    def abandon(self, status: JobStatus, error: str, *, record: bool = True) -> JobStatus:
        """Fail a job that its attempt left (no live owner), or one never queued, as read in
        `status`: refused (StaleAttempt) when the stored job has moved since, e.g. a late
        heartbeat of its owner or a claim, up to the write itself (conditional on the version
        compared)."""
        try:
            data, version = self.store.get_versioned(job_key(status.job_id, STATUS))
            stored = JobStatus.model_validate_json(data)
        except ObjectNotFoundError:
            stored = version = None
        seen = (status.status, status.owner, status.attempt_id, status.heartbeat_at)
        if stored is None or (stored.status, stored.owner, stored.attempt_id, stored.heartbeat_at) != seen:
            self._refuse(status, f"it moved on since it was read (now {stored.status if stored else 'gone'})")
        self._move(status, "failed", version=version, error=error, owner=None, attempt_id=None, heartbeat_at=None)
        if record:  # not for a job that was never accepted (d2v.report counts what ran)
            self._record(status)
        # A farm attempt whose Redis lock is still its own writes without a version (the lock
        # decides): if it beat just after the write above, 'running' is back; the job then
        # keeps its marker, and the reconciler sees it again.
        again = self.get(status.job_id)
        if again is not None and again.status in UNFINISHED:
            self.store.put_bytes(ACTIVE_PREFIX + status.job_id, b"")
        return status

    # -- the finished-job records (d2v report) ------------------------------------------

    def _record(self, status: JobStatus, manifest: Manifest | None = None) -> None:
        """Index a job that just ended (`JobRecord`). Best effort: the job's own status is
        already written, and a report missing one job beats a job failing for a statistic."""
        claimed = self._claimed_at.pop(status.job_id, None)
        try:
            backend, effect, currency, cost = "unknown", "unknown", None, None
            if manifest is None and status.result is not None and status.result.manifest_key:
                manifest = Manifest.model_validate_json(self.store.get_bytes(status.result.manifest_key))
            if manifest is not None:
                backend, effect = manifest.backend, manifest.effect
                if manifest.cost is not None:
                    currency, cost = manifest.cost.currency, manifest.cost.total
            else:
                request = RenderRequest.model_validate_json(self.store.get_bytes(job_key(status.job_id, REQUEST)))
                backend, effect = request.backend, request.effect
        except Exception as e:  # no request stored (refused before), a store hiccup
            log.debug("job %s: its record has no backend/effect (%s)", status.job_id, e)
        seconds = time.monotonic() - claimed if claimed is not None else None
        how = status.failure if status.status == "failed" and status.failure else status.status
        record = JobRecord(datetime.now(timezone.utc), status.job_id, how, backend, effect, seconds, currency, cost)
        try:
            self.store.put_bytes(record.key(), b"")
            if status.tenant:  # the same record in the tenant's own folder: its /v1/stats lists only that
                self.store.put_bytes(TENANT_STATS_PREFIX + status.tenant + "/" + record.key(), b"")
        except Exception as e:
            log.warning("job %s: its report record was not written (%s)", status.job_id, e)

    def records(self, since: datetime, until: datetime | None = None, *, tenant: str | None = None,
                deadline: float | None = None) -> list[JobRecord]:
        """The finished jobs' records from `since` on (one listing per day), the latest per job:
        the farm's, or with `tenant` that tenant's own. `deadline` (time.monotonic()): past it,
        StoreUnavailableError instead of the next listing."""
        until = until or datetime.now(timezone.utc)
        folder = f"{TENANT_STATS_PREFIX}{tenant}/" if tenant else ""
        latest: dict[str, JobRecord] = {}
        day = since.date()
        while day <= until.date():
            if deadline is not None and time.monotonic() > deadline:
                raise StoreUnavailableError(f"the report over {(until - since).days + 1} days took too long "
                                            "(the store is slow or holds many jobs): ask for a shorter span")
            for key in self.store.list(f"{folder}{STATS_PREFIX}{day:%Y-%m-%d}/"):
                record = JobRecord.from_key(key[len(folder):])
                if record is not None and since.replace(microsecond=0) <= record.finished_at <= until:
                    latest[record.job_id] = record  # keys sort by time within a day, days in order
            day += timedelta(days=1)
        return list(latest.values())

    # -- the content cache ------------------------------------------------------------

    def remember(self, content: str, job_id: str) -> None:
        self.store.put_bytes(f"{CACHE_PREFIX}{content}.json", json.dumps({"job_id": job_id}).encode())

    def cached(self, content: str) -> JobStatus | None:
        """The finished job that rendered this content, if its results are still there."""
        try:
            job_id = json.loads(self.store.get_bytes(f"{CACHE_PREFIX}{content}.json"))["job_id"]
        except (ObjectNotFoundError, ValueError, KeyError, TypeError):
            return None
        status = self.get(job_id)
        if status is None or status.status != "succeeded" or status.result is None:
            return None
        return status if self.store.exists(status.result.video_key) else None

    def adopt_result(self, job_id: str, source: JobStatus, *, tenant: str | None, content: str | None) -> JobStatus:
        """A new job (its caller's own id) answered from a finished one: no render; its results
        copied under its own keys (a server-side copy on S3), its manifest naming it, so nothing
        in any answer names the job that rendered them (another tenant's, perhaps)."""
        job_id = validate_job_id(job_id)
        own, result = {}, source.result
        for field, name in (("video_key", VIDEO), ("poster_key", POSTER), ("fidelity_key", FIDELITY)):
            if result is not None and (key := getattr(result, field)) is not None:
                own[field] = job_key(job_id, name)
                self.store.copy(key, own[field])
        if result is not None and result.manifest_key is not None:
            manifest = Manifest.model_validate_json(self.store.get_bytes(source.result.manifest_key))
            own["manifest_key"] = job_key(job_id, MANIFEST)
            keys = {"video": own.get("video_key"), "poster": own.get("poster_key"),
                    "manifest": own["manifest_key"], "fidelity": own.get("fidelity_key")}
            manifest = manifest.model_copy(update={"job_id": job_id, "keys": {
                name: keys.get(name) or job_key(job_id, key.rsplit("/", 1)[-1]) for name, key in manifest.keys.items()}})
            self.store.put_bytes(own["manifest_key"], manifest.model_dump_json(indent=2).encode())
        status = JobStatus(job_id=job_id, status="succeeded", stage="done", progress=1.0,
                           result=result.model_copy(update=own) if result else None, tenant=tenant, content=content,
                           created_at=now_iso(), updated_at=now_iso(), cached_from=source.job_id)
        self._put(status)
        self.store.put_bytes(recent_key(tenant, job_id), b"")
        return status


class Heartbeat:
    """Refreshes a running attempt's heartbeat every third of its lease, on its own thread,
    so a stage that takes minutes (an SVD step loop, a long encode) never looks dead; progress
    reports since the last beat go with it (`progress`, or what `progress_source` answers). A
    failed write is retried on the next beat. A refused one (`StaleAttempt`: the job is no
    longer this attempt's) stops the beats and calls `on_lost`: the caller stops the attempt."""

    def __init__(self, jobs: Jobs, status: JobStatus, on_error: Callable[[Exception], None] | None = None,
                 on_lost: Callable[[StaleAttempt], None] | None = None,
                 progress_source: Callable[[], tuple[str, float] | None] | None = None):
        self.jobs, self.status, self.on_error, self.on_lost = jobs, status, on_error, on_lost
        self.progress_source = progress_source
        self.lost: StaleAttempt | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"d2v-heartbeat-{status.job_id}", daemon=True)

    def progress(self, stage: str, fraction: float) -> None:
        with self._lock:
            self.status.stage, self.status.progress = stage, max(0.0, min(1.0, fraction))

    def _run(self) -> None:
        period = max(0.5, self.jobs.lease_s / 3)
        while not self._stop.wait(period):
            seen = None
            if self.progress_source is not None:
                try:
                    seen = self.progress_source()
                except Exception:  # progress is best effort
                    seen = None
            with self._lock:
                if self._stop.is_set():  # stopped while waiting for the lock: the job is ending
                    return
                if seen is not None:
                    self.status.stage, self.status.progress = seen
                try:
                    self.jobs.heartbeat(self.status)
                except StaleAttempt as e:
                    self.lost = e
                    self._stop.set()
                except Exception as e:  # the store is away: the next beat tries again
                    if self.on_error:
                        self.on_error(e)
            if self.lost is not None:
                if self.on_lost:
                    self.on_lost(self.lost)
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # Under the lock: a beat in progress finishes first, and none starts after, so the
        # job's final status (written next by the caller) is never overwritten by a beat.
        with self._lock:
            self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
