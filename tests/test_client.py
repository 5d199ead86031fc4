"""`d2v submit` / `d2v jobs` (d2v.client) when the farm is not there to answer: nothing
listening (a stopped farm), or a farm that stays busy (503 with Retry-After). Against a
running farm they are tested in tests/test_serve.py (S3) and tests/test_serve_cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from d2v.jobqueue import free_port
from tests.conftest import textured_image
from tests.test_images import png_bytes

REPO = Path(__file__).resolve().parent.parent


def d2v_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "d2v"), *args], capture_output=True, text=True,
                          timeout=120)


def test_submit_to_a_stopped_farm_gives_up_within_the_bound_with_one_line(tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(textured_image(320, 180)))
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = d2v_cli("submit", str(tmp_path / "p.png"), "--path", str(REPO / "examples/paths/pan.json"),
                   "--server", server, "--timeout", "2", "-o", str(tmp_path / "out.mp4"))
    assert done.returncode == 1
    assert done.stderr == (f"d2v: error: the farm at {server} is not reachable ([Errno 111] Connection refused); "
                           "gave up after 2 s (--timeout)\n")
    assert not (tmp_path / "out.mp4").exists()


class _BusyFarm(BaseHTTPRequestHandler):
    """Answers every request as the farm does when its queue is full."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = json.dumps({"detail": "the farm is busy (16 jobs waiting); retry in a few seconds"}).encode()
        self.send_response(503)
        self.send_header("Retry-After", "2")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_busy_farm_is_retried_after_retry_after_then_reported():
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _BusyFarm)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        server = f"http://127.0.0.1:{httpd.server_address[1]}"
        done = d2v_cli("jobs", "--server", server, "--timeout", "2.5", "--api-key", "k")
    finally:
        httpd.shutdown()
    assert done.returncode == 1
    assert done.stderr == (f"d2v: error: the farm at {server} is busy (the farm is busy (16 jobs waiting); retry in "
                           "a few seconds); gave up after 2.5 s (--timeout)\n")
    # Retry-After: 2 within 2.5 s: tries at 0, 2 and 2.5 s at most (its own backoff, 0.5 s
    # doubling, would have made four).
    assert 2 <= len(_BusyFarm.seen) <= 3 and set(_BusyFarm.seen) == {"/v1/jobs?limit=20"}
