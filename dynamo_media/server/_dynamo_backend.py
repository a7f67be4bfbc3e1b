"""``DynamoBackend``: the hop to workers on Dynamo's distributed runtime (``ai-dynamo-runtime``).

The frontend is a runtime client of one endpoint (``dynamo_media.backend.generate`` by
default). It picks a live instance (Note [routing]) and sends the request with ``direct()``, so
it knows which worker answers and can fail over (Note [failover]).

# Note [routing]
``route="round_robin"`` (the default) takes the live instances in turn. ``route="hash"`` sends a
request that carries media to the instance with the highest rendezvous weight,
``sha256(key, instance id)``, where the key hashes the ``content_hash`` of every descriptor in
its ``multi_modal_data``, in payload order: the same media lands on the same worker (its caches
stay warm), and when that worker leaves only its own keys move, each to its next-highest
instance; a barred or failed instance is passed over the same way. A request with no media (or
no hash) goes round robin.

# Note [Dynamo wire]
The request is the frontend's payload, as a dict. A worker answers with a stream of dicts:
- a whole answer: one ``{"answer": <chat.completion or OpenAI error body>, "status": <int>}``
  (the frontend answers its client with it at once, and reads the stream's end in the
  background: waiting for it cost every request 0.23 ms; a second message is logged, and the
  worker stopped);
- a streamed answer: ``{"chunk": <chat.completion.chunk>}`` per chunk, and the stream ends.
A worker may answer ``{"answer": error, "status": 4xx}`` to a streamed request too, when it
fails before its first chunk (an item it cannot read).

# Note [failover]
A worker that fails before its first message came back (refused, crashed, broken stream) costs
the request nothing: the frontend still holds the request's registrations, so the request is
sent once more, ``direct()`` to another live instance. The one that failed is barred for
``bar_ms`` (discovery keeps listing a killed worker for ~10 s with file discovery); a barred
instance gets requests only when no other is left. A failure after the first message is not
retried (the client may have seen chunks): it is ``BackendUnavailable`` there. A worker that
sends nothing within ``first_chunk_timeout_ms`` (frozen, or overloaded) is stopped
(``stop_generating``) and barred, and the request fails with ``BackendTimeout`` (504) rather
than trying again: a second wait would double the deadline the client was promised; so does a
stream that sends no chunk within ``idle_timeout_ms``.

No instance listed at all is ``BackendNotReady`` (503), at once: a request never waits for
discovery (only ``connect()`` does, at start). ``ready()`` counts the live instances, listed and
not barred, for ``/health``: none is ``BackendNotReady`` too. Each attempt is reported to the
event hooks (``BackendEvent``: answered, failed, timeout, failover) for the per-worker metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from dynamo_media._errors import BackendNotReady, BackendTimeout, BackendUnavailable
from dynamo_media._openai import model_list
from dynamo_media._options import check_choice
from dynamo_media.server._backend import Answer, Backend, Chunks

if TYPE_CHECKING:
    from dynamo.runtime import Client, Context, DistributedRuntime

__all__ = ["DEFAULT_ENDPOINT", "DynamoBackend"]

log = logging.getLogger("dynamo_media.server")

Discovery = Literal["file", "etcd", "kubernetes", "mem"]
RequestPlane = Literal["tcp", "nats"]
Route = Literal["round_robin", "hash"]

DEFAULT_ENDPOINT = "dynamo_media.backend.generate"
DEFAULT_CONNECT_TIMEOUT_MS = 60_000
DEFAULT_FIRST_CHUNK_TIMEOUT_MS = 60_000
DEFAULT_IDLE_TIMEOUT_MS = 60_000
DEFAULT_BAR_MS = 5_000
_ATTEMPTS = 2  # the first instance, and one other (Note [failover])


class _WorkerFailed(Exception):
    """One instance failed before its first message: the request may go to another."""


class DynamoBackend(Backend):
    """Sends chat requests to the live instances of a Dynamo endpoint, round robin or by media
    hash (Note [routing]), with failover before the first chunk (Note [failover]).

    The runtime is created on the running event loop by ``connect()`` (or the first request),
    which waits for the first instance; later, a request finding no live instance fails at once.

    Args:
        endpoint: ``namespace.component.endpoint``. Default: ``"dynamo_media.backend.generate"``.
        model: the model name ``/v1/models`` lists.
        discovery: where instances are found: ``"file"`` (``DYN_FILE_KV``), ``"etcd"``
            (``ETCD_ENDPOINTS``), ``"kubernetes"`` or ``"mem"``. Default: ``"file"``.
        request_plane: ``"tcp"`` or ``"nats"`` (``NATS_SERVER``). Default: ``"tcp"``.
        route: ``"round_robin"``, or ``"hash"``: the same media to the same worker (Note
            [routing]). Default: ``"round_robin"``.
        connect_timeout_ms: how long ``connect()`` waits for instances. Default: 60000.
        first_chunk_timeout_ms: how long a worker may take to send its first message (a whole
            answer, or a stream's first chunk). Default: 60000.
        idle_timeout_ms: how long a stream may go without a chunk. Default: 60000.
        bar_ms: how long an instance that failed gets no requests while others are live.
            Default: 5000.

    Raises:
        ImportError: ``ai-dynamo-runtime`` is not installed (the ``dynamo`` extra).
        InvalidOptions: an unknown ``discovery``, ``request_plane`` or ``route`` (a
            ``ValueError``).
        ValueError: a timeout that is not > 0.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        model: str,
        discovery: Discovery = "file",
        request_plane: RequestPlane = "tcp",
        route: Route = "round_robin",
        connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS,
        first_chunk_timeout_ms: int = DEFAULT_FIRST_CHUNK_TIMEOUT_MS,
        idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS,
        bar_ms: int = DEFAULT_BAR_MS,
    ) -> None:
        check_choice("discovery", discovery, Discovery)
        check_choice("request_plane", request_plane, RequestPlane)
        check_choice("route", route, Route)
        timeouts = {
            "connect_timeout_ms": connect_timeout_ms,
            "first_chunk_timeout_ms": first_chunk_timeout_ms,
            "idle_timeout_ms": idle_timeout_ms,
            "bar_ms": bar_ms,
        }
        for name, value in timeouts.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        try:
            self._dynamo = importlib.import_module("dynamo.runtime")
        except ImportError as exc:
            raise ImportError(
                "DynamoBackend needs ai-dynamo-runtime: pip install 'dynamo-media[dynamo]'"
            ) from exc
        self.endpoint = endpoint
        self.model = model
        self.discovery = discovery
        self.request_plane = request_plane
        self.route = route
        self.connect_timeout_ms = connect_timeout_ms
        self.first_chunk_timeout_ms = first_chunk_timeout_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.bar_ms = bar_ms
        self._runtime: DistributedRuntime | None = None
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._turn = itertools.count()
        self._barred: dict[int, float] = {}  # instance id -> monotonic time the bar ends
        self._draining: set[asyncio.Task[None]] = set()  # Note [Dynamo wire]

    def __repr__(self) -> str:
        return (
            f"DynamoBackend({self.endpoint!r}, discovery={self.discovery!r}, "
            f"request_plane={self.request_plane!r}, route={self.route!r})"
        )

    async def connect(self, *, min_instances: int = 1) -> None:
        """Creates the runtime on the running loop, and waits until ``min_instances`` instances
        are live.

        Raises:
            BackendNotReady: fewer were live after ``connect_timeout_ms``.
            BackendUnavailable: the runtime could not start (its discovery is unreachable).
        """
        client = await self._open()
        try:
            async with asyncio.timeout(self.connect_timeout_ms / 1000):
                # wait_for_instances blocks until one instance exists, forever if none comes.
                await client.wait_for_instances()
                while len(client.instance_ids()) < min_instances:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            live = len(client.instance_ids())
            raise BackendNotReady(
                f"{live} worker(s) of {self.endpoint} ({self.discovery} discovery) were live after "
                f"connect_timeout_ms ({self.connect_timeout_ms}), {min_instances} needed; start "
                "them with `dynamo-media worker`, with the same discovery settings"
            ) from None

    @property
    def runtime(self) -> DistributedRuntime:
        """The runtime this backend's client lives on (made by ``connect``); a processor serves
        its endpoint on it too.

        Raises:
            RuntimeError: not connected yet.
        """
        if self._runtime is None:
            raise RuntimeError(f"{self!r} is not connected; await connect() first")
        return self._runtime

    async def chat(self, payload: dict[str, Any]) -> Answer | Chunks:
        client = await self._connected()
        key = _media_key(payload) if self.route == "hash" else None
        failed: list[int] = []
        error: _WorkerFailed | None = None
        for _ in range(_ATTEMPTS):
            instance = self._pick(client.instance_ids(), skip=failed, key=key)
            if instance is None:
                break
            start = time.perf_counter()
            if failed:
                self._emit("failover", f"{instance:x}")
            try:
                return await self._send(client, instance, payload)
            except _WorkerFailed as exc:
                self._emit("failed", f"{instance:x}")
                self._bar(instance)
                failed.append(instance)
                error = exc
                failover = {
                    "event": "failover",
                    "worker": f"{instance:x}",
                    "request_id": payload.get("request_id"),
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                    "error": str(exc),
                }
                log.info(json.dumps(failover))
        if error is None:
            raise BackendNotReady(self._no_instance())
        raise BackendUnavailable(
            f"{len(failed)} worker(s) of {self.endpoint} failed before answering: {error}"
        ) from error

    async def models(self) -> dict[str, Any]:
        client = await self._connected()
        if not client.instance_ids():
            raise BackendNotReady(self._no_instance())
        return model_list(self.model)

    async def ready(self) -> dict[str, Any]:
        """The live instances, without waiting: listed by discovery, and not barred.

        Returns:
            ``{"instances": <listed>, "barred": <of those, barred after failing>}``.

        Raises:
            BackendNotReady: none is live.
            BackendUnavailable: the runtime could not start.
        """
        client = await self._open()
        now = time.monotonic()
        listed = client.instance_ids()
        barred = sum(self._is_barred(i, now) for i in listed)
        if barred == len(listed):
            reason = f"its {barred} worker(s) failed moments ago" if barred else "none is listed"
            raise BackendNotReady(f"{self._no_instance()} ({reason})")
        return {"instances": len(listed), "barred": barred}

    async def aclose(self) -> None:
        for drain in self._draining:
            drain.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)
        if self._runtime is not None:
            self._runtime.shutdown()
            self._runtime = self._client = None

    async def _open(self) -> Client:
        """The runtime and the endpoint's client, created once on the running loop."""
        async with self._connecting:  # one runtime, however many requests come first
            if self._client is None:
                try:
                    self._runtime = self._dynamo.DistributedRuntime(
                        asyncio.get_running_loop(), self.discovery, self.request_plane
                    )
                    self._client = await self._runtime.endpoint(self.endpoint).client()
                except Exception as exc:  # the runtime raises bare Exception
                    raise BackendUnavailable(
                        f"Dynamo's runtime could not start a client of {self.endpoint} "
                        f"({self.discovery} discovery, {self.request_plane} plane): {exc}"
                    ) from exc
            return self._client

    async def _connected(self) -> Client:
        if self._client is None:
            await self.connect()
        assert self._client is not None
        return self._client

    def _no_instance(self) -> str:
        return (
            f"no live worker serves {self.endpoint} ({self.discovery} discovery); start one with "
            "`dynamo-media worker`"
        )

    def _bar(self, instance: int) -> None:
        """Keeps ``instance`` out of the rotation for ``bar_ms`` (it just failed)."""
        self._barred[instance] = time.monotonic() + self.bar_ms / 1000

    def _is_barred(self, instance: int, now: float) -> bool:
        return self._barred.get(instance, 0.0) > now

    def _pick(self, instances: list[int], *, skip: list[int], key: bytes | None) -> int | None:
        """The instance for a request, not in ``skip``, unbarred ones first: round robin, or
        the highest rendezvous weight for ``key`` (Note [routing])."""
        now = time.monotonic()
        live = sorted(i for i in instances if i not in skip)
        ready = [i for i in live if not self._is_barred(i, now)] or live
        if not ready:
            return None
        if key is None:
            return ready[next(self._turn) % len(ready)]
        return max(ready, key=lambda i: hashlib.sha256(key + str(i).encode()).digest())

    async def _send(
        self, client: Client, instance: int, payload: dict[str, Any]
    ) -> Answer | Chunks:
        """The request to one instance: its answer, or its chunks once the first came.

        Raises:
            _WorkerFailed: it failed before its first message.
            BackendTimeout: it sent nothing in time.
            BackendUnavailable: it sent garbage.
        """
        context = self._dynamo.Context(payload.get("request_id"))
        timeout_s = self.first_chunk_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                stream = await client.direct(payload, instance, annotated=False, context=context)
                first = await anext(stream)
        except TimeoutError:
            context.stop_generating()
            self._emit("timeout", f"{instance:x}")
            self._bar(instance)
            raise BackendTimeout(
                f"worker {instance:x} of {self.endpoint} sent nothing within "
                f"first_chunk_timeout_ms ({self.first_chunk_timeout_ms}); it is frozen or "
                "overloaded"
            ) from None
        except StopAsyncIteration:
            raise _WorkerFailed("it ended its answer before the first message") from None
        except Exception as exc:  # the runtime raises bare Exception ("Unavailable: ...")
            raise _WorkerFailed(str(exc)) from exc
        self._emit("answered", f"{instance:x}")
        if isinstance(first, dict) and "chunk" in first:
            return self._chunks(stream, first, context, instance)
        answer = self._answer(first, instance)
        drain = asyncio.create_task(self._drain(stream, context, instance))
        self._draining.add(drain)
        drain.add_done_callback(self._draining.discard)
        return answer

    async def _chunks(
        self, stream: AsyncIterator[Any], first: dict[str, Any], context: Context, instance: int
    ) -> Chunks:
        ended = False
        try:
            message: Any = first
            while True:
                yield self._chunk(message, instance)
                try:
                    async with asyncio.timeout(self.idle_timeout_ms / 1000):
                        message = await anext(stream)
                except StopAsyncIteration:
                    ended = True
                    return
                except TimeoutError:
                    raise BackendTimeout(
                        f"worker {instance:x} of {self.endpoint} sent no chunk within "
                        f"idle_timeout_ms ({self.idle_timeout_ms})"
                    ) from None
                except Exception as exc:  # the runtime raises bare Exception and ValueError
                    raise BackendUnavailable(
                        f"worker {instance:x} of {self.endpoint} failed while streaming: {exc}"
                    ) from exc
        finally:
            if not ended:  # the client went away, or the stream broke: stop the worker
                context.stop_generating()

    async def _drain(self, stream: AsyncIterator[Any], context: Context, instance: int) -> None:
        """Reads a whole answer's stream to its end, in the background: one message is all it
        may hold (Note [Dynamo wire]). A second message, a broken stream or shutdown stops the
        worker."""
        extra: Any = None
        ended = False
        try:
            # The answer is complete; how its stream ends does not matter.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.idle_timeout_ms / 1000):
                    extra = await anext(stream, None)
                ended = extra is None
        finally:
            if not ended:
                context.stop_generating()
        if extra is not None:
            error = f"more than one message for a whole answer: {str(extra)[:200]!r}"
            bad = {"event": "bad_answer", "worker": f"{instance:x}", "error": error}
            log.warning(json.dumps(bad))

    def _answer(self, message: Any, instance: int) -> Answer:
        body, status = _field(message, "answer"), _field(message, "status")
        if not isinstance(body, dict) or not isinstance(status, int):
            raise BackendUnavailable(self._garbage(message, instance))
        return Answer(body, status)

    def _chunk(self, message: Any, instance: int) -> dict[str, Any]:
        chunk = _field(message, "chunk")
        if not isinstance(chunk, dict):
            raise BackendUnavailable(self._garbage(message, instance))
        return chunk

    def _garbage(self, message: Any, instance: int) -> str:
        return (
            f"worker {instance:x} of {self.endpoint} answered something other than Note "
            f"[Dynamo wire]: {str(message)[:200]!r}"
        )


def _media_key(payload: dict[str, Any]) -> bytes | None:
    """The routing key of a request's media: a hash of its descriptors' ``content_hash``, in
    payload order; ``None`` when it has none (Note [routing])."""
    hashes = [
        str(_field(descriptor, "content_hash"))
        for descriptors in (payload.get("multi_modal_data") or {}).values()
        for descriptor in descriptors
        if _field(descriptor, "content_hash") is not None
    ]
    return hashlib.sha256("\0".join(hashes).encode()).digest() if hashes else None


def _field(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, dict) else None
