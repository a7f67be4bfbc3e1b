"""A thin, thread-safe wrapper over ``nixl._api.nixl_agent``, and the process-wide instance."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "NixlAgent",
    "NixlTransferError",
    "decode_metadata",
    "encode_metadata",
    "get_agent",
    "run_transfer",
]

_TRANSFER_TIMEOUT_S = 30.0

log = logging.getLogger("dynamo_media.nixl")


class NixlTransferError(RuntimeError):
    """A NIXL transfer failed or did not finish in time."""


def encode_metadata(raw: bytes) -> str:
    """Agent metadata as Dynamo sends it: ``"b64:" + base64(zlib(metadata))``."""
    return "b64:" + base64.b64encode(zlib.compress(raw)).decode("ascii")


def decode_metadata(text: str) -> bytes:
    """The inverse of ``encode_metadata``; plain base64 without the prefix is accepted too."""
    if text.startswith("b64:"):
        return zlib.decompress(base64.b64decode(text[4:]))
    return base64.b64decode(text)


def run_transfer(
    agent: Any,
    op: str,
    local: Any,
    remote: Any,
    peer: str,
    timeout_s: float = _TRANSFER_TIMEOUT_S,
) -> str:
    """Runs one transfer on a raw NIXL ``agent`` and waits for it, yielding the GIL, for at most
    ``timeout_s``; releases its handle and returns its last state (``"DONE"`` when it worked)."""
    handle = agent.initialize_xfer(op, local, remote, peer, b"")
    try:
        state = agent.transfer(handle)
        deadline = time.monotonic() + timeout_s
        while state == "PROC" and time.monotonic() < deadline:
            time.sleep(0)  # let other threads (an event loop) have the GIL
            state = agent.check_xfer_state(handle)
        return str(state)
    finally:
        agent.release_xfer_handle(handle)


def _import_nixl() -> Any:
    # NIXL logs every agent and backend creation at INFO, to stdout; keep our users' stdout
    # (and a backend that speaks JSON on it) clean. NIXL_LOG_LEVEL set by the user wins.
    os.environ.setdefault("NIXL_LOG_LEVEL", "WARN")
    from nixl import _api

    return _api


class NixlAgent:
    """One NIXL agent (UCX by default) whose calls are serialised by a lock.

    # Note [nixl progress]
    NIXL's own progress thread polls without pause (it kept a core at 100% on an idle server),
    so it is off: a frontend's pool progresses the agent from its listener thread every 2 ms
    (``RegistrationPool``), and a reader progresses while it waits for its transfer. Measured
    with a 25 MB READ between two processes: 1.8-2.1 GB/s with NIXL's thread, 4.0 GB/s without.

    # Note [notifications]
    A transfer that carries a notification, and NIXL's standalone ``genNotif``, completes only
    once the remote agent has progressed too: a reader that waited for one waited for the
    frontend's next listener tick, ~2.1 ms an item (measured, 640x480 pool region between two
    processes: 0.10 ms without a notification, 2.12 ms with; 1080p zero-copy: 0.56 vs 2.17 ms).
    Posting it and not waiting was not enough: while one was in flight, or had just ended, the
    agent's next read of that frontend waited too (640x480 data read 1.1-1.9 ms vs 0.12-0.22 ms).
    So ``read`` carries none, and ``notify`` hands the notification to a second agent, the
    notifier, which posts it on a read of a few bytes and does not wait for it.

    Args:
        name: the agent's name, unique among the agents that talk. Default: a fresh one.
        backends: NIXL backends to create. Default: ``("UCX",)``.
    """

    def __init__(self, name: str | None = None, backends: Sequence[str] = ("UCX",)) -> None:
        api = _import_nixl()
        self.name = name or f"dynamo-media-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        config = api.nixl_agent_config(enable_prog_thread=False, backends=list(backends))
        self._agent = api.nixl_agent(self.name, config)
        self._lock = threading.Lock()
        self._metadata: str | None = None
        self._remotes: dict[str, str] = {}
        self._registered = 0
        self._backends = tuple(backends)
        self._notifier: _Notifier | None = None

    @property
    def registrations(self) -> int:
        """Memory registrations held now (``register`` calls not yet deregistered)."""
        with self._lock:
            return self._registered

    def register(self, tensor: torch.Tensor) -> Any:
        """Registers a contiguous tensor's memory; returns the handle for ``deregister``."""
        if not tensor.is_contiguous():
            raise ValueError("only contiguous tensors can be registered")
        with self._lock:
            handle = self._agent.register_memory(tensor)
            self._registered += 1
            self._metadata = None  # the metadata carries the registrations
        return handle

    def deregister(self, handle: Any) -> None:
        """Releases a registration made by ``register``."""
        with self._lock:
            self._agent.deregister_memory(handle)
            self._registered -= 1
            self._metadata = None

    def metadata(self) -> str:
        """This agent's metadata, encoded for a descriptor (see ``encode_metadata``)."""
        with self._lock:
            if self._metadata is None:
                self._metadata = encode_metadata(self._agent.get_agent_metadata())
            return self._metadata

    def _remote(self, metadata: str) -> str:
        # A frontend's metadata changes with every zero-copy registration; loading the new one
        # over the known agent merges it (measured: microseconds, no reconnection), so only the
        # latest metadata per agent is remembered.
        key = hashlib.sha256(metadata.encode()).hexdigest()
        name = self._remotes.get(key)
        if name is None:
            added = self._agent.add_remote_agent(decode_metadata(metadata))
            name = added.decode() if isinstance(added, bytes) else str(added)
            self._remotes = {k: n for k, n in self._remotes.items() if n != name}
            self._remotes[key] = name
        return name

    def _descs(
        self, local: torch.Tensor, remote_metadata: str, remote: tuple[int, int, int], mem_type: str
    ) -> tuple[str, Any, Any]:
        """A transfer's peer name and descriptors, local and remote (the lock held)."""
        name = self._remote(remote_metadata)
        remote_descs = self._agent.get_xfer_descs([remote], mem_type)
        return name, self._agent.get_xfer_descs(local), remote_descs

    def read(
        self,
        local: torch.Tensor,
        remote_metadata: str,
        remote: tuple[int, int, int],
        mem_type: str,
    ) -> None:
        """Reads ``remote = (addr, size, device_id)`` of another agent into ``local``.

        Raises:
            NixlTransferError: the transfer failed or took longer than 30 s.
        """
        with self._lock:
            name, local_descs, remote_descs = self._descs(local, remote_metadata, remote, mem_type)
            state = run_transfer(self._agent, "READ", local_descs, remote_descs, name)
        if state != "DONE":
            raise NixlTransferError(f"NIXL READ from {name} ended in state {state}")

    def notify(
        self,
        remote_metadata: str,
        carrier: tuple[int, int, int],
        mem_type: str,
        notification: bytes,
    ) -> None:
        """Sends ``notification`` to another agent, from this agent's notifier, on a read of
        its ``carrier = (addr, size, device_id)`` (at most 16 bytes, registered there), and does
        not wait for it (Note [notifications]); a notification that fails is dropped."""
        notifier = self._notifier
        if notifier is None:
            try:
                made = _Notifier(f"{self.name}-notify", self._backends)
            except Exception:  # NIXL's errors are plain Exceptions
                log.exception("no notifier agent; notification %r dropped", notification)
                return
            with self._lock:
                notifier = self._notifier = self._notifier or made
        notifier.post(remote_metadata, carrier, mem_type, notification)

    def notifications(self) -> list[bytes]:
        """The notifications received since the last call, from every remote agent."""
        with self._lock:
            notifs = self._agent.get_new_notifs()
        return [msg for messages in notifs.values() for msg in messages]


