"""Moved to `d2v.bases.tiny` (tiny random-weight pipelines of every base); this name stays for old imports."""

from d2v.bases.tiny import (  # noqa: F401
    CLIP_IMAGE_PROCESSOR_CONFIG,
    SVD_SCHEDULER_CONFIG,
    build_tiny_svd,
    make_tiny_svd,
)
