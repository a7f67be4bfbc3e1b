"""``SpillDir``: the disk tier of the decoded-media cache, files under ``cache_dir``.

# Note [spill files]
When DRAM is full, the cache moves its coldest unheld entries here instead of dropping them
(Note [memory tiers] in ``_cache.py``). One file per entry holds the tensor's storage, raw; the
shape, stride, dtype and metadata stay in memory with a CRC-32 of the bytes, so a file that was
cut, grown or changed on disk is found out when it is read: it is deleted and the read is a
miss (the item decodes again), never an error to the client. A missing file is the same.

Privacy and lifetime: the files of a run live in a fresh directory made by ``mkdtemp`` (mode
0700) under ``cache_dir``, each created with ``O_EXCL`` and mode 0600; the directory is removed
by ``close`` (the server's shutdown), and a directory left by a run that died is removed by
the next start (its name carries its process id, and that process is gone). The files never hold
more than ``capacity_bytes``: the oldest go first, and an entry larger than the whole bound is
not written.

I/O goes through NIXL's POSIX backend (``nixl/_files.py``), or plain ``readv``/``write`` where
``io="file"`` or NIXL's POSIX plugin is missing. The two measure the same (``benchmarks/spill.py``,
2 cores, local disk: a 190 MiB entry written in 95 ms by NIXL and 93 ms plainly, read back cold in
201 and 204 ms); NIXL is the default because the same calls take VRAM descriptors where GDS is
installed, which is the way to spill VRAM entries without the DRAM bounce.

# Note [spill crossover]
An entry is written only if reading it back is expected to cost less than decoding it again:
its own decode time (measured by the cache) against ``READ_OVERHEAD_S + nbytes /
READ_BYTES_PER_S``, the cold read (page cache dropped: spilling happens under memory pressure)
with its CRC, measured by ``benchmarks/spill.py`` on this shared 2-core machine (median of 7,
best of NIXL and plain I/O; benchmarks/results/spill.md):

    input (decoded size)             decode again   read back cold   warm
    image PNG 64x64 (12 KiB)              0.13 ms       0.23 ms     0.05 ms
    image JPEG 256x256 (192 KiB)          0.37 ms       0.44 ms     0.15 ms
    image JPEG 1920x1080 (5.9 MiB)        3.0 ms        9.6 ms      2.5 ms
    video 720p, 32 frames (84 MiB)        423 ms        98 ms        75 ms
    video 1080p, 32 frames (190 MiB)      885 ms       201 ms       166 ms

(An earlier run under more load: 7.1 ms to decode the 1080p JPEG, 10.4 ms to read it cold.) So
decoded images are cheaper to decode again than to read cold at every size measured, and are
dropped; 32 frames of H.264 (~0.2 GB/s out of FFmpeg) come back 4.4 times faster from disk, and
are written. The crossover sits between: ``decode_seconds`` above about ``1 ms + nbytes / 1
GB/s``. The rule decides per entry, so a slow decode
(a large PNG, a VP9 or AV1 clip, long audio) is written whatever its modality.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shutil
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any, Literal

import torch

from dynamo_media._media import DecodedMedia
from dynamo_media._options import format_bytes
from dynamo_media.nixl._agent import NixlTransferError
from dynamo_media.nixl._files import FileAgent

__all__ = ["READ_BYTES_PER_S", "READ_OVERHEAD_S", "SpillDir", "read_seconds"]

# Note [spill crossover]: a cold read back, CRC included, on the benchmark's machine.
READ_OVERHEAD_S = 0.001
READ_BYTES_PER_S = 1.0e9
_PREFIX = "dynamo-media-cache-"


@dataclasses.dataclass(frozen=True)
class _Spilled:
    path: Path
    nbytes: int
    crc: int
    dtype: torch.dtype
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    media: DecodedMedia  # with an empty tensor: the rest of the payload
    decode_seconds: float


def read_seconds(nbytes: int) -> float:
    """The expected time to read ``nbytes`` back from a spill file (Note [spill crossover])."""
    return READ_OVERHEAD_S + nbytes / READ_BYTES_PER_S


def _storage_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's whole storage as a flat ``uint8`` tensor (a view, no copy)."""
    return torch.empty(0, dtype=torch.uint8).set_(tensor.untyped_storage())


def _view(flat: torch.Tensor) -> memoryview:
    # numpy's stubs do not declare the buffer protocol for Python 3.11's typeshed.
    return memoryview(flat.numpy())  # type: ignore[arg-type]


def _remove_stale(root: Path) -> None:
    """Removes the directories of runs whose process is gone (Note [spill files])."""
    for path in root.glob(f"{_PREFIX}*"):
        pid = path.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


