"""One deadline per fetch, kept by one watchdog thread that shuts down the sockets of late fetches.

Note [One deadline, whatever the server does]
A socket timeout bounds each read, not the sum of them: a server that sends one header byte
every 0.1 s keeps a fetch with a 1 s timeout alive for as long as it likes. So a fetch holds a
``Deadline`` for its whole life (connect, TLS, status line, headers, body, every redirect hop),
and one daemon thread waits on a heap of them. When one passes, the thread shuts down the socket
the fetch is using (``shutdown(SHUT_RDWR)``), which ends any read or write blocked on it; the
fetch then fails with the deadline's own ``FetchTimeout``. A connection goes back to the pool when
its body is read, possibly just before its fetch ends, so each connection belongs to the last
deadline that took it from the pool: an older deadline never shuts down a newer fetch's socket,
and a connection that an expired deadline may have shut down is closed before it is used again.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import os
import socket
import threading
import time
import types
import weakref
from typing import Protocol

from dynamo_media._errors import FetchTimeout
from dynamo_media.fetch._url import shorten_url

__all__ = ["Deadline", "active_deadline"]

# A fetch whose socket was shut down may still be connecting (no socket to shut down yet):
# the watchdog looks again this often until the fetch ends.
_RECHECK_S = 0.05

_ACTIVE: contextvars.ContextVar[Deadline] = contextvars.ContextVar("dynamo_media_deadline")


class _Connection(Protocol):
    """What the watchdog needs of a pooled connection (``urllib3``'s ``HTTPConnection``)."""

    sock: socket.socket | None

    def close(self) -> None: ...


class Deadline:
    """The deadline of one fetch; ``with deadline:`` puts it under the watchdog.

    See Note [One deadline, whatever the server does].

    Args:
        timeout_ms: the fetch's ``timeout_ms``.
        url: the URL, for the timeout message.
        start: when the fetch began (``time.monotonic()``): the ``afetch`` call, not the moment a
            thread took it.
    """

    def __init__(self, timeout_ms: int, url: str, *, start: float) -> None:
        self.timeout_ms = timeout_ms
        self.shown = shorten_url(url)  # not the URL: the watchdog may hold this a while
        self.start = start
        self.end = start + timeout_ms / 1000
        self._error: FetchTimeout | None = None
        # Guarded by _WATCHDOG.lock:
        self._conn: _Connection | None = None
        self._fired = False
        self._done = False

    def expired(self) -> FetchTimeout:
        """The error of a fetch that ran out of time; one per deadline, so that ``__exit__``
        knows it when it comes by."""
        if self._error is None:
            self._error = FetchTimeout(
                f"Fetching {self.shown} took longer than timeout_ms ({self.timeout_ms}); "
                "raise timeout_ms or fetch from a faster server"
            )
        return self._error

    def remaining(self) -> float:
        """Seconds left.

        Raises:
            FetchTimeout: none are left.
        """
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def claim(self, conn: _Connection) -> None:
        """Makes ``conn`` the connection this fetch uses now: the one the watchdog shuts down."""
        with _WATCHDOG.lock:
            previous = _WATCHDOG.owners.get(conn)
            if previous is not None and previous is not self and previous._fired:
                conn.close()  # its socket may be shut down; urllib3 opens a new one
            _WATCHDOG.owners[conn] = self
            self._conn = conn

    def _fire(self) -> None:
        """Called by the watchdog, under its lock, once the deadline has passed."""
        self._fired = True
        conn = self._conn
        sock = conn.sock if conn is not None and _WATCHDOG.owners.get(conn) is self else None
        if sock is not None:
            # OSError: the fetch closed it meanwhile, so nothing is blocked on it. And
            # socket.socket's own shutdown: an SSLSocket's would drop its TLS state under the
            # reading thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        _WATCHDOG.push(time.monotonic() + _RECHECK_S, self)

    def __enter__(self) -> Deadline:
        self._token = _ACTIVE.set(self)
        _WATCHDOG.push(self.end, self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        _ACTIVE.reset(self._token)
        with _WATCHDOG.lock:
            self._done = True
            self._conn = None
        # Whatever broke, or ended early (a body cut short), it was the watchdog's doing.
        if self._fired and (exc is None or isinstance(exc, Exception)) and exc is not self._error:
            raise self.expired() from exc


def active_deadline() -> Deadline:
    """The deadline of the fetch running in this thread (inside ``with deadline:``)."""
    return _ACTIVE.get()


class _Watchdog:
    """One daemon thread, started on first use, that fires deadlines as they pass."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Starts empty, with no thread yet."""
        self.lock = threading.Condition()
        # The deadline that last took each pooled connection, see
        # Note [One deadline, whatever the server does].
        self.owners: weakref.WeakKeyDictionary[_Connection, Deadline] = weakref.WeakKeyDictionary()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # breaks ties between equal times
        self._thread: threading.Thread | None = None

    def push(self, when: float, deadline: Deadline) -> None:
        with self.lock:
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dynamo-media-deadlines", daemon=True
                )
                self._thread.start()
            if self._heap[0][2] is deadline:  # the watchdog must wake earlier
                self.lock.notify()

    def _run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    deadline = heapq.heappop(self._heap)[2]
                    if not deadline._done:
                        deadline._fire()
                self.lock.wait(self._heap[0][0] - now if self._heap else None)


_WATCHDOG = _Watchdog()
# A forked child has the watchdog's state but not its thread (and maybe not a free lock).
os.register_at_fork(after_in_child=_WATCHDOG.reset)
