"""The registration pool: large slabs registered with NIXL once, lent out region by region.

A request then costs no registration call: its decoded tensor is copied into a region (one copy,
which also makes a ``CHW`` view contiguous, see Note [layout views] in decode/_image.py) and the
region's address goes on the wire. The pool is bounded: when it is full a caller waits up to
``wait_ms`` and then gets ``Overloaded`` (503), never unbounded growth.

# Note [lease guards]
NIXL reads are one-sided: the frontend does not see them, so a backend holding a stale
descriptor could read a region that was released and lent again, and get another item's bytes.
Each region is therefore framed by two 16-byte guard words, ``(magic, lease id)``, written when it
is lent and wiped when it is released. The reader reads the guards with the data (one transfer)
and refuses the data unless both match the lease id in its descriptor.

# Note [early free]
A backend's READ carries the notification ``dm-read:<lease id>``. A listener thread polls the
agent's notifications and releases those leases at once, so a region returns to the pool as
soon as the backend has its bytes, not only when the whole request ends.
"""

from __future__ import annotations

import bisect
import itertools
import struct
import threading
import time
from typing import Any

import torch

from dynamo_media._errors import LimitExceeded, Overloaded
from dynamo_media._options import format_bytes
from dynamo_media.nixl._agent import NixlAgent, get_agent

__all__ = ["GUARD_BYTES", "READ_NOTIFICATION", "Region", "RegistrationPool", "guard_word"]

GUARD_BYTES = 16
READ_NOTIFICATION = b"dm-read:"
_MAGIC = 0x444D4C45415345  # "DMLEASE"
_ALIGN = 256
DEFAULT_CAPACITY = 2 << 30
DEFAULT_WAIT_MS = 2000


def guard_word(lease_id: int) -> torch.Tensor:
    """The 16 guard bytes of a lease: ``(magic, lease id)``, little-endian."""
    return torch.frombuffer(bytearray(struct.pack("<QQ", _MAGIC, lease_id)), dtype=torch.uint8)


def _round_up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class Region:
    """A lent span of the pool: ``[guard][data][guard]``.

    Attributes:
        lease_id: unique per lending; goes into the descriptor and the guards.
        offset: where the span starts in the slab.
        nbytes: the data's size.
        data: a ``uint8`` view of the data bytes.
    """

    def __init__(self, pool: RegistrationPool, lease_id: int, offset: int, span: int, nbytes: int):
        self.pool = pool
        self.lease_id = lease_id
        self.offset = offset
        self.span = span
        self.nbytes = nbytes
        self.data = pool.slab[offset + GUARD_BYTES : offset + GUARD_BYTES + nbytes]
        self.released = False

    @property
    def addr(self) -> int:
        """The data's address (the guards sit just before and after)."""
        return int(self.data.data_ptr())

    def release(self) -> None:
        """Returns the region to the pool; a second call does nothing."""
        self.pool.release(self)

    def __repr__(self) -> str:
        state = "released" if self.released else "lent"
        return f"Region(lease_id={self.lease_id}, nbytes={self.nbytes}, {state})"


