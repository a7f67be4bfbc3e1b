"""Configuration values: the fetch policy, per-modality options and limits.

Value objects only: frozen dataclasses validated at construction (see ``_options.py``), whose
``Options.merge`` applies a request's ``media_io_kwargs`` over the configured defaults. The actors
built from them live above: ``MediaFetcher`` in ``fetch/``, ``MediaDecoder`` in ``_decoder.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from dynamo_media._errors import InvalidOptions
from dynamo_media._options import Options

if TYPE_CHECKING:
    import ipaddress

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MODALITIES",
    "SAMPLING_MODES",
    "SAMPLING_OPTIONS",
    "AudioLimits",
    "AudioOptions",
    "FetchPolicy",
    "ImageLimits",
    "ImageOptions",
    "Modality",
    "Resolver",
    "SamplingRule",
    "VideoLimits",
    "VideoOptions",
    "ascii_host",
]

# The one place the modality names are spelled: import these, never repeat the list.
Modality = Literal["image", "video", "audio"]
MODALITIES: tuple[Modality, ...] = get_args(Modality)

# The frame-sampling rules of Note [sampling rules] in sampling.py, which implements them.
SamplingRule = Literal["uniform", "qwen2_vl", "llava_onevision", "internvl"]

# The ways of choosing frames, mutually exclusive: a request that sets one replaces another.
SAMPLING_MODES = ("fps", "num_frames", "indices")

# The options that choose the frames (VideoOptions' fields, and decode_video's keywords).
SAMPLING_OPTIONS = (
    "sampling",
    "num_frames",
    "fps",
    "indices",
    "max_frames",
    "min_frames",
    "frames_multiple",
    "start_seconds",
    "end_seconds",
)

MiB = 1 << 20
DEFAULT_MAX_BYTES = 256 * MiB
DEFAULT_TIMEOUT_MS = 30_000
DEFAULT_MAX_REDIRECTS = 3
DEFAULT_USER_AGENT = "dynamo-media/0.1"

_ZERO_OK = {"min": 0}


def ascii_host(name: str) -> str:
    """A host name as the fetch policy compares it: lower case, without a trailing dot, in IDNA's
    ASCII form (``Bücher.Example.`` -> ``xn--bcher-kva.example``). Both the hosts of URLs and the
    entries of ``allowed_media_domains`` go through it, so that each matches in either form.

    Raises:
        ValueError: IDNA cannot encode the name; the message says why, for the caller's message.
    """
    name = name.lower()
    try:
        return (name[:-1] if name.endswith(".") else name).encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(
            "IDNA cannot encode it (an empty label, a label over 63 characters, or a character "
            "IDNA forbids)"
        ) from exc


def _allowlist_entry(index: int, entry: str) -> str:
    wildcard, name = ("*.", entry[2:]) if entry.startswith("*.") else ("", entry)
    try:
        return wildcard + ascii_host(name)
    except ValueError as exc:
        raise InvalidOptions(
            f"FetchPolicy.allowed_media_domains[{index}] ({entry!r}) is not a host name: {exc}; "
            "write example.com or *.example.com"
        ) from exc


@dataclasses.dataclass(frozen=True)
class FetchPolicy(Options):
    """What a ``MediaFetcher`` may fetch, and how long and how much. See README "Fetch policy".

    Attributes:
        user_agent: the ``User-Agent`` header. Default: ``"dynamo-media/0.1"``.
        timeout_ms: one deadline for a whole download, redirects included, counted from the
            ``fetch`` (or ``afetch``) call. Default: 30000.
        allow_direct_ip: accept URLs whose host is an IP address literal. Default: ``False``.
        allow_direct_port: accept URLs with an explicit port. Default: ``False``.
        allowed_media_domains: hosts that may be fetched, exact (case-insensitive, trailing dot
            ignored) or ``*.example.com`` for subdomains; kept as ``ascii_host`` writes them, so
            ``bücher.example`` matches its host in either form. Default: ``None``, any public host.
        allow_private_ips: allow hosts that resolve to loopback, private, link-local, site-local,
            multicast, reserved or unspecified addresses, or to IPv6 addresses that carry such an
            IPv4 address (6to4, NAT64, Teredo, ISATAP, IPv4-mapped). Default: ``False``.
        max_redirects: redirect hops followed, each checked again. Default: 3.
        max_bytes: cap on a body (and a ``data:`` URL's payload). Default: 256 MiB.
        allowed_local_media_path: a directory under which ``file:`` URLs may be read.
            Default: ``None``, ``file:`` refused.
        http_cache_bytes: bytes of cacheable http(s) response bodies kept between fetches
            (``Cache-Control: max-age``, ``ETag`` / ``Last-Modified`` revalidation; least
            recently used first out; see Note [HTTP cache] in ``fetch/_http_cache.py``).
            Default: 0, off: every fetch downloads.
    """

    user_agent: str = DEFAULT_USER_AGENT
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    allow_direct_ip: bool = False
    allow_direct_port: bool = False
    allowed_media_domains: tuple[str, ...] | None = None
    allow_private_ips: bool = False
    max_redirects: int = dataclasses.field(default=DEFAULT_MAX_REDIRECTS, metadata=_ZERO_OK)
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_local_media_path: str | None = None
    http_cache_bytes: int = dataclasses.field(default=0, metadata=_ZERO_OK)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.allowed_media_domains is not None:
            entries = tuple(
                _allowlist_entry(i, entry) for i, entry in enumerate(self.allowed_media_domains)
            )
            object.__setattr__(self, "allowed_media_domains", entries)


@dataclasses.dataclass(frozen=True)
class ImageLimits(Options):
    """Limits checked from an image's header before any pixel is decoded.

    Attributes:
        max_image_width: widest image accepted, in pixels. Default: 16384.
        max_image_height: tallest image accepted, in pixels. Default: 16384.
        max_alloc: bytes of the decoded output (``W*H*C``). Default: 256 MiB.
    """

    max_image_width: int = 16384
    max_image_height: int = 16384
    max_alloc: int = 256 * MiB


@dataclasses.dataclass(frozen=True)
class ImageOptions(Options):
    """How images decode.

    Attributes:
        mode: ``"RGB"``, or ``"RGBA"`` to keep transparency. Default: ``"RGB"``.
        layout: ``"CHW"`` (torch) or ``"HWC"`` (channels last). Default: ``"CHW"``.
        background: RGB colour that transparent pixels are composited on in ``"RGB"`` mode.
            Default: white, as vLLM.
        limits: see ``ImageLimits``.
    """

    mode: Literal["RGB", "RGBA"] = "RGB"
    layout: Literal["CHW", "HWC"] = "CHW"
    background: tuple[int, int, int] = dataclasses.field(
        default=(255, 255, 255), metadata={"min": 0, "max": 255}
    )
    limits: ImageLimits = dataclasses.field(default_factory=ImageLimits)


@dataclasses.dataclass(frozen=True)
class VideoLimits(Options):
    """Limits checked from a video's stream metadata before any frame is decoded.

    Attributes:
        max_alloc: bytes of the decoded output (``n*H*W*3``). Default: 1 GiB.
        max_video_width: widest source accepted, in pixels. Default: 8192.
        max_video_height: tallest source accepted, in pixels. Default: 8192.
        max_duration_seconds: longest source accepted. Default: ``None`` (no limit).
    """

    max_alloc: int = 1024 * MiB
    max_video_width: int = 8192
    max_video_height: int = 8192
    max_duration_seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class VideoOptions(Options):
    """How videos are sampled and decoded (see ``sampling.py``).

    A request's ``media_io_kwargs`` that sets one of ``fps``, ``num_frames`` and ``indices``
    replaces the configured one (they are one exclusive group).

    Attributes:
        sampling: the rule that places the frames (Note [sampling rules] in ``sampling.py``):
            ``"uniform"`` (first and last frame included), ``"qwen2_vl"``,
            ``"llava_onevision"`` or ``"internvl"``, as the model family's HF processor.
            Default: ``"uniform"``.
        fps: frames sampled per second of video. Default: ``None``.
        num_frames: exact number of frames sampled (exclusive with ``fps``). Default: ``None``.
        indices: explicit frame indices, strictly increasing (exclusive with ``fps`` and
            ``num_frames``, and with a time window); the rule, ``min_frames`` and
            ``frames_multiple`` do not apply to them. Default: ``None``.
        max_frames: cap on the samples (and on the length of ``indices``). Default: ``None``.
            With neither ``fps`` nor ``num_frames``, every frame is sampled up to this cap.
        min_frames: floor on a count from ``fps`` or from all frames, as far as the video has
            frames. Default: ``None``, the rule's (4 for ``"qwen2_vl"``, else none).
        frames_multiple: round the count DOWN to a multiple of this (a temporal patch);
            a count below one multiple stays. Default: ``None``, the rule's (2 for
            ``"qwen2_vl"``, else none).
        start_seconds: sample only frames whose ``pts`` is at or after this. Default: ``None``.
        end_seconds: sample only frames whose ``pts`` is before this; the window is half-open,
            ``[start_seconds, end_seconds)``, and ``fps`` counts its duration.
            Default: ``None``.
        strict: fail on a frame that does not decode, or on more frames asked for than the
            video has; otherwise drop or clamp. Default: ``False``.
        max_pixels: shrink frames inside the decoder to at most this many pixels, keeping the
            aspect ratio. Default: ``None`` (source size).
        layout: ``"TCHW"`` or ``"THWC"``. Default: ``"TCHW"``.
        limits: see ``VideoLimits``.
    """

    _exclusive: ClassVar[tuple[tuple[str, ...], ...]] = (SAMPLING_MODES,)

    sampling: SamplingRule = "uniform"
    fps: float | None = None
    num_frames: int | None = None
    indices: tuple[int, ...] | None = dataclasses.field(default=None, metadata=_ZERO_OK)
    max_frames: int | None = None
    min_frames: int | None = None
    frames_multiple: int | None = None
    start_seconds: float | None = dataclasses.field(default=None, metadata=_ZERO_OK)
    end_seconds: float | None = None
    strict: bool = False
    max_pixels: int | None = None
    layout: Literal["TCHW", "THWC"] = "TCHW"
    limits: VideoLimits = dataclasses.field(default_factory=VideoLimits)

    def __post_init__(self) -> None:
        super().__post_init__()  # also refuses two of SAMPLING_MODES (``_exclusive``)
        start, end = self.start_seconds, self.end_seconds
        if start is not None and end is not None and end <= start:
            raise InvalidOptions(
                f"end_seconds ({end}) must be > start_seconds ({start}): the window is "
                "[start_seconds, end_seconds)"
            )
        for key in ("min_frames", "frames_multiple"):
            value = getattr(self, key)
            if value is not None and self.max_frames is not None and value > self.max_frames:
                raise InvalidOptions(f"{key} ({value}) must be <= max_frames ({self.max_frames})")
        if self.indices is not None:
            self._check_indices(self.indices)

    def _check_indices(self, indices: tuple[int, ...]) -> None:
        if (self.start_seconds, self.end_seconds) != (None, None):
            raise InvalidOptions(
                "indices and start_seconds/end_seconds are mutually exclusive: indices number "
                "the frames of the whole video; drop the window or the indices"
            )
        if not indices:
            raise InvalidOptions("indices is empty; give at least one frame index")
        if any(b <= a for a, b in itertools.pairwise(indices)):
            raise InvalidOptions(f"indices must be strictly increasing, got {list(indices[:16])}")
        if self.max_frames is not None and len(indices) > self.max_frames:
            raise InvalidOptions(
                f"{len(indices)} indices, over max_frames ({self.max_frames}); send fewer indices"
            )


@dataclasses.dataclass(frozen=True)
class AudioLimits(Options):
    """Limits checked from the metadata, and again while decoding (metadata can lie).

    Attributes:
        max_duration_seconds: longest audio accepted. Default: 600.
        max_alloc: bytes of the decoded output (``float32``). Default: 256 MiB.
    """

    max_duration_seconds: float = 600.0
    max_alloc: int = 256 * MiB


@dataclasses.dataclass(frozen=True)
class AudioOptions(Options):
    """How audio decodes. Resampling and the downmix happen in FFmpeg.

    Attributes:
        sample_rate: output rate in Hz. Default: ``None`` (the source's).
        num_channels: output channels; 1 downmixes as FFmpeg does, ``(L+R)/sqrt(2)`` for
            stereo. Default: ``None`` (the source's).
        start_seconds: decode from this time. Default: ``None`` (the start).
        stop_seconds: decode up to this time, exclusive. Default: ``None`` (the end).
        layout: ``"CN"`` (channels, samples) or ``"NC"``. Default: ``"CN"``.
        limits: see ``AudioLimits``.
    """

    sample_rate: int | None = None
    num_channels: int | None = None
    start_seconds: float | None = dataclasses.field(default=None, metadata=_ZERO_OK)
    stop_seconds: float | None = None
    layout: Literal["CN", "NC"] = "CN"
    limits: AudioLimits = dataclasses.field(default_factory=AudioLimits)

    def __post_init__(self) -> None:
        super().__post_init__()
        start, stop = self.start_seconds, self.stop_seconds
        if start is not None and stop is not None and stop <= start:
            raise InvalidOptions(f"stop_seconds ({stop}) must be > start_seconds ({start})")


OPTION_TYPES: dict[str, type[Options]] = {
    "image": ImageOptions,
    "video": VideoOptions,
    "audio": AudioOptions,
}

Resolver = Callable[[str, int], "Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]"]
