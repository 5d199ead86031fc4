"""The render farm end to end: real Ray Serve, real HTTP, results in a real S3 server
(SeaweedFS). Two apps for the module (one keyed); each test submits its own jobs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import ray

from d2v.encode import decode_video
from d2v.models import parse_request
from d2v.s3store import S3Store
from tests.conftest import textured_image
from tests.farm import serve_farm
from tests.test_images import huge_png_header, png_bytes

REPO = Path(__file__).resolve().parent.parent
PAN = json.loads((REPO / "examples/paths/pan.json").read_text())

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def farm(seaweed, tmp_path_factory):
    # Two apps. "/": no keys, no generative model. "/keyed": jobs belong to their key (the keys
    # in D2V_TEST_KEYS), and it offers the svd backend: a tiny random-weight SVD saved to disk
    # and loaded by its base replica through the same loader users run. (One app for both: a
    # third app's start cost 15-20 s of the module.) Metrics every 2 s, not Ray's 10: the
    # metrics test waits for its jobs' counts.
    from d2v.tiny_svd import make_tiny_svd

    tiny = make_tiny_svd(tmp_path_factory.mktemp("tiny-svd"))
    env = {**seaweed.env("farm"), "D2V_DEVICE": "cpu", "D2V_TEST_KEYS": "key-a,key-b", "D2V_TEST_ADMINS": "key-ops"}
    apps = {"/": {"lease_s": 10, "max_running_jobs": 2, "reconcile_s": 2},
            "/keyed": {"lease_s": 10, "api_keys_env": "D2V_TEST_KEYS", "admin_keys_env": "D2V_TEST_ADMINS",
                       "svd_model": str(tiny), "svd_options": {"decode_chunk_size": 4, "warmup": True}}}
    with serve_farm(env, apps, num_cpus=4, metrics_every_s=2) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client, S3Store.from_env(env)


def submit(client, image: bytes, request: dict, **files) -> httpx.Response:
    return client.post("/v1/jobs", files={"image": ("photo.png", image, "image/png"), **files},
                       data={"request": json.dumps(request)})


def wait_for(client, url: str, ok, timeout_s: float = 120) -> dict:
    """Poll a job's status until `ok(status)`."""
    deadline = time.monotonic() + timeout_s
    while not ok(status := client.get(url).json()):
        assert time.monotonic() < deadline, f"timed out waiting; last status {status}"
        time.sleep(0.05)
    return status


def wait(client, url: str, timeout_s: float = 180, seen: list | None = None) -> dict:
    """Poll until the job finished; `seen` collects each (status, stage) it passed through."""
    def finished(status: dict) -> bool:
        if seen is not None and (not seen or seen[-1] != (status["status"], status["stage"])):
            seen.append((status["status"], status["stage"]))
        return status["status"] in ("succeeded", "failed")

    return wait_for(client, url, finished, timeout_s)


def kill_named(fragment: str, *, restart: bool) -> int:
    """Kill every named actor whose name contains `fragment` (Serve replicas)."""
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if fragment in a["name"]]
    for a in actors:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=not restart)
    return len(actors)


def slow_request(**kw) -> dict:
    # Motion blur with many sub-frames makes the base stage take seconds on a CPU, so a
    # test can watch the job run (and kill a replica mid-job).
    return {"path": PAN, "effect": "pan", "duration_s": 2, "fps": 12, "width": 480, "height": 270,
            "motion_blur": 1.0, "motion_blur_samples": 24, **kw}


PHOTO = png_bytes(textured_image(960, 540, seed=5))


def test_auto_backend_on_a_farm_without_models_renders_camera_and_says_why(farm):
    """backend "auto" with no generative base configured: the camera backend renders it, and the
    stored manifest keeps the request as asked and says what auto chose and why."""
    client, store = farm
    r = submit(client, PHOTO, {"path": PAN, "effect": "pan", "duration_s": 1, "fps": 8, "width": 256,
                               "height": 144, "backend": "auto"})
    assert r.status_code == 202, r.text
    status = wait(client, r.json()["status_url"])
    assert status["status"] == "succeeded", status
    manifest = json.loads(store.get_bytes(f"jobs/{r.json()['job_id']}/manifest.json"))
    assert manifest["backend"] == "camera" and manifest["request"]["backend"] == "auto"
    assert any(n.startswith("auto: camera") for n in manifest["notes"])
    assert manifest["settings"]["backend_choice"].startswith("auto: camera")


def test_job_runs_to_a_video_in_the_bucket(farm):
    client, store = farm
    r = submit(client, PHOTO, slow_request())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["status_url"].endswith(f"/v1/jobs/{body['job_id']}")
    seen: list = []
    status = wait(client, body["status_url"], seen=seen)
    assert status["status"] == "succeeded", status
    states = [s for s, _ in seen]
    assert "running" in states and states.index("running") < states.index("succeeded")
    assert {"base", "encode"} & {stage for _, stage in seen}  # progress names the stage
    result = status["result"]
    assert (result["frames"], result["fps"], result["width"], result["height"]) == (24, 12, 480, 270)

    video = client.get(result["video_url"], follow_redirects=False)
    assert video.status_code in (302, 307) and "X-Amz-Signature" in video.headers["location"]
    mp4 = httpx.get(video.headers["location"], timeout=60).content
    frames, fps = decode_video(mp4)
    assert frames.shape == (24, 270, 480, 3) and fps == 12

    job = body["job_id"]
    keys = set(store.list(f"jobs/{job}/"))
    for name in ("input.png", "request.json", "status.json", "manifest.json", "video.mp4", "poster.jpg",
                 "fidelity.png"):
        assert f"jobs/{job}/{name}" in keys
    manifest = json.loads(store.get_bytes(f"jobs/{job}/manifest.json"))
    assert manifest["frames"] == 24 and manifest["effect"] == "pan"
    # The path check: in the manifest, in the status, and its picture behind fidelity_url.
    assert manifest["fidelity"]["verdict"] == "followed" and manifest["fidelity"]["located"] == 16
    assert result["fidelity"]["verdict"] == "followed" and result["fidelity"]["end_center_pct"] < 1.0
    assert "frames" not in result["fidelity"]  # the summary; the per-frame errors are in the manifest
    picture = client.get(result["fidelity_url"], follow_redirects=True)
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.content == store.get_bytes(f"jobs/{job}/fidelity.png")
    assert {"base", "interpolate", "upscale", "encode"} <= set(manifest["methods"])
    assert {"base", "interpolate", "upscale", "encode"} <= set(manifest["stage_seconds"])
    assert json.loads(store.get_bytes(f"jobs/{job}/status.json"))["status"] == "succeeded"
    assert store.get_bytes(f"jobs/{job}/video.mp4") == mp4

    # The same image and request again: the finished result under a new id, not a second render.
    again = submit(client, PHOTO, slow_request())
    assert again.status_code == 202 and again.json()["status"] == "succeeded", again.text
    assert again.json()["job_id"] != job
    # Its own copy of the video, under its own id: no answer names the job that rendered it.
    seen = client.get(again.json()["status_url"]).json()["result"]
    assert seen["video_key"] == f"jobs/{again.json()['job_id']}/video.mp4" and job not in json.dumps(seen)
    assert store.get_bytes(seen["video_key"]) == store.get_bytes(result["video_key"])
    assert client.get(body["status_url"]).json()["attempts"] == 1
    assert json.loads(store.get_bytes(f"jobs/{job}/manifest.json"))["created_at"] == manifest["created_at"]

    poster = client.get(f"/v1/jobs/{job}/poster", follow_redirects=True)
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"


