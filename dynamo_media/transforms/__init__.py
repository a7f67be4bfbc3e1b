"""Composable media transforms: ``FetchURL -> CheckVideoLimits -> DecodeVideo -> NixlRegister``."""

from dynamo_media.transforms._audio import CheckAudioLimits, DecodeAudio
from dynamo_media.transforms._container import Compose
from dynamo_media.transforms._device import ToCUDA, ToDevice, to_device
from dynamo_media.transforms._fetch import FetchURL
from dynamo_media.transforms._image import CheckImageLimits, DecodeImage
from dynamo_media.transforms._nixl import NixlRegister
from dynamo_media.transforms._pipeline import build_pipeline
from dynamo_media.transforms._transform import DecodeTransform, Transform
from dynamo_media.transforms._video import CheckVideoLimits, DecodeVideo

__all__ = [
    "CheckAudioLimits",
    "CheckImageLimits",
    "CheckVideoLimits",
    "Compose",
    "DecodeAudio",
    "DecodeImage",
    "DecodeTransform",
    "DecodeVideo",
    "FetchURL",
    "NixlRegister",
    "ToCUDA",
    "ToDevice",
    "Transform",
    "build_pipeline",
    "to_device",
]
