"""``CheckAudioLimits`` and ``DecodeAudio``: the twins of ``probe_audio`` and ``decode_audio``."""

from __future__ import annotations

from typing import Any, Literal

from dynamo_media._media import EncodedMedia, ProbedMedia
from dynamo_media._options import changed_fields, format_bytes
from dynamo_media.config import AudioLimits, AudioOptions
from dynamo_media.decode import decode_audio, probe_audio
from dynamo_media.transforms._transform import DecodeTransform, Transform

__all__ = ["CheckAudioLimits", "DecodeAudio"]

_OUTPUT = ("sample_rate", "num_channels", "start_seconds", "stop_seconds")


class CheckAudioLimits(Transform):
    """Reads the audio header and refuses it before decoding when its output would be over the
    limits (decoding checks again: headers can lie). Functional twin: ``probe_audio``.

    Args:
        limits: the limits. Default: ``AudioLimits()``.
        sample_rate, num_channels, start_seconds, stop_seconds: the output, as ``decode_audio``.
    """

    stage = "guard"

    def __init__(
        self,
        limits: AudioLimits | None = None,
        *,
        sample_rate: int | None = None,
        num_channels: int | None = None,
        start_seconds: float | None = None,
        stop_seconds: float | None = None,
    ) -> None:
        self.options = AudioOptions(
            sample_rate=sample_rate,
            num_channels=num_channels,
            start_seconds=start_seconds,
            stop_seconds=stop_seconds,
            limits=limits or AudioLimits(),
        )

    @classmethod
    def from_options(cls, options: AudioOptions) -> CheckAudioLimits:
        """The transform for configured options."""
        return cls(options.limits, **{k: getattr(options, k) for k in _OUTPUT})

    def forward(self, inpt: EncodedMedia) -> ProbedMedia:
        o = self.options
        output = {k: getattr(o, k) for k in _OUTPUT} | {"limits": o.limits}
        return ProbedMedia(inpt, probe_audio(inpt.data, **output), output)

    def repr_options(self) -> dict[str, Any]:
        limits = self.options.limits
        return changed_fields(self.options) | {
            "max_duration_seconds": limits.max_duration_seconds,
            "max_alloc": format_bytes(limits.max_alloc),
        }


class DecodeAudio(DecodeTransform):
    """Decodes audio to ``float32`` in [-1, 1]. Functional twin: ``decode_audio``.

    Options are checked at construction. Args: as ``decode_audio``.
    """

    decode = staticmethod(decode_audio)

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        num_channels: int | None = None,
        start_seconds: float | None = None,
        stop_seconds: float | None = None,
        layout: Literal["CN", "NC"] = "CN",
        device: str = "cpu",
        limits: AudioLimits | None = None,
    ) -> None:
        self.options = AudioOptions(
            sample_rate=sample_rate,
            num_channels=num_channels,
            start_seconds=start_seconds,
            stop_seconds=stop_seconds,
            layout=layout,
            limits=limits or AudioLimits(),
        )
        self.device = device
