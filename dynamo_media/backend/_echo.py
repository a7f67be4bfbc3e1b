"""The reference (echo) backend's logic, shared by its transports (HTTP in ``_app.py``, Dynamo's
runtime in ``_worker.py``): read every item over NIXL and describe what arrived.

The answer is a normal chat completion (or its chunks) whose text is a JSON list with, per item:
modality, shape, dtype, the sha256 of the tensor's bytes, and frames_indices for video. A client
can compare those hashes with a local decode of the same files: the whole path, fetch to
backend, checked end to end. The raw facts are also under the completion's ``dynamo_media`` key,
with the ``pid`` of the process that answered (so tests can tell workers apart).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi.concurrency import run_in_threadpool

from dynamo_media._errors import InvalidOptions
from dynamo_media._media import tensor_sha256
from dynamo_media._priority import lower_thread_priority
from dynamo_media.config import MODALITIES
from dynamo_media.nixl import read

__all__ = ["EchoAnswer", "describe_items", "echo"]

_MODALITY = {f"{m}_url": m for m in MODALITIES}
_WORDS_PER_CHUNK = 8


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


class EchoAnswer:
    """What the echo backend answers to one request: the whole ``completion()``, or its
    ``chunks()`` (``chat.completion.chunk`` objects, without ``[DONE]``)."""

    def __init__(self, body: dict[str, Any], model: str, items: list[dict[str, Any]]) -> None:
        self.request_id = body.get("request_id") or f"chatcmpl-{uuid.uuid4().hex}"
        self.model = body.get("model", model)
        self.items = items
        self.created = int(time.time())
        shown = [{k: v for k, v in item.items() if k != "read_seconds"} for item in items]
        self.text = f"Received {len(items)} media item(s): {json.dumps(shown)}"

    def __repr__(self) -> str:
        return f"EchoAnswer({self.request_id!r}, items={len(self.items)})"

    def completion(self) -> dict[str, Any]:
        completion_tokens = len(self.text.split())
        return {
            "id": self.request_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": self.text},
                }
            ],
            "usage": {
                "prompt_tokens": 0,
                "completion_tokens": completion_tokens,
                "total_tokens": completion_tokens,
            },
            "dynamo_media": {"items": self.items, "pid": os.getpid()},
        }

    def chunks(self) -> Iterator[dict[str, Any]]:
        yield self._chunk({"role": "assistant", "content": ""})
        words = self.text.split(" ")
        for i in range(0, len(words), _WORDS_PER_CHUNK):
            more = i + _WORDS_PER_CHUNK < len(words)
            text = " ".join(words[i : i + _WORDS_PER_CHUNK]) + (" " if more else "")
            yield self._chunk({"content": text})
        yield self._chunk({}, "stop")

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }


async def echo(body: dict[str, Any], model: str) -> EchoAnswer:
    """Reads the items of one backend request and prepares the echo answer, as ``model``.

    Raises:
        MediaError: ``InvalidOptions`` for malformed ``multi_modal_data``; ``ReadError`` when an
            item could not be read over NIXL.
    """
    try:
        items = await describe_items(body.get("multi_modal_data") or {})
    except InvalidOptions:
        raise
    except ValueError as exc:
        raise InvalidOptions(str(exc)) from exc
    return EchoAnswer(body, model, items)
