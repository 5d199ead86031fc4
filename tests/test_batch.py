"""Batch jobs (d2v.batch): in-process for the bookkeeping, and end to end through a real
Ray head and the real `ray job submit` CLI with results in a real S3 server (SeaweedFS).

The head is ours alone: every port chosen free, its own temp dir, started in its own
session, and stopped by killing exactly that session's processes (`ray stop` would
stop every Ray cluster of the user on this machine, other test runs' included).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pytest

from d2v.batch import Options, read_items, run_batch
from d2v.encode import decode_video
from d2v.s3store import S3Store
from d2v.store import LocalStore, batch_manifest_key
from tests.conftest import textured_image
from tests.processes import end_session
from tests.seaweed import free_ports, wait_until_answering

pytestmark = pytest.mark.timeout(300)

BIN = Path(sys.executable).parent
PATH_JSON = {"canvas": {"width": 320, "height": 180}, "points": [{"x": 60, "y": 90}, {"x": 260, "y": 100}]}
SMALL = {"path": PATH_JSON, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160, "height": 90,
         "preset": "ultrafast"}


def write_batch(workdir: Path, lines: list[dict | str], name: str = "jobs.jsonl") -> Path:
    for i in range(3):
        image = workdir / f"img{i}.png"
        if not image.exists():
            cv2.imwrite(str(image), textured_image(320, 180, seed=i)[:, :, ::-1])
    path = workdir / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def manifest_rows(store, stem: str) -> list[dict]:
    return [json.loads(line) for line in store.get_bytes(batch_manifest_key(stem)).decode().splitlines()]


# ---------------------------------------------------------------- in-process (no Ray)


def test_read_items_reports_bad_lines_by_id_or_line(tmp_path):
    path = write_batch(tmp_path, [
        {**SMALL, "id": "a", "image": "img0.png"},
        {**SMALL, "id": "a", "image": "img1.png"},          # duplicate id
        {**SMALL, "id": "../x", "image": "img1.png"},       # unsafe id
        {**SMALL, "id": "c"},                               # no image
        {**SMALL, "id": "d", "image": "img1.png", "fps": 0},
        "[1, 2]",
        "{not json",
        "",
    ])
    items = read_items(path)
    assert [i.line for i in items] == [1, 2, 3, 4, 5, 6, 7]
    assert items[0].error is None and items[0].id == "a"
    assert "duplicate id 'a' (first on line 1)" in items[1].error
    assert "invalid job id" in items[2].error and items[2].label == "line-3"
    assert "'image' is required" in items[3].error and items[3].label == "c"
    assert "fps" in items[4].error
    assert "expected a JSON object" in items[5].error
    assert "not JSON" in items[6].error


def test_in_process_batch_resumes_and_fails_bad_items_alone(tmp_path):
    env = {"D2V_DATA_DIR": str(tmp_path / "store")}
    store = LocalStore(tmp_path / "store")
    work = tmp_path / "work"
    work.mkdir()
    path = write_batch(work, [
        {**SMALL, "id": "first", "image": "img0.png"},
        {**SMALL, "image": "img1.png"},                     # id derived from the content
        {**SMALL, "id": "gone", "image": "missing.png"},
        {**SMALL, "id": "noeffect", "image": "img2.png", "effect": "wobble"},
    ], name="my batch.jsonl")
    rows = run_batch(path, env, Options(use_ray=False), base_dir=work)
    assert [r.status for r in rows] == ["succeeded", "succeeded", "failed", "failed"]
    assert rows[0].id == "first" and len(rows[1].id) == 24
    assert "missing.png" in rows[2].error and "unknown effect 'wobble'" in rows[3].error
    assert rows[0].keys["video"] == "jobs/first/video.mp4" and store.exists(rows[1].keys["video"])
    assert [r["status"] for r in manifest_rows(store, "my batch")] == [r.status for r in rows]
    # Every rendered item was checked against its path: the verdict in its row, the picture stored.
    assert [r["fidelity"] for r in manifest_rows(store, "my batch")] == ["followed", "followed", None, None]
    assert store.exists(rows[0].keys["fidelity"]) and rows[0].keys["fidelity"].endswith("fidelity.png")

    again = run_batch(path, env, Options(use_ray=False), base_dir=work)
    assert [r.status for r in again] == ["skipped", "skipped", "failed", "failed"]
    assert [r.id for r in again] == [r.id for r in rows] and again[1].keys == rows[1].keys


def test_in_process_batch_reads_images_from_s3(seaweed, tmp_path):
    env = seaweed.env("batch-s3-inputs")
    s3_store = S3Store.from_env(env)
    s3_store.put_bytes("inputs/pic.png", cv2.imencode(".png", textured_image(320, 180, 5))[1].tobytes())
    path = write_batch(tmp_path, [
        {**SMALL, "id": "from-s3", "image": f"s3://{s3_store.bucket}/inputs/pic.png"},
        {**SMALL, "id": "nokey", "image": f"s3://{s3_store.bucket}/inputs/none.png"},
        {**SMALL, "id": "nobucket", "image": "s3://no-such-bucket-d2v/x.png"},
    ])
    rows = run_batch(path, env, Options(use_ray=False), base_dir=tmp_path)
    assert [r.status for r in rows] == ["succeeded", "failed", "failed"]
    assert "not found" in rows[1].error and "not found" in rows[2].error
    frames, fps = decode_video(io.BytesIO(s3_store.get_bytes("jobs/from-s3/video.mp4")))
    assert frames.shape == (8, 90, 160, 3) and fps == 8


def test_cli_exit_status(tmp_path, monkeypatch, capsys):
    from d2v.batch import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("D2V_S3_ENDPOINT", raising=False)
    assert main(["no-such.jsonl"]) == 2
    write_batch(tmp_path, [{**SMALL, "id": "ok", "image": "img0.png"}], name="good.jsonl")
    assert main(["good.jsonl", "--no-ray"]) == 0
    write_batch(tmp_path, [{**SMALL, "id": "ok", "image": "img0.png"}, {**SMALL, "id": "x", "image": "x.png"}],
                name="mixed.jsonl")
    assert main(["mixed.jsonl", "--no-ray"]) == 1
    out = capsys.readouterr().out
    assert "1 succeeded" in out and "0 skipped" in out  # good.jsonl
    assert "0 succeeded, 1 skipped (already done), 1 failed" in out and "FAILED x (line 2)" in out


# ---------------------------------------------------------------- a real Ray head


class RayHead:
    """`ray start --head --block` on free ports, in its own session; `stop()` kills that
    session's processes only (Ray's workers change process group, not session)."""

    def __init__(self, env: dict[str, str], extra_args: list[str] | tuple[str, ...] = ()):
        self.env, self.extra_args = env, list(extra_args)
        self.temp_dir = tempfile.mkdtemp(prefix="d2vray-", dir="/tmp")  # short: Unix socket paths
        (self.port, self.dashboard_port, *self.other_ports) = free_ports(9)
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The GCS address, for ray.init and worker nodes (Ray binds the node's own IP)."""
        from ray._private.services import get_node_ip_address

        return f"{get_node_ip_address()}:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 90) -> "RayHead":
        others = ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                  "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
                  "--object-manager-port")
        ports = {"--port": self.port, "--dashboard-port": self.dashboard_port, **dict(zip(others, self.other_ports))}
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--disable-usage-stats",
               "--include-dashboard=true", "--dashboard-host", "127.0.0.1",
               "--temp-dir", self.temp_dir, *[f"{k}={v}" for k, v in ports.items()], *self.extra_args]
        self.log = open(Path(self.temp_dir) / "head.log", "wb")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        # Its dashboard answers once job submission works (401 with token auth: up too).
        if wait_until_answering(self.proc, f"{self.dashboard}/api/version", timeout_s, "ray start", self.log_text):
            return self
        log = self.log_text()
        self.stop()
        raise RuntimeError(f"the Ray head's dashboard did not answer in {timeout_s} s:\n{log}")

    def log_text(self) -> str:
        return (Path(self.temp_dir) / "head.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        end_session(self.proc)  # SIGKILL: a SIGTERM's graceful stop took 5 s, for nothing kept
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head():
    # Ray 2.60 turns on token auth; one random token for the head and our CLI calls, so
    # nothing is read from or written to ~/.ray.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    head = RayHead(env).start()
    yield head
    head.stop()


def submit(head: RayHead, workdir: Path, runtime_env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", str(workdir),
           "--runtime-env-json", json.dumps(runtime_env), "--", "python", "-m", "d2v.batch", "jobs.jsonl", *args]
    return subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=240)


