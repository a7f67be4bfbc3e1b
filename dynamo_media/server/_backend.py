"""The seam between the frontend and a backend, shaped like httpx's transports.

A ``Backend`` sends one preprocessed chat request and hands back the answer, or the stream of
its chunks, and says whether it can take requests now (``ready``, for ``/health``). That is all
it does: the frontend keeps the policy around the hop (when the request's registrations are
released, metrics, how errors answer the client). Each transport is one subclass in its own
file: ``HttpBackend`` (OpenAI's HTTP API, the reference backend) and ``DynamoBackend``
(Dynamo's distributed runtime).

A transport that picks among several workers reports what the frontend cannot see (which worker
answered, which failed and was replaced) as ``BackendEvent``s to the hooks the frontend added
with ``add_event_hook``; the frontend turns them into metrics.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncGenerator, Callable
from typing import Any, Literal, TypeAlias

__all__ = ["Answer", "Backend", "BackendEvent", "Chunks"]

Chunks: TypeAlias = AsyncGenerator[dict[str, Any], None]
"""A streamed answer: ``chat.completion.chunk`` objects, without the final ``[DONE]``."""


@dataclasses.dataclass(frozen=True, repr=False)
class Answer:
    """A backend's whole answer.

    Attributes:
        body: the JSON object it answered: a ``chat.completion``, or an error in OpenAI's shape.
        status: its HTTP status. Default: 200.
    """

    body: dict[str, Any]
    status: int = 200

    def __repr__(self) -> str:
        return f"Answer(status={self.status}, keys={sorted(self.body)})"


EventKind: TypeAlias = Literal["answered", "failed", "timeout", "failover"]


@dataclasses.dataclass(frozen=True)
class BackendEvent:
    """What happened to one attempt of a request at one worker.

    Attributes:
        kind: ``"answered"`` (its first message came), ``"failed"`` (it failed before its first
            message: the request goes to another worker if one is left, a ``"failover"``),
            ``"timeout"`` (nothing came within the first-message deadline; it was stopped),
            ``"failover"`` (the request is sent once more, to ``instance``).
        instance: the worker, as the transport names it (Dynamo: the instance id in hex).
    """

    kind: EventKind
    instance: str


class Backend(abc.ABC):
    """Where the frontend sends chat requests. The frontend owns its backend and closes it."""

    _event_hooks: tuple[Callable[[BackendEvent], None], ...] = ()

    def add_event_hook(self, hook: Callable[[BackendEvent], None]) -> None:
        """Calls ``hook`` with each ``BackendEvent`` from now on, on the event loop; it must not
        block or raise."""
        self._event_hooks = (*self._event_hooks, hook)

    def _emit(self, kind: EventKind, instance: str) -> None:
        event = BackendEvent(kind, instance)
        for hook in self._event_hooks:
            hook(event)

    @abc.abstractmethod
    async def chat(self, payload: dict[str, Any]) -> Answer | Chunks:
        """Sends one chat request.

        Args:
            payload: ``{"request_id", "model", "messages", ..., "multi_modal_data"}``; with
                ``"stream": true`` it asks for a stream.

        Returns:
            The ``Answer``; or, when the payload asks for a stream and the backend starts one,
            its ``Chunks``, which the caller iterates and then closes (``aclose``).

        Raises:
            BackendUnavailable: the backend cannot be reached, or answered garbage, here or
                while the chunks stream; ``BackendTimeout`` when it sent nothing in time,
                ``BackendNotReady`` when there is no live backend to send to.
        """

    @abc.abstractmethod
    async def models(self) -> dict[str, Any]:
        """The models the backend serves, as OpenAI's ``/v1/models`` list.

        Raises:
            BackendUnavailable: as for ``chat``, or the backend answered an error.
        """

    async def ready(self) -> dict[str, Any]:
        """Whether the backend can take requests now, cheaply: ``/health`` asks it on each call.

        Returns:
            What ``/health`` shows about the backend (a transport with several workers: how
            many are live). Default: asks ``models()`` and returns ``{}``; a transport with a
            cheaper check overrides it.

        Raises:
            BackendUnavailable: it cannot take requests (``BackendNotReady`` when there is no
                backend at all).
        """
        await self.models()
        return {}

    async def aclose(self) -> None:  # noqa: B027 (a transport with nothing to release keeps it)
        """Releases the transport's connections. Default: nothing to release."""
