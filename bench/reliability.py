"""The farm's reliability, section by section (issue 13), against a real farm on this machine.

Starts a real S3 server (SeaweedFS) and the farm (tests.farm.serve_farm, one app, an API key
set), runs the chosen sections and prints a table for each.

    python bench/reliability.py                      # every section
    python bench/reliability.py --only malformed     # one (or several: --only a,b)
    python bench/reliability.py --tiny               # a small run of each (a smoke test)
    python bench/reliability.py --url http://127.0.0.1:8000 --api-key K   # a farm already running

Sections (a function `section_NAME(farm, args)` listed in SECTIONS; each prints its own table,
with a 'baseline' to compare with where there is one):

    faults      our faults with jobs in flight (bench/faults.py): 20 base-replica kills, 3 ingress
                kills, 3 runner (queue consumer) kills, S3 frozen 60 s, S3 killed and restarted,
                Redis killed and restarted, `d2v render` killed then the same job sent to the farm,
                200 concurrent submissions: jobs lost / failed / stuck, and the 503s during outages.
    malformed   >= 2,000 malformed requests (bench.malformed), legal ones interleaved: per class
                how many got a 4xx, a 5xx, no answer in 10 s, were accepted and then failed;
                latency against the legal requests' (baseline). Then chunked uploads of 40 MiB
                (under the limit: the baseline), 60 and 300 MiB: the ingress replica's and the
                HTTP proxy's RSS growth while each streams (the issue asks under 64 MB).
    soak        (issue 23) 10,000 mixed requests (legal, malformed, oversized) against one farm: the
                ingress replica's and the proxy's RSS after each batch, growth after the warm-up.
    burst       (issue 23) 200 concurrent submissions, three runs: each a 202 or a 503 with Retry-After.
    longjobs    (issue 23) >= 20 jobs longer than the visibility timeout (D2V_QUEUE_VISIBILITY_S=2),
                with duplicate deliveries, a runner kill, S3 frozen longer than the lease and a Redis
                restart injected: lost / failed / stuck, and every stage's executions
                (ray_d2v_stage_seconds_count) against jobs x stages plus the attempts a kill interrupted.

The farm's replicas log to stderr: `2>/dev/null` leaves the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import malformed  # noqa: E402

API_KEY = "d2v-reliability-key"
# Enough queue that the legal and degenerate-but-legal jobs of a run never meet the
# back-pressure 503 (a section about load would test that; this one tests inputs).
FARM_ARGS = {"max_running_jobs": 2, "max_queued_jobs": 1000}


@dataclass
class Farm:
    url: str
    api_key: str | None
    env: dict[str, str]
    local: bool  # started here: its processes can be inspected (RSS)


@contextmanager
def start_farm(num_cpus: int = 2, extra_env: dict[str, str] | None = None) -> Iterator[Farm]:
    from tests.farm import serve_farm
    from tests.seaweed import SeaweedS3

    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="d2v-reliability-"))
        s3 = stack.enter_context(SeaweedS3(Path(workdir) / "seaweed"))
        env = {**s3.env("reliability"), "D2V_DEVICE": "cpu", "D2V_API_KEYS": API_KEY, **(extra_env or {})}
        url = stack.enter_context(serve_farm(env, {"/": dict(FARM_ARGS)}, num_cpus=num_cpus))
        wait_healthy(url)
        yield Farm(url, API_KEY, env, local=True)


def wait_healthy(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the farm at {url} did not become healthy within {timeout_s:g} s")
        time.sleep(0.5)


# --- processes ----------------------------------------------------------------------------


def serve_processes() -> dict[str, "psutil.Process"]:  # noqa: F821
    """The farm's ingress replica and HTTP proxy processes. With this process connected to the
    farm's Ray (a farm started here), their pids come from Ray's actor table; otherwise from
    process titles (Ray names a replica 'ray::ServeReplica:<app>:Ingress', the proxy
    'ray::ProxyActor'), which is only right with one farm on the machine. Empty when none is found."""
    import psutil
    import ray

    found = {}
    if ray.is_initialized():
        from ray._private.state import actors

        for actor in actors().values():
            name = actor.get("ActorClassName", "")
            if actor.get("State") != "ALIVE" or not actor.get("Pid"):
                continue
            if name.startswith("ServeReplica:") and name.endswith(":Ingress"):
                found["ingress"] = psutil.Process(actor["Pid"])
            elif name == "ProxyActor":
                found["proxy"] = psutil.Process(actor["Pid"])
        return found
    for p in psutil.process_iter(["cmdline"]):
        title = " ".join(p.info["cmdline"] or [])
        if "ServeReplica" in title and "Ingress" in title:
            found["ingress"] = p
        elif "ProxyActor" in title:
            found["proxy"] = p
    return found


class RssSampler:
    """Peak RSS of some processes, sampled in a thread every `period_s`."""

    def __init__(self, procs: dict, period_s: float = 0.02):
        self.procs, self.period_s = procs, period_s
        self.before = {name: self._rss(p) for name, p in procs.items()}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(p) -> int:
        try:
            return p.memory_info().rss
        except Exception:
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, p in self.procs.items():
                self.peak[name] = max(self.peak[name], self._rss(p))
            time.sleep(self.period_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.after = {name: self._rss(p) for name, p in self.procs.items()}


# --- sections -----------------------------------------------------------------------------


def section_malformed(farm: Farm, args) -> dict:
    n = 300 if args.tiny else args.requests
    print(f"\n== malformed: {n} requests (seed {args.seed}), {args.concurrency} at a time ==", flush=True)
    cases = malformed.generate(n, args.seed, slow_body=True)
    procs = serve_processes() if farm.local else {}
    rss0 = {name: RssSampler._rss(p) for name, p in procs.items()}

    def progress(done: int, total: int) -> None:
        if done % 250 == 0 or done == total:
            print(f"  sent {done}/{total}", flush=True)

    t0 = time.perf_counter()
    outcomes = malformed.send_all(farm.url, cases, api_key=farm.api_key, concurrency=args.concurrency,
                                  progress=progress)
    sent_s = time.perf_counter() - t0
    accepted = sum(1 for o in outcomes if o.job_id)
    print(f"  sent in {sent_s:.1f} s; following {accepted} accepted jobs", flush=True)
    malformed.follow_accepted(farm.url, outcomes, api_key=farm.api_key, timeout_s=args.follow_s)
    rows = malformed.summarize(outcomes)
    print(malformed.format_table(rows, malformed.COLUMNS))
    baseline = next((r for r in rows if r["class"] == "valid"), None)
    if baseline:
        print(f"baseline (legal requests, interleaved): p50 {baseline['p50 ms']} ms, p99 {baseline['p99 ms']} ms; "
              f"{baseline['accepted']}/{baseline['requests']} accepted")
    by_route: dict[str, list] = {}
    for o in outcomes:
        route = "GET" if o.case.method == "GET" else o.case.url.split("?")[0]
        by_route.setdefault(route if route in ("GET", "/v1/jobs", "/v1/preview") else "other", []).append(o)
    for route, group in sorted(by_route.items()):
        bad = sum(1 for o in group if malformed.problems(o))
        print(f"  {route}: {len(group)} requests, {bad} with a problem")
    if procs:
        after = {name: RssSampler._rss(p) for name, p in procs.items()}
        print("  RSS over the run: " + ", ".join(
            f"{name} {rss0[name] / 2**20:.0f} -> {after[name] / 2**20:.0f} MiB" for name in procs))

    slowest = sorted((o for o in outcomes if o.status is not None and not o.case.stream_mib),
                     key=lambda o: o.seconds, reverse=True)[:5]
    print("  slowest answers:\n" + "\n".join("    " + malformed.describe(o)[:200] for o in slowest))

    found = [o for o in outcomes if malformed.problems(o)]
    print(f"\n{len(found)} requests with a problem" + (":" if found else ""))
    seen: set = set()
    for o in found:
        key = (o.case.cls, o.case.name, tuple(malformed.problems(o)))
        if key in seen:
            continue
        seen.add(key)
        print("  " + malformed.describe(o) + "\n      problem: " + "; ".join(malformed.problems(o)))

    upload = big_uploads(farm, [40, 60] if args.tiny else [40, 60, 300], procs)
    return {"rows": rows, "upload": upload, "problems": len(found)}


def big_uploads(farm: Farm, sizes_mib: list[int], procs: dict) -> list[dict]:
    """Chunked POST /v1/jobs bodies (no Content-Length) of each size: the answer, how long it
    took, and the peak RSS growth of the ingress replica and the HTTP proxy while it went.
    The first size, under the 50 MiB limit (read whole, then refused as a broken form), is the
    baseline to compare the ones past the limit with."""
    print(f"\n== malformed: chunked uploads of {', '.join(map(str, sizes_mib))} MiB (limit 50 MiB) ==", flush=True)
    template = next(c for c in malformed.generate(0, 0, only={"oversize"}) if c.stream_mib)
    rows, results = [], []
    for mib in sizes_mib:
        case = malformed.Case(**{**template.__dict__, "stream_mib": mib})
        sampler = RssSampler(procs)
        with sampler, httpx.Client(base_url=farm.url, timeout=300) as client:
            out = malformed.send_http(client, case, farm.api_key)
        growth = {name: (sampler.peak[name] - sampler.before[name]) / 2**20 for name in procs}
        label = f"{mib} MiB" + (" (baseline: under the limit)" if mib < 50 else "")
        rows.append({"upload": label, "answer": out.status or out.error, "seconds": f"{out.seconds:.1f}",
                     **{f"{name} before": f"{sampler.before[name] / 2**20:.0f} MiB" for name in procs},
                     **{f"{name} peak growth": f"{growth[name]:+.0f} MiB" for name in procs},
                     **{f"{name} after": f"{sampler.after[name] / 2**20:.0f} MiB" for name in procs}})
        results.append({"mib": mib, "status": out.status, "error": out.error, "detail": out.detail,
                        "seconds": round(out.seconds, 2), "growth_mib": {k: round(v, 1) for k, v in growth.items()}})
    print(malformed.format_table(rows))
    print("(issue 13 asks the ingress replica's growth to stay under 64 MiB for an upload past the limit)"
          if procs else "(no local Serve processes found: RSS not measured)")
    return results


def section_faults(farm: Farm | None, args) -> dict:
    """Our faults with jobs in flight (bench.faults), on a farm started here with its own S3
    and Redis (they are stopped for real): replica kills, S3 frozen and restarted, Redis
    restarted, a CLI render killed, a burst of concurrent submissions."""
    from bench import faults

    tiny = args.tiny
    print("\n== faults: jobs in flight, then our faults ==", flush=True)
    outcomes = []
    with faults.FaultFarm(num_cpus=4) as ff:
        plan = [
            lambda: faults.replica_kills(ff, "BaseStage", 2 if tiny else 20),
            lambda: faults.replica_kills(ff, "Ingress", 1 if tiny else 3),
            lambda: faults.replica_kills(ff, "JobRunner", 1 if tiny else 3),
            lambda: faults.outage(ff, f"S3 frozen {10 if tiny else 60} s", ff.freeze_s3, ff.thaw_s3,
                                  hold_s=10 if tiny else 60),
            lambda: faults.outage(ff, "S3 killed, restarted after 10 s", ff.kill_s3, ff.start_s3, hold_s=10),
            lambda: faults.outage(ff, "Redis killed, restarted after 10 s", ff.kill_redis, ff.start_redis,
                                  hold_s=10),
            lambda: faults.cli_killed_then_farm(ff),
            lambda: faults.concurrent_submissions(ff, 40 if tiny else 200),
        ]
        for run in plan:
            out = run()
            outcomes.append(out)
            print(faults.table([out]).splitlines()[-1], flush=True)
            for error in out.errors[:5]:
                print(f"    {error}", flush=True)
    print("\n" + faults.table(outcomes))
    clean = sum(o.clean for o in outcomes)
    print(f"\n{clean}/{len(outcomes)} scenarios clean (no job lost, failed or stuck; every outage 503 "
          "with Retry-After and a JSON detail within 2 s)")
    return {"outcomes": [o.__dict__ for o in outcomes]}


def section_soak(farm: Farm, args) -> dict:
    """(issue 23) `--soak` mixed requests (legal, malformed, oversized: bench.malformed's mix)
    against one farm, in batches; the ingress replica's and the HTTP proxy's RSS after each
    batch. The growth that counts is over the requests after the first fifth (the warm-up)."""
    n = 1000 if args.tiny else args.soak
    batch = max(100, n // 20)
    procs = serve_processes() if farm.local else {}
    print(f"\n== soak: {n} mixed requests in batches of {batch}, RSS after each ==", flush=True)
    cases = malformed.generate(n, args.seed + 1, slow_body=False)
    samples = [(0, {name: RssSampler._rss(p) for name, p in procs.items()})]
    found = []
    for start in range(0, len(cases), batch):
        outcomes = malformed.send_all(farm.url, cases[start:start + batch], api_key=farm.api_key,
                                      concurrency=args.concurrency)
        found += [o for o in outcomes if soak_problems(o)]
        samples.append((start + len(outcomes), {name: RssSampler._rss(p) for name, p in procs.items()}))
        print(f"  {samples[-1][0]:>6} requests: " + ", ".join(
            f"{name} {rss / 2**20:.0f} MiB" for name, rss in samples[-1][1].items()), flush=True)
    warm = next(i for i, (sent, _) in enumerate(samples) if sent >= n // 5)
    growth = {name: (samples[-1][1][name] - samples[warm][1][name]) / 2**20 for name in procs}
    print(f"  RSS growth over the last {samples[-1][0] - samples[warm][0]} requests: "
          + ", ".join(f"{name} {g:+.0f} MiB" for name, g in growth.items()) + f"; {len(found)} requests with a problem")
    kinds: dict = {}
    for o in found:
        kinds.setdefault((o.case.cls, "; ".join(soak_problems(o))[:120]), []).append(o)
    for (cls, problem), group in sorted(kinds.items(), key=lambda kv: -len(kv[1]))[:10]:
        print(f"    {len(group)} x [{cls}] {problem}\n      e.g. {malformed.describe(group[0])[:200]}")
    problems = len(found)
    trimmed = malloc_trim(procs)
    if trimmed:
        print("  after malloc_trim(0) in each process (free heap glibc kept, handed back): " + ", ".join(
            f"{name} {rss / 2**20:.0f} MiB" for name, rss in trimmed.items()))
    return {"samples": [(sent, {k: round(v / 2**20, 1) for k, v in rss.items()}) for sent, rss in samples],
            "growth_mib": growth, "problems": problems,
            "after_trim_mib": {k: round(v / 2**20, 1) for k, v in trimmed.items()}}


def soak_problems(o) -> list[str]:
    """bench.malformed's judgement, less the one the soak does not make: its legal jobs are
    accepted (202) but not followed to their end (the malformed section follows them)."""
    return [p for p in malformed.problems(o) if not (o.status == 202 and o.final is None and p.startswith("a legal"))]


def malloc_trim(procs: dict) -> dict[str, int]:
    """Each process's RSS after glibc's malloc_trim(0) is called in it (gdb, attached for the
    call): what stays is memory in use; what goes was freed memory the allocator's arenas kept.
    Empty without gdb (or ptrace rights)."""
    import shutil
    import subprocess

    if not shutil.which("gdb"):
        return {}
    after = {}
    for name, p in procs.items():
        done = subprocess.run(["gdb", "-p", str(p.pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            after[name] = RssSampler._rss(p)
    return after


def section_burst(farm: Farm | None, args) -> dict:
    """(issue 23) 200 concurrent submissions, three runs on one fault farm: every request
    answered (a 202, or a 503 with Retry-After), no dropped connection; every accepted job done.
    Overloaded on purpose: 200 connections at once against the ingress's 32 running + 64
    queued requests (the rest Serve's proxy refuses), and a job queue of 40."""
    from bench import faults

    n, runs = (40, 1) if args.tiny else (200, 3)
    print(f"\n== burst: {n} concurrent submissions, {runs} runs ==", flush=True)
    outcomes = []
    with faults.FaultFarm(num_cpus=4, farm_args={"max_queued_jobs": 40}) as ff:
        for run in range(runs):
            out = faults.concurrent_submissions(ff, n)
            out.scenario += f" (run {run + 1})"
            outcomes.append(out)
            print(faults.table([out]).splitlines()[-1], flush=True)
            for who, count in out.refusals.items():
                print(f"    {count} x 503 '{who}...'", flush=True)
            for error in out.errors[:5]:
                print(f"    {error}", flush=True)
    print("\n" + faults.table(outcomes))
    return {"outcomes": [o.__dict__ for o in outcomes]}


def section_longjobs(farm: Farm | None, args) -> dict:
    """Long jobs run exactly once (issue 23): jobs longer than the queue's visibility timeout
    (D2V_QUEUE_VISIBILITY_S=2), each running job delivered again every second, the runner
    replica killed, S3 frozen longer than the lease, Redis restarted; every stage execution
    counted from the metrics against jobs x stages."""
    from bench import faults

    n = 6 if args.tiny else args.long_jobs
    print(f"\n== long jobs: {n} jobs longer than the visibility timeout, faults injected ==", flush=True)
    with faults.FaultFarm(num_cpus=4, env={"D2V_QUEUE_VISIBILITY_S": "2"}) as ff:
        run = faults.long_jobs(ff, n)
    print(faults.table([run.outcome]))
    for line in run.injected:
        print(f"    injected: {line}")
    for error in run.outcome.errors[:10]:
        print(f"    {error}")
    print(f"\nshortest job {run.shortest_job_s:.1f} s (visibility timeout {run.visibility_s:g} s); "
          f"stage executions:\n{run.table()}")
    print(f"\nexactly once: {run.exact} (extra executions per stage within the {run.interrupted} attempt(s) "
          f"a kill interrupted; jobs re-run that no kill touched: {run.reruns_outside_kills or 'none'})")
    return {"outcome": run.outcome.__dict__, "per_job": run.per_job, "executions": run.executions,
            "interrupted": run.interrupted, "shortest_job_s": run.shortest_job_s, "exact": run.exact,
            "injected": run.injected, "reruns_outside_kills": run.reruns_outside_kills}


SECTIONS = {"malformed": section_malformed, "faults": section_faults, "longjobs": section_longjobs,
            "soak": section_soak, "burst": section_burst}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {', '.join(SECTIONS)}")
    ap.add_argument("--tiny", "--fast", action="store_true", help="a small run of each section")
    ap.add_argument("--url", default=None, help="a running farm (default: start one here)")
    ap.add_argument("--api-key", default=None, help="with --url: the farm's API key")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=2000, help="malformed: how many requests")
    ap.add_argument("--concurrency", type=int, default=4, help="malformed: requests in flight at once")
    ap.add_argument("--follow-s", type=float, default=300, help="malformed: wait this long for accepted jobs")
    ap.add_argument("--soak", type=int, default=10000, help="soak: how many requests")
    ap.add_argument("--farm-env", action="append", default=[], metavar="NAME=VALUE",
                    help="malformed/soak: an environment variable for the farm's processes (repeatable), "
                         "e.g. MALLOC_ARENA_MAX=2")
    ap.add_argument("--long-jobs", type=int, default=20, help="longjobs: how many jobs")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in chosen if s not in SECTIONS]:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")

    results = {}
    if "malformed" in chosen or "soak" in chosen:
        with ExitStack() as stack:
            if args.url:
                farm = Farm(args.url.rstrip("/"), args.api_key, {}, local=bool(serve_processes()))
            else:
                t0 = time.perf_counter()
                extra = dict(pair.split("=", 1) for pair in args.farm_env)
                farm = stack.enter_context(start_farm(extra_env=extra))
                print(f"farm up at {farm.url} in {time.perf_counter() - t0:.0f} s", flush=True)
            for name in ("malformed", "soak"):
                if name in chosen:
                    results[name] = SECTIONS[name](farm, args)
    if "faults" in chosen:  # its own farm, S3 and Redis: it stops them
        results["faults"] = section_faults(None, args)
    if "burst" in chosen:
        results["burst"] = section_burst(None, args)
    if "longjobs" in chosen:  # the same, with a short visibility timeout
        results["longjobs"] = section_longjobs(None, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
