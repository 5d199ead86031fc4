"""The farm's bookkeeping at scale: 10,000 jobs through the queue and status path, no rendering.

Real SeaweedFS (S3) and a real Redis started here. What the HTTP API and the job runner do
for every job, minus the upload and the stages:

    submit    jobs.create (status.json + active/ marker in S3) + queue.enqueue (Celery over Redis)
    status    jobs.get (status.json from S3): what GET /v1/jobs/{id} reads
    consume   a real Celery worker (the farm's adapter and config) whose task claims the job
              (Redis lock, status.json running, the running set) and succeeds it (status.json,
              marker removed, queue sets cleared): the runner's bookkeeping around a render
    reconcile one reconciler pass (list active/, compare with the queue's sets) at the peak

and, as the baseline in the same run, one raw S3 PUT and GET of the same size per job (what
the store alone costs). Memory: this process's and redis-server's RSS, sampled every 1,000
jobs, so 'flat over time' can be read off the table.

    python bench/queue_scale.py                # 10,000 jobs, 8 submitting threads
    python bench/queue_scale.py --jobs 500     # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--status-samples", type=int, default=2000)
    args = p.parse_args()

    from ray.serve.task_consumer import instantiate_adapter_from_config

    from d2v.jobqueue import RENDER_TASK, JobQueue, RedisServer, processor_config
    from d2v.lifecycle import Jobs, new_job_id
    from d2v.models import JobResult
    from d2v.s3store import S3Store
    from tests.seaweed import SeaweedS3

    with tempfile.TemporaryDirectory(prefix="d2v-scale-") as work, SeaweedS3(Path(work) / "s3") as s3, \
            RedisServer(Path(work) / "redis") as redis_server:
        store = S3Store.from_env(s3.env("scale"))
        jobs, queue = Jobs(store), JobQueue("scale-jobs", redis_server.url)
        queue.ping()
        n = args.jobs
        memory: list[tuple[str, int, float, float]] = []

        def sample(phase: str, done: int) -> None:
            memory.append((phase, done, rss_mb(), rss_mb(redis_server.proc.pid)))

        # Baseline: the store alone, one PUT and one GET of a status-sized object per job.
        body = b"x" * 420
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda i: store.put_bytes(f"baseline/{i}.json", body), range(min(n, 2000))))
        base_put = min(n, 2000) / (time.perf_counter() - t0)
        base_get_ms = []
        for i in range(min(n, 2000)):
            t = time.perf_counter()
            store.get_bytes(f"baseline/{i}.json")
            base_get_ms.append((time.perf_counter() - t) * 1000)

        # Submit.
        ids = [new_job_id() for _ in range(n)]
        done = [0]
        lock = threading.Lock()
        sample("start", 0)

        def submit(job_id: str) -> None:
            jobs.create(job_id, queue="scale-jobs", tenant="t", content=job_id)
            queue.enqueue(job_id)
            with lock:
                done[0] += 1
                if done[0] % 1000 == 0:
                    sample("submit", done[0])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(submit, ids))
        submit_s = time.perf_counter() - t0

        # Status reads with 10,000 jobs queued.
        status_ms = []
        for job_id in ids[:: max(1, n // args.status_samples)]:
            t = time.perf_counter()
            assert jobs.get(job_id).status == "queued"
            status_ms.append((time.perf_counter() - t) * 1000)

        # One reconcile pass's reads at the peak: the listing and the queue's sets.
        t = time.perf_counter()
        unfinished = jobs.unfinished()
        enqueued, running = queue.enqueued_since(), queue.running_since()
        must_read = [j for j in unfinished if j not in enqueued and j not in running]
        reconcile_s = time.perf_counter() - t
        assert len(unfinished) == n and not must_read, (len(unfinished), len(must_read))

        # Consume: a real Celery worker, the runner's bookkeeping around each job.
        result = JobResult(video_key="jobs/x/video.mp4", frames=1, fps=1, width=1, height=1)
        consumed = [0]
        finished = threading.Event()

        def handle(job_id: str) -> str:
            status = jobs.get(job_id)
            assert queue.lock(job_id, "bench", 30)
            status = jobs.claim(job_id, "bench", status=status).status
            queue.started(job_id)
            jobs.succeed(status, result)
            queue.done(job_id)
            queue.unlock(job_id, "bench")
            with lock:
                consumed[0] += 1
                if consumed[0] % 1000 == 0:
                    sample("consume", consumed[0])
                if consumed[0] == n:
                    finished.set()
            return "ok"

        import ray.serve.task_processor as tp

        class _Context:  # what the adapter asks of a Serve replica: a name for its worker
            replica_tag = "bench"

        tp.get_replica_context = lambda: _Context()
        adapter = instantiate_adapter_from_config(processor_config("scale-jobs", redis_server.url))
        adapter._app.conf.worker_concurrency = args.threads
        adapter.register_task_handle(handle, RENDER_TASK)
        t0 = time.perf_counter()
        adapter.start_consumer()
        finished.wait(timeout=3600)
        consume_s = time.perf_counter() - t0
        adapter.stop_consumer(timeout=30)
        assert consumed[0] == n, consumed[0]
        assert not jobs.unfinished() and queue.waiting() == 0

    rows = [
        ("store baseline: PUT of 420 B", f"{base_put:.0f}/s", "", ""),
        ("store baseline: GET of 420 B", "", f"{pct(base_get_ms, 50):.2f}", f"{pct(base_get_ms, 99):.2f}"),
        (f"submit {n} (create + enqueue)", f"{n / submit_s:.0f}/s", "", f"{n / submit_s / base_put:.2f}x PUT rate"),
        (f"status with {n} queued", "", f"{pct(status_ms, 50):.2f}", f"{pct(status_ms, 99):.2f}"),
        (f"reconcile pass at {n}", f"{reconcile_s:.2f} s", "", "0 status reads"),
        (f"consume {n} (claim + succeed)", f"{n / consume_s:.0f}/s", "", ""),
    ]
    print(f"\nbookkeeping at {n} jobs ({args.threads} threads; SeaweedFS + Redis on this machine)\n")
    print("| path | rate | p50 ms | p99 ms / note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| phase | jobs | bench RSS MB | redis RSS MB |")
    print("|---|---|---|---|")
    for phase, count, mine, theirs in memory:
        print(f"| {phase} | {count} | {mine:.0f} | {theirs:.0f} |")
    print(f"\nstatus reads: mean {statistics.mean(status_ms):.2f} ms over {len(status_ms)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
