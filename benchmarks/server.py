"""Load test of ``dynamo-media serve`` (frontend + reference backend, real processes): mixed
requests at a fixed concurrency, one in five bad, with text-only probes running beside them.

It checks what a deployment cares about: zero 5xx, no registrations left afterwards, memory back
near its start, and text-only latency while videos decode (the decoded-media cache is off, or
every repeat would be a hit). Bounded in count and time; everything runs on 127.0.0.1.

``--replay`` replays multi-turn chats instead: 8 conversations at once, 10 turns each, every turn
resending the conversation's 3 images and 1 video, through the frontend's preprocessor (fetch,
decode, NIXL registration, in this process) with the cache off, on, and on with the fetcher's HTTP
cache too (the media are served with ``Cache-Control: max-age`` and an ``ETag``): per-turn latency
and decode time.

``--transports`` runs the same load, in one run, through the HTTP hop to one reference backend
and through Dynamo's runtime to 1 and to 2 workers (``serve --transport dynamo``): req/s and
p50/p99 per kind, then a video-only load with the text-only probes beside it, then (2 workers)
the failover: one worker is SIGKILLed and text-only requests follow one by one.

    python -m benchmarks.server [--quick] [--requests 200] [--concurrency 16]
    python -m benchmarks.server --replay
    python -m benchmarks.server --transports [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import random
import re
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import machine, report
from dynamo_media import MediaDecoder, MediaFetcher
from dynamo_media.nixl import RegistrationPool
from dynamo_media.preprocess import MediaCache, MediaPreprocessor
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


def _probe(url: str, ready: Any, stop: Any, out: Any) -> None:
    """Text-only requests every 50 ms from their own process, until ``stop`` is set; ``ready``
    is set once the first has been answered."""
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/v1/chat/completions", json=TEXT)
        ready.set()
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
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    prober = ctx.Process(target=_probe, args=(url, ready, stop, out))
    prober.start()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(kind: str, body: dict) -> None:
            async with sem:
                start = time.perf_counter()
                answer = await client.post("/v1/chat/completions", json=body)
                latencies.setdefault(kind, []).append(time.perf_counter() - start)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        # The spawned prober imports this module (torch and all): seconds on a busy machine.
        if not await asyncio.to_thread(ready.wait, 120):
            raise SystemExit("the text-only prober did not start within 120 s")
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


def _config(concurrency: int) -> dict:
    """The frontend's config: the media server (127.0.0.1 with a port) allowed, and exactly
    that; no decoded-media cache, or every repeat would be a hit."""
    return {
        "fetcher": {
            "allow_direct_ip": True,
            "allow_private_ips": True,
            "allow_direct_port": True,
            "allowed_media_domains": ["127.0.0.1"],
        },
        "server": {
            "max_concurrent_requests": concurrency,
            "queue_timeout_ms": 60000,
            "pool_capacity_bytes": 1 << 30,
            "cache_bytes": 0,
        },
    }


def _ms(values: list[float], q: float | None = None) -> str:
    """The median (or the ``q`` quantile) of ``values`` seconds, in ms; "-" for none."""
    if not values:
        return "-"
    return f"{(statistics.median(values) if q is None else _pct(values, q)) * 1000:.1f}"


def _failover(url: str, requests: int = 20) -> list[float]:
    """SIGKILLs the worker that answers a text-only request, then sends ``requests`` text-only
    requests one by one: their seconds (the first routed to the dead worker fails over)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        victim = client.post("/v1/chat/completions", json=TEXT).json()["dynamo_media"]["pid"]
        os.kill(victim, signal.SIGKILL)
        seconds = []
        for _ in range(requests):
            start = time.perf_counter()
            assert client.post("/v1/chat/completions", json=TEXT).status_code == 200
            seconds.append(time.perf_counter() - start)
    return seconds


