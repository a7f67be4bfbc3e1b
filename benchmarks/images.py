"""Images, bytes -> RGB uint8: ours against what users run today, in one run, on the same files.

Peers: Pillow ``Image.open(...).convert("RGB")`` + ``numpy.asarray`` (vLLM's and HF's path),
``cv2.imdecode`` + BGR->RGB, torchvision.io ``decode_image`` and torchcodec ``decode_image``
(the two native decoders we chose between). Ours: ``decode_image`` (header guard + decode), and
the full path from a local HTTP server (fetch + guard + decode). The guard's cost is shown as a
share of ours.

    python -m benchmarks.images [--quick]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch

from benchmarks._common import Row, interleaved, machine, report, table, versions
from dynamo_media import ImageLimits, MediaFetcher, decode_image, probe_image
from dynamo_media.decode import check_image_limits
from tests.media import ffmpeg
from tests.media_server import MediaServer


def inputs(quick: bool) -> dict[str, bytes]:
    src = ["-f", "lavfi", "-i"]
    made = {
        "1080p JPEG (testsrc2)": ffmpeg(
            "i1080.jpg", *src, "testsrc2=size=1920x1080", "-frames:v", "1", "-q:v", "2"
        ),
        "1080p JPEG (grain)": ffmpeg(
            "i1080g.jpg",
            *src,
            "testsrc2=size=1920x1080",
            "-vf",
            "noise=alls=40:allf=t",
            "-frames:v",
            "1",
            "-q:v",
            "2",
        ),
        "4K JPEG": ffmpeg(
            "i4k.jpg", *src, "testsrc2=size=3840x2160", "-frames:v", "1", "-q:v", "2"
        ),
        "1080p PNG": ffmpeg("i1080.png", *src, "testsrc2=size=1920x1080", "-frames:v", "1"),
        "1080p WebP": ffmpeg("i1080.webp", *src, "testsrc2=size=1920x1080", "-frames:v", "1"),
    }
    names = list(made)[:2] if quick else list(made)
    return {name: made[name].read_bytes() for name in names}


def pil(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def opencv(data: bytes) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def torchvision_decode(data: bytes) -> torch.Tensor:
    import torchvision.io as tvio

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return tvio.decode_image(encoded, mode=tvio.ImageReadMode.RGB)


def torchcodec_decode(data: bytes) -> torch.Tensor:
    from torchcodec.decoders import decode_image as tc_decode

    return tc_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")


def guard(data: bytes) -> None:
    check_image_limits(probe_image(data), limits=ImageLimits())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    server = MediaServer()
    fetcher = MediaFetcher().allow_private_ips(True).allow_direct_ip(True).allow_direct_port(True)
    rows, guard_share = [], []
    try:
        for name, data in inputs(args.quick).items():
            url = server.url(server.add(name.replace(" ", "_"), data), host="127.0.0.1")
            ours = decode_image(data).tensor.permute(1, 2, 0).numpy()
            assert np.array_equal(ours, pil(data)), name  # same pixels as Pillow
            methods = {
                "dynamo-media": lambda d=data: decode_image(d),
                "dynamo-media fetch+guard+decode": lambda u=url: decode_image(fetcher.fetch(u)),
                "Pillow convert+asarray": lambda d=data: pil(d),
                "cv2.imdecode": lambda d=data: opencv(d),
                "torchvision decode_image": lambda d=data: torchvision_decode(d),
                "torchcodec decode_image": lambda d=data: torchcodec_decode(d),
            }
            seconds = interleaved(methods, repeats=repeats)
            start = time.perf_counter()
            for _ in range(200):
                guard(data)
            guard_s = (time.perf_counter() - start) / 200
            share = guard_s / seconds["dynamo-media"]  # type: ignore[operator]
            guard_share.append(share)
            rows.append(Row(name, seconds, f"guard {guard_s * 1e6:.0f} us = {share:.2%}"))
            print(rows[-1])
    finally:
        server.stop()
    head = (
        f"Machine: {machine()}; {versions('torch', 'torchvision', 'torchcodec', 'PIL', 'cv2')}\n\n"
    )
    text = head + table("Images, bytes -> RGB uint8 (median)", rows)
    text += f"\nThe header guard costs at most {max(guard_share):.2%} of a decode here.\n"
    report("images", text)


if __name__ == "__main__":
    main()
