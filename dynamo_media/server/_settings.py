"""The server's configuration file: the fetcher, the decoder, and the server's own settings.

    {"fetcher": {...MediaFetcher.to_dict()...},
     "decoder": {"image": {...}, "video": {...}, "audio": {...}},
     "server": {"model": "dynamo-media-echo", "max_concurrent_requests": 16, ...}}

Every section is optional; what is missing takes the embedded defaults (``default_config``).

A model preset (``dynamo_media.presets``) then merges its decoder options over the enabled
modalities, as a request's ``media_io_kwargs`` would; a request's own still override it.

# Note [served layouts]
The served defaults are channels last, images ``HWC`` and video ``THWC``, while the library's
(``ImageOptions``, ``VideoOptions``, ``decode_image``, ``decode_video``) stay torch's ``CHW`` and
``TCHW``. Channels last is what Dynamo's frontend emits and what Dynamo's backends read
(``read_decoded_media_via_nixl`` takes ``array[..., :3]``), what vLLM's video loader returns, and
the decoders' own memory: a contiguous item from 4 MiB is registered where it lies (zero-copy),
where a channels-first view of it needs a strided copy into the pool first. Measured: against
Dynamo 1.6.1 end to end (benchmarks/results/dynamo_peer.md), registration of a 4K JPEG 14.4 ms
-> 0.3 ms, of a 1080p one 3.8 -> 0.3 ms; 20 frames of 720p video (10 s at 2 fps) 22-55 ms ->
3.8-5.0 ms. A config that writes its own ``decoder.image`` or ``decoder.video`` section picks
the layout there (channels first unless it says otherwise); a request can still ask with
``media_io_kwargs``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynamo_media._cache import DEFAULT_CACHE_BYTES, DEFAULT_CACHE_DIR_BYTES
from dynamo_media._decoder import MediaDecoder
from dynamo_media._errors import InvalidOptions
from dynamo_media._options import Options
from dynamo_media.config import OPTION_TYPES
from dynamo_media.fetch import MediaFetcher
from dynamo_media.presets import get_preset

__all__ = ["ServerConfig", "ServerSettings", "default_config", "load_config", "parse_config"]

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServerSettings(Options):
    """How the frontend serves.

    Attributes:
        model: the model name the reference backend answers as. Default: ``"dynamo-media-echo"``.
        max_concurrent_requests: media requests processed at once; more wait. Default: 16.
        queue_timeout_ms: how long a request waits for a slot (or for pool room) before 503
            with ``Retry-After``. Default: 2000.
        decode_workers: threads for guard, decode and registration. Default: 2.
        pool_capacity_bytes: NIXL registration pool: the bytes of decoded media held in flight
            at once. Default: 2 GiB.
        device: where decoded tensors go, ``"cpu"`` or ``"cuda"``. Default: ``"cpu"``.
        backend_timeout_ms: how long the backend may take to answer. Default: 600000.
        cache_bytes: decoded media kept between requests, keyed by the fetched bytes and the
            options (Note [cache key] in ``_cache.py``), least recently used out first; ``0``
            turns the cache off. Default: 512 MiB.
        cache_dir: where entries that leave ``cache_bytes`` are written rather than dropped,
            in a fresh private directory per run, deleted at shutdown (Note [spill files] in
            ``_spill.py``). Default: ``None`` (dropped).
        cache_dir_bytes: the most bytes written under ``cache_dir``. Default: 4 GiB.
    """

    model: str = "dynamo-media-echo"
    max_concurrent_requests: int = 16
    queue_timeout_ms: int = 2000
    decode_workers: int = 2
    pool_capacity_bytes: int = 2048 * MiB
    device: str = "cpu"
    backend_timeout_ms: int = 600_000
    cache_bytes: int = dataclasses.field(default=DEFAULT_CACHE_BYTES, metadata={"min": 0})
    cache_dir: str | None = None
    cache_dir_bytes: int = DEFAULT_CACHE_DIR_BYTES


def default_config() -> dict[str, Any]:
    """The embedded configuration: images in ``HWC`` and video in ``THWC`` (Note [served layouts]);
    video at 2 fps, at most 128 frames (the seed's); audio at 16 kHz mono (what speech models
    take); safe limits; the default fetch policy."""
    return {
        "fetcher": MediaFetcher().to_dict(),
        "decoder": {
            "image": {
                "layout": "HWC",
                "limits": {
                    "max_image_width": 8192,
                    "max_image_height": 8192,
                    "max_alloc": 64 * MiB,
                },
            },
            "video": {
                "fps": 2.0,
                "max_frames": 128,
                "layout": "THWC",
                "limits": {"max_alloc": 384 * MiB},
            },
            "audio": {
                "sample_rate": 16000,
                "num_channels": 1,
                "limits": {"max_duration_seconds": 600, "max_alloc": 64 * MiB},
            },
        },
        "server": ServerSettings().to_dict(),
    }


@dataclasses.dataclass(eq=False)
class ServerConfig:
    """A parsed configuration file."""

    fetcher: MediaFetcher
    decoder: MediaDecoder
    settings: ServerSettings

    def to_dict(self) -> dict[str, Any]:
        return {
            "fetcher": self.fetcher.to_dict(),
            "decoder": self.decoder.to_dict(),
            "server": self.settings.to_dict(),
        }


def parse_config(data: Mapping[str, Any], *, preset: str | None = None) -> ServerConfig:
    """Builds a ``ServerConfig`` over the defaults; unknown sections are ``InvalidOptions``.

    Args:
        data: the configuration's sections.
        preset: a model preset (``dynamo_media.presets.PRESETS``) whose decoder options are
            merged over the enabled modalities' (a disabled one stays disabled).
            Default: ``None``.

    Raises:
        InvalidOptions: an unknown section, a bad value, or an unknown preset.
    """
    unknown = set(data) - {"fetcher", "decoder", "server"}
    if unknown:
        raise InvalidOptions(
            f"Unknown section {sorted(unknown)[0]!r} in the config. Allowed keys: decoder, "
            "fetcher, server"
        )
    base = default_config()
    decoder = dict(data.get("decoder", base["decoder"]))
    if preset is not None:
        for modality, options in get_preset(preset).media.items():
            if modality in decoder:
                configured = OPTION_TYPES[modality].from_dict(decoder[modality], where=modality)
                merged = configured.merge(options, where=f"preset {preset}.{modality}")
                decoder[modality] = merged.to_dict()
    return ServerConfig(
        fetcher=MediaFetcher.from_dict({**base["fetcher"], **data.get("fetcher", {})}),
        decoder=MediaDecoder.from_dict(decoder),
        settings=ServerSettings.from_dict(
            {**base["server"], **data.get("server", {})}, where="server"
        ),
    )


def load_config(path: str | Path | None, *, preset: str | None = None) -> ServerConfig:
    """Reads a JSON configuration file, or the embedded defaults when ``path`` is ``None``; with
    a ``preset``, as ``parse_config``."""
    if path is None:
        return parse_config({}, preset=preset)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidOptions(f"Cannot read the config file {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InvalidOptions(f"The config file {path} must hold a JSON object")
    return parse_config(data, preset=preset)
