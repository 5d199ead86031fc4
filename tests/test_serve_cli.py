"""`d2v serve`, as a user starts it: a real process in a directory outside the repository
(the Serve config shipped with the package), HTTP on 127.0.0.1, API keys, `d2v jobs` against
it, Prometheus text on its metrics port. First with a Ray of its own, stopped by SIGTERM
mid-job; then started again on the same store and queue, joining the Ray that a
`ray start --head` runs, with the default ports taken: the job finishes without being
resubmitted, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from d2v.jobqueue import free_port, free_ports
from tests.conftest import textured_image
from tests.processes import end_session
from tests.test_images import png_bytes

REPO = Path(__file__).resolve().parent.parent


def _start_from_script(tmp_path: Path, env: dict, log_name: str, url: str, metrics_port: int) -> int:
    """`d2v serve ... &` from a shell script (SIGINT ignored, as a non-interactive shell does
    for `cmd &`); returns its pid once it says it is ready."""
    exe = Path(sys.executable).parent / "d2v"
    log = tmp_path / log_name
    script = tmp_path / "start.sh"
    script.write_text(f"#!/bin/sh\n{exe} serve --port {url.rsplit(':', 1)[1]} --metrics-port {metrics_port} "
                      f"> {log} 2>&1 &\necho $!\n")
    pid = int(subprocess.run(["sh", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=30).stdout.strip())
    _wait_until_ready(log, url, lambda: _alive(pid))
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _wait_until_ready(log: Path, url: str, alive, timeout_s: float = 240) -> None:
    """Until `d2v serve` says it is ready at `url` (any URL: ""); fails at once, with its log, if
    it exited (a Ray that did not come up on a loaded machine ends it: waiting on would only
    time out)."""
    deadline = time.monotonic() + timeout_s
    while f"ready at {url}" not in log.read_text():
        assert alive(), "d2v serve exited: " + log.read_text()[-3000:]
        assert time.monotonic() < deadline, "d2v serve did not become ready: " + log.read_text()[-3000:]
        time.sleep(0.5)


def _stop_within_30_s(pid: int, log: Path) -> None:
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while time.monotonic() - t0 < 30:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("d2v serve was still running 30 s after SIGTERM: " + log.read_text()[-2000:])
    assert "d2v: stopped" in log.read_text()


@contextmanager
def _ray_head(tmp_path: Path, env: dict):
    """`ray start --head` of this test's own (its own ports, temp dir and process session;
    ended by killing that session, never `ray stop`). Yields the process, its GCS port and
    its metrics port."""
    exe = Path(sys.executable).parent
    gcs, node, objects, client, agent, agent_grpc, runtime_agent, metrics = free_ports(8)
    temp = tempfile.mkdtemp(prefix="d2vray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [str(exe / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--node-manager-port={node}",
         f"--object-manager-port={objects}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--runtime-env-agent-port={runtime_agent}", f"--metrics-export-port={metrics}", "--include-dashboard=false",
         "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield head, gcs, metrics
    finally:
        end_session(head)  # SIGKILL: after a SIGTERM, the head waited out 30 s and was killed all the same
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def _ports_taken(*ports: int):
    """Listen on `ports` (the defaults d2v serve would take), those nobody else has already."""
    held = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            held.append(s)
        except OSError:
            s.close()
    try:
        yield
    finally:
        for s in held:
            s.close()


def _wait_for_metrics(port: int, wanted: list[str], timeout_s: float = 180) -> None:
    """Until the Prometheus text on `port` has every line of `wanted` (d2v's series; Ray's own
    labels: node, worker, session, left out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        found = {re.sub(r'(Component|NodeAddress|SessionName|Version|WorkerId|otel_scope_\w+)="[^"]*",?', "", line)
                 for line in text.splitlines() if line.startswith("ray_d2v_")}
        if set(wanted) <= found:
            return
        assert time.monotonic() < deadline, sorted(found)
        time.sleep(1)


def _post_until_taken(client: httpx.Client, files: dict, request: dict, headers: dict, deadline: float) -> httpx.Response:
    """POST a job; a loaded machine may answer 503 (the queue slow to answer): retried, as
    `d2v submit` does."""
    while (r := client.post("/v1/jobs", files=files, data={"request": json.dumps(request)}, headers=headers)) \
            .status_code == 503 and time.monotonic() < deadline:
        time.sleep(2)
    return r


def _wait_done(client: httpx.Client, url: str, headers: dict, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while (status := client.get(url, headers=headers, params={"wait_s": 10}).json())["status"] not in (
            "succeeded", "failed"):
        assert time.monotonic() < deadline, status
    return status


@pytest.mark.timeout(900)
def test_d2v_serve_stopped_by_sigterm_mid_job_restarted_on_a_running_ray_finishes_it_and_stops_on_ctrl_c(tmp_path):
    """1. A Ray of its own: `d2v serve` from a directory outside the repository (no --config:
    the serve-local.yaml installed with d2v), API keys set, started from a script. Its metrics
    port counts two refusals. Sent SIGTERM with a job running, it is gone within 30 s (Serve,
    Ray and its Redis with it), the job left unfinished.
    2. A running Ray: after `ray start --head` (what Ray users often have running), `d2v serve`
    with RAY_ADDRESS joins it, on the same store and queue directory: the replicas, started by
    that cluster's raylet without this shell's environment, get the store, the queue and the
    keys from the app's runtime_env. With 8000 and 8080 taken it serves elsewhere and says
    where. The job finishes without being resubmitted; the farm takes a job, lists each key's
    jobs (`d2v jobs`), counts them on the cluster's metrics port, and stops cleanly on Ctrl-C.
    (One test, two starts: a start of its own for the Ctrl-C part, and another for joining a
    Ray, cost about a minute of CI each and tested nothing more.)"""
    import ray

    if ray.is_initialized():  # one Ray per process: d2v serve starts its own
        ray.shutdown()
    exe = Path(sys.executable).parent / "d2v"
    # The head's environment: none of d2v's settings (the replicas must get them from the
    # runtime_env). Metrics exported every 2 s, not Ray's 10 (a Ray setting by environment, as a
    # user would set it): both parts wait for counts on a metrics port.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("D2V_", "RAY_ADDRESS", "PYTHONPATH"))}
    base["RAY_metrics_report_interval_ms"] = "2000"
    env = {**base, **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
           "D2V_DATA_DIR": str(tmp_path / "data"), "D2V_REDIS_DIR": str(tmp_path / "redis"), "D2V_API_KEYS": "k-1,k-2"}
    assert not tmp_path.is_relative_to(REPO) and not (tmp_path / "deployments").exists()
    farm_port, metrics_port = free_ports(2)
    farm = f"http://127.0.0.1:{farm_port}"
    auth = {"Authorization": "Bearer k-2"}
    small = {"path": [{"x": 50, "y": 90}, {"x": 270, "y": 90}], "effect": "pan", "duration_s": 1, "fps": 8,
             "width": 160, "height": 90}
    small_files = {"image": ("p.png", png_bytes(textured_image(320, 180, seed=3)), "image/png")}

    # 1. Its own Ray, its metrics on the port given (not the default 8080: other farms may be up
    # on this machine). Two refusals: no key, and a key that is not ASCII (a 401, not a 500).
    pid = _start_from_script(tmp_path, env, "serve.log", farm, metrics_port)
    client = httpx.Client(base_url=farm, timeout=30)
    for headers in ({}, {"Authorization": "Bearer ключ-2".encode()}):
        r = client.post("/v1/jobs", files=small_files, data={"request": json.dumps(small)}, headers=headers)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
    _wait_for_metrics(metrics_port, ['ray_d2v_requests_refused_total{code="401",reason="Unauthorized"} 2.0'])
    # SIGTERM mid-job. Motion blur with many sub-frames at 720p: about 8 s of rendering on 2 quiet
    # cores (more under load), while the stop ends the job within about 5 s of SIGTERM (Serve's
    # shutdown does not wait for a consumer's task), so SIGTERM lands mid-job; rendered again in
    # full in part 2. (s18: 2 s of it, about 3 s of rendering once it was faster, finished first.)
    request = {"path": [{"x": 50, "y": 90}, {"x": 270, "y": 90}], "effect": "pan", "duration_s": 6, "fps": 24,
               "width": 1280, "height": 720, "motion_blur": 1.0, "motion_blur_samples": 32}
    files = {"image": ("p.png", png_bytes(textured_image(640, 360, seed=4)), "image/png")}
    r = client.post("/v1/jobs", files=files, data={"request": json.dumps(request)}, headers=auth)
    assert r.status_code == 202, r.text
    slow = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{slow}", headers=auth).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    _stop_within_30_s(pid, tmp_path / "serve.log")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{farm}/healthz", timeout=2)
    status = json.loads((tmp_path / "data/jobs" / slow / "status.json").read_text())
    assert status["status"] in ("queued", "running"), status  # unfinished, and not failed

    # 2. Started again, joining a running Ray, 8000 and 8080 taken (a child of this test, so
    # Ctrl-C reaches it as a terminal's would).
    with _ray_head(tmp_path, base) as (head, gcs, cluster_metrics), _ports_taken(8000, 8080):
        log_path = tmp_path / "serve2.log"
        log = open(log_path, "w")
        proc = subprocess.Popen([str(exe), "serve"], cwd=tmp_path, env={**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"},
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(log_path, "", lambda: proc.poll() is None and head.poll() is None)
            text = log_path.read_text()
            assert f"joining the Ray at 127.0.0.1:{gcs}" in text, text
            assert "HTTP port 8000 is taken: using http://127.0.0.1:" in text, text
            assert "deployments/configs/serve-local.yaml" in text
            farm = re.search(r"ready at (http://127\.0\.0\.1:\d+)", text).group(1)
            assert not farm.endswith(":8000")
            assert re.search(r"store: ([^;]+);", text).group(1) == str(tmp_path / "data")
            client = httpx.Client(base_url=farm, timeout=30)
            # Where the store is goes to operators only (issue 23); the videos below show which one.
            assert client.get("/healthz").json()["dependencies"] == {"store": "up", "queue": "up"}
            status = _wait_done(client, f"/v1/jobs/{slow}", auth, 240)
            assert status["status"] == "succeeded", status
            assert (tmp_path / "data/jobs" / slow / "video.mp4").is_file()

            r = client.post("/v1/jobs", files=small_files, data={"request": json.dumps(small)})
            assert r.status_code == 401 and "API key" in r.json()["detail"]  # the keys reached the replicas
            r = _post_until_taken(client, small_files, small, auth, time.monotonic() + 120)
            assert r.status_code == 202, r.text
            status = _wait_done(client, r.json()["status_url"], auth, 120)
            assert status["status"] == "succeeded", status
            video = client.get(status["result"]["video_url"], headers=auth)
            assert video.status_code == 200 and video.content[4:8] == b"ftyp"
            # The local store's Range answers (S3 answers its own): a refusal is JSON like every
            # other (Starlette's were text), a unit other than bytes is ignored (RFC 9110 14.2).
            size, ranged = len(video.content), lambda asked: client.get(
                status["result"]["video_url"], headers={**auth, "Range": asked})
            for asked, code in (("bytes=5-2", 400), ("bytes=abc", 400), (f"bytes={size}-", 416)):
                r = ranged(asked)
                assert r.status_code == code and r.json()["detail"].startswith(f"Range {asked!r}: "), (asked, r.text)
            assert r.headers["content-range"] == f"bytes */{size}"
            part, whole = ranged("bytes=0-9"), ranged("items=0-1")
            assert (part.status_code, part.content, whole.status_code, whole.content) == (
                206, video.content[:10], 200, video.content)
            assert (tmp_path / "data/jobs" / status["job_id"] / "video.mp4").is_file()
            # `d2v jobs`: each key its own list, newest first.
            listed = subprocess.run([str(exe), "jobs", "--server", farm, "--api-key", "k-2"], capture_output=True,
                                    text=True, env=env, timeout=60)
            assert listed.returncode == 0, listed
            assert [line.split()[:2] for line in listed.stdout.splitlines()] == [
                [status["job_id"], "succeeded"], [slow, "succeeded"]], listed
            other = subprocess.run([str(exe), "jobs", "--server", farm, "--api-key", "k-1"], capture_output=True,
                                   text=True, env=env, timeout=60)
            assert other.returncode == 0 and other.stdout == "" and other.stderr == "no jobs yet\n", other
            # Operators' view: the KPIs (the store's: both jobs), and on the cluster's metrics port
            # this Ray's two jobs and its one refusal.
            stats = client.get("/v1/stats", headers=auth).json()
            assert (stats["all"]["videos"], stats["all"]["success_rate"]) == (2, 1.0)
            _wait_for_metrics(cluster_metrics, [
                'ray_d2v_jobs_total{backend="camera",effect="pan",queue="d2v-jobs",status="succeeded"} 2.0',
                'ray_d2v_requests_refused_total{code="401",reason="Unauthorized"} 1.0'])
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            log.close()
        text = log_path.read_text()
        assert code == 0, text[-2000:]
        assert "d2v: stopped" in text and "SIGTERM received" not in text, text[-2000:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{farm}/healthz", timeout=2)
        # The farm stopped: the client says so in one line once its bound is spent.
        gone = subprocess.run([str(exe), "jobs", "--server", farm, "--api-key", "k-2", "--timeout", "1"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert gone.returncode == 1 and gone.stderr.count("\n") == 1
        assert gone.stderr.startswith(f"d2v: error: the farm at {farm} is not reachable"), gone.stderr


def test_serve_config_names_resolve_to_the_shipped_files_and_a_missing_one_is_one_line(tmp_path):
    from d2v.cli import serve_config_path, shipped_serve_configs

    shipped = shipped_serve_configs()
    assert serve_config_path(None) == shipped / "serve-local.yaml"
    # The repository's old place (DESIGN.md's `--config configs/serve-local.yaml`) and the bare name.
    assert serve_config_path("configs/serve-gpu.yaml") == serve_config_path("serve-gpu.yaml") == \
        shipped / "serve-gpu.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text((shipped / "serve-local.yaml").read_text())
    assert serve_config_path(str(own)) == own  # a file of one's own still wins
    done = subprocess.run([str(Path(sys.executable).parent / "d2v"), "serve", "--config", "serve-huge.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("d2v: error: Serve config not found: serve-huge.yaml (give a file, or one shipped with "
                           "d2v: serve-gpu.yaml, serve-local.yaml)\n")


def test_free_ports_never_hands_a_port_out_twice():
    # The servers a test starts (a Ray head's nine components, SeaweedFS's ten) bind their
    # ports only later: a port picked and let go can come back at the next pick, which is how
    # a Ray head once refused to start on CI. Six hundred picks from the kernel's ~28,000
    # ephemeral ports repeat one with probability ~0.998 when nothing keeps them apart.
    ports = [free_port() for _ in range(300)] + free_ports(300)
    assert len(set(ports)) == 600
