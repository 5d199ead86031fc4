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


def write_mp4(path: Path, frames, times, codec: str = "libx264") -> Path:
    """An MP4 written with PyAV alone, frame i shown at times[i] seconds: the inputs d2v's own
    encoder never makes (an uneven clock; odd sizes, which x264 refuses: codec "mpeg4")."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for frame, t in zip(frames, times):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts, vf.time_base = round(t * 1000), Fraction(1, 1000)
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def photo() -> np.ndarray:
    return textured_image()


@pytest.fixture
def yuv_conversions(monkeypatch) -> list[tuple]:
    """The shapes of the RGB frames the encoder converts to I420 (`d2v.encode.Yuv420`) while the
    test runs: what a render did not draw as planes itself."""
    from d2v import encode

    converted: list[tuple] = []
    convert = encode.Yuv420.__call__

    def counted(self, rgb):
        converted.append(rgb.shape)
        return convert(self, rgb)

    monkeypatch.setattr(encode.Yuv420, "__call__", counted)
    return converted


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
    _last_the_shared_farms_modules(items)
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


# The shared farm's keyed app (/keyed) takes these API keys: tests/test_web.py types key2 into
# the page; tests/test_reliability_inputs.py sends its requests with a key of its own, so
# neither sees the other's jobs.
RELIABILITY_KEY = "reliability-test-key"
WEB_KEYS = "key1,key2," + RELIABILITY_KEY


class SharedFarm:
    """The farm of the modules that can share one: Ray and Serve started once for the session, on
    first use, results in S3. Its app at / takes no API keys; further apps (each at its own
    route prefix, with its own queue, keys and models) are deployed the first time a test asks
    for one, so no test restarts the farm to change them. Started again only if another module's
    farm stopped this process's Ray in between (the modules that use this farm run last,
    together: pytest_collection_modifyitems)."""

    BUCKET = "web"  # its store: tests read results back from it (seaweed.env(SharedFarm.BUCKET))

    def __init__(self, seaweed):
        from contextlib import ExitStack

        self.seaweed, self.stack, self.url, self.session, self.apps = seaweed, ExitStack(), "", None, set()

    def _up(self) -> bool:
        import ray

        return ray.is_initialized() and ray._private.worker._global_node.session_name == self.session

    def base(self) -> str:
        import ray

        from tests.farm import serve_farm

        if not self._up():
            self.stack.close()
            env = {**self.seaweed.env(self.BUCKET), "D2V_DEVICE": "cpu", "D2V_API_KEYS": "", "D2V_WEB_KEYS": WEB_KEYS}
            # Logical CPUs for three d2v apps at once (1.55 each: deployments/*.py), so an app
            # a module forgot to remove leaves room for the next; two logical GPUs for
            # tests/test_gpu_worker.py's fractional replicas (no d2v app asks for one).
            self.url = self.stack.enter_context(serve_farm(env, {"/": {"max_running_jobs": 2}}, num_cpus=6, num_gpus=2))
            self.session, self.apps = ray._private.worker._global_node.session_name, set()
        return self.url

    def app(self, prefix: str, args: dict) -> str:
        """The base URL of the app at `prefix` (built from `args`), deployed on first use."""
        from tests.farm import deploy

        url = self.base()
        if prefix not in self.apps:
            deploy(prefix, args)
            self.apps.add(prefix)
        return url + prefix

    def keyed(self) -> str:
        """The base URL of the keyed app (/keyed: the keys in WEB_KEYS). Its queue is long enough
        that tests/test_reliability_inputs.py's legal jobs never meet the 503 of a full one.
        (One app for both modules: an app's start costs 15-20 s.)"""
        return self.app("/keyed", {"max_running_jobs": 2, "max_queued_jobs": 1000, "api_keys_env": "D2V_WEB_KEYS"})

    def remove(self, prefix: str) -> None:
        """Delete the app at `prefix` (a module done with it): its 8 idle replicas would only
        take CPU from the modules after it. Not waited for: the next module starts while Serve
        stops them (each replica's graceful stop took the module's teardown 2-4 s)."""
        from ray import serve

        from tests.farm import app_name

        if prefix in self.apps and self._up():
            serve.delete(app_name(prefix), _blocking=False)
        self.apps.discard(prefix)


@pytest.fixture(scope="session")
def shared_farm(seaweed):
    farm = SharedFarm(seaweed)
    yield farm
    farm.stack.close()


@pytest.fixture
def web(shared_farm) -> str:
    """The d2v Serve app on a free port, no API keys; its base URL."""
    return shared_farm.base()


@pytest.fixture
def keyed_web(shared_farm) -> str:
    """The same app with API keys (key1, key2, ...), on the same farm at /keyed; its base URL."""
    return shared_farm.keyed()


def _uses_the_shared_farm(item) -> bool:
    return "shared_farm" in getattr(item, "fixturenames", ())


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def _last_the_shared_farms_modules(items) -> None:
    """Every module with a test on the shared farm runs after all the others, in their
    usual order: the farm starts once, and no other module's farm (each starts its own Ray,
    stopping this one) comes between them. Whole modules move, so module fixtures stay up."""
    shared = {_module(item) for item in items if _uses_the_shared_farm(item)}
    items.sort(key=lambda item: _module(item) in shared)  # stable: the order within kept
