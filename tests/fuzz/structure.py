"""Where a file's chunks, boxes and segments are, and the header fields worth breaking.

``groups(data, format)`` lists the sibling groups of the file's tree of ``Node``s: PNG chunks,
JPEG segments, GIF blocks, RIFF chunks (WebP, WAV, AVI), ISO-BMFF boxes (MP4, MOV) and EBML
elements (WebM, MKV). ``fields(data, format)`` lists the integer fields that decoders trust:
every chunk's size, and the widths, heights, counts and rates of the headers (BMP and TIFF have
no chunks, only fields). Parsers stop quietly where they cannot go on, so a mutated file is
parsed as far as it reads.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

__all__ = [
    "CHECKSUMMED",
    "CHUNKED",
    "FIELDED",
    "Field",
    "Node",
    "fields",
    "fix_checksums",
    "groups",
]

Order = Literal["big", "little"]


@dataclasses.dataclass(frozen=True)
class Field:
    """An unsigned integer in the file.

    Attributes:
        offset: where it starts.
        width: its size in bytes.
        order: its byte order.
        label: what it is, for the mutation's note (``"IHDR+0"``: the chunk's type and the
            field's offset into the chunk's data).
    """

    offset: int
    width: int
    order: Order
    label: str


@dataclasses.dataclass(frozen=True)
class Node:
    """A chunk, box, segment or element: ``[start, end)`` with its data from ``body``.

    Attributes:
        kind: its type (``b"IHDR"``, ``b"moov"``, the marker ``b"\\xff\\xc0"``, an EBML id).
        start: offset of its header.
        body: offset of its data.
        end: offset just past it (clamped to its parent or the file).
        size: its length field, if it has one.
        children: the nodes inside it, for containers.
    """

    kind: bytes
    start: int
    body: int
    end: int
    size: Field | None = None
    children: tuple[Node, ...] = ()

    @property
    def name(self) -> str:
        """The kind as text where it is printable ASCII (``"IHDR"``), else in hex (``"ffc0"``)."""
        return _name(self.kind)


def _name(kind: bytes) -> str:
    text = kind.decode("latin-1")
    return text if text.isascii() and text.isprintable() else kind.hex()


def _uint(data: bytes, at: int, width: int, order: Order) -> int:
    return int.from_bytes(data[at : at + width], order)


def _png(data: bytes) -> list[Node]:
    nodes, i = [], 8
    while i + 12 <= len(data):
        end = min(i + 12 + _uint(data, i, 4, "big"), len(data))
        kind = data[i + 4 : i + 8]
        nodes.append(Node(kind, i, i + 8, end, Field(i, 4, "big", f"{_name(kind)}.length")))
        i = end
    return nodes


def _jpeg_scan_end(data: bytes, i: int) -> int:
    """The next marker after entropy-coded data: 0xFF not followed by 0x00, RSTn or fill."""
    while (i := data.find(b"\xff", i)) != -1 and i + 1 < len(data):
        if data[i + 1] not in (0x00, 0xFF) and not 0xD0 <= data[i + 1] <= 0xD7:
            return i
        i += 1
    return len(data)


def _jpeg(data: bytes) -> list[Node]:
    nodes, i = [], 2
    while i + 2 <= len(data) and data[i] == 0xFF:
        kind = data[i : i + 2]
        if kind == b"\xff\xd9":  # EOI
            nodes.append(Node(kind, i, i + 2, i + 2))
            break
        end = i + 2 + _uint(data, i + 2, 2, "big")
        if kind == b"\xff\xda":  # SOS: the entropy-coded scan follows its header
            end = _jpeg_scan_end(data, end)
        end = min(end, len(data))
        nodes.append(Node(kind, i, i + 4, end, Field(i + 2, 2, "big", f"{_name(kind)}.length")))
        i = end
    return nodes


def _gif_sub_blocks(data: bytes, i: int) -> int:
    while i < len(data) and data[i]:
        i += data[i] + 1
    return i + 1


def _gif_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _gif(data: bytes) -> list[Node]:
    if len(data) < 13:
        return []
    i = 13 + _gif_table(data[10])
    nodes = [Node(b"screen", 0, 0, min(i, len(data)))]
    while i < len(data) and data[i] in (0x21, 0x2C):
        if data[i] == 0x21:  # extension: label, then sub-blocks
            kind, end = b"extension", _gif_sub_blocks(data, i + 2)
        elif i + 10 <= len(data):  # image descriptor, local table, LZW code size, sub-blocks
            kind, end = b"image", _gif_sub_blocks(data, i + 11 + _gif_table(data[i + 9]))
        else:
            break
        nodes.append(Node(kind, i, i, min(end, len(data))))
        i = end
    if i < len(data) and data[i] == 0x3B:
        nodes.append(Node(b"trailer", i, i, i + 1))
    return nodes


def _ogg(data: bytes) -> list[Node]:
    """Ogg pages; each holds one node for its packet data, named by an Opus header's magic."""
    nodes, i = [], 0
    while i + 27 <= len(data) and data[i : i + 4] == b"OggS":
        body = i + 27 + data[i + 26]
        end = min(body + sum(data[i + 27 : body]), len(data))
        kind = data[body : body + 8] if data[body : body + 4] == b"Opus" else b"packets"
        size = Field(i + 26, 1, "little", "OggS.segments")
        nodes.append(Node(b"OggS", i, i, end, size, (Node(kind, body, body, end),)))
        i = end
    return nodes


