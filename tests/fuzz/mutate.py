"""Structure-aware mutations, deterministic from an integer seed.

``mutate(seed, mutation_seed)`` stacks one to three operations, each drawn from
``random.Random(mutation_seed)``, so the pair (seed file name, mutation seed) regenerates the
same bytes. The operations:

    flip        flip one to eight random bits
    interesting write a boundary value (0, 0xFF, 0x7FFF, 0x80000000, ...) at a random place
    field       break a known header field (size, width, height, count, rate): a boundary
                value, or the old value nudged or multiplied (see ``structure.fields``)
    chunk       drop, duplicate, swap or truncate a chunk, box, segment or element
    cut         truncate the file
    splice      the head of this file and the tail of a seed of the same format, cut at
                chunk starts half of the time (VP9 clusters of another size, say)
    repeat      repeat a region of up to 256 bytes up to 64 times

PNG chunks and Ogg pages carry CRCs: three mutants in four get theirs recomputed afterwards, so
that the decoder reads what the mutation did rather than refusing the checksum.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from tests.fuzz import structure
from tests.fuzz.seeds import SEEDS, Seed
from tests.fuzz.structure import Field

__all__ = ["INTERESTING", "Mutant", "mutate"]

INTERESTING = (
    *(0, 1, 0x7F, 0x80, 0xFF, 0x100),
    *(0x7FFF, 0x8000, 0xFFFF, 0x10000),
    *(0x7FFFFFFF, 0x80000000, 0xFFFFFFFF),
)


@dataclasses.dataclass(frozen=True)
class Mutant:
    """A mutated input.

    Attributes:
        seed: the seed it was made from.
        mutation_seed: the integer that, with the seed's name, regenerates it.
        data: its bytes.
        ops: what was done, in order, one note per operation.
    """

    seed: Seed
    mutation_seed: int
    data: bytes = dataclasses.field(repr=False)
    ops: tuple[str, ...]


Op = Callable[[bytes, Seed, random.Random], tuple[bytes, str]]


def _write(data: bytes, field: Field, value: int) -> bytes:
    raw = (value & ((1 << 8 * field.width) - 1)).to_bytes(field.width, field.order)
    return data[: field.offset] + raw + data[field.offset + field.width :]


def _flip(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    places = sorted(rng.randrange(len(out)) for _ in range(rng.randint(1, 8)))
    for i in places:
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip bits at {places}"


def _interesting(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    value = rng.choice(INTERESTING)
    width = min(rng.choice([w for w in (1, 2, 4) if value >> 8 * w == 0]), len(data))
    field = Field(rng.randrange(len(data) - width + 1), width, rng.choice(("big", "little")), "")
    data = _write(data, field, value)
    return data, f"write {value:#x} ({width} bytes, {field.order}) at {field.offset}"


def _field(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    found = structure.fields(data, seed.format)
    if not found:  # the header is gone (cut, or a mutated chunk size hides it)
        return _interesting(data, seed, rng)
    field = rng.choice(found)
    old = int.from_bytes(data[field.offset : field.offset + field.width], field.order)
    value = rng.choice(
        (
            rng.choice(INTERESTING),
            old + rng.randint(1, 16),
            old - rng.randint(1, 16),
            old << rng.randint(1, 8),
        )
    )
    value &= (1 << 8 * field.width) - 1
    return _write(data, field, value), f"set {field.label}@{field.offset} {old:#x} -> {value:#x}"


def _chunk(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    groups = structure.groups(data, seed.format)
    if not groups:  # the structure is gone
        return _cut(data, seed, rng)
    group = rng.choice(groups)
    node = rng.choice(group)
    action = rng.choice(("drop", "duplicate", "truncate", *(("swap",) if len(group) > 1 else ())))
    note = f"{action} {node.name}@{node.start}"
    if action == "drop":
        out = data[: node.start] + data[node.end :]
    elif action == "duplicate":
        out = data[: node.end] + data[node.start : node.end] + data[node.end :]
    elif action == "swap":
        other = rng.choice([n for n in group if n is not node])
        note += f" with {other.name}@{other.start}"
        a, b = sorted((node, other), key=lambda n: n.start)
        out = data[: a.start] + data[b.start : b.end] + data[a.end : b.start]
        out += data[a.start : a.end] + data[b.end :]
    else:
        cut = rng.randint(min(node.body, node.end), node.end)  # a header may claim past its end
        out = data[:cut] + data[node.end :]
        note += f" to {cut - node.start} bytes"
    return out, note


def _cut(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    end = rng.randrange(len(data))
    return data[:end], f"cut to {end} bytes"


def _splice_point(data: bytes, fmt: str, rng: random.Random) -> int:
    """The start of a chunk half of the time (a cluster, a box, a frame), else any offset."""
    starts = [node.start for group in structure.groups(data, fmt) for node in group]
    return rng.choice(starts) if starts and rng.random() < 0.5 else rng.randrange(len(data))


def _splice(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    other = rng.choice([s for s in SEEDS if s.format == seed.format])
    head = _splice_point(data, seed.format, rng)
    tail = _splice_point(other.data, seed.format, rng)
    return data[:head] + other.data[tail:], f"splice [:{head}] + {other.name}[{tail}:]"


def _repeat(data: bytes, seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    start = rng.randrange(len(data))
    end = start + rng.randint(1, min(256, len(data) - start))
    times = rng.randint(2, 64)
    out = data[:start] + data[start:end] * times + data[end:]
    return out, f"repeat [{start}:{end}] {times} times"


_FIX_CHECKSUMS = 0.75  # the share of PNG and Ogg mutants whose checksums are made right again
_GENERIC: tuple[Op, ...] = (_flip, _interesting, _cut, _splice, _repeat)


def _ops(fmt: str) -> tuple[Op, ...]:
    """The operations that apply to a format: the generic ones, and those its structure allows."""
    ops = _GENERIC
    if fmt in structure.CHUNKED:
        ops += (_chunk,)
    if fmt in structure.FIELDED:
        ops += (_field,)
    return ops


def mutate(seed: Seed, mutation_seed: int) -> Mutant:
    """Mutates a seed file, the same way every time for the same ``mutation_seed``.

    Args:
        seed: the seed file.
        mutation_seed: picks the operations and their places.

    Returns:
        The mutant, with a note per operation.
    """
    rng = random.Random(mutation_seed)
    ops, data, notes = _ops(seed.format), seed.data, []
    for _ in range(rng.randint(1, 3)):
        if not data:
            break
        data, note = rng.choice(ops)(data, seed, rng)
        notes.append(note)
    if seed.format in structure.CHECKSUMMED and rng.random() < _FIX_CHECKSUMS:
        data = structure.fix_checksums(data, seed.format)
        notes.append("fix checksums")
    return Mutant(seed, mutation_seed, data, tuple(notes))
