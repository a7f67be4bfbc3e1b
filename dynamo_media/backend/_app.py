"""The reference torch backend: reads every item over NIXL and describes what it received.

It answers a normal chat completion (streamed when asked) whose text is a JSON list with, per
item: modality, shape, dtype, the sha256 of the tensor's bytes, and frames_indices for video. A
client can compare those hashes with a local decode of the same files: the whole path, fetch to
backend, checked end to end. The raw facts are also under the response's ``dynamo_media`` key.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dynamo_media._errors import InvalidOptions, MediaError
from dynamo_media._media import tensor_sha256
from dynamo_media._openai import SSE_DONE, error_body, sse_event
from dynamo_media._priority import lower_thread_priority
from dynamo_media.config import MODALITIES
from dynamo_media.nixl import read

__all__ = ["create_backend_app", "describe_items"]

_MODALITY = {f"{m}_url": m for m in MODALITIES}


def _read_one(key: str, descriptor: dict[str, Any]) -> dict[str, Any]:
    lower_thread_priority()  # reading and hashing must not starve the event loop
    start = time.perf_counter()
    tensor = read(descriptor)
    seconds = time.perf_counter() - start
    modality = _MODALITY[key]
    meta = (descriptor.get("metadata") or {}).get(modality.capitalize(), {})
    item = {
        "modality": modality,
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "sha256": tensor_sha256(tensor),
        "read_seconds": seconds,
    }
    if "frames_indices" in meta:
        item["frames_indices"] = meta["frames_indices"]
    return item


async def describe_items(multi_modal_data: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Reads every descriptor, in order, on a worker thread; describes each tensor.

    Raises:
        ValueError: an unknown key, or a malformed descriptor.
        ReadError: an item could not be read over NIXL.
    """
    items = []
    for key, descriptors in multi_modal_data.items():
        if key not in _MODALITY:
            raise ValueError(f"unknown multi_modal_data key {key!r}")
        for descriptor in descriptors:
            items.append(await run_in_threadpool(_read_one, key, descriptor))
    return items


def _text(items: list[dict[str, Any]]) -> str:
    shown = [{k: v for k, v in item.items() if k != "read_seconds"} for item in items]
    return f"Received {len(items)} media item(s): {json.dumps(shown)}"


def create_backend_app(model: str) -> FastAPI:
    """The reference backend, answering as ``model``."""
    app = FastAPI(title="dynamo-media reference backend")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": 0, "owned_by": "dynamo-media"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        try:
            items = await describe_items(body.get("multi_modal_data") or {})
        except (MediaError, ValueError) as exc:
            error = exc if isinstance(exc, MediaError) else InvalidOptions(str(exc))
            return JSONResponse(error_body(error), status_code=error.status)
        request_id = body.get("request_id") or f"chatcmpl-{uuid.uuid4().hex}"
        text = _text(items)
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                _stream(request_id, body.get("model", model), created, text),
                media_type="text/event-stream",
            )
        completion_tokens = len(text.split())
        return JSONResponse(
            {
                "id": request_id,
                "object": "chat.completion",
                "created": created,
                "model": body.get("model", model),
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": 0,
                    "completion_tokens": completion_tokens,
                    "total_tokens": completion_tokens,
                },
                "dynamo_media": {"items": items},
            }
        )

    return app


async def _stream(request_id: str, model: str, created: int, text: str) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return sse_event(body)

    yield chunk({"role": "assistant", "content": ""})
    words = text.split(" ")
    for i in range(0, len(words), 8):
        yield chunk({"content": " ".join(words[i : i + 8]) + (" " if i + 8 < len(words) else "")})
    yield chunk({}, "stop")
    yield SSE_DONE
