"""``build_pipeline``: the transforms for one modality, from configured options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dynamo_media.config import AudioOptions, ImageOptions, VideoOptions
from dynamo_media.fetch import MediaFetcher
from dynamo_media.transforms._audio import CheckAudioLimits, DecodeAudio
from dynamo_media.transforms._container import Compose
from dynamo_media.transforms._device import ToDevice
from dynamo_media.transforms._fetch import FetchURL
from dynamo_media.transforms._image import CheckImageLimits, DecodeImage
from dynamo_media.transforms._nixl import NixlRegister
from dynamo_media.transforms._transform import Transform
from dynamo_media.transforms._video import CheckVideoLimits, DecodeVideo

if TYPE_CHECKING:
    from dynamo_media.nixl import RegistrationPool

__all__ = ["build_pipeline"]


def build_pipeline(
    modality: str,
    options: Any,
    *,
    fetcher: MediaFetcher,
    device: str = "cpu",
    nixl: RegistrationPool | bool = False,
) -> Compose:
    """``FetchURL -> Check*Limits -> Decode* [-> ToCUDA] [-> NixlRegister]``.

    Args:
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        options: the modality's options (``ImageOptions``, ...).
        fetcher: fetches the URL.
        device: where the tensor ends up. Default: ``"cpu"``.
        nixl: register the result in this pool, or in the process-wide pool when ``True``.
            Default: ``False``.

    Returns:
        The pipeline.
    """
    steps: list[Transform] = [FetchURL(fetcher)]
    if modality == "image":
        assert isinstance(options, ImageOptions)
        steps += [
            CheckImageLimits(options.limits, mode=options.mode),
            DecodeImage.from_options(options, device=device),
        ]
    elif modality == "video":
        assert isinstance(options, VideoOptions)
        steps += [
            CheckVideoLimits.from_options(options, device=device),
            DecodeVideo.from_options(options, device=device),
        ]
    elif modality == "audio":
        assert isinstance(options, AudioOptions)
        steps += [
            CheckAudioLimits.from_options(options),
            DecodeAudio.from_options(options, device=device),
        ]
    else:
        raise ValueError(f"Unknown modality {modality!r}; expected 'image', 'video' or 'audio'")
    if device != "cpu":
        steps.append(ToDevice(device))
    if nixl is not False:
        steps.append(NixlRegister(None if nixl is True else nixl))
    return Compose(steps)
