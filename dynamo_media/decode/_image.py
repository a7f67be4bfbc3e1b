"""Image decoding: limits from the header first, then torchcodec (or Pillow for the rest).

JPEG, PNG and still WebP decode with torchcodec's image decoders (libjpeg-turbo, libpng,
libwebp): as fast as torchvision.io and 1.8-2.1x faster than Pillow on JPEG, and unlike
torchvision 0.29's ``decode_png``, which crashes the process (SIGSEGV) on a PNG with a bad CRC,
torchcodec reports libpng's errors as exceptions (see benchmarks/images.py and
tests/test_image.py). GIF (first frame only: the native decoders decode every frame of an
animation), animated WebP, BMP, TIFF, AVIF and whatever else Pillow opens go through Pillow.
Every path gives 8-bit RGB (or RGBA): EXIF orientation applied (torchcodec does it for JPEG, PNG
and WebP), grayscale/palette/CMYK expanded, 16-bit scaled to 8, and transparency
composited on ``background`` in RGB mode.

# Note [layout views]
libjpeg, libpng and libwebp write pixels channels-last. The decoders return ``CHW`` as a permuted
view of that ``HWC`` memory, so ``layout="CHW"`` (the default) costs no copy, and the tensor is not
contiguous. Whoever needs contiguous memory (NIXL registration) copies once, into its own buffer.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torchcodec import decoders as tcd

from dynamo_media._errors import DecodeError, LimitExceeded, decode_failures
from dynamo_media._media import DecodedMedia, options_hash
from dynamo_media._options import format_bytes
from dynamo_media.config import ImageLimits, ImageOptions
from dynamo_media.decode._image_header import ImageInfo, probe_image
from dynamo_media.decode._source import Source, attached_probe, content_hash_of, read_source

__all__ = ["check_image_limits", "decode_image"]

_NATIVE: dict[str, Callable[..., Any]] = {
    "jpeg": tcd.decode_jpeg,
    "png": tcd.decode_png,
    "webp": tcd.decode_webp,
}
_DEFAULT_LIMITS = ImageLimits()
_WHITE = (255, 255, 255)


def check_image_limits(info: ImageInfo, *, mode: str = "RGB", limits: ImageLimits) -> None:
    """Refuses an image whose header says it would pass the limits.

    Args:
        info: the header, from ``probe_image``.
        mode: the output mode, ``"RGB"`` (3 bytes a pixel) or ``"RGBA"`` (4).
        limits: the limits.

    Raises:
        LimitExceeded: width, height or ``W*H*C`` bytes over the limit, with the numbers.
    """
    size = f"{info.width}x{info.height}"
    if info.width > limits.max_image_width:
        raise LimitExceeded(
            f"image is {size}, wider than limits.max_image_width ({limits.max_image_width}); "
            "send a smaller image",
            limit="max_image_width",
        )
    if info.height > limits.max_image_height:
        raise LimitExceeded(
            f"image is {size}, taller than limits.max_image_height "
            f"({limits.max_image_height}); send a smaller image",
            limit="max_image_height",
        )
    channels = 4 if mode == "RGBA" else 3
    need = info.width * info.height * channels
    if need > limits.max_alloc:
        raise LimitExceeded(
            f"image of {size} {mode} needs {format_bytes(need)}, over limits.max_alloc "
            f"({format_bytes(limits.max_alloc)}); send a smaller image",
            limit="max_alloc",
        )


def _composite(rgba: torch.Tensor, background: Sequence[int]) -> torch.Tensor:
    """``rgb*a + bg*(1-a)`` in integers, rounded as Pillow's ``alpha_composite``; CHW in/out."""
    alpha = rgba[3:].to(torch.int32)
    rgb = rgba[:3].to(torch.int32)
    bg = torch.tensor(background, dtype=torch.int32).view(3, 1, 1)
    out = (rgb * alpha + bg * (255 - alpha) + 127) // 255
    return out.to(torch.uint8)


