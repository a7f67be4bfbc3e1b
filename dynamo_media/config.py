"""Configuration: the fetch policy, per-modality options and limits, and their per-request merge.

``MediaFetcher`` and ``MediaDecoder`` keep the seed's call-for-call API::

    fetcher = MediaFetcher()
    fetcher.user_agent("dynamo"); fetcher.timeout_ms(15000)
    fetcher.allowed_media_domains(["google.com"])
    decoder = MediaDecoder()
    decoder.enable_video({"fps": 2.0, "max_frames": 128, "limits": {"max_alloc": 384 << 20}})

Both round-trip through JSON with ``to_dict``/``from_dict``. The option classes are frozen
dataclasses validated at construction (see ``_options.py``); ``Options.merge`` applies a request's
``media_io_kwargs`` over the configured defaults.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dynamo_media._errors import InvalidOptions, ModalityDisabled
from dynamo_media._options import Options, changed_fields

if TYPE_CHECKING:
    import ipaddress

    from dynamo_media.fetch import HttpClient
    from dynamo_media.nixl import RegistrationPool
    from dynamo_media.transforms import Compose, EncodedMedia

__all__ = [
    "DEFAULT_MAX_BYTES",
    "AudioLimits",
    "AudioOptions",
    "FetchPolicy",
    "ImageLimits",
    "ImageOptions",
    "MediaDecoder",
    "MediaFetcher",
    "Modality",
    "VideoLimits",
    "VideoOptions",
    "ascii_host",
]

Modality = Literal["image", "video", "audio"]
MODALITIES: tuple[Modality, ...] = ("image", "video", "audio")

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

    Attributes:
        fps: frames sampled per second of video. Default: ``None``.
        num_frames: exact number of frames sampled (exclusive with ``fps``). Default: ``None``.
        max_frames: cap on the samples. Default: ``None``. With neither ``fps`` nor
            ``num_frames``, every frame is sampled up to this cap.
        strict: fail on a frame that does not decode, or on more frames asked for than the
            video has; otherwise drop or clamp. Default: ``False``.
        max_pixels: shrink frames inside the decoder to at most this many pixels, keeping the
            aspect ratio. Default: ``None`` (source size).
        layout: ``"TCHW"`` or ``"THWC"``. Default: ``"TCHW"``.
        limits: see ``VideoLimits``.
    """

    _exclusive: ClassVar[tuple[tuple[str, ...], ...]] = (("fps", "num_frames"),)

    fps: float | None = None
    num_frames: int | None = None
    max_frames: int | None = None
    strict: bool = False
    max_pixels: int | None = None
    layout: Literal["TCHW", "THWC"] = "TCHW"
    limits: VideoLimits = dataclasses.field(default_factory=VideoLimits)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fps is not None and self.num_frames is not None:
            raise InvalidOptions("fps and num_frames are mutually exclusive; set only one of them")


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


_OPTION_TYPES: dict[str, type[Options]] = {
    "image": ImageOptions,
    "video": VideoOptions,
    "audio": AudioOptions,
}

Resolver = Callable[[str, int], "Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]"]


