"""Prometheus metrics of the frontend, one registry per app.

The backend hop: ``dynamo_media_backend_first_chunk_seconds`` is measured by the frontend for
every transport (from sending to the first message: a whole answer, or a stream's first chunk,
failovers included); the per-worker counts and failovers come from the transport's
``BackendEvent``s, so only a transport with several workers (Dynamo) has them.

What users send (sizes, resolutions, durations, codecs, refusals by limit) is ``InputMetrics``
in ``_inputs.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dynamo_media.server._backend import BackendEvent
from dynamo_media.server._inputs import InputMetrics

__all__ = ["Metrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _CacheCollector(Collector):
    """The decoded-media cache's counters, read from its ``stats()`` at scrape time (the cache
    counts them itself, under its lock)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._stats()
        yield CounterMetricFamily(
            "dynamo_media_cache_hits",
            "Media items served from the decoded-media cache (or a concurrent request's decode)",
            s["hits"],
        )
        yield CounterMetricFamily(
            "dynamo_media_cache_misses", "Media items the cache had to decode", s["misses"]
        )
        yield CounterMetricFamily(
            "dynamo_media_cache_evictions", "Cache entries evicted for room", s["evictions"]
        )
        yield GaugeMetricFamily(
            "dynamo_media_cache_bytes", "Bytes of decoded tensors the cache keeps now", s["bytes"]
        )
        yield GaugeMetricFamily(
            "dynamo_media_cache_entries", "Items the cache keeps now", s["entries"]
        )
        # The file tier (Note [memory tiers] in _cache.py); zeros without a cache_dir.
        yield CounterMetricFamily(
            "dynamo_media_cache_spills", "Cache entries written to cache_dir", s["spills"]
        )
        yield CounterMetricFamily(
            "dynamo_media_cache_restores",
            "Cache hits read back from cache_dir (counted in the hits too)",
            s["restores"],
        )
        yield CounterMetricFamily(
            "dynamo_media_cache_lost_spills",
            "Files in cache_dir found gone or changed when read (a miss; decoded again)",
            s["lost_spills"],
        )
        yield GaugeMetricFamily(
            "dynamo_media_cache_dir_bytes",
            "Bytes the cache keeps in cache_dir now",
            s["disk_bytes"],
        )


class Metrics:
    """The frontend's metrics.

    Args:
        pool_stats: returns the registration pool's ``stats()``, read at scrape time.
        cache_stats: returns the decoded-media cache's ``stats()``, read at scrape time;
            ``None`` when the server has no cache (no cache metrics).

    Attributes:
        inputs: the distributions of what users send (``InputMetrics``).
    """

    def __init__(
        self,
        pool_stats: Callable[[], dict[str, int]],
        cache_stats: Callable[[], dict[str, Any]] | None,
    ) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        if cache_stats is not None:
            self.registry.register(_CacheCollector(cache_stats))
        r = self.registry
        self.stage_seconds = Histogram(
            "dynamo_media_stage_seconds",
            "Seconds per pipeline stage and modality",
            ["stage", "modality"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "dynamo_media_request_seconds",
            "Seconds per chat request, media or text only",
            ["kind"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.fetched_bytes = Counter(
            "dynamo_media_fetched_bytes", "Encoded bytes fetched", ["modality"], registry=r
        )
        self.frames = Counter("dynamo_media_frames_decoded", "Video frames decoded", registry=r)
        self.samples = Counter("dynamo_media_audio_samples_decoded", "Audio samples", registry=r)
        self.items = Counter(
            "dynamo_media_items",
            "Media items served, decoded or from the cache",
            ["modality"],
            registry=r,
        )
        self.errors = Counter(
            "dynamo_media_errors", "Errors by type and modality", ["type", "modality"], registry=r
        )
        self.inputs = InputMetrics(r)
        self.first_chunk_seconds = Histogram(
            "dynamo_media_backend_first_chunk_seconds",
            "Seconds from sending a request to the backend to its first message (a whole "
            "answer, or a stream's first chunk), failovers included",
            ["kind"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.backend_requests = Counter(
            "dynamo_media_backend_requests",
            "Attempts per worker and outcome: answered (its first message came), failed "
            "(before it; a failover follows when a worker is left), timeout (nothing within "
            "the first-chunk deadline)",
            ["instance", "outcome"],
            registry=r,
        )
        self.failovers = Counter(
            "dynamo_media_backend_failovers",
            "Requests sent once more, to another worker, after one failed before its first message",
            registry=r,
        )
        registered = Gauge(
            "dynamo_media_registered_bytes",
            "Bytes of the NIXL pool's budget held now (pool regions and zero-copy tensors)",
            registry=r,
        )
        registered.set_function(lambda: pool_stats()["lent_bytes"])
        regions = Gauge(
            "dynamo_media_registered_items", "Items held in the NIXL pool now", registry=r
        )
        regions.set_function(lambda: pool_stats()["lent"])
        zero_copy = Gauge(
            "dynamo_media_zero_copy_items",
            "Of the items held, those registered in place (no copy)",
            registry=r,
        )
        zero_copy.set_function(lambda: pool_stats()["zero_copy"])

    def backend_event(self, event: BackendEvent) -> None:
        """Counts one ``BackendEvent`` (the backend's event hook)."""
        if event.kind == "failover":
            self.failovers.inc()
        else:
            self.backend_requests.labels(event.instance, event.kind).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
