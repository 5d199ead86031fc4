"""The farm's operator knobs: the Serve config's application `args` (see deployments/configs/*.yaml),
read by both the HTTP API (deployments.ingress) and the job runner (deployments.runner)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from d2v.jobqueue import DEFAULT_QUEUE


@dataclass
class FarmSettings:
    max_running_jobs: int = 2  # jobs one runner replica takes from the queue at once (its max_ongoing_requests)
    max_queued_jobs: int = 32  # more than this waiting in the queue -> POST answers 503 (retry later)
    max_attempts: int = 5  # a job whose stage or runner replica died is tried this many times in all
    lease_s: float = 30.0  # a running job's owner heartbeats within this, or anyone may take the job over
    retry_backoff_s: float = 2.0  # (kept for old configs: the queue's own backoff applies)
    url_expiry_s: int = 900  # presigned result URLs: short-lived, minted afresh on every GET
    max_clip_bytes: int = 4 * 2**30  # frames held between stages, all of them
    max_previews: int = 2  # POST /v1/preview renders this many at once in one API replica
    svd_model: str | None = None  # the base stage's SVD model; None = D2V_SVD_MODEL
    ltx_model: str | None = None  # the base stage's LTX-Video model; None = D2V_LTX_MODEL
    wan_model: str | None = None  # the base stage's Wan 2.2 model; None = D2V_WAN_MODEL
    depth_model: str | None = None  # the depth stage's model (jobs with depth "auto"); None = D2V_DEPTH_MODEL
    queue: str = DEFAULT_QUEUE  # the Redis queue of this app (two apps on one Redis: two names)
    api_keys_env: str = "D2V_API_KEYS"  # the environment variable holding this app's API keys
    admin_keys_env: str = "D2V_ADMIN_KEYS"  # ... and its operators' keys (farm-wide /v1/stats, /healthz details)
    reconcile_s: float = 10.0  # how often a runner looks for stored jobs that nobody runs

    def base_models(self) -> dict[str, str]:
        """{base: model} of the generative bases this farm runs (d2v.bases.configured)."""
        from d2v.bases import configured

        return configured(overrides={"svd": self.svd_model, "ltx": self.ltx_model, "wan": self.wan_model})

    def depth(self) -> str | None:
        """The depth model this farm estimates with: `depth_model`, else D2V_DEPTH_MODEL; None: no estimates."""
        from d2v.depth import depth_model_setting

        return self.depth_model or depth_model_setting()

    @classmethod
    def from_args(cls, args: dict | None) -> "FarmSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args or {}) - known)
        if unknown:
            raise ValueError(f"unknown d2v app args {unknown}; known: {sorted(known)}")
        return cls(**(args or {}))
