"""Pictures of decoded media for people: a contact sheet of frames, or a waveform (Pillow)."""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

from dynamo_media._media import DecodedMedia

__all__ = ["render"]

_THUMB_WIDTH = 240
_COLUMNS = 4


def _hwc(frame: torch.Tensor, layout: str) -> Image.Image:
    pixels = frame if layout.endswith("HWC") else frame.permute(1, 2, 0)
    return Image.fromarray(pixels.cpu().contiguous().numpy())


def contact_sheet(media: DecodedMedia) -> Image.Image:
    """Sampled frames in a grid, each labelled with its index and timestamp."""
    layout = media.metadata["layout"]
    frames = media.tensor if media.modality == "video" else media.tensor.unsqueeze(0)
    first = _hwc(frames[0], layout)
    scale = _THUMB_WIDTH / first.width
    w, h = _THUMB_WIDTH, max(1, round(first.height * scale))
    cols = min(_COLUMNS, len(frames))
    rows = math.ceil(len(frames) / cols)
    sheet = Image.new("RGB", (cols * w, rows * (h + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    indices = media.metadata.get("frames_indices", [0])
    pts = media.metadata.get("pts_seconds", [0.0])
    for k, frame in enumerate(frames):
        x, y = (k % cols) * w, (k // cols) * (h + 16)
        sheet.paste(_hwc(frame, layout).resize((w, h)), (x, y + 16))
        draw.text((x + 2, y + 2), f"#{indices[k]}  {pts[k]:.2f} s", fill="black")
    return sheet


def waveform(media: DecodedMedia, width: int = 960, height: int = 240) -> Image.Image:
    """Each channel's min/max envelope over time."""
    samples = media.tensor if media.metadata["layout"] == "CN" else media.tensor.t()
    channels, n = samples.shape
    img = Image.new("RGB", (width, height * channels), "white")
    draw = ImageDraw.Draw(img)
    per = max(1, n // width)
    for c in range(channels):
        mid = c * height + height // 2
        cols = samples[c, : per * (n // per)].reshape(-1, per)
        lows, highs = cols.min(dim=1).values.tolist(), cols.max(dim=1).values.tolist()
        for x, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
            draw.line([(x, mid - hi * height / 2), (x, mid - lo * height / 2)], fill="navy")
    seconds = media.metadata["duration_seconds"]
    draw.text((4, 4), f"{seconds:.2f} s at {media.metadata['sample_rate']} Hz", fill="black")
    return img


def render(media: DecodedMedia) -> Image.Image:
    """The picture that suits the modality."""
    return waveform(media) if media.modality == "audio" else contact_sheet(media)
