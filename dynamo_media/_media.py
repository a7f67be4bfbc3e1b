"""The payloads that flow through a pipeline: small typed dataclasses; reprs never show data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch

from dynamo_media.config import Modality

__all__ = [
    "DecodedMedia",
    "EncodedMedia",
    "Modality",
    "ProbedMedia",
    "hash_with",
    "options_hash",
    "serialise_options",
    "tensor_sha256",
]

_SHOWN_METADATA = 6
_SHOWN_ITEMS = 4


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > _SHOWN_ITEMS:
        head = ", ".join(repr(v) for v in value[:_SHOWN_ITEMS])
        return f"[{head}, ... ({len(value)} items)]"
    return repr(value)


def options_hash(content_hash: str, options: dict[str, Any]) -> str:
    """The hash of decoded media: the fetched bytes' hash and the options that decoded them."""
    return hash_with(content_hash, serialise_options(options))


def serialise_options(options: dict[str, Any]) -> bytes:
    """``options`` as ``options_hash`` hashes them (sorted JSON); callers may keep the result."""
    return json.dumps(options, sort_keys=True, default=str).encode()


def hash_with(content_hash: str, serialised: bytes) -> str:
    """``options_hash`` of options already serialised by ``serialise_options``."""
    return hashlib.sha256(content_hash.encode() + b"\0" + serialised).hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's bytes in its logical (contiguous, row-major) order, on the CPU.

    The reference backend reports it for every item it reads, so a client can check the whole
    path end to end against a local decode.
    """
    data = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().data).hexdigest()  # no copy


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedMedia:
    """Fetched bytes, before decoding.

    Attributes:
        data: the encoded bytes.
        mime: the MIME type from the response header or ``data:`` URL, or sniffed; ``None`` when
            unknown.
        source: where the bytes came from, for messages (a ``data:`` URL is shortened).
        content_hash: sha256 hex digest of ``data``.
    """

    data: bytes
    mime: str | None
    source: str
    content_hash: str

    @classmethod
    def from_bytes(
        cls, data: bytes, *, mime: str | None = None, source: str = "<bytes>"
    ) -> EncodedMedia:
        """Wraps bytes that did not come through a fetcher, hashing them."""
        return cls(bytes(data), mime, source, hashlib.sha256(data).hexdigest())

    def __repr__(self) -> str:
        return (
            f"EncodedMedia(source={self.source!r}, mime={self.mime!r}, "
            f"nbytes={len(self.data)}, content_hash={self.content_hash[:12]!r})"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ProbedMedia:
    """Encoded media with what a ``Check*Limits`` step read from it (header, stream metadata, the
    chosen frames), so that decoding does not read it again.

    The decode step uses the probe only if it was made under the options the decode step has
    itself; otherwise it raises ``InvalidOptions`` (check and decode must not disagree).

    Attributes:
        media: the encoded media.
        probe: ``ImageInfo``, ``VideoProbe`` or ``AudioProbe``.
        options: the keyword options the probe was made under (sampling, output, limits).
    """

    media: EncodedMedia
    probe: Any
    options: dict[str, Any]

    def __repr__(self) -> str:
        return f"ProbedMedia({self.media!r}, probe={type(self.probe).__name__})"


@dataclasses.dataclass(eq=False)
class DecodedMedia:
    """A decoded image, video or audio clip.

    Attributes:
        tensor: ``uint8`` RGB pixels (``CHW``/``HWC``, ``TCHW``/``THWC``) or ``float32`` audio in
            [-1, 1] (``CN``/``NC``); ``metadata["layout"]`` names the layout.
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        metadata: what the decoder reports (format, sizes, frames_indices, sample_rate, ...).
        content_hash: hash of the fetched bytes and of the options that decoded them.
    """

    tensor: torch.Tensor
    modality: Modality
    metadata: dict[str, Any]
    content_hash: str | None = None

    def __repr__(self) -> str:
        t = self.tensor
        shown = list(self.metadata.items())[:_SHOWN_METADATA]
        meta = ", ".join(f"{k}={_short(v)}" for k, v in shown)
        more = ", ..." if len(self.metadata) > _SHOWN_METADATA else ""
        return (
            f"DecodedMedia({self.modality}, shape={tuple(t.shape)}, dtype={t.dtype}, "
            f"device={t.device}, {meta}{more})"
        )
