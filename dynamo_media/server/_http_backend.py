"""``HttpBackend``: the hop to a backend that speaks OpenAI's HTTP API (the reference backend)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx

from dynamo_media._errors import BackendUnavailable
from dynamo_media.server._backend import Answer, Backend, Chunks

__all__ = ["HttpBackend"]

_EVENT_STREAM = "text/event-stream"


class HttpBackend(Backend):
    """Sends chat requests to ``{base_url}/v1/chat/completions`` and reads the answer, or its
    server-sent events, back.

    Args:
        base_url: the backend's base URL (``http://127.0.0.1:8001``).
        timeout_ms: how long connecting, and each read, may take.
    """

    def __init__(self, base_url: str, *, timeout_ms: int) -> None:
        self.base_url = base_url
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_ms / 1000)

    def __repr__(self) -> str:
        return f"HttpBackend({self.base_url!r})"

    async def chat(self, payload: dict[str, Any]) -> Answer | Chunks:
        request = self._client.build_request("POST", "/v1/chat/completions", json=payload)
        with self._failures():
            response = await self._client.send(request, stream=True)
        streamed = response.headers.get("content-type", "").startswith(_EVENT_STREAM)
        if payload.get("stream") and response.status_code == 200 and streamed:
            return self._chunks(response)
        try:
            with self._failures():
                await response.aread()
        finally:
            await response.aclose()
        return Answer(
            self._object(response.content, "POST /v1/chat/completions"), response.status_code
        )

    async def models(self) -> dict[str, Any]:
        with self._failures():
            response = await self._client.get("/v1/models")
        if response.status_code != 200:
            raise BackendUnavailable(
                f"the backend at {self.base_url} answered {response.status_code} to "
                f"GET /v1/models: {response.text[:200]!r}"
            )
        return self._object(response.content, "GET /v1/models")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _chunks(self, response: httpx.Response) -> Chunks:
        try:
            with self._failures():
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event names
                    data = line.removeprefix("data:").strip()
                    if data == "[DONE]":
                        return
                    yield self._object(data.encode(), "a streamed chunk")
        finally:
            await response.aclose()
        raise BackendUnavailable(f"the backend at {self.base_url} ended its stream before [DONE]")

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """Turns httpx's errors into ``BackendUnavailable``."""
        try:
            yield
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"the backend at {self.base_url} failed: {exc!r}; check that it runs and answers "
                "within server.backend_timeout_ms"
            ) from exc

    def _object(self, data: bytes, what: str) -> dict[str, Any]:
        """``data`` as a JSON object, or ``BackendUnavailable`` naming ``what`` it answered."""
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise BackendUnavailable(
                f"the backend at {self.base_url} answered {what} with something other than "
                f"JSON: {data[:200]!r}"
            ) from exc
        if not isinstance(value, dict):
            raise BackendUnavailable(
                f"the backend at {self.base_url} answered {what} with JSON that is not an "
                f"object: {data[:200]!r}"
            )
        return value
