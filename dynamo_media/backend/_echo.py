"""The reference (echo) backend's logic, shared by its transports (HTTP in ``_app.py``, Dynamo's
runtime in ``_worker.py``): read every item over NIXL and describe what arrived. The torch
backend (``_torch.py``) reads the items the same way and answers in the same shape.

The answer is a normal chat completion (or its chunks) whose text is a JSON list with, per item:
modality, shape, dtype, the sha256 of the tensor's bytes, and frames_indices for video. A client
can compare those hashes with a local decode of the same files: the whole path, fetch to
backend, checked end to end. The raw facts are also under the completion's ``dynamo_media`` key,
with the ``pid`` of the process that answered (so tests can tell workers apart).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import torch

from dynamo_media._errors import InvalidOptions
from dynamo_media._media import tensor_sha256
from dynamo_media._openai import completion_id
from dynamo_media._priority import low_priority_pool
from dynamo_media.config import MODALITIES, Modality
from dynamo_media.nixl import read

__all__ = ["EchoAnswer", "ReadItem", "Respond", "describe_items", "echo", "read_items"]

_MODALITY = {f"{m}_url": m for m in MODALITIES}
_WORDS_PER_CHUNK = 8


@dataclasses.dataclass(frozen=True, eq=False)
class ReadItem:
    """One item as a backend read it: where it sits (``where``: ``video_url[0]``, counted per
    key), the tensor, its modality and metadata, and the facts the answer reports (``item``:
    modality, shape, dtype, sha256, read_seconds, frames_indices)."""

    where: str
    modality: Modality
    tensor: torch.Tensor
    metadata: dict[str, Any]
    item: dict[str, Any]

    def __repr__(self) -> str:
        return f"ReadItem({self.modality}, shape={list(self.tensor.shape)})"


@functools.cache
def _read_pool() -> concurrent.futures.Executor:
    """The threads that read and hash items, one per core, at a lower priority so that reading
    and hashing do not starve the event loop (Note [decode priority])."""
    return low_priority_pool("dynamo-media-read")


def _read_one(key: str, index: int, descriptor: dict[str, Any], device: str) -> ReadItem:
    start = time.perf_counter()
    try:
        tensor = read(descriptor, device=device)
    except ValueError as exc:
        raise InvalidOptions(f"multi_modal_data.{key}[{index}]: {exc}") from exc
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
    return ReadItem(f"{key}[{index}]", modality, tensor, meta, item)


async def read_items(
    multi_modal_data: dict[str, list[dict[str, Any]]], *, device: str = "cpu"
) -> list[ReadItem]:
    """Reads every descriptor on the read threads, all at once; returns them in order (images,
    then videos, then audio, as the keys come).

    Raises:
        InvalidOptions: an unknown key, or a malformed descriptor.
        ReadError: an item could not be read over NIXL.
    """
    unknown = [key for key in multi_modal_data if key not in _MODALITY]
    if unknown:
        raise InvalidOptions(
            f"unknown multi_modal_data key {unknown[0]!r}; allowed: {', '.join(_MODALITY)}"
        )
    loop = asyncio.get_running_loop()
    reads = [
        loop.run_in_executor(_read_pool(), _read_one, key, index, descriptor, device)
        for key, descriptors in multi_modal_data.items()
        for index, descriptor in enumerate(descriptors)
    ]
    return list(await asyncio.gather(*reads))


async def describe_items(multi_modal_data: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Reads every descriptor, in order, on a worker thread; describes each tensor.

    Raises:
        InvalidOptions: an unknown key, or a malformed descriptor.
        ReadError: an item could not be read over NIXL.
    """
    return [read.item for read in await read_items(multi_modal_data)]


class EchoAnswer:
    """What a reference backend answers to one request: the whole ``completion()``, or its
    ``chunks()`` (``chat.completion.chunk`` objects, without ``[DONE]``).

    Args:
        body: the backend request.
        model: the model name it answers as, unless the request names one.
        items: the facts of each item read (``ReadItem.item``).
        outputs: what a backend computed from the items (the torch backend: processor outputs
            and generated tokens), shown in the text and under ``dynamo_media.outputs``.
            Default: ``None``, nothing (the echo backend).
    """

    def __init__(
        self,
        body: dict[str, Any],
        model: str,
        items: list[dict[str, Any]],
        *,
        outputs: Mapping[str, Any] | None = None,
    ) -> None:
        self.request_id = body.get("request_id") or completion_id()
        self.model = body.get("model", model)
        self.items = items
        self.outputs = outputs
        self.created = int(time.time())
        shown = [{k: v for k, v in item.items() if k != "read_seconds"} for item in items]
        self.text = f"Received {len(items)} media item(s): {json.dumps(shown)}"
        if outputs is not None:
            self.text += f"; outputs: {json.dumps(outputs)}"

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
            "dynamo_media": {
                "items": self.items,
                "pid": os.getpid(),
                **({"outputs": self.outputs} if self.outputs is not None else {}),
            },
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


Respond = Callable[[dict[str, Any], str], Awaitable[EchoAnswer]]
"""How a backend answers one request as a model name: ``echo``, or a ``TorchBackend``; the
transports (``create_backend_app``, ``serve_worker``) take one."""


async def echo(body: dict[str, Any], model: str) -> EchoAnswer:
    """Reads the items of one backend request and prepares the echo answer, as ``model``.

    Raises:
        MediaError: ``InvalidOptions`` for malformed ``multi_modal_data``; ``ReadError`` when an
            item could not be read over NIXL.
    """
    items = await describe_items(body.get("multi_modal_data") or {})
    return EchoAnswer(body, model, items)
