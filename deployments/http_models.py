"""The shapes of the HTTP API as `/openapi.json` shows them, built from d2v's own models
(d2v.models: RenderRequest, JobStatus, JobResult, FidelitySummary), so a client generated
from the document speaks exactly what the farm checks and stores.

    JobAccepted   202 of POST /v1/jobs
    JobView       GET /v1/jobs/{id}: JobStatus without the lifecycle's bookkeeping
    JobList       GET /v1/jobs?limit=N
    ErrorDetail   every 4xx and 503: {"detail": "one line that says what to do"}

The job's body is multipart, parsed by the ingress itself as it streams in (upload limits,
idle timeout), so FastAPI cannot infer it: `multipart_body` documents it by hand, with the
`request` part's schema taken from RenderRequest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, create_model

from d2v.models import JobStatus, RenderRequest


class ErrorDetail(BaseModel):
    """What every refusal carries: one line that says what is wrong and what to do."""

    detail: str


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued", "succeeded"] = Field(
        description="queued, or succeeded at once when the same image and request were rendered before")
    status_url: str = Field(description="GET it for the job's status (?wait_s=N to long-poll)")


# The public fields of JobStatus, in its order and with its types: JobStatus.public() is the body.
JobView = create_model(
    "JobView",
    __doc__="A job as its caller sees it: status, stage, progress 0..1, error, and the result once it has succeeded.",
    **{name: (field.annotation, field) for name, field in JobStatus.model_fields.items()
       if name not in JobStatus.PRIVATE},
)


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="the caller's latest jobs, newest first")  # type: ignore[valid-type]


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def errors(*codes: int) -> dict:
    """`responses=` for a route: each status code with the error model and what it means."""
    meaning = {
        400: "bad input (an invalid job id, an unreadable body)",
        401: "missing or wrong API key ('Authorization: Bearer <key>')",
        404: "no such job for this caller",
        408: "the upload stalled",
        409: "the job has not succeeded yet",
        413: "the upload or the image is too large",
        415: "not an image the farm can read",
        422: "a request field, the path or a query parameter is invalid",
        503: "the store or the queue is away, or the farm is busy: retry after Retry-After seconds",
    }
    return {code: {"model": ErrorDetail, "description": meaning[code], **({"headers": RETRY_AFTER} if code == 503
                                                                         else {})} for code in codes}


def multipart_body(*, depth: bool) -> dict:
    """`openapi_extra` for POST /v1/jobs and /v1/preview: the multipart form's parts."""
    parts = {
        "image": {"type": "string", "format": "binary", "description": "the photo (JPEG, PNG, WebP...; up to 50 MiB)"},
        "request": {"$ref": "#/components/schemas/RenderRequest"},
    }
    if depth:
        parts["depth"] = {"type": "string", "format": "binary",
                          "description": "optional depth map (grayscale, brighter = nearer)"}
    parts["lut"] = {"type": "string", "format": "binary",
                    "description": "a 3D LUT (.cube), required when the request's `look` names a .cube file"}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["image", "request"], "properties": parts},
        "encoding": {"request": {"contentType": "application/json"}},
    }}}}


def add_request_schemas(document: dict) -> dict:
    """Put RenderRequest (and the models it uses) under components/schemas, where the
    multipart body's `$ref` points."""
    schema = RenderRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["RenderRequest"] = schema
    return document
