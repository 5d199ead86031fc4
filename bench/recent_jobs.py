"""GET /v1/jobs?limit=20 on a store of 10,000 jobs: the recent/ index against listing the store.

Real SeaweedFS (S3) started here; 10,000 jobs recorded by the lifecycle (`Jobs.create`: status.json,
the active/ marker and the recent/{tenant}/ index entry), 90% under one API key and 10% under
another. Timed, on the key with fewer jobs (whose latest are buried deepest in the store):

    index      what the ingress does: one listing of recent/{tenant}/ cut at 20 keys, and the
               20 status reads (in parallel, as the ingress does)
    baseline   what it would do without the index: list every job's status.json under jobs/
               and read them all to find the tenant's and sort them by time

and the index's cost at submit: Jobs.create with it against the same writes without it.

    python bench/recent_jobs.py                # 10,000 jobs
    python bench/recent_jobs.py --jobs 1000    # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()

    from d2v.lifecycle import ACTIVE_PREFIX, Jobs, new_job_id, tenant_of
    from d2v.s3store import S3Store
    from d2v.store import job_key
    from tests.seaweed import SeaweedS3

    with tempfile.TemporaryDirectory(prefix="d2v-recent-") as work, SeaweedS3(Path(work) / "s3") as s3:
        store = S3Store.from_env(s3.env("recent"))
        jobs = Jobs(store)
        many, few = tenant_of("key-many"), tenant_of("key-few")
        ids = [(new_job_id(), few if i % 10 == 0 else many) for i in range(args.jobs)]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda job: jobs.create(job[0], queue="q", tenant=job[1]), ids))
        fill_s = time.perf_counter() - t0

        # The submit's cost of the index: create (3 PUTs) against its other two writes alone.
        create_ms, bare_ms = [], []
        status_body = store.get_bytes(job_key(ids[0][0], "status.json"))
        for _ in range(200):
            job = new_job_id()
            t = time.perf_counter()
            jobs.create(job, queue="q", tenant=few)
            create_ms.append((time.perf_counter() - t) * 1000)
            job = new_job_id()
            t = time.perf_counter()
            store.put_bytes(job_key(job, "status.json"), status_body)
            store.put_bytes(ACTIVE_PREFIX + job, b"")
            bare_ms.append((time.perf_counter() - t) * 1000)

        def by_index() -> list[str]:
            latest = jobs.recent(few, args.limit)
            with ThreadPoolExecutor(16) as pool:
                return [s.job_id for s in pool.map(jobs.get, latest)]

        def by_listing() -> list[str]:
            keys = store.list("jobs/")
            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(lambda key: jobs.get(key.split("/")[1]), keys))
            mine = [s for s in statuses if s.tenant == few]
            return [s.job_id for s in sorted(mine, key=lambda s: s.created_at, reverse=True)[:args.limit]]

        index_ms = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            latest = by_index()
            index_ms.append((time.perf_counter() - t) * 1000)
        listing_ms = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jobs.recent(few, args.limit)
            listing_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        baseline = by_listing()
        baseline_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        listing_only = len(store.list("jobs/"))
        list_only_ms = (time.perf_counter() - t) * 1000
        assert listing_only == len(ids) + 400 and all(k for k in latest)
        # created_at has 1 s steps: the baseline's order within a second is arbitrary, its set is not.
        assert len(latest) == len(baseline) == args.limit, (len(latest), len(baseline))

    index = statistics.median(index_ms)
    print(f"{args.jobs} jobs in the store ({fill_s:.0f} s to record them, {args.threads} threads); "
          f"GET /v1/jobs?limit={args.limit} for a key with {args.jobs // 10} of them")
    print()
    print("| way | ms | vs index |")
    print("|---|---:|---:|")
    print(f"| index: list recent/{{tenant}}/ (max {args.limit}) + {args.limit} status reads, median of "
          f"{args.repeats} | {index:.1f} | 1.0x |")
    print(f"| (the index's listing alone, no reads) | {statistics.median(listing_ms):.1f} | "
          f"{statistics.median(listing_ms) / index:.2f}x |")
    print(f"| baseline: list jobs/ + read all {listing_only} statuses, sort | {baseline_ms:.0f} | "
          f"{baseline_ms / index:.0f}x |")
    print(f"| (the baseline's listing alone, no reads) | {list_only_ms:.0f} | {list_only_ms / index:.1f}x |")
    print()
    print(f"submit: Jobs.create median {statistics.median(create_ms):.2f} ms with the index entry, "
          f"{statistics.median(bare_ms):.2f} ms for the same status + marker writes without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
