"""A reference backend as a worker on Dynamo's distributed runtime (``dynamo-media worker``):
it serves one endpoint, ``dynamo_media.backend.generate`` by default, and answers each request
as ``_echo.py`` describes (or the torch backend, ``_torch.py``), in the messages of
Note [Dynamo wire] (``dynamo_media/server/_dynamo_backend.py``).

Discovery and the request plane come from Dynamo's usual environment: ``DYN_DISCOVERY_BACKEND``
(``file`` with ``DYN_FILE_KV``, ``etcd`` with ``ETCD_ENDPOINTS``), ``DYN_REQUEST_PLANE`` (``tcp``,
or ``nats`` with ``NATS_SERVER``), and ``DYN_TCP_RPC_HOST`` for the address it listens on.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dynamo_media._errors import MediaError
from dynamo_media._openai import error_body
from dynamo_media.backend._echo import Respond, echo

if TYPE_CHECKING:
    from dynamo.runtime import Context

__all__ = ["serve_worker"]


async def serve_worker(
    endpoint: str, *, model: str, discovery: str, request_plane: str, respond: Respond = echo
) -> None:
    """Serves a backend on ``endpoint`` until SIGTERM or SIGINT, then finishes the requests in
    flight (the runtime's graceful shutdown) and returns.

    Args:
        endpoint: ``namespace.component.endpoint``.
        model: the model name it answers as.
        discovery: the runtime's discovery backend (``"file"``, ``"etcd"``, ...).
        request_plane: ``"tcp"`` or ``"nats"``.
        respond: what answers each request. Default: ``echo``.

    Raises:
        ImportError: ``ai-dynamo-runtime`` is not installed (the ``dynamo`` extra).
    """
    try:
        dynamo = importlib.import_module("dynamo.runtime")
    except ImportError as exc:
        raise ImportError(
            "dynamo-media worker needs ai-dynamo-runtime: pip install 'dynamo-media[dynamo]'"
        ) from exc
    loop = asyncio.get_running_loop()
    runtime = dynamo.DistributedRuntime(loop, discovery, request_plane)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.shutdown)

    async def generate(request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        try:
            answer = await respond(request, model)
        except MediaError as exc:
            yield {"answer": error_body(exc), "status": exc.status}
            return
        if not request.get("stream"):
            yield {"answer": answer.completion(), "status": 200}
            return
        for chunk in answer.chunks():
            if context.is_stopped():  # the frontend's client went away
                return
            yield {"chunk": chunk}

    # serve_endpoint returns a Future in ai-dynamo-runtime 1.6.1, not a coroutine.
    await runtime.endpoint(endpoint).serve_endpoint(generate)
