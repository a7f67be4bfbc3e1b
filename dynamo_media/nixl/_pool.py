"""The registration pool: a slab registered with NIXL once, lent out region by region; and
zero-copy leases of large contiguous tensors registered where they are, under the same budget.

A small item costs no registration call: its decoded tensor is copied into a region (one copy,
which also makes a ``CHW`` view contiguous, see Note [layout views] in decode/_image.py) and the
region's address goes on the wire. A large contiguous one is registered in place (Note [zero-copy
threshold]). Both count against one byte budget, ``capacity_bytes``: when it is spent a caller
waits up to ``wait_ms`` and then gets ``Overloaded`` (503), never unbounded growth.

# Note [lease guards]
NIXL reads are one-sided: the frontend does not see them, so a backend holding a stale
descriptor could read a region that was released and lent again, and get another item's bytes.
Each region is therefore framed by two 16-byte guard words, ``(magic, lease id)``, written when it
is lent and wiped when it is released. The reader reads the guards with the data (one transfer)
and refuses the data unless both match the lease id in its descriptor.

# Note [stale reads]
NIXL does not refuse a read of memory that was deregistered: a reader that cached the frontend's
metadata reads whatever lives at the address now (measured with UCX between two processes: the
stale descriptor returned the new bytes). Nor does one transfer promise the order in which it
reads the guards and the data. So every lease also has a *lease word* in the slab (a region's
first guard; for a zero-copy lease a 16-byte slot of its own), named by ``lease.word_addr`` in the
descriptor, and the reader reads it in a second transfer, after the data has arrived. Release
wipes the word before the memory can be lent again, deregistered or freed, and lease ids are never
reused; so a word that still holds the lease id after the data was read proves the data was the
item's for the whole read. Otherwise the reader raises ``ReadError``.

# Note [zero-copy threshold]
Copying into the pool costs a memcpy that grows with the item; registering in place costs a
``register_memory`` call and fresh agent metadata (a registration changes it) on the frontend, and
loading that metadata on the backend (merged over the known agent, no reconnection), whatever the
size. Measured with ``benchmarks/nixl.py`` (2-core AMD EPYC shared with other jobs, DRAM over UCX,
nothing pinned; medians of 9), pool copy vs zero-copy, in ms:

    size      frontend: register+release   hand-off: register, peer reads, release
    64 KiB    0.059 vs 0.071               2.09 vs 2.07
    256 KiB   0.063 vs 0.062               0.75 vs 1.45
    1 MiB     0.072 vs 0.065               0.85 vs 1.27
    4 MiB     0.117 vs 0.067               2.05 vs 1.48
    25 MB     1.13  vs 0.118               6.46 vs 4.80
    250 MB    15.8  vs 0.223               182  vs 163

Up to 1 MiB the frontend costs are equal and the hand-off is cheaper with the pool (the backend
caches its metadata); from 4 MiB zero-copy is as cheap or cheaper in both, and the copy grows
linearly. Three more runs on the busy machine put the pool's copy of small items at 2-4 ms
(unexplained; a wait, not a copy), and from 4 MiB up zero-copy was never slower on the frontend
and at most 2% slower for the hand-off (benchmarks/results/nixl.md keeps the last run). Tensors
of at least ``DEFAULT_ZERO_COPY_MIN_BYTES`` = 4 MiB are therefore registered in place: a 1080p
RGB frame (6.2 MB) is, a 720p one (2.8 MB) is copied. On RDMA NICs a registration pins memory
and costs more; measure there before lowering it.

# Note [small torch ops]
A torch op gives up the GIL around its kernel and must take it back; on a thread that shares the
GIL with busy ones (the event loop beside decode, fetch and listener threads) taking it back can
wait for the holder's switch interval (5 ms). Two 16-byte ``copy_`` calls writing a lease's words
cost the event loop ~0.7 ms a request under 16 concurrent 1080p requests (py-spy), the time of
decoding a third of the image. So words in host memory are written through a ``memoryview`` of
the slab, which keeps the GIL, and addresses are computed from the slab's, not from views.

# Note [early free]
Once a backend has read a lease (the lease word after the data: Note [stale reads]), it sends
the notification ``dm-read:<lease id>``, on a read of the word that it does not wait for (Note
[notifications] in ``_agent.py``). A listener thread polls the agent's notifications and
releases those leases at once, so a lease returns to the pool as soon as the backend has its
bytes, not only when the whole request ends. Lease ids are unique in the process, not only in a
pool: two pools on one agent (tests, benchmarks) share its notifications, and a pool ignores ids
it did not lend (that lease then frees when released).

A request that may still go to another backend (a worker that read its items and died before
answering: Note [failover] in server/_dynamo_backend.py) must keep them: while a lease's early
free is deferred (``Region.defer_early_free``), a notification only marks it read, and
``Region.allow_early_free`` frees it then, once the answer has started. Found by the load test:
a failed-over request read a lease the dead worker's notification had freed (a 502). That free
happens on the listener thread, at its next tick: the event loop calls ``allow_early_free``, and
releasing a zero-copy lease deregisters it, a NIXL call that waits on the agent (py-spy: 5.6% of
the loop's busy time under load).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import struct
import threading
import time
from typing import Any

import torch

from dynamo_media._errors import LimitExceeded, Overloaded
from dynamo_media._options import format_bytes
from dynamo_media.nixl._agent import NixlAgent, get_agent

__all__ = [
    "GUARD_BYTES",
    "READ_NOTIFICATION",
    "Region",
    "RegistrationPool",
    "guard_word",
]

GUARD_BYTES = 16
READ_NOTIFICATION = b"dm-read:"
_MAGIC = 0x444D4C45415345  # "DMLEASE"
_ALIGN = 256
DEFAULT_CAPACITY = 2 << 30
DEFAULT_WAIT_MS = 2000
DEFAULT_ZERO_COPY_MIN_BYTES = 4 << 20  # Note [zero-copy threshold]
_LEASE_IDS = itertools.count(1)  # process-wide: Note [early free]

log = logging.getLogger("dynamo_media.nixl")


def guard_word(lease_id: int) -> bytes:
    """The 16 guard bytes of a lease: ``(magic, lease id)``, little-endian."""
    return struct.pack("<QQ", _MAGIC, lease_id)


def _round_up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _budget(span: int, nbytes: int, *, zero_copy: bool) -> int:
    """What a lease counts against the pool's capacity: its slab span (words and guards), and
    for a zero-copy lease the tensor it keeps registered too."""
    return span + nbytes if zero_copy else span


class Region:
    """A lease: a span of the slab, ``[guard][data][guard]``, or for a zero-copy lease the
    caller's own memory, registered in place, with a lease word in a slab span of its own.

    Attributes:
        lease_id: unique per lending, never reused; goes into the descriptor and the words.
        offset: where the span starts in the slab; its first 16 bytes are the lease word.
        nbytes: the data's size.
        data: a ``uint8`` view of the data bytes (the slab's, or the caller's tensor).
        zero_copy: whether ``data`` is the caller's memory registered in place.
    """

    def __init__(
        self,
        pool: RegistrationPool,
        lease_id: int,
        offset: int,
        span: int,
        nbytes: int,
        data: torch.Tensor | None = None,
    ):
        self.pool = pool
        self.lease_id = lease_id
        self.offset = offset
        self.span = span
        self.nbytes = nbytes
        self.zero_copy = data is not None
        if data is None:
            data = pool.slab[offset + GUARD_BYTES : offset + GUARD_BYTES + nbytes]
        self.data = data
        self.handle: Any = None  # the in-place registration of a zero-copy lease
        self.released = False
        self.early_free = True  # a backend's notification releases it (Note [early free])
        self.read = False  # a notification came while early free was deferred

    @property
    def addr(self) -> int:
        """The data's address (for a pool region the guards sit just before and after)."""
        return int(self.data.data_ptr())

    @property
    def word_addr(self) -> int:
        """The lease word's address (Note [stale reads])."""
        return self.pool.slab_addr + self.offset

    @property
    def budget_bytes(self) -> int:
        """What the lease counts against the pool's capacity."""
        return _budget(self.span, self.nbytes, zero_copy=self.zero_copy)

    def release(self) -> None:
        """Returns the lease to the pool; a second call does nothing."""
        self.pool.release(self)

    def defer_early_free(self) -> None:
        """Keeps the lease when a backend says it read it, until ``allow_early_free``."""
        with self.pool._cond:
            self.early_free = False

    def allow_early_free(self) -> None:
        """Frees the lease on a backend's notification again, and if one came meanwhile, at the
        listener's next tick (Note [early free])."""
        with self.pool._cond:
            self.early_free, read = True, self.read
            if read:
                self.pool._releasing.append(self)

    def __repr__(self) -> str:
        state = "released" if self.released else "lent"
        kind = ", zero_copy=True" if self.zero_copy else ""
        return f"Region(lease_id={self.lease_id}, nbytes={self.nbytes}{kind}, {state})"


