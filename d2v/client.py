"""A client of a running d2v farm over its HTTP API: what `d2v submit` and `d2v jobs` run.

    farm = FarmClient("http://farm:8000", api_key="...", timeout_s=60)
    job = farm.submit(image_bytes, request, depth=None, lut=None)  # POST /v1/jobs -> JobAccepted
    status = farm.wait(job["job_id"], on_status=print)             # GET /v1/jobs/{id}?wait_s=N until done
    farm.download(job["job_id"], "out.mp4"); farm.manifest(job["job_id"])
    farm.jobs(limit=20)                                            # GET /v1/jobs?limit=N, newest first

A farm that is down (connection refused, 502/504) or busy (503, Retry-After) is retried with
backoff for up to `timeout_s`, then FarmUnavailableError; a refusal (4xx) is
FarmRefusedError with the farm's own `detail`; a job that ran and failed is JobFailedError.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

from d2v.errors import D2VError
from d2v.models import RenderRequest

POLL_S = 2.0  # each status request is held open this long (long polling): progress every 2 s, the end at once
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 8.0  # backoff between tries when the farm is down or busy
FINISHED = ("succeeded", "failed")
RETRIED = (502, 503, 504)  # busy (the farm's 503), or a proxy in front of it that cannot reach it


class FarmRefusedError(D2VError):
    """The farm said no (4xx): its detail says what to change. Exit status 2."""

    exit_code = 2


class FarmUnavailableError(D2VError):
    """The farm did not answer, or stayed busy, for the whole retry bound. Exit status 1."""

    exit_code = 1


class JobFailedError(D2VError):
    """The job was accepted and ran, and failed: its error says why. Exit status 1."""

    exit_code = 1


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text.strip() or response.reason_phrase
    return " ".join(str(detail).split())  # one line, whatever the server sent


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class FarmClient:
    def __init__(self, server: str, api_key: str | None = None, timeout_s: float = 60.0):
        if not server.startswith(("http://", "https://")):
            raise FarmRefusedError(f"--server must be an http:// or https:// URL, got {server!r}")
        self.server, self.timeout_s = server.rstrip("/"), timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Reads wait longer than a long poll; S3 redirects drop the Authorization header (httpx
        # does so for another origin), so presigned URLs are fetched as they are signed.
        self.http = httpx.Client(base_url=self.server, headers=headers, follow_redirects=True,
                                 timeout=httpx.Timeout(POLL_S + 30, connect=5))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "FarmClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one call, retried while the farm is away ----------------------------------------

    def _call(self, method: str, url: str, **kwargs) -> httpx.Response:
        """The farm's answer to one request. Down or busy: retried (Retry-After honoured,
        else backoff) until `timeout_s` after the first try. A POST is resent only when it
        never arrived (no connection) or was refused as busy: never twice into the farm."""
        deadline, delay = time.monotonic() + self.timeout_s, FIRST_RETRY_S
        while True:
            try:
                response = self.http.request(method, url, **kwargs)
                if response.status_code not in RETRIED or (method != "GET" and response.status_code != 503):
                    break  # a POST behind a 502/504 may have arrived: not sent twice
                why = f"busy ({_detail(response)})" if response.status_code == 503 else \
                    f"not answering ({response.status_code} from a proxy in front of it)"
                wait = _retry_after(response) or delay
            except httpx.ConnectError as e:
                why, wait = f"not reachable ({' '.join(str(e).split()) or 'connection refused'})", delay
            except httpx.TransportError as e:
                if method != "GET":  # it may have arrived: resending could make a second job
                    raise FarmUnavailableError(f"{self.server}: {method} {url} got no answer ({type(e).__name__}); "
                                               "check `d2v jobs` before submitting again") from None
                why, wait = f"not answering ({type(e).__name__})", delay
            left = deadline - time.monotonic()
            if left <= 0:
                raise FarmUnavailableError(f"the farm at {self.server} is {why}; gave up after {self.timeout_s:g} s "
                                           "(--timeout)")
            time.sleep(min(wait, left))
            delay = min(delay * 2, MAX_RETRY_S)
        if 400 <= response.status_code < 500:
            raise FarmRefusedError(f"{response.status_code}: {_detail(response)}")
        if response.status_code >= 500:
            raise FarmUnavailableError(f"the farm at {self.server} failed ({response.status_code}: "
                                       f"{_detail(response)})")
        return response

    # -- the API ------------------------------------------------------------------------

    def submit(self, image: bytes, request: RenderRequest, *, image_name: str = "image",
               depth: bytes | None = None, lut: bytes | None = None) -> dict:
        """POST /v1/jobs: the image, the request as JSON, an optional depth map and the
        look's .cube (when `request.look` names one) -> JobAccepted."""
        files = {"image": (image_name, image, "application/octet-stream")}
        if depth is not None:
            files["depth"] = ("depth.png", depth, "application/octet-stream")
        if lut is not None:
            files["lut"] = (request.look or "look.cube", lut, "application/octet-stream")
        return self._call("POST", "/v1/jobs", files=files, data={"request": request.model_dump_json()}).json()

    def status(self, job_id: str, wait_s: float = 0.0) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}", params={"wait_s": wait_s}).json()

    def wait(self, job_id: str, on_status: Callable[[dict], None] | None = None) -> dict:
        """Long-poll the job until it has finished; `on_status` sees every answer (progress)."""
        while True:
            status = self.status(job_id, POLL_S)
            if on_status is not None:
                on_status(status)
            if status["status"] in FINISHED:
                return status

    def download(self, job_id: str, output: str | Path) -> Path:
        """The job's MP4 (a redirect to S3 followed), written whole or not at all."""
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".d2v-", suffix=".mp4")
        try:
            with os.fdopen(fd, "wb") as f, self.http.stream("GET", f"/v1/jobs/{job_id}/video") as response:
                if response.status_code >= 400:
                    response.read()
                    raise FarmRefusedError(f"the video of job {job_id}: {response.status_code}: {_detail(response)}")
                for chunk in response.iter_bytes():
                    f.write(chunk)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out

    def manifest(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}/manifest").json()

    def jobs(self, limit: int = 20) -> list[dict]:
        return self._call("GET", "/v1/jobs", params={"limit": limit}).json()["jobs"]
