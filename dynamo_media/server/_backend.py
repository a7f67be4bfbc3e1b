"""The seam between the frontend and a backend, shaped like httpx's transports.

A ``Backend`` sends one preprocessed chat request and hands back the answer, or the stream of
its chunks. That is all it does: the frontend keeps the policy around the hop (when the
request's registrations are released, metrics, how errors answer the client). Each transport is
one subclass in its own file: ``HttpBackend`` (OpenAI's HTTP API, the reference backend) today,
Dynamo's distributed runtime next.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncGenerator
from typing import Any, TypeAlias

__all__ = ["Answer", "Backend", "Chunks"]

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


class Backend(abc.ABC):
    """Where the frontend sends chat requests. The frontend owns its backend and closes it."""

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
            BackendUnavailable: the backend cannot be reached, timed out, or answered garbage,
                here or while the chunks stream.
        """

    @abc.abstractmethod
    async def models(self) -> dict[str, Any]:
        """The models the backend serves, as OpenAI's ``/v1/models`` list.

        Raises:
            BackendUnavailable: as for ``chat``, or the backend answered an error.
        """

    async def aclose(self) -> None:  # noqa: B027 (a transport with nothing to release keeps it)
        """Releases the transport's connections. Default: nothing to release."""
