"""Fetching N media files from a local HTTP server: ours (policy, pinned address, deadline, size
cap) beside plain ``requests.get`` on a pooled session, and ``afetch`` concurrency.

    python -m benchmarks.fetch [--quick]
"""

from __future__ import annotations

import argparse
import asyncio

import requests

from benchmarks._common import Row, interleaved, machine, report, table, versions
from dynamo_media import MediaFetcher
from tests.media_server import MediaServer

FILES = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    server = MediaServer()
    fetcher = MediaFetcher().allow_private_ips(True).allow_direct_ip(True).allow_direct_port(True)
    session = requests.Session()
    rows = []
    try:
        for size in (100_000, 2_000_000):
            urls = [
                server.url(server.add(f"f{size}-{i}", bytes([i]) * size), host="127.0.0.1")
                for i in range(FILES)
            ]

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

            def one(url: str = urls[0]) -> None:
                asyncio.run(fetcher.afetch(url))

            conc = interleaved(
                {"afetch x16 at once": lambda: asyncio.run(gather()), "afetch x1": one},
                repeats=repeats,
            )
            ratio = conc["afetch x16 at once"] / conc["afetch x1"]  # type: ignore[operator]
            rows.append(
                Row(
                    f"{FILES} x {size // 1000} kB, concurrent",
                    {"dynamo-media": conc["afetch x16 at once"], "requests.get": None},
                    f"16 at once take {ratio:.1f}x one",
                )
            )
            print(rows[-1])
    finally:
        server.stop()
    head = f"Machine: {machine()}; {versions('requests', 'urllib3')}\n\n"
    report("fetch", head + table("Fetch from a local HTTP server (median)", rows))


if __name__ == "__main__":
    main()
