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


def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict, **headers: str) -> None:
    body = json.dumps(payload).encode()
    handler.send_response(status)
    for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class _BusyFarm(BaseHTTPRequestHandler):
    """Answers every request as the farm does when its queue is full."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        _send_json(self, 503, {"detail": "the farm is busy (16 jobs waiting); retry in a few seconds"},
                   **{"Retry-After": "2"})

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


class _JsonFarm(BaseHTTPRequestHandler):
    """Answers every request with the farm's empty listing, and notes what it was asked."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = json.dumps({"jobs": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def _serve(handler) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_bad_timeout_and_limit_are_refused_before_the_farm_is_asked(tmp_path):
    """nan or inf retried forever, -1 gave up 'after -1 s', --limit 0 or 1000 went to the farm
    (a farm that is away waited out for 60 s first): each is the caller's one-line error."""
    (tmp_path / "p.png").write_bytes(png_bytes(textured_image(320, 180)))
    httpd, server = _serve(_JsonFarm)
    try:
        for flags, said in ((["--timeout", "nan"], "--timeout must be a number of seconds above 0, got nan"),
                            (["--timeout", "inf"], "got inf"), (["--timeout", "-1"], "got -1"),
                            (["--timeout", "0"], "got 0"), (["--limit", "0"], "--limit must be in 1..100, got 0"),
                            (["--limit", "1000"], "got 1000")):
            done = d2v_cli("jobs", "--server", server, *flags)
            assert done.returncode == 2 and done.stdout == "", (flags, done)
            assert done.stderr.startswith("d2v: error: ") and said in done.stderr and done.stderr.count("\n") == 1
        done = d2v_cli("submit", str(tmp_path / "p.png"), "--path", str(REPO / "examples/paths/pan.json"),
                       "--server", server, "--timeout", "nan", "-o", str(tmp_path / "out.mp4"))
        assert done.returncode == 2 and "--timeout must be" in done.stderr and done.stderr.count("\n") == 1
    finally:
        httpd.shutdown()
    assert _JsonFarm.seen == []  # nothing was sent
    # A farm that is away, with a sane --timeout: still checked first, not after the wait.
    done = d2v_cli("jobs", "--server", f"http://127.0.0.1:{free_port()}", "--timeout", "30", "--limit", "0")
    assert done.returncode == 2 and "--limit" in done.stderr


def test_a_server_that_is_not_a_farm_is_named_so_without_its_page(tmp_path):
    """Another web server (Python's own, serving a folder) at --server: one line that says so
    and what to check, not its HTML error page."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    (tmp_path / "www").mkdir()
    (tmp_path / "p.png").write_bytes(png_bytes(textured_image(320, 180)))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd, server = _serve(partial(Quiet, directory=str(tmp_path / "www")))
    try:
        jobs = d2v_cli("jobs", "--server", server, "--timeout", "5")
        submit = d2v_cli("submit", str(tmp_path / "p.png"), "--path", str(REPO / "examples/paths/pan.json"),
                         "--server", server, "--timeout", "5", "-o", str(tmp_path / "out.mp4"))
    finally:
        httpd.shutdown()
    assert jobs.returncode == 2 and jobs.stderr == (f"d2v: error: {server}: not a d2v farm (HTTP 404, text/html, "
                                                    "from its /v1/jobs); check --server\n")
    assert submit.returncode == 2 and submit.stderr == (f"d2v: error: {server}: not a d2v farm (HTTP 501, "
                                                        "text/html, from its /v1/jobs); check --server\n")
    assert not (tmp_path / "out.mp4").exists()


class _RefusingFarm(BaseHTTPRequestHandler):
    """A farm that refuses, in its own JSON."""

    def do_GET(self) -> None:
        _send_json(self, 422, {"detail": "limit: must be at most 100"})

    def log_message(self, *args) -> None:
        pass


def test_the_farms_own_refusal_is_passed_on_as_it_is():
    httpd, server = _serve(_RefusingFarm)
    try:
        done = d2v_cli("jobs", "--server", server, "--timeout", "5")
    finally:
        httpd.shutdown()
    assert done.returncode == 2 and done.stderr == "d2v: error: 422: limit: must be at most 100\n"