def transports(n: int, concurrency: int) -> None:
    """The HTTP hop vs Dynamo's runtime with 1 and 2 workers, on the same requests."""
    setups = {
        "http hop, 1 backend": [],
        "dynamo, 1 worker": ["--transport", "dynamo", "--workers", "1"],
        "dynamo, 2 workers": ["--transport", "dynamo", "--workers", "2"],
    }
    media = MediaServer()
    runs, texts, videos, failover, failovers = {}, {}, {}, [], 0.0
    try:
        work = _requests(media, n, random.Random(0))
        good = [w for w in work if w[0] != "bad"]
        video = [w for w in work if w[0] == "video"]
        video_load = (video * (n // 3 // len(video) + 1))[: n // 3]
        for name, args in setups.items():
            with serving(_config(concurrency), quiet=True, args=args) as url:
                asyncio.run(_load(url, work[:8], 4))  # warm up: connections, decoders
                runs[name] = asyncio.run(_load(url, good, concurrency))
                texts[name] = asyncio.run(_load(url, [("text", TEXT)] * n, concurrency))
                videos[name] = asyncio.run(_load(url, video_load, concurrency))
                if name == "dynamo, 2 workers":
                    failover = _failover(url)
                    failovers = _metric(
                        httpx.get(f"{url}/metrics").text, "dynamo_media_backend_failovers_total"
                    )
    finally:
        media.stop()
    kinds = sorted({kind for run in runs.values() for kind in run["latencies"]})
    lines = [
        f"Machine: {machine()}\n",
        f"### Transports: {len(good)} good requests (image, video, audio), concurrency "
        f"{concurrency}, through the HTTP hop to one reference backend and through Dynamo's "
        "runtime (file discovery, tcp plane) to 1 and 2 workers; p50 / p99 ms\n",
        "| transport | req/s | " + " | ".join(kinds) + " | text-only probe | 5xx |",
        "|---" * (len(kinds) + 4) + "|",
    ]
    for name, run in runs.items():
        cells = [f"{_ms(run['latencies'][k])} / {_ms(run['latencies'][k], 0.99)}" for k in kinds]
        fives = sum(c for s, c in run["statuses"].items() if s >= 500)
        probes = run["probes"]
        lines.append(
            f"| {name} | {len(good) / run['wall']:.1f} | " + " | ".join(cells)
            + f" | {_ms(probes)} / {_ms(probes, 0.99)} | {fives} |"
        )  # fmt: skip
    lines += [
        "",
        f"### The hop alone: {n} text-only requests, concurrency {concurrency}\n",
        "| transport | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, run in texts.items():
        lat = run["latencies"]["text"]
        lines.append(f"| {name} | {n / run['wall']:.1f} | {_ms(lat)} | {_ms(lat, 0.99)} |")
    lines += [
        "",
        f"### Text-only probes (one every 50 ms, own process) during a video-only load: "
        f"{len(video_load)} videos (640x360, 10 s, 2 fps), concurrency {concurrency}; ms\n",
        "| transport | videos/s | video p50 / p99 | probes | probe p50 | probe p99 | probe max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in videos.items():
        probes, lat = run["probes"], run["latencies"]["video"]
        lines.append(
            f"| {name} | {len(video_load) / run['wall']:.1f} | {_ms(lat)} / {_ms(lat, 0.99)} | "
            f"{len(probes)} | {_ms(probes)} | {_ms(probes, 0.99)} | {_ms(probes, 1.0)} |"
        )
    lines += [
        "",
        f"### Failover (dynamo, 2 workers): the worker that answered a text-only request is "
        f"SIGKILLed, then {len(failover)} text-only requests one by one\n",
        f"- slowest (the one routed to the dead worker, sent again to the live one): "
        f"{max(failover) * 1000:.1f} ms; median {_ms(failover)} ms",
        f"- failovers counted by the frontend: {failovers:.0f}; every request answered 200",
    ]
    report("server_transports", "\n".join(lines) + "\n")


def _conversations(server: MediaServer, n: int) -> list[dict]:
    """A request per conversation: its own 3 images (960x540 JPEG) and 1 video (640x360)."""

    def url(name: str, path: Path, mime: str) -> str:
        headers = {"Cache-Control": "max-age=3600", "ETag": f'"{name}"'}
        return server.url(server.add(name, path.read_bytes(), mime, headers), host="127.0.0.1")

    requests = []
    for c in range(n):
        content: list[dict] = [{"type": "text", "text": "and now?"}]
        for i in range(3):
            jpeg = ffmpeg(
                f"replay{c}-{i}.jpg",
                *("-f", "lavfi", "-i", "testsrc2=size=960x540", "-ss", f"{c * 3 + i}"),
                *("-frames:v", "1"),
            )
            content.append(
                {"type": "image_url", "image_url": {"url": url(jpeg.name, jpeg, "image/jpeg")}}
            )
        video = numbered_video(f"replay{c}.mp4", seconds=4 + c / 10, size="640x360")
        content.append(
            {"type": "video_url", "video_url": {"url": url(video.name, video, "video/mp4")}}
        )
        requests.append({"messages": [{"role": "user", "content": content}]})
    return requests


async def _replay(preprocessor: MediaPreprocessor, requests: list[dict], turns: int) -> list:
    """Every conversation's turns, all conversations at once: [conversation][turn] ->
    [seconds, and the items' decode, fetch and register seconds summed]."""

    async def conversation(request: dict) -> list[list[float]]:
        out = []
        for _ in range(turns):
            start = time.perf_counter()
            result = await preprocessor.process(request)
            seconds = time.perf_counter() - start
            stages = [
                sum(i.timings.get(stage, 0) for i in result.items for stage in stages)
                for stages in (("guard", "decode"), ("fetch",), ("register",))
            ]
            result.release()  # the backend has read it
            out.append([seconds, *stages])
        return out

    return list(await asyncio.gather(*(conversation(r) for r in requests)))


def replay(conversations: int = 8, turns: int = 10) -> None:
    media = MediaServer()
    policy = {"allow_direct_ip": True, "allow_private_ips": True, "allow_direct_port": True}
    policy |= {"allowed_media_domains": ["127.0.0.1"]}
    fetcher = MediaFetcher.from_dict(policy)
    decoder = MediaDecoder()
    decoder.enable_image()
    decoder.enable_video({"fps": 2.0, "max_frames": 128})
    pool = RegistrationPool(capacity_bytes=1 << 30)
    runs, downloads = {}, {}
    try:
        requests = _conversations(media, conversations)
        for name, cache, http_cache_bytes in [
            ("off", None, 0),
            ("on", MediaCache(), 0),
            ("on+http", MediaCache(), 256 << 20),
        ]:
            fetcher = MediaFetcher.from_dict(policy | {"http_cache_bytes": http_cache_bytes})
            preprocessor = MediaPreprocessor(decoder, fetcher, pool, max_workers=2, cache=cache)
            media.hits.clear()
            runs[name] = asyncio.run(_replay(preprocessor, requests, turns))
            downloads[name] = sum(media.hits.values()) - sum(media.not_modified.values())
            preprocessor.close()
    finally:
        media.stop()
        pool.close()

    def turn(name: str, t: int) -> list[float]:
        per = [c[t] for c in runs[name]]
        return [statistics.median(column) for column in zip(*per, strict=True)]

    lines = [
        f"Machine: {machine()}\n",
        f"### Multi-turn replay: {conversations} conversations at once, {turns} turns, each "
        "resending 3 images (960x540 JPEG) and 1 video (640x360, 2 fps); frontend preprocessing "
        "(fetch, decode, NIXL registration) in one process; ms, medians over the conversations "
        '(stages summed over a turn\'s items). "+ HTTP cache": the decoded-media cache and the '
        "fetcher's HTTP cache (http_cache_bytes 256 MiB) on\n",
        "| turn | cache off | decode | fetch | register | cache on | decode | fetch | register "
        "| + HTTP cache | decode | fetch | register |",
        "|---" * 13 + "|",
    ]
    for t in range(turns):
        cells = [f"{v * 1e3:.1f}" for v in turn("off", t) + turn("on", t) + turn("on+http", t)]
        lines.append(f"| {t + 1} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, words in [("on", "cache on"), ("on+http", "cache on + HTTP cache")]:
        later = statistics.median(turn(name, t)[0] for t in range(1, turns))
        lines.append(
            f"- {words}: turn 1 / median of turns 2-{turns}: {turn(name, 0)[0] / later:.1f}x "
            f"({downloads[name]} downloads for {conversations * turns * 4} items)"
        )
    lines.append(f"- cache off: {downloads['off']} downloads")
    medians = {n: statistics.median(turn(n, t)[0] for t in range(1, turns)) for n in runs}
    lines.append(
        f"- median of turns 2-{turns}: cache off {medians['off'] * 1e3:.1f} ms, cache on "
        f"{medians['on'] * 1e3:.1f} ms, + HTTP cache {medians['on+http'] * 1e3:.1f} ms "
        f"({medians['off'] / medians['on+http']:.1f}x faster than with no cache)"
    )
    report("server_replay", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 requests")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--replay", action="store_true", help="the multi-turn replay instead")
    parser.add_argument(
        "--transports", action="store_true", help="HTTP hop vs Dynamo's runtime, 1 and 2 workers"
    )
    args = parser.parse_args()
    if args.replay:
        replay()
        return
    n = 40 if args.quick else args.requests
    if args.transports:
        transports(n, args.concurrency)
        return
    media = MediaServer()
    with serving(_config(args.concurrency), quiet=True) as url:
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
