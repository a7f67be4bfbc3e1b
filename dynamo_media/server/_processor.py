"""``dynamo-media processor``: the media path behind Dynamo's own HTTP frontend
(``python -m dynamo.frontend``), for deployments that already run Dynamo.

The processor registers a text-input chat model (``register_llm(ModelInput.Text,
ModelType.Chat, ..., skip_model_assets=True)``) on its endpoint, ``dynamo_media.processor.generate``
by default. ``dynamo.frontend`` then hands it each chat request of that model as a dict, media
parts unfetched and ``media_io_kwargs`` intact; the processor runs the frontend's own path
(``ChatCompletions.forward``: fetch, decode, register over NIXL, send to the ``dynamo-media
worker``s through ``DynamoBackend``) and yields the workers' ``chat.completion.chunk`` dicts.

# Note [processor wire]
``dynamo.frontend`` expects ``chat.completion.chunk`` dicts from a Text/Chat model, streamed or
not: for a request without ``stream`` it folds the chunks into one ``chat.completion`` (keys it
does not know, such as the echo's ``dynamo_media``, are dropped there). So the processor always
asks the workers for a stream. An error becomes a Dynamo exception, which the frontend maps to a
status: ``InvalidArgument`` is a 400 that keeps our message (a bad item, a policy refusal);
``WorkerUnavailable`` is a 503 (no worker, overload); anything else is ``Unknown`` (a 500).
``HttpError(code, message)`` would keep the status but not the message (measured with
ai-dynamo 1.6.1), so it is not used. Once chunks have gone out, an error ends the stream the
same way: the frontend sends it as an error event.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dynamo_media._errors import MediaError
from dynamo_media.server._backend import Answer
from dynamo_media.server._chat import ChatCompletions

if TYPE_CHECKING:
    from dynamo.runtime import Context, DistributedRuntime

__all__ = ["serve_processor"]


async def serve_processor(
    chat: ChatCompletions, endpoint: str, *, model: str, runtime: DistributedRuntime
) -> None:
    """Registers ``model`` with Dynamo's frontends and serves its chat requests through
    ``chat`` until SIGTERM or SIGINT; then finishes the requests in flight and returns.

    Args:
        chat: the chat path (``create_chat``) whose backend reaches the workers.
        endpoint: ``namespace.component.endpoint`` the processor serves.
        model: the model name ``dynamo.frontend`` lists and routes to this processor.
        runtime: the Dynamo runtime it serves on: its ``DynamoBackend``'s (``backend.runtime``
            once connected), so that one process runs one runtime, not a second one beside it.

    Raises:
        ImportError: ``ai-dynamo`` (``dynamo.llm``) is not installed.
    """
    try:
        llm = importlib.import_module("dynamo.llm")
        errors = importlib.import_module("dynamo.llm.exceptions")
    except ImportError as exc:
        raise ImportError(
            "dynamo-media processor needs Dynamo's LLM package: pip install --no-deps "
            f"ai-dynamo==1.6.1 pyyaml msgspec ({exc})"
        ) from exc
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.shutdown)
    served = runtime.endpoint(endpoint)
    await llm.register_llm(
        llm.ModelInput.Text,
        llm.ModelType.Chat,
        served,
        model,
        model,
        worker_type=llm.WorkerType.Aggregated,
        skip_model_assets=True,
    )

    async def generate(request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        async for chunk in _answer(chat, request, context, errors):
            yield chunk

    # serve_endpoint returns a Future in ai-dynamo-runtime 1.6.1, not a coroutine.
    await served.serve_endpoint(generate)


async def _answer(
    chat: ChatCompletions, request: dict[str, Any], context: Context, errors: Any
) -> AsyncIterator[dict[str, Any]]:
    """One request's chunks, or the Dynamo exception for its error (Note [processor wire])."""
    body = {**request, "stream": True}  # dynamo.frontend folds the chunks itself
    try:
        forwarded = await chat.forward(body)
    except MediaError as exc:
        raise _dynamo_error(errors, exc.status, str(exc)) from exc
    answer = forwarded.answer
    try:
        if isinstance(answer, Answer):  # a worker's error before its first chunk
            error = answer.body.get("error", {})
            raise _dynamo_error(errors, answer.status, str(error.get("message", answer.body)))
        async for chunk in answer:
            if context.is_stopped():  # the client went away: closing the chunks stops the worker
                return
            yield chunk
    except MediaError as exc:  # the worker failed, or went quiet, after its first chunk
        raise _dynamo_error(errors, exc.status, str(exc)) from exc
    finally:
        if not isinstance(answer, Answer):
            await answer.aclose()
        forwarded.release()


def _dynamo_error(errors: Any, status: int, message: str) -> Exception:
    """The exception of ``dynamo.llm.exceptions`` that ``dynamo.frontend`` answers with
    ``status``, or the nearest (Note [processor wire])."""
    if 400 <= status < 500:
        kind = errors.InvalidArgument
    elif status == 503:
        kind = errors.WorkerUnavailable
    else:
        kind = errors.Unknown
    return kind(message)
