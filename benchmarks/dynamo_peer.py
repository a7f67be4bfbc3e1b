"""Dynamo 1.6.1's own frontend as a peer: ``python -m dynamo.frontend`` decoding the media itself
(Rust, libjpeg-turbo) against ``dynamo-media serve`` (runtime transport, 1 worker), end to end,
one image per chat request, runs interleaved, every answer checked.

The peer's worker (``python -m benchmarks.dynamo_peer worker``) registers a Tokens/Chat model
with ``media_decoder=`` and ``media_fetcher=``, so Dynamo's frontend fetches and decodes each
image and sends the worker a ``Decoded`` descriptor; the worker reads the pixels over NIXL with
``dynamo_media.nixl.read`` and answers with their shape and sha256 as text (through a byte-level
tokenizer with no merges, made here: no hub, no download). Our worker is the echo worker, which
reports the same. Both answers are checked against a local decode of the same bytes.

Dynamo's frontend needs NIXL's C API on ``LD_LIBRARY_PATH`` (else it runs in NIXL stub mode
and never serves a model with a media decoder) and Debian's ``libturbojpeg0`` for its
libjpeg-turbo JPEG path (else it falls back to image-rs).

    python -m benchmarks.dynamo_peer [--repeats 120] [--quick] [--layout CHW]

Results: benchmarks/results/dynamo_peer.md (images served in HWC, the served default), and
dynamo_peer_chw.md with ``--layout CHW`` (the served default before Note [served layouts]).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import ROOT, machine, report
from benchmarks.server import _config
from dynamo_media import decode_image, tensor_sha256
from dynamo_media.nixl import read
from tests.media import ffmpeg
from tests.serve import dynamo_env, free_port, serving

MODEL = "peer-echo"
_ROUND = 16 * 16  # requests per throughput round (128 moved ±10% between rounds)
ENDPOINT = "peer.backend.generate"
TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: "
    "{% if m.content is string %}{{ m.content }}{% else %}"
    "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% else %}<image>{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}assistant:"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (a byte-level BPE's vocabulary)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    return {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(extra)}


def make_model(root: Path) -> Path:
    """A model directory Dynamo loads without a hub: a byte-level BPE tokenizer with no merges
    (every byte one token, so any text round-trips), a chat template and a tiny config."""
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()} | {"</s>": 256}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": False}  # fmt: skip
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": 256,
                "content": "</s>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 257,
        "hidden_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "max_position_embeddings": 8192,
        "eos_token_id": 256,
        "bos_token_id": 256,
    }
    tokenizer_config = {
        "eos_token": "</s>",
        "bos_token": "</s>",
        "chat_template": TEMPLATE,
        "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, value in [
        ("tokenizer.json", tokenizer),
        ("config.json", config),
        ("tokenizer_config.json", tokenizer_config),
    ]:
        (root / name).write_text(json.dumps(value))
    return root


def encode(text: str) -> list[int]:
    """``text`` as the byte-level tokenizer's ids: its UTF-8 bytes."""
    return list(text.encode())


async def _worker(model_dir: Path) -> None:
    """Serves ``MODEL`` (Tokens in, Chat) with Dynamo's media decoder and fetcher in the
    frontend; answers each request with the decoded images' shape and sha256, read over NIXL."""
    from dynamo.llm import (
        MediaDecoder,
        MediaFetcher,
        ModelInput,
        ModelType,
        WorkerType,
        register_llm,
    )
    from dynamo.runtime import DistributedRuntime

    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "file", "tcp")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.shutdown)
    decoder = MediaDecoder()
    decoder.enable_image({"limits": {"max_alloc": 256 << 20}})
    fetcher = MediaFetcher()
    fetcher.allow_direct_ip(True)
    fetcher.allow_direct_port(True)
    served = runtime.endpoint(ENDPOINT)
    await register_llm(
        ModelInput.Tokens,
        ModelType.Chat,
        served,
        str(model_dir),
        MODEL,
        worker_type=WorkerType.Aggregated,
        media_decoder=decoder,
        media_fetcher=fetcher,
    )

    async def generate(request: dict[str, Any], context: Any) -> AsyncIterator[dict[str, Any]]:
        items = []
        for item in (request.get("multi_modal_data") or {}).get("image_url", []):
            tensor = await asyncio.to_thread(read, item["Decoded"])
            items.append({"shape": list(tensor.shape), "sha256": tensor_sha256(tensor)})
        yield {"token_ids": encode(json.dumps(items)), "index": 0, "finish_reason": "stop"}

    await served.serve_endpoint(generate)


