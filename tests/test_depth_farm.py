"""The depth stage in the farm: a tiny random-weight depth model loaded by the DepthStage
replica through the real loader; the first job on a photo estimates its depth, the next one
reads it from the store's depth cache; `depth: "none"` renders flat; a job with post effects
and a look gets them."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from d2v.encode import decode_video
from d2v.s3store import S3Store
from tests.conftest import textured_image
from tests.farm import serve_farm
from tests.test_images import png_bytes

pytestmark = pytest.mark.timeout(300)
PATH = [{"x": 60, "y": 90}, {"x": 260, "y": 100}]


def test_the_farm_estimates_depth_once_per_photo(seaweed, tmp_path):
    from d2v.depth import make_tiny_depth

    model = make_tiny_depth(tmp_path / "tiny-depth")
    env = {**seaweed.env("depth-farm"), "D2V_DEVICE": "cpu", "D2V_DEPTH_MODEL": str(model)}
    image = png_bytes(textured_image(320, 180, seed=31))
    with serve_farm(env, {"/": {}}) as url, httpx.Client(base_url=url, timeout=60) as client:
        store = S3Store.from_env(env)

        def run(**request) -> dict:
            body = {"path": PATH, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160, "height": 90, **request}
            r = client.post("/v1/jobs", files={"image": ("p.png", image, "image/png")},
                            data={"request": json.dumps(body)})
            assert r.status_code == 202, r.text
            status = client.get(r.json()["status_url"], params={"wait_s": 30}).json()
            while status["status"] not in ("succeeded", "failed"):
                status = client.get(r.json()["status_url"], params={"wait_s": 30}).json()
            assert status["status"] == "succeeded", status
            return json.loads(store.get_bytes(status["result"]["manifest_key"]))

        first = run(seed=1)
        assert first["depth_source"] == "estimated" and first["depth_model"] == str(model)
        assert "from the depth cache" not in first["methods"]["depth"]
        assert len(store.list("depth/")) == 1
        second = run(seed=2)  # the same photo: its depth comes from the cache
        assert second["depth_source"] == "estimated" and "from the depth cache" in second["methods"]["depth"]
        assert len(store.list("depth/")) == 1
        flat = run(seed=3, depth="none")
        assert flat["depth_source"] == "none" and flat["depth_model"] is None
        # Post effects and a look run in the farm's streamed camera job (the base replica).
        graded = run(seed=4, post=["boomerang"], look="noir")
        frames, _ = decode_video(store.get_bytes(graded["keys"]["video"]))
        assert len(frames) == graded["frames"] == 2 * 8 - 1
        assert "boomerang" in graded["methods"]["post"] and "noir" in graded["methods"]["look"]
        assert np.abs(frames[..., 0].astype(int) - frames[..., 2]).mean() < 2  # noir: no colour
        # A .cube look without its file: refused at the door (422, when the ingress checks the
        # `lut` part) or, queued, failed by the runner with the reason; never a crash or a hang.
        body = {"path": PATH, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160, "height": 90,
                "look": "missing.cube"}
        r = client.post("/v1/jobs", files={"image": ("p.png", image, "image/png")},
                        data={"request": json.dumps(body)})
        if r.status_code == 202:
            status = client.get(r.json()["status_url"], params={"wait_s": 30}).json()
            while status["status"] not in ("succeeded", "failed"):
                status = client.get(r.json()["status_url"], params={"wait_s": 30}).json()
            assert status["status"] == "failed" and "names a .cube file" in status["error"], status
        else:
            assert r.status_code == 422 and "lut" in r.json()["detail"], r.text