class MediaFetcher:
    """Fetches media from ``http(s):``, ``data:`` and allowed ``file:`` URLs under a policy.

    The setters are the seed's (``fetcher.timeout_ms(15000)``); each returns the fetcher.

    Args:
        policy: the starting policy. Default: ``FetchPolicy()``.
        resolver: maps ``(host, port)`` to addresses. Default: the system's DNS.
    """

    def __init__(self, policy: FetchPolicy | None = None, *, resolver: Resolver | None = None):
        self.policy = policy or FetchPolicy()
        self._resolver = resolver
        self._client: HttpClient | None = None

    def _set(self, **changes: Any) -> MediaFetcher:
        self.policy = dataclasses.replace(self.policy, **changes)
        if self._client is not None:  # its pooled connections were made under the old policy
            self._client.session.close()
            self._client = None
        return self

    def user_agent(self, value: str) -> MediaFetcher:
        """Sets the ``User-Agent`` header."""
        return self._set(user_agent=value)

    def timeout_ms(self, value: int) -> MediaFetcher:
        """Sets the deadline of a whole download, in milliseconds."""
        return self._set(timeout_ms=value)

    def allow_direct_ip(self, value: bool) -> MediaFetcher:
        """Accepts (or refuses) URLs whose host is an IP address."""
        return self._set(allow_direct_ip=value)

    def allow_direct_port(self, value: bool) -> MediaFetcher:
        """Accepts (or refuses) URLs with an explicit port."""
        return self._set(allow_direct_port=value)

    def allowed_media_domains(self, domains: Iterable[str] | None) -> MediaFetcher:
        """Restricts fetching to these hosts (``*.example.com`` for subdomains); ``None``: any."""
        return self._set(allowed_media_domains=None if domains is None else tuple(domains))

    def allow_private_ips(self, value: bool) -> MediaFetcher:
        """Allows hosts that resolve to loopback, private and other non-public addresses."""
        return self._set(allow_private_ips=value)

    def max_redirects(self, value: int) -> MediaFetcher:
        """Sets how many redirect hops are followed (each one checked again)."""
        return self._set(max_redirects=value)

    def max_bytes(self, value: int) -> MediaFetcher:
        """Caps the size of a body or ``data:`` payload, in bytes."""
        return self._set(max_bytes=value)

    def allowed_local_media_path(self, path: str | None) -> MediaFetcher:
        """Allows ``file:`` URLs under this directory; ``None`` refuses them."""
        return self._set(allowed_local_media_path=None if path is None else str(path))

    def _http(self) -> HttpClient:
        if self._client is None:
            from dynamo_media.fetch import HttpClient

            self._client = HttpClient(self.policy, resolver=self._resolver)
        return self._client

    def fetch(self, url: str) -> EncodedMedia:
        """Fetches one URL under the policy.

        Args:
            url: an ``http(s):``, ``data:`` or ``file:`` URL.

        Returns:
            The bytes with their MIME type, source and content hash.

        Raises:
            PolicyError: the policy refuses the URL or a redirect.
            FetchError: the download failed (status, timeout, size).
            DecodeError: a ``data:`` URL whose base64 is invalid.
        """
        from dynamo_media.fetch import fetch_url

        return fetch_url(url, self.policy, self._http)

    async def afetch(self, url: str) -> EncodedMedia:
        """``fetch`` without blocking the event loop; many run at once on a thread pool."""
        from dynamo_media.fetch import fetch_executor

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(fetch_executor(), self.fetch, url)

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data."""
        return self.policy.to_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MediaFetcher:
        """A fetcher from ``to_dict``'s data; unknown keys raise ``InvalidOptions``."""
        return cls(FetchPolicy.from_dict(data, where="fetcher"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MediaFetcher) and other.policy == self.policy

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        changed = changed_fields(self.policy, skip=())
        return f"MediaFetcher({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


class MediaDecoder:
    """Which modalities are enabled, with their default options and limits.

    A modality that was not enabled is refused with ``ModalityDisabled``.
    """

    def __init__(self) -> None:
        self._options: dict[str, Options] = {}

    def _enable(self, modality: Modality, options: Mapping[str, Any] | Options | None) -> None:
        cls = _OPTION_TYPES[modality]
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            options = cls.from_dict(options, where=modality)  # type: ignore[arg-type]
        self._options[modality] = options

    def enable_image(self, options: Mapping[str, Any] | ImageOptions | None = None) -> None:
        """Enables images with these options (a mapping or ``ImageOptions``)."""
        self._enable("image", options)

    def enable_video(self, options: Mapping[str, Any] | VideoOptions | None = None) -> None:
        """Enables video with these options (a mapping or ``VideoOptions``)."""
        self._enable("video", options)

    def enable_audio(self, options: Mapping[str, Any] | AudioOptions | None = None) -> None:
        """Enables audio with these options (a mapping or ``AudioOptions``)."""
        self._enable("audio", options)

    @property
    def enabled(self) -> tuple[str, ...]:
        """The enabled modalities, in the order image, video, audio."""
        return tuple(m for m in MODALITIES if m in self._options)

    def options(self, modality: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """The options for one item: the defaults with a request's ``media_io_kwargs`` applied.

        Args:
            modality: ``"image"``, ``"video"`` or ``"audio"``.
            overrides: ``media_io_kwargs[modality]`` of the request. Default: ``None``.

        Returns:
            ``ImageOptions``, ``VideoOptions`` or ``AudioOptions``.

        Raises:
            ModalityDisabled: the modality is not enabled.
            InvalidOptions: the overrides are bad, or set ``limits``.
        """
        if modality not in self._options:
            enabled = ", ".join(self.enabled) or "none"
            raise ModalityDisabled(
                f"{modality} input is not enabled on this server (enabled: {enabled})"
            )
        return self._options[modality].merge(overrides, where=f"media_io_kwargs.{modality}")

    def pipeline(
        self,
        modality: Modality,
        *,
        fetcher: MediaFetcher | None = None,
        device: str = "cpu",
        nixl: RegistrationPool | bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> Compose:
        """The transforms that turn a URL into a decoded (and registered) item.

        Args:
            modality: ``"image"``, ``"video"`` or ``"audio"``.
            fetcher: fetches the URL. Default: a ``MediaFetcher()`` with the default policy.
            device: ``"cpu"`` or ``"cuda"``. Default: ``"cpu"``.
            nixl: end with ``NixlRegister`` into this pool (``True``: the process-wide pool),
                so that the pipeline returns ``RegisteredMedia``. Default: ``False``.
            overrides: a request's ``media_io_kwargs[modality]``. Default: ``None``.

        Returns:
            ``FetchURL -> Check*Limits -> Decode* [-> ToCUDA] [-> NixlRegister]``.
        """
        from dynamo_media.transforms import build_pipeline

        options = self.options(modality, overrides)
        return build_pipeline(
            modality, options, fetcher=fetcher or MediaFetcher(), device=device, nixl=nixl
        )

    def to_dict(self) -> dict[str, Any]:
        """The enabled modalities and their options as JSON-ready data."""
        return {m: self._options[m].to_dict() for m in self.enabled}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MediaDecoder:
        """A decoder from ``to_dict``'s data; unknown modalities raise ``InvalidOptions``."""
        if not isinstance(data, Mapping):
            raise InvalidOptions(f"decoder must be a mapping, got {type(data).__name__}")
        decoder = cls()
        for modality, options in data.items():
            if modality not in _OPTION_TYPES:
                raise InvalidOptions(
                    f"Unknown modality {modality!r} in decoder. Allowed keys: audio, image, video"
                )
            decoder._enable(modality, options)  # type: ignore[arg-type]
        return decoder

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MediaDecoder) and other._options == self._options

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MediaDecoder({', '.join(f'{m}={self._options[m]!r}' for m in self.enabled)})"
