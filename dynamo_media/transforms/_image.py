"""``CheckImageLimits`` and ``DecodeImage``, the transform twins of ``decode_image``."""

from __future__ import annotations

from typing import Any, Literal

from dynamo_media._media import EncodedMedia, ProbedMedia
from dynamo_media._options import changed_fields, format_bytes
from dynamo_media.config import ImageLimits, ImageOptions
from dynamo_media.decode import check_image_limits, decode_image, probe_image
from dynamo_media.transforms._transform import DecodeTransform, Transform

__all__ = ["CheckImageLimits", "DecodeImage"]

_WHITE = (255, 255, 255)


class CheckImageLimits(Transform):
    """Reads the image header and refuses it before decoding when it is over the limits.

    Functional twin: ``probe_image`` + ``check_image_limits``. The header it read travels on in
    ``ProbedMedia``, so ``DecodeImage`` does not read it again (if its options agree).

    Args:
        limits: the limits. Default: ``ImageLimits()``.
        mode: the output mode the bytes are counted for. Default: ``"RGB"``.
    """

    stage = "guard"

    def __init__(
        self, limits: ImageLimits | None = None, *, mode: Literal["RGB", "RGBA"] = "RGB"
    ) -> None:
        self.options = ImageOptions(mode=mode, limits=limits or ImageLimits())

    def forward(self, inpt: EncodedMedia) -> ProbedMedia:
        o = self.options
        info = probe_image(inpt.data)
        check_image_limits(info, mode=o.mode, limits=o.limits)
        return ProbedMedia(inpt, info, {"mode": o.mode, "limits": o.limits})

    def repr_options(self) -> dict[str, Any]:
        limits = self.options.limits
        return {
            "max_image_width": limits.max_image_width,
            "max_image_height": limits.max_image_height,
            "max_alloc": format_bytes(limits.max_alloc),
        } | changed_fields(self.options)


class DecodeImage(DecodeTransform):
    """Decodes an image to ``uint8`` RGB(A). Functional twin: ``decode_image``.

    Options are checked at construction (``InvalidOptions``). Args: as ``decode_image``.
    """

    decode = staticmethod(decode_image)

    def __init__(
        self,
        *,
        mode: Literal["RGB", "RGBA"] = "RGB",
        layout: Literal["CHW", "HWC"] = "CHW",
        background: tuple[int, int, int] = _WHITE,
        device: str = "cpu",
        limits: ImageLimits | None = None,
    ) -> None:
        self.options = ImageOptions(
            mode=mode, layout=layout, background=background, limits=limits or ImageLimits()
        )
        self.device = device
