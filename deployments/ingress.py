"""The HTTP ingress: the d2v API (FastAPI inside Ray Serve) and the job runner.

    POST /v1/jobs                 multipart: image (file), request (JSON), depth (optional file) -> 202
    GET  /v1/jobs/{job_id}        status, stage, progress, error, result (?wait_s=N: long polling)
    GET  /v1/jobs/{job_id}/video  -> the MP4 (redirect to a presigned URL on S3)
    GET  /v1/jobs/{job_id}/poster -> the poster JPEG
    GET  /v1/jobs/{job_id}/fidelity -> fidelity.png (the drawn path and the measured one)
    GET  /v1/effects, GET /healthz, OpenAPI at /docs
    POST /v1/preview              multipart: image, request -> effect, smoothed path, low-res MP4 (d2v.preview)
    GET  /                        the drawing page (deployments/web/, files under /static/)

POST checks everything a user can get wrong before anything is queued (4xx at once),
stores the input and request, and returns. The job then runs here, as an asyncio task
that chains the stage deployments' handles (trajectory -> base -> interpolate ->
upscale -> encode) and awaits only the end. A stage that dies mid-job (a replica
crash) makes the attempt fail; the job is retried up to `max_attempts`, then failed
with the reason. If this replica dies, its jobs' leases run out and another ingress
replica (or this one, restarted) claims and reruns them.
"""

# No `from __future__ import annotations` here: FastAPI must see real types (Request)
# on the methods that Serve re-wraps, or it takes `request` for a query parameter.
import asyncio
import gc
import logging
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve

from actors.job_registry import get_registry
from d2v import __version__
from d2v.errors import D2VError, ImageTooLargeError, InvalidRequestError, JobNotFoundError, StoreUnavailableError, one_line
from d2v.images import MAX_IMAGE_BYTES, check_image_header, decode_image
from d2v.models import EFFECTS, JobStatus, RenderRequest, parse_request
from d2v.pipeline import cached_manifest, content_job_id, job_result, require_backend
from d2v.preview import preview as render_preview
from d2v.render import load_depth_map
from d2v.stages import plan, renders_final_frames
from d2v.store import LocalStore, job_key, store_from_env, store_settings, validate_job_id

log = logging.getLogger("d2v.ingress")
WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_WAIT_S = 30.0  # GET /v1/jobs/{id}?wait_s=: the longest a status request is held open
HEALTH_TIMEOUT_S = 1.0  # /healthz: a dependency that takes longer counts as down (clients wait 2 s)
DEPENDENCY_TIMEOUT_S = 5.0  # a request waits this long for the store or the registry, then 503
STORE_PUT_TIMEOUT_S = 30.0  # storing an upload (up to 50 MiB) before the 202

api = FastAPI(
    title="d2v",
    version=__version__,
    description="Draw a path on a photo, get a video whose camera follows it. "
    "POST an image and a request to /v1/jobs, then poll the status_url.",
)
api.mount("/static", StaticFiles(directory=WEB_DIR), name="static")


@dataclass
class IngressSettings:
    """Operator knobs, from the Serve config's application `args`."""

    max_running_jobs: int = 2  # jobs this replica runs through the pipeline at once
    max_queued_jobs: int = 32  # more than this waiting on this replica -> 503
    max_attempts: int = 3  # a job whose stage replica died is retried this many times in all
    lease_s: float = 30.0  # a job's runner must renew within this, or another takes it over
    retry_backoff_s: float = 2.0
    url_expiry_s: int = 3600  # presigned result URLs
    max_clip_bytes: int = 4 * 2**30  # frames held between stages, all of them
    max_previews: int = 2  # POST /v1/preview renders this many at once here (in threads)
    svd_model: str | None = None  # the base stage's SVD model; None = D2V_SVD_MODEL


class Busy(D2VError):
    status_code = 503


class Unauthorized(D2VError):
    status_code = 401


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


