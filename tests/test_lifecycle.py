"""The job lifecycle (d2v.lifecycle) on a real store, and the queue's Redis side (d2v.jobqueue)
on a real redis-server: transitions, ownership by heartbeat, the content cache, locks, and a
Redis that is away answering in seconds with a named error."""

from __future__ import annotations

import os
import time

import pytest

from d2v.errors import QueueUnavailableError
from d2v.jobqueue import JobQueue, RedisServer
from d2v.lifecycle import (
    ACTIVE_PREFIX, Heartbeat, IllegalTransition, Jobs, StaleAttempt, attempt_token, has_live_owner, new_job_id, tenant_of,
)
from d2v.models import JobResult
from d2v.store import LocalStore

RESULT = JobResult(video_key="jobs/x/video.mp4", frames=8, fps=8, width=160, height=90)


@pytest.fixture
def jobs(tmp_path) -> Jobs:
    store = LocalStore(tmp_path / "store")
    store.put_bytes(RESULT.video_key, b"an mp4")
    return Jobs(store, lease_s=2.0)


def test_a_job_goes_queued_running_succeeded_and_its_marker_follows(jobs):
    job = new_job_id()
    jobs.create(job, queue="q", tenant=tenant_of("key"), content="c1")
    assert jobs.unfinished() == [job] and jobs.get(job).status == "queued"
    status = jobs.claim(job, "farm:a").status
    assert status.status == "running" and status.owner == "farm:a" and status.attempts == 1
    jobs.succeed(status, RESULT)
    assert jobs.unfinished() == [] and jobs.get(job).status == "succeeded"
    assert jobs.get(job).owner is None and jobs.get(job).tenant == tenant_of("key")
    # The content cache now answers the same content with this job's result, while it lasts.
    assert jobs.cached("c1").job_id == job and jobs.cached("c2") is None
    jobs.store.delete(RESULT.video_key)
    assert jobs.cached("c1") is None


def test_illegal_moves_are_refused(jobs):
    job = new_job_id()
    status = jobs.create(job)
    with pytest.raises(IllegalTransition):
        jobs.succeed(status, RESULT)  # never claimed: queued -> succeeded is not a move
    claimed = jobs.claim(job, "farm:a").status
    jobs.fail(claimed, "boom")
    with pytest.raises(IllegalTransition):
        jobs.release(jobs.get(job))  # failed -> queued: only a new claim reruns it


def test_a_live_owner_keeps_its_job_and_a_silent_one_loses_it(jobs):
    job = new_job_id()
    jobs.create(job)
    first = jobs.claim(job, "farm:a").status
    refused = jobs.claim(job, "farm:b")
    assert refused.status is None and "farm:a" in refused.reason
    with Heartbeat(jobs, first) as beat:  # beats every lease/3: stays alive past the lease
        beat.progress("base", 0.5)
        time.sleep(2.5)
        assert has_live_owner(jobs.get(job)) and jobs.get(job).stage == "base"
        assert jobs.claim(job, "farm:b").status is None
    time.sleep(2.2)  # silent for a whole lease: anyone may take it over
    taken = jobs.claim(job, "farm:b").status
    assert taken.owner == "farm:b" and taken.attempts == 2


class RacingStore(LocalStore):
    """A real folder store on which another process claims the job right after this one has
    read its status (once): the interleaving two `d2v render` takeovers of one job can meet."""

    def __init__(self, root, rival):
        super().__init__(root)
        self.rival = rival

    def get_versioned(self, key):
        try:
            return super().get_versioned(key)
        finally:  # (whether it found the job or not)
            if self.rival is not None and key.endswith("status.json"):
                rival, self.rival = self.rival, None
                assert rival().status is not None


