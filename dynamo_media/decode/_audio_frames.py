"""Audio codecs whose frames each carry a header, and the check that the layout never changes.

# Note [resampler crash]
torchcodec 0.17 sets FFmpeg's resampler up from the first decoded frame and hands it every later
frame as is. MPEG audio (MP1/2/3) and ADTS AAC frames each carry their own header, so such a
stream may switch from stereo to mono at any frame; the resampler then reads planes the frame
does not have and the process dies (SIGSEGV: tests/fuzz found it in a mutated MP3; two files
concatenated do it too, and AC-3 likewise). So:
- the codecs accepted are those whose layout is fixed for the stream (PCM, FLAC, ALAC, Opus,
  Vorbis: FFmpeg refuses or restarts on a change) or whose frame headers are read here first;
- for MPEG audio and AAC, every frame header in the bytes is read (a walk from header to header,
  each confirmed by the next one, resyncing past damage) before anything is decoded, and a
  stream whose channels or sample rate change is refused. The walk costs ~2% of decoding an MP3.
- AAC in an MP4/MOV or Matroska file has no ADTS headers (its layout is the container's
  AudioSpecificConfig), so there the walk only finds false sync words in the other bytes, and
  refused ordinary files (3 of 40 random 20 MB buffers): it is not walked. MPEG audio frames
  keep their headers in any container, and are walked wherever they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from dynamo_media._errors import DecodeError
from dynamo_media._sniff import sniff_format

__all__ = ["check_frame_layout"]

# Header -> (frame length in bytes, channels, sample rate), or None when it is not a header.
_Parse = Callable[[bytes, int], "tuple[int, int, int] | None"]

_FIXED_LAYOUT = ("pcm_", "flac", "alac", "opus", "vorbis")
_AAC_CONFIGURED = ("mp4", "mov", "matroska")  # containers that carry AAC without ADTS headers

_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MPEG1_KBPS = {
    3: (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),  # layer I
    2: (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),  # layer II
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # layer III
}
_MPEG2_KBPS = {
    3: (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    1: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _mpeg(data: bytes, i: int) -> tuple[int, int, int] | None:
    b1, b2, b3 = data[i + 1], data[i + 2], data[i + 3]
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate, rate = b2 >> 4, (b2 >> 2) & 3
    if (
        data[i] != 0xFF
        or b1 & 0xE0 != 0xE0
        or version == 1
        or layer == 0
        or bitrate in (0, 15)
        or rate == 3
    ):
        return None
    kbps = (_MPEG1_KBPS if version == 3 else _MPEG2_KBPS)[layer][bitrate]
    hz, pad = _MPEG_RATES[version][rate], (b2 >> 1) & 1
    if layer == 3:
        length = (12 * kbps * 1000 // hz + pad) * 4
    else:
        length = (72 if layer == 1 and version != 3 else 144) * kbps * 1000 // hz + pad
    return length, 1 if b3 >> 6 == 3 else 2, hz


def _adts(data: bytes, i: int) -> tuple[int, int, int] | None:
    b1, b2, b3, b4, b5 = data[i + 1 : i + 6]
    rate, channels = (b2 >> 2) & 0xF, ((b2 & 1) << 2) | (b3 >> 6)
    length = ((b3 & 3) << 11) | (b4 << 3) | (b5 >> 5)
    if data[i] != 0xFF or b1 & 0xF6 != 0xF0 or rate >= len(_ADTS_RATES) or length < 7:
        return None
    return length, channels, _ADTS_RATES[rate]


def _frames(data: bytes, parse: _Parse, header: int) -> Iterator[tuple[int, int, int]]:
    """``(offset, channels, rate)`` of every frame FFmpeg would decode, after an ID3v2 tag
    (whose pictures hold anything)."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        start = 10 + size + (10 if data[5] & 0x10 else 0)
    i, end, expected = data.find(b"\xff", start), len(data) - header, -1
    while 0 <= i <= end:
        frame = parse(data, i)
        if frame is not None:
            length, channels, rate = frame
            nxt = i + length
            # A frame where the last one ended, or one the next confirms, or a tail cut short:
            # FFmpeg decodes each of those.
            if i == expected or nxt >= len(data) or (nxt <= end and parse(data, nxt)):
                yield i, channels, rate
                i = expected = nxt
                continue
        i = data.find(b"\xff", i + 1)


_PER_FRAME: dict[str, tuple[_Parse, int]] = {
    "mp1": (_mpeg, 4),
    "mp2": (_mpeg, 4),
    "mp3": (_mpeg, 4),
    "aac": (_adts, 6),
}


def check_frame_layout(data: bytes, codec: str) -> None:
    """Refuses a codec the decoder cannot take safely, or a stream whose frames change layout.

    See Note [resampler crash].

    Args:
        data: the encoded file.
        codec: FFmpeg's name of the audio codec (``"mp3"``, ``"aac"``, ``"pcm_s16le"``, ...).

    Raises:
        DecodeError: the codec is not accepted, or the frames switch channels or sample rate.
    """
    if codec.startswith(_FIXED_LAYOUT):
        return
    if codec not in _PER_FRAME:
        accepted = ", ".join(sorted([*_PER_FRAME, "pcm", *_FIXED_LAYOUT[1:]]))
        raise DecodeError(f"audio codec {codec} is not accepted; send one of: {accepted}")
    if codec == "aac" and sniff_format(data) in _AAC_CONFIGURED:
        return
    parse, header = _PER_FRAME[codec]
    first: tuple[int, int] | None = None
    for offset, channels, rate in _frames(data, parse, header):
        if first is None:
            first = (channels, rate)
        elif (channels, rate) != first:
            raise DecodeError(
                f"the {codec} stream switches from {first[0]} channel(s) at {first[1]} Hz to "
                f"{channels} at {rate} Hz (byte {offset}); FFmpeg cannot resample a stream that "
                "changes layout: send one encoded with a single layout"
            )
