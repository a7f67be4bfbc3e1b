"""The OpenAI-compatible frontend: ``/v1/chat/completions``, ``/v1/models``, ``/health``,
``/metrics``.

A request with media goes through the ``MediaPreprocessor`` (fetch, guard, decode, register in
the NIXL pool), then to the backend as ``{"request_id", "model", "messages", ...,
"multi_modal_data": {"image_url": [descriptor, ...], ...}}``; its registrations are released
when the backend's answer is complete (or earlier, when the backend's read notification comes).
A text-only request goes straight to the backend. Errors answer in OpenAI's shape.

Backpressure: at most ``max_concurrent_requests`` media requests are processed at once; the next
waits up to ``queue_timeout_ms`` for a slot, and so does an item for room in the pool; past
that, 503 with ``Retry-After``. Decoding runs on worker threads (the native decoders release the
GIL), so text-only requests and health checks stay fast while videos decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dynamo_media._errors import InvalidOptions, MediaError, Overloaded
from dynamo_media.nixl import RegistrationPool
from dynamo_media.preprocess import MediaPreprocessor, PreprocessResult
from dynamo_media.server._metrics import Metrics
from dynamo_media.server._settings import ServerConfig

__all__ = ["create_app", "error_body"]

log = logging.getLogger("dynamo_media.server")

_ERROR_TYPES = {400: "invalid_request_error", 422: "invalid_media_error", 503: "overloaded_error"}
_RETRY_AFTER_S = "1"


def error_body(status: int, message: str, *, param: str | None, code: str) -> dict[str, Any]:
    """OpenAI's error shape."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(exc: MediaError) -> JSONResponse:
    headers = {"Retry-After": _RETRY_AFTER_S} if exc.status == 503 else None
    body = error_body(exc.status, str(exc), param=exc.param, code=type(exc).__name__)
    return JSONResponse(body, status_code=exc.status, headers=headers)


class _Slots:
    """At most ``n`` media requests at once; a waiter gives up after ``timeout_s``."""

    def __init__(self, n: int, timeout_s: float) -> None:
        self._sem = asyncio.Semaphore(n)
        self._timeout = timeout_s

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._sem.acquire(), self._timeout)
        except TimeoutError:
            raise Overloaded("the server is at capacity (all media slots busy); retry") from None
        try:
            yield
        finally:
            self._sem.release()


def _record(metrics: Metrics, result: PreprocessResult) -> None:
    for item in result.items:
        for stage, seconds in item.timings.items():
            metrics.stage_seconds.labels(stage, item.modality).observe(seconds)
        metrics.fetched_bytes.labels(item.modality).inc(item.fetched_bytes)
        metrics.items.labels(item.modality).inc()
        media = item.media
        if item.modality == "video":
            metrics.frames.inc(len(media.metadata["frames_indices"]))
        elif item.modality == "audio":
            metrics.samples.inc(media.tensor.numel() // max(1, media.metadata["num_channels"]))


def create_app(config: ServerConfig, backend_url: str, pool: RegistrationPool) -> FastAPI:
    """The frontend application.

    Args:
        config: fetcher, decoder and server settings.
        backend_url: the backend's base URL (``http://127.0.0.1:8001``).
        pool: the NIXL registration pool that items are registered in.
    """
    settings = config.settings
    preprocessor = MediaPreprocessor(
        config.decoder,
        config.fetcher,
        pool,
        device=settings.device,
        max_workers=settings.decode_workers,
    )
    metrics = Metrics(pool.stats)
    slots = _Slots(settings.max_concurrent_requests, settings.queue_timeout_ms / 1000)
    client = httpx.AsyncClient(base_url=backend_url, timeout=settings.backend_timeout_ms / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()
        preprocessor.close()

    app = FastAPI(title="dynamo-media", lifespan=lifespan)
    app.state.pool = pool
    app.state.metrics = metrics

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pool": pool.stats()}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> Response:
        upstream = await client.get("/v1/models")
        return Response(upstream.content, upstream.status_code, media_type="application/json")

    async def forward(body: dict[str, Any], result: PreprocessResult | None) -> Response:
        payload = {k: v for k, v in body.items() if k not in ("messages", "media_io_kwargs")}
        payload["request_id"] = body.get("request_id") or f"chatcmpl-{uuid.uuid4().hex}"
        payload["messages"] = result.messages if result else body.get("messages")
        if result is not None and result.items:
            payload["multi_modal_data"] = result.multi_modal_data
        if not body.get("stream"):
            upstream = await client.post("/v1/chat/completions", json=payload)
            if result is not None:
                result.release()
            for item in upstream.json().get("dynamo_media", {}).get("items", []):
                seconds = item["read_seconds"]
                metrics.stage_seconds.labels("transfer", item["modality"]).observe(seconds)
            return Response(upstream.content, upstream.status_code, media_type="application/json")

        request = client.build_request("POST", "/v1/chat/completions", json=payload)
        upstream = await client.send(request, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                if result is not None:
                    result.release()

        media_type = upstream.headers.get("content-type", "text/event-stream")
        return StreamingResponse(relay(), upstream.status_code, media_type=media_type)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        start = time.perf_counter()
        result: PreprocessResult | None = None
        modality = "none"
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                raise InvalidOptions(f"the request body is not JSON: {exc}") from None
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise InvalidOptions("the request must be a JSON object with a 'messages' list")
            prepared = preprocessor.prepare(body)
            kinds = list(dict.fromkeys(item.modality for item in prepared.items))
            modality = kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "none")
            if kinds:
                result = prepared
                async with slots.hold():
                    await preprocessor.run(result)
                _record(metrics, result)
            response = await forward(body, result)
        except MediaError as exc:
            if result is not None:
                result.release()
            metrics.errors.labels(type(exc).__name__, modality).inc()
            log.info(json.dumps({"event": "error", "status": exc.status, "error": str(exc)}))
            return _error(exc)
        except httpx.HTTPError as exc:
            if result is not None:
                result.release()
            metrics.errors.labels(type(exc).__name__, modality).inc()
            body_ = error_body(502, f"the backend failed: {exc!r}", param=None, code="BackendError")
            return JSONResponse(body_, status_code=502)
        seconds = time.perf_counter() - start
        metrics.request_seconds.labels("media" if result else "text").observe(seconds)
        log.info(json.dumps(_log_line(result, seconds, modality)))
        return response

    return app


def _log_line(result: PreprocessResult | None, seconds: float, modality: str) -> dict[str, Any]:
    items = [
        {
            "param": i.param,
            "modality": i.modality,
            "bytes": i.fetched_bytes,
            "timings_ms": {k: round(v * 1000, 2) for k, v in i.timings.items()},
        }
        for i in (result.items if result else [])
    ]
    return {
        "event": "request",
        "modality": modality,
        "ms": round(seconds * 1000, 2),
        "items": items,
    }
