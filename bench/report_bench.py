"""`d2v report` over a store of 10,000 finished jobs, in a real S3 server (SeaweedFS started here).

The store is what the farm leaves behind: per job status.json and manifest.json (a real
manifest, from a real render, copied under each id), and its finished-job record
(d2v.lifecycle.JobRecord, a key under stats/{day}/), over the last 6 days; 3% failed.

    index     d2v.report.report(store, "7d"): one LIST per day of the span, no GETs
    cli       `d2v report --since 7d --json` as a user runs it (a new process: imports included)
    scan      the baseline in the same run: what the report costs without the index, i.e.
              list jobs/ and GET every status.json and manifest.json (16 threads), then the
              same KPIs from them

    python bench/report_bench.py                 # 10,000 jobs
    python bench/report_bench.py --jobs 1000     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def real_manifest() -> dict:
    """A real manifest: a small camera render into a temporary local store."""
    import cv2

    from d2v.models import RenderRequest
    from d2v.pipeline import render_job
    from d2v.store import LocalStore
    from tests.conftest import textured_image

    path = json.loads((REPO / "examples/paths/pan.json").read_text())
    request = RenderRequest.model_validate({"path": path, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160,
                                            "height": 96})
    png = cv2.imencode(".png", textured_image(320, 192))[1].tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(render_job(png, request, LocalStore(tmp)).model_dump_json())


def build(store, n: int, now: datetime, manifest: dict) -> None:
    from d2v.lifecycle import JobRecord
    from d2v.models import JobResult, JobStatus

    effects = ["pan", "zoom_in", "orbit", "spiral", "dolly_zoom"]

    def one(i: int) -> None:
        job_id = f"bench{i:06d}"
        failed = i % 33 == 0
        effect, backend = effects[i % len(effects)], "svd" if i % 10 == 0 else "camera"
        seconds = 2.0 + (i % 97) / 10 + (30.0 if backend == "svd" else 0.0)
        cost = None if failed else 0.0001 * seconds
        finished = now - timedelta(seconds=(i * 6 * 86400) // n)  # 6 days: all inside a 7d report run later
        m = {**manifest, "job_id": job_id, "effect": effect, "backend": backend,
             "stage_seconds": {**manifest["stage_seconds"], "total": seconds},
             "cost": {**manifest["cost"], "total": cost}}
        keys = {k: f"jobs/{job_id}/{k}" for k in ("video", "poster", "manifest")}
        status = JobStatus(job_id=job_id, status="failed" if failed else "succeeded", error="bench" if failed else None,
                           result=None if failed else JobResult(video_key=keys["video"], poster_key=keys["poster"],
                                                                manifest_key=f"jobs/{job_id}/manifest.json",
                                                                frames=8, fps=8, width=160, height=96),
                           created_at=finished.isoformat(), updated_at=finished.isoformat())
        store.put_bytes(f"jobs/{job_id}/status.json", status.model_dump_json().encode())
        if not failed:
            store.put_bytes(f"jobs/{job_id}/manifest.json", json.dumps(m).encode())
        record = JobRecord(finished.replace(microsecond=0), job_id, status.status, backend,
                           effect if not failed else effect, seconds, "USD", cost)
        store.put_bytes(record.key(), b"")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def scan(store, since: datetime) -> dict:
    """The report without the index: every job's status and manifest."""
    from d2v.lifecycle import JobRecord
    from d2v.models import JobStatus, Manifest
    from d2v.report import kpis

    ids = sorted({key.split("/")[1] for key in store.list("jobs/")})

    def one(job_id: str):
        status = JobStatus.model_validate_json(store.get_bytes(f"jobs/{job_id}/status.json"))
        updated = datetime.fromisoformat(status.updated_at)
        if status.status not in ("succeeded", "failed") or updated < since:
            return None
        if status.status == "failed":
            return JobRecord(updated, job_id, "failed", "unknown", "unknown", None)
        m = Manifest.model_validate_json(store.get_bytes(status.result.manifest_key))
        return JobRecord(updated, job_id, "succeeded", m.backend, m.effect, m.stage_seconds.get("total"),
                         m.cost.currency if m.cost else None, m.cost.total if m.cost else None)

    with ThreadPoolExecutor(16) as pool:
        records = [r for r in pool.map(one, ids) if r is not None]
    return {"all": kpis(records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from d2v.report import report
    from d2v.s3store import S3Store
    from tests.seaweed import SeaweedS3

    manifest = real_manifest()
    with tempfile.TemporaryDirectory(prefix="d2v-report-bench-") as tmp, SeaweedS3(Path(tmp) / "s3") as s3:
        env = s3.env("report-bench")
        store = S3Store.from_env(env)
        now = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        build(store, args.jobs, now, manifest)
        build_s = time.perf_counter() - t0
        print(f"built {args.jobs} jobs in {build_s:.1f} s ({len(store.list('jobs/'))} job objects, "
              f"{len(store.list('stats/'))} records)", file=sys.stderr)

        times: dict[str, list[float]] = {"index": [], "cli": [], "scan": []}
        answers = {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            answers["index"] = report(store, "7d")
            times["index"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "d2v.cli", "report", "--since", "7d", "--json"],
                                 env={**os.environ, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                 check=True).stdout
            times["cli"].append(time.perf_counter() - t0)
            answers["cli"] = json.loads(out)
            t0 = time.perf_counter()
            answers["scan"] = scan(store, now - timedelta(days=7))
            times["scan"].append(time.perf_counter() - t0)

    # The index and the scan must agree on what they count.
    a, b = answers["index"]["all"], answers["scan"]["all"]
    assert (a["jobs"], a["videos"], a["median_s"]) == (b["jobs"], b["videos"], b["median_s"]), (a, b)
    assert answers["cli"]["all"] == a

    base = statistics.median(times["scan"])
    print(f"\n{args.jobs} jobs ({a['videos']} videos, success {100 * a['success_rate']:.1f}%), "
          f"median of {args.repeats}:\n")
    print("| what                                           | seconds | x scan |")
    print("|------------------------------------------------|---------|--------|")
    rows = [("scan: GET every status + manifest (baseline)", "scan"),
            ("index: report() over stats/ records", "index"), ("`d2v report --since 7d --json` (new process)", "cli")]
    for label, key in rows:
        s = statistics.median(times[key])
        print(f"| {label:46} | {s:7.2f} | {s / base:6.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
