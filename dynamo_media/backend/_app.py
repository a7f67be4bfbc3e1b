"""A reference backend over OpenAI's HTTP API (``dynamo-media backend``): the echo backend
(``_echo.py``) by default, or any other ``Respond`` (the torch backend, ``_torch.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dynamo_media._errors import MediaError
from dynamo_media._openai import SSE_DONE, error_body, model_list, sse_event
from dynamo_media.backend._echo import Respond, echo

__all__ = ["create_backend_app"]


def create_backend_app(model: str, *, respond: Respond = echo) -> FastAPI:
    """A reference backend, answering as ``model``.

    Args:
        model: the model name it answers as.
        respond: what answers each request. Default: ``echo``.
    """
    app = FastAPI(title="dynamo-media reference backend")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return model_list(model)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        try:
            answer = await respond(body, model)
        except MediaError as exc:
            return JSONResponse(error_body(exc), status_code=exc.status)
        if body.get("stream"):
            return StreamingResponse(_events(answer.chunks()), media_type="text/event-stream")
        return JSONResponse(answer.completion())

    return app


async def _events(chunks: Iterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield sse_event(chunk)
    yield SSE_DONE
