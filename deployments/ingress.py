"""The HTTP API of the farm (FastAPI inside Ray Serve): it checks, stores, enqueues and answers.

    POST /v1/jobs                 multipart: image (file), request (JSON), depth (optional file),
                                  lut (optional .cube file, when the request's look names one) -> 202
    GET  /v1/jobs/{job_id}        status, stage, progress, error, result (?wait_s=N: long polling)
    GET  /v1/jobs/{job_id}/video  -> the MP4 (redirect to a presigned URL on S3)
    GET  /v1/jobs/{job_id}/poster -> the poster JPEG
    GET  /v1/jobs/{job_id}/fidelity -> fidelity.png (the drawn path and the measured one)
    GET  /v1/jobs/{job_id}/manifest -> manifest.json (what was rendered, how, and the path check)
    GET  /v1/jobs/{job_id}/image, /request -> its photo and request (the page's "render again")
    GET  /v1/jobs?limit=N         the caller's latest jobs, newest first (d2v.lifecycle's recent/ index)
    GET  /v1/effects, GET /healthz, OpenAPI at /docs (typed: deployments.http_models)
    GET  /v1/presets, /v1/looks, /v1/post, /v1/backends   what a request can name (the page's pickers)
    GET  /v1/limits               what this farm takes: image bytes and pixels, duration, fps, sizes
    GET  /v1/stats?since=7d       the KPIs (d2v.report): videos, success rate, times, cost per video
    POST /v1/preview              multipart: image, request -> effect, smoothed path, low-res MP4 (d2v.preview)
    POST /v1/subjects/outline     multipart: image, region -> the region refined to its object's outline
    GET  /                        the drawing page (deployments/web/, files under /static/), /favicon.ico
    (HEAD is answered wherever GET is, for the result files too: players and link checkers ask it)

POST checks everything a user can get wrong before anything is queued (4xx at once), plans
the move (a path the planner cannot use is a 422 here), stores the inputs, records the job
(d2v.lifecycle) and puts its id on the queue (d2v.jobqueue); the job runner
(deployments.runner) takes it from there. Every call to the store or the queue is bounded:
when one is away the answer is a 503 with Retry-After, never a hang or a 500.

Jobs belong to their key: ids are random; with API keys (D2V_API_KEYS) a job is visible
only to the key that submitted it (404 for any other); the same image and request from
another key is answered from the finished result under that key's own job id.
"""

# No `from __future__ import annotations` here: FastAPI must see real types (Request)
# on the methods that Serve re-wraps, or it takes `request` for a query parameter.
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
import os
import secrets
import time
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.routing import Match

from d2v import __version__
from d2v.depth import cached_depth, planned_depth_source
from d2v.errors import (
    D2VError,
    ImageTooLargeError,
    InvalidRequestError,
    JobNotFoundError,
    StoreUnavailableError,
    one_line,
    user_error,
)
from d2v.images import (
    MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, PHOTO_FORMATS, check_depth_header, check_image_header,
    decode_image, oriented_size,
)
from d2v.subjects import attach_masks, mask_names, outline_answer
from d2v.jobqueue import JobQueue
from d2v.looks import MAX_LUT_BYTES, parse_cube
from d2v.lifecycle import (
    DEPTH, FIDELITY, INPUT_PREFIX, LUT, MANIFEST, POSTER, REQUEST, VIDEO, Jobs, StaleAttempt, file_key, input_key,
    new_job_id, tenant_of,
)
from d2v.models import (
    EFFECTS, LOOKS, LUT_SUFFIX, MAX_PATH_POINTS, POST_EFFECTS, JobStatus, RenderRequest, field_bounds, parse_request,
)
from d2v.pipeline import content_job_id, require_backend
from d2v.presets import presets
from d2v.preview import preview as render_preview
from d2v.preview import working_size
from d2v.render import check_depth_map, load_depth_map
from d2v.stages import plan
from d2v.store import LocalStore, store_from_env, validate_job_id
from deployments.http_models import JobAccepted, JobList, JobView, add_request_schemas, errors, multipart_body
from deployments.settings import FarmSettings
from deployments.telemetry import refused, replica_logging, submitted

log = logging.getLogger("d2v.ingress")
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_WAIT_S = 30.0  # GET /v1/jobs/{id}?wait_s=: the longest a status request is held open
HEALTH_TIMEOUT_S = 1.0  # /healthz: a dependency that takes longer counts as down (clients wait 2 s)
DEPENDENCY_TIMEOUT_S = 1.5  # a request waits this long for the store or the queue, then 503 (clients: 2 s)
BODY_IDLE_TIMEOUT_S = 8.0  # an upload that sends nothing for this long is refused (408)
STORE_PUT_TIMEOUT_S = 30.0  # storing an upload (up to 50 MiB) before the 202
MAX_UPLOAD_FILES = 12  # image, depth, lut and the subjects' and still regions' mask images
MAX_LIST = 100  # GET /v1/jobs?limit=: the most jobs one listing returns (each is a status read)
STATS_TIMEOUT_S = 20.0  # GET /v1/stats: the most work one report does (a LIST of the store per day of the span)
STATS_CALL_S = 5.0  # ... each store call of it given up after this
MAX_REPORTS = 2  # GET /v1/stats: reports made at once per API replica (more: 503, retry)

