"""``HttpCache``: the bodies of cacheable http(s) responses, kept by URL between fetches.

Note [HTTP cache]
Off by default (``FetchPolicy.http_cache_bytes`` 0). When on, the ``HttpClient`` of a policy
keeps the bodies of the 200 answers that HTTP lets a shared cache keep, and answers a later fetch
of the same URL from them. Kept small, on purpose:

- Stored: a 200 whose ``Cache-Control`` has ``max-age`` (or ``s-maxage``, which wins, since the
  frontend serves many users) or whose headers carry a validator (``ETag``, ``Last-Modified``).
  Never stored: ``no-store``, ``private``, ``Vary: *``, a body over the capacity. ``Expires`` and
  heuristic freshness are ignored: without ``max-age`` an entry is revalidated on every fetch.
- Fresh (younger than ``max-age``, the ``Age`` header counted, and no ``no-cache``): served with
  no request. Stale: revalidated with ``If-None-Match`` / ``If-Modified-Since``; a 304 serves
  the stored body and takes the 304's ``Cache-Control``, ``ETag`` and ``Last-Modified``; a 200
  replaces the entry (or drops it, if no longer cacheable). A failed revalidation fails the
  fetch: a stale body is never served.
- Keyed by each hop's exact URL, looked up only after the policy has checked that URL, on every
  fetch. Only 200s are stored, so a redirect is requested (and its target checked) every time;
  the target's body may come from the cache. A fresh hit skips name resolution: no connection is
  made, and the address checks guard connections. The cache belongs to the client of one policy,
  so changing the policy (``user_agent`` and ``max_bytes`` included) empties it; the request
  headers are the policy's, which is why ``Vary`` needs no other care.
- Bounded by ``http_cache_bytes`` of bodies, least recently used first out; each body also passed
  ``max_bytes`` when it was downloaded.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any

from dynamo_media._options import format_bytes

__all__ = ["HttpCache", "StoredResponse"]

# The stored headers that a 304 may update (RFC 9111, 4.3.4), and that decide freshness.
_KEPT = ("Cache-Control", "ETag", "Last-Modified", "Vary")


def _directives(cache_control: str) -> dict[str, str]:
    """``Cache-Control``'s directives, names lower case: ``max-age=60, no-cache`` ->
    ``{"max-age": "60", "no-cache": ""}``."""
    out = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def _seconds(value: str | None) -> int:
    """A delta-seconds value; anything else counts as 0 (stale), as RFC 9111 asks."""
    return int(value) if value is not None and value.isdigit() else 0


@dataclasses.dataclass(eq=False)
class StoredResponse:
    """A stored 200: its body and the headers that validate and age it.

    Attributes:
        body: the body.
        mime: its ``Content-Type``, without parameters.
        headers: ``Cache-Control``, ``ETag``, ``Last-Modified`` and ``Vary``, those present.
        fresh_until: when it turns stale (``time.monotonic()``).
    """

    body: bytes
    mime: str | None
    headers: dict[str, str]
    fresh_until: float = 0.0

    def fresh(self) -> bool:
        """Whether it may be served without asking the origin."""
        return time.monotonic() < self.fresh_until

    def validators(self) -> dict[str, str]:
        """The request headers that revalidate it (``If-None-Match``, ``If-Modified-Since``)."""
        out = {}
        if "ETag" in self.headers:
            out["If-None-Match"] = self.headers["ETag"]
        if "Last-Modified" in self.headers:
            out["If-Modified-Since"] = self.headers["Last-Modified"]
        return out

    def _update(self, headers: Mapping[str, str]) -> bool:
        """Takes a response's headers and ages the entry from now; whether it may be kept."""
        self.headers.update({name: headers[name] for name in _KEPT if name in headers})
        directives = _directives(self.headers.get("Cache-Control", ""))
        if {"no-store", "private"} & directives.keys() or self.headers.get("Vary") == "*":
            return False
        lifetime = _seconds(directives.get("s-maxage", directives.get("max-age")))
        if "no-cache" in directives:
            lifetime = 0
        age = _seconds(headers.get("Age"))
        self.fresh_until = time.monotonic() + lifetime - age
        return lifetime > age or bool(self.validators())


class HttpCache:
    """Response bodies by URL, least recently used first out, bounded by bytes
    (Note [HTTP cache]). Thread-safe.

    Args:
        capacity_bytes: the most bytes of bodies kept.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, StoredResponse] = collections.OrderedDict()
        self._bytes = 0
        self._fresh_hits = self._revalidated = self._stored = 0

    def lookup(self, url: str) -> tuple[StoredResponse, bool] | None:
        """The entry of ``url`` and whether it is fresh (else it is stale, with validators);
        ``None`` if there is none (a stale one without validators is dropped). The one reading
        of the clock decides both the answer and the fresh-hit count."""
        with self._lock:
            entry = self._entries.get(url)
            if entry is None:
                return None
            fresh = entry.fresh()
            if fresh:
                self._fresh_hits += 1
            elif not entry.validators():
                self._drop(url)
                return None
            self._entries.move_to_end(url)
            return entry, fresh

    def store(self, url: str, body: bytes, mime: str | None, headers: Mapping[str, str]) -> None:
        """Keeps a 200's body under ``url`` if HTTP lets it be kept and it fits; otherwise drops
        what was kept under ``url``."""
        entry = StoredResponse(body, mime, {})
        keep = entry._update(headers) and len(body) <= self.capacity_bytes
        with self._lock:
            self._drop(url)
            if not keep:
                return
            while self._bytes + len(body) > self.capacity_bytes:
                self._drop(next(iter(self._entries)))
            self._entries[url] = entry
            self._bytes += len(body)
            self._stored += 1

    def revalidated(self, url: str, entry: StoredResponse, headers: Mapping[str, str]) -> None:
        """Takes a 304's headers into ``entry``, which is dropped if they forbid keeping it."""
        with self._lock:
            self._revalidated += 1
            if not entry._update(headers) and self._entries.get(url) is entry:
                self._drop(url)

    def _drop(self, url: str) -> None:
        entry = self._entries.pop(url, None)
        if entry is not None:
            self._bytes -= len(entry.body)

    def stats(self) -> dict[str, Any]:
        """Capacity, bytes and entries kept; fresh hits, 304 revalidations and stores so far."""
        with self._lock:
            return {
                "capacity_bytes": self.capacity_bytes,
                "bytes": self._bytes,
                "entries": len(self._entries),
                "fresh_hits": self._fresh_hits,
                "revalidated": self._revalidated,
                "stored": self._stored,
            }

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"HttpCache(capacity={format_bytes(s['capacity_bytes'])!r}, "
            f"bytes={format_bytes(s['bytes'])!r}, entries={s['entries']})"
        )