class RegistrationPool:
    """Pre-registered memory for decoded tensors, handed out in regions.

    Args:
        agent: the NIXL agent that registers the slab. Default: the process-wide agent.
        capacity_bytes: the slab's size; virtual until used. Default: 2 GiB.
        device: ``"cpu"`` (pinned host memory where CUDA exists) or ``"cuda"`` (VRAM).
            Default: ``"cpu"``.
        wait_ms: how long ``lend`` waits for room before ``Overloaded``. Default: 2000.
    """

    def __init__(
        self,
        agent: NixlAgent | None = None,
        *,
        capacity_bytes: int = DEFAULT_CAPACITY,
        device: str = "cpu",
        wait_ms: int = DEFAULT_WAIT_MS,
    ) -> None:
        self.agent = agent or get_agent()
        self.device = torch.device(device)
        pin = self.device.type == "cpu" and torch.cuda.is_available()
        self.slab = torch.empty(
            capacity_bytes, dtype=torch.uint8, device=self.device, pin_memory=pin
        )
        self.capacity = capacity_bytes
        self.wait_ms = wait_ms
        self._handle = self.agent.register(self.slab)
        self._free: list[tuple[int, int]] = [(0, capacity_bytes)]  # sorted (offset, size)
        self._lent: dict[int, Region] = {}
        self._ids = itertools.count(1)
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
        """Bytes lent out now (guards and alignment included)."""
        with self._cond:
            return sum(r.span for r in self._lent.values())

    @property
    def lent_regions(self) -> int:
        with self._cond:
            return len(self._lent)

    def _take(self, span: int) -> int | None:
        for i, (offset, size) in enumerate(self._free):
            if size >= span:
                if size == span:
                    del self._free[i]
                else:
                    self._free[i] = (offset + span, size - span)
                return offset
        return None

    def lend(self, nbytes: int, *, wait_ms: int | None = None) -> Region:
        """Lends a region of ``nbytes`` data bytes, waiting for room if the pool is full.

        Raises:
            LimitExceeded: the item is larger than the whole pool.
            Overloaded: no room within ``wait_ms``.
        """
        span = _round_up(nbytes + 2 * GUARD_BYTES)
        if span > self.capacity:
            raise LimitExceeded(
                f"an item of {format_bytes(nbytes)} is larger than the NIXL registration pool "
                f"({format_bytes(self.capacity)}); raise the pool's capacity or the item's limits"
            )
        deadline = time.monotonic() + (self.wait_ms if wait_ms is None else wait_ms) / 1000
        with self._cond:
            while (offset := self._take(span)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise Overloaded(
                        f"the NIXL registration pool is full ({format_bytes(self.capacity)} "
                        f"lent in {len(self._lent)} regions); retry later"
                    )
                self._cond.wait(left)
            region = Region(self, next(self._ids), offset, span, nbytes)
            self._lent[region.lease_id] = region
        word = guard_word(region.lease_id).to(self.device)
        self.slab[offset : offset + GUARD_BYTES].copy_(word)
        end = offset + GUARD_BYTES + nbytes
        self.slab[end : end + GUARD_BYTES].copy_(word)
        return region

    def release(self, region: Region) -> None:
        """Wipes the region's guards and returns it to the pool (idempotent)."""
        with self._cond:
            if region.released or self._lent.get(region.lease_id) is not region:
                return
            region.released = True
            del self._lent[region.lease_id]
            start, end = region.offset, region.offset + GUARD_BYTES + region.nbytes
            self.slab[start : start + GUARD_BYTES].zero_()
            self.slab[end : end + GUARD_BYTES].zero_()
            self._give_back(region.offset, region.span)
            self._cond.notify_all()

    def release_lease(self, lease_id: int) -> bool:
        """Releases a region by lease id (a backend's notification); whether it was lent."""
        with self._cond:
            region = self._lent.get(lease_id)
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

    def start_listener(self, interval_s: float = 0.002) -> None:
        """Starts the thread that progresses the agent (Note [nixl progress] in ``_agent.py``)
        and frees regions on backends' notifications; the pool starts it itself."""
        if self._listener is not None:
            return

        def listen() -> None:
            while not self._closed:
                self.poll_notifications()
                time.sleep(interval_s)

        self._listener = threading.Thread(target=listen, name="dynamo-media-nixl", daemon=True)
        self._listener.start()

    def close(self) -> None:
        """Stops the listener and deregisters the slab."""
        self._closed = True
        if self._listener is not None:
            self._listener.join()
        with self._cond:
            self._cond.notify_all()
        self.agent.deregister(self._handle)

    def stats(self) -> dict[str, Any]:
        """Capacity, bytes and regions lent now."""
        with self._cond:
            lent = sum(r.span for r in self._lent.values())
            return {"capacity_bytes": self.capacity, "lent_bytes": lent, "lent": len(self._lent)}
