"""``NixlRegister``: decoded media into NIXL-registered memory, with a descriptor for a backend."""

from __future__ import annotations

from typing import Any

from dynamo_media._media import DecodedMedia
from dynamo_media._options import format_bytes
from dynamo_media.nixl import RegisteredMedia, RegistrationPool, register_media
from dynamo_media.transforms._transform import Transform

__all__ = ["NixlRegister"]


class NixlRegister(Transform):
    """Puts a decoded tensor where a backend can read it over NIXL: registered in place when it
    is large and contiguous, else copied into a pool region. Functional twin: ``register_media``.

    Args:
        pool: the pool (and through it the agent). Default: the process-wide pool.
        wait_ms: how long to wait for room before ``Overloaded``. Default: the pool's.
    """

    stage = "register"

    def __init__(self, pool: RegistrationPool | None = None, *, wait_ms: int | None = None):
        self.pool = pool
        self.wait_ms = wait_ms

    def forward(self, inpt: DecodedMedia) -> RegisteredMedia:
        return register_media(inpt, self.pool, wait_ms=self.wait_ms)

    def repr_options(self) -> dict[str, Any]:
        if self.pool is None:
            return {}
        zero_copy_min = self.pool.zero_copy_min_bytes
        return {
            "capacity": format_bytes(self.pool.capacity),
            "mem_type": self.pool.mem_type,
            "zero_copy_min": None if zero_copy_min is None else format_bytes(zero_copy_min),
        }
