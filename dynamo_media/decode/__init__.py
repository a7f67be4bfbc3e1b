"""Functional decode kernels: ``probe_*`` reads headers, ``decode_*`` checks limits and decodes."""

from dynamo_media.decode._image import check_image_limits, decode_image
from dynamo_media.decode._image_header import ImageInfo, probe_image

__all__ = ["ImageInfo", "check_image_limits", "decode_image", "probe_image"]
