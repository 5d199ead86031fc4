"""Run Celery the way Ray Serve's adapter does (CeleryTaskProcessorAdapter: `worker_main` on a
thread, a thread pool, our `processor_config`) against a real Redis, and record every
delivery of one slow task: `python -m tests.queue_probe REDIS_URL --task-s 6 [--late]`
prints the deliveries as JSON. Used by tests/test_queue_delivery.py in a subprocess (a Celery
worker thread cannot be stopped cleanly inside pytest's process).

    --late        the adapter's own default, acks_late (ours acknowledges at the task's start)
    --second-s S  start a second worker (another replica) S seconds after the task was queued
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import redis


def worker(config, name: str, record) -> None:
    from d2v.jobqueue import RENDER_TASK, _adapter_class

    adapter = _adapter_class()(config)
    adapter.initialize(2)
    adapter.register_task_handle(record, RENDER_TASK)
    args = ["worker", f"--hostname={name}@probe", "-Q", config.queue_name, "--loglevel=ERROR"]
    threading.Thread(target=adapter._app.worker_main, args=(args,), daemon=True).start()  # as start_consumer does


def main() -> None:
    from d2v.jobqueue import RENDER_TASK, JobQueue, processor_config

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--queue", default="probe")
    parser.add_argument("--task-s", type=float, default=6.0)
    parser.add_argument("--late", action="store_true")
    parser.add_argument("--second-s", type=float, default=None)
    parser.add_argument("--watch-s", type=float, default=12.0)
    args = parser.parse_args()
    config = processor_config(args.queue, args.url)
    if args.late:
        adapter = config.adapter_config
        config = config.model_copy(update={"adapter_config": adapter.model_copy(update={
            "task_custom_config": {**adapter.task_custom_config, "acks_late": True}})})
    r = redis.Redis.from_url(args.url)

    def record(job_id: str) -> str:
        r.rpush(f"{args.queue}:deliveries", json.dumps([threading.current_thread().name, time.time()]))
        time.sleep(args.task_s)
        return "done"

    worker(config, "first", record)
    time.sleep(2)  # the first worker is consuming
    queued = time.time()
    JobQueue(args.queue, args.url).enqueue("job-1")
    if args.second_s is not None:
        time.sleep(args.second_s)
        worker(config, "second", record)
    time.sleep(max(0.0, queued + args.watch_s - time.time()))
    deliveries = [json.loads(d) for d in r.lrange(f"{args.queue}:deliveries", 0, -1)]
    print(json.dumps({"deliveries": [round(t - queued, 1) for _, t in deliveries]}), flush=True)


if __name__ == "__main__":
    main()
