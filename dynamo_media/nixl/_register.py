"""``register_media``: a decoded tensor into a pool region (or registered in place, zero-copy),
and the descriptor that names it."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy
import torch

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


_NUMPY_DTYPES = {
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.float32, torch.float64,
}  # fmt: skip


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)``; in host memory with numpy, on the calling thread.

    # Note [copies off torch's thread pool]
    torch runs a copy of more than 32K elements on its intra-op OpenMP threads, which sleep
    between uses; waking them cost more than the copy. Measured on 2 cores, a 640x480 RGB copy
    every 2 ms: 9.8 ms median with torch's 2 threads, 0.033 ms with one; in the server, 0.13 ms
    most of the time and 1.4-6.4 ms one time in five. numpy copies on the calling thread (with
    the GIL released), and a transposing CHW copy at 1080p took 1.7 ms against torch's 3.4-5.1.
    """
    host = dst.device.type == "cpu" and src.device.type == "cpu"
    if host and src.dtype in _NUMPY_DTYPES and not src.requires_grad:
        numpy.copyto(dst.numpy(), src.numpy())
    else:
        dst.copy_(src)


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
            _copy(region.data.view(tensor.dtype).view(tensor.shape), tensor)
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
