"""The HTTP proxy's middleware (deployments.proxy): Serve's own refusals become the farm's
JSON 503 with Retry-After; the farm's answers pass as they are. The refusal is the one
Serve's proxy sends (its own functions build the messages), run through the middleware as
the proxy's uvicorn would."""

from __future__ import annotations

import asyncio
import json

from ray.serve._private.http_util import get_http_response_status, send_http_response_on_exception
from ray.serve.exceptions import BackPressureError

from deployments.proxy import ProxyRefusals


def _through_middleware(app) -> tuple[dict, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": []}
    asyncio.run(ProxyRefusals(app)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start, body


def _serve_refusal(retry_after_s: float | None):
    """An ASGI app that answers as Serve's proxy does when the ingress's queue is full."""
    status = get_http_response_status(BackPressureError(num_queued_requests=64, max_queued_requests=64,
                                                        retry_after_s=retry_after_s), None, "req-1")

    async def app(scope, receive, send):
        for message in send_http_response_on_exception(status, response_started=False):
            await send(message)
    return app


def test_a_full_ingress_queue_is_a_json_503_with_retry_after():
    for retry_after_s, expected in ((None, "5"), (7, "7")):  # the middleware's default, or the deployment's
        start, body = _through_middleware(_serve_refusal(retry_after_s))
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        assert start["status"] == 503
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"] == expected
        assert int(headers["content-length"]) == len(body)
        detail = json.loads(body)["detail"]
        assert "busy" in detail and "max_queued_requests" in detail and "retry" in detail


def test_the_farms_own_answers_pass_untouched():
    farm_503 = json.dumps({"detail": "the farm is busy (40 jobs waiting); retry in a few seconds"}).encode()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"10")]})
        await send({"type": "http.response.body", "body": farm_503})

    start, body = _through_middleware(app)
    assert (start["status"], body) == (503, farm_503)
    assert (b"retry-after", b"10") in start["headers"]
