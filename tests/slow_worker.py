"""A worker on Dynamo's runtime that streams slowly, for tests of what a frontend does mid-stream:
``python -m tests.slow_worker RECORD``. It serves ``dynamo_media.backend.generate`` (the
environment says where: ``DYN_FILE_KV`` and friends) and answers each request with up to
``max_tokens`` chunks (default ``CHUNKS``), one per ``INTERVAL_S``, never reading the request's
items; when the frontend stops the request (``context.is_stopped()``) it stops and appends
``stopped after N chunks`` to the file RECORD, else ``ended``. A request that is not streamed
gets its whole answer at once, and then its stream stays open for ``max_tokens`` intervals and
ends with a second message, which Note [Dynamo wire] does not allow: RECORD then says
``answered, then a second message`` (or ``answered, then stopped``)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dynamo.runtime import Context, DistributedRuntime

CHUNKS = 200
INTERVAL_S = 0.05


def chunk(request: dict[str, Any], text: str) -> dict[str, Any]:
    delta = {"content": text}
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    return {"id": request["request_id"], "object": "chat.completion.chunk", "choices": [choice]}


async def answer_and_linger(
    request: dict[str, Any], context: Context, record: Path
) -> AsyncIterator[dict[str, Any]]:
    choice = {"index": 0, "message": {"role": "assistant", "content": "whole"}}
    completion = {"id": request["request_id"], "object": "chat.completion", "choices": [choice]}
    yield {"answer": completion, "status": 200}
    for _ in range(int(request.get("max_tokens") or CHUNKS)):
        if context.is_stopped():
            with record.open("a") as f:
                f.write("answered, then stopped\n")
            return
        await asyncio.sleep(INTERVAL_S)
    yield {"answer": completion, "status": 200}
    with record.open("a") as f:
        f.write("answered, then a second message\n")


async def main(record: Path) -> None:
    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "file", "tcp")
    loop.add_signal_handler(signal.SIGTERM, runtime.shutdown)

    async def generate(request: dict[str, Any], context: Context) -> AsyncIterator[dict[str, Any]]:
        if not request.get("stream"):
            async for message in answer_and_linger(request, context, record):
                yield message
            return
        for n in range(int(request.get("max_tokens") or CHUNKS)):
            if context.is_stopped():
                with record.open("a") as f:
                    f.write(f"stopped after {n} chunks\n")
                return
            yield {"chunk": chunk(request, f"{n} ")}
            await asyncio.sleep(INTERVAL_S)
        with record.open("a") as f:
            f.write("ended\n")

    await runtime.endpoint("dynamo_media.backend.generate").serve_endpoint(generate)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