def test_of_two_takeovers_of_a_silent_job_exactly_one_runs_it(tmp_path):
    root = tmp_path / "store"
    job = new_job_id()
    Jobs(LocalStore(root), lease_s=0.2).claim(job, "cli:old")  # then its process died
    time.sleep(0.3)
    racing = RacingStore(root, rival=lambda: Jobs(LocalStore(root)).claim(job, "cli:b"))
    lost = Jobs(racing).claim(job, "cli:a")
    assert lost.status is None and "same moment" in lost.reason
    stored = Jobs(LocalStore(root)).get(job)
    assert (stored.owner, stored.status, stored.attempts) == ("cli:b", "running", 2)


def test_of_two_renders_of_a_new_job_started_together_exactly_one_runs_it(tmp_path):
    """Two `d2v render --no-cache` of the same image and request at once: both find no job;
    the one whose creation lands second is refused (it once overwrote the first's claim, and
    the first, refused its writes half way, had written its video all the same)."""
    root = tmp_path / "store"
    job = new_job_id()
    racing = RacingStore(root, rival=lambda: Jobs(LocalStore(root)).claim(job, "cli:b", rerun=True))
    lost = Jobs(racing).claim(job, "cli:a", rerun=True)
    assert lost.status is None and "same moment" in lost.reason
    stored = Jobs(LocalStore(root)).get(job)
    assert (stored.owner, stored.status, stored.attempts) == ("cli:b", "running", 1)


def test_an_owner_process_of_this_machine_that_is_gone_is_not_live(jobs):
    """A killed `d2v render` (SIGKILL: no chance to fail its job) need not be waited for: its
    heartbeat is fresh, but its process is gone. Another machine's owner, or a live one, is."""
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for owner, live in [(f"cli:{socket.gethostname()}:{gone.pid}", False),
                        (f"cli:{socket.gethostname()}:{os.getpid()}", True),
                        (f"cli:another-host:{gone.pid}", True), ("farm:a1b2c3", True)]:
        job = new_job_id()
        status = jobs.claim(job, owner).status
        assert has_live_owner(status) is live, owner
        assert (jobs.claim(job, "cli:next").status is None) is live, owner


def test_a_finished_job_is_not_claimed_again_unless_rerun(jobs):
    job = new_job_id()
    jobs.create(job)
    jobs.succeed(jobs.claim(job, "farm:a").status, RESULT)
    assert jobs.claim(job, "farm:b").status is None
    assert jobs.claim(job, "cli:x", rerun=True).status.status == "running"


def test_a_cached_result_is_adopted_under_a_new_id(jobs):
    job = new_job_id()
    jobs.create(job, content="c")
    jobs.succeed(jobs.claim(job, "farm:a").status, RESULT)
    mine = jobs.adopt_result(new_job_id(), jobs.cached("c"), tenant="t2", content="c")
    assert mine.status == "succeeded" and mine.cached_from == job
    # Its results under its own keys: nothing it shows names the job that rendered them.
    assert mine.result.video_key == f"jobs/{mine.job_id}/video.mp4" and job not in mine.model_dump_json(
        exclude={"cached_from"})
    assert jobs.store.get_bytes(mine.result.video_key) == b"an mp4"
    assert mine.result.model_dump(exclude={"video_key"}) == RESULT.model_dump(exclude={"video_key"})
    assert not {"tenant", "owner", "content", "cached_from", "queue"} & set(mine.public())
    assert not jobs.store.list(ACTIVE_PREFIX)


def test_job_ids_are_random_and_tenants_never_hold_the_key():
    assert len({new_job_id() for _ in range(1000)}) == 1000
    assert tenant_of("secret-key") != tenant_of("secret-kez") and "secret" not in tenant_of("secret-key")
    assert tenant_of(None) is None


