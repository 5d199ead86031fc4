"""The job lifecycle (d2v.lifecycle) on a real store, and the queue's Redis side (d2v.jobqueue)
on a real redis-server: transitions, ownership by heartbeat, the content cache, locks, and a
Redis that is away answering in seconds with a named error."""

from __future__ import annotations

import time

import pytest

from d2v.errors import QueueUnavailableError
from d2v.jobqueue import JobQueue, RedisServer
from d2v.lifecycle import ACTIVE_PREFIX, Heartbeat, IllegalTransition, Jobs, has_live_owner, new_job_id, tenant_of
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
    assert mine.status == "succeeded" and mine.result == RESULT and mine.cached_from == job
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
