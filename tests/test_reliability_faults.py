"""Our faults with jobs in flight (the fast subset of bench/reliability.py's fault sections):
real Serve, real S3 (SeaweedFS) and real Redis, each stopped for real. No accepted job is
lost, failed or stuck; while a dependency is away, submissions get a 503 with Retry-After and
a JSON detail within 2 s; once it is back, the farm takes work again."""

from __future__ import annotations

import pytest

from bench import faults

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def farm():
    with faults.FaultFarm(num_cpus=4) as farm:
        yield farm


def _assert_clean(outcome: faults.Outcome) -> None:
    assert outcome.clean, (faults.table([outcome]), outcome.errors[:10])
    assert outcome.succeeded == outcome.accepted > 0


def test_redis_killed_and_restarted_loses_no_job(farm):
    out = faults.outage(farm, "Redis killed, restarted after 8 s", farm.kill_redis, farm.start_redis, hold_s=8,
                        jobs_before=3, posts_during=2)
    assert out.refused >= 2
    _assert_clean(out)


def test_s3_killed_and_restarted_loses_no_job(farm):
    out = faults.outage(farm, "S3 killed, restarted after 8 s", farm.kill_s3, farm.start_s3, hold_s=8,
                        jobs_before=3, posts_during=2)
    assert out.refused >= 2
    _assert_clean(out)


def test_runner_replica_killed_twice_loses_no_job(farm):
    _assert_clean(faults.replica_kills(farm, "JobRunner", kills=2))


def test_concurrent_submissions_are_202_or_503_and_all_finish(farm):
    _assert_clean(faults.concurrent_submissions(farm, 40))


def test_a_killed_cli_render_is_not_left_running_and_the_farm_runs_the_job(farm):
    # A 5 s lease for the CLI (D2V_LEASE_S): the reconciler fails its job 10 s after the kill, not 60.
    _assert_clean(faults.cli_killed_then_farm(farm, cli_lease_s=5))


def test_a_running_job_delivered_again_to_its_own_replica_renders_once(farm):
    _assert_clean(faults.duplicate_deliveries(farm, jobs=1, copies=2))


def test_an_enqueue_failure_then_the_clients_retry_renders_once(farm):
    out = faults.enqueue_failure_then_retry(farm)
    assert out.refused_ok == 1
    _assert_clean(out)
