"""The exception tree of dynamo-media.

Every error a request can cause is a ``MediaError`` and carries the HTTP status the server answers
with::

    MediaError                        .status, .param (the item, once known)
    ├── InvalidOptions        400     bad configuration or media_io_kwargs (also a ValueError)
    ├── ModalityDisabled      400     image/video/audio not enabled on the MediaDecoder
    ├── PolicyError           400     the fetch policy refuses the URL (scheme, host, address, port)
    ├── FetchError            422     the download failed: refused connection, unknown host,
    │   │                             broken body, unreadable local file
    │   ├── FetchTimeout      422     past timeout_ms (waiting for a fetch thread included)
    │   ├── UpstreamStatus    422     the origin answered other than 200; .upstream_status
    │   ├── TooLarge          422     the body (or data: payload, local file) is over max_bytes
    │   └── TooManyRedirects  422     more redirect hops than max_redirects
    ├── LimitExceeded         400     the decoded media would pass a configured limit
    ├── DecodeError           400     the bytes are not media we can decode
    │   └── NoMediaStream     400     the container has no video (or audio) stream
    ├── Overloaded            503     the server is at capacity; retry later
    ├── ReadError             502     a backend could not read an item over NIXL (transfer
    │                                 failed, or the frontend had released it)
    └── BackendUnavailable    502     the hop to the backend failed: not reachable, or answered
        │                             garbage (not JSON, a broken stream)
        ├── BackendTimeout    504     a worker sent nothing within its deadline (frozen, or
        │                             overloaded): the first message, or a stream's next chunk
        └── BackendNotReady   503     no live backend at all (no worker listed, or every one
                                      barred after failing); also what ``/health`` reports

One rule for the backend errors: what fails past the frontend is 502 (Bad Gateway), or 504 when a
deadline passed; 503 is the frontend's own state (no capacity left, no backend to send to), which
passes with time, and only 503 carries ``Retry-After``. A backend's own
error answer (a ``ReadError`` body, say) is relayed with its status, not wrapped.

Callers branch on the classes, never on the message text: a ``FetchError`` subclass says what
went wrong with a download (and each answers 422 as its parent does), ``NoMediaStream`` that a
container holds no stream of the kind asked for (an audio-only mp4 given to ``decode_video``).

Errors of the native libraries (Pillow, FFmpeg via torchcodec, urllib3, NIXL) never escape
raw: each is caught at its narrowest type and re-raised as one of these ``from`` the original.
Programming errors (a wrong argument type to a Python function) stay ``TypeError``/``ValueError``.

# Note [hostile bytes]
The one exception to "the narrowest type": a decoder fed an attacker's bytes. Pillow's plugins and
torchcodec raise whatever their parsers trip on (fuzzing found ``TypeError`` from TIFF tags,
``DecompressionBombError``, ``ValueError`` for a stream FFmpeg cannot classify, ``IndexError``,
``struct.error``), and that set is open. So the calls that parse the bytes, and only those, run
inside ``decode_failures``, which turns any exception into a ``DecodeError`` naming the item's
format; our own code around them stays outside it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

__all__ = [
    "BackendNotReady",
    "BackendTimeout",
    "BackendUnavailable",
    "DecodeError",
    "FetchError",
    "FetchTimeout",
    "InvalidOptions",
    "LimitExceeded",
    "MediaError",
    "ModalityDisabled",
    "NoMediaStream",
    "Overloaded",
    "PolicyError",
    "ReadError",
    "TooLarge",
    "TooManyRedirects",
    "UpstreamStatus",
    "decode_failures",
    "native_reason",
]

# torchcodec's C++ errors start with "function, /path/to/File.cpp:123, ".
_NATIVE_PREFIX = re.compile(r"^(?:[\w:]+, )?/\S+\.(?:cpp|h|cc):\d+, ")


def native_reason(exc: BaseException) -> str:
    """A native library's error message without its source location and without the lines
    after its first (torchcodec appends bug-report instructions), for our messages."""
    lines = _NATIVE_PREFIX.sub("", str(exc)).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


class MediaError(Exception):
    """Base class of every error a media item can cause.

    Attributes:
        status: the HTTP status a server answers with.
        param: the request item the error is about (``messages[0].content[1].image_url``), set
            by the preprocessor; ``None`` when raised outside a request.
    """

    status: int = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def for_item(self, param: str) -> MediaError:
        """Returns a copy of this error whose message starts with the item it concerns.

        Args:
            param: the item's place in the request.

        Returns:
            An error of the same type and attributes (``upstream_status``, say), chained to
            this one.
        """
        message = f"{param}: {self.message}"
        # Not type(self)(message): a subclass's constructor may take more than the message.
        err = type(self).__new__(type(self), message)
        err.__dict__.update(vars(self))
        err.message, err.param = message, param
        err.__cause__ = self.__cause__ or self
        return err


class InvalidOptions(MediaError, ValueError):
    """An option or a media_io_kwargs entry is unknown, of the wrong type or out of range."""

    status = 400


class ModalityDisabled(MediaError):
    """The request carries a modality that the MediaDecoder does not enable."""

    status = 400


class PolicyError(MediaError):
    """The fetch policy refuses the URL (scheme, domain, address, port, local path)."""

    status = 400


class FetchError(MediaError):
    """The download failed. Raised as is for a refused connection, a host without an address, a
    connection that broke mid-body or a local file that cannot be read; the causes a caller may
    act on have their own subclasses."""

    status = 422


class FetchTimeout(FetchError):
    """The fetch passed its ``timeout_ms``: the whole download, redirects included, counted from
    the ``fetch`` (or ``afetch``) call, so time spent waiting for a fetch thread counts too."""


class UpstreamStatus(FetchError):
    """The origin answered a status other than 200: an error (404, 500), or one we cannot use
    (204, 206, a redirect without a ``Location``).

    Args:
        message: what happened, naming the URL.
        upstream_status: the HTTP status the origin answered.
        param: see ``MediaError``.

    Attributes:
        upstream_status: the HTTP status the origin answered, e.g. 404.
    """

    def __init__(self, message: str, *, upstream_status: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.upstream_status = upstream_status


class TooLarge(FetchError):
    """The body, the ``data:`` URL's payload or the local file is over ``max_bytes``; raised
    before the rest of it is read."""


class TooManyRedirects(FetchError):
    """Following the redirects would take more hops than ``max_redirects``."""


class LimitExceeded(MediaError):
    """Decoding would pass a configured limit; raised before the memory is allocated.

    Args:
        message: what would pass which limit, and how to stay under it.
        limit: the limit's name, as configured (``"max_alloc"``, ``"max_video_width"``,
            ``"max_duration_seconds"``, ``"pool_capacity_bytes"``, ...).
        param: see ``MediaError``.

    Attributes:
        limit: the limit's name; the server counts refusals by it.
    """

    status = 400

    def __init__(self, message: str, *, limit: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.limit = limit


class DecodeError(MediaError):
    """The data could not be decoded as the media it claims to be."""

    status = 400


class NoMediaStream(DecodeError):
    """The container holds no stream of the kind asked for: no video stream for
    ``decode_video``, no audio stream for ``decode_audio``."""


class Overloaded(MediaError):
    """The server has no capacity left within the wait deadline; the client should retry."""

    status = 503


class ReadError(MediaError):
    """A backend could not read an item over NIXL: the transfer failed or the region was
    released (a stale descriptor)."""

    status = 502


class BackendUnavailable(MediaError):
    """The frontend could not get an answer from its backend: it cannot be reached, it timed
    out, or it answered something that is not OpenAI's shape. Raised by a ``Backend``
    transport, never for an error the backend answered on purpose."""

    status = 502


class BackendTimeout(BackendUnavailable):
    """A backend sent nothing within a deadline: the first message of its answer (Dynamo's
    ``first_chunk_timeout_ms``), or the next chunk of a stream (``idle_timeout_ms``). It is
    frozen or overloaded; the request was stopped there."""

    status = 504


class BackendNotReady(BackendUnavailable):
    """There is no backend to send to: no live worker is listed, or every listed one failed
    moments ago and is barred. Raised at once, without waiting; ``/health`` answers 503 with it.
    The client should retry later (``Retry-After``)."""

    status = 503


@contextlib.contextmanager
def decode_failures(what: str) -> Iterator[None]:
    """Turns any exception a native decoder raises on bad bytes into a ``DecodeError``.

    See Note [hostile bytes]. A ``MediaError`` raised inside passes through unchanged.

    Args:
        what: the start of the message, e.g. ``"corrupt or truncated gif image"``.
    """
    try:
        yield
    except MediaError:
        raise
    except Exception as exc:
        raise DecodeError(f"{what}: {native_reason(exc)}") from exc
