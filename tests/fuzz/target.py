"""What a fuzzing worker runs per input: the public decoders with tight limits, then the contract.

``decode(modality, data)`` decodes as a user would, and raises ``ContractError`` when the output
breaks what README and DESIGN promise: dtype and shape, a size within the limits that agrees with
the metadata (and, for images, with the header the limits were checked on), and audio samples
that are finite and within [-1, 1].
"""

from __future__ import annotations

import torch

from dynamo_media import DecodedMedia, decode_audio, decode_image, decode_video
from dynamo_media.config import AudioLimits, ImageLimits, Modality, VideoLimits

__all__ = ["ContractError", "decode"]

MiB = 1 << 20
IMAGE_LIMITS = ImageLimits(max_image_width=4096, max_image_height=4096, max_alloc=16 * MiB)
VIDEO_LIMITS = VideoLimits(max_alloc=64 * MiB)
NUM_FRAMES = 8
AUDIO_LIMITS = AudioLimits(max_alloc=16 * MiB)
SAMPLE_RATE = 16000
NUM_CHANNELS = 1
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class ContractError(Exception):
    """A decode succeeded, and its output breaks the documented contract."""


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


def _check_image(out: DecodedMedia) -> None:
    pixels, meta = out.tensor, out.metadata
    _expect(pixels.dtype == torch.uint8, f"dtype is {pixels.dtype}, not uint8")
    shape = tuple(pixels.shape)
    _expect(pixels.ndim == 3 and shape[0] == 3, f"shape {shape} is not (3, H, W)")
    _, h, w = pixels.shape
    limits = IMAGE_LIMITS
    _expect(
        0 < w <= limits.max_image_width and 0 < h <= limits.max_image_height,
        f"{w}x{h} is outside 1..{limits.max_image_width} x 1..{limits.max_image_height}",
    )
    _expect(3 * h * w <= limits.max_alloc, f"{w}x{h} RGB is over max_alloc ({limits.max_alloc})")
    said = (meta["width"], meta["height"])
    _expect(said == (w, h), f"metadata says {said[0]}x{said[1]}, the pixels are {w}x{h}")
    header_w, header_h = meta["original_size"]
    if meta["orientation"] in _TRANSPOSED:
        header_w, header_h = header_h, header_w
    _expect(
        (header_w, header_h) == (w, h),
        f"the header (checked against the limits) says {header_w}x{header_h}, "
        f"the pixels are {w}x{h}",
    )


def _check_video(out: DecodedMedia) -> None:
    frames, meta = out.tensor, out.metadata
    _expect(frames.dtype == torch.uint8, f"dtype is {frames.dtype}, not uint8")
    shape = tuple(frames.shape)
    _expect(frames.ndim == 4 and shape[1] == 3, f"shape {shape} is not (T, 3, H, W)")
    t, _, h, w = frames.shape
    indices = meta["frames_indices"]
    _expect(t == len(indices), f"{t} frames, and {len(indices)} frames_indices")
    _expect(t == len(meta["pts_seconds"]), f"{t} frames, and {len(meta['pts_seconds'])} pts")
    _expect(0 < t <= NUM_FRAMES, f"{t} frames, asked for {NUM_FRAMES}")
    total = meta["source_total_frames"]
    _expect(all(0 <= i < total for i in indices), f"frames_indices {indices} outside [0, {total})")
    said = (meta.get("width", w), meta.get("height", h))
    _expect(said == (w, h), f"metadata says {said[0]}x{said[1]}, the frames are {w}x{h}")
    need = t * 3 * h * w
    _expect(need <= VIDEO_LIMITS.max_alloc, f"{need} bytes, over max_alloc")


def _check_audio(out: DecodedMedia) -> None:
    samples, meta = out.tensor, out.metadata
    _expect(samples.dtype == torch.float32, f"dtype is {samples.dtype}, not float32")
    _expect(
        samples.ndim == 2 and samples.shape[0] == NUM_CHANNELS and samples.shape[1] > 0,
        f"shape {tuple(samples.shape)} is not ({NUM_CHANNELS}, samples)",
    )
    said = (meta["sample_rate"], meta["num_channels"])
    _expect(said == (SAMPLE_RATE, NUM_CHANNELS), f"metadata says {said}")
    _expect(samples.numel() * 4 <= AUDIO_LIMITS.max_alloc, "over max_alloc")
    _expect(bool(samples.isfinite().all()), "samples that are not finite")
    peak = float(samples.abs().max())
    _expect(peak <= 1.0, f"samples outside [-1, 1] (peak {peak:.3g})")


def decode(modality: Modality, data: bytes) -> None:
    """Decodes ``data`` with the public decoder of ``modality`` and checks the output.

    Raises:
        MediaError: the decoder refused the input (the expected outcome for bad input).
        ContractError: the decoder returned an output that breaks the contract.
    """
    if modality == "image":
        _check_image(decode_image(data, limits=IMAGE_LIMITS))
    elif modality == "video":
        _check_video(decode_video(data, num_frames=NUM_FRAMES, limits=VIDEO_LIMITS))
    else:
        out = decode_audio(
            data, sample_rate=SAMPLE_RATE, num_channels=NUM_CHANNELS, limits=AUDIO_LIMITS
        )
        _check_audio(out)
