"""The job runner: consumes the farm's job queue and runs each job through the stage DAG.

    ingress --enqueue(job id)--> Redis --> JobRunner.render(job id) (a Celery worker thread here)
        -> depth -> trajectory -> base -> interpolate -> upscale -> encode (DeploymentHandles)

A Serve deployment made a task consumer (`ray.serve.task_consumer`): each replica runs a
Celery worker that takes up to `max_ongoing_requests` jobs at once. Everything about a
job's state goes through the lifecycle (d2v.lifecycle): a job is claimed (status.json
owner + an atomic Redis lock), heartbeated while it runs, and succeeded, failed (the job's
own fault: no retry) or handed back to the queue (ours: a replica or the store away), where
Celery retries it with backoff and, out of retries, moves it to the dead-letter queue.

The reconciler (a thread in every replica) makes the object store the durable record: a
stored job that is unfinished with no live owner and not in the queue is enqueued again,
so a consumer killed mid-job, a lost Redis, or a restarted app loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from ray import serve

from d2v.errors import D2VError, one_line, user_error
from d2v.depth import depth_model_setting, planned_depth_source
from d2v.images import decode_image
from d2v.jobqueue import MAX_RETRIES, VISIBILITY_TIMEOUT_S, JobQueue
from d2v.lifecycle import DEPTH, INPUT_PREFIX, REQUEST, Jobs, file_key, has_live_owner
from d2v.models import JobStatus, parse_request
from d2v.pipeline import job_result
from d2v.stages import job_look, renders_final_frames
from d2v.store import store_from_env
from deployments.settings import FarmSettings
from deployments.telemetry import JobOutcome, job_ended, job_log, queue_depth, replica_logging

log = logging.getLogger("d2v.runner")
STAGE_TIMEOUT_S = 3600.0  # a stage call that has not answered in an hour is a stuck replica


class HandedBack(Exception):
    """Raised to the queue so it retries the job later (Celery's backoff): our fault, not the job's."""


def is_system_failure(exc: BaseException) -> bool:
    """Failures of the machinery (a replica died, was unreachable, was overloaded), as
    opposed to errors in the job itself: only these are worth another attempt."""
    import ray.exceptions as rex
    from ray.serve.exceptions import BackPressureError

    system = (rex.RayActorError, rex.ActorUnavailableError, rex.WorkerCrashedError, rex.NodeDiedError,
              rex.OutOfMemoryError, rex.ObjectLostError, rex.GetTimeoutError, BackPressureError, ConnectionError,
              TimeoutError)
    seen = exc
    while seen is not None:
        if isinstance(seen, system):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False


def _retries_so_far() -> int:
    from celery import current_task

    return int(getattr(getattr(current_task, "request", None), "retries", 0) or 0)


class JobRunner:
    """Made a task consumer in deployments.app (the queue's name is per app)."""

    def __init__(self, depth, trajectory, base, interpolate, upscale, encode, settings: dict | None = None):
        replica_logging()
        self.depth, self.trajectory, self.base, self.interpolate, self.upscale, self.encode = (
            depth, trajectory, base, interpolate, upscale, encode)
        self.depth_model = depth_model_setting()
        self.settings = FarmSettings.from_args(settings)
        self.store = store_from_env()
        self.jobs = Jobs(self.store, self.settings.lease_s)
        self.queue = JobQueue(self.settings.queue)
        try:
            self.owner = "farm:" + serve.get_replica_context().replica_id.unique_id
        except Exception:
            self.owner = "farm:" + uuid.uuid4().hex[:12]
        self.in_flight: dict[str, JobStatus] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="d2v-keeper", daemon=True)
        self._keeper.start()

    # -- one job ----------------------------------------------------------------------

    def render(self, job_id: str) -> str:
        """The queue's task (registered as d2v.render in deployments.app). Returns how it
        ended; raises HandedBack for the queue to retry it later."""
        status = self._claim(job_id)
        if status is None:
            return "skipped"
        started = time.monotonic()
        job_log(log, job_id).info("job %s: started (attempt %d)", job_id, status.attempts)
        request = None
        try:
            request = parse_request(self.store.get_bytes(file_key(job_id, REQUEST)))
            manifest = self._pipeline(job_id, status, request)
        except Exception as e:
            self._forget(job_id)
            try:
                return self._after_failure(status, e)
            finally:  # failed, or handed back to the queue: counted either way
                self._ended(status, started, request, reason=type(user_error(e) or e).__name__)
        self._forget(job_id)
        self.jobs.succeed(status, job_result(manifest), manifest=manifest)
        self._let_go(job_id)
        self._ended(status, started, manifest)
        return "succeeded"

    def _ended(self, status: JobStatus, started: float, source=None, reason: str | None = None) -> None:
        """Log and count how an attempt ended (deployments.telemetry). `source`: the manifest
        (the effect `auto` chose) or else the request, for the backend and effect."""
        how = "retried" if status.status == "queued" else status.status
        seconds = time.monotonic() - started
        job_log(log, status.job_id).info("job %s: %s after %.2f s%s", status.job_id, how, seconds,
                                         f": {status.error}" if status.error else "")
        job_ended(JobOutcome(how, getattr(source, "backend", "unknown"), getattr(source, "effect", "unknown"),
                             self.settings.queue, seconds, reason=reason,
                             manifest=source if how == "succeeded" else None))

    def _claim(self, job_id: str) -> JobStatus | None:
        """The job, now ours; None when it is finished or another live owner runs it."""
        status = self.jobs.get(job_id)  # the store away: raises, and the queue retries
        if status is None or status.status not in ("queued", "running"):
            self.queue.done(job_id)
            return None
        if not self.queue.lock(job_id, self.owner, self.settings.lease_s):
            return None  # another consumer has it; its own message settles the job
        if status.status == "running" and status.attempts >= self.settings.max_attempts:
            # Its runners keep dying with it (a replica killed, out of memory): stop trying.
            self.jobs.fail(status, f"gave up after {status.attempts} attempts: its runner stopped during "
                                   f"'{status.stage}' and did not come back")
            job_log(log, job_id).warning("job %s: %s", job_id, status.error)
            self._let_go(job_id)
            job_ended(JobOutcome("failed", "unknown", "unknown", self.settings.queue, 0.0, reason="GaveUp"))
            return None
        claim = self.jobs.claim(job_id, self.owner, status=status)
        if claim.status is None:
            self.queue.unlock(job_id, self.owner)
            job_log(log, job_id).info("job %s: not taken (%s)", job_id, claim.reason)
            return None
        with self._lock:
            self.in_flight[job_id] = claim.status
        self.queue.started(job_id)
        return claim.status

    def _forget(self, job_id: str) -> None:
        """No more heartbeats for this job. Taken under the lock a heartbeat holds while it
        writes, so none lands after the final status (it would undo it)."""
        with self._lock:
            self.in_flight.pop(job_id, None)

    def _after_failure(self, status: JobStatus, e: Exception) -> str:
        job_id = status.job_id
        user = user_error(e)
        reason = str(user) if user is not None else one_line(e)
        if user is not None and user.status_code < 500:  # the job's own fault: no retry
            self.jobs.fail(status, reason)
            self._let_go(job_id)
            return "failed"
        ours = is_system_failure(e) or user is not None  # a 503 from a stage: the store was away
        if ours and status.attempts < self.settings.max_attempts and _retries_so_far() < MAX_RETRIES:
            job_log(log, job_id).warning("job %s: attempt %d failed (%s); handing it back to the queue", job_id,
                                         status.attempts, reason)
            self.jobs.release(status, f"retrying after: {reason}")
            self.queue.stopped(job_id)
            self.queue.unlock(job_id, self.owner)
            raise HandedBack(reason) from None
        self.jobs.fail(status, f"failed after {status.attempts} attempt(s) in stage '{status.stage}': {reason}")
        self._let_go(job_id)
        if ours and _retries_so_far() >= MAX_RETRIES:
            raise HandedBack(reason) from None  # the queue's retries are spent: it keeps it in its dead letters
        if not ours:
            job_log(log, job_id).error("job %s: failed with an internal error", job_id, exc_info=e)
        return "failed"

    def _let_go(self, job_id: str) -> None:
        """Best effort: with Redis away the lock lapses by itself and the reconciler drops
        the queue's note of a finished job."""
        self.queue.finished(job_id)
        try:
            self.queue.done(job_id)
            self.queue.unlock(job_id, self.owner)
        except D2VError as e:
            job_log(log, job_id).warning("job %s: finished, but the queue did not hear it (%s)", job_id, e)

    def _inputs(self, job_id: str):
        inputs = self.store.list(f"jobs/{job_id}/{INPUT_PREFIX}")
        if not inputs:
            raise D2VError(f"job {job_id} has no stored input image")
        image_bytes = self.store.get_bytes(inputs[0])
        depth_key = file_key(job_id, DEPTH)
        depth_bytes = self.store.get_bytes(depth_key) if self.store.exists(depth_key) else None
        return image_bytes, decode_image(image_bytes), depth_bytes

    def _pipeline(self, job_id: str, status: JobStatus, request):
        from d2v.pipeline import resolve_backend

        # `auto` renders with the best base this farm runs (d2v.bases.choose_backend).
        request, _ = resolve_backend(request, self.settings.base_models())
        image_bytes, image, depth_bytes = self._inputs(job_id)
        # A .cube look missing from the store (jobs/{id}/look.cube) or malformed fails the job
        # here, before any stage runs; the stages that grade read it from the store again.
        job_look(request, self.store, job_id)
        depth = {}  # where the depth came from, for the manifest
        if planned_depth_source(request, depth_given=depth_bytes is not None, model=self.depth_model) == "estimated":
            # The depth stage first (its estimate is cached by image): the planner and the
            # renderer take it as they take a depth map the user sent.
            self.queue.report(job_id, "depth", 0.0)
            depth = self.depth.estimate.remote(image, image_bytes, request).result(timeout_s=STAGE_TIMEOUT_S)
            depth_bytes = depth.pop("depth_png")  # the rest (source, model, usage) goes to the manifest
        # Each call gets the previous call's DeploymentResponse: Serve passes the result along
        # between replicas without a round trip through this one. Only the end is awaited (on
        # this worker thread, never an event loop).
        trajectory = self.trajectory.plan.remote(request, image.width, image.height, depth_bytes is not None)
        if renders_final_frames(request):
            # Camera jobs: the base replica streams frames into the encoder and stores the results.
            final = self.base.render_final.remote(job_id, image, depth_bytes, request, trajectory, **depth)
        else:
            clip = self.base.render.remote(job_id, image, depth_bytes, request, trajectory)
            clip = self.interpolate.retime.remote(clip, request)
            clip = self.upscale.resize.remote(clip, request)
            final = self.encode.encode.remote(job_id, clip, request, trajectory, image, depth_bytes, **depth)
        return final.result(timeout_s=STAGE_TIMEOUT_S)

    # -- heartbeats and the reconciler --------------------------------------------------

    def _keep(self) -> None:
        beat_every = max(0.5, self.settings.lease_s / 3)
        next_reconcile = 0.0
        while not self._stop.wait(beat_every):
            self._beat()
            if time.monotonic() >= next_reconcile:
                try:
                    self.reconcile()
                except Exception as e:  # the store or Redis away: the next pass tries again
                    log.warning("reconcile pass failed: %s", e)
                next_reconcile = time.monotonic() + self.settings.reconcile_s

    def _beat(self) -> None:
        with self._lock:
            running = list(self.in_flight.values())
        for status in running:
            try:
                if (seen := self.queue.progress(status.job_id)) is not None:
                    status.stage, status.progress = seen
                self.queue.lock(status.job_id, self.owner, self.settings.lease_s)  # renews our own
                with self._lock:
                    if status.job_id in self.in_flight:  # not finished meanwhile (see _forget)
                        self.jobs.heartbeat(status)
            except Exception as e:
                job_log(log, status.job_id).warning("job %s: heartbeat failed (%s); next beat retries", status.job_id, e)
        try:  # the queue's depth, for the gauges (every runner reports it; dashboards take the max)
            queue_depth(self.settings.queue, self.queue.waiting(), len(self.queue.running_since()))
        except Exception as e:
            log.debug("queue depth not measured: %s", e)

    def reconcile(self) -> int:
        """Enqueue every stored unfinished job of this queue that nobody runs and the queue
        does not hold. Returns how many it enqueued."""
        enqueued, running = self.queue.enqueued_since(), self.queue.running_since()
        unfinished = self.jobs.unfinished()
        for job_id in (set(enqueued) | set(running)) - set(unfinished):
            self.queue.done(job_id)  # finished while the queue was away: not waiting any more
        now, count = time.time(), 0
        for job_id in unfinished:
            # Only what the queue cannot vouch for is read from the store: a claimed job whose
            # consumer's lock lapsed, one waiting too long, one the queue never heard of.
            if job_id in running:
                if self.queue.locked(job_id):
                    continue
            elif job_id in enqueued and now - enqueued[job_id] < VISIBILITY_TIMEOUT_S * 2:
                continue
            status = self.jobs.get(job_id)
            if status is None or has_live_owner(status, now):
                continue
            if status.queue is None:
                self._abandoned_render(status, now)
                continue
            if status.queue != self.settings.queue or self.queue.locked(job_id):
                continue  # another app's job, or one a consumer holds
            # A duplicate message is harmless: the claim settles it.
            job_log(log, job_id).warning("job %s: %s with no live owner; enqueueing it again", job_id, status.status)
            self.queue.stopped(job_id)
            self.queue.enqueue(job_id)
            count += 1
        return count

    def _abandoned_render(self, status: JobStatus, now: float) -> None:
        """A `d2v render` or batch job whose process stopped heartbeating (killed): failed
        with the reason, never left 'running'. Rendering it again takes it over."""
        if status.status != "running" or now - (status.heartbeat_at or 0) < 2 * status.lease_s:
            return
        job_log(log, status.job_id).warning("job %s: its runner %s stopped; marking it failed", status.job_id,
                                            status.owner)
        self.jobs.fail(status, f"its runner ({status.owner or 'unknown'}) stopped during '{status.stage}' "
                               "and did not come back; render it again to resume")

    def check_health(self) -> None:
        if not self._keeper.is_alive():
            raise RuntimeError("the heartbeat and reconcile thread stopped")

    def __del__(self) -> None:
        """A clean stop: hand unfinished jobs back, so another replica (or this app after a
        restart) runs them without waiting for a lease to run out."""
        self._stop.set()
        with self._lock:
            running = list(self.in_flight.values())
        for status in running:
            try:
                self.jobs.release(status, "its replica stopped; queued again")
                self.queue.unlock(status.job_id, self.owner)
                self.queue.enqueue(status.job_id)
            except Exception as e:
                job_log(log, status.job_id).warning("job %s: could not hand it back (%s); the reconciler will",
                                                    status.job_id, e)
