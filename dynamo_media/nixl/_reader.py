"""The backend's side: ``read(descriptor)`` pulls a tensor over NIXL and tells the frontend."""

from __future__ import annotations

from typing import Any

import torch

from dynamo_media._errors import ReadError
from dynamo_media.nixl._agent import NixlAgent, NixlTransferError, get_agent
from dynamo_media.nixl._descriptor import MEM_TYPES, check_descriptor, dtype_from_name
from dynamo_media.nixl._pool import READ_NOTIFICATION, guard_word

__all__ = ["read"]


def read(
    descriptor: dict[str, Any], *, device: str = "cpu", agent: NixlAgent | None = None
) -> torch.Tensor:
    """Reads the tensor a descriptor names from the frontend's memory.

    Remote agents are added once per distinct metadata and cached. The READ carries the
    notification ``dm-read:<lease id>``, on which the frontend frees the region early. With a
    ``lease`` in the descriptor, the guard words around the data are read too and checked
    (Note [lease guards] in ``_pool.py``).

    Args:
        descriptor: the JSON object the frontend sent.
        device: where the tensor lands (``"cuda"`` reads into VRAM). Default: ``"cpu"``.
        agent: the reading agent. Default: the process-wide agent.

    Returns:
        A new tensor of the descriptor's shape and dtype.

    Raises:
        ValueError: a malformed descriptor.
        ReadError: the transfer failed, or the region was released (stale descriptor).
    """
    check_descriptor(descriptor)
    agent = agent or get_agent()
    nd = descriptor["nixl_descriptor"]
    addr, size = int(nd["addr"]), int(nd["size"])
    lease = descriptor.get("lease") or {}
    guard = int(lease.get("guard_bytes", 0))
    lease_id = lease.get("id")
    dtype = dtype_from_name(descriptor["dtype"])
    shape = [int(s) for s in descriptor["shape"]]
    expected = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
    if expected != size:
        raise ValueError(f"descriptor shape {shape} of {descriptor['dtype']} is not {size} bytes")
    buffer = torch.empty(size + 2 * guard, dtype=torch.uint8, device=device)
    handle = agent.register(buffer)
    notification = READ_NOTIFICATION + str(lease_id).encode() if lease_id is not None else b""
    try:
        remote = (addr - guard, size + 2 * guard, int(nd["device_id"]))
        agent.read(
            buffer, descriptor["nixl_metadata"], remote, MEM_TYPES[nd["mem_type"]], notification
        )
    except (NixlTransferError, RuntimeError) as exc:
        raise ReadError(f"NIXL read of {size} bytes failed: {exc}") from exc
    finally:
        agent.deregister(handle)
    if guard and lease_id is not None:
        want = guard_word(int(lease_id)).to(buffer.device)
        if not (torch.equal(buffer[:guard], want) and torch.equal(buffer[guard + size :], want)):
            raise ReadError(
                f"the region of lease {lease_id} was released before it was read; "
                "the frontend no longer holds this item"
            )
    return buffer[guard : guard + size].view(dtype).view(shape)
