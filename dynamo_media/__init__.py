"""dynamo-media: safe, fast media fetching and decoding for multimodal LLM serving.

Turns the media parts of an OpenAI chat request into decoded tensors that a model backend reads
over NIXL. See README.md.
"""

from dynamo_media._decoder import MediaDecoder
from dynamo_media._errors import (
    BackendNotReady,
    BackendTimeout,
    BackendUnavailable,
    DecodeError,
    FetchError,
    FetchTimeout,
    InvalidOptions,
    LimitExceeded,
    MediaError,
    ModalityDisabled,
    NoMediaStream,
    Overloaded,
    PolicyError,
    ReadError,
    TooLarge,
    TooManyRedirects,
    UpstreamStatus,
)
from dynamo_media._media import DecodedMedia, EncodedMedia, tensor_sha256
from dynamo_media.config import (
    AudioLimits,
    AudioOptions,
    FetchPolicy,
    ImageLimits,
    ImageOptions,
    VideoLimits,
    VideoOptions,
)
from dynamo_media.decode import (
    decode_audio,
    decode_image,
    decode_video,
    probe_audio,
    probe_image,
    probe_video,
)
from dynamo_media.fetch import MediaFetcher
from dynamo_media.sampling import sample_frame_indices

__version__ = "0.1.0"

__all__ = [
    "AudioLimits",
    "AudioOptions",
    "BackendNotReady",
    "BackendTimeout",
    "BackendUnavailable",
    "DecodeError",
    "DecodedMedia",
    "EncodedMedia",
    "FetchError",
    "FetchPolicy",
    "FetchTimeout",
    "ImageLimits",
    "ImageOptions",
    "InvalidOptions",
    "LimitExceeded",
    "MediaDecoder",
    "MediaError",
    "MediaFetcher",
    "ModalityDisabled",
    "NoMediaStream",
    "Overloaded",
    "PolicyError",
    "ReadError",
    "TooLarge",
    "TooManyRedirects",
    "UpstreamStatus",
    "VideoLimits",
    "VideoOptions",
    "decode_audio",
    "decode_image",
    "decode_video",
    "probe_audio",
    "probe_image",
    "probe_video",
    "sample_frame_indices",
    "tensor_sha256",
]
