"""Moved to `d2v.bases.svd` (the generative bases' package); this name stays for old imports."""

from d2v.bases.common import resolve_device  # noqa: F401
from d2v.bases.svd import *  # noqa: F401,F403
from d2v.bases.svd import MODEL_ENV, SVDModel, SVDOptions, load_svd, shared_svd, svd_model_setting  # noqa: F401
