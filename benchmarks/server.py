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

    python -m benchmarks.server [--quick] [--requests 200] [--concurrency 16]
    python -m benchmarks.server --replay
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
    args = parser.parse_args()
    if args.replay:
        replay()
        return
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
            "cache_bytes": 0,
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
