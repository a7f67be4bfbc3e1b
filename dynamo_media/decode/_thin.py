"""Below the keyframe floor: an MP4 without the frames that no sampled frame needs.

# Note [non-reference frames]
Decoding a sampled frame means decoding every frame from its keyframe on, but not all of them:
a frame that no other frame references (an H.264 slice with ``nal_ref_idc == 0``, an HEVC
sub-layer non-reference picture in the highest temporal layer; most B-frames as x264 and x265
write them) changes nothing that a later frame reads, so unless it is itself sampled it need not
be decoded. FFmpeg can skip all of them (``skip_frame=nonref``) but not some, and torchcodec
exposes neither; a packet whose slices were blanked out makes FFmpeg's H.264 decoder fail. So
``thin`` rewrites the MP4: the sample tables of the video track lose the unneeded samples
(times, sizes and offsets of the others unchanged), the old ``moov`` box is renamed ``free``
and the rebuilt one follows the file, which is read through a spliced file object (no copy of
the media bytes), and the sampled frames' indices are mapped to their place in the thinned
stream. torchcodec stays the decoder (so ``device="cuda"`` decodes the thinned stream with NVDEC
too); the frames it returns are bit-identical to the whole stream's, their timestamps too
(tests/test_thin.py, a property over random samples on B-pyramid, open-GOP, VFR, rotated, HEVC
and cut clips). Measured on 2 cores, 32 uniform frames: see benchmarks/results/video.md.

Only what is simple and safe is thinned: MP4/MOV with one video track of H.264 or HEVC, not
fragmented, with at most one edit, the boxes tiling the file, and a sample count equal to the
frame count the decoder found; anything else decodes as before. A sample is left out only when
every NAL unit in it is a non-reference slice or SEI, AUD or filler data (never a parameter
set). The tables are attacker bytes: every count is checked against its box's size before
anything is built from it. VP9 and AV1 are not thinned: their encoders' default streams have
almost no frame that refreshes no reference (alt-ref frames are hidden but referenced), and
leaving blocks out of a Matroska file means rewriting its clusters and cues.

The thinned stream costs a second packet scan (~15-35 ms for 1,800 packets here) and the rewrite
(~1 ms per 1,000 samples), so ``thin`` declines unless the frames it saves hold at least
``_SCAN_PIXELS_PER_PACKET`` pixels per packet of the stream (measured: a 720p frame decodes in
~2.3 ms, ~2.5 ns a pixel; a packet scans in ~15 us). Only the samples the decoder would read
are examined; a stream with nothing to leave out (no B-frames) pays the table parse and that
walk (a few ms on 1,800 frames) and decodes as before.
"""

from __future__ import annotations

import bisect
import dataclasses
import io
import itertools
import struct
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["Thinned", "thin"]

_SCAN_PIXELS_PER_PACKET = 6000
_PATH = (b"moov", b"trak", b"mdia", b"minf", b"stbl")
_REBUILT = {b"stts", b"ctts", b"stss", b"stsz", b"stsc", b"stco", b"co64"}
_DROPPED = {b"sdtp", b"sbgp", b"sgpd"}  # per-sample side tables, not needed to decode
_KEPT = {b"stsd", b"cslg"}
_H264 = {b"avc1", b"avc3"}
_HEVC = {b"hvc1", b"hev1"}
_H264_HARMLESS = {6, 9, 12}  # SEI, access unit delimiter, filler data
_HEVC_HARMLESS = {35, 38, 39, 40}  # AUD, filler data, prefix and suffix SEI


