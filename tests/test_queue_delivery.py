"""When does the queue hand a job out again? Celery run as Ray Serve's adapter runs it (worker
thread, thread pool: tests/queue_probe.py) on a real Redis, with D2V_QUEUE_VISIBILITY_S short.

kombu's Redis transport puts an unacknowledged message back once it is older than the
visibility timeout, whether or not a worker still runs it: each worker sweeps the unacked set
on a timer (d2v.jobqueue sets it to every min(10 s, visibility)). With the adapter's own
late acknowledgement a task longer than the visibility timeout is therefore delivered again
while it runs; d2v acknowledges at the start (d2v.jobqueue), and the same task is delivered once,
a second worker (a replica starting) included."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from d2v.jobqueue import RedisServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def probe(url: str, queue: str, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "D2V_QUEUE_VISIBILITY_S": "1", "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-m", "tests.queue_probe", url, "--queue", queue, "--task-s", "6",
                             "--watch-s", "8", "--second-s", "2", *flags],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def deliveries(proc: subprocess.Popen) -> list[float]:
    out, err = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, err[-2000:]
    return json.loads(lines[-1])["deliveries"]


def test_a_running_task_comes_back_with_late_acks_and_never_when_acked_at_start(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        # Both at once (two queues on one Redis): each probe is mostly waiting.
        late, ours = probe(server.url, "late", "--late"), probe(server.url, "ours")
        late_seen, ours_seen = deliveries(late), deliveries(ours)
    # The adapter's default: the same message delivered again (put back while the first
    # delivery ran, past the visibility timeout; it is acknowledged only at the end).
    assert len(late_seen) >= 2, late_seen
    # d2v's: once, though a second worker started after the visibility timeout.
    assert len(ours_seen) == 1, ours_seen


def test_free_ports_lie_below_the_range_outgoing_connections_take_theirs_from():
    """The ports a farm, its Redis and its S3 server are started on: free, distinct, and none in
    the kernel's ephemeral range, whence every outgoing connection's local port comes (a port
    picked there, by binding port 0, was taken by one before Serve's proxy bound it: CI's
    "Failed to bind to address '127.0.0.1:32823'", and a farm's 36 tests errored), nor among
    the ports Ray gives its workers (a Redis put at 12463 clashed with them)."""
    import socket

    from d2v.jobqueue import PORT_FLOOR, _ephemeral_ports, free_ports

    low, high = _ephemeral_ports()
    assert low - PORT_FLOOR >= 1000  # (this machine's range leaves room below it)
    ports = free_ports(40)
    assert len(set(ports)) == 40 and all(PORT_FLOOR <= p < low for p in ports), ports
    assert not any(10002 <= p <= 19999 for p in ports)  # (Ray's workers' ports, by default)
    assert not set(ports) & set(free_ports(40))  # (never handed out twice in a process)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
