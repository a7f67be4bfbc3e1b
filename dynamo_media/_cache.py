"""``MediaCache``: decoded media kept between requests, keyed by the fetched bytes and every
option that decoded them; least recently used first out, bounded by bytes.

    cache = MediaCache(capacity_bytes=512 << 20)
    held = await cache.get(cache_key("image", encoded, options, device="cpu"), decode)
    ...  # register held.media, send it
    held.release()  # when the request ends

# Note [cache key]
The key is the sha256 of the fetched bytes' hash (``EncodedMedia.content_hash``), the modality,
the device, and the whole options object of the item (``ImageOptions``/``VideoOptions``/
``AudioOptions.to_dict()``: sampling, size, layout, mode, sample rate, ... and ``limits``). The
options class is the decode step's schema, so everything a decode depends on is in the key, and a
request never gets a result decoded under other options or other limits. Options that give the
same output under two spellings (``fps`` vs. ``num_frames``) are two keys: a lost hit, never a
wrong one. ``DecodedMedia.content_hash`` is not the key: it names what came out (the frames chosen,
the size), which is known only after decoding, and it leaves out the limits.

Options objects are frozen, so their serialised form is made once per object and remembered
while the object lives (the decoder's defaults as long as the decoder, a request's merged options
until the request ends), by identity rather than ``==`` (``fps=2`` equals ``fps=2.0`` but
serialises apart). A hit then costs one sha256 of a few hundred bytes instead of a ``to_dict``
and a sorted ``json.dumps`` (about 1 us instead of 9), and the hold copies the metadata with
``_own_copy`` rather than ``copy.deepcopy`` (0.7 us instead of 4.5 for an image's).

# Note [cache sharing]
An entry is the decoded tensor, never a registration. Each request that uses it registers it
itself (``register_media``: a large contiguous tensor is registered in place, so the requests
share its memory without a copy; a small one is copied into a pool region). Each lease keeps its
own lease id and lease word, so early free (Note [early free] in nixl/_pool.py) and stale-read
safety (Note [stale reads]) stay per request, and an idle entry spends none of the pool's budget.
A request holds the entries it uses until it ends (``CachedMedia.release``); an entry is evicted
only when nobody holds it. When the unheld entries cannot make room for a new one, the new
one is served but not stored: the cache's bytes never pass ``capacity_bytes``.

# Note [memory tiers]
Entries live on the device that decoded them: VRAM for ``device="cuda"``, DRAM otherwise. With a
``cache_dir``, an unheld CPU entry that must leave DRAM for room is written to a file
(``SpillDir``, Note [spill files]) instead of being dropped, on the cache's one spill thread,
after the request that needed the room has its entry; the victim's tensor lives until its
write ends. A request for a key that is in a file and not in DRAM reads it back on the same
thread (single flight, as a decode) and stores it in DRAM again (which may spill others); the
file is deleted once read. The read counts as a hit and a restore; a file that is gone, cut or
changed counts as a miss and a lost spill, and the item decodes. VRAM entries are not spilled
(GDS would write them without the DRAM bounce; not built: they are dropped as before), nor are
entries that decode again faster than they read back: the cache times each decode (the wait for
a decode thread included) and keeps the time with the entry (Note [spill crossover]).

Concurrent requests for an item not yet cached decode it once: the first decodes and the others
wait for it (single flight). A decode that fails is not stored; its ``MediaError`` (a property of
the bytes and options) goes to the waiters too, and after any other failure (the first request
was cancelled) the waiters try again, one of them decoding.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import dataclasses
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dynamo_media._errors import MediaError
from dynamo_media._media import DecodedMedia, EncodedMedia, hash_with, serialise_options
from dynamo_media._options import Options, format_bytes
from dynamo_media._spill import SpillDir

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_DIR_BYTES",
    "CachedMedia",
    "MediaCache",
    "cache_key",
]

DEFAULT_CACHE_BYTES = 512 << 20
DEFAULT_CACHE_DIR_BYTES = 4 << 30


def cache_key(modality: str, media: EncodedMedia, options: Options, *, device: str) -> str:
    """The cache key of an item: its fetched bytes and everything that decodes them
    (Note [cache key]).

    Args:
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        media: the fetched bytes (their ``content_hash`` goes into the key).
        options: the item's options, the request's ``media_io_kwargs`` applied, with limits.
        device: where the decoded tensor ends up.
    """
    # Equal to ``options_hash(media.content_hash, what)``, the serialised ``what`` kept per
    # options object: by identity, since equal options may serialise apart (``2`` vs. ``2.0``).
    memo = (id(options), modality, device)
    known = _serialised.get(memo)
    if known is None or known[0]() is not options:
        what = {"modality": modality, "device": device, "options": options.to_dict()}
        blob = serialise_options(what)
        known = (weakref.ref(options, lambda _: _serialised.pop(memo, None)), blob)
        _serialised[memo] = known
    return hash_with(media.content_hash, known[1])


# (id(options), modality, device) -> (the live options object, its serialised ``what``)
_serialised: dict[tuple[int, str, str], tuple[weakref.ref[Options], bytes]] = {}


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _own_copy(value: Any) -> Any:
    """``copy.deepcopy`` for decoder metadata (dicts and lists of plain values) at a sixth of
    its cost, on the hit path; anything else is deep-copied."""
    kind = type(value)
    if kind is dict or kind is list:
        out = value.copy()
        for k, v in out.items() if kind is dict else enumerate(out):
            if type(v) not in _ATOMIC:
                out[k] = _own_copy(v)
        return out
    return value if kind in _ATOMIC else copy.deepcopy(value)


def _nbytes(media: DecodedMedia) -> int:
    # The storage, not the view: what keeping the entry keeps alive.
    return media.tensor.untyped_storage().nbytes()


@dataclasses.dataclass(eq=False)
class _Entry:
    media: DecodedMedia
    nbytes: int
    decode_seconds: float
    refs: int = 0
    stored: bool = False


class CachedMedia:
    """A request's hold on a cached (or just decoded) item.

    Attributes:
        media: the decoded media; the tensor is shared with the other holders and must not be
            written, the metadata is this hold's own copy.
        hit: whether this request found it decoded (or waited for another request's decode)
            rather than decoding it.
    """

    def __init__(self, cache: MediaCache, entry: _Entry, *, hit: bool) -> None:
        self._cache = cache
        self._entry: _Entry | None = entry if entry.stored else None
        media = entry.media
        self.media = dataclasses.replace(media, metadata=_own_copy(media.metadata))
        self.hit = hit

    def release(self) -> None:
        """Ends the hold, so that the entry may be evicted; a second call does nothing."""
        entry, self._entry = self._entry, None
        if entry is not None:
            self._cache._unhold(entry)

    def __repr__(self) -> str:
        state = "held" if self._entry is not None else "not held"
        return f"CachedMedia({self.media!r}, hit={self.hit}, {state})"


class MediaCache:
    """Decoded media shared between requests, bounded by bytes (Notes [cache key],
    [cache sharing], [memory tiers]).

    Args:
        capacity_bytes: the most bytes of decoded tensors kept in memory. Default: 512 MiB.
        cache_dir: where entries that leave memory are written, in a fresh private directory
            per run (Note [spill files]). Default: ``None`` (they are dropped).
        cache_dir_bytes: the most bytes of those files. Default: 4 GiB.

    Raises:
        ValueError: ``capacity_bytes`` or ``cache_dir_bytes`` is not a positive integer (a
            server with ``cache_bytes`` 0 makes no cache).
        OSError: ``cache_dir`` cannot be made or written.
    """

    def __init__(
        self,
        capacity_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        cache_dir: str | Path | None = None,
        cache_dir_bytes: int = DEFAULT_CACHE_DIR_BYTES,
    ) -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
            raise TypeError(f"capacity_bytes must be an int, got {type(capacity_bytes).__name__}")
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        # The decodes under way; the future's result is the entry, or None for "try again".
        self._flights: dict[str, concurrent.futures.Future[_Entry | None]] = {}
        self._bytes = 0
        self._held_bytes = 0  # of the stored entries someone holds: they stay
        self._hits = self._misses = self._evictions = 0
        self._spills = self._restores = self._lost = 0
        self._closed = False
        self._disk = None if cache_dir is None else SpillDir(cache_dir, cache_dir_bytes)
        # One thread writes and reads the files (Note [memory tiers]).
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dynamo-media-spill")

    async def get(self, key: str, decode: Callable[[], Awaitable[DecodedMedia]]) -> CachedMedia:
        """The item under ``key``, held for the caller: cached, decoded by a concurrent caller,
        or decoded now with ``decode`` and stored if it fits.

        Args:
            key: ``cache_key(...)`` of the item.
            decode: decodes the item; called only when nobody has it or is decoding it.

        Returns:
            The hold; ``release()`` it when the request ends.

        Raises:
            MediaError: the decode failed, here or in the concurrent caller that ran it.
        """
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self._hits += 1
                    return self._hold(entry, hit=True)
                flight = self._flights.get(key)
                if flight is None:
                    flight = concurrent.futures.Future()
                    # Running: a waiter that is cancelled cannot cancel the others' future.
                    flight.set_running_or_notify_cancel()
                    self._flights[key] = flight
                    break
            decoded = await asyncio.wrap_future(flight)
            if decoded is not None:
                with self._lock:
                    self._hits += 1
                    return self._hold(decoded, hit=True)
        return await self._fill(key, flight, decode)

    async def _restore_or_decode(
        self, key: str, decode: Callable[[], Awaitable[DecodedMedia]]
    ) -> tuple[DecodedMedia, float, bool]:
        """The entry read back from its file, else decoded; what decoding it took; and whether
        it was read back."""
        disk = self._disk
        restored = None
        if disk is not None and key in disk:
            loop = asyncio.get_running_loop()
            restored = await loop.run_in_executor(self._io, disk.take, key)
            with self._lock:
                self._restores += restored is not None
                self._lost += restored is None
        with self._lock:
            self._hits += restored is not None
            self._misses += restored is None
        if restored is not None:
            return (*restored, True)
        start = time.perf_counter()
        media = await decode()
        return media, time.perf_counter() - start, False

    async def _fill(
        self,
        key: str,
        flight: concurrent.futures.Future[_Entry | None],
        decode: Callable[[], Awaitable[DecodedMedia]],
    ) -> CachedMedia:
        try:
            media, decode_seconds, hit = await self._restore_or_decode(key, decode)
        except BaseException as exc:
            with self._lock:
                del self._flights[key]
            if isinstance(exc, MediaError):
                flight.set_exception(exc)
            else:
                flight.set_result(None)
            raise
        entry = _Entry(media, _nbytes(media), decode_seconds)
        with self._lock:
            del self._flights[key]
            self._store(key, entry)
            held = self._hold(entry, hit=hit)
        flight.set_result(entry)
        return held

    def _store(self, key: str, entry: _Entry) -> None:
        """Stores the entry if the unheld entries can make room, evicting the oldest first
        (to a file, when the cache has a directory: Note [memory tiers])."""
        over = self._bytes + entry.nbytes - self.capacity_bytes
        if over > 0:  # only then walk the entries, oldest first, until the unheld make room
            if self._held_bytes + entry.nbytes > self.capacity_bytes:
                return
            victims = []
            for old_key, old in self._entries.items():
                if over <= 0:
                    break
                if old.refs == 0:
                    victims.append((old_key, old))
                    over -= old.nbytes
            disk = None if self._closed else self._disk
            for old_key, old in victims:
                self._evict(old_key, old)
                self._evictions += 1
                if disk is not None and disk.worth(old.media, decode_seconds=old.decode_seconds):
                    self._io.submit(self._spill, disk, old_key, old)  # the others are freed now
        entry.stored = True
        self._entries[key] = entry
        self._bytes += entry.nbytes

    def _spill(self, disk: SpillDir, key: str, entry: _Entry) -> None:
        if disk.put(key, entry.media, decode_seconds=entry.decode_seconds):
            with self._lock:
                self._spills += 1

    def _evict(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        entry.stored = False
        self._bytes -= entry.nbytes

    def _hold(self, entry: _Entry, *, hit: bool) -> CachedMedia:
        if entry.stored:  # held entries are stored ones: only unheld entries are evicted
            self._held_bytes += entry.nbytes if entry.refs == 0 else 0
            entry.refs += 1
        return CachedMedia(self, entry, hit=hit)

    def _unhold(self, entry: _Entry) -> None:
        with self._lock:
            entry.refs -= 1
            self._held_bytes -= entry.nbytes if entry.refs == 0 else 0

    def clear(self) -> None:
        """Drops every entry nobody holds (held ones stay until released, then age out)."""
        with self._lock:
            for key, entry in list(self._entries.items()):
                if entry.refs == 0:
                    self._evict(key, entry)

    def close(self) -> None:
        """Drops every unheld entry, waits for the file writes under way (queued ones are not
        started: their files would be deleted next), and deletes the cache's directory
        (Note [spill files]); the cache keeps nothing in files after this."""
        with self._lock:
            self._closed = True
        self._io.shutdown(wait=True, cancel_futures=True)
        self.clear()
        if self._disk is not None:
            self._disk.close()

    def stats(self) -> dict[str, Any]:
        """Capacity, bytes and entries kept in memory, entries held; hits, misses and
        evictions so far; and the file tier's bytes and entries now, spills, restores and lost
        spills (a file gone or changed) so far (zeros without a ``cache_dir``).

        A hit is a request served without decoding (a concurrent caller's decode and a file
        read back included); a miss is a decode the cache ran.
        """
        disk = self._disk.stats() if self._disk is not None else {"bytes": 0, "entries": 0}
        with self._lock:
            return {
                "capacity_bytes": self.capacity_bytes,
                "bytes": self._bytes,
                "entries": len(self._entries),
                "held": sum(e.refs > 0 for e in self._entries.values()),
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
                "disk_bytes": disk["bytes"],
                "disk_entries": disk["entries"],
                "spills": self._spills,
                "restores": self._restores,
                "lost_spills": self._lost,
            }

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"MediaCache(capacity={format_bytes(s['capacity_bytes'])!r}, "
            f"bytes={format_bytes(s['bytes'])!r}, entries={s['entries']}, held={s['held']})"
        )
