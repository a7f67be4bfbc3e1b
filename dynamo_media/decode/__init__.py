"""Functional decode kernels: ``probe_*`` reads headers, ``decode_*`` checks limits and decodes."""

from dynamo_media.decode._audio import AudioProbe, decode_audio, probe_audio
from dynamo_media.decode._image import check_image_limits, decode_image
from dynamo_media.decode._image_header import ImageInfo, probe_image
from dynamo_media.decode._video import VideoProbe, decode_video, probe_video

__all__ = [
    "AudioProbe",
    "ImageInfo",
    "VideoProbe",
    "check_image_limits",
    "decode_audio",
    "decode_image",
    "decode_video",
    "probe_audio",
    "probe_image",
    "probe_video",
]