_FLAC_BLOCKS = {0: b"STREAMINFO", 1: b"PADDING", 3: b"SEEKTABLE", 4: b"VORBIS_COMMENT"}


def _flac(data: bytes) -> list[Node]:
    """FLAC metadata blocks, then the frames as one node."""
    if data[:4] != b"fLaC":
        return []
    nodes, i, last = [], 4, False
    while not last and i + 4 <= len(data):
        kind, last = _FLAC_BLOCKS.get(data[i] & 0x7F, bytes([data[i] & 0x7F])), data[i] >= 0x80
        end = min(i + 4 + _uint(data, i + 1, 3, "big"), len(data))
        size = Field(i + 1, 3, "big", f"{_name(kind)}.length")
        nodes.append(Node(kind, i, i + 4, end, size))
        i = end
    return [*nodes, Node(b"frames", i, i, len(data))] if i < len(data) else nodes


def _riff(data: bytes, i: int = 0, stop: int | None = None) -> list[Node]:
    nodes, stop = [], len(data) if stop is None else stop
    while i + 8 <= stop:
        kind, n = data[i : i + 4], _uint(data, i + 4, 4, "little")
        end = min(i + 8 + n + (n & 1), stop)
        children = _riff(data, i + 12, end) if kind in (b"RIFF", b"LIST") else []
        size = Field(i + 4, 4, "little", f"{_name(kind)}.size")
        nodes.append(Node(kind, i, i + 8, end, size, tuple(children)))
        i = end
    return nodes


