"""`d2v serve --config configs/serve-local.yaml`, as a user starts it: a real process,
a real local Ray, HTTP on 127.0.0.1:8000, API keys, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import textured_image
from tests.test_images import png_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(400)
def test_d2v_serve_local_config_serves_jobs_and_stops_on_ctrl_c(tmp_path):
    import ray

    if ray.is_initialized():  # one Ray per process: this test starts its own
        ray.shutdown()
    exe = Path(sys.executable).parent / "d2v"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("D2V_", "RAY_ADDRESS"))}
    env.update({"D2V_DATA_DIR": str(tmp_path / "data"), "D2V_API_KEYS": "k-1,k-2"})
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(exe), "serve", "--config", str(REPO / "configs/serve-local.yaml")], cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = httpx.Client(base_url="http://127.0.0.1:8000", timeout=30)
        deadline = time.monotonic() + 240
        while "ready at http://127.0.0.1:8000" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "d2v serve did not become ready"
            time.sleep(0.5)

        request = {"path": [{"x": 50, "y": 90}, {"x": 270, "y": 90}], "effect": "pan", "duration_s": 1,
                   "fps": 8, "width": 160, "height": 90}
        files = {"image": ("p.png", png_bytes(textured_image(320, 180, seed=3)), "image/png")}
        r = client.post("/v1/jobs", files=files, data={"request": json.dumps(request)})
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        wrong = {"Authorization": "Bearer ключ-2".encode()}  # not ASCII: still a 401, not a 500
        r = client.post("/v1/jobs", files=files, data={"request": json.dumps(request)}, headers=wrong)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        auth = {"Authorization": "Bearer k-2"}
        r = client.post("/v1/jobs", files=files, data={"request": json.dumps(request)}, headers=auth)
        assert r.status_code == 202, r.text
        url = r.json()["status_url"]
        while (status := client.get(url, headers=auth).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline + 120
            time.sleep(0.2)
        assert status["status"] == "succeeded", status
        video = client.get(status["result"]["video_url"], headers=auth)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
        assert (tmp_path / "data/jobs" / status["job_id"] / "video.mp4").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert "d2v: stopped" in (tmp_path / "serve.log").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://127.0.0.1:8000/healthz", timeout=2)


@pytest.mark.timeout(300)
def test_d2v_serve_started_from_a_script_stops_on_sigterm(tmp_path):
    """Started in the background by a shell script (SIGINT ignored, as a non-interactive shell
    does for `cmd &`), `d2v serve` still stops within 30 s of SIGTERM, Serve and Ray with it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    exe = Path(sys.executable).parent / "d2v"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("D2V_", "RAY_ADDRESS"))}
    env["D2V_DATA_DIR"] = str(tmp_path / "data")
    script = tmp_path / "start.sh"
    script.write_text(f"#!/bin/sh\n{exe} serve --config {REPO / 'configs/serve-local.yaml'} > {tmp_path / 'serve.log'} "
                      f"2>&1 &\necho $!\n")
    pid = int(subprocess.run(["sh", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=30).stdout.strip())
    deadline = time.monotonic() + 240
    while "ready at http://127.0.0.1:8000" not in (tmp_path / "serve.log").read_text():
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
        time.sleep(0.5)
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
        pytest.fail("d2v serve was still running 30 s after SIGTERM: " + (tmp_path / "serve.log").read_text()[-2000:])
    assert "d2v: stopped" in (tmp_path / "serve.log").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://127.0.0.1:8000/healthz", timeout=2)
