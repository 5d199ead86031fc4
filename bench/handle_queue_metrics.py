"""Does Ray Serve's autoscaling see calls queued at a handle? By where the call is sent from.

    python bench/handle_queue_metrics.py [--seconds 30]

A caller replica keeps six calls in flight to a deployment that takes one at a time
(max_ongoing_requests 1, target_ongoing_requests 1, up to 3 replicas), sent either from six
plain threads (no event loop: how a Celery worker thread calls) or from an event loop thread
with the plain threads waiting on the responses (deployments/runner.py::StageCalls). Prints the
handle's own count of queued and sent requests and the replicas over time. On Ray 2.60 the
plain threads' waiting calls are undercounted (queued 1-2 of the 5 waiting): the deployment
scales up late, and with a short downscale delay (as in tests/test_autoscale.py) back down
under load. Sent from a loop they all count (queued 5; three replicas within 3 s). Local Ray,
CPU only.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import threading
import time

import ray
from ray import serve

CALLS = 6


@serve.deployment(max_ongoing_requests=1, ray_actor_options={"num_cpus": 0.1},
                  autoscaling_config=dict(min_replicas=1, max_replicas=3, target_ongoing_requests=1, upscale_delay_s=1,
                                          downscale_delay_s=30, metrics_interval_s=0.5, look_back_period_s=2))
class OneAtATime:
    def work(self) -> None:
        time.sleep(5)  # a clip's seconds (with 2 s, the plain threads' count reached 3 replicas too)


@serve.deployment(max_ongoing_requests=4, ray_actor_options={"num_cpus": 0.1})
class Caller:
    def __init__(self, target, from_loop: bool):
        self.target = target
        self.loop = asyncio.new_event_loop() if from_loop else None
        if self.loop is not None:
            threading.Thread(target=self.loop.run_forever, daemon=True).start()
        for _ in range(CALLS):
            threading.Thread(target=self._keep_calling, daemon=True).start()

    def _send(self):
        if self.loop is None:
            return self.target.work.remote()
        sent = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(lambda: sent.set_result(self.target.work.remote()))
        return sent.result()

    def _keep_calling(self) -> None:
        while True:
            self._send().result()

    def counts(self) -> tuple[int, int]:
        router = self.target._router
        metrics = getattr(router, "_asyncio_router", router)._metrics_manager
        return metrics.num_queued_requests, sum(metrics.num_requests_sent_to_replicas.values())


def run(from_loop: bool, seconds: float) -> list[tuple[float, int, int, int]]:
    handle = serve.run(Caller.bind(OneAtATime.bind(), from_loop), name="probe", route_prefix=None)
    rows, t0 = [], time.monotonic()
    while (t := time.monotonic() - t0) < seconds:
        queued, sent = handle.counts.remote().result()
        replicas = serve.status().applications["probe"].deployments["OneAtATime"].replica_states.get("RUNNING", 0)
        rows.append((t, queued, sent, replicas))
        time.sleep(3)
    serve.delete("probe")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    ray.init(num_cpus=4, logging_level="ERROR")
    print(f"{CALLS} calls kept in flight to a deployment taking one at a time (up to 3 replicas)\n")
    print("| sent from | s | handle's queued | sent | replicas |\n|---|---|---|---|---|")
    for from_loop in (False, True):
        for t, queued, sent, replicas in run(from_loop, args.seconds):
            print(f"| {'an event loop' if from_loop else 'plain threads'} | {t:.0f} | {queued} | {sent} | {replicas} |")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
