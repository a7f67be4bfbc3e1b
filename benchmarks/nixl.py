"""NIXL hand-off: per-tensor ``register_memory`` against the registration pool (one copy into a
pre-registered region), and transfer throughput between two processes beside a plain
``torch.Tensor.copy_`` (memcpy), the physical ceiling.

A registration changes the agent's metadata, and a backend can only read memory it has the
current metadata for: per-tensor registration therefore costs, besides the call itself, fresh
metadata on the frontend and ``add_remote_agent`` on the backend for every item. Both are timed
here (the backend's side with a second agent in this process); with the pool the metadata never
changes and backends cache it.

    python -m benchmarks.nixl [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks._common import Row, interleaved, machine, report, table, versions
from dynamo_media import DecodedMedia
from dynamo_media.nixl import (
    NixlAgent,
    RegistrationPool,
    decode_metadata,
    get_agent,
    register_media,
)
from tests.nixl_peer import Peer

SIZES = {"1 MB": 1 << 20, "25 MB": 25 << 20, "250 MB": 250 << 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    sizes = dict(list(SIZES.items())[:2]) if args.quick else SIZES
    pool = RegistrationPool(get_agent(), capacity_bytes=600 << 20)
    agent, backend = NixlAgent(), NixlAgent()  # per-tensor frontend, and a reader beside it
    peer = Peer()
    reg_rows, xfer_rows = [], []
    try:
        for name, nbytes in sizes.items():
            tensor = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
            media = DecodedMedia(tensor, "image", {})

            def register_call(t: torch.Tensor = tensor) -> None:
                agent.deregister(agent.register(t))

            def per_tensor(t: torch.Tensor = tensor) -> None:
                handle = agent.register(t)
                metadata = agent.metadata()  # changed by the registration
                backend._agent.add_remote_agent(decode_metadata(metadata))
                backend._agent.remove_remote_agent(agent.name)
                agent.deregister(handle)

            def pooled(m: DecodedMedia = media) -> None:
                register_media(m, pool).release()

            methods = {
                "dynamo-media pool (copy into region)": pooled,
                "register_memory per tensor, with metadata exchange": per_tensor,
                "register_memory call alone": register_call,
            }
            reg_rows.append(Row(name, interleaved(methods, repeats=repeats)))
            print(reg_rows[-1])

            dst = torch.empty_like(tensor)
            registered = register_media(media, pool)
            peer.read(registered.descriptor)  # connect once
            reads = []
            for _ in range(repeats):
                registered.release()
                registered = register_media(media, pool)
                reads.append(peer.read(registered.descriptor)["seconds"])
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
        pool.close()
    head = f"Machine: {machine()}; {versions('torch', 'nixl')}\n\n"
    text = head + table("Registration: per tensor against the pool (median)", reg_rows)
    text += "\n" + table("Transfer between two processes (median)", xfer_rows)
    report("nixl", text)


if __name__ == "__main__":
    main()
