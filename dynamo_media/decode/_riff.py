"""A guard for RIFF containers (AVI, WAV) before FFmpeg reads their headers.

# Note [riff sizes]
FFmpeg's RIFF readers trust a header chunk's size: a 28 KB AVI whose ``INFO`` list claims 2 GiB
and holds an item claiming 1.4 GB made the demuxer allocate that much before it failed
(tests/fuzz found it; WAV files carry the same ``LIST INFO``). So every header chunk must fit in
the bytes we have. The chunks that hold the media itself may run past the end (a download cut
short, a WAV written to a pipe with size 0xFFFFFFFF): FFmpeg streams those instead of
allocating them.
"""

from __future__ import annotations

from dynamo_media._errors import DecodeError

__all__ = ["check_riff"]

_STREAMED = {b"data", b"movi", b"idx1", b"ix00", b"ix01", b"AVIX"}


def _walk(data: bytes, start: int, end: int) -> None:
    """Every chunk of ``data[start:end]``, lists entered in place; a stack, not recursion: lists
    nest as deep as an attacker likes."""
    resume: list[tuple[int, int]] = []  # where each enclosing list goes on
    i = start
    while True:
        while i + 8 <= end:
            kind, size = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little")
            is_list = kind in (b"LIST", b"RIFF")
            name = data[i + 8 : i + 12] if is_list else kind
            if name in _STREAMED:
                break  # the media itself: it may run past the end, and nothing we check follows
            if i + 8 + size > len(data):
                raise DecodeError(
                    f"corrupt {data[8:12].decode('latin-1').strip()} file: its "
                    f"{name.decode('latin-1')!r} chunk claims {size} bytes at byte {i}, but "
                    f"only {len(data) - i - 8} follow"
                )
            after = i + 8 + size + (size & 1)
            if is_list:
                resume.append((after, end))
                i, end = i + 12, i + 8 + size
            else:
                i = after
        if not resume:
            return
        i, end = resume.pop()


def check_riff(data: bytes) -> None:
    """Refuses a RIFF file whose header chunks claim more bytes than the file has.

    See Note [riff sizes]. Other files pass unchecked.

    Raises:
        DecodeError: a header chunk runs past the end of the data.
    """
    if data[:4] == b"RIFF" and len(data) >= 12:
        _walk(data, 12, len(data))