def test_redis_locks_enqueue_and_a_dead_redis_fails_fast(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        queue = JobQueue("t", server.url)
        assert queue.lock("j1", "farm:a#1", 5)
        # Another attempt, of another replica or of the same one (a duplicate delivery), is refused.
        assert not queue.lock("j1", "farm:a#2", 5) and not queue.lock("j1", "farm:b#1", 5) and queue.locked("j1")
        assert queue.holds("j1", "farm:a#1", 5) is True and queue.holds("j1", "farm:b#1", 5) is False
        queue.unlock("j1", "farm:b#1")  # not b's to drop
        assert queue.locked("j1")
        queue.unlock("j1", "farm:a#1")
        assert not queue.locked("j1") and queue.lock("j1", "farm:b#1", 5)
        queue.redis.delete(queue.LOCK.format("j1"))  # lost (a Redis restart): the fence takes it back, says so
        assert queue.holds("j1", "farm:b#1", 5) is None and queue.holds("j1", "farm:b#1", 5) is True
        queue.enqueue("j2")
        queue.enqueue("j3")
        queue.started("j2")
        assert set(queue.enqueued_since()) == {"j2", "j3"} and queue.waiting() == 1
        queue.done("j2")
        assert set(queue.enqueued_since()) == {"j3"} and queue.running_since() == {}
        queue.report("j3", "base", 0.25)
        assert queue.progress("j3") == ("base", 0.25)
        time.sleep(1.5)  # appendfsync everysec: what a killed Redis keeps is what was synced
        server.stop(kill=True)
        t0 = time.monotonic()
        with pytest.raises(QueueUnavailableError, match="retry shortly"):
            queue.enqueue("j4")
        with pytest.raises(QueueUnavailableError):
            queue.ping()
        assert time.monotonic() - t0 < 6
        queue.report("j3", "base", 0.5)  # best effort: no error
        assert queue.progress("j3") is None
        # Restarted on the same directory: the queue's notes survived (append-only file).
        server.start()
        assert "j3" in queue.enqueued_since()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_recent_lists_a_tenants_latest_jobs_newest_first(tmp_path, request, where):
    """The recent/ index GET /v1/jobs reads: newest first, one folder per key, cache answers
    included, cut at the limit by the listing itself."""
    jobs = Jobs(LocalStore(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_store"))
    a, b = tenant_of("key-a"), tenant_of("key-b")
    ids = []
    for i in range(4):
        ids.append(f"job-{i}-a")  # ids with '-' in them
        jobs.create(ids[-1], queue="q", tenant=a)
        time.sleep(0.002)  # the index has millisecond steps
    jobs.create("job-b", queue="q", tenant=b)
    jobs.create("job-anon", queue="q", tenant=None)
    time.sleep(0.002)
    jobs.adopt_result("job-cached", jobs.get(ids[0]), tenant=a, content=None)
    assert jobs.recent(a, limit=3) == ["job-cached", ids[3], ids[2]]
    assert jobs.recent(a, limit=100) == ["job-cached", *ids[::-1]]
    assert jobs.recent(b) == ["job-b"] and jobs.recent(None) == ["job-anon"]
    assert jobs.recent(tenant_of("key-c")) == []


def test_a_stale_attempts_writes_are_refused_and_the_new_one_keeps_the_job(jobs, caplog):
    job = new_job_id()
    jobs.create(job)
    old = jobs.claim(job, "farm:a").status
    # The same owner cannot start a second attempt while the first is alive (a duplicate delivery).
    assert jobs.claim(job, "farm:a").status is None
    time.sleep(2.1)  # the old attempt fell silent for a lease: another takes the job
    new = jobs.claim(job, "farm:a").status
    assert new.attempt_id != old.attempt_id and new.attempts == 2
    for write in (lambda: jobs.heartbeat(old), lambda: jobs.release(old), lambda: jobs.fail(old, "boom"),
                  lambda: jobs.succeed(old, RESULT)):
        with pytest.raises(StaleAttempt, match=old.attempt_id):
            write()
    stored = jobs.get(job)
    assert (stored.status, stored.attempt_id, stored.error) == ("running", new.attempt_id, None)
    assert "refused a write of attempt " + old.attempt_id in caplog.text
    jobs.succeed(new, RESULT)
    assert jobs.get(job).status == "succeeded"


def test_with_a_fence_the_lock_decides_and_a_lost_lock_is_retaken_only_by_its_attempt(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        queue = JobQueue("t", server.url)
        jobs = Jobs(LocalStore(tmp_path / "store"), lease_s=1.0, fence=queue)
        job = new_job_id()
        jobs.create(job, queue="t")
        first = jobs.claim(job, "farm:a", attempt_id="a1").status
        assert queue.lock(job, attempt_token(first), 1.0)
        jobs.heartbeat(first)  # ours: renews the lock
        queue.redis.delete(queue.LOCK.format(job))  # Redis restarted without it
        jobs.heartbeat(first)  # the store still names this attempt: taken back
        assert queue.holds(job, attempt_token(first), 1.0) is True
        time.sleep(1.1)  # the lock lapsed (the runner paused); another attempt took the job
        assert queue.lock(job, "farm:a#a2", 1.0)
        with pytest.raises(StaleAttempt, match="another attempt holds"):
            jobs.heartbeat(first)
        queue.unlock(job, "farm:a#a2")
        # Gone again, but the store names another attempt now: the fence gives way to the store.
        jobs.store.put_bytes(f"jobs/{job}/status.json", jobs.get(job).model_copy(
            update={"attempt_id": "a2"}).model_dump_json().encode())
        with pytest.raises(StaleAttempt, match="attempt a2"):
            jobs.succeed(first, RESULT)
        assert jobs.get(job).status == "running"


def test_a_cli_job_failed_while_its_heartbeat_was_late_stays_failed_after_its_process_dies(jobs):
    """The farm's reconciler fails a CLI job whose heartbeat is late (a slow store); the CLI's
    next heartbeat must not write it back to 'running' (without its active/ marker, a job
    nobody would ever list again), and once the CLI is killed the job is not 'running'."""
    job = new_job_id()
    cli = jobs.claim(job, "cli:host:1").status
    time.sleep(4.1)  # its heartbeat is two leases late
    seen = jobs.get(job)
    assert not has_live_owner(seen)
    jobs.abandon(seen, "its runner stopped")  # what the reconciler does (deployments.runner)
    lost = []
    with Heartbeat(jobs, cli, on_lost=lost.append) as beat:  # the CLI's beats resume
        time.sleep(1.0)
    assert beat.lost is not None and lost and "the job is failed" in str(lost[0])
    with pytest.raises(StaleAttempt):
        jobs.succeed(cli, RESULT)  # its final write is refused too
    # The CLI process is gone now: what is stored says failed, and nothing is left unfinished.
    assert jobs.get(job).status == "failed" and jobs.unfinished() == []


def test_abandon_is_refused_when_the_owner_beat_after_it_was_read(jobs):
    job = new_job_id()
    cli = jobs.claim(job, "cli:host:2").status
    seen = jobs.get(job)
    jobs.heartbeat(cli)
    with pytest.raises(StaleAttempt):
        jobs.abandon(seen, "its runner stopped")
    assert jobs.get(job).status == "running" and jobs.unfinished() == [job]


def test_a_cli_render_whose_final_write_fails_ends_failed_not_running(tmp_path):
    """The manifest cannot be written (its key is taken by a directory): the job is failed
    with the store's error, not left 'running' with nobody to finish it."""
    from d2v.models import parse_request
    from d2v.pipeline import content_job_id, render_job
    import cv2

    from tests.conftest import textured_image

    store = LocalStore(tmp_path / "store")
    image = cv2.imencode(".png", textured_image(160, 90, seed=1))[1].tobytes()
    request = parse_request('{"path": [{"x": 20, "y": 40}, {"x": 140, "y": 50}], "effect": "pan", '
                            '"duration_s": 1, "fps": 8, "width": 160, "height": 90}')
    job = content_job_id(image, None, request)
    (store.root / f"jobs/{job}/manifest.json").mkdir(parents=True)
    with pytest.raises(OSError):
        render_job(image, request, store)
    status = Jobs(store).get(job)
    assert status.status == "failed" and status.owner is None and Jobs(store).unfinished() == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_conditional_write_is_refused_once_another_write_landed(tmp_path, request, where):
    """Store.put_if_version, what the lifecycle's compare-and-set rests on: If-Match on a real
    S3 server (SeaweedFS), a folder lock on a directory."""
    from d2v.store import ABSENT, VersionChanged

    store = LocalStore(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_store")
    store.put_bytes("jobs/x/status.json", b'{"v": 1}')
    data, version = store.get_versioned("jobs/x/status.json")
    assert data == b'{"v": 1}'
    store.put_bytes("jobs/x/status.json", b'{"v": 2}')  # someone else's write, after our read
    with pytest.raises(VersionChanged):
        store.put_if_version("jobs/x/status.json", b'{"v": 3}', version)
    data, version = store.get_versioned("jobs/x/status.json")
    assert data == b'{"v": 2}'
    store.put_if_version("jobs/x/status.json", b'{"v": 3}', version)  # read afresh: ours
    assert store.get_bytes("jobs/x/status.json") == b'{"v": 3}'
    # ABSENT: created once; a second creator is refused, the first's object stays.
    store.put_if_version("jobs/y/status.json", b'{"w": 1}', ABSENT)
    with pytest.raises(VersionChanged):
        store.put_if_version("jobs/y/status.json", b'{"w": 2}', ABSENT)
    assert store.get_bytes("jobs/y/status.json") == b'{"w": 1}'


def test_a_cli_heartbeat_that_compared_before_the_reconciler_failed_its_job_is_refused(jobs, caplog):
    """The window a read-compare-write leaves: the CLI's heartbeat has checked that the job is
    still its attempt's, then the reconciler fails the job, then the heartbeat's write comes.
    The write is conditional on the status it compared, so it is refused: the job stays failed."""
    job = new_job_id()
    cli = jobs.claim(job, "cli:host:3").status
    compared = jobs.check_attempt(cli)  # the heartbeat's compare: still ours
    jobs.abandon(jobs.get(job), "its runner stopped")  # the reconciler, in between
    beat = cli.model_copy(update={"heartbeat_at": time.time()})
    with pytest.raises(StaleAttempt, match="written by someone else"):
        jobs._write(beat, "running", checked=True, version=compared)  # the heartbeat's write
    assert jobs.get(job).status == "failed" and jobs.unfinished() == []
    assert "refused a write of attempt " + cli.attempt_id in caplog.text


def test_a_cli_render_takes_its_lease_from_d2v_lease_s_and_a_bad_one_is_one_line(tmp_path, monkeypatch, capsys):
    """D2V_LEASE_S sets a `d2v render` job's lease (what a farm's reconciler waits on twice
    before failing a killed CLI's job: tests/test_reliability_faults.py); unset, 30 s."""
    from d2v.cli import main
    from d2v.lifecycle import DEFAULT_LEASE_S, lease_setting
    from tests.conftest import textured_image
    from tests.test_images import png_bytes

    assert lease_setting({}) == DEFAULT_LEASE_S == 30.0
    assert lease_setting({"D2V_LEASE_S": " 5 "}) == 5.0
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "path.json"
    path.write_text('[{"x": 10, "y": 10}, {"x": 60, "y": 20}]')
    (tmp_path / "p.png").write_bytes(png_bytes(textured_image(160, 90, seed=2)))
    args = ["render", str(tmp_path / "p.png"), "--path", str(path), "--effect", "pan", "--duration", "1", "--fps", "4",
            "--size", "160x90", "-o", str(tmp_path / "out.mp4")]
    for bad in ("soon", "0", "nan"):
        monkeypatch.setenv("D2V_LEASE_S", bad)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err == f"d2v: error: D2V_LEASE_S={bad!r}: give the lease in seconds, from 1 to 3600 (unset: 30)\n", err
    monkeypatch.setenv("D2V_LEASE_S", "4")
    assert main(args) == 0, capsys.readouterr().err
    jobs = Jobs(LocalStore(tmp_path / "data"))
    [key] = [k for k in jobs.store.list("jobs/") if k.endswith("/status.json")]
    status = jobs.get(key.split("/")[1])
    assert status.status == "succeeded" and status.lease_s == 4.0