class RegistrationPool:
    """Pre-registered memory for decoded tensors, handed out in regions, and zero-copy leases
    of large contiguous tensors, all under one byte budget.

    Args:
        agent: the NIXL agent that registers the slab. Default: the process-wide agent.
        capacity_bytes: the byte budget, and the slab's size (virtual until used).
            Default: 2 GiB.
        device: ``"cpu"`` (pinned host memory where CUDA exists) or ``"cuda"`` (VRAM).
            Default: ``"cpu"``.
        wait_ms: how long ``lend`` waits for room before ``Overloaded``. Default: 2000.
        zero_copy_min_bytes: contiguous tensors on the pool's device of at least this size are
            registered in place (``register_media``); ``None`` never does. Default: 4 MiB
            (Note [zero-copy threshold]).
    """

    def __init__(
        self,
        agent: NixlAgent | None = None,
        *,
        capacity_bytes: int = DEFAULT_CAPACITY,
        device: str = "cpu",
        wait_ms: int = DEFAULT_WAIT_MS,
        zero_copy_min_bytes: int | None = DEFAULT_ZERO_COPY_MIN_BYTES,
    ) -> None:
        self.agent = agent or get_agent()
        self.device = torch.device(device)
        pin = self.device.type == "cpu" and torch.cuda.is_available()
        self.slab = torch.empty(
            capacity_bytes, dtype=torch.uint8, device=self.device, pin_memory=pin
        )
        self.capacity = capacity_bytes
        self.wait_ms = wait_ms
        self.zero_copy_min_bytes = zero_copy_min_bytes
        self._handle = self.agent.register(self.slab)
        self._free: list[tuple[int, int]] = [(0, capacity_bytes)]  # sorted (offset, size)
        self._lent: dict[int, Region] = {}
        self._releasing: list[Region] = []  # for the listener (Region.allow_early_free)
        self._used = 0  # the budget spent: every lease's budget_bytes
        self.slab_addr = int(self.slab.data_ptr())
        # Host memory's words are written with plain stores (Note [small torch ops]).
        self._host = self.slab.numpy().data if self.device.type == "cpu" else None
        self._cond = threading.Condition()
        self._listener: threading.Thread | None = None
        self._closed = False
        self.start_listener()

    @property
    def mem_type(self) -> str:
        """``"Dram"`` or ``"Vram"``, as the descriptor names it."""
        return "Vram" if self.device.type == "cuda" else "Dram"

    @property
    def device_id(self) -> int:
        return self.device.index or 0 if self.device.type == "cuda" else 0

    @property
    def lent_bytes(self) -> int:
        """Budget spent now: regions with guards and alignment, zero-copy tensors and words."""
        with self._cond:
            return self._used

    @property
    def lent_regions(self) -> int:
        """Leases held now, regions and zero-copy."""
        with self._cond:
            return len(self._lent)

    def zero_copy(self, tensor: torch.Tensor) -> bool:
        """Whether ``register_media`` registers ``tensor`` in place rather than copying it: it is
        contiguous, on the pool's device, and at least ``zero_copy_min_bytes``."""
        return (
            self.zero_copy_min_bytes is not None
            and tensor.is_contiguous()
            and tensor.device == self.slab.device
            and tensor.numel() * tensor.element_size() >= max(1, self.zero_copy_min_bytes)
        )

    def _take(self, span: int) -> int | None:
        for i, (offset, size) in enumerate(self._free):
            if size >= span:
                if size == span:
                    del self._free[i]
                else:
                    self._free[i] = (offset + span, size - span)
                return offset
        return None

    def _reserve(
        self, span: int, nbytes: int, data: torch.Tensor | None, wait_ms: int | None
    ) -> Region:
        """Waits for a slab span and room in the budget, and records the lease."""
        budget = _budget(span, nbytes, zero_copy=data is not None)
        if budget > self.capacity:
            raise LimitExceeded(
                f"an item of {format_bytes(nbytes)} is larger than the NIXL registration pool "
                f"({format_bytes(self.capacity)}); raise the pool's capacity or the item's limits",
                limit="pool_capacity_bytes",
            )
        deadline = time.monotonic() + (self.wait_ms if wait_ms is None else wait_ms) / 1000
        with self._cond:
            while self._used + budget > self.capacity or (offset := self._take(span)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise Overloaded(
                        f"the NIXL registration pool is full ({format_bytes(self._used)} of "
                        f"{format_bytes(self.capacity)} lent in {len(self._lent)} leases); "
                        "retry later"
                    )
                self._cond.wait(left)
            region = Region(self, next(_LEASE_IDS), offset, span, nbytes, data)
            self._lent[region.lease_id] = region
            self._used += budget
        return region

    def _write_words(self, region: Region, word: bytes) -> None:
        starts = [region.offset]
        if not region.zero_copy:
            starts.append(region.offset + GUARD_BYTES + region.nbytes)
        if self._host is not None:
            for start in starts:
                self._host[start : start + GUARD_BYTES] = word
            return
        device_word = torch.frombuffer(bytearray(word), dtype=torch.uint8).to(self.device)
        for start in starts:
            self.slab[start : start + GUARD_BYTES].copy_(device_word)

    def lend(self, nbytes: int, *, wait_ms: int | None = None) -> Region:
        """Lends a region of ``nbytes`` data bytes, waiting for room if the pool is full.

        Raises:
            LimitExceeded: the item is larger than the whole pool.
            Overloaded: no room within ``wait_ms``.
        """
        region = self._reserve(_round_up(nbytes + 2 * GUARD_BYTES), nbytes, None, wait_ms)
        self._write_words(region, guard_word(region.lease_id))
        return region

    def lend_in_place(self, tensor: torch.Tensor, *, wait_ms: int | None = None) -> Region:
        """Registers a contiguous tensor where it is and lends it as a zero-copy lease; its bytes
        count against the budget until ``release``, which wipes the lease word and deregisters.

        Raises:
            ValueError: the tensor is not contiguous or not on the pool's device.
            LimitExceeded: the tensor is larger than the whole pool.
            Overloaded: no room in the budget within ``wait_ms``.
        """
        if not tensor.is_contiguous() or tensor.device != self.slab.device:
            raise ValueError(
                f"a zero-copy lease needs a contiguous tensor on {self.slab.device}; got one on "
                f"{tensor.device}, contiguous={tensor.is_contiguous()}"
            )
        data = tensor.reshape(-1).view(torch.uint8)
        region = self._reserve(_ALIGN, data.numel(), data, wait_ms)
        try:
            region.handle = self.agent.register(data)
        except BaseException:
            region.release()
            raise
        self._write_words(region, guard_word(region.lease_id))
        return region

    def release(self, region: Region) -> None:
        """Wipes the lease's words, deregisters a zero-copy tensor and gives the budget back
        (idempotent). The words go first: Note [stale reads]."""
        with self._cond:
            if region.released or self._lent.get(region.lease_id) is not region:
                return
            region.released = True
            self._write_words(region, bytes(GUARD_BYTES))
        try:
            if region.handle is not None:
                self.agent.deregister(region.handle)
                region.handle = None
        finally:
            with self._cond:
                del self._lent[region.lease_id]
                self._used -= region.budget_bytes
                self._give_back(region.offset, region.span)
                self._cond.notify_all()

    def release_lease(self, lease_id: int) -> bool:
        """Releases a region by lease id (a backend's notification); whether it was lent."""
        with self._cond:
            region = self._lent.get(lease_id)
            if region is not None and not region.early_free:
                region.read = True  # Note [early free]: freed when allowed again
                return False
        if region is None:
            return False
        region.release()
        return True

    def _give_back(self, offset: int, size: int) -> None:
        i = bisect.bisect(self._free, (offset, size))
        self._free.insert(i, (offset, size))
        # Coalesce with the neighbours.
        if i + 1 < len(self._free) and offset + size == self._free[i + 1][0]:
            size += self._free.pop(i + 1)[1]
            self._free[i] = (offset, size)
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == offset:
            prev_offset, prev_size = self._free.pop(i - 1)
            self._free[i - 1] = (prev_offset, prev_size + size)

    def poll_notifications(self) -> int:
        """Releases the leases that backends said they read (Note [early free])."""
        released = 0
        for message in self.agent.notifications():
            if message.startswith(READ_NOTIFICATION):
                tail = message[len(READ_NOTIFICATION) :]
                if tail.isdigit():
                    released += self.release_lease(int(tail))
        return released

    def _release_waiting(self) -> None:
        with self._cond:
            releasing, self._releasing = self._releasing, []
        for region in releasing:
            try:
                region.release()  # its budget is back even when NIXL's deregister fails
            except Exception:
                log.exception("releasing lease %d failed", region.lease_id)

    def start_listener(self, interval_s: float = 0.002) -> None:
        """Starts the thread that progresses the agent (Note [nixl progress] in ``_agent.py``)
        and frees regions on backends' notifications; the pool starts it itself."""
        if self._listener is not None:
            return

        def listen() -> None:
            while not self._closed:
                try:
                    self.poll_notifications()
                    self._release_waiting()
                except Exception:  # the thread must go on: it alone progresses the agent
                    log.exception("the NIXL listener's tick failed")
                time.sleep(interval_s)

        self._listener = threading.Thread(target=listen, name="dynamo-media-nixl", daemon=True)
        self._listener.start()

    def close(self) -> None:
        """Stops the listener, releases what is still lent and deregisters the slab."""
        self._closed = True
        if self._listener is not None:
            self._listener.join()
        with self._cond:
            self._cond.notify_all()
            lent = list(self._lent.values())
        for region in lent:
            region.release()
        self.agent.deregister(self._handle)

    def stats(self) -> dict[str, Any]:
        """Capacity, budget spent, leases held and how many of them are zero-copy."""
        with self._cond:
            zero_copy = sum(r.zero_copy for r in self._lent.values())
            return {
                "capacity_bytes": self.capacity,
                "lent_bytes": self._used,
                "lent": len(self._lent),
                "zero_copy": zero_copy,
            }
