"""Audio decoding with resampling and downmix in FFmpeg (torchcodec), limits checked twice.

# Note [audio limits]
The header's duration, and the bytes it implies at the output rate and channel count, are
checked before anything is decoded. Headers can lie (an Opus file that claims seconds and holds
hours, a forged sample rate), so decoding then runs in chunks of ``CHUNK_SECONDS`` of stream
time, and the running total is checked after every chunk: decoding stops, and everything decoded
is dropped, as soon as the output passes a limit. The overshoot is at most one chunk.

Downmix: FFmpeg's, as torchcodec, PyAV and ``ffmpeg -ac 1`` do: stereo to mono is
``(L+R)/sqrt(2)``, 3 dB louder than the plain mean that soundfile or librosa users compute.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torchcodec.decoders import AudioDecoder

from dynamo_media._errors import DecodeError, LimitExceeded, NoMediaStream, native_reason
from dynamo_media._media import DecodedMedia, options_hash
from dynamo_media._options import format_bytes
from dynamo_media.config import AudioLimits, AudioOptions
from dynamo_media.decode._audio_frames import check_frame_layout
from dynamo_media.decode._ffmpeg_memory import MIN_ALLOCATION, cap_ffmpeg_allocations
from dynamo_media.decode._riff import check_riff
from dynamo_media.decode._source import Source, attached_probe, content_hash_of, read_source

__all__ = ["AudioProbe", "decode_audio", "probe_audio"]

CHUNK_SECONDS = 30.0
MIN_RATE, MAX_RATE, MAX_CHANNELS = 1000, 768_000, 64
_DEFAULT_LIMITS = AudioLimits()
_NO_MORE = "No audio frames were decoded"


@dataclasses.dataclass(frozen=True)
class AudioProbe:
    """What an audio stream's header says, and the output it will decode to.

    Attributes:
        codec: the source codec (``"mp3"``, ``"opus"``, ``"pcm_s16le"``, ...).
        source_sample_rate: the source's rate in Hz.
        source_num_channels: the source's channel count.
        sample_rate: the output rate in Hz.
        num_channels: the output channel count.
        duration_seconds: the header's duration, or ``None`` when it has none.
        start_seconds: where decoding starts.
        stop_seconds: where it stops, or ``None`` for the end.
    """

    codec: str
    source_sample_rate: int
    source_num_channels: int
    sample_rate: int
    num_channels: int
    duration_seconds: float | None
    start_seconds: float
    stop_seconds: float | None


def _open(data: bytes, sample_rate: int | None, num_channels: int | None) -> AudioDecoder:
    if not data:
        raise DecodeError("empty audio data (0 bytes)")
    check_riff(data)  # Note [riff sizes]
    cap_ffmpeg_allocations(MIN_ALLOCATION)  # Note [ffmpeg allocations]
    try:
        return AudioDecoder(data, sample_rate=sample_rate, num_channels=num_channels)
    except ValueError as exc:  # torchcodec's stream selection: the file has no audio stream
        raise NoMediaStream(f"no audio stream in the file ({native_reason(exc)})") from exc
    except Exception as exc:  # Note [hostile bytes] in _errors.py
        raise DecodeError(f"no audio stream FFmpeg can read: {native_reason(exc)}") from exc


def _check(seconds: float, probe: AudioProbe, limits: AudioLimits, what: str) -> None:
    need = int(seconds * probe.sample_rate) * probe.num_channels * 4
    if seconds > limits.max_duration_seconds:
        raise LimitExceeded(
            f"audio {what} {seconds:.1f} s, over limits.max_duration_seconds "
            f"({limits.max_duration_seconds} s); send a shorter clip or set stop_seconds",
            limit="max_duration_seconds",
        )
    if need > limits.max_alloc:
        raise LimitExceeded(
            f"audio {what} {seconds:.1f} s of {probe.num_channels} channel(s) at "
            f"{probe.sample_rate} Hz, {format_bytes(need)} of float32, over limits.max_alloc "
            f"({format_bytes(limits.max_alloc)}); lower sample_rate or num_channels, or decode "
            "less",
            limit="max_alloc",
        )


def probe_audio(
    source: Source,
    *,
    sample_rate: int | None = None,
    num_channels: int | None = None,
    start_seconds: float | None = None,
    stop_seconds: float | None = None,
    limits: AudioLimits = _DEFAULT_LIMITS,
) -> AudioProbe:
    """Reads an audio stream's header and checks the output it claims against the limits.

    Arguments are those of ``decode_audio``.

    Raises:
        LimitExceeded: the header's duration or output bytes are over the limits.
        DecodeError: no audio stream, or one FFmpeg cannot resample safely (Note [resampler
            crash] in ``_audio_frames.py``).
    """
    data = read_source(source)
    meta = _open(data, sample_rate, num_channels).metadata
    rate, channels = meta.sample_rate or 0, meta.num_channels or 0
    if not (MIN_RATE <= rate <= MAX_RATE and 0 < channels <= MAX_CHANNELS):
        # Resampling a frame from a forged rate (1 Hz) to 16 kHz converts the whole frame at
        # once: 600 MiB for a 14 KB WAV (tests/fuzz). No recording is outside these bounds.
        raise DecodeError(
            f"audio stream says {rate} Hz and {channels} channel(s), outside {MIN_RATE} to "
            f"{MAX_RATE} Hz and 1 to {MAX_CHANNELS} channels: not a recording we can decode"
        )
    check_frame_layout(data, meta.codec or "unknown")  # Note [resampler crash]
    probe = AudioProbe(
        codec=meta.codec or "unknown",
        source_sample_rate=rate,
        source_num_channels=channels,
        sample_rate=sample_rate or rate,
        num_channels=num_channels or channels,
        duration_seconds=meta.duration_seconds,
        start_seconds=start_seconds or 0.0,
        stop_seconds=stop_seconds,
    )
    end = stop_seconds if stop_seconds is not None else meta.duration_seconds
    if meta.duration_seconds is not None and end is not None:
        end = min(end, meta.duration_seconds)
    if end is not None:
        _check(max(0.0, end - probe.start_seconds), probe, limits, "lasts")
    return probe


def _decode_chunks(data: bytes, probe: AudioProbe, limits: AudioLimits) -> torch.Tensor:
    """Decodes ``[start, stop)`` chunk by chunk, checking the limits after each (Note above)."""
    decoder = _open(data, probe.sample_rate, probe.num_channels)
    parts: list[torch.Tensor] = []
    decoded, t = 0, probe.start_seconds
    while probe.stop_seconds is None or t < probe.stop_seconds:
        end = t + CHUNK_SECONDS
        if probe.stop_seconds is not None:
            end = min(end, probe.stop_seconds)
        try:
            chunk = decoder.get_samples_played_in_range(t, end).data
        except Exception as exc:  # Note [hostile bytes] in _errors.py
            if _NO_MORE in str(exc):
                break
            if parts:  # a truncated or damaged tail: keep what decoded before it
                break
            raise DecodeError(
                f"corrupt or truncated {probe.codec} audio: {native_reason(exc)}"
            ) from exc
        if chunk.shape[1] == 0:
            break
        parts.append(chunk)
        decoded += chunk.shape[1]
        _check(decoded / probe.sample_rate, probe, limits, "decodes to more than its header says:")
        t = end
    if not parts:
        raise DecodeError(f"no audio samples could be decoded from the {probe.codec} stream")
    samples = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    # Float decoders (MP3, AAC, float PCM) can overshoot full scale, and damaged frames decode to
    # anything: clip into [-1, 1] as a 16-bit conversion would, NaN to silence.
    return samples.nan_to_num_(nan=0.0, posinf=1.0, neginf=-1.0).clamp_(-1.0, 1.0)


def decode_audio(
    source: Source,
    *,
    sample_rate: int | None = None,
    num_channels: int | None = None,
    start_seconds: float | None = None,
    stop_seconds: float | None = None,
    layout: Literal["CN", "NC"] = "CN",
    device: str = "cpu",
    limits: AudioLimits = _DEFAULT_LIMITS,
) -> DecodedMedia:
    """Decodes audio to ``float32`` in [-1, 1] (clipped), resampled and remixed by FFmpeg.

    Args:
        source: encoded bytes, a path, a binary file, or ``EncodedMedia`` (a video file's audio
            track is decoded too).
        sample_rate: output rate in Hz. Default: ``None`` (the source's).
        num_channels: output channels (FFmpeg's downmix, see the Note). Default: ``None``.
        start_seconds: decode from this time. Default: ``None`` (the start).
        stop_seconds: decode up to this time, exclusive. Default: ``None`` (the end).
        layout: ``"CN"`` (channels, samples) or ``"NC"``. Default: ``"CN"``.
        device: where the tensor ends up (audio decodes on the CPU). Default: ``"cpu"``.
        limits: checked from the header, then while decoding (Note [audio limits]).
            Default: ``AudioLimits()``.

    Returns:
        ``DecodedMedia`` with metadata ``sample_rate``, ``num_channels``, ``duration_seconds``,
        ``source_codec``, ``source_sample_rate``, ``source_num_channels``, ``layout``.

    Raises:
        LimitExceeded: over a limit, from the header or while decoding.
        DecodeError: not audio, or nothing decodable.
    """
    output: dict[str, Any] = {
        "sample_rate": sample_rate,
        "num_channels": num_channels,
        "start_seconds": start_seconds,
        "stop_seconds": stop_seconds,
        "limits": limits,
    }
    AudioOptions(**output, layout=layout)  # the schema checks them before a byte is read
    data = read_source(source)
    probe = attached_probe(source, AudioProbe, **output) or probe_audio(data, **output)
    samples = _decode_chunks(data, probe, limits)
    if layout == "NC":
        samples = samples.t()
    metadata: dict[str, Any] = {
        "sample_rate": probe.sample_rate,
        "num_channels": probe.num_channels,
        "duration_seconds": samples.shape[1 if layout == "CN" else 0] / probe.sample_rate,
        "source_codec": probe.codec,
        "source_sample_rate": probe.source_sample_rate,
        "source_num_channels": probe.source_num_channels,
        "layout": layout,
    }
    content_hash = None
    if (fetched := content_hash_of(source)) is not None:
        options = dataclasses.asdict(probe) | {"layout": layout}
        content_hash = options_hash(fetched, options)
    return DecodedMedia(samples.to(device), "audio", metadata, content_hash)
