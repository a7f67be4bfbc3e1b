"""The OpenAI-compatible frontend: ``/v1/chat/completions``, ``/v1/models``, ``/health``,
``/metrics``.

Chat requests are handled by ``ChatCompletions`` (see its module for the path of a request and
the backpressure). Decoding runs on worker threads (the native decoders release the GIL), so
text-only requests and health checks stay fast while videos decode.

``/health`` is readiness: 200 with ``"status": "ok"`` only while the backend can take requests
(``Backend.ready``: for Dynamo, at least one live worker); else 503 with the reason in OpenAI's
error shape, so a load balancer stops sending here. Both carry the pool's and the cache's stats.
``/v1/models`` answers the backend's list, or a ``BackendUnavailable`` in OpenAI's error shape
(503 when no worker is live, 502 otherwise), never a bare 500.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from dynamo_media._errors import BackendUnavailable
from dynamo_media._openai import error_body
from dynamo_media.nixl import RegistrationPool
from dynamo_media.preprocess import MediaCache, MediaPreprocessor
from dynamo_media.server._backend import Backend
from dynamo_media.server._chat import RETRY_AFTER_S, ChatCompletions, error_response
from dynamo_media.server._metrics import Metrics
from dynamo_media.server._settings import ServerConfig

__all__ = ["create_app", "create_chat"]


def create_chat(config: ServerConfig, backend: Backend, pool: RegistrationPool) -> ChatCompletions:
    """The chat path that the frontend and ``dynamo-media processor`` share: a preprocessor
    (with the cache that ``cache_bytes`` asks for), its metrics, and ``backend``, which reports
    its events to the metrics. The caller closes ``chat.preprocessor`` and the backend.

    Args:
        config: fetcher, decoder and server settings.
        backend: where chat requests go.
        pool: the NIXL registration pool that items are registered in.
    """
    settings = config.settings
    cache = None
    if settings.cache_bytes:
        cache = MediaCache(
            settings.cache_bytes,
            cache_dir=settings.cache_dir,
            cache_dir_bytes=settings.cache_dir_bytes,
        )
    preprocessor = MediaPreprocessor(
        config.decoder,
        config.fetcher,
        pool,
        device=settings.device,
        max_workers=settings.decode_workers,
        cache=cache,
    )
    metrics = Metrics(pool.stats, cache.stats if cache else None)
    backend.add_event_hook(metrics.backend_event)
    return ChatCompletions(preprocessor, backend, metrics, settings)


def create_app(config: ServerConfig, backend: Backend, pool: RegistrationPool) -> FastAPI:
    """The frontend application.

    Args:
        config: fetcher, decoder and server settings.
        backend: where chat requests go (``HttpBackend(url, ...)`` for the reference backend);
            the app owns it and closes it on shutdown.
        pool: the NIXL registration pool that items are registered in.
    """
    chat = create_chat(config, backend, pool)
    preprocessor, metrics, cache = chat.preprocessor, chat.metrics, chat.preprocessor.cache

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await backend.aclose()
        preprocessor.close()

    app = FastAPI(title="dynamo-media", lifespan=lifespan)
    app.state.pool = pool
    app.state.cache = cache
    app.state.metrics = metrics

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await chat(request)

    @app.get("/health")
    async def health() -> Response:
        stats = {"pool": pool.stats(), "cache": cache.stats() if cache else None}
        try:
            live = await backend.ready()
        except BackendUnavailable as exc:
            body = {"status": "unavailable", **error_body(exc), **stats}
            return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ok", "backend": live, **stats})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> Response:
        try:
            return JSONResponse(await backend.models())
        except BackendUnavailable as exc:
            metrics.errors.labels(type(exc).__name__, "none").inc()
            return error_response(exc)

    return app