def test_long_polling_answers_when_the_job_is_done(farm):
    client, _ = farm
    body = submit(client, PHOTO, slow_request(seed=7)).json()
    quick = client.get(body["status_url"], params={"wait_s": 0}).json()
    assert quick["status"] in ("queued", "running")  # wait_s=0 answers at once
    t0 = time.monotonic()
    status = client.get(body["status_url"], params={"wait_s": 30}).json()  # one request, held open
    assert status["status"] == "succeeded", status
    assert time.monotonic() - t0 < 30 and status["result"]["frames"] == 24
    # Done already: answers at once.
    assert client.get(body["status_url"], params={"wait_s": 30}).json()["status"] == "succeeded"
    for bad in ("-1", "31", "soon"):
        r = client.get(body["status_url"], params={"wait_s": bad})
        assert r.status_code == 422 and r.json()["detail"].startswith("wait_s:"), r.text


def test_a_job_waits_for_a_free_slot_and_then_runs(farm):
    # This app runs 2 jobs at once: a third waits as 'queued' (holding only the compressed
    # upload, decoded when its turn comes), then runs like the others.
    client, store = farm
    slow = [submit(client, PHOTO, slow_request(seed=s)).json() for s in (11, 12)]
    quick = {"path": PAN, "effect": "pan", "duration_s": 1, "fps": 8, "width": 320, "height": 180}
    third = submit(client, PHOTO, quick).json()
    wait_for(client, slow[1]["status_url"], lambda s: s["status"] == "running")
    assert client.get(slow[0]["status_url"]).json()["status"] == "running"
    assert client.get(third["status_url"]).json()["status"] == "queued"
    status = wait(client, third["status_url"])
    assert status["status"] == "succeeded", status
    frames, fps = decode_video(store.get_bytes(status["result"]["video_key"]))
    assert frames.shape == (8, 180, 320, 3) and fps == 8
    for job in slow:
        assert wait(client, job["status_url"])["status"] == "succeeded"


def test_killing_the_base_replica_mid_job_loses_nothing(farm):
    client, store = farm
    r = submit(client, png_bytes(textured_image(960, 540, seed=6)), slow_request(seed=1))
    assert r.status_code == 202
    url = r.json()["status_url"]
    wait_for(client, url, lambda s: s["stage"] == "base" and s["progress"] > 0.05)
    # This app's base replica only (the keyed app's loads an SVD model: restarting it would only
    # take CPU from this job's second attempt). Serve's controller starts a new one.
    assert kill_named("d2v#BaseStage#", restart=False) >= 1

    status = wait(client, url)
    assert status["status"] == "succeeded", status
    assert status["attempts"] == 2  # the killed attempt, then the one that finished
    frames, _ = decode_video(store.get_bytes(status["result"]["video_key"]))
    assert len(frames) == 24


