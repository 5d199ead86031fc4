"""A client of a running d2v farm over its HTTP API: what `d2v submit` and `d2v jobs` run.

    farm = FarmClient("http://farm:8000", api_key="...", timeout_s=60)
    job = farm.submit(image_bytes, request, depth=None, lut=None)  # POST /v1/jobs -> JobAccepted
    status = farm.wait(job["job_id"], on_status=print)             # GET /v1/jobs/{id}?wait_s=N until done
    farm.download(job["job_id"], "out.mp4"); farm.manifest(job["job_id"])
    farm.jobs(limit=20)                                            # GET /v1/jobs?limit=N, newest first

A farm that is down (connection refused, 502/504) or busy (503, Retry-After) is retried with
backoff for up to `timeout_s`, then FarmUnavailableError; a refusal (4xx) is
FarmRefusedError with the farm's own `detail`; a job that ran and failed is JobFailedError.
A server that answers with anything but the farm's JSON (another web server's HTML page) is
NotAFarmError: the caller's --server is wrong.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx

from d2v.errors import D2VError, InvalidRequestError
from d2v.models import RenderRequest

POLL_S = 2.0  # each status request is held open this long (long polling): progress every 2 s, the end at once
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 8.0  # backoff between tries when the farm is down or busy
FINISHED = ("succeeded", "failed")
RETRIED = (502, 503, 504)  # busy (the farm's 503), or a proxy in front of it that cannot reach it
MAX_JOBS = 100  # GET /v1/jobs?limit=: the farm lists at most this many (deployments.ingress.MAX_LIST)


class FarmRefusedError(D2VError):
    """The farm said no (4xx): its detail says what to change. Exit status 2."""

    exit_code = 2


class FarmUnavailableError(D2VError):
    """The farm did not answer, or stayed busy, for the whole retry bound. Exit status 1."""

    exit_code = 1


class JobFailedError(D2VError):
    """The job was accepted and ran, and failed: its error says why. Exit status 1."""

    exit_code = 1


class NotAFarmError(FarmRefusedError):
    """--server answered, but not as a d2v farm does (another server's page). Exit status 2."""


def _farm_json(response: httpx.Response) -> dict | None:
    """The body as the farm sends every answer (a JSON object); None for anything else."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _detail(response: httpx.Response) -> str | None:
    """The farm's own message ({"detail": ...}) on one line; None when the body is not one."""
    detail = (_farm_json(response) or {}).get("detail")
    return None if detail is None else " ".join(str(detail).split())


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


class FarmClient:
    def __init__(self, server: str, api_key: str | None = None, timeout_s: float = 60.0):
        if not server.startswith(("http://", "https://")):
            raise FarmRefusedError(f"--server must be an http:// or https:// URL, got {server!r}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):  # nan or inf would retry forever
            raise InvalidRequestError(f"--timeout must be a number of seconds above 0, got {timeout_s:g}")
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

    def _not_a_farm(self, response: httpx.Response) -> NotAFarmError:
        what = response.headers.get("content-type", "").split(";")[0] or "no content type"
        return NotAFarmError(f"{self.server}: not a d2v farm (HTTP {response.status_code}, {what}, from its "
                             f"{response.request.url.path}); check --server")

    def _json(self, method: str, url: str, key: str, **kwargs) -> dict:
        """The farm's JSON answer to one request (`_call`), which must hold `key`."""
        response = self._call(method, url, **kwargs)
        body = _farm_json(response)
        if body is None or key not in body:
            raise self._not_a_farm(response)
        return body

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
                why = f"busy ({_detail(response) or 'HTTP 503'})" if response.status_code == 503 else \
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
        if response.status_code < 400:
            return response
        detail = _detail(response)
        if detail is None and (response.status_code < 500 or "html" in response.headers.get("content-type", "")):
            raise self._not_a_farm(response)  # the farm says what is wrong, in JSON; a web page is not the farm
        if response.status_code < 500:
            raise FarmRefusedError(f"{response.status_code}: {detail}")
        raise FarmUnavailableError(f"the farm at {self.server} failed ({response.status_code}: "
                                   f"{detail or response.reason_phrase})")

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
        return self._json("POST", "/v1/jobs", "job_id", files=files, data={"request": request.model_dump_json()})

    def status(self, job_id: str, wait_s: float = 0.0) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}", "status", params={"wait_s": wait_s})

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
                    if (detail := _detail(response)) is None:
                        raise self._not_a_farm(response)
                    raise FarmRefusedError(f"the video of job {job_id}: {response.status_code}: {detail}")
                for chunk in response.iter_bytes():
                    f.write(chunk)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return out

    def manifest(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}/manifest", "frames")

    def jobs(self, limit: int = 20) -> list[dict]:
        if not 1 <= limit <= MAX_JOBS:  # checked here, not after a farm that is away has been waited out
            raise InvalidRequestError(f"--limit must be in 1..{MAX_JOBS}, got {limit}")
        return self._json("GET", "/v1/jobs", "jobs", params={"limit": limit})["jobs"]