def _nixl_libs() -> str:
    """The directory of NIXL's C API (``libnixl_capi.so``) in the nixl wheel torch uses."""
    import nixl._api  # noqa: F401  (loads the wheel that matches torch's CUDA)

    for name, module in sys.modules.items():
        if name.startswith("nixl_cu") and getattr(module, "__file__", None):
            libs = Path(module.__file__).parent.parent / f".{name.split('.')[0]}.mesonpy.libs"
            if (libs / "libnixl_capi.so").exists():
                return str(libs)
    raise SystemExit("libnixl_capi.so not found in the nixl wheels: pip install nixl")


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``cmd`` in its own session, its output to ``log``; SIGTERM (then SIGKILL) at the
    block's end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def dynamo_peer() -> Iterator[str]:
    """Dynamo's frontend and the peer worker; yields the frontend's URL once it lists the
    model."""
    root = Path(tempfile.mkdtemp(prefix="dynamo-peer-"))
    model_dir = make_model(root / "model")
    port = free_port()
    libs = _nixl_libs()
    env = os.environ | dynamo_env(root / "discovery")
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [libs, env.get("LD_LIBRARY_PATH", "")] if p)
    env["NIXL_PLUGIN_DIR"] = str(Path(libs) / "plugins")
    env["DYN_MM_ALLOW_INTERNAL"] = "1"  # the media server is on 127.0.0.1
    env["DYN_MM_MAX_DATA_URL_MB"] = "64"  # a 4K PNG-sized data: URL fits
    frontend = [sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1",
                "--http-port", str(port), "--discovery-backend", "file",
                "--request-plane", "tcp"]  # fmt: skip
    worker = [sys.executable, "-m", "benchmarks.dynamo_peer", "worker", str(model_dir)]
    url = f"http://127.0.0.1:{port}"
    with _process(worker, env, root / "worker.log") as w, \
            _process(frontend, env, root / "frontend.log") as f:  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            if w.poll() is not None or f.poll() is not None:
                raise SystemExit(f"the Dynamo peer exited before serving: see the logs in {root}")
            with contextlib.suppress(httpx.HTTPError):
                models = httpx.get(f"{url}/v1/models", timeout=1).json()
                if [m["id"] for m in models.get("data", [])] == [MODEL]:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("dynamo.frontend did not list the peer's model in 120 s")
            time.sleep(0.3)
        yield url


def _media(root: Path) -> dict[str, tuple[str, bytes]]:
    """The cells' images (ffmpeg's testsrc2): name -> (mime, bytes)."""
    out = {}
    for name, size, ext in [
        ("640x480 JPEG", "640x480", "jpg"),
        ("1080p JPEG", "1920x1080", "jpg"),
        ("1080p PNG", "1920x1080", "png"),
        ("4K JPEG", "3840x2160", "jpg"),
    ]:
        path = ffmpeg(
            f"peer-{size}.{ext}",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}",
            "-frames:v",
            "1",
            *(["-q:v", "2"] if ext == "jpg" else []),
        )
        (root / path.name).write_bytes(path.read_bytes())
        out[name] = (path.name, path.read_bytes())
    return out


def _expected(data: bytes, layout: str) -> dict[str, Any]:
    """What each side must report for an image: Dynamo's HWC, ours in ``layout``; same pixels."""
    chw = decode_image(data).tensor
    hwc = chw.permute(1, 2, 0).contiguous()
    ours = hwc if layout == "HWC" else chw
    return {
        "Dynamo": [{"shape": list(hwc.shape), "sha256": tensor_sha256(hwc)}],
        "dynamo-media": [{"shape": list(ours.shape), "sha256": tensor_sha256(ours)}],
    }


def _items(system: str, answer: httpx.Response) -> list[dict[str, Any]]:
    """The items a side's worker read, from its answer's text."""
    if answer.status_code != 200:
        raise RuntimeError(f"{system}: {answer.status_code} {answer.text[:300]}")
    text = answer.json()["choices"][0]["message"]["content"]
    if system == "Dynamo":
        return list(json.loads(text))
    _, _, listed = text.partition(": ")
    return [{"shape": i["shape"], "sha256": i["sha256"]} for i in json.loads(listed)]


def _body(model: str, url: str | None) -> dict[str, Any]:
    if url is None:
        return {"model": model, "messages": [{"role": "user", "content": "ping"}]}
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def _one(client: httpx.Client, system: str, body: dict, want: list[dict]) -> Callable[[], None]:
    def call() -> None:
        got = _items(system, client.post("/v1/chat/completions", json=body))
        if got != want:
            raise RuntimeError(f"{system}: read {got}, expected {want}")

    return call


async def _throughput(url: str, system: str, body: dict, want: list[dict], n: int) -> float:
    """``n`` requests, 16 at once: requests per second, every answer checked."""
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one() -> None:
            async with sem:
                got = _items(system, await client.post("/v1/chat/completions", json=body))
                if got != want:
                    raise RuntimeError(f"{system}: read {got}, expected {want}")

        await asyncio.gather(*(one() for _ in range(16)))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - start)


def _rates(
    urls: dict[str, str],
    models: dict[str, str],
    base: str,
    media: dict[str, tuple[str, bytes]],
    layout: str,
    rounds: int,
) -> dict[str, list[float]]:
    """Requests per second of each side, 16 at once, ``rounds`` rounds taking turns."""
    file, data = media["1080p JPEG"]
    want = _expected(data, layout)
    rates: dict[str, list[float]] = {system: [] for system in urls}
    for _ in range(rounds):
        for system, url in urls.items():
            body = _body(models[system], base + file)
            rates[system].append(asyncio.run(_throughput(url, system, body, want[system], _ROUND)))
    return rates