def test_ray_job_submit_batch_of_six_with_a_bad_item(ray_head, seaweed, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    good = [{**SMALL, "id": f"clip-{i}", "image": f"img{i % 3}.png", "seed": i} for i in range(4)]
    good.append({**SMALL, "image": "img2.png", "effect": "zoom_in"})  # id derived from the content
    bad = {**SMALL, "id": "clip-bad", "image": "no/such/image.png"}
    write_batch(work, good[:3] + [bad] + good[3:])
    env = {**seaweed.env("batch"), "D2V_DEVICE": "cpu"}
    store = S3Store.from_env(env)

    t0 = time.monotonic()
    first = submit(ray_head, work, {"env_vars": env}, "--num-cpus", "0.5", "--concurrency", "3")
    took = time.monotonic() - t0
    out = first.stdout + first.stderr
    assert first.returncode != 0, out
    assert "FAILED clip-bad (line 4)" in out and "no/such/image.png" in out, out
    assert "5 succeeded, 0 skipped (already done), 1 failed" in out, out

    rows = manifest_rows(store, "jobs")
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["status"] for r in rows] == ["succeeded"] * 3 + ["failed"] + ["succeeded"] * 2
    assert rows[3]["id"] == "clip-bad" and "not found" in rows[3]["error"] and rows[3]["keys"] == {}
    assert [r["id"] for r in rows[:3]] + [rows[4]["id"]] == ["clip-0", "clip-1", "clip-2", "clip-3"]
    assert len(rows[5]["id"]) == 24  # derived: a content address
    for row in rows[:3] + rows[4:]:
        assert row["seconds"] > 0 and row["error"] is None
        frames, fps = decode_video(io.BytesIO(store.get_bytes(row["keys"]["video"])))
        assert frames.shape == (8, 90, 160, 3) and fps == 8, row
        assert store.exists(row["keys"]["poster"]) and store.exists(row["keys"]["manifest"])

    t0 = time.monotonic()
    again = submit(ray_head, work, {"env_vars": env})
    out = again.stdout + again.stderr
    assert again.returncode != 0, out
    assert "0 succeeded, 5 skipped (already done), 1 failed" in out, out
    assert "FAILED clip-bad (line 4)" in out, out
    rerun = manifest_rows(store, "jobs")
    assert [r["status"] for r in rerun] == ["skipped"] * 3 + ["failed"] + ["skipped"] * 2
    assert [r["id"] for r in rerun] == [r["id"] for r in rows]
    assert [r["keys"] for r in rerun] == [r["keys"] for r in rows]
    print(f"first run {took:.1f} s, rerun {time.monotonic() - t0:.1f} s")