api = FastAPI(
    title="d2v",
    version=__version__,
    description="Draw a path on a photo, get a video whose camera follows it. "
    "POST an image and a request to /v1/jobs, then poll the status_url.",
)


def get_and_head(path: str, **kw):
    """A GET route that answers HEAD too (its status and headers; the server sends no body),
    as HTTP asks of every GET resource: link checkers and players ask HEAD first. The HEAD
    route stays out of the OpenAPI schema (one operation per path and method there)."""
    def register(fn):
        api.add_api_route(path, fn, methods=["HEAD"], include_in_schema=False)
        return api.get(path, **kw)(fn)
    return register
api.mount("/static", StaticFiles(directory=WEB_DIR), name="static")


def _openapi() -> dict:
    # FastAPI's document plus RenderRequest's schema, which the hand-documented multipart
    # bodies refer to (FastAPI does not see them: the handlers parse the body themselves).
    if api.openapi_schema is None:
        api.openapi_schema = add_request_schemas(FastAPI.openapi(api))
    return api.openapi_schema


api.openapi = _openapi


class Busy(D2VError):
    status_code = 503


class Unauthorized(D2VError):
    status_code = 401


class RequestTimeout(D2VError):
    status_code = 408


class UnsupportedMediaType(D2VError):
    status_code = 415


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


class ResultFile(FileResponse):
    """A result file from the local store (S3 answers Range itself): Starlette's FileResponse, but
    a Range it refuses is answered in JSON like every other refusal (its own are text), and a
    Range in a unit other than bytes is ignored, as RFC 9110 (14.2) asks: the whole file."""

    async def __call__(self, scope, receive, send) -> None:
        headers = Headers(scope=scope)
        asked = headers.get("range")
        if asked is not None and self.status_code == 200:
            if self.stat_result is None:  # (stat once: the parent uses it, and If-Range its ETag)
                self.stat_result = await asyncio.to_thread(os.stat, self.path)
                self.set_stat_headers(self.stat_result)
            size = self.stat_result.st_size
            if asked.partition("=")[0].strip().lower() != "bytes":
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
            elif headers.get("if-range") is None or self._should_use_range(headers["if-range"]):
                try:
                    self._parse_range_header(asked, size)
                except MalformedRangeHeader:
                    refusal = _error(400, f"Range {asked!r}: ask bytes=START-END (0-based, END included, "
                                          f"START <= END) within the file's {size} bytes")
                    return await refusal(scope, receive, send)
                except RangeNotSatisfiable:
                    refusal = _error(416, f"Range {asked!r}: the file is {size} bytes; ask for a start below {size}",
                                     {"Content-Range": f"bytes */{size}"})
                    return await refusal(scope, receive, send)
        await super().__call__(scope, receive, send)


@api.exception_handler(D2VError)
async def _d2v_error(request: Request, exc: D2VError) -> JSONResponse:
    refused(exc.status_code, type(exc).__name__)
    headers = {"Retry-After": "10"} if exc.status_code == 503 else None
    if exc.status_code == 401:
        headers = {"WWW-Authenticate": "Bearer"}  # (what a 401 must name: the scheme to answer with)
    return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)}, headers=headers)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405:
        # Starlette's 405 names the methods of the first route on the path only ("Allow: POST" for
        # /v1/jobs, which GET and HEAD answer too): the app's routes are asked about each method.
        allowed = [m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE") if any(
            r.matches({**request.scope, "method": m})[0] == Match.FULL for r in request.app.router.routes)]
        if allowed:  # (none: the static files' 405, left as it is)
            return _error(405, f"{request.method} is not answered at {request.url.path}: use {', '.join(allowed)}",
                          {"Allow": ", ".join(allowed)})
    return await http_exception_handler(request, exc)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {'is required' if e['type'] == 'missing' else e['msg']}")
    refused(422, "RequestValidationError")
    return _error(422, "; ".join(parts))


async def _answer(awaitable, what: str, timeout_s: float | None = None):
    """The result of a call to something the farm depends on, or a 503 (StoreUnavailableError,
    Retry-After) naming it when it fails or does not answer in time: never a hang, never a 500."""
    try:
        return await asyncio.wait_for(awaitable, DEPENDENCY_TIMEOUT_S if timeout_s is None else timeout_s)
    except asyncio.TimeoutError:
        raise StoreUnavailableError(f"{what} did not answer within {timeout_s or DEPENDENCY_TIMEOUT_S:g} s; "
                                    "nothing was lost: retry shortly") from None
    except D2VError:
        raise
    except Exception as e:
        if (user := user_error(e)) is not None:
            raise user from None
        raise StoreUnavailableError(f"{what} is unavailable ({one_line(e)}): retry shortly") from None


