"""``CheckVideoLimits`` and ``DecodeVideo``: the twins of ``probe_video`` and ``decode_video``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from dynamo_media._media import EncodedMedia, ProbedMedia
from dynamo_media._options import changed_fields, format_bytes
from dynamo_media.config import SAMPLING_OPTIONS, SamplingRule, VideoLimits, VideoOptions
from dynamo_media.decode import decode_video, probe_video
from dynamo_media.transforms._transform import DecodeTransform, Transform

__all__ = ["CheckVideoLimits", "DecodeVideo"]

# What CheckVideoLimits passes to probe_video: the options that choose the frames and their size.
_SAMPLING = (*SAMPLING_OPTIONS, "strict", "max_pixels")


class CheckVideoLimits(Transform):
    """Probes the video (header and packet scan), picks the frames, and refuses it before any
    frame is decoded when it is over the limits.

    Functional twin: ``probe_video``. The probe travels on in ``ProbedMedia``, so ``DecodeVideo``
    decodes exactly the frames chosen here; a ``DecodeVideo`` with other sampling options refuses
    it (``InvalidOptions``).

    Args:
        limits: the limits. Default: ``VideoLimits()``.
        sampling, num_frames, fps, indices, max_frames, min_frames, frames_multiple,
            start_seconds, end_seconds, strict, max_pixels: the sample, as ``decode_video``.
        device: where the opened decoder decodes (NVDEC for ``"cuda"``). Default: ``"cpu"``.
    """

    stage = "guard"

    def __init__(
        self,
        limits: VideoLimits | None = None,
        *,
        sampling: SamplingRule = "uniform",
        num_frames: int | None = None,
        fps: float | None = None,
        indices: Sequence[int] | None = None,
        max_frames: int | None = None,
        min_frames: int | None = None,
        frames_multiple: int | None = None,
        start_seconds: float | None = None,
        end_seconds: float | None = None,
        strict: bool = False,
        max_pixels: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.device = device
        self.options = VideoOptions(
            sampling=sampling,
            num_frames=num_frames,
            fps=fps,
            indices=None if indices is None else tuple(indices),
            max_frames=max_frames,
            min_frames=min_frames,
            frames_multiple=frames_multiple,
            start_seconds=start_seconds,
            end_seconds=end_seconds,
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
    """Decodes sampled frames to ``uint8`` RGB. Functional twin: ``decode_video``.

    Options are checked at construction (``fps`` with ``num_frames``, or ``indices`` with either,
    is ``InvalidOptions``, naming the keys).
    Args: as ``decode_video``.
    """

    decode = staticmethod(decode_video)

    def __init__(
        self,
        *,
        sampling: SamplingRule = "uniform",
        num_frames: int | None = None,
        fps: float | None = None,
        indices: Sequence[int] | None = None,
        max_frames: int | None = None,
        min_frames: int | None = None,
        frames_multiple: int | None = None,
        start_seconds: float | None = None,
        end_seconds: float | None = None,
        strict: bool = False,
        max_pixels: int | None = None,
        layout: Literal["TCHW", "THWC"] = "TCHW",
        device: str = "cpu",
        limits: VideoLimits | None = None,
    ) -> None:
        self.options = VideoOptions(
            sampling=sampling,
            num_frames=num_frames,
            fps=fps,
            indices=None if indices is None else tuple(indices),
            max_frames=max_frames,
            min_frames=min_frames,
            frames_multiple=frames_multiple,
            start_seconds=start_seconds,
            end_seconds=end_seconds,
            strict=strict,
            max_pixels=max_pixels,
            layout=layout,
            limits=limits or VideoLimits(),
        )
        self.device = device
