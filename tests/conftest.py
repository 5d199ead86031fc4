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
