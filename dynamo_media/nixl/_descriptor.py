"""The wire format a backend receives: Dynamo's decoded-media descriptor, plus a lease.

    {"nixl_metadata": "b64:<base64(zlib(agent metadata))>",
     "nixl_descriptor": {"addr": ..., "size": ..., "mem_type": "Dram", "device_id": 0},
     "shape": [3, 1080, 1920], "dtype": "UINT8",
     "metadata": {"Image": {"format": "jpeg", "layout": "CHW"}},
     "content_hash": "...",
     "lease": {"id": 17, "guard_bytes": 16, "word_addr": ...}}

``addr``/``size`` are the tensor's bytes exactly, so a Dynamo reader that ignores ``lease`` reads
the right data. Our reader also reads the guard words around a pool region (``guard_bytes`` on
each side; 0 for a zero-copy tensor) and, after the data, the lease word at ``word_addr``, and
refuses a lease that was released (Notes [lease guards] and [stale reads] in ``_pool.py``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "DTYPES",
    "MEM_TYPES",
    "check_descriptor",
    "dtype_from_name",
    "dtype_name",
    "modality_key",
]

DTYPES: dict[torch.dtype, str] = {
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FLOAT16",
    torch.bfloat16: "BFLOAT16",
    torch.float32: "FLOAT32",
    torch.float64: "FLOAT64",
}
_BY_NAME = {name: dtype for dtype, name in DTYPES.items()}
MEM_TYPES = {"Dram": "DRAM", "Vram": "VRAM"}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.uint8`` -> ``"UINT8"``."""
    return DTYPES[dtype]


def dtype_from_name(name: str) -> torch.dtype:
    """``"UINT8"`` -> ``torch.uint8``; ``ValueError`` for a name not in ``DTYPES``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"Unknown dtype {name!r}; expected one of {sorted(_BY_NAME)}") from None


def modality_key(modality: str) -> str:
    """Dynamo's key for a modality's metadata: ``"image"`` -> ``"Image"``."""
    return modality.capitalize()


def check_descriptor(descriptor: Any) -> None:
    """Raises ``ValueError`` naming the first missing or malformed field."""
    if not isinstance(descriptor, dict):
        raise ValueError(f"a descriptor is a JSON object, got {type(descriptor).__name__}")
    for key in ("nixl_metadata", "nixl_descriptor", "shape", "dtype"):
        if key not in descriptor:
            raise ValueError(f"descriptor has no {key!r}")
    nd = descriptor["nixl_descriptor"]
    for key in ("addr", "size", "mem_type", "device_id"):
        if key not in nd:
            raise ValueError(f"descriptor.nixl_descriptor has no {key!r}")
    if nd["mem_type"] not in MEM_TYPES:
        raise ValueError(f"Unknown mem_type {nd['mem_type']!r}; expected 'Dram' or 'Vram'")
