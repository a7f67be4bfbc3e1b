"""NIXL hand-off: the pool's copy into a pre-registered region against zero-copy registration in
place, per size (Note [zero-copy threshold] in ``dynamo_media/nixl/_pool.py`` takes its numbers
from here), and transfer throughput between two processes beside a plain ``torch.Tensor.copy_``
(memcpy), the physical ceiling.

A zero-copy registration changes the agent's metadata, so it costs, besides the
``register_memory`` call, fresh metadata on the frontend and a metadata load on the backend for
every item; with the pool the metadata never changes and backends cache it. The frontend's side
is timed alone, then the whole hand-off: register, a second process reads (metadata load,
transfer, lease-word check), release.

    python -m benchmarks.nixl [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks._common import Row, interleaved, machine, report, table, versions
from dynamo_media import DecodedMedia
from dynamo_media.nixl import RegistrationPool, get_agent, register_media
from tests.nixl_peer import Peer

KiB, MiB = 1 << 10, 1 << 20
SIZES = {
    "64 KiB": 64 * KiB,
    "256 KiB": 256 * KiB,
    "1 MiB": MiB,
    "2 MiB": 2 * MiB,
    "4 MiB": 4 * MiB,
    "25 MB": 25 * MiB,
    "250 MB": 250 * MiB,
}
QUICK = ("64 KiB", "1 MiB", "25 MB")
COPY, ZERO_COPY = "pool (copy into region)", "zero-copy (register in place)"


def handoffs(
    media: DecodedMedia, pools: dict[str, RegistrationPool], peer: Peer
) -> tuple[dict[str, Callable[[], object]], dict[str, Callable[[], object]]]:
    """For each path: the frontend's register and release alone, and the whole hand-off."""

    def frontend(pool: RegistrationPool) -> Callable[[], object]:
        return lambda: register_media(media, pool).release()

    def end_to_end(pool: RegistrationPool) -> Callable[[], object]:
        def run() -> None:
            registered = register_media(media, pool)
            got = peer.read(registered.descriptor, sha256=False)
            registered.release()
            if "error" in got:
                raise RuntimeError(got["error"])

        return run

    return (
        {name: frontend(pool) for name, pool in pools.items()},
        {name: end_to_end(pool) for name, pool in pools.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    sizes = {k: v for k, v in SIZES.items() if k in QUICK} if args.quick else SIZES
    pools = {
        COPY: RegistrationPool(get_agent(), capacity_bytes=600 * MiB, zero_copy_min_bytes=None),
        ZERO_COPY: RegistrationPool(get_agent(), capacity_bytes=600 * MiB, zero_copy_min_bytes=1),
    }
    peer = Peer()
    reg_rows, e2e_rows, xfer_rows = [], [], []
    try:
        # The peer's start (importing torch) and its first connection are not what is measured.
        warm = register_media(DecodedMedia(torch.zeros(64), "image", {}), pools[COPY])
        peer.read(warm.descriptor, sha256=False)
        warm.release()
        for name, nbytes in sizes.items():
            tensor = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
            media = DecodedMedia(tensor, "image", {})
            frontend, end_to_end = handoffs(media, pools, peer)
            reg_rows.append(Row(name, interleaved(frontend, repeats=repeats)))
            print(reg_rows[-1])
            e2e_rows.append(Row(name, interleaved(end_to_end, repeats=repeats)))
            print(e2e_rows[-1])

            dst = torch.empty_like(tensor)
            reads = []
            for _ in range(repeats):
                registered = register_media(media, pools[COPY])
                reads.append(peer.read(registered.descriptor, sha256=False)["seconds"])
                registered.release()
            start = time.perf_counter()
            for _ in range(repeats):
                dst.copy_(tensor)
            memcpy = (time.perf_counter() - start) / repeats
            read_s = sorted(reads)[len(reads) // 2]
            xfer_rows.append(
                Row(
                    name,
                    {"NIXL READ, two processes": read_s, "torch copy_ (memcpy)": memcpy},
                    f"{nbytes / read_s / 1e9:.2f} GB/s vs {nbytes / memcpy / 1e9:.2f} GB/s",
                )
            )
            print(xfer_rows[-1])
    finally:
        peer.close()
        for pool in pools.values():
            pool.close()
    head = f"Machine: {machine()}; {versions('torch', 'nixl')}\n\n"
    text = head + table("Frontend: register and release (median)", reg_rows)
    text += "\n" + table("Hand-off: register, read by a second process, release (median)", e2e_rows)
    text += "\n" + table(
        "Transfer between two processes, pool item, read alone (median)", xfer_rows
    )
    report("nixl", text)


if __name__ == "__main__":
    main()