def bench(repeats: int, layout: str, rounds: int = 3) -> None:
    """Every cell, the two sides taking turns; ours serves images in ``layout``."""
    config = _config(16) | {"decoder": {"image": {"layout": layout}}}

    root = Path(tempfile.mkdtemp(prefix="dynamo-peer-media-"))
    media = _media(root)
    server = subprocess.Popen([sys.executable, "-m", "tests.media_server", str(root)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert server.stdout is not None
    base = f"http://127.0.0.1:{int(server.stdout.readline())}/file/"
    models = {"Dynamo": MODEL, "dynamo-media": "dynamo-media-echo"}
    ours = ["--transport", "dynamo", "--workers", "1"]
    rows: list[tuple[str, dict[str, list[float]]]] = []
    rates: dict[str, dict[str, list[float]]] = {}
    try:
        with dynamo_peer() as peer, serving(config, quiet=True, args=ours) as us:
            urls = {"Dynamo": peer, "dynamo-media": us}
            rates["from a fresh start"] = _rates(urls, models, base, media, layout, rounds)
            clients = {s: httpx.Client(base_url=u, timeout=120) for s, u in urls.items()}
            cells: list[tuple[str, str | None, dict]] = [("text only", None, {s: [] for s in urls})]
            for name, (file, data) in media.items():
                cells.append((f"{name}, http URL", base + file, _expected(data, layout)))
            for name, (file, data) in media.items():
                mime = "image/png" if file.endswith("png") else "image/jpeg"
                inline = f"data:{mime};base64,{base64.b64encode(data).decode()}"
                cells.append((f"{name}, data: URL", inline, _expected(data, layout)))
            for case, url, want in cells:
                calls = {s: _one(clients[s], s, _body(models[s], url), want[s]) for s in urls}
                times: dict[str, list[float]] = {s: [] for s in urls}
                for r in range(repeats + 2):  # two warm-ups
                    for system, call in calls.items():
                        start = time.perf_counter()
                        call()
                        if r >= 2:
                            times[system].append(time.perf_counter() - start)
                rows.append((case, times))
                print(case, {s: f"{statistics.median(t) * 1e3:.1f}" for s, t in times.items()})
            rates["after the latency cells"] = _rates(urls, models, base, media, layout, rounds)
            for c in clients.values():
                c.close()
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    lines = [
        f"Machine: {machine()}\n",
        f"### One image per chat request, end to end (client -> frontend fetches and decodes -> "
        f"NIXL -> worker reads, hashes -> answer); {repeats} requests per cell, the two sides "
        "taking turns; medians in ms; ratio = dynamo-media / Dynamo (> 1: we are slower). Every "
        "answer checked: shape and sha256 of the pixels the worker read against a local decode\n",
        "| request | Dynamo 1.6.1 | dynamo-media | ratio |",
        "|---|---|---|---|",
    ]
    for case, times in rows:
        d, o = (statistics.median(times[s]) * 1e3 for s in ("Dynamo", "dynamo-media"))
        lines.append(f"| {case} | {d:.1f} | {o:.1f} | {o / d:.2f} |")
    lines += ["", f"16 concurrent 1080p JPEG over http, {_ROUND} requests a round, {rounds} "
              "rounds each, taking turns (Dynamo's frontend uses less CPU a request once it has "
              "served larger images: dynamo_peer_profile.md):"]  # fmt: skip
    for when, by_system in rates.items():
        d_rates, o_rates = by_system["Dynamo"], by_system["dynamo-media"]
        lines.append(
            f"- {when}: Dynamo {min(d_rates):.1f}-{max(d_rates):.1f} req/s, dynamo-media "
            f"{min(o_rates):.1f}-{max(o_rates):.1f} req/s (medians "
            f"{statistics.median(d_rates):.1f} and {statistics.median(o_rates):.1f})"
        )
    lines += [
        "",
        "Dynamo: `python -m dynamo.frontend` (file discovery, tcp request plane) and a Tokens/Chat "
        "worker registered with `media_decoder=` (image, max_alloc 256 MiB) and `media_fetcher=` "
        "(direct IP and port allowed), reading the `Decoded` descriptor with "
        "`dynamo_media.nixl.read`; libturbojpeg from Debian. dynamo-media: `dynamo-media serve "
        "--transport dynamo --workers 1`, the echo worker, the fetcher allowing 127.0.0.1, the "
        f"decoded-media cache off, images served in {layout}. The media server runs in its own "
        "process.",
    ]
    report("dynamo_peer" if layout == "HWC" else "dynamo_peer_chw", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="the peer's worker (started by the benchmark)")
    worker.add_argument("model_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="20 requests per cell")
    parser.add_argument(
        "--layout", choices=["HWC", "CHW"], default="HWC",
        help="the image layout dynamo-media serves (HWC: the served default)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.command == "worker":
        asyncio.run(_worker(args.model_dir))
        return
    bench(20 if args.quick else args.repeats, args.layout)


if __name__ == "__main__":
    main()
