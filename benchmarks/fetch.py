"""Fetching N media files from a local HTTP server (its own process): ours (policy, pinned
address, deadline, size cap) beside plain ``requests.get`` on a pooled session, one at a time
and 16 at once (``afetch`` on our fetch pool; ``requests`` on 16 threads). Then the cost of one
fetch of a 120 kB file, ours beside the clients it could be built on: ``requests`` (streamed, as
ours was until it moved to ``urllib3``), a ``urllib3`` pool and ``http.client``.

    python -m benchmarks.fetch [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from benchmarks._common import ROOT, Row, interleaved, machine, report, table, versions
from dynamo_media import MediaFetcher

FILES = 16
ONE_SIZE = 120_000
ONE_BATCH = 200  # fetches per timed call: one fetch is too short to time alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    folder = Path(tempfile.mkdtemp())
    sizes = (100_000, 2_000_000)
    for size in sizes:
        for i in range(FILES):
            (folder / f"f{size}-{i}").write_bytes(bytes([i]) * size)
    (folder / "one").write_bytes((bytes(range(256)) * (ONE_SIZE // 256 + 1))[:ONE_SIZE])
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.media_server", str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    port = int(server.stdout.readline())
    fetcher = MediaFetcher().allow_private_ips(True).allow_direct_ip(True).allow_direct_port(True)
    session = requests.Session()
    threads = concurrent.futures.ThreadPoolExecutor(FILES)
    rows = []
    try:
        for size in sizes:
            urls = [f"http://127.0.0.1:{port}/file/f{size}-{i}" for i in range(FILES)]

            def ours(urls: list[str] = urls) -> None:
                for u in urls:
                    fetcher.fetch(u)

            def plain(urls: list[str] = urls) -> None:
                for u in urls:
                    assert session.get(u, timeout=30).content

            seconds = interleaved({"dynamo-media": ours, "requests.get": plain}, repeats=repeats)
            overhead = seconds["dynamo-media"] / seconds["requests.get"] - 1  # type: ignore[operator]
            rows.append(
                Row(
                    f"{FILES} x {size // 1000} kB, one at a time",
                    seconds,
                    f"policy overhead {overhead:+.1%}",
                )
            )
            print(rows[-1])

            async def gather(urls: list[str] = urls) -> None:
                await asyncio.gather(*(fetcher.afetch(u) for u in urls))

            def plain_threads(urls: list[str] = urls) -> None:
                list(threads.map(lambda u: requests.get(u, timeout=30).content, urls))

            conc = interleaved(
                {
                    "dynamo-media": lambda: asyncio.run(gather()),
                    "requests.get": plain_threads,
                    "one afetch": lambda u=urls[0]: asyncio.run(fetcher.afetch(u)),
                },
                repeats=repeats,
            )
            ratio = conc["dynamo-media"] / conc.pop("one afetch")  # type: ignore[operator]
            rows.append(
                Row(
                    f"{FILES} x {size // 1000} kB, 16 at once",
                    conc,
                    f"16 at once take {ratio:.1f}x one",
                )
            )
            print(rows[-1])
        # A server 100 ms away: concurrency is what counts, not CPU.
        slow = [f"http://127.0.0.1:{port}/slow?seconds=0.1"] * FILES

        async def gather_slow() -> None:
            await asyncio.gather(*(fetcher.afetch(u) for u in slow))

        conc = interleaved(
            {
                "dynamo-media": lambda: asyncio.run(gather_slow()),
                "requests.get": lambda: list(
                    threads.map(lambda u: requests.get(u, timeout=30).content, slow)
                ),
                "one afetch": lambda: asyncio.run(fetcher.afetch(slow[0])),
            },
            repeats=max(3, repeats // 3),
        )
        ratio = conc["dynamo-media"] / conc.pop("one afetch")  # type: ignore[operator]
        rows.append(
            Row(f"{FILES} x 100 ms latency, 16 at once", conc, f"16 at once take {ratio:.1f}x one")
        )
        print(rows[-1])
        one = per_fetch(fetcher, port, repeats)
    finally:
        server.stdin.close()
        server.wait()
        threads.shutdown()
    head = f"Machine: {machine()}; {versions('requests', 'urllib3')}\n\n"
    per_fetch_table = table(
        f"One fetch of {ONE_SIZE // 1000} kB, one at a time (median of batches of {ONE_BATCH})",
        [one],
        ours="MediaFetcher.fetch",
    )
    report(
        "fetch",
        head + table("Fetch from a local HTTP server (median)", rows) + "\n" + per_fetch_table,
    )


def per_fetch(fetcher: MediaFetcher, port: int, repeats: int) -> Row:
    """Seconds per fetch of the ``ONE_SIZE`` file: ours and the clients under it, each on one
    kept-alive connection."""
    url = f"http://127.0.0.1:{port}/file/one"
    session = requests.Session()
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port)
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def ours() -> None:
        assert len(fetcher.fetch(url).data) == ONE_SIZE

    def with_requests() -> None:
        with session.get(url, stream=True, timeout=30) as response:
            assert len(response.raw.read()) == ONE_SIZE

    def with_urllib3() -> None:
        response = pool.urlopen("GET", "/file/one", preload_content=False, retries=False)
        assert len(response.read()) == ONE_SIZE

    def with_http_client() -> None:
        conn.request("GET", "/file/one")
        assert len(conn.getresponse().read()) == ONE_SIZE

    def batch(fetch: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(ONE_BATCH):
                fetch()

        return run

    methods = {
        "MediaFetcher.fetch": ours,
        "requests (stream)": with_requests,
        "urllib3 pool": with_urllib3,
        "http.client": with_http_client,
    }
    seconds = interleaved({k: batch(f) for k, f in methods.items()}, repeats=repeats)
    each = {k: None if s is None else s / ONE_BATCH for k, s in seconds.items()}
    conn.close()
    session.close()
    pool.close()
    ours_s, peer_s = each["MediaFetcher.fetch"], each["urllib3 pool"]
    over = None if ours_s is None or peer_s is None else (ours_s - peer_s) * 1000
    note = "" if over is None else f"ours {over:+.2f} ms over the urllib3 pool"
    row = Row(f"1 x {ONE_SIZE // 1000} kB", each, note)
    print(row)
    return row


if __name__ == "__main__":
    main()
