"""``MediaDecoder``: which modalities are enabled, with what options, and the pipelines built
from them (above ``transforms/``, which it builds on).

    decoder = MediaDecoder()
    decoder.enable_video({"fps": 2.0, "max_frames": 128, "limits": {"max_alloc": 384 << 20}})
    pipe = decoder.pipeline("video", fetcher=fetcher)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo_media._errors import InvalidOptions, ModalityDisabled
from dynamo_media._options import Options
from dynamo_media.config import (
    MODALITIES,
    OPTION_TYPES,
    AudioOptions,
    ImageOptions,
    Modality,
    VideoOptions,
)
from dynamo_media.fetch import MediaFetcher
from dynamo_media.nixl import RegistrationPool
from dynamo_media.transforms import Compose, build_pipeline

__all__ = ["MediaDecoder"]


class MediaDecoder:
    """Which modalities are enabled, with their default options and limits.

    A modality that was not enabled is refused with ``ModalityDisabled``.
    """

    def __init__(self) -> None:
        self._options: dict[str, Options] = {}

    def _enable(self, modality: Modality, options: Mapping[str, Any] | Options | None) -> None:
        cls = OPTION_TYPES[modality]
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
            if modality not in OPTION_TYPES:
                raise InvalidOptions(
                    f"Unknown modality {modality!r} in decoder. "
                    f"Allowed keys: {', '.join(sorted(MODALITIES))}"
                )
            decoder._enable(modality, options)  # type: ignore[arg-type]
        return decoder

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MediaDecoder) and other._options == self._options

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MediaDecoder({', '.join(f'{m}={self._options[m]!r}' for m in self.enabled)})"
