"""Shared fixtures: images made here (no downloads) and the bundled example."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def textured_image(width: int = 960, height: int = 540, seed: int = 0) -> np.ndarray:
    """A photo-like RGB uint8 image with texture at every scale (for phase correlation
    and flow): smoothed noise octaves plus a few hard-edged shapes."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for octave, weight in ((4, 0.35), (16, 0.3), (64, 0.2), (256, 0.15)):
        small = rng.random((max(2, height // octave), max(2, width // octave), 3)).astype(np.float32)
        img += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 1) * 255
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(8, 40))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, (int(x), int(y)), r, color, -1)
    return img.astype(np.uint8)


@pytest.fixture
def photo() -> np.ndarray:
    return textured_image()


@pytest.fixture
def example_image_path() -> Path:
    return EXAMPLES / "hubble.jpg"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS) for the whole test session."""
    from tests.seaweed import SeaweedS3

    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_store(seaweed, request):
    """An S3Store on its own fresh bucket (one per test: no test sees another's objects)."""
    import re

    from d2v.s3store import S3Store

    bucket = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + f"-{os.getpid()}"
    env = seaweed.env(bucket)
    return S3Store.from_env(env)


WEB_KEYS = "key1,key2"  # the keyed app's API keys (tests/test_web.py types them into the page)


class WebFarm:
    """The farm of the page's tests (tests/test_web.py, tests/test_web_subjects.py): Ray and
    Serve started once for the session, on first use, results in S3. Its app at / takes no
    API keys; the same app at /keyed (keys in D2V_WEB_KEYS) is deployed the first time a
    test asks for it, so no test restarts the farm to change its keys. Started again only if
    another test's farm stopped this process's Ray in between."""

    def __init__(self, seaweed):
        from contextlib import ExitStack

        self.seaweed, self.stack, self.url, self.session, self.keyed = seaweed, ExitStack(), "", None, False

    def _up(self) -> bool:
        import ray

        return ray.is_initialized() and ray._private.worker._global_node.session_name == self.session

    def base(self) -> str:
        import ray

        from tests.farm import serve_farm

        if not self._up():
            self.stack.close()
            env = {**self.seaweed.env("web"), "D2V_DEVICE": "cpu", "D2V_API_KEYS": "", "D2V_WEB_KEYS": WEB_KEYS}
            self.url = self.stack.enter_context(serve_farm(env, {"/": {"max_running_jobs": 2}}, num_cpus=4))
            self.session, self.keyed = ray._private.worker._global_node.session_name, False
        return self.url

    def keyed_base(self) -> str:
        from tests.farm import deploy

        url = self.base()
        if not self.keyed:
            deploy("/keyed", {"max_running_jobs": 2, "api_keys_env": "D2V_WEB_KEYS"})
            self.keyed = True
        return url + "/keyed"


@pytest.fixture(scope="session")
def web_farm(seaweed):
    farm = WebFarm(seaweed)
    yield farm
    farm.stack.close()


@pytest.fixture
def web(web_farm) -> str:
    """The d2v Serve app on a free port, no API keys; its base URL."""
    return web_farm.base()


@pytest.fixture
def keyed_web(web_farm) -> str:
    """The same app with API keys (key1, key2), on the same farm at /keyed; its base URL."""
    return web_farm.keyed_base()