class _Spliced(io.RawIOBase):
    """A read-only file over byte strings laid end to end, none of them copied."""

    def __init__(self, parts: Sequence[memoryview]) -> None:
        super().__init__()
        self._parts = parts
        self._starts = list(itertools.accumulate((len(p) for p in parts), initial=0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out, n = memoryview(buffer).cast("B"), 0
        while n < len(out) and self._pos < self._starts[-1]:
            k = bisect.bisect_right(self._starts, self._pos) - 1
            at = self._pos - self._starts[k]
            take = min(len(out) - n, len(self._parts[k]) - at)
            out[n : n + take] = self._parts[k][at : at + take]
            n, self._pos = n + take, self._pos + take
        return n


@dataclasses.dataclass(frozen=True)
class Thinned:
    """An MP4 without the unneeded frames: the original bytes with its ``moov`` box renamed
    ``free``, and the rebuilt ``moov`` after them (nothing of the original copied).

    Attributes:
        parts: the pieces of the file, in order.
        indices: the sampled frames' indices in it, in the order asked for.
        dropped: how many frames were left out.
    """

    parts: tuple[memoryview, ...]
    indices: list[int]
    dropped: int

    def open(self) -> io.RawIOBase:
        """The thinned file, to read from the start."""
        return _Spliced(self.parts)


class _Unsupported(Exception):
    """The file is not one ``thin`` rewrites: decode it as it is."""


def _u32(data: bytes, i: int) -> int:
    return int.from_bytes(data[i : i + 4], "big")


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, body start, box end) of each box in ``data[start:end]``.

    Raises:
        _Unsupported: a box that does not fit, or that runs to the end of the file (size 0).
    """
    i = start
    while i < end:
        if i + 8 > end:
            raise _Unsupported("a box header runs past its parent")
        size, body = _u32(data, i), i + 8
        if size == 1:
            size, body = int.from_bytes(data[i + 8 : i + 16], "big"), i + 16
        if size < body - i or i + size > end:
            raise _Unsupported("a box runs past its parent")
        yield data[i + 4 : i + 8], i, body, i + size
        i += size


def _table(data: bytes, body: int, end: int, fields: str, skip: int = 0) -> list[tuple[int, ...]]:
    """A full box's entry table: version and flags, ``skip`` bytes, a count, then the entries."""
    count, first = _u32(data, body + 4 + skip), body + 8 + skip
    width = struct.calcsize(">" + fields)
    if first + count * width > end:
        raise _Unsupported("a sample table claims more entries than its box holds")
    return list(struct.iter_unpack(">" + fields, data[first : first + count * width]))


@dataclasses.dataclass
class _Track:
    codec: str
    length_size: int
    stbl: tuple[int, int, int]  # box start, body start, end
    sizes: list[int]
    offsets: list[int]
    dts: list[int]
    end_dts: int
    cts: list[int]
    ctts_version: int
    sync: set[int] | None  # None: every sample is a sync sample


def _expanded(table: list[tuple[int, ...]], n: int, what: str) -> list[int]:
    """Expands (count, value) runs to ``n`` values."""
    if sum(run[0] for run in table) != n:
        raise _Unsupported(f"the {what} runs do not add up to the sample count")
    return [value for count, value in table for _ in range(count)]


def _sample_entry(data: bytes, body: int, end: int) -> tuple[str, int]:
    """The codec and NAL length size of an ``stsd`` box holding one AVC or HEVC entry."""
    entries = list(_boxes(data, body + 8, end))
    if _u32(data, body + 4) != 1 or len(entries) != 1:
        raise _Unsupported("not one sample description")
    kind, _, entry, entry_end = entries[0]
    if kind not in _H264 | _HEVC:
        raise _Unsupported(f"codec {kind!r}")
    config = b"avcC" if kind in _H264 else b"hvcC"
    for inner, _, c_body, c_end in _boxes(data, entry + 78, entry_end):  # after the visual fields
        at = c_body + (4 if kind in _H264 else 21)
        if inner == config and at < c_end:
            return ("h264" if kind in _H264 else "hevc"), (data[at] & 3) + 1
    raise _Unsupported("no decoder configuration")


def _track(data: bytes, stbl: tuple[int, int, int], n: int) -> _Track:
    boxes = {kind: (body, end) for kind, _, body, end in _boxes(data, stbl[1], stbl[2])}
    if set(boxes) - _REBUILT - _DROPPED - _KEPT or not {b"stsz", b"stsc", b"stts"} <= set(boxes):
        raise _Unsupported("sample tables this rewrite does not know")
    codec, length_size = _sample_entry(data, *boxes[b"stsd"])
    body, end = boxes[b"stsz"]
    fixed, count = _u32(data, body + 4), _u32(data, body + 8)
    if count != n:
        raise _Unsupported("the sample count differs from the decoder's frame count")
    sizes = [fixed] * n if fixed else [s for (s,) in _table(data, body, end, "I", skip=4)]
    chunk_key = b"stco" if b"stco" in boxes else b"co64"
    chunks = [c for (c,) in _table(data, *boxes[chunk_key], "I" if chunk_key == b"stco" else "Q")]
    offsets: list[int] = []
    stsc = _table(data, *boxes[b"stsc"], "III")
    for k, (first, per_chunk, description) in enumerate(stsc):
        last = stsc[k + 1][0] - 1 if k + 1 < len(stsc) else len(chunks)
        if description != 1 or not 1 <= first <= last + 1 or last > len(chunks):
            raise _Unsupported("a sample-to-chunk table this rewrite does not follow")
        for chunk in range(first - 1, last):
            at = chunks[chunk]
            for _ in range(per_chunk):
                if len(offsets) == n:
                    raise _Unsupported("the chunks hold more samples than the sample count")
                offsets.append(at)
                at += sizes[len(offsets) - 1]
    if len(offsets) != n or any(o + s > len(data) for o, s in zip(offsets, sizes, strict=True)):
        raise _Unsupported("samples outside the file")
    deltas = _expanded(_table(data, *boxes[b"stts"], "II"), n, "decoding time")
    dts, t = [], 0
    for delta in deltas:
        dts.append(t)
        t += delta
    ctts_version, cts = 0, [0] * n
    if b"ctts" in boxes:
        body, end = boxes[b"ctts"]
        ctts_version = data[body]
        cts = _expanded(_table(data, body, end, "Ii"), n, "composition")  # signed, as FFmpeg reads
    sync = None
    if b"stss" in boxes:
        sync = {s - 1 for (s,) in _table(data, *boxes[b"stss"], "I")}
    return _Track(codec, length_size, stbl, sizes, offsets, dts, t, cts, ctts_version, sync)


def _unneeded(data: bytes, track: _Track, samples: set[int]) -> set[int]:
    """Those of ``samples`` that hold nothing but non-reference slices and harmless NAL units
    (Note [non-reference frames])."""
    h264, size = track.codec == "h264", track.length_size
    harmless = _H264_HARMLESS if h264 else _HEVC_HARMLESS
    candidates, layers = [], {}
    for s in samples:
        i, end, slices, layer = track.offsets[s], track.offsets[s] + track.sizes[s], 0, 0
        while i + size < end:
            header = data[i + size]
            if h264:
                kind = header & 0x1F
                vcl = 1 <= kind <= 5
                droppable = vcl and header & 0x60 == 0  # nal_ref_idc == 0
            else:
                kind = (header >> 1) & 0x3F
                vcl = kind < 32
                droppable = kind < 16 and kind % 2 == 0  # sub-layer non-reference
                if vcl and i + size + 1 < end:
                    layer = max(layer, (data[i + size + 1] & 7) - 1)  # TemporalId
            if (vcl and not droppable) or (not vcl and kind not in harmless):
                break  # a reference slice, a parameter set, anything else: keep the sample
            slices += vcl
            i += size + int.from_bytes(data[i : i + size], "big")
        layers[s] = layer
        if slices and i == end:
            candidates.append(s)
    # HEVC: a sub-layer non-reference picture may be read by a higher sub-layer's pictures.
    top = max(layers.values(), default=0)
    return {s for s in candidates if layers[s] == top}


def _full_box(
    kind: bytes, fields: str, rows: Sequence[tuple[int, ...]], version: int = 0, prefix: bytes = b""
) -> bytes:
    """A full box: version and flags, ``prefix``, the entry count, then the entries."""
    entries = struct.pack(">" + fields * len(rows), *itertools.chain.from_iterable(rows))
    body = struct.pack(">B3x", version) + prefix + struct.pack(">I", len(rows)) + entries
    return struct.pack(">I", 8 + len(body)) + kind + body


def _runs_of(values: list[int]) -> list[tuple[int, int]]:
    """(count, value) runs, as ``stts`` and ``ctts`` store them."""
    return [(len(list(run)), value) for value, run in itertools.groupby(values)]


def _stbl(data: bytes, track: _Track, keep: list[int]) -> bytes:
    """The sample tables of ``keep``, each kept sample in its own chunk at its old offset."""
    after = [track.dts[k] for k in keep[1:]] + [track.end_dts]
    body = b"".join(
        data[start:end]
        for kind, start, _, end in _boxes(data, track.stbl[1], track.stbl[2])
        if kind in _KEPT  # the sample description and the composition shift bounds
    )
    deltas = [t - track.dts[k] for k, t in zip(keep, after, strict=True)]
    body += _full_box(b"stts", "II", _runs_of(deltas))
    if any(track.cts):
        ctts = _runs_of([track.cts[k] for k in keep])
        body += _full_box(b"ctts", "Ii", ctts, version=track.ctts_version)
    if track.sync is not None:
        body += _full_box(b"stss", "I", [(i + 1,) for i, k in enumerate(keep) if k in track.sync])
    body += _full_box(b"stsz", "I", [(track.sizes[k],) for k in keep], prefix=bytes(4))
    body += _full_box(b"stsc", "III", [(1, 1, 1)])
    body += _full_box(b"co64", "Q", [(track.offsets[k],) for k in keep])
    return struct.pack(">I", 8 + len(body)) + b"stbl" + body


def _rebuilt(data: bytes, start: int, end: int, stbl_start: int, new_stbl: bytes) -> bytes:
    """``data[start:end]``'s boxes, the one holding ``stbl_start`` rebuilt around ``new_stbl``."""
    out = []
    for kind, box, body, box_end in _boxes(data, start, end):
        if box == stbl_start:
            out.append(new_stbl)
        elif box < stbl_start < box_end:
            inner = _rebuilt(data, body, box_end, stbl_start, new_stbl)
            out.append(struct.pack(">I", 8 + len(inner)) + kind + inner)
        else:
            out.append(data[box:box_end])
    return b"".join(out)


def _child(data: bytes, start: int, end: int, *path: bytes) -> tuple[int, int, int] | None:
    """(box start, body start, box end) of the first box at ``path`` under ``data[start:end]``."""
    for kind, box, body, box_end in _boxes(data, start, end):
        if kind == path[0]:
            return (
                (box, body, box_end) if len(path) == 1 else _child(data, body, box_end, *path[1:])
            )
    return None


def _video_stbl(data: bytes, moov: tuple[int, int]) -> tuple[int, int, int]:
    """The sample table box of the only video track, with at most one edit."""
    found = []
    for kind, _, body, end in _boxes(data, *moov):
        if kind == b"mvex":
            raise _Unsupported("a fragmented file")
        hdlr = _child(data, body, end, b"mdia", b"hdlr") if kind == b"trak" else None
        if hdlr is None or data[hdlr[1] + 8 : hdlr[1] + 12] != b"vide":
            continue
        elst = _child(data, body, end, b"edts", b"elst")
        if elst is not None and _u32(data, elst[1] + 4) > 1:
            raise _Unsupported("an edit list of several edits")
        stbl = _child(data, body, end, b"mdia", b"minf", b"stbl")
        if stbl is None:
            raise _Unsupported("a video track without sample tables")
        found.append(stbl)
    if len(found) != 1:
        raise _Unsupported(f"{len(found)} video tracks")
    return found[0]


def _read(order: list[int], indices: list[int], sync: set[int] | None) -> set[int]:
    """The samples the decoder reads to output each sampled frame: from the sync sample before
    it, in decoding order, through the last sample that shows before it (B-frames come after)."""
    reach = list(itertools.accumulate(order, max))
    syncs = sorted(sync) if sync is not None else []
    read: set[int] = set()
    for i in indices:
        k = bisect.bisect_right(syncs, order[i]) - 1
        start = order[i] if sync is None else syncs[k] if k >= 0 else 0
        read.update(range(start, reach[i] + 1))
    return read


def thin(data: bytes, indices: list[int], total_frames: int, pixels: int) -> Thinned | None:
    """The video without the unsampled frames no sampled frame needs, when that pays.

    See Note [non-reference frames].

    Args:
        data: the encoded file.
        indices: the sampled frames, in presentation order (as the decoder counts them).
        total_frames: the decoder's frame count.
        pixels: pixels per decoded frame.

    Returns:
        The thinned file and the sampled frames' indices in it; ``None`` when the file is not
        one this rewrites, or the saving would not pay for the second scan.
    """
    if data[4:8] not in (b"ftyp", b"moov", b"free", b"wide", b"mdat"):
        return None
    try:
        return _thin(data, indices, total_frames, pixels)
    except (_Unsupported, struct.error):  # struct: a table whose sums overflow its fields
        return None


def _thin(data: bytes, indices: list[int], total_frames: int, pixels: int) -> Thinned | None:
    """``thin``, raising ``_Unsupported`` wherever the file is not one it rewrites: the
    rewrite walks boxes the table parse did not reach (those after ``stbl``, say)."""
    top = list(_boxes(data, 0, len(data)))
    moovs = [(box, body, end) for kind, box, body, end in top if kind == b"moov"]
    if len(moovs) != 1 or any(kind == b"moof" for kind, *_ in top):
        return None
    moov, moov_body, moov_end = moovs[0]
    track = _track(data, _video_stbl(data, (moov_body, moov_end)), total_frames)
    pts = [d + c for d, c in zip(track.dts, track.cts, strict=True)]
    order = sorted(range(total_frames), key=pts.__getitem__)  # presentation index -> sample
    sampled = {order[i] for i in indices}
    # Only the samples the decoder would read matter: leaving out others saves nothing.
    unneeded = _unneeded(data, track, _read(order, indices, track.sync) - sampled)
    if len(unneeded) * pixels < _SCAN_PIXELS_PER_PACKET * total_frames:
        return None
    keep = [s for s in range(total_frames) if s not in unneeded]
    new_stbl = _stbl(data, track, keep)
    new_moov = _rebuilt(data, moov_body, moov_end, track.stbl[0], new_stbl)
    view = memoryview(data)
    moov_header = struct.pack(">I", 8 + len(new_moov)) + b"moov"
    parts = (
        view[: moov + 4],
        memoryview(b"free"),
        view[moov + 8 :],
        memoryview(moov_header + new_moov),
    )
    rank = {sample: i for i, sample in enumerate(sorted(keep, key=pts.__getitem__))}
    return Thinned(parts, [rank[order[i]] for i in indices], total_frames - len(keep))