class SpillDir:
    """Cache entries kept in files (Note [spill files]).

    Args:
        root: the configured ``cache_dir``; this run's directory is made inside it.
        capacity_bytes: the most bytes the files hold.
        io: ``"nixl"`` (NIXL's POSIX backend; plain I/O where it is missing) or ``"file"``.
            Default: ``"nixl"``.

    Attributes:
        path: this run's directory.
        io: the I/O in use, ``"nixl"`` or ``"file"``.

    Raises:
        ValueError: ``capacity_bytes`` is not > 0, or ``io`` is unknown.
        OSError: ``root`` cannot be made or written.
    """

    def __init__(
        self,
        root: str | Path,
        capacity_bytes: int,
        *,
        io: Literal["nixl", "file"] = "nixl",
    ) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        if io not in ("nixl", "file"):
            raise ValueError(f"Invalid io ({io!r}). Supported values are 'nixl', 'file'.")
        self.capacity_bytes = capacity_bytes
        self._agent: FileAgent | None = None
        if io == "nixl":
            with contextlib.suppress(NixlTransferError):
                self._agent = FileAgent()
        self.io = "nixl" if self._agent is not None else "file"
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        self.path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))
        self._lock = threading.Lock()
        self._files: collections.OrderedDict[str, _Spilled] = collections.OrderedDict()
        self._bytes = 0
        self._serial = 0
        self._closed = False

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._files

    def worth(self, media: DecodedMedia, *, decode_seconds: float) -> bool:
        """Whether ``put`` would write the entry: on the CPU, within the bound, and slower to
        decode again than to read back (Note [spill crossover])."""
        nbytes = _storage_bytes(media.tensor).numel()
        return (
            media.tensor.device.type == "cpu"
            and nbytes <= self.capacity_bytes
            and decode_seconds > read_seconds(nbytes)
        )

    def put(self, key: str, media: DecodedMedia, *, decode_seconds: float) -> bool:
        """Writes an entry's tensor to a file, deleting the oldest files for room.

        Args:
            key: the entry's cache key.
            media: the entry.
            decode_seconds: what decoding it took; it is written only if reading it back is
                expected to be faster (Note [spill crossover]).

        Returns:
            Whether it was written: not when decoding it again is cheaper, it is larger than the
            whole bound or not on the CPU, or the write failed (disk full, say).
        """
        if not self.worth(media, decode_seconds=decode_seconds):
            return False
        tensor = media.tensor
        flat = _storage_bytes(tensor)
        nbytes = flat.numel()
        with self._lock:
            if self._closed:
                return False
            self._drop(key)
            while self._bytes + nbytes > self.capacity_bytes and self._files:
                self._drop(next(iter(self._files)))
            if self._bytes + nbytes > self.capacity_bytes:  # the rest is being written or read
                return False
            self._serial += 1
            path = self.path / f"{self._serial}.bin"
            self._bytes += nbytes  # reserved while it is written, so the bound holds
        try:
            self._write(path, flat)
        except OSError:
            path.unlink(missing_ok=True)
            with self._lock:
                self._bytes -= nbytes
            return False
        record = _Spilled(
            path,
            nbytes,
            zlib.crc32(_view(flat)),
            tensor.dtype,
            tuple(tensor.shape),
            tuple(tensor.stride()),
            int(tensor.storage_offset()),
            dataclasses.replace(media, tensor=torch.empty(0, dtype=tensor.dtype)),
            decode_seconds,
        )
        with self._lock:
            if self._closed:
                path.unlink(missing_ok=True)
                return False
            self._files[key] = record
        return True

    def take(self, key: str) -> tuple[DecodedMedia, float] | None:
        """Reads an entry back and deletes its file.

        Returns:
            The media, byte for byte and view for view as it was put, and its
            ``decode_seconds``; ``None`` when the key has no file, or the file is gone, cut or
            changed (Note [spill files]).
        """
        with self._lock:
            record = self._files.pop(key, None)
        if record is None:
            return None
        flat = torch.empty(record.nbytes, dtype=torch.uint8)
        try:
            ok = self._read(record.path, flat) and zlib.crc32(_view(flat)) == record.crc
        finally:
            record.path.unlink(missing_ok=True)
            with self._lock:
                self._bytes -= record.nbytes
        if not ok:
            return None
        tensor = torch.empty(0, dtype=record.dtype).set_(
            flat.untyped_storage(), record.offset, record.size, record.stride
        )
        return dataclasses.replace(record.media, tensor=tensor), record.decode_seconds

    def _drop(self, key: str) -> None:
        record = self._files.pop(key, None)
        if record is not None:
            record.path.unlink(missing_ok=True)
            self._bytes -= record.nbytes

    def _write(self, path: Path, flat: torch.Tensor) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if self._agent is None:
                view, done = _view(flat), 0
                while done < len(view):
                    done += os.write(fd, view[done:])
                return
            os.ftruncate(fd, flat.numel())
            try:
                self._agent.transfer("WRITE", flat, fd)
            except NixlTransferError as exc:
                raise OSError(f"spill of {format_bytes(flat.numel())} to {path}: {exc}") from exc
        finally:
            os.close(fd)

    def _read(self, path: Path, flat: torch.Tensor) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            if os.fstat(fd).st_size != flat.numel():
                return False
            if self._agent is None:
                view, done = _view(flat), 0
                while done < len(view) and (got := os.readv(fd, [view[done:]])):
                    done += got
                return done == len(view)
            try:
                self._agent.transfer("READ", flat, fd)
            except NixlTransferError:
                return False
            return True
        finally:
            os.close(fd)

    def stats(self) -> dict[str, Any]:
        """Bytes and entries in files now, and the bound."""
        with self._lock:
            return {
                "capacity_bytes": self.capacity_bytes,
                "bytes": self._bytes,
                "entries": len(self._files),
            }

    def close(self) -> None:
        """Deletes every file and this run's directory; later ``put`` calls write nothing."""
        with self._lock:
            self._closed = True
            self._files.clear()
            self._bytes = 0
        shutil.rmtree(self.path, ignore_errors=True)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"SpillDir({str(self.path)!r}, io={self.io!r}, "
            f"bytes={format_bytes(s['bytes'])!r} of {format_bytes(s['capacity_bytes'])!r}, "
            f"entries={s['entries']})"
        )
