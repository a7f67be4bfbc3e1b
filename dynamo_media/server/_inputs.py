"""What users send, on ``/metrics``: the distributions an operator chooses limits from.

Every media item a request carried counts once, whether it was decoded, served from the cache
(the same input, sent again) or refused:

- ``dynamo_media_input_bytes{modality}``: encoded bytes fetched (refused items included, once
  their bytes arrived);
- ``dynamo_media_input_image_pixels``: the image's own ``width*height``, before any resize;
- ``dynamo_media_input_video_source_pixels``, ``..._video_duration_seconds``,
  ``..._video_frames``: the source's ``width*height`` and length, and the frames sampled;
- ``dynamo_media_input_audio_duration_seconds``: the decoded audio's length;
- ``dynamo_media_input_codecs{modality, codec}``: image formats, video and audio codecs;
- ``dynamo_media_refusals{modality, limit}``: items refused by a limit, by the limit's name
  (``LimitExceeded.limit``; ``max_bytes`` for a fetch over the fetcher's cap).

# Note [bounded labels]
A label value is a new time series, kept by the server and every scraper for good. So no label
names a URL, a user or a request, and the values of the others come from fixed sets: modalities,
the limits our code raises, and the codecs in ``CODECS``; a codec outside them counts as
``"other"``, whatever the file claims.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from dynamo_media._errors import LimitExceeded, TooLarge
from dynamo_media.preprocess import MediaItem

__all__ = [
    "AUDIO_SECONDS",
    "CODECS",
    "IMAGE_PIXELS",
    "INPUT_BYTES",
    "INPUT_CODECS",
    "REFUSALS",
    "RESOLUTIONS",
    "VIDEO_FRAMES",
    "VIDEO_PIXELS",
    "VIDEO_SECONDS",
    "InputMetrics",
    "codec_label",
]

INPUT_BYTES = "dynamo_media_input_bytes"
IMAGE_PIXELS = "dynamo_media_input_image_pixels"
VIDEO_PIXELS = "dynamo_media_input_video_source_pixels"
VIDEO_SECONDS = "dynamo_media_input_video_duration_seconds"
VIDEO_FRAMES = "dynamo_media_input_video_frames"
AUDIO_SECONDS = "dynamo_media_input_audio_duration_seconds"
INPUT_CODECS = "dynamo_media_input_codecs"
REFUSALS = "dynamo_media_refusals"

KiB, MiB = 1 << 10, 1 << 20
BYTE_BUCKETS = (16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB)
# The common frame sizes, so that a bucket reads as "up to 720p".
RESOLUTIONS = (
    (320, 240),
    (640, 480),
    (1280, 720),
    (1920, 1080),
    (2560, 1440),
    (3840, 2160),
    (7680, 4320),
    (16384, 16384),
)
PIXEL_BUCKETS = tuple(w * h for w, h in RESOLUTIONS)
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
FRAME_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# Note [bounded labels]: what each modality's codec label may be, besides "other".
CODECS = {
    "image": frozenset({"jpeg", "png", "webp", "gif", "bmp", "tiff", "avif", "heif"}),
    "video": frozenset(
        {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mjpeg", "prores", "gif"}
    ),
    "audio": frozenset({"mp3", "aac", "opus", "vorbis", "flac", "alac", "pcm"}),
}


def codec_label(modality: str, codec: str) -> str:
    """The ``codec`` label of an item: FFmpeg's (or Pillow's) name when it is in
    ``CODECS[modality]``, ``"pcm"`` for every PCM sample format, else ``"other"``."""
    name = "pcm" if codec.startswith("pcm_") else codec.lower()
    return name if name in CODECS[modality] else "other"


class InputMetrics:
    """The input distributions (module docstring), registered in ``registry``.

    Args:
        registry: the frontend's metrics registry.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.bytes = Histogram(
            INPUT_BYTES, "Encoded bytes per item", ["modality"], buckets=BYTE_BUCKETS, registry=r
        )
        self.image_pixels = Histogram(
            IMAGE_PIXELS, "Source pixels per image", buckets=PIXEL_BUCKETS, registry=r
        )
        self.video_pixels = Histogram(
            VIDEO_PIXELS, "Source pixels per video frame", buckets=PIXEL_BUCKETS, registry=r
        )
        self.video_seconds = Histogram(
            VIDEO_SECONDS, "Source seconds per video", buckets=DURATION_BUCKETS, registry=r
        )
        self.video_frames = Histogram(
            VIDEO_FRAMES, "Frames sampled per video", buckets=FRAME_BUCKETS, registry=r
        )
        self.audio_seconds = Histogram(
            AUDIO_SECONDS, "Decoded seconds per audio item", buckets=DURATION_BUCKETS, registry=r
        )
        self.codecs = Counter(
            INPUT_CODECS,
            "Items by image format or video/audio codec (others as 'other')",
            ["modality", "codec"],
            registry=r,
        )
        self.refusals = Counter(
            REFUSALS,
            "Items refused by a limit, by the limit's name",
            ["modality", "limit"],
            registry=r,
        )

    def observe(self, item: MediaItem) -> None:
        """Counts one item of a request that has run: its bytes, then its decoded media's
        distributions, or the limit that refused it."""
        if item.fetched_bytes:
            self.bytes.labels(item.modality).observe(item.fetched_bytes)
        if isinstance(item.error, LimitExceeded):
            self.refusals.labels(item.modality, item.error.limit).inc()
        elif isinstance(item.error, TooLarge):
            self.refusals.labels(item.modality, "max_bytes").inc()
        if item.output is None:
            return
        meta = item.media.metadata
        if item.modality == "image":
            width, height = meta["original_size"]
            self.image_pixels.observe(width * height)
            codec = meta["format"]
        elif item.modality == "video":
            self.video_pixels.observe(meta["source_width"] * meta["source_height"])
            self.video_seconds.observe(meta["source_duration_seconds"])
            self.video_frames.observe(len(meta["frames_indices"]))
            codec = meta["codec"]
        else:
            self.audio_seconds.observe(meta["duration_seconds"])
            codec = meta["source_codec"]
        self.codecs.labels(item.modality, codec_label(item.modality, codec)).inc()
