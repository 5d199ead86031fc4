"""The depth stage in the farm: a tiny random-weight depth model, the app's `depth_model`
(an app of its own on the session's shared farm), loaded by the DepthStage replica through
the real loader; the first job on a photo estimates its depth, the next one
reads it from the store's depth cache; `depth: "none"` renders flat; a job with post effects
and a look gets them. The preview plans as the job does: `auto` on a level stroke slides
(parallax) when the job will have depth."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from d2v.encode import decode_video
from d2v.s3store import S3Store
from tests.conftest import SharedFarm, textured_image
from tests.test_images import png_bytes

pytestmark = pytest.mark.timeout(300)
PATH = [{"x": 60, "y": 90}, {"x": 260, "y": 100}]


class PatientClient(httpx.Client):
    """A client as d2v.client is: a 503 (the farm's store or queue slower than its 1.5 s
    patience, on a busy machine) is asked again after its Retry-After, a few times."""

    def send(self, request, **kwargs):
        for _ in range(4):
            response = super().send(request, **kwargs)
            if response.status_code != 503:
                break
            time.sleep(min(float(response.headers.get("Retry-After", 1)), 3.0))
        return response


@pytest.fixture(scope="module")
def depth_app(shared_farm, tmp_path_factory):
    """An app whose depth stage has a model (its own route, queue and depth model; the
    farm's other apps have none): its URL and the model's directory."""
    from d2v.depth import make_tiny_depth

    model = make_tiny_depth(tmp_path_factory.mktemp("tiny-depth"))
    yield shared_farm.app("/depth", {"depth_model": str(model)}), model
    shared_farm.remove("/depth")


def test_the_farm_estimates_depth_once_per_photo(depth_app, seaweed):
    url, model = depth_app
    image = png_bytes(textured_image(320, 180, seed=31))
    with PatientClient(base_url=url, timeout=60) as client:
        store = S3Store.from_env(seaweed.env(SharedFarm.BUCKET))
        cached = set(store.list("depth/"))  # the shared store's depth cache: only this module's app fills it

        def body_of(**request) -> dict:
            return {"path": PATH, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160, "height": 90, **request}

        def preview(**request) -> dict:
            r = client.post("/v1/preview", files={"image": ("p.png", image, "image/png")},
                            data={"request": json.dumps(body_of(**request))})
            assert r.status_code == 200, r.text
            return r.json()

        def run(**request) -> dict:
            body = body_of(**request)
            r = client.post("/v1/jobs", files={"image": ("p.png", image, "image/png")},
                            data={"request": json.dumps(body)})
            assert r.status_code == 202, r.text
            status = client.get(r.json()["status_url"], params={"wait_s": 30}).json()
            while status["status"] not in ("succeeded", "failed"):
                status = client.get(r.json()["status_url"], params={"wait_s": 30}).json()
            assert status["status"] == "succeeded", status
            return json.loads(store.get_bytes(status["result"]["manifest_key"]))

        # Before any job: the preview plans with depth (the model is configured) but has none
        # to show; it never runs the model (nothing is cached by it).
        ahead = preview(effect="auto")
        assert (ahead["effect"], ahead["depth_source"], ahead["depth_shown"]) == ("parallax", "estimated", False)
        assert set(store.list("depth/")) == cached
        first = run(seed=1)
        assert first["depth_source"] == "estimated" and first["depth_model"] == str(model)
        assert "from the depth cache" not in first["methods"]["depth"]
        assert len(set(store.list("depth/")) - cached) == 1
        second = run(seed=2, effect="auto")  # the same photo: its depth comes from the cache
        assert second["depth_source"] == "estimated" and "from the depth cache" in second["methods"]["depth"]
        assert len(set(store.list("depth/")) - cached) == 1
        shown = preview(effect="auto")  # now with the cached estimate
        assert shown["effect"] == second["effect"] == "parallax" and shown["depth_shown"]
        flat = run(seed=3, depth="none")
        assert flat["depth_source"] == "none" and flat["depth_model"] is None
        # Post effects and a look run in the farm's streamed camera job (the base replica).
        graded = run(seed=4, post=["boomerang"], look="noir")
        frames, _ = decode_video(store.get_bytes(graded["keys"]["video"]))
        assert len(frames) == graded["frames"] == 2 * 8 - 1
        assert "boomerang" in graded["methods"]["post"] and "noir" in graded["methods"]["look"]
        assert np.abs(frames[..., 0].astype(int) - frames[..., 2]).mean() < 2  # noir: no colour
        # A .cube look without its file: refused at the door, nothing queued.
        body = {"path": PATH, "effect": "pan", "duration_s": 1, "fps": 8, "width": 160, "height": 90,
                "look": "missing.cube"}
        r = client.post("/v1/jobs", files={"image": ("p.png", image, "image/png")},
                        data={"request": json.dumps(body)})
        assert r.status_code == 422 and "lut" in r.json()["detail"], r.text
        assert preview(effect="auto", depth="none")["effect"] == "pan"
