"""The render farm against the library, in one run (issue #3's benchmark).

Starts a real S3 server (SeaweedFS) and the farm as a user would (`d2v serve --config
deployments/configs/serve-local.yaml`), then times the same 4 s, 24 fps, 1024x576 camera-backend
job of the bundled example

    in-process   d2v.pipeline.render_job straight into the same S3 bucket
    serve        POST /v1/jobs -> poll until succeeded (HTTP -> Serve -> S3)

interleaved, median of --repeats; then throughput (jobs/minute) with 1, 2 and 4
concurrent HTTP clients. Every job gets its own seed, so none is served from the cache.

    python bench/serve_bench.py [--repeats 3] [--jobs-per-client 2] [--poll S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from d2v.models import parse_request  # noqa: E402
from d2v.pipeline import render_job  # noqa: E402
from d2v.s3store import S3Store  # noqa: E402
from tests.seaweed import SeaweedS3  # noqa: E402

IMAGE = REPO / "examples/hubble.jpg"
PATH = json.loads((REPO / "examples/paths/zoom_in.json").read_text())
BASE = "http://127.0.0.1:8000"
# --poll 0 (the default): the client long-polls (GET /v1/jobs/{id}?wait_s=30) and hears the
# moment a job is done; --poll S: it polls every S seconds instead (each poll costs CPU on
# the farm, and the timing resolution is S).
POLL_S = 0.0
STAGES = ("trajectory", "base", "interpolate", "upscale", "encode", "upload")

_seed = iter(range(1, 10**6))


def job_request() -> dict:
    return {"path": PATH, "effect": "zoom_in", "duration_s": 4, "fps": 24, "width": 1024, "height": 576,
            "seed": next(_seed)}


def run_serve_job(client: httpx.Client, image: bytes) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.post("/v1/jobs", files={"image": ("hubble.jpg", image, "image/jpeg")},
                    data={"request": json.dumps(job_request())})
    r.raise_for_status()
    url = r.json()["status_url"]
    while True:
        status = client.get(url, params={"wait_s": 30} if not POLL_S else None).json()
        if status["status"] in ("succeeded", "failed"):
            break
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    if status["status"] != "succeeded":
        raise RuntimeError(status["error"])
    return wall, status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs-per-client", type=int, default=2)
    ap.add_argument("--config", default=str(REPO / "deployments/configs/serve-local.yaml"))
    ap.add_argument("--poll", type=float, default=0.0, help="poll every S seconds (0: long polling)")
    args = ap.parse_args()
    global POLL_S
    POLL_S = args.poll
    image = IMAGE.read_bytes()

    with tempfile.TemporaryDirectory() as tmp, SeaweedS3(Path(tmp) / "s3") as s3:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("D2V_")}, **s3.env("bench")}
        store = S3Store.from_env(env)
        log = open(Path(tmp) / "serve.log", "w")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "d2v"), "serve", "--config", args.config],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            deadline = time.monotonic() + 300
            while "ready at" not in (Path(tmp) / "serve.log").read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("d2v serve did not start:\n" + (Path(tmp) / "serve.log").read_text()[-3000:])
                time.sleep(0.5)
            client = httpx.Client(base_url=BASE, timeout=120)
            run_serve_job(client, image)  # warm-up: first-call costs (imports, connections) out of the numbers

            inproc, serve_walls, serve_stages, inproc_stages = [], [], [], []
            for _ in range(args.repeats):
                request = parse_request(job_request())
                t0 = time.perf_counter()
                manifest = render_job(image, request, store, use_cache=False)
                inproc.append(time.perf_counter() - t0)
                inproc_stages.append(manifest.stage_seconds)
                wall, status = run_serve_job(client, image)
                serve_walls.append(wall)
                serve_stages.append(json.loads(store.get_bytes(status["result"]["manifest_key"]))["stage_seconds"])

            throughput = {}
            for clients in (1, 2, 4):
                done: list[float] = []

                def worker() -> None:
                    with httpx.Client(base_url=BASE, timeout=300) as c:
                        for _ in range(args.jobs_per_client):
                            done.append(run_serve_job(c, image)[0])

                t0 = time.perf_counter()
                threads = [threading.Thread(target=worker) for _ in range(clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                throughput[clients] = (len(done), wall, statistics.median(done))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)

    n = 96
    ip, sv = statistics.median(inproc), statistics.median(serve_walls)
    print(f"d2v farm benchmark: zoom_in, 4 s 24 fps 1024x576 camera backend, results to S3 (SeaweedFS); "
          f"median of {args.repeats}, interleaved")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; Serve config {Path(args.config).name}; client "
          f"{'long-polls (wait_s=30)' if not POLL_S else f'polls every {POLL_S:g} s'}")
    print()
    print(f"| {'path':<38} | {'seconds':>8} | {'x in-process':>12} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 14}|")
    print(f"| {'in-process render_job -> S3':<38} | {ip:8.3f} | {1.0:12.2f} |")
    print(f"| {'HTTP -> Serve -> S3 (POST to succeeded)':<38} | {sv:8.3f} | {sv / ip:12.2f} |")
    print()
    print("per-stage seconds (median):")
    print(f"| {'stage':<12} | {'in-process':>10} | {'serve':>8} |")
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 10}|")
    for stage in STAGES:
        a = statistics.median(s.get(stage, 0.0) for s in inproc_stages)
        b = statistics.median(s.get(stage, 0.0) for s in serve_stages)
        print(f"| {stage:<12} | {a:10.3f} | {b:8.3f} |")
    print()
    print("throughput through HTTP (each client submits its jobs one after another):")
    print(f"| {'clients':>7} | {'jobs':>4} | {'wall s':>7} | {'jobs/min':>8} | {'median job s':>12} |")
    print(f"|{'-' * 9}|{'-' * 6}|{'-' * 9}|{'-' * 10}|{'-' * 14}|")
    for clients, (jobs, wall, med) in throughput.items():
        print(f"| {clients:>7} | {jobs:>4} | {wall:7.2f} | {60 * jobs / wall:8.1f} | {med:12.2f} |")
    print(f"\n({n} frames a job)")


if __name__ == "__main__":
    main()