# Boxes that hold boxes, and where their children start (stsd: after version and count).
_BMFF_CHILDREN = {
    **dict.fromkeys([b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"], 8),
    **dict.fromkeys([b"udta", b"mvex", b"moof", b"traf"], 8),
    b"stsd": 16,
}


def _bmff(data: bytes, i: int = 0, stop: int | None = None) -> list[Node]:
    nodes, stop = [], len(data) if stop is None else stop
    while i + 8 <= stop:
        n, kind, body = _uint(data, i, 4, "big"), data[i + 4 : i + 8], i + 8
        if n == 1 and i + 16 <= stop:  # 64-bit size
            n, body = _uint(data, i + 8, 8, "big"), i + 16
        elif n == 0:  # to the end
            n = stop - i
        if n < body - i:
            break
        end = min(i + n, stop)
        children = _bmff(data, i + _BMFF_CHILDREN[kind], end) if kind in _BMFF_CHILDREN else []
        size = Field(i, 4, "big", f"{_name(kind)}.size")
        nodes.append(Node(kind, i, body, end, size, tuple(children)))
        i = end
    return nodes


_EBML_MASTERS = {
    0x1A45DFA3,  # EBML header
    0x18538067,  # Segment
    0x114D9B74,  # SeekHead
    0x4DBB,  # Seek
    0x1549A966,  # Info
    0x1654AE6B,  # Tracks
    0xAE,  # TrackEntry
    0xE0,  # Video
    0xE1,  # Audio
    0x1F43B675,  # Cluster
    0xA0,  # BlockGroup
    0x1C53BB6B,  # Cues
    0xBB,  # CuePoint
    0xB7,  # CueTrackPositions
}


def _ebml_length(first: int) -> int:
    """A variable-length integer's length in bytes, from its first byte (0 when invalid)."""
    return 9 - first.bit_length() if first else 0


def _ebml(data: bytes, i: int = 0, stop: int | None = None) -> list[Node]:
    nodes, stop = [], len(data) if stop is None else stop
    while i < stop:
        id_length = _ebml_length(data[i])
        size_at = i + id_length
        if not 0 < id_length <= 4 or size_at >= stop:
            break
        size_length = _ebml_length(data[size_at])
        body = size_at + size_length
        if size_length == 0 or body > stop:
            break
        kind = data[i:size_at]
        mask = (1 << 7 * size_length) - 1
        n = _uint(data, size_at, size_length, "big") & mask
        end = stop if n == mask else min(body + n, stop)  # all ones: unknown size
        children = _ebml(data, body, end) if int.from_bytes(kind, "big") in _EBML_MASTERS else []
        size = Field(size_at, size_length, "big", f"{_name(kind)}.size")
        nodes.append(Node(kind, i, body, end, size, tuple(children)))
        i = end
    return nodes


_SOF = [bytes([0xFF, m]) for m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB)]
_VISUAL_SAMPLE_ENTRY = ((24, 2), (26, 2))  # width, height
_EBML_UINT = ((0, 8),)  # the whole body, when it is at most 8 bytes

Parser = Callable[[bytes], list[Node]]
Table = Mapping[bytes, tuple[tuple[int, int], ...]]

# Per family: its parser, the byte order of its fields, and per node kind the fields as
# (offset into the node's data, width).
_FAMILIES: dict[str, tuple[Parser, Order, Table]] = {
    "png": (_png, "big", {b"IHDR": ((0, 4), (4, 4), (8, 1), (9, 1), (12, 1))}),
    "jpeg": (
        _jpeg,
        "big",
        {
            **dict.fromkeys(_SOF, ((0, 1), (1, 2), (3, 2), (5, 1))),  # precision, h, w, comps
            b"\xff\xdd": ((0, 2),),  # restart interval
            b"\xff\xda": ((0, 1),),  # components in scan
        },
    ),
    "gif": (
        _gif,
        "little",
        {b"screen": ((6, 2), (8, 2), (10, 1)), b"image": ((1, 2), (3, 2), (5, 2), (7, 2), (9, 1))},
    ),
    "riff": (
        _riff,
        "little",
        {
            b"fmt ": ((0, 2), (2, 2), (4, 4), (8, 4), (12, 2), (14, 2)),  # tag, channels, rate..
            b"avih": ((16, 4), (24, 4), (28, 4), (32, 4), (36, 4)),  # frames, streams, w, h
            b"strh": ((20, 4), (24, 4), (32, 4), (36, 4)),  # scale, rate, length, buffer
            b"strf": ((4, 4), (8, 4), (14, 2), (16, 4)),  # video: width, height, bits, codec
            b"VP8 ": ((6, 2), (8, 2)),  # width, height
            b"VP8L": ((1, 4),),  # width and height, 14 bits each
            b"VP8X": ((0, 1), (4, 3), (7, 3)),  # flags, canvas width, height
        },
    ),
    "bmff": (
        _bmff,
        "big",
        {
            **dict.fromkeys([b"mvhd", b"mdhd"], ((12, 4), (16, 4))),  # timescale, duration
            b"tkhd": ((76, 4), (80, 4)),  # width, height (16.16)
            **dict.fromkeys([b"avc1", b"vp09", b"jpeg", b"mp4v"], _VISUAL_SAMPLE_ENTRY),
            **dict.fromkeys([b"stts", b"stsc", b"stss", b"stco"], ((4, 4), (8, 4), (12, 4))),
            b"stsz": ((4, 4), (8, 4), (12, 4)),  # sample size, count, first size
            b"elst": ((4, 4), (8, 4), (12, 4)),  # count, duration, media time
        },
    ),
    "ogg": (
        _ogg,
        "little",
        {
            b"OggS": ((5, 1), (6, 8), (18, 4)),  # header type, granule position, page number
            b"OpusHead": ((9, 1), (10, 2), (12, 4), (18, 1)),  # channels, pre-skip, rate, map
        },
    ),
    "flac": (
        _flac,
        "big",
        # Block and frame sizes; then sample rate, channels, bits and total samples, packed.
        {b"STREAMINFO": ((0, 2), (2, 2), (4, 3), (7, 3), (10, 4), (14, 4))},
    ),
    "ebml": (
        _ebml,
        "big",
        {
            bytes.fromhex(element): _EBML_UINT
            for element in (
                *("b0", "ba", "54b0", "54ba"),  # pixel and display width, height
                *("2ad7b1", "23e383"),  # timestamp scale, default frame duration
                *("9f", "e7", "d7", "83"),  # channels, cluster time, track number, track type
                *("53ac", "b3", "f1"),  # seek position, cue time, cue cluster position
            )
        },
    ),
}
_FAMILY = {
    "png": "png",
    "jpeg": "jpeg",
    "gif": "gif",
    "webp": "riff",
    "wav": "riff",
    "avi": "riff",
    "mp4": "bmff",
    "mov": "bmff",
    "webm": "ebml",
    "mkv": "ebml",
    "opus": "ogg",
    "flac": "flac",
}
_BMP = (  # (offset, width), little-endian
    (2, 4),  # file size
    (10, 4),  # pixel data offset
    (14, 4),  # header size
    (18, 4),  # width
    (22, 4),  # height
    (28, 2),  # bits per pixel
    (30, 4),  # compression
    (34, 4),  # image size
    (46, 4),  # palette colours
)

CHUNKED = frozenset(_FAMILY)
FIELDED = CHUNKED | {"bmp", "tiff"}
CHECKSUMMED = frozenset({"png", "opus"})


def _ogg_crc_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_crc(page: bytes | bytearray) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, starting from 0."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc


def fix_checksums(data: bytes, fmt: str) -> bytes:
    """``data`` with its PNG chunk or Ogg page CRCs recomputed, so that a mutation reaches the
    decoder instead of stopping at the checksum test. Other formats come back as they are.

    Args:
        data: the file.
        fmt: a seed's format.
    """
    out = bytearray(data)
    if fmt == "png":
        for node in _png(data):
            if node.end - node.start >= 12:
                crc = zlib.crc32(out[node.start + 4 : node.end - 4])
                out[node.end - 4 : node.end] = crc.to_bytes(4, "big")
    elif fmt == "opus":
        for node in _ogg(data):
            field = slice(node.start + 22, node.start + 26)
            out[field] = bytes(4)
            out[field] = _ogg_crc(out[node.start : node.end]).to_bytes(4, "little")
    return bytes(out)


def _family(fmt: str) -> tuple[Parser, Order, Table]:
    return _FAMILIES[_FAMILY[fmt]]


def _walk(nodes: tuple[Node, ...] | list[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def groups(data: bytes, fmt: str) -> list[tuple[Node, ...]]:
    """The file's sibling groups, top level first; empty for formats without chunks.

    Args:
        data: the file.
        fmt: a seed's format (``"png"``, ``"mp4"``, ...).
    """
    if fmt not in CHUNKED:
        return []
    top = tuple(_family(fmt)[0](data))
    inner = [node.children for node in _walk(top) if node.children]
    return [group for group in (top, *inner) if group]


def _tiff(data: bytes) -> list[Field]:
    """The IFD offset, and every entry's count and value (or value offset) in the first IFD."""
    if data[:2] not in (b"II", b"MM") or len(data) < 8:
        return []
    order: Order = "little" if data[:2] == b"II" else "big"
    found, ifd = [Field(4, 4, order, "IFD offset")], _uint(data, 4, 4, order)
    for k in range(_uint(data, ifd, 2, order) if ifd + 2 <= len(data) else 0):
        entry = ifd + 2 + 12 * k
        tag, kind = _uint(data, entry, 2, order), _uint(data, entry + 2, 2, order)
        found.append(Field(entry + 4, 4, order, f"tag {tag} count"))
        found.append(Field(entry + 8, 2 if kind == 3 else 4, order, f"tag {tag} value"))
    return found


def fields(data: bytes, fmt: str) -> list[Field]:
    """The header fields of a file that lie inside it; empty for formats without known fields.

    Args:
        data: the file.
        fmt: a seed's format.
    """
    if fmt == "bmp":
        found = [Field(at, width, "little", f"BMP+{at}") for at, width in _BMP]
    elif fmt == "tiff":
        found = _tiff(data)
    elif fmt in CHUNKED:
        parse, order, table = _family(fmt)
        found = []
        for node in _walk(parse(data)):
            if node.size is not None:
                found.append(node.size)
            for at, width in table.get(node.kind, ()):
                width = min(width, node.end - node.body - at)
                label = f"{_name(node.kind)}+{at}"
                found += [Field(node.body + at, width, order, label)] if width > 0 else []
    else:
        found = []
    return [field for field in found if field.offset + field.width <= len(data)]
