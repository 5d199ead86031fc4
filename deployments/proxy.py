"""ASGI middleware for Serve's HTTP proxy: uploads past the limit are cut there, not buffered;
the proxy's own refusals speak the farm's error contract.

BodyLimit. Serve's proxy reads a request's body into an unbounded queue and its replica pulls it in
batches, with no back-pressure: a 300 MB chunked upload grew the proxy and the ingress
replica by 100-400 MB even though the ingress refused it at 50 MiB. This middleware counts
the body as the proxy receives it; past the limit it answers 413 itself, tells the app the
client left (so nothing more is forwarded), and reads the rest of the body into nothing so
the client, still sending, gets to read the answer.

ProxyRefusals. When the ingress's queue is full (its `max_queued_requests`) or it has no
replica, Serve's proxy answers 503 itself, before the farm's code sees the request: a plain
text body and, unless the deployment's `backpressure_config` sets one, no Retry-After. Every
503 of the farm is `{"detail": ...}` with Retry-After (clients back off on it: d2v.client),
so this middleware rewrites the proxy's plain-text 503s (and 429s) into that form. The
farm's own 503s are JSON already and pass untouched.

Serve loads them through RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.proxy:middlewares
(`d2v serve` and the test farm set it; set it on every node of a cluster).
"""

from __future__ import annotations

import json

from d2v.images import MAX_IMAGE_BYTES

# The ingress's own limit: the image, plus room for the request JSON, a depth map's header
# and the multipart framing. The ingress checks the same figure with its message.
UPLOAD_LIMIT = MAX_IMAGE_BYTES + 1_000_000
CALLBACK = "deployments.proxy:middlewares"


class BodyLimit:
    def __init__(self, app, limit: int = UPLOAD_LIMIT):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    state["over"] = True
                    if not state["started"]:
                        await self._refuse(send)
                        state["started"] = True
                    return {"type": "http.disconnect"}  # the app stops reading and forwarding
            return message

        async def guarded_send(message):
            if state["over"]:
                return  # we answered already
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if state["over"]:  # drain what the client still sends, keeping none of it
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"upload is over the limit of {MAX_IMAGE_BYTES / 2**20:.0f} MiB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class ProxyRefusals:
    RETRY_AFTER_S = 5  # the proxy sheds load in milliseconds: a short back-off is enough

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"rewrite": False, "replaced": False}

        async def refusing_send(message):
            if state["replaced"]:
                return  # the rest of a body we have replaced
            if message["type"] == "http.response.start" and message["status"] in (429, 503):
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                state["rewrite"] = not headers.get(b"content-type", b"").startswith(b"application/json")
                if state["rewrite"]:
                    state["status"], state["retry_after"] = message["status"], headers.get(b"retry-after")
                    return  # sent with the body, which says why
            if state["rewrite"] and message["type"] == "http.response.body":
                state["rewrite"], state["replaced"] = False, True
                return await self._refuse(send, state["status"], message.get("body", b""), state["retry_after"])
            await send(message)

        await self.app(scope, receive, refusing_send)

    async def _refuse(self, send, status: int, why: bytes, retry_after: bytes | None) -> None:
        reason = why.decode("utf-8", "replace").strip() or "the farm has no replica ready"
        detail = f"the farm is busy ({reason}); retry after Retry-After seconds"
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", retry_after or str(self.RETRY_AFTER_S).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def middlewares() -> list:
    from starlette.middleware import Middleware

    return [Middleware(BodyLimit), Middleware(ProxyRefusals)]