@api.exception_handler(D2VError)
async def _d2v_error(request: Request, exc: D2VError) -> JSONResponse:
    exc = _user_error(exc) or exc  # a D2VError raised in an actor arrives wrapped by Ray
    headers = {"Retry-After": "10"} if exc.status_code == 503 else None
    return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)}, headers=headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {'is required' if e['type'] == 'missing' else e['msg']}")
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
        if (user := _user_error(e)) is not None:
            raise user from None
        raise StoreUnavailableError(f"{what} is unavailable ({one_line(e)}): retry shortly") from None


def _is_system_failure(exc: BaseException) -> bool:
    """Failures of the machinery (a replica died, was unreachable, was overloaded), as
    opposed to errors in the job itself: only these are worth another attempt."""
    import ray.exceptions as rex
    from ray.serve.exceptions import BackPressureError

    system = (rex.RayActorError, rex.ActorUnavailableError, rex.WorkerCrashedError, rex.NodeDiedError,
              rex.OutOfMemoryError, rex.ObjectLostError, BackPressureError, ConnectionError)
    seen = exc
    while seen is not None:
        if isinstance(seen, system):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False


def _user_error(exc: BaseException) -> D2VError | None:
    """The D2VError inside a stage's exception (Ray wraps it), if that is what it was."""
    seen = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)
        if isinstance(seen, D2VError) and not isinstance(cause, D2VError):
            return seen
        seen = cause or seen.__cause__
    return None


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Ingress:
    def __init__(self, trajectory, base, interpolate, upscale, encode, settings: dict | None = None):
        self.trajectory, self.base, self.interpolate, self.upscale, self.encode = (
            trajectory, base, interpolate, upscale, encode)
        self.settings = IngressSettings(**(settings or {}))
        self.store = store_from_env()
        self.registry = get_registry(store_settings(), lease_s=self.settings.lease_s,
                                     max_attempts=self.settings.max_attempts)
        try:
            self.owner = serve.get_replica_context().replica_id.unique_id
        except Exception:
            self.owner = uuid.uuid4().hex[:12]
        keys = os.environ.get("D2V_API_KEYS", "")
        self.api_keys = [k.strip() for k in keys.split(",") if k.strip()]
        self.running = asyncio.Semaphore(self.settings.max_running_jobs)
        self.previewing = asyncio.Semaphore(self.settings.max_previews)
        self.tasks: dict[str, asyncio.Task] = {}
        self.supervisor = asyncio.get_running_loop().create_task(self._supervise())

    # -- HTTP --------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if not self.api_keys:
            return
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        # As bytes: compare_digest refuses str with non-ASCII characters (a 500 before).
        given = token.encode("utf-8", "surrogateescape")
        if not any(secrets.compare_digest(given, k.encode()) for k in self.api_keys):
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>'")

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 when this replica and the store answer; 503 (saying which) when not. Never blocks
        the event loop: the store is probed in a thread, with a short timeout."""
        # (The registry is not probed here: an actor call from a health check that Serve cancels
        # at the client's timeout left the replica answering 503 on a loaded machine; the
        # registry's own calls report it.)
        store = await self._probe(asyncio.to_thread(self.store.exists, "healthz/probe"))
        ok = store == "ok"
        body = {"status": "ok" if ok else "degraded", "version": __version__, "store": self.store.describe(),
                "running_jobs": len(self.tasks), "dependencies": {"store": store}}
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

    @api.get("/v1/effects")
    async def effects(self) -> list[dict]:
        return [{"name": name, "description": text} for name, text in EFFECTS.items()]

    @api.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        # The page's links are relative, so it also works under a route prefix (`/prefix/`).
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _read_upload(self, request: Request) -> tuple[RenderRequest, bytes, bytes | None]:
        """The multipart body of POST /v1/jobs and /v1/preview, checked cheapest first:
        key, size, shape, the request, then the image's header (never a full decode here)."""
        self._authorize(request)
        limit = MAX_IMAGE_BYTES + 1_000_000
        too_large = ImageTooLargeError(f"upload is over the limit of {MAX_IMAGE_BYTES / 2**20:.0f} MiB")
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            raise InvalidRequestError("the Content-Length header is not a number") from None
        if length > limit:
            raise ImageTooLargeError(f"upload is {length / 2**20:.1f} MiB; the limit is "
                                     f"{MAX_IMAGE_BYTES / 2**20:.0f} MiB")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequestError("send multipart/form-data with an 'image' file and a 'request' JSON field")
        # Count the body as it arrives (a chunked upload has no Content-Length, and a header
        # can lie): cut it at the limit instead of reading it whole first.
        chunks, received = [], 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large
            chunks.append(chunk)
        request._body = b"".join(chunks)  # what request.form() parses (Starlette reads _body first)
        try:
            form = await request.form()
        except Exception as e:
            raise InvalidRequestError(f"the multipart body could not be read: {e}") from None
        upload, raw_request, depth_upload = form.get("image"), form.get("request"), form.get("depth")
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
            check_image_header(depth_bytes)
            # Decoded now: a corrupt depth map is the caller's 415, not a job failing later.
            await asyncio.to_thread(load_depth_map, depth_bytes, 8, 8)
        return render_request, image_bytes, depth_bytes

    @api.post("/v1/preview")
    async def preview(self, request: Request) -> dict:
        """A low-resolution render of the camera move (no job, nothing stored): the effect
        `auto` picks, the smoothed path and per-frame views in canvas units, and a small
        MP4 inline as a data: URL. Same multipart body as POST /v1/jobs."""
        render_request, image_bytes, _ = await self._read_upload(request)
        async with self.previewing:
            image = await asyncio.to_thread(decode_image, image_bytes)
            return await asyncio.to_thread(render_preview, image.rgb, render_request)

    @api.post("/v1/jobs", status_code=202)
    async def submit(self, request: Request) -> JSONResponse:
        render_request, image_bytes, depth_bytes = await self._read_upload(request)
        require_backend(render_request, self.settings.svd_model)
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

        job_id = content_job_id(image_bytes, depth_bytes, render_request, self.settings.svd_model)
        if await _answer(asyncio.to_thread(cached_manifest, self.store, job_id), "the object store") is not None:
            status = await _answer(self._call(self.registry.get, job_id), "the job registry")
            if status is not None and status.status == "succeeded":
                return self._accepted(request, job_id, "succeeded")
        if len(self.tasks) >= self.settings.max_running_jobs + self.settings.max_queued_jobs:
            raise Busy(f"the farm is busy ({len(self.tasks)} jobs on this replica); retry in a few seconds")

        status, is_new = await _answer(self._call(self.registry.submit, job_id, self.owner), "the job registry")
        if is_new:
            # The job starts at once, with the image as decoded here; its inputs go to the
            # store meanwhile, and the 202 waits for them: from then on any replica can
            # (re)run the job from the store.
            self._start(job_id, (render_request, image_bytes, depth_bytes, image))
            try:
                await _answer(self._store_inputs(job_id, render_request, image_bytes, image.extension, depth_bytes),
                              "the object store", STORE_PUT_TIMEOUT_S)
            except Exception as e:
                if (task := self.tasks.get(job_id)) is not None:
                    task.cancel()
                reason = _user_error(e) or e
                # Not awaited: with the store down the registry's write may wait too.
                self.registry.fail.remote(job_id, f"its inputs could not be stored: {reason}")
                raise StoreUnavailableError(
                    f"the object store did not take the upload ({reason}); nothing was queued: retry") from None
        return self._accepted(request, job_id, status.status)

    async def _store_inputs(self, job_id: str, render_request: RenderRequest, image_bytes: bytes, extension: str,
                            depth_bytes: bytes | None) -> None:
        puts = {f"input.{extension}": image_bytes,
                "request.json": render_request.model_dump_json(indent=2).encode()}
        if depth_bytes:
            puts["depth.png"] = depth_bytes
        await asyncio.gather(*(asyncio.to_thread(self.store.put_bytes, job_key(job_id, name), data)
                               for name, data in puts.items()))

    def _accepted(self, request: Request, job_id: str, status: str) -> JSONResponse:
        url = str(request.url_for("job_status", job_id=job_id))
        return JSONResponse(status_code=202, content={"job_id": job_id, "status": status, "status_url": url})

    @staticmethod
    async def _call(method, *args):
        """An actor call, awaited in a coroutine (what asyncio.wait_for can time out)."""
        return await method.remote(*args)

    async def _status(self, job_id: str) -> JobStatus:
        validate_job_id(job_id)
        status = await _answer(self._call(self.registry.get, job_id), "the job registry")
        if status is None:
            raise JobNotFoundError(f"no job {job_id!r}: check the id, or submit it again (POST /v1/jobs)")
        return status

    @api.get("/v1/jobs/{job_id}", name="job_status")
    async def job_status(
        self, job_id: str, request: Request,
        wait_s: float = Query(0.0, ge=0.0, le=MAX_WAIT_S, description=(
            "Long polling: wait up to this many seconds for the job to finish before answering. "
            "The answer comes the moment it is done, with no polling in between.")),
    ) -> dict:
        self._authorize(request)
        status = await self._status(job_id)
        deadline = time.monotonic() + wait_s
        while status.status in ("queued", "running") and (left := deadline - time.monotonic()) > 0:
            task = self.tasks.get(job_id)
            if task is not None:  # this replica runs it: woken the moment it ends
                await asyncio.wait({task}, timeout=left)
            else:  # another replica runs it: ask the registry twice a second
                await asyncio.sleep(min(left, 0.5))
            status = await self._status(job_id)
        body = status.model_dump(mode="json", exclude={"updated_at"})
        if status.result is not None:
            body["result"]["video_url"] = str(request.url_for("job_video", job_id=job_id))
            body["result"]["poster_url"] = str(request.url_for("job_poster", job_id=job_id))
            if status.result.fidelity_key:
                body["result"]["fidelity_url"] = str(request.url_for("job_fidelity", job_id=job_id))
        return body

    async def _result_object(self, job_id: str, request: Request, name: str, media_type: str) -> Response:
        self._authorize(request)
        status = await self._status(job_id)
        if status.status != "succeeded":
            return _error(409, f"job {job_id} is {status.status}; its {name} exists once it has succeeded")
        key = job_key(job_id, name)
        if isinstance(self.store, LocalStore):
            return FileResponse(self.store.local_path(key), media_type=media_type)
        return RedirectResponse(self.store.url(key, self.settings.url_expiry_s), status_code=307)

    @api.get("/v1/jobs/{job_id}/video", name="job_video")
    async def job_video(self, job_id: str, request: Request) -> Response:
        return await self._result_object(job_id, request, "video.mp4", "video/mp4")

    @api.get("/v1/jobs/{job_id}/poster", name="job_poster")
    async def job_poster(self, job_id: str, request: Request) -> Response:
        return await self._result_object(job_id, request, "poster.jpg", "image/jpeg")

    @api.get("/v1/jobs/{job_id}/fidelity", name="job_fidelity")
    async def job_fidelity(self, job_id: str, request: Request) -> Response:
        """fidelity.png: the photo with the drawn path and where the video's view went."""
        return await self._result_object(job_id, request, "fidelity.png", "image/png")

    @api.get("/v1/jobs/{job_id:path}", include_in_schema=False)
    async def job_bad_id(self, job_id: str) -> dict:
        # Anything with a '/' in it ('../x' decoded from %2F) lands here: say why it is refused.
        validate_job_id(job_id)
        raise InvalidRequestError(f"no such resource under job {job_id!r}")

    # -- running jobs ------------------------------------------------------------------

    def _start(self, job_id: str, inputs: tuple | None = None) -> None:
        """`inputs` when this replica just received them; an adopted job reads them from the store."""
        task = asyncio.get_running_loop().create_task(self._run(job_id, inputs))
        self.tasks[job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(job_id, None))

    async def _run(self, job_id: str, inputs: tuple | None) -> None:
        if inputs is not None and self.running.locked():
            inputs = inputs[:3] + (None,)  # it must wait: hold the compressed image only, decode later
        async with self.running:
            try:
                await self._attempts(job_id, inputs or await self._stored_inputs(job_id))
            except Exception as e:  # never leave a job 'running' because of a bug here
                log.exception("job %s: runner failed", job_id)
                await self.registry.fail.remote(job_id, f"internal error: {one_line(e)}")

    async def _stored_inputs(self, job_id: str) -> tuple:
        def read() -> tuple:
            request = parse_request(self.store.get_bytes(job_key(job_id, "request.json")))
            image_bytes = self.store.get_bytes(self.store.list(f"jobs/{job_id}/input.")[0])
            depth_key = job_key(job_id, "depth.png")
            depth_bytes = self.store.get_bytes(depth_key) if self.store.exists(depth_key) else None
            return request, image_bytes, depth_bytes, None

        return await asyncio.to_thread(read)

    async def _attempts(self, job_id: str, inputs: tuple) -> None:
        request, image_bytes, depth_bytes, image = inputs
        if image is None:
            image = await asyncio.to_thread(decode_image, image_bytes)
        while True:
            status = await self.registry.start_attempt.remote(job_id, self.owner)
            try:
                manifest = await self._pipeline(job_id, request, image, depth_bytes)
            except Exception as e:
                user_error = _user_error(e)
                # The job's own fault fails it; ours (the store unavailable: a 503) is retried.
                if user_error is not None and user_error.status_code < 500:
                    await self.registry.fail.remote(job_id, str(user_error))
                    return
                reason = one_line(e)
                if (_is_system_failure(e) or user_error is not None) and status.attempts < self.settings.max_attempts:
                    log.warning("job %s: attempt %d failed (%s); retrying", job_id, status.attempts, reason)
                    await asyncio.sleep(self.settings.retry_backoff_s * status.attempts)
                    continue
                reached = (await self.registry.get.remote(job_id)).stage
                await self.registry.fail.remote(
                    job_id, f"failed after {status.attempts} attempt(s) in stage '{reached}': {reason}")
                return
            await self.registry.succeed.remote(job_id, job_result(manifest).model_dump(mode="json"))
            return

    async def _pipeline(self, job_id, request, image, depth_bytes):
        # Each call gets the previous call's DeploymentResponse: Serve passes the result
        # along between replicas without a round trip through this one. The image goes
        # decoded (the ingress decoded it to check it), so no stage decodes it again.
        trajectory = self.trajectory.plan.remote(request, image.width, image.height, depth_bytes is not None)
        if renders_final_frames(request):
            # Frames are final at the base stage (camera backend): it streams them into the
            # encoder itself, render and encode overlapping, and stores the results.
            return await self.base.render_final.remote(job_id, image, depth_bytes, request, trajectory)
        clip = self.base.render.remote(job_id, image, depth_bytes, request, trajectory)
        clip = self.interpolate.retime.remote(clip, request)
        clip = self.upscale.resize.remote(clip, request)
        return await self.encode.encode.remote(job_id, clip, request, trajectory, image, depth_bytes)

    async def _supervise(self) -> None:
        """Renew the leases of the jobs this replica runs; adopt orphans of dead replicas."""
        period = max(1.0, self.settings.lease_s / 3)
        while True:
            try:
                await self.registry.renew.remote(self.owner, list(self.tasks))
                free = self.settings.max_running_jobs + self.settings.max_queued_jobs - len(self.tasks)
                if free > 0:
                    for job_id in await self.registry.claim_orphans.remote(self.owner, min(free, 4)):
                        if job_id not in self.tasks:
                            log.warning("job %s: adopting it (its runner stopped)", job_id)
                            self._start(job_id)
            except Exception:
                log.exception("supervisor pass failed")
            # Serve's handle calls leave reference cycles holding the ObjectRefs of finished
            # stage results (whole clips). This replica allocates too little for the cyclic
            # GC to run by itself, so the clips stayed pinned in the object stores of the GPU
            # nodes that made them, and the autoscaler could never give those nodes back.
            gc.collect()
            await asyncio.sleep(period)

    def check_health(self) -> None:
        if self.supervisor.done():
            raise RuntimeError("the job supervisor stopped")
