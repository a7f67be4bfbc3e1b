"""Load test of ``dynamo-media serve`` (frontend + reference backend, real processes): mixed
requests at a fixed concurrency, one in five bad, with text-only probes running beside them.

It checks what a deployment cares about: zero 5xx, no registrations left afterwards, memory back
near its start, and text-only latency while videos decode. Bounded in count and time; everything
runs on 127.0.0.1.

    python -m benchmarks.server [--quick] [--requests 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import machine, report
from tests.media import ffmpeg, numbered_video
from tests.media_server import MediaServer
from tests.serve import serving

TEXT = {"model": "dynamo-media-echo", "messages": [{"role": "user", "content": "ping"}]}


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def _requests(server: MediaServer, n: int, rng: random.Random) -> list[tuple[str, dict]]:
    def url(name: str, path: Path, mime: str) -> str:
        return server.url(server.add(name, path.read_bytes(), mime), host="127.0.0.1")

    jpeg = ffmpeg("load.jpg", "-f", "lavfi", "-i", "testsrc2=size=1280x720", "-frames:v", "1")
    image = url("load.jpg", jpeg, "image/jpeg")
    video = url("load.mp4", numbered_video("load.mp4", seconds=10, size="640x360"), "video/mp4")
    audio = ffmpeg(
        "load.mp3", "-f", "lavfi", "-i", "sine=frequency=440:duration=20", "-c:a", "libmp3lame"
    )
    audio_url = url("load.mp3", audio, "audio/mpeg")
    corrupt = server.url(
        server.add("bad.jpg", jpeg.read_bytes()[:2000], "image/jpeg"), host="127.0.0.1"
    )
    wav64 = base64.b64encode(
        ffmpeg("load.wav", "-f", "lavfi", "-i", "sine=frequency=220:duration=3").read_bytes()
    ).decode()

    def part(kind: str, value: object) -> dict:
        return {
            "model": "dynamo-media-echo",
            "messages": [{"role": "user", "content": [{"type": kind, kind: value}]}],
        }

    good = [
        ("image", part("image_url", {"url": image})),
        ("video", part("video_url", {"url": video})),
        ("audio", part("audio_url", {"url": audio_url})),
        ("audio", part("input_audio", {"data": wav64, "format": "wav"})),
    ]
    bad = [
        ("bad", part("image_url", {"url": "http://10.0.0.1/x.jpg"})),  # refused: not allowed
        ("bad", part("image_url", {"url": corrupt})),
        ("bad", part("video_url", {"url": video}) | {"media_io_kwargs": {"video": {"fsp": 1}}}),
        ("bad", part("image_url", {"url": "http://127.0.0.1:9/none.jpg"})),
    ]
    return [rng.choice(bad) if i % 5 == 4 else rng.choice(good) for i in range(n)]


def _probe(url: str, stop: Any, out: Any) -> None:
    """Text-only requests every 50 ms from their own process, until ``stop`` is set."""
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            client.post("/v1/chat/completions", json=TEXT)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.05)
    out.put(latencies)


async def _load(url: str, work: list[tuple[str, dict]], concurrency: int) -> dict:
    latencies: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(concurrency)
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    prober = ctx.Process(target=_probe, args=(url, stop, out))
    prober.start()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(kind: str, body: dict) -> None:
            async with sem:
                start = time.perf_counter()
                answer = await client.post("/v1/chat/completions", json=body)
                latencies.setdefault(kind, []).append(time.perf_counter() - start)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        await asyncio.sleep(1.0)  # the prober's interpreter starts
        start = time.perf_counter()
        await asyncio.gather(*(one(kind, body) for kind, body in work))
        wall = time.perf_counter() - start
    stop.set()
    probes = out.get(timeout=60)
    prober.join(timeout=30)
    return {"latencies": latencies, "statuses": statuses, "probes": probes, "wall": wall}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 requests")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n = 40 if args.quick else args.requests
    media = MediaServer()
    # The media server is 127.0.0.1 with a port: allow exactly that host.
    config = {
        "fetcher": {
            "allow_direct_ip": True,
            "allow_private_ips": True,
            "allow_direct_port": True,
            "allowed_media_domains": ["127.0.0.1"],
        },
        "server": {
            "max_concurrent_requests": args.concurrency,
            "queue_timeout_ms": 60000,
            "pool_capacity_bytes": 1 << 30,
        },
    }
    with serving(config, quiet=True) as url:
        try:
            work = _requests(media, n, random.Random(0))
            asyncio.run(_load(url, work[:8], 4))  # warm up: connections, decoders
            before = httpx.get(f"{url}/metrics").text
            result = asyncio.run(_load(url, work, args.concurrency))
            time.sleep(0.5)
            after = httpx.get(f"{url}/metrics").text
        finally:
            media.stop()
    rss0 = _metric(before, "process_resident_memory_bytes") / 2**20
    rss1 = _metric(after, "process_resident_memory_bytes") / 2**20
    left = _metric(after, "dynamo_media_registered_items")
    fives = sum(c for s, c in result["statuses"].items() if s >= 500)
    lines = [
        f"Machine: {machine()}\n",
        f"### Load: {n} requests, concurrency {args.concurrency}, one in five bad\n",
        "| kind | requests | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for kind, values in sorted(result["latencies"].items()):
        lines.append(
            f"| {kind} | {len(values)} | {statistics.median(values) * 1000:.1f} | "
            f"{_pct(values, 0.99) * 1000:.1f} |"
        )
    probes = result["probes"]
    lines.append(
        f"| text-only probe, during the load | {len(probes)} | "
        f"{statistics.median(probes) * 1000:.1f} | {_pct(probes, 0.99) * 1000:.1f} |"
    )
    lines += [
        "",
        f"- statuses: {dict(sorted(result['statuses'].items()))}; 5xx: {fives}",
        f"- wall time {result['wall']:.1f} s ({n / result['wall']:.1f} requests/s)",
        f"- registrations left afterwards: {left:.0f}",
        f"- frontend RSS: {rss0:.0f} MiB after warm-up, {rss1:.0f} MiB after the load",
        f"- text-only latency during the load: max {max(probes) * 1000:.1f} ms",
    ]
    report("server", "\n".join(lines) + "\n")
    if fives or left:
        raise SystemExit("the load test failed: 5xx answers or registrations left")


if __name__ == "__main__":
    main()
