"""``register_media``: a decoded tensor into a pool region, and the descriptor that names it."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from dynamo_media._media import DecodedMedia
from dynamo_media.nixl._descriptor import dtype_name, modality_key
from dynamo_media.nixl._pool import GUARD_BYTES, Region, RegistrationPool

__all__ = ["RegisteredMedia", "default_pool", "register_media"]


@dataclasses.dataclass(eq=False)
class RegisteredMedia:
    """Decoded media whose bytes sit in NIXL-registered memory, ready for a backend to read.

    Attributes:
        media: the decoded media (its tensor is the caller's, not the region).
        region: the pool region holding a contiguous copy.
        descriptor: the wire format (see ``_descriptor.py``), JSON-ready.
    """

    media: DecodedMedia
    region: Region
    descriptor: dict[str, Any]

    def release(self) -> None:
        """Returns the region to the pool; safe to call more than once."""
        self.region.release()

    @property
    def released(self) -> bool:
        return self.region.released

    def __repr__(self) -> str:
        d = self.descriptor
        return (
            f"RegisteredMedia({self.media.modality}, shape={d['shape']}, dtype={d['dtype']}, "
            f"lease_id={self.region.lease_id}, nbytes={self.region.nbytes}, "
            f"{'released' if self.released else 'lent'})"
        )


@functools.cache
def default_pool() -> RegistrationPool:
    """The process-wide DRAM pool on the process-wide agent, made on first use."""
    return RegistrationPool()


def register_media(
    media: DecodedMedia, pool: RegistrationPool | None = None, *, wait_ms: int | None = None
) -> RegisteredMedia:
    """Copies a decoded tensor into a pool region and describes it for a backend.

    Args:
        media: the decoded media.
        pool: where to put it. Default: ``default_pool()``.
        wait_ms: how long to wait for room. Default: the pool's.

    Returns:
        The registered media; ``release()`` it when the request ends.

    Raises:
        Overloaded: the pool stayed full for ``wait_ms``.
        LimitExceeded: the item is larger than the pool.
    """
    pool = pool or default_pool()
    tensor = media.tensor
    nbytes = tensor.numel() * tensor.element_size()
    region = pool.lend(nbytes, wait_ms=wait_ms)
    try:
        # One copy: into registered memory, and contiguous in the declared layout.
        region.data.view(tensor.dtype).view(tensor.shape).copy_(tensor)
        descriptor = {
            "nixl_metadata": pool.agent.metadata(),
            "nixl_descriptor": {
                "addr": region.addr,
                "size": nbytes,
                "mem_type": pool.mem_type,
                "device_id": pool.device_id,
            },
            "shape": list(tensor.shape),
            "dtype": dtype_name(tensor.dtype),
            "metadata": {modality_key(media.modality): media.metadata},
            "content_hash": media.content_hash,
            "lease": {"id": region.lease_id, "guard_bytes": GUARD_BYTES},
        }
    except BaseException:
        region.release()
        raise
    return RegisteredMedia(media, region, descriptor)