def _truncated_png() -> bytes:
    data = png_bytes(textured_image(200, 120))
    return data[: len(data) // 2]


GOOD = {"path": PAN, "effect": "pan", "duration_s": 1, "fps": 8, "width": 128, "height": 72}


@pytest.mark.parametrize(
    "image, request_body, status, words",
    [
        (b"this is not a picture", GOOD, 415, "not an image"),
        (_truncated_png(), GOOD, 415, "truncated"),
        (huge_png_header(20000, 20000), GOOD, 413, "20000x20000"),
        (PHOTO, "{not json", 422, "not JSON"),
        (PHOTO, {**GOOD, "effect": "warp_drive"}, 422, "unknown effect 'warp_drive'"),
        (PHOTO, {**GOOD, "path": [{"x": float("nan"), "y": 1}, {"x": 2, "y": 2}]}, 422, "finite"),
        (PHOTO, {**GOOD, "fps": 0}, 422, "fps"),
        (PHOTO, {**GOOD, "camera": {"keyframes": [{"t": 0}, {"t": 1, "pan": 400}]}}, 422, "camera.keyframes.1.pan"),
        (PHOTO, {**GOOD, "allow_borders": True, "camera": [{"t": 0}, {"t": 1, "pan": 45, "tilt": 45}]}, 422,
         "camera.keyframes.1: at t=1.00 s the view looks past the picture's horizon"),
        (PHOTO, {**GOOD, "camera": [{"t": 0, "zoom": True}]}, 422, "camera.keyframes.0.zoom: zoom must be a number"),
        (PHOTO, {**GOOD, "duration_s": 86400}, 422, "duration_s"),
        (PHOTO, {**GOOD, "backend": "svd"}, 422, "D2V_SVD_MODEL"),
        (PHOTO, {**GOOD, "width": 3840, "height": 2160, "duration_s": 20, "fps": 60}, 422, "GiB of frames"),
    ],
)
def test_bad_jobs_get_a_4xx_that_says_what_is_wrong(farm, image, request_body, status, words):
    client, _ = farm
    data = {"request": request_body if isinstance(request_body, str) else json.dumps(request_body)}
    r = client.post("/v1/jobs", files={"image": ("x.png", image, "image/png")}, data=data)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail and "Traceback" not in detail


def _animated_gif() -> bytes:
    import io

    from PIL import Image

    frames = [Image.fromarray(textured_image(120, 80, seed=i)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


def _ico() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(textured_image(64, 64)).save(out, format="ICO")
    return out.getvalue()


@pytest.mark.parametrize("files, request_body, status, words", [
    ({"image": ("a.gif", _animated_gif(), "image/gif")}, GOOD, 415, "JPEG, PNG, WebP"),
    ({"image": ("a.ico", _ico(), "image/x-icon")}, GOOD, 415, "JPEG, PNG, WebP"),
    ({"image": ("x.png", PHOTO, "image/png")}, '{"path": ' + "[" * 5000 + "]" * 5000 + "}", 422, "nested"),
    ({"image": ("x.png", PHOTO, "image/png"), "depth": ("d.png", _truncated_png(), "image/png")}, GOOD, 415,
     "depth map"),
    # A portrait depth map for the landscape photo: turned, or another photo's (stretched, every edge misplaced).
    ({"image": ("x.png", PHOTO, "image/png"), "depth": ("d.png", png_bytes(textured_image(270, 480)), "image/png")},
     GOOD, 422, "depth map is 270x480 (portrait) and the photo is 960x540 (landscape"),
])
def test_caller_mistakes_are_refused_at_submit(farm, files, request_body, status, words):
    """Found at submit, with a 4xx, not as a job that fails after its 202."""
    client, _ = farm
    data = {"request": request_body if isinstance(request_body, str) else json.dumps(request_body)}
    r = client.post("/v1/jobs", files=files, data=data)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_a_job_left_running_by_a_killed_cli_is_taken_over(farm):
    """`d2v render` killed mid-job leaves status.json 'running' with an owner that no longer
    heartbeats. The same render again takes it over; the farm renders the same request
    under its own id, never answering with the dead job."""
    from d2v.lifecycle import Jobs
    from d2v.models import JobStatus
    from d2v.pipeline import content_job_id, render_job
    from d2v.store import job_key

    client, store = farm
    image = png_bytes(textured_image(320, 180, seed=11))
    job_id = content_job_id(image, None, parse_request(GOOD))
    stale = JobStatus(job_id=job_id, status="running", stage="base", progress=0.4, attempts=1,
                      owner="cli:elsewhere:4242", heartbeat_at=time.time() - 300)
    store.put_bytes(job_key(job_id, "status.json"), stale.model_dump_json().encode())
    r = client.post("/v1/jobs", files={"image": ("x.png", image, "image/png")}, data={"request": json.dumps(GOOD)})
    assert r.status_code == 202 and r.json()["job_id"] != job_id, r.text
    assert wait(client, r.json()["status_url"])["status"] == "succeeded"

    render_job(image, parse_request(GOOD), store, use_cache=False)  # the CLI again: takes its job over
    status = Jobs(store).get(job_id)
    assert status.status == "succeeded" and status.attempts == 2 and status.owner is None


def test_a_job_is_visible_only_to_its_key(farm):
    client, store = farm
    a, b = ({"Authorization": f"Bearer {k}"} for k in ("key-a", "key-b"))
    image = png_bytes(textured_image(320, 180, seed=12))
    form = {"files": {"image": ("x.png", image, "image/png")}, "data": {"request": json.dumps(GOOD)}}
    assert client.post("/keyed/v1/jobs", **form).status_code == 401
    job_a = client.post("/keyed/v1/jobs", headers=a, **form).json()
    done = _wait_keyed(client, job_a["status_url"], a)
    assert done["status"] == "succeeded", done
    # Key B cannot see A's job, its video or its picture: as absent as a job that never was.
    for suffix in ("", "/video", "/poster", "/fidelity"):
        r = client.get(job_a["status_url"] + suffix, headers=b)
        assert r.status_code == 404 and "no job" in r.json()["detail"], (suffix, r.text)
    # The same image and request from B: served from the finished result, under B's own id,
    # and nothing B is answered names A's job (its id would tell B that someone rendered this photo).
    job_b = client.post("/keyed/v1/jobs", headers=b, **form).json()
    assert job_b["status"] == "succeeded" and job_b["job_id"] != job_a["job_id"]
    seen_b = client.get(job_b["status_url"], headers=b).json()
    assert seen_b["result"]["video_key"] == f"jobs/{job_b['job_id']}/video.mp4"
    answers = [json.dumps(job_b), json.dumps(seen_b), client.get("/keyed/v1/jobs", headers=b).text,
               client.get(job_b["status_url"] + "/manifest", headers=b, follow_redirects=True).text,
               client.get("/keyed/v1/stats", headers=b, params={"since": "1h"}).text]
    assert all(job_a["job_id"] not in answer for answer in answers), answers
    manifest = json.loads(answers[3])
    assert manifest["job_id"] == job_b["job_id"] and manifest["keys"]["video"] == seen_b["result"]["video_key"]
    assert client.get(job_b["status_url"], headers=a).status_code == 404
    video = client.get(job_b["status_url"] + "/video", headers=b, follow_redirects=False)
    assert video.status_code == 307 and "X-Amz-Expires=900" in video.headers["location"]
    assert httpx.get(video.headers["location"]).content == store.get_bytes(done["result"]["video_key"])
    # What a caller sees of a status never includes the bookkeeping (owner, tenant, content).
    assert not {"tenant", "owner", "content", "heartbeat_at", "queue", "attempt_id"} & set(seen_b)
    # /v1/stats: each key its own jobs (B's answer from the cache rendered nothing); an
    # operator's key, the farm's; only the operator is told where the store is.
    stats = {who: client.get("/keyed/v1/stats", headers=h, params={"since": "1h"}).json()
             for who, h in (("a", a), ("b", b), ("ops", {"Authorization": "Bearer key-ops"}))}
    assert stats["a"]["all"]["jobs"] == 1 and stats["b"]["all"]["jobs"] == 0, stats
    assert stats["ops"]["all"]["jobs"] >= 1 and "store" in stats["ops"] and "store" not in stats["a"]
    # /healthz: up or down per dependency for anyone; where each one is, only for operators.
    health = client.get("/keyed/healthz").json()
    assert health["dependencies"] == {"store": "up", "queue": "up"} and "store" not in health, health
    assert "127.0.0.1" not in json.dumps(health)
    assert "store" in client.get("/keyed/healthz", headers={"Authorization": "Bearer key-ops"}).json()


def _wait_keyed(client, url: str, headers: dict, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while (status := client.get(url, headers=headers, params={"wait_s": 10}).json())["status"] not in (
            "succeeded", "failed"):
        assert time.monotonic() < deadline, status
    return status


def test_a_chunked_upload_is_cut_at_the_limit(farm):
    """No Content-Length: counted as it streams, refused past the limit, not read whole."""
    client, _ = farm
    boundary = "d2vboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n{json.dumps(GOOD)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    sent = [0]

    def body():
        yield head
        for _ in range(120):  # 120 MiB, far past the 50 MiB limit
            sent[0] += 1
            yield b"\0" * 2**20

    r = client.post("/v1/jobs", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "limit" in r.json()["detail"], r.text


def test_healthz_says_which_dependency_is_down_and_never_hangs(farm, seaweed):
    """S3 frozen (SIGSTOP): /healthz answers 503 with Retry-After within its probe timeout,
    naming the store; once S3 is back, 200 again."""
    import os
    import signal

    client, _ = farm
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["dependencies"] == {"store": "up", "queue": "up"}
    os.killpg(seaweed.proc.pid, signal.SIGSTOP)
    try:
        # Every answer comes within seconds; the first ones may still be "ok" on a loaded
        # machine (a probe that reached S3 as the signal landed), then the store is named.
        deadline = time.monotonic() + 10
        while True:
            t0 = time.monotonic()
            r = client.get("/healthz", timeout=10)
            assert time.monotonic() - t0 < 5
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 503 and r.headers["Retry-After"] == "10", r.text
        assert r.json()["dependencies"]["store"] == "down"
    finally:
        os.killpg(seaweed.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "healthz did not recover"
        time.sleep(0.5)


def test_s3_frozen_means_503_with_retry_after_not_a_hang(farm, seaweed):
    """S3 frozen mid-service: a new submission and a status request answer 503 + Retry-After
    within seconds; once S3 is back, the same submission is accepted and runs."""
    import os
    import signal

    client, _ = farm
    image = png_bytes(textured_image(320, 180, seed=21))
    files = {"image": ("x.png", image, "image/png")}
    os.killpg(seaweed.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = client.post("/v1/jobs", files=files, data={"request": json.dumps(GOOD)}, timeout=60)
        assert time.monotonic() - t0 < 15, time.monotonic() - t0
        assert r.status_code == 503 and r.headers.get("Retry-After"), r.text
        assert "retry" in r.json()["detail"]
    finally:
        os.killpg(seaweed.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 90
    while (r := client.post("/v1/jobs", files=files, data={"request": json.dumps(GOOD)})).status_code == 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(1)
    assert r.status_code == 202, r.text
    assert wait(client, r.json()["status_url"])["status"] == "succeeded"


def test_missing_fields_and_bad_ids(farm):
    client, _ = farm
    r = client.post("/v1/jobs", data={"request": json.dumps(GOOD)}, files={"other": ("a", b"b")})
    assert r.status_code == 422 and "image: is required" in r.json()["detail"]
    r = client.post("/v1/jobs", files={"image": ("x.png", PHOTO, "image/png")})
    assert r.status_code == 422 and "request: is required" in r.json()["detail"]
    r = client.post("/v1/jobs", json=GOOD)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.get("/v1/jobs/0123456789abcdef01234567")
    assert r.status_code == 404 and "no job" in r.json()["detail"]
    r = client.get("/v1/jobs/..%2F..%2Fetc%2Fpasswd")
    assert r.status_code in (400, 404, 422) and "invalid job id" in r.json()["detail"]
    r = client.get("/v1/jobs/0123456789abcdef01234567/video")
    assert r.status_code == 404


def test_server_keeps_serving_after_bad_input(farm):
    client, _ = farm
    assert client.get("/healthz").json()["status"] == "ok"
    effects = client.get("/v1/effects").json()
    assert [e["name"] for e in effects][:2] == ["auto", "zoom_in"] and all(e["description"] for e in effects)
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]
    r = submit(client, png_bytes(textured_image(320, 180, seed=9)), GOOD)
    assert r.status_code == 202
    assert wait(client, r.json()["status_url"])["status"] == "succeeded"


def test_svd_job_runs_through_the_farm_and_its_manifest_names_the_model(farm):
    client, store = farm
    request = {"path": PAN, "effect": "pan", "duration_s": 1.5, "fps": 8, "width": 160, "height": 96,
               "backend": "svd", "guidance_strength": 0.5, "num_inference_steps": 4, "seed": 3,
               "auto_correct": False}
    ops = {"Authorization": "Bearer key-ops"}  # the keyed app has the model
    r = client.post("/keyed/v1/jobs", files={"image": ("p.png", PHOTO, "image/png")},
                    data={"request": json.dumps(request)}, headers=ops)
    assert r.status_code == 202, r.text
    assert "/keyed/v1/jobs/" in r.json()["status_url"]
    status = _wait_keyed(client, r.json()["status_url"], ops, timeout_s=180)
    assert status["status"] == "succeeded", status
    frames, _ = decode_video(store.get_bytes(status["result"]["video_key"]))
    assert frames.shape == (12, 96, 160, 3)
    manifest = json.loads(store.get_bytes(status["result"]["manifest_key"]))
    assert manifest["backend"] == "svd" and manifest["model"].endswith(str(Path(manifest["model"]).name))
    settings = manifest["settings"]
    assert settings["guidance_strength"] == 0.5 and settings["steps"] == 4 and settings["mode"] == "sdedit"
    assert settings["decode_chunk_size"] == 4  # the Serve config's args.svd_options
    assert {"motion_bucket_id", "noise_aug_strength", "num_frames", "seed"} <= set(settings)
    assert manifest["methods"]["base"].startswith("svd") and "->" in manifest["methods"]["interpolate"]
    # The encode replica checked the path (a random model's frames: not of the photo).
    assert manifest["fidelity"]["verdict"] in ("missed", "unmeasured") and manifest["fidelity"]["attempts"] == []
    assert status["result"]["fidelity"]["verdict"] == manifest["fidelity"]["verdict"]
    assert store.exists(status["result"]["fidelity_key"])
    # Its cost: every stage charged at its replica's resources (deployments/stages.py's defaults).
    cost = manifest["cost"]
    assert {"base": 0.25, "interpolate": 0.25, "upscale": 0.25, "encode": 0.25} == \
        {k: cost["stages"][k]["cpus"] for k in ("base", "interpolate", "upscale", "encode")}
    assert cost["stages"]["base"]["seconds"] == manifest["stage_seconds"]["base"]
    assert cost["cpu_seconds"] == pytest.approx(sum(u["cpus"] * u["seconds"] for u in cost["stages"].values()), abs=1e-3)
    # The app without a model still refuses svd clearly, and both keep serving.
    r = submit(client, PHOTO, {**GOOD, "backend": "svd"})
    assert r.status_code == 422 and "D2V_SVD_MODEL" in r.json()["detail"]
    assert client.get("/keyed/healthz").json()["status"] == "ok"


def test_dead_runner_and_ingress_replicas_lose_no_job(farm):
    client, store = farm
    r = submit(client, png_bytes(textured_image(960, 540, seed=7)), slow_request(seed=2))
    assert r.status_code == 202
    job = r.json()["job_id"]
    wait_for(client, f"/v1/jobs/{job}", lambda s: s["status"] == "running")
    # The job's runner (a queue consumer) dies mid-job, and the HTTP replica with it; Serve
    # starts new ones. The job's owner stops heartbeating: the reconciler queues it again.
    assert kill_named("d2v#JobRunner#", restart=False) >= 1
    assert kill_named("d2v#Ingress#", restart=False) >= 1
    deadline = time.monotonic() + 180
    while True:
        try:
            status = client.get(f"/v1/jobs/{job}", timeout=10).json()
            if status.get("status") in ("succeeded", "failed"):
                break
        except (httpx.HTTPError, ValueError):
            pass  # the HTTP replica is restarting
        assert time.monotonic() < deadline, "the orphaned job was never run again"
        time.sleep(0.5)
    assert status["status"] == "succeeded", status
    assert status["attempts"] >= 2
    frames, _ = decode_video(store.get_bytes(status["result"]["video_key"]))
    assert len(frames) == 24


# ---------------------------------------------------------------- the typed API and its client


def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _validate(doc: dict, schema: dict, value) -> None:
    """`value` against a schema of the document, its $refs resolved in the document."""
    import jsonschema

    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(value)


def test_openapi_has_the_shapes_and_a_client_written_from_it_submits_and_polls(farm):
    """A client that knows only /openapi.json: the submit route, its multipart parts, the
    request's fields, the status route and its long-poll parameter all read from the document."""
    client, store = farm
    doc = client.get("/openapi.json").json()
    [(submit_path, post)] = [(p, ops["post"]) for p, ops in doc["paths"].items()
                             if "202" in ops.get("post", {}).get("responses", {})]
    form = post["requestBody"]["content"]["multipart/form-data"]
    parts = form["schema"]["properties"]
    [file_part] = [n for n in form["schema"]["required"] if parts[n].get("format") == "binary"]
    [json_part] = [n for n in form["schema"]["required"] if n != file_part]
    assert form["encoding"][json_part]["contentType"] == "application/json"
    request_schema = _resolve(doc, parts[json_part])
    assert {"path", "effect", "duration_s", "fps", "width", "height", "backend", "seed"} <= set(
        request_schema["properties"])
    # A path, a typed camera or subjects: none required alone (the request's validator wants one).
    assert request_schema.get("required", []) == []
    assert {"path", "camera", "subjects"} <= set(request_schema["properties"])
    for code in ("413", "415", "422", "503"):  # every refusal is the one-line error model
        error = _resolve(doc, post["responses"][code]["content"]["application/json"]["schema"])
        assert error["properties"]["detail"]["type"] == "string" and error["required"] == ["detail"]
    accepted = post["responses"]["202"]["content"]["application/json"]["schema"]

    # The request, built from the schema's own defaults and the example path; checked against it.
    fields = request_schema["properties"]
    request = {name: spec["default"] for name, spec in fields.items() if "default" in spec}
    request.update({"path": PAN, "effect": "pan", "duration_s": 1, "fps": 8, "width": 320, "height": 180,
                    "seed": 17})
    _validate(doc, parts[json_part], request)
    r = httpx.post(str(client.base_url).rstrip("/") + submit_path, timeout=60,
                   files={file_part: ("photo.png", PHOTO, "image/png")}, data={json_part: json.dumps(request)})
    assert r.status_code == 202, r.text
    _validate(doc, accepted, r.json())

    [(status_path, get)] = [(p, ops["get"]) for p, ops in doc["paths"].items()
                            if p.startswith(submit_path + "/{") and p.count("/") == submit_path.count("/") + 1]
    [id_param] = [p["name"] for p in get["parameters"] if p["in"] == "path"]
    [wait_param] = [p for p in get["parameters"] if p["in"] == "query"]
    view = get["responses"]["200"]["content"]["application/json"]["schema"]
    states = _resolve(doc, view)["properties"]["status"]["enum"]
    assert states == ["queued", "running", "succeeded", "failed"]
    url = str(client.base_url).rstrip("/") + status_path.replace("{" + id_param + "}", r.json()[id_param])
    deadline = time.monotonic() + 120
    while (status := httpx.get(url, params={wait_param["name"]: wait_param["schema"]["maximum"]},
                               timeout=60).json())["status"] in states[:2]:
        assert time.monotonic() < deadline, status
    _validate(doc, view, status)
    assert status["status"] == "succeeded", status
    assert set(status) == set(_resolve(doc, view)["properties"])  # nothing undocumented, nothing private
    result = status["result"]
    frames, _ = decode_video(store.get_bytes(result["video_key"]))
    assert frames.shape == (8, 180, 320, 3) == (result["frames"], result["height"], result["width"], 3)
    # The listing (a farm without keys: everyone's jobs), newest first: this one on top.
    [(list_path, listing)] = [(p, ops["get"]) for p, ops in doc["paths"].items()
                              if p == submit_path and "get" in ops]
    [limit] = [p["name"] for p in listing["parameters"] if p["in"] == "query"]
    listed = httpx.get(str(client.base_url).rstrip("/") + list_path, params={limit: 3}, timeout=60).json()
    _validate(doc, listing["responses"]["200"]["content"]["application/json"]["schema"], listed)
    assert 1 <= len(listed["jobs"]) <= 3 and listed["jobs"][0] == status


def d2v_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed `d2v` command, as a user runs it."""
    import sys

    exe = Path(sys.executable).parent / "d2v"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=240, cwd=cwd)


def test_d2v_submit_writes_the_video_and_prints_the_manifest_summary(farm, tmp_path):
    import av

    client, _ = farm
    (tmp_path / "photo.png").write_bytes(PHOTO)
    (tmp_path / "pan.json").write_text(json.dumps(PAN))
    out = tmp_path / "clip.mp4"
    done = d2v_cli("submit", str(tmp_path / "photo.png"), "--path", str(tmp_path / "pan.json"), "--server",
                   str(client.base_url), "--effect", "pan", "--duration", "1", "--fps", "8", "--size", "320x180",
                   "--seed", "23", "-o", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    with av.open(str(out)) as container:  # the file as a player reads it
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 8 and decoded[0].shape == (180, 320, 3)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"wrote {out} (8 frames, 320x180, 1 s, effect pan, job ")
    assert lines[1].startswith("path followed:"), done.stdout

    # A path the planner cannot use: the farm's own detail on one line, exit 2, no file.
    far = tmp_path / "far.json"
    far.write_text(json.dumps([{"x": 10, "y": 10}, {"x": 5e9, "y": 10}]))
    refused = d2v_cli("submit", str(tmp_path / "photo.png"), "--path", str(far), "--server", str(client.base_url),
                      "-o", str(tmp_path / "no.mp4"))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("d2v: error: 422: invalid path: a point lies") and \
        refused.stderr.count("\n") == 1, refused.stderr
    assert not (tmp_path / "no.mp4").exists()


def test_d2v_jobs_lists_each_keys_own_jobs_newest_first(farm):
    client, _ = farm
    keyed = str(client.base_url).rstrip("/") + "/keyed"
    mine: dict[str, list[str]] = {"key-a": [], "key-b": []}
    for key, seed in (("key-a", 31), ("key-b", 32), ("key-a", 33), ("key-a", 34)):
        r = client.post("/keyed/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                        files={"image": ("p.png", PHOTO, "image/png")},
                        data={"request": json.dumps({**GOOD, "seed": seed})})
        assert r.status_code == 202, r.text
        mine[key].append(r.json()["job_id"])
    for key, ids in mine.items():  # (other tests' jobs under these keys are older: listed after these)
        listed = d2v_cli("jobs", "--server", keyed, "--api-key", key)
        assert listed.returncode == 0, listed.stderr
        shown = [line.split()[0] for line in listed.stdout.splitlines()]
        assert shown[:len(ids)] == ids[::-1]  # newest first
        assert not {i for other, theirs in mine.items() if other != key for i in theirs} & set(shown)  # its own
    limited = d2v_cli("jobs", "--server", keyed, "--api-key", "key-a", "--limit", "2")
    assert [line.split()[0] for line in limited.stdout.splitlines()] == mine["key-a"][:0:-1]
    # Over HTTP: the same order, each entry the job's public status; no key, no list.
    jobs = client.get("/keyed/v1/jobs", headers={"Authorization": "Bearer key-b"}).json()["jobs"]
    assert [j["job_id"] for j in jobs][:1] == mine["key-b"] and "tenant" not in jobs[0]
    refused = d2v_cli("jobs", "--server", keyed)
    assert refused.returncode == 2 and "401: missing or wrong API key" in refused.stderr
    assert client.get("/keyed/v1/jobs", params={"limit": 101},
                      headers={"Authorization": "Bearer key-a"}).status_code == 422


def _metrics() -> dict[str, list[tuple[dict, float]]]:
    """The Prometheus text that Ray serves on this node's metrics port, parsed: name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    port = ray._private.worker._global_node.metrics_export_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _sum(metrics: dict, name: str, **labels) -> float:
    return sum(v for found, v in metrics.get(name, []) if labels.items() <= found.items())


def test_metrics_cost_stats_and_json_logs_of_the_farms_jobs(farm):
    """One job that succeeds and one that fails while running (queued without its image, as
    after a lost upload), both with an effect no other test here renders: the metrics
    endpoint counts exactly them, the manifest's cost follows the price table, GET
    /v1/stats reports them, and the runner's JSON log lines carry their job ids."""
    from d2v.cost import price_table
    from d2v.jobqueue import JobQueue
    from d2v.lifecycle import Jobs

    client, store = farm
    r = submit(client, PHOTO, slow_request(effect="crash_zoom", motion_blur_samples=2, seed=11))
    assert r.status_code == 202, r.text
    broken = "no-image-crash-zoom"
    store.put_bytes(f"jobs/{broken}/request.json", json.dumps(slow_request(effect="crash_zoom")).encode())
    Jobs(store).create(broken, queue="d2v-jobs")
    JobQueue("d2v-jobs").enqueue(broken)
    ok = wait(client, r.json()["status_url"])
    bad = wait(client, f"/v1/jobs/{broken}")
    assert ok["status"] == "succeeded" and bad["status"] == "failed", (ok, bad)

    # The manifest's cost: the base replica rendered, encoded, uploaded and checked, at its
    # 0.25 CPU (deployments/stages.py); the total by the shipped price table.
    manifest = json.loads(store.get_bytes(ok["result"]["manifest_key"]))
    cost, table = manifest["cost"], price_table()
    assert set(cost["stages"]) == {"render_encode", "upload", "check"}
    assert all(u["cpus"] == 0.25 and u["gpus"] == 0 for u in cost["stages"].values())
    assert cost["stages"]["check"]["seconds"] == manifest["stage_seconds"]["check"]
    assert cost["stages"]["render_encode"]["seconds"] == manifest["stage_seconds"]["render_encode_wall"]
    cpu_s = sum(u["cpus"] * u["seconds"] for u in cost["stages"].values())
    assert cost["cpu_seconds"] == pytest.approx(cpu_s, abs=1e-3) and cost["gpu_seconds"] == 0
    assert cost["total"] == pytest.approx(cpu_s / 3600 * table.cpu_core_hour, rel=1e-3)
    assert cost["currency"] == table.currency
    assert ok["result"]["cost"] == cost  # the status shows it too

    # What the metrics port must show. Every replica exports on its own clock (every 10 s):
    # polled until all of it is there.
    labels = {"backend": "camera", "effect": "crash_zoom"}
    verdict = manifest["fidelity"]["verdict"]
    expected = {
        ("ray_d2v_jobs_total", "status=succeeded"): lambda m: _sum(m, "ray_d2v_jobs_total", status="succeeded",
                                                                   **labels) == 1,
        ("ray_d2v_jobs_total", "status=failed"): lambda m: _sum(m, "ray_d2v_jobs_total", status="failed",
                                                                **labels) == 1,
        # the broken job never came through POST
        ("ray_d2v_jobs_submitted_total",): lambda m: _sum(m, "ray_d2v_jobs_submitted_total", **labels) == 1,
        ("ray_d2v_job_seconds_count",): lambda m: _sum(m, "ray_d2v_job_seconds_count", status="succeeded",
                                                       **labels) == 1,
        ("ray_d2v_job_failures_total",): lambda m: _sum(m, "ray_d2v_job_failures_total", reason="D2VError") >= 1,
        ("ray_d2v_fidelity_verdicts_total",): lambda m: _sum(m, "ray_d2v_fidelity_verdicts_total", **labels) == _sum(
            m, "ray_d2v_fidelity_verdicts_total", verdict=verdict, **labels) == 1,
        ("ray_d2v_stage_seconds_count",): lambda m: _sum(m, "ray_d2v_stage_seconds_count", stage="render_encode",
                                                         backend="camera") >= 1,
        ("ray_d2v_cost_total",): lambda m: _sum(m, "ray_d2v_cost_total", currency="USD") >= cost["total"] > 0,
        ("ray_d2v_cpu_seconds_total",): lambda m: _sum(m, "ray_d2v_cpu_seconds_total") >= cost["cpu_seconds"],
        ("ray_d2v_jobs_queued",): lambda m: "ray_d2v_jobs_queued" in m and "ray_d2v_jobs_running" in m,
        # Serve's own, for the dashboard
        ("ray_serve_deployment_processing_latency_ms_bucket",):
            lambda m: "ray_serve_deployment_processing_latency_ms_bucket" in m,
    }
    deadline = time.monotonic() + 60
    while True:
        scraped = _metrics()
        missing = [what for what, ok in expected.items() if not ok(scraped)]
        if not missing:
            break
        assert time.monotonic() < deadline, f"not on the metrics port: {missing}"
        time.sleep(1)

    # GET /v1/stats: the same two jobs, from the store's records.
    stats = client.get("/v1/stats", params={"since": "1h"})
    assert stats.status_code == 200, stats.text
    crash = stats.json()["effects"]["crash_zoom"]
    assert (crash["jobs"], crash["videos"], crash["success_rate"]) == (2, 1, 0.5)
    assert crash["cost_per_video"] == pytest.approx(cost["total"], abs=1e-8)
    assert client.get("/v1/stats", params={"since": "soon"}).status_code == 422

    # The runner's log: JSON lines, the failed job's with its id as a field.
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    lines = [json.loads(line) for f in logs.glob("replica_d2v_JobRunner_*.log")
             for line in f.read_text().splitlines() if line.startswith("{")]
    about = [line for line in lines if line.get("job_id") == broken]
    assert any("failed" in line["message"] for line in about), lines[-5:]
    assert all(broken in line["message"] for line in about)


def test_an_audits_http_findings(farm):
    """An audit of the API (s20): each of these was a 500, a 2xx for a bad request, a body that
    did not say what to fix, or a header HTTP asks for and did not get."""
    client, _ = farm
    mask_req = {**GOOD, "still": [{"canvas": {"width": 320, "height": 240}, "mask": "m1"}]}
    # An empty mask part: a 500 from OpenCV's decoder; on the outline route too.
    r = submit(client, PHOTO, mask_req, m1=("m.png", b"", "image/png"))
    assert r.status_code == 422 and "still[0].mask 'm1': the file is empty" in r.json()["detail"], r.text
    r = client.post("/v1/subjects/outline", files={"image": ("x.png", PHOTO, "image/png"),
                                                   "mask": ("m.png", b"", "image/png")},
                    data={"region": json.dumps({"mask": "mask"})})
    assert r.status_code == 422 and "region.mask 'mask': the file is empty" in r.json()["detail"], r.text
    # A mask naming the photo's own part (read already: it came back empty).
    r = submit(client, PHOTO, {**GOOD, "still": [{"mask": "image"}]})
    assert r.status_code == 422 and "the part 'image' is the job's own" in r.json()["detail"], r.text
    # The outline's region errors name the field, not pydantic's URL.
    r = client.post("/v1/subjects/outline", files={"image": ("x.png", PHOTO, "image/png")},
                    data={"region": json.dumps({"polygon": [{"x": 1, "y": 1}] * 3, "colour": "red"})})
    assert r.status_code == 422 and r.json()["detail"] == "invalid region: colour: is not a known field", r.text
    # Stacked boomerangs: a 1 s request made a 224 s video.
    r = submit(client, PHOTO, {**GOOD, "post": ["boomerang"] * 8})
    assert r.status_code == 422 and "8 boomerangs make" in r.json()["detail"], r.text
    # A request JSON with a byte-order mark (the CLI reads one too).
    r = client.post("/v1/jobs", files={"image": ("x.png", PHOTO, "image/png")},
                    data={"request": "\ufeff" + json.dumps({**GOOD, "seed": 77})})
    assert r.status_code == 202, r.text
    job = r.json()
    # HEAD wherever GET is answered (a 405 or 422 before), with GET's status and no body.
    for path in ("/healthz", "/v1/effects", "/v1/limits", "/v1/jobs", job["status_url"],
                 job["status_url"] + "/request", job["status_url"] + "/image"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code and head.status_code in (200, 307), (path, head.status_code)
        assert head.content == b""
    # A farm without keys shows no one where its store is (/healthz did not; /v1/stats did).
    assert "store" not in client.get("/v1/stats?since=1h").json()
    # The keyed app: the scheme in any case, and a 401 names the scheme to answer with.
    assert client.get("/keyed/v1/jobs", headers={"Authorization": "bearer key-a"}).status_code == 200
    refused = client.get("/keyed/v1/jobs")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert wait(client, job["status_url"])["status"] == "succeeded"


def test_a_second_http_audit(farm):
    """The rest of the audit (s20): each was a 4xx that did not say what to fix, the wrong 4xx,
    a header that named the wrong methods, or a route that read its upload unguarded."""
    client, _ = farm
    photo = {"image": ("x.png", PHOTO, "image/png")}
    # A stalled upload (1000 bytes declared, 5 sent) to the outline route and the preview: both
    # are answered with the JSON 408 of /v1/jobs, not held for Serve's 120 s.
    host, port = client.base_url.host, client.base_url.port
    held = []
    for path in ("/v1/subjects/outline", "/v1/preview"):
        sock = socket.create_connection((host, port), timeout=60)  # (generous: the bound is 8 s)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n"
                     "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n".encode())
        held.append(sock)
    for sock in held:
        answer = b""
        with sock:
            while not answer.endswith(b"}") and (chunk := sock.recv(4096)):  # (the body may come after the head)
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b'"detail":"the upload stalled' in answer, answer
    # Every mask part that is empty names itself: a subject's, and on the preview too.
    subject = {**GOOD, "subjects": [{"region": {"mask": "m2"}, "path": PAN}]}
    r = submit(client, PHOTO, subject, m2=("m.png", b"", "image/png"))
    assert r.status_code == 422 and r.json()["detail"].startswith("subjects[0].region.mask 'm2': the file is empty")
    r = client.post("/v1/preview", files={**photo, "m2": ("m.png", b"", "image/png")},
                    data={"request": json.dumps(subject)})
    assert r.status_code == 422 and "subjects[0].region.mask 'm2': the file is empty" in r.json()["detail"]
    # The outline's region is read as /v1/jobs reads its request: what is wrong and what to send.
    for region, detail in [
            ("not json", "invalid region: not JSON (Expecting value: line 1 column 1 (char 0))"),
            ("[]", "invalid region: expected a JSON object (brush, polygon or mask), got an array"),
            ("null", "invalid region: expected a JSON object (brush, polygon or mask), got null"),
            ('{"polygon": [{"x": NaN, "y": 1}, {"x": 5, "y": 1}, {"x": 1, "y": 5}]}',
             "invalid region: polygon.0.x: x must be a finite number, got nan")]:
        r = client.post("/v1/subjects/outline", files=photo, data={"region": region})
        assert (r.status_code, r.json()["detail"]) == (422, detail), region
    # A 405 names every method its path takes (it said "Allow: POST" for /v1/jobs).
    for method, path, allow in [("DELETE", "/v1/jobs", "GET, HEAD, POST"), ("POST", "/v1/effects", "GET, HEAD"),
                                ("PUT", "/v1/jobs/0123456789abcdef01234567/video", "GET, HEAD"),
                                ("GET", "/v1/preview", "POST")]:
        r = client.request(method, path)
        assert (r.status_code, r.headers["allow"]) == (405, allow), (method, path, r.headers)
        assert r.json()["detail"] == f"{method} is not answered at {path}: use {allow}"
    # HEAD wherever GET is, the documents and the page included.
    for path in ("/", "/favicon.ico", "/docs", "/openapi.json", "/v1/presets", "/v1/looks", "/v1/post",
                 "/v1/backends", "/v1/stats"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", (path, head.status_code)
    # Not multipart: 415, the status for a body of the wrong media type; the type's name in any case.
    r = client.post("/v1/jobs", content=f"request={json.dumps(GOOD)}",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "send multipart/form-data" in r.json()["detail"], r.text
    form = client.build_request("POST", "/v1/jobs", files=photo, data={"request": json.dumps({**GOOD, "seed": 78})})
    form.headers["Content-Type"] = form.headers["Content-Type"].replace("multipart/form-data", "Multipart/Form-Data")
    assert client.send(form).status_code == 202
    # A request part past the parser's 1 MiB: a 413 naming the part (a 422 that named neither).
    r = client.post("/v1/jobs", files=photo, data={"request": " " * 2**20 + json.dumps(GOOD)})
    assert r.status_code == 413 and r.json()["detail"].startswith("request: over the 1 MiB limit"), r.text
    # A 5000-digit seed: the field's range, not Python's advice to programmers.
    r = client.post("/v1/jobs", files=photo, data={"request": json.dumps(GOOD)[:-1] + ', "seed": ' + "7" * 5000 + "}"})
    assert r.status_code == 422 and r.json()["detail"] == (
        "invalid request: seed: Input should be less than or equal to 4294967295"), r.text
