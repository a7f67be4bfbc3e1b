"""The backend's side: ``read(descriptor)`` pulls a tensor over NIXL and tells the frontend."""

from __future__ import annotations

from typing import Any

import torch

from dynamo_media._errors import ReadError
from dynamo_media.nixl._agent import NixlAgent, NixlTransferError, get_agent
from dynamo_media.nixl._descriptor import MEM_TYPES, check_descriptor, dtype_from_name
from dynamo_media.nixl._pool import GUARD_BYTES, READ_NOTIFICATION, guard_word

__all__ = ["read"]


def read(
    descriptor: dict[str, Any], *, device: str = "cpu", agent: NixlAgent | None = None
) -> torch.Tensor:
    """Reads the tensor a descriptor names from the frontend's memory.

    Remote agents are added once per distinct metadata and cached. With a ``lease`` in the
    descriptor, the guard words around a pool region's data are read with it, and then, in a
    second transfer, the lease word at ``lease.word_addr``: the data is returned only if the
    lease still held it after the read (Note [stale reads] in ``_pool.py``). Then the
    notification ``dm-read:<lease id>`` is posted (not waited for: Note [notifications] in
    ``_agent.py``), on which the frontend frees the lease early.

    Args:
        descriptor: the JSON object the frontend sent.
        device: where the tensor lands (``"cuda"`` reads into VRAM). Default: ``"cpu"``.
        agent: the reading agent. Default: the process-wide agent.

    Returns:
        A new tensor of the descriptor's shape and dtype.

    Raises:
        ValueError: a malformed descriptor.
        ReadError: the transfer failed, or the lease was released (a stale descriptor).
    """
    check_descriptor(descriptor)
    agent = agent or get_agent()
    nd = descriptor["nixl_descriptor"]
    addr, size = int(nd["addr"]), int(nd["size"])
    lease = descriptor.get("lease") or {}
    guard = int(lease.get("guard_bytes", 0))
    lease_id = lease.get("id")
    word_addr = int(lease["word_addr"]) if lease_id is not None and "word_addr" in lease else 0
    dtype = dtype_from_name(descriptor["dtype"])
    shape = [int(s) for s in descriptor["shape"]]
    expected = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
    if expected != size:
        raise ValueError(f"descriptor shape {shape} of {descriptor['dtype']} is not {size} bytes")
    span = size + 2 * guard
    word = GUARD_BYTES if word_addr else 0
    buffer = torch.empty(span + word, dtype=torch.uint8, device=device)
    handle = agent.register(buffer)
    metadata, mem_type = descriptor["nixl_metadata"], MEM_TYPES[nd["mem_type"]]
    device_id = int(nd["device_id"])
    try:
        agent.read(buffer[:span], metadata, (addr - guard, span, device_id), mem_type)
        if word:
            agent.read(buffer[span:], metadata, (word_addr, word, device_id), mem_type)
    except (NixlTransferError, RuntimeError) as exc:
        raise ReadError(f"NIXL read of {size} bytes failed: {exc}") from exc
    finally:
        agent.deregister(handle)
    carrier = (word_addr, word) if word else (addr - guard, min(span, GUARD_BYTES))
    if lease_id is not None and carrier[1]:  # after the reads (Note [notifications])
        notification = READ_NOTIFICATION + str(lease_id).encode()
        agent.notify(metadata, (*carrier, device_id), mem_type, notification)
    if lease_id is not None and (guard or word):
        want = guard_word(int(lease_id))
        words = [buffer[:guard], buffer[guard + size : span]] if guard else []
        words += [buffer[span:]] if word else []
        if not all(w.cpu().numpy().tobytes() == want for w in words):
            raise ReadError(
                f"the lease {lease_id} was released before it was read; "
                "the frontend no longer holds this item"
            )
    return buffer[guard : guard + size].view(dtype).view(shape)
