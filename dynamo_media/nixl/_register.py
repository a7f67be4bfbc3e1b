"""``register_media``: a decoded tensor into a pool region (or registered in place, zero-copy),
and the descriptor that names it."""

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
        media: the decoded media.
        region: the lease: a pool region holding a contiguous copy, or, when
            ``region.zero_copy``, the media's own tensor registered in place.
        descriptor: the wire format (see ``_descriptor.py``), JSON-ready.
    """

    media: DecodedMedia
    region: Region
    descriptor: dict[str, Any]

    def release(self) -> None:
        """Ends the lease (a zero-copy tensor is deregistered); safe to call more than once."""
        self.region.release()

    @property
    def released(self) -> bool:
        return self.region.released

    def __repr__(self) -> str:
        d = self.descriptor
        return (
            f"RegisteredMedia({self.media.modality}, shape={d['shape']}, dtype={d['dtype']}, "
            f"lease_id={self.region.lease_id}, nbytes={self.region.nbytes}, "
            f"{'zero-copy, ' if self.region.zero_copy else ''}"
            f"{'released' if self.released else 'lent'})"
        )


@functools.cache
def default_pool() -> RegistrationPool:
    """The process-wide DRAM pool on the process-wide agent, made on first use."""
    return RegistrationPool()


def register_media(
    media: DecodedMedia, pool: RegistrationPool | None = None, *, wait_ms: int | None = None
) -> RegisteredMedia:
    """Puts a decoded tensor where a backend can read it, and describes it.

    A contiguous tensor on the pool's device of at least ``pool.zero_copy_min_bytes`` is
    registered in place (Note [zero-copy threshold]); anything else is copied into a pool region.
    Both count against the pool's byte budget.

    Args:
        media: the decoded media.
        pool: where to put it. Default: ``default_pool()``.
        wait_ms: how long to wait for room. Default: the pool's.

    Returns:
        The registered media; ``release()`` it when the request ends.

    Raises:
        Overloaded: the pool's budget stayed spent for ``wait_ms``.
        LimitExceeded: the item is larger than the pool.
    """
    pool = pool or default_pool()
    tensor = media.tensor
    nbytes = tensor.numel() * tensor.element_size()
    if pool.zero_copy(tensor):
        region = pool.lend_in_place(tensor, wait_ms=wait_ms)
    else:
        region = pool.lend(nbytes, wait_ms=wait_ms)
    try:
        if not region.zero_copy:
            # One copy: into registered memory, and contiguous in the declared layout.
            region.data.view(tensor.dtype).view(tensor.shape).copy_(tensor)
        lease = {"id": region.lease_id, "guard_bytes": 0 if region.zero_copy else GUARD_BYTES}
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
            "lease": lease | {"word_addr": region.word_addr},
        }
    except BaseException:
        region.release()
        raise
    return RegisteredMedia(media, region, descriptor)