class _Notifier(NixlAgent):
    """The second agent that sends an agent's notifications (Note [notifications]): each rides
    on a read of at most 16 bytes into a scratch buffer, and a reaper thread progresses the
    transfers in flight (every 0.5 ms, only while there are some) until they end or time out."""

    def __init__(self, name: str, backends: Sequence[str]) -> None:
        super().__init__(name, backends)
        self._scratch = torch.empty(16, dtype=torch.uint8)
        self._agent.register_memory(self._scratch)  # for the agent's life
        self._in_flight: list[tuple[Any, float]] = []  # (handle, deadline)
        self._reaper: threading.Thread | None = None
        self._wake = threading.Condition(self._lock)

    def post(
        self,
        remote_metadata: str,
        carrier: tuple[int, int, int],
        mem_type: str,
        notification: bytes,
    ) -> None:
        """Posts ``notification`` on a read of ``carrier``, for the reaper to finish. One that
        cannot be posted is dropped: its lease then frees when its request ends."""
        with self._lock:
            handle = None
            try:
                local = self._scratch[: carrier[1]]
                name, local_descs, remote_descs = self._descs(
                    local, remote_metadata, carrier, mem_type
                )
                handle = self._agent.initialize_xfer(
                    "READ", local_descs, remote_descs, name, notification
                )
                state = self._agent.transfer(handle)
            except Exception:  # NIXL's errors are plain Exceptions
                state = "ERR"
            if state != "PROC":
                if handle is not None:
                    self._release(handle)
                return
            self._in_flight.append((handle, time.monotonic() + _TRANSFER_TIMEOUT_S))
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="dynamo-media-notify", daemon=True
                )
                self._reaper.start()
            self._wake.notify()

    def _reap(self) -> None:
        """The reaper thread: progresses the notifications in flight, releasing the ended."""
        while True:
            with self._wake:
                while not self._in_flight:
                    self._wake.wait()
                now = time.monotonic()
                in_flight = []
                for handle, deadline in self._in_flight:
                    try:
                        state = self._agent.check_xfer_state(handle)
                    except Exception:
                        state = "ERR"
                    if state == "PROC" and now < deadline:
                        in_flight.append((handle, deadline))
                    else:
                        self._release(handle)
                self._in_flight = in_flight
            time.sleep(0.0005)

    def _release(self, handle: Any) -> None:
        try:
            self._agent.release_xfer_handle(handle)
        except Exception:  # the thread must go on; the handle is dropped
            log.exception("releasing a notification's transfer failed")


_AGENT: NixlAgent | None = None
_AGENT_LOCK = threading.Lock()


def get_agent() -> NixlAgent:
    """The process-wide agent, created on first use."""
    global _AGENT
    with _AGENT_LOCK:
        if _AGENT is None:
            _AGENT = NixlAgent()
        return _AGENT
