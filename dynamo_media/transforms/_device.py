"""``ToDevice`` (``ToCUDA``): moves decoded media to a device with a pinned, non-blocking copy."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from dynamo_media._media import DecodedMedia
from dynamo_media.transforms._transform import Transform

__all__ = ["ToCUDA", "ToDevice", "to_device"]


def to_device(media: DecodedMedia, device: str | torch.device) -> DecodedMedia:
    """The media on ``device``; the same object when it is already there.

    A CPU tensor bound for CUDA is staged in pinned memory so that the copy runs
    asynchronously on the current stream (the caller's later work on that stream is ordered
    after it).
    """
    target = torch.device(device)
    tensor = media.tensor
    same_index = target.index is None or target.index == tensor.device.index
    if tensor.device.type == target.type and same_index:
        return media
    if target.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return dataclasses.replace(media, tensor=tensor.to(target, non_blocking=True))


class ToDevice(Transform):
    """Moves ``DecodedMedia`` to a device. Functional twin: ``to_device``.

    Args:
        device: the target. Default: ``"cuda"``.
    """

    stage = "device"

    def __init__(self, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)

    def forward(self, inpt: DecodedMedia) -> DecodedMedia:
        return to_device(inpt, self.device)

    def repr_options(self) -> dict[str, Any]:
        return {"device": str(self.device)}


ToCUDA = ToDevice
