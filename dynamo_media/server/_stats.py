"""``dynamo-media stats URL``: the input distributions of a running frontend, as text.

It reads ``/metrics`` (the counts since the server started) and draws each histogram of
``_inputs.py`` as one bar per bucket, then the codecs, the refusals by limit and the cache's
hits and misses, so that an operator sets the limits from what users send::

    video source pixels (7 items)
      <= 640x480         ####################  5
      <= 1920x1080       ########              2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dynamo_media._options import format_bytes
from dynamo_media.server._inputs import (
    AUDIO_SECONDS,
    IMAGE_PIXELS,
    INPUT_BYTES,
    INPUT_CODECS,
    REFUSALS,
    RESOLUTIONS,
    VIDEO_FRAMES,
    VIDEO_PIXELS,
    VIDEO_SECONDS,
)

__all__ = ["summarize"]

_BAR = 30
_RESOLUTIONS = {w * h: f"{w}x{h}" for w, h in RESOLUTIONS}


def _pixels(n: float) -> str:
    return _RESOLUTIONS.get(int(n), f"{n:.0f} px")


def _seconds(n: float) -> str:
    return f"{n:g} s"


def _count(n: float) -> str:
    return f"{n:g}"


_HISTOGRAMS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    (INPUT_BYTES, "encoded bytes", format_bytes),
    (IMAGE_PIXELS, "image pixels", _pixels),
    (VIDEO_PIXELS, "video source pixels", _pixels),
    (VIDEO_SECONDS, "video duration", _seconds),
    (VIDEO_FRAMES, "video frames sampled", _count),
    (AUDIO_SECONDS, "audio duration", _seconds),
)


def _bars(
    title: str, buckets: list[tuple[float, float]], unit: Callable[[float], str]
) -> list[str]:
    """One histogram: the count in each bucket (not the running total), up to the last one
    that holds an item."""
    running = [0.0] + [n for _, n in buckets]
    counts = [(le, n - running[i]) for i, (le, n) in enumerate(buckets)]
    total = buckets[-1][1]
    last = max(i for i, (_, n) in enumerate(counts) if n)
    most = max(n for _, n in counts)
    lines = [f"{title} ({total:g} items)"]
    for i, (le, n) in enumerate(counts[: last + 1]):
        edge = f"> {unit(counts[i - 1][0])}" if math.isinf(le) else f"<= {unit(le)}"
        lines.append(f"  {edge:<16} {'#' * round(_BAR * n / most):<{_BAR}}  {n:g}")
    return lines


def _by_labels(samples: Iterable[Sample], *names: str) -> str:
    parts = [f"{' '.join(s.labels[n] for n in names)} {s.value:g}" for s in samples if s.value]
    return ", ".join(sorted(parts)) or "none"


def summarize(text: str) -> str:
    """The text summary of a ``/metrics`` exposition (see the module docstring).

    Args:
        text: what ``/metrics`` answered.

    Returns:
        Lines for the histograms with items, the codecs, the refusals by limit, and the cache.
    """
    families = {f.name: f for f in text_string_to_metric_families(text)}
    lines: list[str] = []
    for name, title, unit in _HISTOGRAMS:
        family = families.get(name)
        if family is None:
            continue
        series: dict[str, list[tuple[float, float]]] = {}
        for s in family.samples:
            if s.name.endswith("_bucket"):
                where = s.labels.get("modality")
                series.setdefault(where or "", []).append((float(s.labels["le"]), s.value))
        for where, buckets in sorted(series.items()):
            if buckets[-1][1]:
                lines += _bars(f"{title}, {where}" if where else title, buckets, unit)
    if INPUT_CODECS in families:
        lines.append(f"codecs: {_by_labels(families[INPUT_CODECS].samples, 'modality', 'codec')}")
    if REFUSALS in families:
        lines.append(f"refusals: {_by_labels(families[REFUSALS].samples, 'modality', 'limit')}")
    cache = [
        f"{kind} {families[f'dynamo_media_cache_{kind}'].samples[0].value:g}"
        for kind in ("hits", "misses")
        if f"dynamo_media_cache_{kind}" in families
    ]
    lines.append(f"cache: {', '.join(cache) if cache else 'off'}")
    return "\n".join(lines)
