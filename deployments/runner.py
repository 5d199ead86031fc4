"""The job runner: consumes the farm's job queue and runs each job through the stage DAG.

    ingress --enqueue(job id)--> Redis --> JobRunner.render(job id) (a Celery worker thread here)
        -> depth -> trajectory -> base -> interpolate -> upscale -> encode (DeploymentHandles,
           called from the runner's own event loop thread: StageCalls)

A Serve deployment made a task consumer (`ray.serve.task_consumer`): each replica runs a
Celery worker that takes up to `max_ongoing_requests` jobs at once. Everything about a
job's state goes through the lifecycle (d2v.lifecycle). Each delivery that finds work
starts an `Attempt`: a fresh attempt id, the job's Redis lock taken with the attempt's token
(replica + attempt id), then the claim in status.json. Every later write of the attempt
(heartbeat, hand-back, succeeded, failed) first checks that the lock is still its own
(renewing it), so a runner that lost its job cannot write over the one that has it.

One job, one render: a delivery of a job that is finished, or running with a live owner
(another replica's attempt or one of this replica's own), is dropped without touching the
job; one whose lock another attempt holds is dropped too. Messages are acknowledged when
the task starts (d2v.jobqueue), so a running job is not redelivered by the queue itself.

Heartbeats run on a thread per attempt (d2v.lifecycle.Heartbeat), each store call bounded
below the lease; a beat that is refused (the lock is another attempt's) stops the attempt:
its stage calls are cancelled and it writes nothing more. The job ends succeeded, failed
(the job's own fault: no retry) or handed back to the queue (ours: a replica or the store
away), where Celery retries it with backoff and, out of retries, moves it to the dead letters.

The reconciler (its own thread in every replica) makes the object store the durable record:
a stored job that is unfinished with no live owner and not in the queue is enqueued again,
so a consumer killed mid-job, a lost Redis, or a restarted app loses nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid

from ray import serve

from d2v.errors import D2VError, one_line, user_error
from d2v.depth import planned_depth_source
from d2v.images import decode_image
from d2v.jobqueue import MAX_RETRIES, JobQueue, job_timeout_s
from d2v.lifecycle import (
    DEPTH, INPUT_PREFIX, MANIFEST, REQUEST, UNFINISHED, Heartbeat, Jobs, StaleAttempt, attempt_token, failure_of,
    file_key, has_live_owner,
    new_attempt_id,
)
from d2v.models import JobStatus, parse_request
from d2v.pipeline import job_result
from d2v.stages import job_look, renders_final_frames
from d2v.store import store_from_env
from deployments.settings import FarmSettings
from deployments.telemetry import JobOutcome, job_ended, job_log, queue_depth, replica_logging

log = logging.getLogger("d2v.runner")
QUEUED_RECHECK_S = 600.0  # a job the queue says is waiting this long is enqueued again (its message may be lost)
FINAL_WRITE_PATIENCE_S = 120.0  # a finished job's "succeeded" is retried this long (the store away) before handing back


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


class StageCalls:
    """Sends this replica's stage calls from one event loop thread of its own; the worker
    threads only wait on the responses.

    Why: Ray Serve (2.60) counts a call sent from a thread with no running event loop (a
    Celery worker's) as queued at the handle only while it is being routed, not while it
    waits for a replica: six jobs waiting for one base replica read as one or two ongoing
    requests, so the base stage barely autoscaled (tests/test_autoscale.py). Sent from an
    event loop, the same six read as six (bench/handle_queue_metrics.py shows both)."""

    def __init__(self):
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="d2v-stage-calls", daemon=True).start()

    def send(self, method, *args, **kwargs):
        """`method.remote(*args, **kwargs)` on the loop; returns its DeploymentResponse."""
        sent: concurrent.futures.Future = concurrent.futures.Future()

        def remote() -> None:
            try:
                sent.set_result(method.remote(*args, **kwargs))
            except BaseException as e:  # handed to the worker thread that asked
                sent.set_exception(e)

        self._loop.call_soon_threadsafe(remote)
        return sent.result()


class Attempt:
    """One claim of a job by this replica: its status (owner + attempt id) and the stage
    calls in flight, cancelled when the attempt is lost."""

    def __init__(self, status: JobStatus):
        self.status = status
        # Fixed at the claim: the status forgets its owner and attempt id when the job ends.
        self.attempt_id, self.token = status.attempt_id, attempt_token(status)
        self.lost: StaleAttempt | None = None
        self._calls: list = []
        self._lock = threading.Lock()

    @property
    def job_id(self) -> str:
        return self.status.job_id

    def call(self, response):
        """A stage call of this attempt (a DeploymentResponse): cancelled at once if the attempt is lost."""
        with self._lock:
            self._calls.append(response)
            lost = self.lost
        if lost is not None:
            response.cancel()
            raise lost
        return response

    def stop(self, why: StaleAttempt) -> None:
        """The job is no longer ours (a refused heartbeat): cancel every stage call."""
        with self._lock:
            self.lost = why
            calls = list(self._calls)
        job_log(log, self.job_id).warning("job %s: %s; cancelling its stage calls", self.job_id, why)
        for response in calls:
            try:
                response.cancel()
            except Exception:  # already finished
                pass


class JobRunner:
    """Made a task consumer in deployments.app (the queue's name is per app)."""

    def __init__(self, depth, trajectory, base, interpolate, upscale, encode, settings: dict | None = None):
        replica_logging()
        self.depth, self.trajectory, self.base, self.interpolate, self.upscale, self.encode = (
            depth, trajectory, base, interpolate, upscale, encode)
        self.settings = FarmSettings.from_args(settings)
        self.depth_model = self.settings.depth()
        self.store = store_from_env()
        self.queue = JobQueue(self.settings.queue)
        self.jobs = Jobs(self.store, self.settings.lease_s, fence=self.queue)
        self.job_timeout_s = job_timeout_s()
        try:
            self.owner = "farm:" + serve.get_replica_context().replica_id.unique_id
        except Exception:
            self.owner = "farm:" + uuid.uuid4().hex[:12]
        self.in_flight: dict[str, Attempt] = {}  # attempt token -> attempt
        self.stage_calls = StageCalls()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reconciler = threading.Thread(target=self._reconcile_loop, name="d2v-reconciler", daemon=True)
        self._reconciler.start()

    # -- one job ----------------------------------------------------------------------

    def render(self, job_id: str) -> str:
        """The queue's task (registered as d2v.render in deployments.app). Returns how it
        ended; raises HandedBack for the queue to retry it later."""
        attempt = self._claim(job_id)
        if attempt is None:
            return "skipped"
        status = attempt.status
        started = time.monotonic()
        job_log(log, job_id).info("job %s: started (attempt %d, %s)", job_id, status.attempts, status.attempt_id)
        request = manifest = None
        with self._lock:
            self.in_flight[attempt.token] = attempt
        try:
            beat = Heartbeat(self.jobs, status, on_lost=attempt.stop, progress_source=lambda: self.queue.progress(job_id),
                             on_error=lambda e: job_log(log, job_id).warning(
                                 "job %s: heartbeat failed (%s); the next beat retries", job_id, one_line(e)))
            with beat:
                request = parse_request(self.store.get_bytes(file_key(job_id, REQUEST)))
                manifest = self._pipeline(job_id, attempt, request)
            if beat.lost is not None:
                raise beat.lost
            self._succeed(attempt, manifest)
        except Exception as e:
            try:
                return self._after_failure(attempt, e)
            finally:  # failed, handed back or lost: counted either way
                self._ended(status, started, request, reason=type(user_error(e) or e).__name__)
        finally:
            with self._lock:
                self.in_flight.pop(attempt.token, None)
        self._let_go(attempt)
        self._ended(status, started, manifest)
        return "succeeded"

    def _succeed(self, attempt: Attempt, manifest) -> None:
        """The attempt's last write. A store that is away is waited out (each try renews the
        lock, so the job stays ours): handing a rendered job back would render it again."""
        deadline = time.monotonic() + FINAL_WRITE_PATIENCE_S
        while True:
            try:
                self.jobs.succeed(attempt.status, job_result(manifest), manifest=manifest)
                return
            except StaleAttempt:
                raise
            except Exception as e:
                if time.monotonic() > deadline:
                    raise
                job_log(log, attempt.job_id).warning("job %s: rendered, but 'succeeded' was not written (%s); "
                                                     "retrying", attempt.job_id, one_line(e))
                time.sleep(1.0)

    def _ended(self, status: JobStatus, started: float, source=None, reason: str | None = None) -> None:
        """Log and count how an attempt ended (deployments.telemetry). `source`: the manifest
        (the effect `auto` chose) or else the request, for the backend and effect."""
        how = {"queued": "retried", "running": "lost"}.get(status.status, status.failure or status.status)
        seconds = time.monotonic() - started
        job_log(log, status.job_id).info("job %s: %s after %.2f s%s", status.job_id, how, seconds,
                                         f": {status.error}" if status.error else "")
        job_ended(JobOutcome(how, getattr(source, "backend", "unknown"), getattr(source, "effect", "unknown"),
                             self.settings.queue, seconds, reason=reason,
                             manifest=source if how == "succeeded" else None))

    def _claim(self, job_id: str) -> Attempt | None:
        """A new attempt on the job, now ours; None (the job untouched) when it is finished,
        running with a live owner, or locked by another attempt: a duplicate delivery."""
        status = self.jobs.get(job_id)  # the store away: raises, and the queue retries
        if status is None or status.status not in UNFINISHED:
            self.queue.done(job_id)
            return None
        if has_live_owner(status):
            job_log(log, job_id).info("job %s: dropped a duplicate delivery (attempt %s of %s is running)", job_id,
                                      status.attempt_id, status.owner)
            return None
        attempt_id = new_attempt_id()
        token = f"{self.owner}#{attempt_id}"
        if not self.queue.lock(job_id, token, self.settings.lease_s):
            job_log(log, job_id).info("job %s: dropped a duplicate delivery (another attempt holds its lock)", job_id)
            return None
        try:
            status = self.jobs.get(job_id)  # read again under the lock: what it says now is what counts
            if status is None or status.status not in UNFINISHED or has_live_owner(status):
                self.queue.unlock(job_id, token)
                return None
            if status.status == "running" and status.attempts >= self.settings.max_attempts:
                # Its runners keep dying with it (a replica killed, out of memory): stop trying.
                self.jobs.abandon(status, f"gave up after {status.attempts} attempts: its runner stopped during "
                                          f"'{status.stage}' and did not come back")
                job_log(log, job_id).warning("job %s: %s", job_id, status.error)
                self.queue.finished(job_id)
                self.queue.done(job_id)
                self.queue.unlock(job_id, token)
                job_ended(JobOutcome("failed", "unknown", "unknown", self.settings.queue, 0.0, reason="GaveUp"))
                return None
            claim = self.jobs.claim(job_id, self.owner, status=status, attempt_id=attempt_id)
        except BaseException:
            self.queue.unlock(job_id, token)
            raise
        if claim.status is None:
            self.queue.unlock(job_id, token)
            job_log(log, job_id).info("job %s: not taken (%s)", job_id, claim.reason)
            return None
        self.queue.started(job_id)
        return Attempt(claim.status)

    def _after_failure(self, attempt: Attempt, e: Exception) -> str:
        status, job_id = attempt.status, attempt.job_id
        if attempt.lost is not None or isinstance(e, StaleAttempt):
            # Not ours any more: whoever has the job settles it. Nothing to write, no lock to drop.
            job_log(log, job_id).warning("job %s: attempt %s stopped: %s", job_id, status.attempt_id,
                                         attempt.lost or e)
            return "lost"
        user = user_error(e)
        reason = str(user) if user is not None else one_line(e)
        try:
            if user is not None and user.status_code < 500:  # the job's own fault: no retry
                self.jobs.fail(status, reason, failure_of(e))  # the caller's mistake is not counted as ours
                self._let_go(attempt)
                return "failed"
            ours = is_system_failure(e) or user is not None  # a 503 from a stage: the store was away
            if ours and status.attempts < self.settings.max_attempts and _retries_so_far() < MAX_RETRIES:
                job_log(log, job_id).warning("job %s: attempt %d failed (%s); handing it back to the queue",
                                             job_id, status.attempts, reason)
                self.jobs.release(status, f"retrying after: {reason}")
                self.queue.stopped(job_id)
                self.queue.unlock(job_id, attempt.token)
                raise HandedBack(reason) from None
            self.jobs.fail(status, f"failed after {status.attempts} attempt(s) in stage '{status.stage}': {reason}")
        except StaleAttempt as stale:
            job_log(log, job_id).warning("job %s: attempt %s stopped: %s", job_id, status.attempt_id, stale)
            return "lost"
        self._let_go(attempt)
        if ours and _retries_so_far() >= MAX_RETRIES:
            raise HandedBack(reason) from None  # the queue's retries are spent: it keeps it in its dead letters
        if not ours:
            job_log(log, job_id).error("job %s: failed with an internal error", job_id, exc_info=e)
        return "failed"

    def _let_go(self, attempt: Attempt) -> None:
        """Best effort: with Redis away the lock lapses by itself and the reconciler drops
        the queue's note of a finished job."""
        job_id = attempt.job_id
        self.queue.finished(job_id)
        try:
            self.queue.done(job_id)
            self.queue.unlock(job_id, attempt.token)
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

    def _pipeline(self, job_id: str, attempt: Attempt, request):
        from d2v.pipeline import note_backend_choice, resolve_backend

        # `auto` renders with the best base this farm runs (d2v.bases.choose_backend).
        asked = request
        request, why = resolve_backend(request, self.settings.base_models())
        image_bytes, image, depth_bytes = self._inputs(job_id)
        # A .cube look missing from the store (jobs/{id}/look.cube) or malformed fails the job
        # here, before any stage runs; the stages that grade read it from the store again.
        job_look(request, self.store, job_id)
        depth = {}  # where the depth came from, for the manifest
        send = self.stage_calls.send
        call = attempt.call  # every stage call is the attempt's: cancelled if the attempt is lost
        if planned_depth_source(request, depth_given=depth_bytes is not None, model=self.depth_model) == "estimated":
            # The depth stage first (its estimate is cached by image): the planner and the
            # renderer take it as they take a depth map the user sent.
            self.queue.report(job_id, "depth", 0.0)
            depth = call(send(self.depth.estimate, image, image_bytes, request)).result(timeout_s=self.job_timeout_s)
            depth_bytes = depth.pop("depth_png")  # the rest (source, model, usage) goes to the manifest
        # Each call gets the previous call's DeploymentResponse: Serve passes the result along
        # between replicas without a round trip through this one. Only the end is awaited (on
        # this worker thread; the calls are sent from StageCalls' loop).
        trajectory = call(send(self.trajectory.plan, request, image.width, image.height, depth_bytes is not None))
        if renders_final_frames(request):
            # Camera jobs: the base replica streams frames into the encoder and stores the results.
            final = call(send(self.base.render_final, job_id, image, depth_bytes, request, trajectory, **depth))
        else:
            clip = call(send(self.base.render, job_id, image, depth_bytes, request, trajectory))
            clip = call(send(self.interpolate.retime, clip, request))
            clip = call(send(self.upscale.resize, clip, request))
            final = call(send(self.encode.encode, job_id, clip, request, trajectory, image, depth_bytes, **depth))
        result = final.result(timeout_s=self.job_timeout_s)
        if attempt.lost is not None:  # lost while the last call was finishing: its result is not ours to report
            raise attempt.lost
        if why is not None:  # the stage stored the manifest of the base it ran: it says auto chose it, and why
            result = note_backend_choice(result, asked, why)
            self.store.put_bytes(file_key(job_id, MANIFEST), result.model_dump_json(indent=2).encode())
        return result

    # -- the reconciler -------------------------------------------------------------------

    def _reconcile_loop(self) -> None:
        """Its own thread: a reconcile pass held up by a frozen store delays no heartbeat. The
        first pass runs at once: a farm started again takes up the jobs its last run left
        unfinished as soon as its runner is up, not a reconcile interval later."""
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception as e:  # the store or Redis away: the next pass tries again
                log.warning("reconcile pass failed: %s", e)
            try:  # the queue's depth, for the gauges (every runner reports it; dashboards take the max)
                queue_depth(self.settings.queue, self.queue.waiting(), len(self.queue.running_since()))
            except Exception as e:
                log.debug("queue depth not measured: %s", e)
            self._stop.wait(self.settings.reconcile_s)

    def reconcile(self) -> int:
        """Enqueue every stored unfinished job of this queue that nobody runs and the queue
        does not hold. Returns how many it enqueued."""
        enqueued, running = self.queue.enqueued_since(), self.queue.running_since()
        redis_up_since = self.queue.started_at()
        unfinished = self.jobs.unfinished()
        for job_id in (set(enqueued) | set(running)) - set(unfinished):
            self.queue.done(job_id)  # finished while the queue was away: not waiting any more
        now, count = time.time(), 0
        for job_id in unfinished:
            # Only what the queue cannot vouch for is read from the store: a claimed job whose
            # attempt's lock lapsed, one waiting too long, one the queue never heard of.
            if job_id in running:
                if self.queue.locked(job_id):
                    continue
            elif job_id in enqueued and now - enqueued[job_id] < QUEUED_RECHECK_S and enqueued[job_id] > redis_up_since:
                continue  # waiting in the queue (its message may have gone with a Redis restart: then not)
            status = self.jobs.get(job_id)
            if status is None or has_live_owner(status, now):
                continue
            if status.queue is None:
                self._abandoned_render(status, now)
                continue
            if status.queue != self.settings.queue or self.queue.locked(job_id):
                continue  # another app's job, or one an attempt holds
            # A duplicate message is harmless: the claim settles it.
            job_log(log, job_id).warning("job %s: %s with no live owner; enqueueing it again", job_id, status.status)
            self.queue.stopped(job_id)
            self.queue.enqueue(job_id)
            count += 1
        return count

    def _abandoned_render(self, status: JobStatus, now: float) -> None:
        """A `d2v render` or batch job whose process stopped heartbeating (killed): failed
        with the reason, never left 'running'. Rendering it again takes it over. Refused when
        the job moved since it was read (its owner beat after all)."""
        if status.status != "running" or now - (status.heartbeat_at or 0) < 2 * status.lease_s:
            return
        job_log(log, status.job_id).warning("job %s: its runner %s stopped; marking it failed", status.job_id,
                                            status.owner)
        try:
            self.jobs.abandon(status, f"its runner ({status.owner or 'unknown'}) stopped during '{status.stage}' "
                                      "and did not come back; render it again to resume")
        except StaleAttempt:
            pass  # logged by the lifecycle

    def check_health(self) -> None:
        """Serve replaces a replica whose reconciler or whose queue consumer (the Celery worker
        thread Ray's adapter starts) has stopped: up with nothing consuming, it would take no job."""
        if not self._reconciler.is_alive():
            raise RuntimeError("the reconcile thread stopped")
        consumer = getattr(getattr(self, "_adapter", None), "_worker_thread", None)
        if consumer is not None and not consumer.is_alive():
            raise RuntimeError("the queue's consumer (Celery worker) stopped")

    def __del__(self) -> None:
        """A clean stop: hand unfinished jobs back, so another replica (or this app after a
        restart) runs them without waiting for a lease to run out."""
        self._stop.set()
        with self._lock:
            running = list(self.in_flight.values())
        for attempt in running:
            try:
                self.jobs.release(attempt.status, "its replica stopped; queued again")
                self.queue.unlock(attempt.job_id, attempt.token)
                self.queue.enqueue(attempt.job_id)
            except Exception as e:
                job_log(log, attempt.job_id).warning("job %s: could not hand it back (%s); the reconciler will",
                                                     attempt.job_id, e)
