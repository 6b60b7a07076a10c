"""What the service refuses, and how: :class:`RequestError` and the ASGI :class:`RequestGuard`.

**Security and input.** With the API key set, every endpoint except the health, metrics and
documentation ones needs ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``, which is what
``bentoml.SyncHTTPClient(token=...)`` sends), compared in constant time. Bodies above
``serving.max_request_bytes`` get 413 before they are read, other content types than JSON 415.
Request schemas (``serving.schemas``) reject wrong types, missing fields, NaN/infinity, empty
and oversized batches and unknown fields with 400 and BentoML's ``{"error", "detail"}`` body;
the service adds the checks that need the models (unknown feature names, wrong value types per
feature, values out of range, bad dates) with the same body shape, by raising
:class:`RequestError`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from serving.settings import ServiceSettings, load_settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "RequestError", "RequestGuard"]

#: Paths that never need the API key: probes, metrics and the API documentation.
OPEN_PATHS: frozenset[str] = frozenset(
    {"/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json", "/"}
)
OPEN_PREFIXES: tuple[str, ...] = ("/static_content/", "/assets/")


class RequestError(Exception):
    """A request the service cannot answer as asked: HTTP ``status`` with a readable message."""

    def __init__(self, status: int, message: str, detail: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = list(detail)

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.detail:
            body["detail"] = self.detail
        return JSONResponse(body, status_code=self.status)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _unsupported_content_type(headers: dict[bytes, bytes]) -> str | None:
    """Why a body of this content type is refused (None: JSON or not declared)."""
    content_type = headers.get(b"content-type")
    if content_type is None:
        return None
    media_type = content_type.split(b";", 1)[0].strip().lower()
    if media_type in (b"application/json", b""):
        return None
    return (
        f"unsupported content type {media_type.decode('latin-1')!r}: "
        "send JSON with Content-Type: application/json"
    )


class RequestGuard:
    """ASGI middleware run before BentoML reads a body: API key, body size, content type.

    Health, metrics and documentation paths (:data:`OPEN_PATHS`) pass untouched. Everything
    else needs the key when one is configured (401 otherwise). Bodies larger than the limit are
    refused with 413 from their ``Content-Length`` without being read; a chunked body is
    counted while it arrives. A body that is not JSON gets 415.
    """

    def __init__(
        self, app: ASGIApp, settings_loader: Callable[[], ServiceSettings] = load_settings
    ) -> None:
        self.app = app
        settings = settings_loader()
        self.api_key = settings.api_key.encode("utf-8") if settings.api_key else None
        self.max_bytes = settings.max_request_bytes

    def _authorized(self, headers: dict[bytes, bytes]) -> tuple[bool, str]:
        assert self.api_key is not None
        given = headers.get(b"x-api-key")
        if given is None:
            authorization = headers.get(b"authorization", b"")
            if authorization[:7].lower() == b"bearer ":
                given = authorization[7:].strip()
        if given is None:
            return False, "missing API key: send it in the X-API-Key header"
        # Both sides as bytes: compare_digest takes the same time wherever they differ.
        if not hmac.compare_digest(given, self.api_key):
            return False, "invalid API key"
        return True, ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), value)
        if self.api_key is not None:
            ok, why = self._authorized(headers)
            if not ok:
                await _send_json(
                    send, 401, {"error": why}, headers=[(b"www-authenticate", b"ApiKey")]
                )
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        refused = _unsupported_content_type(headers)
        if refused is not None:
            await _send_json(send, 415, {"error": refused})
            return
        length = headers.get(b"content-length")
        if length is not None:
            await self._pass_declared_body(length, scope, receive, send)
        else:
            await self._pass_chunked_body(scope, receive, send)

    async def _pass_declared_body(
        self, length: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A body with a ``Content-Length``: judged by it, never read here."""
        try:
            size = int(length)
        except ValueError:
            await _send_json(send, 400, {"error": "Content-Length is not a number"})
            return
        if size > self.max_bytes:
            await _send_json(send, 413, {"error": self._too_large(size)})
            return
        await self.app(scope, receive, send)

    async def _pass_chunked_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No length given (chunked): read at most the limit, then replay it to the app."""
        chunks: list[Message] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await _send_json(send, 413, {"error": self._too_large(received)})
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if chunks:
                return chunks.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return (
            f"request body of {size:,} bytes exceeds the limit of {self.max_bytes:,} bytes "
            "(serving.max_request_bytes): split the batch"
        )
