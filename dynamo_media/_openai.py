"""OpenAI's wire shapes that the frontend and the backends share: the error body, the model
list, and the server-sent events of a streamed answer (``data: {chunk}`` events, then
``data: [DONE]``)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Mapping
from typing import Any

from dynamo_media._errors import MediaError

__all__ = ["SSE_DONE", "completion_id", "error_body", "model_list", "sse_event"]

_ERROR_TYPES = {400: "invalid_request_error", 422: "invalid_media_error", 503: "overloaded_error"}

SSE_DONE = b"data: [DONE]\n\n"
"""The event that ends a streamed answer."""


class _Ids:
    """A per-process key (drawn again in a forked child) and a counter."""

    def __init__(self) -> None:
        self.draw()

    def draw(self) -> None:
        self.key = secrets.token_bytes(16)
        self.counter = itertools.count()


_IDS = _Ids()
os.register_at_fork(after_in_child=_IDS.draw)


def completion_id() -> str:
    """A fresh ``chatcmpl-`` id: the counter hashed with the process's key, so ids neither repeat
    nor tell how many requests came before. Not ``uuid4`` per request: its ``getrandom`` call
    gives up the GIL, and the event loop then waits to take it back behind the decode threads
    (py-spy: 3.4% of the loop's busy time under load)."""
    count = next(_IDS.counter).to_bytes(8, "little")
    return "chatcmpl-" + hashlib.blake2b(count, key=_IDS.key, digest_size=12).hexdigest()


def error_body(exc: MediaError) -> dict[str, Any]:
    """OpenAI's error shape for ``exc``: ``{"error": {"message", "type", "param", "code"}}``,
    where ``code`` is the error's class name."""
    status = exc.status
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": str(exc), "type": kind, "param": exc.param, "code": type(exc).__name__}
    return {"error": error}


def model_list(model: str) -> dict[str, Any]:
    """The ``/v1/models`` answer of a backend that serves ``model``."""
    entry = {"id": model, "object": "model", "created": 0, "owned_by": "dynamo-media"}
    return {"object": "list", "data": [entry]}


def sse_event(chunk: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``chunk`` (a ``chat.completion.chunk``, or an error body)."""
    return f"data: {json.dumps(chunk)}\n\n".encode()