def lut_too_large(nbytes: int) -> ImageTooLargeError:
    return ImageTooLargeError(f"lut: the .cube file is {nbytes / 2**20:.1f} MiB; the limit is "
                              f"{MAX_LUT_BYTES / 2**20:.0f} MiB")


async def _multipart(request: Request, parts: str, max_files: int, max_fields: int):
    """The request's multipart form (`parts`: what it should hold, for the message), checked
    cheapest first: the declared size and type, then the body parsed as it arrives (files
    spool to disk past 1 MiB), counted on the way (a chunked upload has no Content-Length, and
    a header can lie) and cut at the limit: never held whole in memory, never waited on for
    ever (a client that stops sending mid-body gets a 408 after BODY_IDLE_TIMEOUT_S)."""
    limit = MAX_IMAGE_BYTES + 1_000_000
    too_large = ImageTooLargeError(f"upload is over the limit of {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise InvalidRequestError("the Content-Length header is not a number") from None
    if length > limit:
        raise ImageTooLargeError(f"upload is {length / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):  # (any case: RFC 2045)
        raise UnsupportedMediaType(f"send multipart/form-data with {parts}")

    async def counted():
        received = 0
        body = Request.stream(request).__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(body.__anext__(), BODY_IDLE_TIMEOUT_S)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise RequestTimeout(f"the upload stalled: nothing arrived for {BODY_IDLE_TIMEOUT_S:g} s "
                                     f"after {received} bytes; send the whole body") from None
            received += len(chunk)
            if received > limit:
                raise too_large
            yield chunk

    # Starlette's parser itself, not request.form(): a part over its size limit can then be named.
    parser = MultiPartParser(request.headers, counted(), max_files=max_files, max_fields=max_fields)
    try:
        return await parser.parse()
    except D2VError:
        raise
    except MultiPartException as e:
        if "exceeded maximum size" in e.message:  # (a file part spools to disk; a field is held in memory)
            # (the part being read: Starlette's parser state, so read with care)
            name = getattr(getattr(parser, "_current_part", None), "field_name", "") or "a field"
            raise ImageTooLargeError(f"{name}: over the {parser.max_part_size // 2**20} MiB limit of a part without a "
                                     "filename; send large data (a mask image) as a file part") from None
        raise InvalidRequestError(f"the multipart body could not be read: {e.message}") from None
    except Exception as e:
        raise InvalidRequestError(f"the multipart body could not be read: {one_line(e)}") from None


def check_cube(data: bytes) -> None:
    """The `lut` part must be a 3D LUT that d2v.looks reads (the one reader of .cube files):
    checked at the door, so a bad file is the caller's 422 rather than a job that fails later."""
    if len(data) > MAX_LUT_BYTES:
        raise lut_too_large(len(data))
    parse_cube(data, "lut")


# Requests past max_ongoing + max_queued (per replica) are refused by Serve's proxy with a
# 503 and Retry-After before they reach the replica (deployments.proxy makes its body the
# farm's JSON), rather than waiting unbounded in the proxy. Serve configs may override these.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32, max_queued_requests=64,
                  backpressure_config={"retry_after_s": 5})
@serve.ingress(api)
class Ingress:
    def __init__(self, runner=None, settings: dict | None = None):
        # `runner`: the job runner's handle. Bound here so the app deploys it; jobs reach it
        # through the queue, not through this handle.
        replica_logging()
        self.runner = runner
        self.settings = FarmSettings.from_args(settings)
        self.depth_model = self.settings.depth()
        self.store = store_from_env()
        self.jobs = Jobs(self.store, self.settings.lease_s)
        self.stats_store = self.store.bounded(STATS_CALL_S)
        self.queue = JobQueue(self.settings.queue)
        keys = os.environ.get(self.settings.api_keys_env, "")
        self.api_keys = [k.strip() for k in keys.split(",") if k.strip()]
        admins = os.environ.get(self.settings.admin_keys_env, "")
        self.admin_keys = [k.strip() for k in admins.split(",") if k.strip()]
        self.reporting = asyncio.Semaphore(MAX_REPORTS)
        self.previewing = asyncio.Semaphore(self.settings.max_previews)
        # Calls to the store and the queue run on threads; one that hangs (S3 frozen) holds its
        # thread until the S3 timeout. Enough threads that those never starve the rest.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(64, thread_name_prefix="d2v-io"))

    # -- HTTP --------------------------------------------------------------------------

    @staticmethod
    def _key_of(request: Request, keys: list[str]) -> str | None:
        """Which of `keys` the request's bearer token is, if any."""
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""  # (a scheme's case does not matter: RFC 9110)
        # As bytes: compare_digest refuses str with non-ASCII characters (a 500 before).
        given = token.encode("utf-8", "surrogateescape")
        found = None
        for key in keys:
            if secrets.compare_digest(given, key.encode()):
                found = key
        return found

    def _authorize(self, request: Request) -> str | None:
        """The caller's tenant (a fingerprint of its key), None when the farm has no keys.
        Operators' keys (D2V_ADMIN_KEYS) are keys too."""
        if not self.api_keys:
            return None
        key = self._key_of(request, self.api_keys + self.admin_keys)
        if key is None:
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")
        return tenant_of(key)

    def _is_operator(self, request: Request) -> bool:
        return bool(self.admin_keys) and self._key_of(request, self.admin_keys) is not None

    @get_and_head("/healthz")
    async def healthz(self, request: Request) -> JSONResponse:
        """200 when the store and the queue answer; 503 (saying which is down) when not. Never
        blocks the event loop: each is probed in a thread, with a short timeout. Anyone gets
        up or down per dependency; an operator's key (D2V_ADMIN_KEYS) also where each is and why."""
        store, queue = await asyncio.gather(
            self._probe(asyncio.to_thread(self.store.exists, "healthz/probe")),
            self._probe(asyncio.to_thread(self.queue.ping)))
        ok = store == queue == "ok"
        body = {"status": "ok" if ok else "degraded", "version": __version__,
                "dependencies": {"store": "up" if store == "ok" else "down", "queue": "up" if queue == "ok" else "down"}}
        if self._is_operator(request):
            body.update(store=self.store.describe(), queue=self.queue.describe(),
                        details={"store": store, "queue": queue})
        return JSONResponse(status_code=200 if ok else 503, content=body,
                            headers=None if ok else {"Retry-After": "10"})

    @staticmethod
    async def _probe(call, timeout_s: float = HEALTH_TIMEOUT_S) -> str:
        try:
            await asyncio.wait_for(call, timeout_s)
            return "ok"
        except asyncio.TimeoutError:
            return f"no answer within {timeout_s:g} s"
        except Exception as e:
            return f"unavailable: {one_line(e)}"

    @get_and_head("/v1/effects")
    async def effects(self) -> list[dict]:
        return [{"name": name, "description": text} for name, text in EFFECTS.items()]

    @get_and_head("/v1/presets")
    async def list_presets(self) -> list[dict]:
        """The named presets: what each shows, and the request fields it sets (a request's own
        fields override them)."""
        return [{"name": name, **entry} for name, entry in presets().items()]

    @get_and_head("/v1/looks")
    async def list_looks(self) -> list[dict]:
        """The named colour grades; a request's `look` may instead name a .cube file sent as `lut`."""
        return [{"name": name, "description": text} for name, text in LOOKS.items()]

    @get_and_head("/v1/post")
    async def list_post_effects(self) -> list[dict]:
        """The post effects a request's `post` list may name, applied in its order."""
        return [{"name": name, "description": text} for name, text in POST_EFFECTS.items()]

    @get_and_head("/v1/backends")
    async def list_backends(self) -> list[dict]:
        """Each backend of the base stage, configured on this farm or not (and why not), with its
        limits (native size, frames per generation, frame rule, text), licence, and what `auto`
        renders with here (d2v.bases)."""
        from d2v.bases import backends_table

        return backends_table(self.settings.base_models())

    @get_and_head("/v1/limits")
    async def limits(self) -> dict:
        """What this farm takes, so a client can check before it uploads: the photo's bytes,
        pixels and smallest side, the clip's duration, frame rate and output sides, and the
        most frames x pixels one job may hold (max_clip_bytes: frames x width x height x 3)."""
        return {
            "image": {"max_bytes": MAX_IMAGE_BYTES, "max_pixels": MAX_IMAGE_PIXELS, "min_side": MIN_IMAGE_SIDE,
                      "formats": [f.lower() for f in PHOTO_FORMATS]},
            "duration_s": field_bounds("duration_s"), "fps": field_bounds("fps"),
            "size": {**field_bounds("width"), "even": True},
            "max_clip_bytes": self.settings.max_clip_bytes, "max_path_points": MAX_PATH_POINTS,
            "max_lut_bytes": MAX_LUT_BYTES,
        }

    @get_and_head("/v1/stats", responses=errors(401, 422, 503))
    async def stats(self, request: Request, since: str = Query("7d", description=(
            "jobs that ended in this span: a number and m, h, d or w (30m, 24h, 7d, 2w)"))) -> dict:
        """The KPIs over the jobs that ended in `since`: videos, success rate, median and p95
        generation time, cost per video; all, by backend, by effect (what `d2v report` prints).
        The caller's own jobs; an operator's key (D2V_ADMIN_KEYS), or a farm without keys, the
        whole farm's. Bounded: at most MAX_REPORTS at once, each within STATS_TIMEOUT_S of work
        (its thread stops by itself then: nothing outlives the request by more than a store call)."""
        from d2v.report import parse_since, report

        tenant = self._authorize(request)
        parse_since(since)  # a bad span is the caller's 422, before the store is asked
        farm_wide = not self.api_keys or self._is_operator(request)
        if self.reporting.locked():
            raise Busy(f"{MAX_REPORTS} reports are being made; retry in a few seconds")
        async with self.reporting:
            deadline = time.monotonic() + STATS_TIMEOUT_S
            made = asyncio.to_thread(report, self.stats_store, since, tenant=None if farm_wide else tenant,
                                     deadline=deadline)
            data = await _answer(made, "the object store", STATS_TIMEOUT_S + STATS_CALL_S)
        if not self._is_operator(request):
            data.pop("store", None)  # where the store is (a local path, a bucket): for operators' keys only
        return data

    @api.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page(self) -> FileResponse:
        # The page's links are relative, so it also works under a route prefix (`/prefix/`).
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @api.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon(self) -> FileResponse:
        # Browsers ask the site's root for it whatever the page links; an SVG serves both.
        return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})

    async def _read_upload(self, request: Request) -> tuple[RenderRequest, bytes, bytes | None, bytes | None]:
        """The multipart body of POST /v1/jobs and /v1/preview, checked cheapest first:
        size, shape, the request, then the image's header (never a full decode here).
        Returns the request and the bytes of the image, the depth map and the look's .cube."""
        form = await _multipart(request, "an 'image' file and a 'request' JSON field", MAX_UPLOAD_FILES, 16)
        try:
            upload, raw_request, depth_upload = form.get("image"), form.get("request"), form.get("depth")
            lut_upload = form.get("lut")
            if upload is None or isinstance(upload, str):
                raise InvalidRequestError("image: is required (a file field named 'image')")
            if raw_request is None:
                raise InvalidRequestError("request: is required (a JSON field named 'request')")
            render_request = parse_request(raw_request if isinstance(raw_request, str) else await raw_request.read())
            image_bytes = await upload.read()
            check_image_header(image_bytes)  # format and pixel limits before any decoding
            depth_bytes = None
            if depth_upload is not None and not isinstance(depth_upload, str):
                depth_bytes = await depth_upload.read()
                check_depth_header(depth_bytes)
                # Decoded now: a corrupt depth map (415) or one turned against the photo (422) is
                # the caller's mistake, not a job failing later.
                await asyncio.to_thread(check_depth_map, depth_bytes, *oriented_size(image_bytes))
            lut_bytes = await self._read_lut(render_request, lut_upload)
            if names := mask_names(render_request):  # subjects' and still regions' mask images, by part name
                if taken := sorted(names & {"image", "request", "depth", "lut"}):
                    raise InvalidRequestError(f"mask: the part {taken[0]!r} is the job's own; send each mask image "
                                              "as a file part of its own name")
                masks = {n: await form[n].read() for n in names if n in form and not isinstance(form[n], str)}
                render_request = await asyncio.to_thread(attach_masks, render_request, masks)
        finally:
            await form.close()  # the spooled files
        return render_request, image_bytes, depth_bytes, lut_bytes

    @staticmethod
    async def _read_lut(render_request: RenderRequest, lut_upload) -> bytes | None:
        """The `lut` part: required when the request's look names a .cube file, refused otherwise."""
        wants = render_request.look is not None and render_request.look.lower().endswith(LUT_SUFFIX)
        sent = lut_upload is not None and not isinstance(lut_upload, str)
        if wants and not sent:
            raise InvalidRequestError(f"lut: is required: look {render_request.look!r} names a 3D LUT; send the "
                                      f"{LUT_SUFFIX} file as a file field named 'lut'")
        if sent and not wants:
            raise InvalidRequestError(f"lut: a {LUT_SUFFIX} file was sent but the request's look is "
                                      f"{render_request.look!r}: set look to the file's name to use it")
        if not sent:
            return None
        if (lut_upload.size or 0) > MAX_LUT_BYTES:  # said without reading it all
            raise lut_too_large(lut_upload.size)
        lut_bytes = await lut_upload.read()
        await asyncio.to_thread(check_cube, lut_bytes)
        return lut_bytes

    @api.post("/v1/subjects/outline", responses=errors(400, 401, 408, 413, 415, 422))
    async def subject_outline(self, request: Request) -> dict:
        """The page's subject tool: a painted region (multipart `image` and `region` JSON: a
        brush stroke, polygon or mask part as in a request's `subjects`) refined to the object's
        edges (d2v.subjects), answered at once: its outlines in the region's canvas units and
        the share of the photo it covers. Nothing is stored."""
        self._authorize(request)
        form = await _multipart(request, "an 'image' file and a 'region' JSON field", 2, 4)
        try:
            upload, raw = form.get("image"), form.get("region")
            if upload is None or isinstance(upload, str):
                raise InvalidRequestError("image: is required (a file field named 'image')")
            if raw is None:
                raise InvalidRequestError("region: is required (a JSON field named 'region')")
            image_bytes = await upload.read()
            check_image_header(image_bytes)
            mask = form.get("mask")
            mask_bytes = await mask.read() if mask is not None and not isinstance(mask, str) else None
        finally:
            await form.close()
        async with self.previewing:
            return await asyncio.to_thread(outline_answer, image_bytes, raw, mask_bytes)

    @api.post("/v1/preview", responses=errors(400, 401, 408, 413, 415, 422),
              openapi_extra=multipart_body(depth=False))
    async def preview(self, request: Request) -> dict:
        """A low-resolution render of the camera move (no job, nothing stored): the effect
        `auto` picks, the smoothed path and per-frame views in canvas units, and a small
        MP4 inline as a data: URL. Same multipart body as POST /v1/jobs.

        Planned with depth exactly when the job will be (a depth map sent, or depth "auto"
        with a depth model configured: `planned_depth_source`), so `auto` resolves to the
        job's effect. Rendered with the depth map sent, or the photo's estimate when the
        store's depth cache already holds it; the model itself is never run here."""
        self._authorize(request)
        render_request, image_bytes, depth_bytes, lut_bytes = await self._read_upload(request)
        source = planned_depth_source(render_request, depth_given=depth_bytes is not None, model=self.depth_model)
        async with self.previewing:
            image = await asyncio.to_thread(decode_image, image_bytes)
            size = working_size(image.width, image.height)
            depth = None
            if depth_bytes is not None:
                depth = await asyncio.to_thread(load_depth_map, depth_bytes, *size)
            elif source == "estimated":
                try:  # one store read at most; slow or away, the preview goes on without it
                    depth = await asyncio.wait_for(
                        asyncio.to_thread(cached_depth, image_bytes, self.store, *size, model=self.depth_model),
                        DEPENDENCY_TIMEOUT_S)
                except Exception as e:
                    log.info("preview: the depth cache was not read (%s)", one_line(e) or type(e).__name__)
            return await asyncio.to_thread(render_preview, image.rgb, render_request, depth_source=source,
                                           depth=depth, lut_bytes=lut_bytes)

    @api.post("/v1/jobs", status_code=202, response_model=JobAccepted,
              response_description="accepted: follow status_url",
              responses=errors(400, 401, 408, 413, 415, 422, 503), openapi_extra=multipart_body(depth=True))
    async def submit(self, request: Request) -> JSONResponse:
        tenant = self._authorize(request)
        render_request, image_bytes, depth_bytes, lut_bytes = await self._read_upload(request)
        require_backend(render_request, models=self.settings.base_models())
        image = await asyncio.to_thread(decode_image, image_bytes)  # catches truncated files now, not later
        # Plan the move now (milliseconds): a path the planner cannot use is a 422 here, not a
        # job that fails after its 202.
        await asyncio.to_thread(plan, render_request, image.width, image.height, has_depth=depth_bytes is not None)
        clip_bytes = render_request.n_frames * render_request.width * render_request.height * 3
        if clip_bytes > self.settings.max_clip_bytes:
            raise InvalidRequestError(
                f"{render_request.n_frames} frames at {render_request.width}x{render_request.height} is "
                f"{clip_bytes / 2**30:.1f} GiB of frames; this farm takes up to "
                f"{self.settings.max_clip_bytes / 2**30:.0f} GiB: shorten the clip or lower fps or size")

        job_id = new_job_id()
        content = content_job_id(image_bytes, depth_bytes, render_request, self.settings.svd_model,
                                 depth_model=self.depth_model, lut_bytes=lut_bytes)
        done = await _answer(asyncio.to_thread(self.jobs.cached, content), "the object store")
        if done is not None:  # rendered before (by anyone): this caller's own job, answered at once
            await _answer(asyncio.to_thread(self.jobs.adopt_result, job_id, done, tenant=tenant, content=content),
                          "the object store")
            submitted(render_request.backend, render_request.effect)
            return self._accepted(request, job_id, "succeeded")
        waiting = await _answer(asyncio.to_thread(self.queue.waiting), "the job queue")
        if waiting >= self.settings.max_queued_jobs:
            raise Busy(f"the farm is busy ({waiting} jobs waiting); retry in a few seconds")
        await _answer(self._store_inputs(job_id, render_request, image_bytes, image.extension, depth_bytes,
                                         lut_bytes), "the object store", STORE_PUT_TIMEOUT_S)
        status = await _answer(asyncio.to_thread(self.jobs.create, job_id, queue=self.settings.queue,
                                                 tenant=tenant, content=content), "the object store")
        try:
            await _answer(asyncio.to_thread(self.queue.enqueue, job_id), "the job queue")
        except D2VError:
            if await self._withdraw(status):
                raise
            log.warning("job %s: its enqueue failed, yet a runner has it already: accepted", job_id)
        submitted(render_request.backend, render_request.effect)
        return self._accepted(request, job_id, "queued")

    async def _withdraw(self, status: JobStatus) -> bool:
        """A job whose enqueue failed ends 'failed' before the 503 is answered, so nothing can
        run it later (a runner refuses a failed job; the reconciler does not list it) while
        the client's retry renders it under a new id. False when a runner claimed it already
        (the message got through after all): then it is accepted."""
        reason = "it was not accepted: the job queue was unavailable, and the client was told to retry"
        try:
            await _answer(asyncio.to_thread(self.jobs.abandon, status, reason, record=False), "the object store")
            return True
        except StaleAttempt:
            return False
        except D2VError as e:  # the store is away too: its marker stays, so keep trying a while
            log.warning("job %s: not withdrawn yet (%s); retrying in the background", status.job_id, e)
            asyncio.get_running_loop().run_in_executor(None, self._withdraw_later, status, reason)
            return True

    def _withdraw_later(self, status: JobStatus, reason: str, tries: int = 10) -> None:
        for _ in range(tries):
            time.sleep(3)
            try:
                self.jobs.abandon(status, reason, record=False)
                return
            except StaleAttempt:
                return
            except Exception:
                continue

    async def _store_inputs(self, job_id: str, render_request: RenderRequest, image_bytes: bytes, extension: str,
                            depth_bytes: bytes | None, lut_bytes: bytes | None = None) -> None:
        puts = {input_key(job_id, extension): image_bytes,
                file_key(job_id, REQUEST): render_request.model_dump_json(indent=2).encode()}
        if depth_bytes:
            puts[file_key(job_id, DEPTH)] = depth_bytes
        if lut_bytes:
            puts[file_key(job_id, LUT)] = lut_bytes
        await asyncio.gather(*(asyncio.to_thread(self.store.put_bytes, key, data) for key, data in puts.items()))

    def _accepted(self, request: Request, job_id: str, status: str) -> JSONResponse:
        url = str(request.url_for("job_status", job_id=job_id))
        return JSONResponse(status_code=202, content={"job_id": job_id, "status": status, "status_url": url})

    async def _status(self, job_id: str, tenant: str | None) -> JobStatus:
        validate_job_id(job_id)
        status = await _answer(asyncio.to_thread(self.jobs.get, job_id), "the object store")
        # Another key's job is as absent as one that never existed: ids reveal nothing.
        if status is None or (self.api_keys and status.tenant != tenant):
            raise JobNotFoundError(f"no job {job_id!r}: check the id, or submit it again (POST /v1/jobs)")
        if status.status == "running" and (seen := await asyncio.to_thread(self.queue.progress, job_id)):
            status.stage, status.progress = seen  # fresher than the last heartbeat
        return status

    @get_and_head("/v1/jobs", response_model=JobList, responses=errors(401, 422, 503))
    async def list_jobs(
        self, request: Request,
        limit: int = Query(20, ge=1, le=MAX_LIST, description="how many of the latest jobs, newest first"),
    ) -> JSONResponse:
        """The caller's latest jobs, newest first (with API keys, only the caller's own)."""
        tenant = self._authorize(request)
        ids = await _answer(asyncio.to_thread(self.jobs.recent, tenant, limit), "the object store")
        statuses = await _answer(asyncio.gather(*(asyncio.to_thread(self.jobs.get, job_id) for job_id in ids)),
                                 "the object store")
        mine = [s for s in statuses if s is not None and (not self.api_keys or s.tenant == tenant)]
        return JSONResponse({"jobs": [self._public(request, s) for s in mine]})

    @get_and_head("/v1/jobs/{job_id}", name="job_status", response_model=JobView, responses=errors(400, 401, 404, 422, 503))
    async def job_status(
        self, job_id: str, request: Request,
        wait_s: float = Query(0.0, ge=0.0, le=MAX_WAIT_S, description=(
            "Long polling: wait up to this many seconds for the job to finish before answering. "
            "The answer comes the moment it is done, with no polling in between.")),
    ) -> JSONResponse:
        tenant = self._authorize(request)
        status = await self._status(job_id, tenant)
        deadline = time.monotonic() + wait_s
        reread = time.monotonic() + 1.0
        while status.status in ("queued", "running") and (left := deadline - time.monotonic()) > 0:
            # The runner marks the end in Redis (a cheap check, 20 a second); the store is
            # reread then, and every second anyway (progress; Redis away).
            await asyncio.sleep(min(left, 0.05))
            if await asyncio.to_thread(self.queue.is_finished, job_id) or time.monotonic() >= reread:
                status = await self._status(job_id, tenant)
                reread = time.monotonic() + 1.0
        return JSONResponse(self._public(request, status))

    @staticmethod
    def _public(request: Request, status: JobStatus) -> dict:
        """A job as its caller sees it (JobView), with the URLs of its results."""
        body, job_id = status.public(), status.job_id
        if status.result is not None:
            body["result"]["video_url"] = str(request.url_for("job_video", job_id=job_id))
            body["result"]["poster_url"] = str(request.url_for("job_poster", job_id=job_id))
            if status.result.fidelity_key:
                body["result"]["fidelity_url"] = str(request.url_for("job_fidelity", job_id=job_id))
        return body

    async def _result_object(self, job_id: str, request: Request, name: str, media_type: str) -> Response:
        status = await self._status(job_id, self._authorize(request))
        if status.status != "succeeded" or status.result is None:
            return _error(409, f"job {job_id} is {status.status}; its {name} exists once it has succeeded")
        # The result's own keys: a job answered from the cache points at the job that rendered it.
        key = {VIDEO: status.result.video_key, POSTER: status.result.poster_key,
               FIDELITY: status.result.fidelity_key, MANIFEST: status.result.manifest_key}[name]
        if key is None:
            return _error(404, f"job {job_id} has no {name}")
        if isinstance(self.store, LocalStore):
            return ResultFile(self.store.local_path(key), media_type=media_type)
        return RedirectResponse(self.store.url(key, self.settings.url_expiry_s), status_code=307)

    @api.get("/v1/jobs/{job_id}/video", name="job_video", responses=errors(400, 401, 404, 409, 503))
    async def job_video(self, job_id: str, request: Request) -> Response:
        return await self._result_object(job_id, request, VIDEO, "video/mp4")

    @api.get("/v1/jobs/{job_id}/poster", name="job_poster", responses=errors(400, 401, 404, 409, 503))
    async def job_poster(self, job_id: str, request: Request) -> Response:
        return await self._result_object(job_id, request, POSTER, "image/jpeg")

    @api.get("/v1/jobs/{job_id}/fidelity", name="job_fidelity", responses=errors(400, 401, 404, 409, 503))
    async def job_fidelity(self, job_id: str, request: Request) -> Response:
        """fidelity.png: the photo with the drawn path and where the video's view went."""
        return await self._result_object(job_id, request, FIDELITY, "image/png")

    @api.get("/v1/jobs/{job_id}/manifest", name="job_manifest", responses=errors(400, 401, 404, 409, 503))
    async def job_manifest(self, job_id: str, request: Request) -> Response:
        """manifest.json: what was rendered and how (effect, frames, stage seconds, the path check)."""
        return await self._result_object(job_id, request, MANIFEST, "application/json")

    @api.get("/v1/jobs/{job_id}/request", name="job_request", responses=errors(400, 401, 404, 503))
    async def job_request(self, job_id: str, request: Request) -> Response:
        """The job's request as stored (RenderRequest, its preset expanded): the page's "render
        again" sets its controls from it."""
        status = await self._status(job_id, self._authorize(request))
        key = file_key(status.cached_from or job_id, REQUEST)
        data = await _answer(asyncio.to_thread(self.store.get_bytes, key), "the object store")
        return Response(data, media_type="application/json")

    @api.get("/v1/jobs/{job_id}/image", name="job_image", responses=errors(400, 401, 404, 503))
    async def job_image(self, job_id: str, request: Request) -> Response:
        """The photo the job was made from (the page's "render again" starts from it)."""
        status = await self._status(job_id, self._authorize(request))
        # A job answered from the cache has its photo where the job that rendered it keeps it.
        source = status.cached_from or job_id
        keys = await _answer(asyncio.to_thread(self.store.list, file_key(source, INPUT_PREFIX)), "the object store")
        if not keys:
            return _error(404, f"job {job_id} has no stored photo")
        if isinstance(self.store, LocalStore):
            return ResultFile(self.store.local_path(keys[0]))
        return RedirectResponse(self.store.url(keys[0], self.settings.url_expiry_s), status_code=307)

    @api.head("/v1/jobs/{job_id}/{name}", include_in_schema=False)
    async def job_file_head(self, job_id: str, name: str, request: Request) -> Response:
        """HEAD of a result file (players and link checkers ask before they GET): the GET's
        status and headers, no body."""
        files = {"video": (VIDEO, "video/mp4"), "poster": (POSTER, "image/jpeg"),
                 "fidelity": (FIDELITY, "image/png"), "manifest": (MANIFEST, "application/json")}
        if name == "request":
            return await self.job_request(job_id, request)
        if name == "image":
            return await self.job_image(job_id, request)
        if name not in files:
            raise InvalidRequestError(f"no such resource under job {job_id!r}")
        return await self._result_object(job_id, request, *files[name])

    @get_and_head("/v1/jobs/{job_id:path}", include_in_schema=False)
    async def job_bad_id(self, job_id: str) -> dict:
        # Anything with a '/' in it ('../x' decoded from %2F) lands here: say why it is refused.
        validate_job_id(job_id)
        raise InvalidRequestError(f"no such resource under job {job_id!r}")
