"""Cost per video and `d2v report`: real renders into a real S3 server (SeaweedFS) and a
local directory, the report read back through the CLI."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import pytest

from d2v.cli import main
from d2v.errors import InvalidRequestError
from d2v.lifecycle import JobRecord, Jobs
from d2v.models import Manifest, RenderRequest
from d2v.pipeline import render_job
from d2v.report import report
from d2v.store import LocalStore
from tests.conftest import textured_image

REPO = Path(__file__).resolve().parent.parent
PAN = json.loads((REPO / "examples/paths/pan.json").read_text())


def small_request(**kw) -> RenderRequest:
    return RenderRequest.model_validate({"path": PAN, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160,
                                         "height": 96, **kw})


def photo_png(seed: int = 0) -> bytes:
    return cv2.imencode(".png", textured_image(320, 192, seed))[1].tobytes()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_manifest_cost_follows_the_price_table(tmp_path, monkeypatch):
    # A table where a core-hour costs 3600: the total is the CPU-seconds, in "CRED".
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: CRED\ncpu_core_hour: 3600\ngpu_hour: {L4: 7200}\ndefault_gpu: L4\n")
    monkeypatch.setenv("D2V_PRICES", str(prices))
    store = LocalStore(tmp_path / "data")
    manifest = render_job(photo_png(), small_request(), store)
    cost = manifest.cost
    assert cost is not None and cost.currency == "CRED"
    process = cost.stages["process"]  # in-process: the process is charged, with the cores it used
    assert process.seconds == pytest.approx(manifest.stage_seconds["total"], abs=1e-3)
    assert 0 < process.cpus <= 64 and process.gpus == 0
    assert cost.cpu_seconds == pytest.approx(process.cpus * process.seconds, abs=1e-3)
    assert cost.total == pytest.approx(cost.cpu_seconds, abs=1e-3) and cost.gpu_seconds == 0
    # The stored manifest says the same.
    stored = Manifest.model_validate_json(store.get_bytes(manifest.keys["manifest"]))
    assert stored.cost == cost
    assert Jobs(store).get(manifest.job_id).result.cost == cost  # GET /v1/jobs/{id} shows it too


def test_a_bad_price_table_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: USD\n")  # no cpu_core_hour
    monkeypatch.setenv("D2V_PRICES", str(prices))
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path / "data"))
    image = tmp_path / "photo.png"
    image.write_bytes(photo_png())
    path = tmp_path / "pan.json"
    path.write_text(json.dumps(PAN))
    code, _, err = cli(capsys, "render", str(image), "--path", str(path), "--size", "160x96", "--fps", "8",
                       "--duration", "1", "-o", str(tmp_path / "out.mp4"), "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert "price table" in err and "cpu_core_hour" in err


def test_report_over_s3_counts_real_jobs(s3_store, seaweed, monkeypatch, capsys):
    """Two videos rendered, one job failed, one failed and then rendered again: 3 of 4 succeeded."""
    walls = {}  # job id -> the render_job call's own wall time, measured around it

    def timed_render(*args, **kwargs):
        t0 = time.perf_counter()
        manifest = render_job(*args, **kwargs)
        walls[manifest.job_id] = time.perf_counter() - t0
        return manifest

    manifests = [timed_render(photo_png(1), small_request(effect="pan"), s3_store),
                 timed_render(photo_png(2), small_request(effect="zoom_in"), s3_store)]
    jobs = Jobs(s3_store)
    for job_id in ("broken", "rerun"):
        status = jobs.claim(job_id, "test").status
        s3_store.put_bytes(f"jobs/{job_id}/request.json", small_request(effect="orbit").model_dump_json().encode())
        jobs.fail(status, "the base stage fell over")
    manifests.append(timed_render(photo_png(3), small_request(effect="orbit"), s3_store, job_id="rerun"))

    for name, value in seaweed.env(s3_store.bucket).items():
        monkeypatch.setenv(name, value)
    code, out, err = cli(capsys, "report", "--since", "1h", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["all"]["jobs"] == 4 and data["all"]["videos"] == 3 and data["all"]["failed"] == 1
    assert data["all"]["success_rate"] == 0.75
    assert data["currency"] == "USD"
    assert data["all"]["cost_per_video"] == pytest.approx(statistics.mean(m.cost.total for m in manifests), abs=1e-8)
    assert data["effects"]["orbit"] == {**data["effects"]["orbit"], "jobs": 2, "videos": 1, "success_rate": 0.5}
    assert data["effects"]["pan"]["videos"] == 1 and data["backends"]["camera"]["jobs"] == 4
    # Generation time: claim to end, so inside the render_job call that made it (the
    # manifest's own total ends before the manifest and the ending are written).
    records = {r.job_id: r for r in jobs.records(datetime.now(timezone.utc) - timedelta(hours=1))}
    for m in manifests:
        assert 0 < records[m.job_id].seconds <= walls[m.job_id] + 0.0005, (records[m.job_id], walls)  # kept in ms
    times = sorted(records[m.job_id].seconds for m in manifests)
    assert data["all"]["median_s"] == pytest.approx(times[1], abs=1e-3)
    assert data["all"]["p95_s"] == pytest.approx(times[2], abs=1e-3)

    code, table, _ = cli(capsys, "report", "--since", "1h")
    assert code == 0 and "75.0%" in table.splitlines()[2] and "effect orbit" in table


def _record(store, ago_s: float, job_id: str, status: str, seconds: float | None, *, effect: str = "pan",
            backend: str = "camera", cost: float | None = 0.002) -> None:
    at = datetime(2026, 6, 10, 12, 0, 0, tzinfo=timezone.utc) - timedelta(seconds=ago_s)
    store.put_bytes(JobRecord(at, job_id, status, backend, effect, seconds, "USD", cost).key(), b"")


def test_report_numbers_span_and_latest_ending(tmp_path):
    store = LocalStore(tmp_path)
    now = datetime(2026, 6, 10, 12, 0, 0, tzinfo=timezone.utc)
    for i in range(1, 21):  # 20 videos taking 1..20 s, across midnight and two days
        _record(store, i * 3600, f"ok{i}", "succeeded", float(i), effect="pan" if i % 2 else "orbit")
    for i in range(3):
        _record(store, 60 + i, f"bad{i}", "failed", None, cost=None)
    _record(store, 120, "later-ok", "failed", 1.0)  # ... then rendered again: it counts as a video
    _record(store, 30, "later-ok", "succeeded", 100.0, backend="svd", cost=0.05)
    _record(store, 8 * 86400, "old", "failed", None)  # outside 7d
    store.put_bytes("stats/2026-06-10/not-a-record", b"")  # ignored

    data = report(store, "7d", now=now)
    assert data["all"]["jobs"] == 24 and data["all"]["videos"] == 21 and data["all"]["failed"] == 3
    assert data["all"]["success_rate"] == pytest.approx(21 / 24, abs=1e-6)
    times = sorted([float(i) for i in range(1, 21)] + [100.0])
    assert data["all"]["median_s"] == 11.0 and data["all"]["p95_s"] == 20.0  # nearest rank: 20th of 21
    assert data["all"]["cost_per_video"] == pytest.approx((20 * 0.002 + 0.05) / 21)
    assert data["backends"]["svd"] == {**data["backends"]["svd"], "videos": 1, "median_s": 100.0}
    assert data["effects"]["orbit"]["videos"] == 10 and data["backend_effects"]["camera/pan"]["jobs"] == 13
    assert times[len(times) // 2] == data["all"]["median_s"]

    short = report(store, "5h", now=now)  # the last 5 hours: ok1..ok5, the failures, the rerun
    assert short["all"]["jobs"] == 9 and short["all"]["videos"] == 6


def test_gpu_seconds_are_priced_by_the_type_of_gpu_they_ran_on(monkeypatch):
    from d2v.cost import StageUsage, price_table

    monkeypatch.delenv("D2V_PRICES", raising=False)
    monkeypatch.delenv("D2V_GPU_TYPE", raising=False)
    table = price_table()  # the shipped one
    stages = {"base": StageUsage(seconds=4.0, cpus=2, gpus=0.5, device="NVIDIA H100 80GB HBM3"),
              "interpolate": StageUsage(seconds=2.0, cpus=1, gpus=0.25),
              "encode": StageUsage(seconds=1.0, cpus=2)}
    cost = table.price(stages)
    assert cost.gpu_type == "H100" and cost.gpu_seconds == 2.5 and cost.cpu_seconds == 12.0
    assert cost.total == pytest.approx(2.5 / 3600 * table.gpu_hour["H100"] + 12 / 3600 * table.cpu_core_hour)
    # A device the table does not name: its default type; D2V_GPU_TYPE overrides both.
    unnamed = {"base": StageUsage(seconds=4.0, gpus=0.5, device="Some Future GPU")}
    assert table.price(unnamed).gpu_type == table.default_gpu
    monkeypatch.setenv("D2V_GPU_TYPE", "A100")
    assert price_table().price(stages).gpu_type == "A100"
    monkeypatch.setenv("D2V_GPU_TYPE", "B900")
    with pytest.raises(InvalidRequestError, match="D2V_GPU_TYPE=B900"):
        price_table()


@pytest.mark.parametrize("since", ["3x", "7", "-1d", "400d"])
def test_a_bad_span_is_a_one_line_error(tmp_path, monkeypatch, capsys, since):
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path))
    code, out, err = cli(capsys, "report", "--since", since)
    assert code == 2 and out == "" and err.count("\n") == 1 and "since" in err


@pytest.mark.parametrize("since", ["99999999999999999999w", "9" * 400 + "d", "0d", "0.0000000001m", "367d"])
def test_an_absurd_or_empty_span_is_refused_with_the_accepted_form(tmp_path, monkeypatch, capsys, since):
    """99999999999999999999w overflowed timedelta (exit 1, 'internal error'); 0d reported
    an empty window as if it were a report."""
    monkeypatch.setenv("D2V_DATA_DIR", str(tmp_path))
    code, out, err = cli(capsys, "report", "--since", since)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"d2v: error: since: {since!r}") and "(e.g." in err and "internal" not in err


def test_the_callers_mistakes_and_ctrl_c_are_listed_not_counted_against_success(tmp_path, monkeypatch, capsys):
    """Bad input found only once the job ran (an empty subject region, a D2V_DEPTH_MODEL that
    is not there) and a job stopped with Ctrl-C were stored failed and counted against the
    success rate, as if ours: 1 video of 5 read 20%. Only our own failure counts now."""
    import numpy as np

    data = tmp_path / "data"
    monkeypatch.setenv("D2V_DATA_DIR", str(data))
    (tmp_path / "photo.png").write_bytes(photo_png())
    (tmp_path / "pan.json").write_text(json.dumps(PAN))
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((192, 320), np.uint8))
    render = ("render", str(tmp_path / "photo.png"), "--path", str(tmp_path / "pan.json"), "--size", "160x96",
              "--fps", "8", "--duration", "1", "--quiet", "-o", str(tmp_path / "out.mp4"))
    assert cli(capsys, *render)[0] == 0
    code, _, err = cli(capsys, *render, "--subject", f"{tmp_path / 'empty.png'}:{tmp_path / 'pan.json'}")
    assert code == 2 and "subjects[0].region" in err
    monkeypatch.setenv("D2V_DEPTH_MODEL", str(tmp_path / "no-such-model"))
    code, _, err = cli(capsys, *render, "--effect", "orbit")
    assert code == 2 and "D2V_DEPTH_MODEL" in err
    monkeypatch.delenv("D2V_DEPTH_MODEL")

    def raising(e: BaseException):  # Ctrl-C (or a bug) as the depth stage starts
        def progress(stage: str, fraction: float) -> None:
            if stage == "depth":
                raise e
        return progress

    store = LocalStore(data)
    with pytest.raises(KeyboardInterrupt):
        render_job(photo_png(1), small_request(), store, job_id="ctrl-c", progress=raising(KeyboardInterrupt()))
    with pytest.raises(RuntimeError):
        render_job(photo_png(2), small_request(), store, job_id="ours", progress=raising(RuntimeError("a bug")))

    code, out, _ = cli(capsys, "report", "--since", "1h", "--json")
    counts = json.loads(out)["all"]
    assert code == 0 and counts["success_rate"] == 0.5  # 1 video / (1 video + 1 failure of ours)
    assert {k: counts[k] for k in ("jobs", "videos", "failed", "rejected", "stopped")} == \
        {"jobs": 5, "videos": 1, "failed": 1, "rejected": 2, "stopped": 1}
    code, table, _ = cli(capsys, "report", "--since", "1h")
    header, row = table.splitlines()[1:3]
    assert "rejected" in header and "stopped" in header
    assert row.split()[:6] == ["all", "5", "1", "50.0%", "2", "1"]
    # status.json says so too (not shown to callers: GET /v1/jobs/{id} is unchanged)
    assert (Jobs(store).get("ctrl-c").failure, Jobs(store).get("ours").failure) == ("stopped", None)
