"""``CheckVideoLimits`` and ``DecodeVideo``: the twins of ``probe_video`` and ``decode_video``."""

from __future__ import annotations

from typing import Any, Literal

from dynamo_media._media import EncodedMedia, ProbedMedia
from dynamo_media._options import changed_fields, format_bytes
from dynamo_media.config import VideoLimits, VideoOptions
from dynamo_media.decode import decode_video, probe_video
from dynamo_media.transforms._transform import DecodeTransform, Transform

__all__ = ["CheckVideoLimits", "DecodeVideo"]

_SAMPLING = ("num_frames", "fps", "max_frames", "strict", "max_pixels")


class CheckVideoLimits(Transform):
    """Probes the video (header and packet scan), picks the frames, and refuses it before any
    frame is decoded when it is over the limits.

    Functional twin: ``probe_video``. The probe travels on in ``ProbedMedia``, so ``DecodeVideo``
    decodes exactly the frames chosen here; a ``DecodeVideo`` with other sampling options refuses
    it (``InvalidOptions``).

    Args:
        limits: the limits. Default: ``VideoLimits()``.
        num_frames, fps, max_frames, strict, max_pixels: the sample, as ``decode_video``.
        device: where the opened decoder decodes (NVDEC for ``"cuda"``). Default: ``"cpu"``.
    """

    stage = "guard"

    def __init__(
        self,
        limits: VideoLimits | None = None,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        strict: bool = False,
        max_pixels: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.device = device
        self.options = VideoOptions(
            num_frames=num_frames,
            fps=fps,
            max_frames=max_frames,
            strict=strict,
            max_pixels=max_pixels,
            limits=limits or VideoLimits(),
        )

    @classmethod
    def from_options(cls, options: VideoOptions, *, device: str = "cpu") -> CheckVideoLimits:
        """The transform for configured options."""
        sampling = {k: getattr(options, k) for k in _SAMPLING}
        return cls(options.limits, **sampling, device=device)

    def forward(self, inpt: EncodedMedia) -> ProbedMedia:
        o = self.options
        sample = {k: getattr(o, k) for k in _SAMPLING} | {"device": self.device, "limits": o.limits}
        return ProbedMedia(inpt, probe_video(inpt.data, **sample), sample)

    def repr_options(self) -> dict[str, Any]:
        limits = self.options.limits
        shown = changed_fields(self.options) | {"max_alloc": format_bytes(limits.max_alloc)}
        device = {"device": self.device} if self.device != "cpu" else {}
        return shown | changed_fields(limits, skip=("max_alloc",)) | device


class DecodeVideo(DecodeTransform):
    """Decodes uniformly sampled frames to ``uint8`` RGB. Functional twin: ``decode_video``.

    Options are checked at construction (``fps`` with ``num_frames`` is ``InvalidOptions``).
    Args: as ``decode_video``.
    """

    decode = staticmethod(decode_video)

    def __init__(
        self,
        *,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        strict: bool = False,
        max_pixels: int | None = None,
        layout: Literal["TCHW", "THWC"] = "TCHW",
        device: str = "cpu",
        limits: VideoLimits | None = None,
    ) -> None:
        self.options = VideoOptions(
            num_frames=num_frames,
            fps=fps,
            max_frames=max_frames,
            strict=strict,
            max_pixels=max_pixels,
            layout=layout,
            limits=limits or VideoLimits(),
        )
        self.device = device
