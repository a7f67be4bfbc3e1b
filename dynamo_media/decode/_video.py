"""Video decoding: probe and check first, then decode only the sampled frames (torchcodec).

# Note [video probe]
``probe_video`` reads the stream header with torchcodec's ``Demuxer`` (size, codec, duration:
the resolution and duration limits are checked here, and ``max_pixels`` fixes the output size),
then opens a ``VideoDecoder`` in exact mode, which scans the packets once (no decoding) for the
exact frame count, every frame's timestamp and the keyframes. The sample (see ``sampling.py``)
follows, and ``n*H*W*3`` is checked against ``limits.max_alloc``: all before a single frame is
decoded. The open decoder travels in the probe, so the packets are scanned once.

``decode_video`` then asks that decoder for the sampled indices. Exact mode, because approximate
mode maps seconds to frames through the average frame rate and returned frame 28 for frame 29 of
a GIF (tests/test_video.py): only exact mode returns the frames the formula chose. torchcodec
seeks to the keyframe before a sampled frame only when that is ahead of where it is, decodes
forward, and converts only the sampled frames to RGB; with ``max_pixels`` the resize happens
inside that conversion.

# Note [video window]
``start_seconds`` / ``end_seconds`` select frames by their ``pts``, which the decoder's scan
does not expose; only then, a second scan of the packets (torchcodec's ``VideoStream.scan``, no
decoding) reads every frame's ``pts``. It orders frames as exact mode does, by ``pts``; should
the two counts ever differ, the window is refused rather than guessed.

# Note [video threads]
torchcodec decodes with one FFmpeg thread by default, and ``num_ffmpeg_threads=0`` lets FFmpeg
pick, which starts more threads than there are cores. Measured on 2 cores (32 frames; a 10 min
360p clip, GOP 250, then 10 s 720p, GOP 30): one thread 3.39 s / -, FFmpeg's choice 2.57-2.68 s /
0.66 s, three 2.74 s / 0.66 s, two 2.05-2.29 s / 0.58 s. One thread per usable core wins on dense
and sparse samples alike, so that is what ``decode_video`` asks for.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torchcodec.decoders import Demuxer, VideoDecoder, VideoStream
from torchcodec.transforms import Resize

from dynamo_media._errors import (
    DecodeError,
    LimitExceeded,
    NoMediaStream,
    decode_failures,
    native_reason,
)
from dynamo_media._media import DecodedMedia, options_hash
from dynamo_media._options import format_bytes
from dynamo_media.config import SamplingRule, VideoLimits, VideoOptions
from dynamo_media.decode._ffmpeg_memory import cap_ffmpeg_allocations, frame_allocation
from dynamo_media.decode._riff import check_riff
from dynamo_media.decode._source import Source, attached_probe, content_hash_of, read_source
from dynamo_media.decode._thin import thin
from dynamo_media.sampling import sample_frame_indices

__all__ = ["VideoProbe", "decode_video", "probe_video"]

_DEFAULT_LIMITS = VideoLimits()
_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclasses.dataclass(frozen=True)
class VideoProbe:
    """What a video's header and packet scan say, and the sample chosen from it.

    Attributes:
        codec: the video codec (``"h264"``, ``"vp9"``, ...).
        width: source width in pixels (as displayed: rotation applied).
        height: source height in pixels.
        out_width: width of the decoded frames (``max_pixels`` applied).
        out_height: height of the decoded frames.
        total_frames: frames in the stream (counted by the scan).
        duration_seconds: from the first frame's start to the last frame's end.
        fps: ``total_frames / duration_seconds``.
        frames_indices: the sampled frames.
        frames_to_decode: frames FFmpeg must decode for this sample (from each sample's
            keyframe on): the cost floor that benchmarks compare against.
    """

    codec: str
    width: int
    height: int
    out_width: int
    out_height: int
    total_frames: int
    duration_seconds: float
    fps: float
    frames_indices: list[int]
    frames_to_decode: int
    decoder: VideoDecoder = dataclasses.field(repr=False, compare=False)


def _fit(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The largest even size within ``max_pixels`` with the source's aspect ratio."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _frames_to_decode(indices: list[int], key_frames: list[int]) -> int:
    """Frames decoded when each sample is reached from its keyframe (overlaps counted once)."""
    total, pos, k = 0, -1, 0
    for i in indices:
        while k + 1 < len(key_frames) and key_frames[k + 1] <= i:
            k += 1
        start = max(key_frames[k] if key_frames else 0, pos + 1)
        total += max(0, i - start + 1)
        pos = max(pos, i)
    return total


def _decoder(
    data: bytes | io.RawIOBase, width: int, height: int, *, resize: bool, device: str = "cpu"
) -> VideoDecoder:
    """An exact-mode decoder (Note [video probe]), scaling to ``width x height`` if ``resize``."""
    return VideoDecoder(
        data,
        seek_mode="exact",
        num_ffmpeg_threads=_THREADS or 1,
        device=device,
        transforms=[Resize((height, width))] if resize else None,
    )


def _open(data: bytes, limits: VideoLimits) -> Demuxer:
    """The demuxer, following the best video stream; its caller maps every other failure."""
    check_riff(data)  # Note [riff sizes]
    # See Note [ffmpeg allocations] in _ffmpeg_memory.py.
    cap_ffmpeg_allocations(frame_allocation(limits.max_video_width, limits.max_video_height))
    try:
        return Demuxer(data)
    except ValueError as exc:
        raise NoMediaStream(f"no video stream in the file ({native_reason(exc)})") from exc


def probe_video(
    source: Source,
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
    limits: VideoLimits = _DEFAULT_LIMITS,
) -> VideoProbe:
    """Reads a video's header and packets, picks the sample, and checks the limits.

    See Note [video probe]. Arguments are those of ``decode_video``.

    Returns:
        The probe, from which ``decode_video`` decodes.

    Raises:
        LimitExceeded: resolution, duration or ``n*H*W*3`` over the limits, naming what to lower.
        InvalidOptions: options in conflict; strict mode and more frames asked for than the
            video (or the window) has; a window holding no frame.
        DecodeError: not a video; ``NoMediaStream`` (a subclass) when it has no video stream.
    """
    data = read_source(source)
    if not data:
        raise DecodeError("empty video data (0 bytes)")
    with decode_failures("not a video container FFmpeg can read"):
        stream = _open(data, limits).streams[0]
        assert isinstance(stream, VideoStream)  # streams="video" follows the best video stream
        header = stream.metadata
    width, height = header.width or 0, header.height or 0
    if width <= 0 or height <= 0:
        raise DecodeError(f"video stream has no frame size ({width}x{height})")
    if width > limits.max_video_width or height > limits.max_video_height:
        raise LimitExceeded(
            f"video is {width}x{height}, over limits.max_video_width x max_video_height "
            f"({limits.max_video_width}x{limits.max_video_height}); send a smaller video",
            limit="max_video_width" if width > limits.max_video_width else "max_video_height",
        )
    max_seconds = limits.max_duration_seconds
    declared = header.duration_seconds_from_header
    if max_seconds is not None and declared is not None and declared > max_seconds:
        raise LimitExceeded(
            f"video lasts {declared:.1f} s, over limits.max_duration_seconds ({max_seconds} s)",
            limit="max_duration_seconds",
        )
    out_width, out_height = _fit(width, height, max_pixels)
    resize = (out_width, out_height) != (width, height)
    with decode_failures("corrupt video container"):
        decoder = _decoder(data, out_width, out_height, resize=resize, device=device)
        meta = decoder.metadata
        total = len(decoder)
        key_frames = torch.as_tensor(decoder._get_key_frame_indices()).tolist()
    if total == 0:
        raise DecodeError("the video stream holds no frames")
    duration = (meta.end_stream_seconds or 0.0) - (meta.begin_stream_seconds or 0.0)
    if max_seconds is not None and duration > max_seconds:
        raise LimitExceeded(
            f"video lasts {duration:.1f} s, over limits.max_duration_seconds ({max_seconds} s)",
            limit="max_duration_seconds",
        )
    pts = None
    if start_seconds is not None or end_seconds is not None:
        with decode_failures("corrupt video container"):
            pts = stream.scan().pts_seconds.tolist()  # Note [video window]
        if len(pts) != total:
            raise DecodeError(
                f"the packet scan counts {len(pts)} frames and the decoder {total}; "
                "sample this video without start_seconds/end_seconds"
            )
    chosen = sample_frame_indices(
        total,
        duration,
        sampling=sampling,
        num_frames=num_frames,
        fps=fps,
        indices=indices,
        max_frames=max_frames,
        min_frames=min_frames,
        frames_multiple=frames_multiple,
        start_seconds=start_seconds,
        end_seconds=end_seconds,
        pts_seconds=pts,
        strict=strict,
    )
    need = len(chosen) * out_width * out_height * 3
    if need > limits.max_alloc:
        raise LimitExceeded(
            f"{len(chosen)} frames of {out_width}x{out_height} RGB need {format_bytes(need)}, "
            f"over limits.max_alloc ({format_bytes(limits.max_alloc)}); lower fps, num_frames, "
            "max_frames or max_pixels",
            limit="max_alloc",
        )
    return VideoProbe(
        codec=header.codec or "unknown",
        width=width,
        height=height,
        out_width=out_width,
        out_height=out_height,
        total_frames=total,
        duration_seconds=duration,
        fps=total / duration if duration > 0 else 0.0,
        frames_indices=chosen,
        frames_to_decode=_frames_to_decode(chosen, key_frames),
        decoder=decoder,
    )


def _thinned_frames(
    data: bytes, probe: VideoProbe, device: str
) -> tuple[torch.Tensor, list[int], list[float]] | None:
    """The sampled frames from the stream without unneeded frames (Note [non-reference
    frames] in _thin.py); ``None`` where it does not apply or fails: then decode as usual."""
    pixels = probe.out_width * probe.out_height
    thinned = thin(data, probe.frames_indices, probe.total_frames, pixels)
    if thinned is None:
        return None
    resize = (probe.out_width, probe.out_height) != (probe.width, probe.height)
    try:
        decoder = _decoder(
            thinned.open(), probe.out_width, probe.out_height, resize=resize, device=device
        )
        batch = decoder.get_frames_at(thinned.indices)
    except Exception:  # Note [hostile bytes]; the full stream decides what fails
        return None
    return batch.data, probe.frames_indices, batch.pts_seconds.tolist()


def _decode_frames(
    data: bytes, probe: VideoProbe, strict: bool, device: str
) -> tuple[torch.Tensor, list[int], list[float]]:
    if (thinned := _thinned_frames(data, probe, device)) is not None:
        return thinned
    try:
        batch = probe.decoder.get_frames_at(probe.frames_indices)
        return batch.data, probe.frames_indices, batch.pts_seconds.tolist()
    except Exception as exc:  # Note [hostile bytes] in _errors.py
        if strict:
            raise DecodeError(
                f"a sampled frame failed to decode ({native_reason(exc)}); set strict=False to "
                "drop it"
            ) from exc
    # Non-strict: decode one by one and keep what decodes (DESIGN.md, "Strict"), from a
    # decoder that scales every frame to the checked size: a stream whose frame size changes
    # midway (VP9 and H.264 allow it) fails the batch above, and must not grow past max_alloc.
    with decode_failures("corrupt video container"):
        decoder = _decoder(data, probe.out_width, probe.out_height, resize=True)
    frames, kept, kept_pts = [], [], []
    for i in probe.frames_indices:
        try:
            frame = decoder.get_frame_at(i)
        except Exception:  # Note [hostile bytes]; strict=False drops the frame
            continue
        frames.append(frame.data)
        kept.append(i)
        kept_pts.append(frame.pts_seconds)
    if not frames:
        raise DecodeError("no sampled frame could be decoded")
    return torch.stack(frames), kept, kept_pts


def decode_video(
    source: Source,
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
    limits: VideoLimits = _DEFAULT_LIMITS,
) -> DecodedMedia:
    """Decodes sampled frames of a video to ``uint8`` RGB.

    The frames are those ``sample_frame_indices`` picks (see ``sampling.py``); the options
    mean what they mean on ``VideoOptions``, and conflicting ones fail before any byte is read.

    Args:
        source: encoded bytes, a path, a binary file, or ``EncodedMedia`` (whose ``probe``,
            when ``CheckVideoLimits`` set it, is used as is).
        sampling: the rule placing the frames: ``"uniform"``, ``"qwen2_vl"``,
            ``"llava_onevision"`` or ``"internvl"``. Default: ``"uniform"``.
        num_frames: sample exactly this many frames. Default: ``None``.
        fps: sample this many frames per second of video. Default: ``None``.
        indices: decode exactly these frames (strictly increasing; exclusive with ``fps``,
            ``num_frames`` and a window). Default: ``None``.
        max_frames: cap on the samples. Default: ``None``.
        min_frames: floor on a count from ``fps`` or all frames. Default: ``None`` (the
            rule's).
        frames_multiple: round the count down to a multiple of this. Default: ``None`` (the
            rule's).
        start_seconds: sample from frames whose ``pts`` is at or after this. Default: ``None``.
        end_seconds: ... and before this: the window ``[start_seconds, end_seconds)``.
            Default: ``None``.
        strict: fail when a sampled frame does not decode, or when more frames are asked for
            than the video has; otherwise drop or clamp. Default: ``False``.
        max_pixels: shrink frames inside the decoder to at most this many pixels (even sizes,
            aspect ratio kept). Default: ``None``.
        layout: ``"TCHW"`` or ``"THWC"`` (see Note [layout views] in ``_image.py``).
            Default: ``"TCHW"``.
        device: ``"cpu"``, or ``"cuda"`` to decode with NVDEC. Default: ``"cpu"``.
        limits: checked before decoding. Default: ``VideoLimits()``.

    Returns:
        ``DecodedMedia`` whose metadata has ``source_fps``, ``source_duration_seconds``,
        ``source_total_frames``, ``frames_indices``, ``pts_seconds``, ``width``, ``height``,
        ``source_width``, ``source_height``, ``codec`` and ``layout``.

    Raises:
        LimitExceeded, InvalidOptions, DecodeError: see ``probe_video``; ``DecodeError`` also
        for a frame that fails in strict mode.
    """
    sample: dict[str, Any] = {
        "sampling": sampling,
        "num_frames": num_frames,
        "fps": fps,
        "indices": None if indices is None else tuple(indices),  # as VideoOptions holds them
        "max_frames": max_frames,
        "min_frames": min_frames,
        "frames_multiple": frames_multiple,
        "start_seconds": start_seconds,
        "end_seconds": end_seconds,
        "strict": strict,
        "max_pixels": max_pixels,
        "limits": limits,
    }
    # The schema checks them (values, conflicts) before a byte is read.
    VideoOptions(**sample, layout=layout)
    data = read_source(source)
    sample["device"] = device
    probe = attached_probe(source, VideoProbe, **sample) or probe_video(data, **sample)
    frames, kept, pts = _decode_frames(data, probe, strict, device)
    if layout == "THWC":
        frames = frames.permute(0, 2, 3, 1)
    metadata: dict[str, Any] = {
        "frames_indices": kept,
        "pts_seconds": pts,
        "source_fps": probe.fps,
        "source_duration_seconds": probe.duration_seconds,
        "source_total_frames": probe.total_frames,
        "width": frames.shape[-1 if layout == "TCHW" else -2],
        "height": frames.shape[-2 if layout == "TCHW" else -3],
        "source_width": probe.width,
        "source_height": probe.height,
        "codec": probe.codec,
        "layout": layout,
    }
    content_hash = None
    if (fetched := content_hash_of(source)) is not None:
        options = {"frames": probe.frames_indices, "size": [probe.out_width, probe.out_height]}
        content_hash = options_hash(fetched, options | {"layout": layout})
    return DecodedMedia(frames, "video", metadata, content_hash)
