"""Shared fixtures: images made here (no downloads) and the bundled example."""

from __future__ import annotations

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