def _decode_native(data: bytes, info: ImageInfo, mode: str, device: str) -> torch.Tensor:
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    read_mode: Literal["RGB", "RGB_ALPHA"] = (
        "RGB_ALPHA" if mode == "RGBA" or info.has_alpha else "RGB"
    )
    if info.format == "jpeg" and device != "cpu":
        pixels = tcd.decode_jpeg(encoded, mode=read_mode, device=device)  # nvJPEG
    else:
        pixels = _NATIVE[info.format](encoded, mode=read_mode)
    assert isinstance(pixels, torch.Tensor)
    return pixels


def _check_size(info: ImageInfo, width: int, height: int) -> None:
    """Refuses a decoder's size that is not the one the limits were checked on."""
    if (width, height) != (info.width, info.height):
        raise DecodeError(
            f"{info.format} image decodes to {width}x{height}, not the {info.width}x{info.height} "
            "its header says; the file is inconsistent"
        )


def _decode_pillow(data: bytes, info: ImageInfo, mode: str) -> torch.Tensor:
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as opened:
            # Pillow fixes the size at open, before any pixel: refuse one the limits did not see.
            _check_size(info, *(opened.size if info.orientation < 5 else opened.size[::-1]))
            img = ImageOps.exif_transpose(opened)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: keep the high byte
                img = img.point(lambda v: v / 256).convert("L")
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            img = img.convert("RGBA" if mode == "RGBA" or has_alpha else "RGB")
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(img.height, img.width, len(img.mode)).permute(2, 0, 1)


def decode_image(
    source: Source,
    *,
    mode: Literal["RGB", "RGBA"] = "RGB",
    layout: Literal["CHW", "HWC"] = "CHW",
    background: Sequence[int] = _WHITE,
    device: str = "cpu",
    limits: ImageLimits = _DEFAULT_LIMITS,
) -> DecodedMedia:
    """Decodes an image to ``uint8`` RGB (or RGBA), checking the limits before any pixel.

    Args:
        source: encoded bytes, a path, a binary file, or ``EncodedMedia`` (whose ``probe``,
            when ``CheckImageLimits`` set it, saves reading the header again).
        mode: ``"RGB"`` or ``"RGBA"``. Default: ``"RGB"``.
        layout: ``"CHW"`` or ``"HWC"`` (see Note [layout views]). Default: ``"CHW"``.
        background: RGB colour transparent pixels are composited on in RGB mode.
            Default: white.
        device: ``"cpu"``, or ``"cuda"`` to decode JPEGs with nvJPEG (other formats decode on
            the CPU and move). Default: ``"cpu"``.
        limits: checked from the header first. Default: ``ImageLimits()``.

    Returns:
        ``DecodedMedia`` with metadata ``format``, ``width``, ``height``, ``mode``,
        ``original_size``, ``original_mode``, ``orientation``, ``layout``.

    Raises:
        LimitExceeded: the header says the image is over the limits.
        DecodeError: empty, truncated, corrupt or unrecognised data, naming the format.
    """
    # The schema checks the options (one validation point) before a byte is read.
    ImageOptions(mode=mode, layout=layout, background=background, limits=limits)  # type: ignore[arg-type]
    data = read_source(source)
    info = attached_probe(source, ImageInfo, mode=mode, limits=limits) or probe_image(data)
    check_image_limits(info, mode=mode, limits=limits)
    with decode_failures(f"corrupt or truncated {info.format} image"):
        if info.format in _NATIVE and not info.animated:
            pixels = _decode_native(data, info, mode, device)
        else:
            pixels = _decode_pillow(data, info, mode)
    _check_size(info, pixels.shape[2], pixels.shape[1])
    if mode == "RGB" and pixels.shape[0] == 4:
        pixels = _composite(pixels, background)
    pixels = pixels.to(device)
    if layout == "HWC":
        pixels = pixels.permute(1, 2, 0)
    metadata: dict[str, Any] = {
        "format": info.format,
        "width": int(pixels.shape[-1 if layout == "CHW" else -2]),
        "height": int(pixels.shape[-2 if layout == "CHW" else -3]),
        "mode": mode,
        "layout": layout,
        "original_size": [info.width, info.height],
        "original_mode": info.mode,
        "orientation": info.orientation,
    }
    fetched = content_hash_of(source)
    options = {"mode": mode, "layout": layout, "background": list(background)}
    content_hash = options_hash(fetched, options) if fetched is not None else None
    return DecodedMedia(pixels, "image", metadata, content_hash)
