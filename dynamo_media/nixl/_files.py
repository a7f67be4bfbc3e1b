"""``FileAgent``: moves a DRAM buffer to or from a file through NIXL's POSIX backend.

A NIXL file descriptor is ``(offset, length, fd)`` registered as ``FILE`` memory; a ``WRITE``
from DRAM descriptors to FILE descriptors on the agent itself (loopback) writes the file, a
``READ`` reads it. Where GDS is installed (``GDS`` plugin and a CUDA device), the same calls with
VRAM descriptors skip the bounce through DRAM; the cache spills CPU tensors only, so this agent
creates POSIX alone. It is its own agent, not the process-wide UCX one, so that file
registrations never enter the metadata that backends load.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Literal

import torch

from dynamo_media.nixl._agent import NixlTransferError, _import_nixl, run_transfer

__all__ = ["FileAgent"]

_TIMEOUT_S = 60.0


class FileAgent:
    """A local NIXL agent with the POSIX backend; calls are serialised by a lock.

    Raises:
        NixlTransferError: NIXL has no POSIX plugin here, or it cannot be created.
    """

    def __init__(self) -> None:
        api = _import_nixl()
        self.name = f"dynamo-media-files-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            config = api.nixl_agent_config(enable_prog_thread=False, backends=["POSIX"])
            self._agent = api.nixl_agent(self.name, config)
        except Exception as exc:  # NIXL raises its own binding errors, or RuntimeError
            raise NixlTransferError(f"NIXL's POSIX backend is not available: {exc}") from exc
        if "POSIX" not in getattr(self._agent, "backends", {}):
            raise NixlTransferError("NIXL's POSIX plugin is not installed")
        self._lock = threading.Lock()

    def transfer(self, op: Literal["READ", "WRITE"], buffer: torch.Tensor, fd: int) -> None:
        """Writes ``buffer`` to the file ``fd`` from offset 0, or reads it back into ``buffer``.

        Args:
            op: ``"WRITE"`` (buffer to file) or ``"READ"`` (file to buffer).
            buffer: a contiguous CPU tensor; its bytes are moved.
            fd: an open file descriptor, readable or writable as ``op`` needs.

        Raises:
            NixlTransferError: NIXL refused or failed the transfer (a short file included).
        """
        size = buffer.numel() * buffer.element_size()
        file = [(0, size, fd)]
        with self._lock:
            try:
                mem = self._agent.register_memory(buffer)
                try:
                    disk = self._agent.register_memory([(0, size, fd, "")], "FILE")
                except Exception:
                    self._agent.deregister_memory(mem)
                    raise
            except Exception as exc:
                raise NixlTransferError(f"NIXL POSIX registration failed: {exc}") from exc
            try:
                local = self._agent.get_xfer_descs(buffer)
                remote = self._agent.get_xfer_descs(file, "FILE")
                state = run_transfer(
                    self._agent, op, local, remote, self.name, timeout_s=_TIMEOUT_S
                )
            except Exception as exc:
                raise NixlTransferError(f"NIXL POSIX {op} failed: {exc}") from exc
            finally:
                self._agent.deregister_memory(disk)
                self._agent.deregister_memory(mem)
        if state != "DONE":
            raise NixlTransferError(f"NIXL POSIX {op} of {size} bytes ended in state {state}")
