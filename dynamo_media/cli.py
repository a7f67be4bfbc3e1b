"""The ``dynamo-media`` command: ``serve``, ``backend``, ``worker``, ``processor``, ``decode``,
``stats``."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynamo_media._errors import MediaError, NoMediaStream
from dynamo_media._sniff import sniff_format
from dynamo_media.fetch import MediaFetcher
from dynamo_media.presets import PRESETS

if TYPE_CHECKING:
    import uvicorn

    from dynamo_media.backend import Respond
    from dynamo_media.nixl import RegistrationPool
    from dynamo_media.server import Backend, DynamoBackend, ServerSettings
    from dynamo_media.server._dynamo_backend import Route

__all__ = ["main"]

_AUDIO = {"wav", "mp3", "flac", "ogg"}
_VIDEO = {"mp4", "mov", "matroska", "avi"}
_ENDPOINT = "dynamo_media.backend.generate"  # DynamoBackend's default
_PROCESSOR_ENDPOINT = "dynamo_media.processor.generate"  # serve_processor's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _backend_process(model: str, kind_args: list[str]) -> Iterator[str]:
    """Starts the reference backend as a second process; yields its URL."""
    import httpx

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "dynamo_media.cli",
        "backend",
        "--port",
        str(port),
        "--model",
        model,
        *kind_args,
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the backend exited with status {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the backend did not start within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        _stop([proc])


def _stop(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM to each child (they drain), then a wait of up to 10 s, then SIGKILL."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loopback_dynamo_env(discovery: str) -> dict[str, str]:
    """Dynamo's environment for processes on 127.0.0.1 that find each other through file
    discovery in the directory ``discovery``, over the tcp request plane."""
    return {
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_FILE_KV": discovery,
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_TCP_RPC_HOST": "127.0.0.1",  # where workers listen; default: the primary IP
        "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",  # where a frontend takes answers back
    }


@contextlib.contextmanager
def _dynamo_workers(count: int, model: str, endpoint: str, kind_args: list[str]) -> Iterator[None]:
    """Starts ``count`` workers on 127.0.0.1, with file discovery in a fresh private directory
    (so no stale entry of an earlier run is routed to) and the tcp request plane; this process's
    runtime finds them through the same environment. The directory goes when the block ends."""
    root = tempfile.mkdtemp(prefix="dynamo-media-discovery-")  # mode 0700
    os.environ.update(loopback_dynamo_env(root))
    os.environ.setdefault("DYN_LOG", "warn")  # else the runtime logs each request, twice
    cmd = [sys.executable, "-m", "dynamo_media.cli", "worker", "--endpoint", endpoint,
           "--model", model, *kind_args]  # fmt: skip
    procs: list[subprocess.Popen[Any]] = []
    try:
        procs.extend(subprocess.Popen(cmd) for _ in range(count))
        yield
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """After uvicorn's graceful shutdown it raises SIGTERM again: exit through the ``finally``
    blocks, so that every child is stopped."""
    raise SystemExit(0)


async def _run_frontend(server: uvicorn.Server, backend: Backend, min_instances: int) -> None:
    from dynamo_media.server import DynamoBackend

    try:
        if isinstance(backend, DynamoBackend):  # its runtime lives on this loop
            await backend.connect(min_instances=min_instances)
        await server.serve()
    finally:  # the app's lifespan closes it too, but not when connecting failed
        await backend.aclose()


def _frontend_process() -> None:
    """What a process that decodes requests' media sets up first (``serve``, ``processor``):
    the request log, the GIL handed to the event loop sooner when decode threads hold it
    (Python's default: 5 ms), and no torch intra-op threads: decodes run on their own pool,
    one per core, and torch's OpenMP threads only oversubscribed the cores and woke slowly
    (Note [copies off torch's thread pool] in nixl/_register.py)."""
    import torch

    # Log lines are written by a thread of their own: a write gives up the GIL, and the event
    # loop then waits to take it back behind the decode threads (py-spy: 5.5% of its busy time).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    writer = logging.handlers.QueueListener(queue.SimpleQueue(), handler)
    logging.basicConfig(level=logging.INFO, handlers=[logging.handlers.QueueHandler(writer.queue)])
    writer.start()
    atexit.register(writer.stop)
    sys.setswitchinterval(0.001)
    torch.set_num_threads(1)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dynamo_media.server import HttpBackend, create_app, load_config

    _frontend_process()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = load_config(args.config, preset=args.preset)
    settings = config.settings
    kind_args = ["--kind", args.backend_kind]
    if args.preset:
        kind_args += ["--preset", args.preset]
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with contextlib.ExitStack() as stack:
        backend: Backend
        if args.transport == "dynamo":
            if args.workers:
                stack.enter_context(
                    _dynamo_workers(args.workers, settings.model, args.endpoint, kind_args)
                )
            backend = _dynamo_backend(args, args.endpoint, settings.model, route=args.route)
        else:
            url = args.backend or stack.enter_context(_backend_process(settings.model, kind_args))
            backend = HttpBackend(url, timeout_ms=settings.backend_timeout_ms)
        pool = _registration_pool(settings)
        stack.callback(pool.close)
        app = create_app(config, backend, pool)
        # On SIGTERM uvicorn stops listening at once, lets the requests in flight finish for up
        # to drain_seconds, then cancels them (which releases their registrations and stops
        # their workers' streams); then the ExitStack stops the workers.
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                log_level="warning",
                timeout_graceful_shutdown=args.drain_seconds,
            )
        )
        print(f"dynamo-media frontend on http://{args.host}:{args.port} -> {backend}")
        try:
            asyncio.run(_run_frontend(server, backend, max(1, args.workers)))
        except MediaError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def _respond(args: argparse.Namespace) -> Respond:
    """The echo backend, or the torch backend of ``--preset`` (which needs transformers)."""
    from dynamo_media.backend import echo

    if args.kind == "echo":
        return echo
    try:
        from dynamo_media.backend._torch import TorchBackend
    except ImportError as exc:
        raise SystemExit(
            f"--kind torch needs transformers ({exc}): pip install 'dynamo-media[backend]'"
        ) from exc
    return TorchBackend(args.preset)


def _backend(args: argparse.Namespace) -> int:
    import uvicorn

    from dynamo_media.backend import create_backend_app

    app = create_backend_app(args.model, respond=_respond(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from dynamo_media.backend import serve_worker

    respond = _respond(args)
    asyncio.run(serve_worker(args.endpoint, model=args.model, respond=respond, **_dynamo_env()))
    return 0


def _processor(args: argparse.Namespace) -> int:
    from dynamo_media.server import create_chat, load_config, serve_processor

    _frontend_process()
    config = load_config(args.config, preset=args.preset)
    settings = config.settings
    backend = _dynamo_backend(args, args.worker_endpoint, settings.model)
    pool = _registration_pool(settings)
    chat = create_chat(config, backend, pool)
    if args.metrics_port is not None:
        import prometheus_client

        registry = chat.metrics.registry
        prometheus_client.start_http_server(
            args.metrics_port, addr=args.metrics_host, registry=registry
        )

    async def run() -> None:
        try:
            await backend.connect()  # its runtime lives on this loop, and serves the processor
            runtime = backend.runtime
            await serve_processor(chat, args.endpoint, model=settings.model, runtime=runtime)
        finally:
            await backend.aclose()

    print(f"dynamo-media processor on {args.endpoint} as {settings.model!r} -> {backend}")
    try:
        asyncio.run(run())
    except MediaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        chat.preprocessor.close()
        pool.close()
    return 0


def _add_kind(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(
        flag,
        choices=["echo", "torch"],
        default="echo",
        help="echo: describe what arrived; torch: run the preset's HF processor and a tiny "
        "model of its family (needs --preset and the backend extra) (default: echo)",
    )


def _add_worker_timeouts(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The timeouts that ``_dynamo_backend`` reads, for a command that talks to workers."""
    parser.add_argument(
        "--connect-timeout-ms",
        type=int,
        default=120_000,
        help=f"{prefix}how long to wait for the workers at start (default: 120000)",
    )
    parser.add_argument(
        "--first-chunk-timeout-ms",
        type=int,
        default=60_000,
        help=f"{prefix}how long a worker may take to answer, or send a stream's first chunk "
        "(default: 60000)",
    )
    parser.add_argument(
        "--idle-timeout-ms",
        type=int,
        default=60_000,
        help=f"{prefix}how long a stream may go without a chunk (default: 60000)",
    )


def _dynamo_backend(
    args: argparse.Namespace, endpoint: str, model: str, route: Route = "round_robin"
) -> DynamoBackend:
    """The runtime client for ``endpoint``'s workers, with the command's timeouts."""
    from dynamo_media.server import DynamoBackend

    return DynamoBackend(
        endpoint,
        model=model,
        **_dynamo_env(),
        route=route,
        connect_timeout_ms=args.connect_timeout_ms,
        first_chunk_timeout_ms=args.first_chunk_timeout_ms,
        idle_timeout_ms=args.idle_timeout_ms,
    )


def _registration_pool(settings: ServerSettings) -> RegistrationPool:
    """The frontend's NIXL registration pool, sized by the server settings."""
    from dynamo_media.nixl import RegistrationPool

    return RegistrationPool(
        capacity_bytes=settings.pool_capacity_bytes,
        device=settings.device,
        wait_ms=settings.queue_timeout_ms,
    )


def _dynamo_env() -> dict[str, Any]:
    """Discovery and request plane from Dynamo's environment, with Dynamo's own defaults."""
    return {
        "discovery": os.environ.get("DYN_DISCOVERY_BACKEND", "etcd"),
        "request_plane": os.environ.get("DYN_REQUEST_PLANE", "tcp"),
    }


def _decode(args: argparse.Namespace) -> int:
    from dynamo_media import decode_audio, decode_image, decode_video

    source: str = args.source
    if "://" not in source and not source.startswith("data:"):
        source = Path(source).resolve().as_uri()
    fetcher = MediaFetcher().allowed_local_media_path("/")
    try:
        encoded = fetcher.fetch(source)
        fmt = sniff_format(encoded.data) or "unknown"
        if fmt in _AUDIO or args.sample_rate:
            media = decode_audio(encoded, sample_rate=args.sample_rate)
        elif fmt in _VIDEO:
            try:
                media = decode_video(
                    encoded, fps=args.fps, num_frames=args.num_frames, max_frames=args.max_frames
                )
            except NoMediaStream:  # an audio-only mp4 or mkv
                media = decode_audio(encoded, sample_rate=args.sample_rate)
        else:
            media = decode_image(encoded)
    except MediaError as exc:
        print(f"error ({exc.status} {type(exc).__name__}): {exc}", file=sys.stderr)
        return 1
    print(f"{'source':<24} {encoded.source}")
    print(f"{'bytes':<24} {len(encoded.data)}")
    print(f"{'modality':<24} {media.modality}")
    print(f"{'shape':<24} {tuple(media.tensor.shape)} {media.tensor.dtype}")
    for key, value in media.metadata.items():
        shown = value if not isinstance(value, list) or len(value) <= 12 else f"{value[:12]} ..."
        print(f"{key:<24} {shown}")
    if args.out:
        from dynamo_media._render import render

        render(media).save(args.out)
        print(f"wrote {args.out}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    import httpx

    from dynamo_media.server._stats import summarize

    url = (
        args.url if args.url.rstrip("/").endswith("/metrics") else f"{args.url.rstrip('/')}/metrics"
    )
    try:
        answer = httpx.get(url, timeout=args.timeout_ms / 1000)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"error: cannot read {url}: {exc}; give the frontend's URL", file=sys.stderr)
        return 1
    print(summarize(answer.text))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dynamo-media", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the OpenAI-compatible frontend")
    serve.add_argument("--config", help="JSON file with fetcher, decoder and server sections")
    serve.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a model family's decoding defaults (dynamo_media/presets.py) over the config's; "
        "also passed to the backend or workers it starts",
    )
    _add_kind(serve, "--backend-kind")
    serve.add_argument("--host", default=os.environ.get("DYNAMO_MEDIA_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("DYNAMO_MEDIA_PORT", 8000)))
    serve.add_argument(
        "--transport",
        choices=["http", "dynamo"],
        default="http",
        help="how requests reach the backend: OpenAI's HTTP API to one reference backend, or "
        "Dynamo's runtime to workers (default: http)",
    )
    serve.add_argument(
        "--backend", help="http: a running backend's URL; default: start the reference"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=2,
        help="dynamo: workers to start on 127.0.0.1 with private file discovery (default: 2); "
        "0 starts none and finds them through DYN_DISCOVERY_BACKEND and friends",
    )
    serve.add_argument("--endpoint", default=_ENDPOINT, help="dynamo: the workers' endpoint")
    serve.add_argument(
        "--route",
        choices=["round_robin", "hash"],
        default="round_robin",
        help="dynamo: round_robin, or hash: requests with the same media go to the same worker "
        "while it is live (default: round_robin)",
    )
    _add_worker_timeouts(serve, "dynamo: ")
    serve.add_argument(
        "--drain-seconds",
        type=int,
        default=20,
        help="on SIGTERM: stop accepting, let requests in flight finish for this long, then "
        "cut them and stop the workers (default: 20, inside Kubernetes' 30 s grace period)",
    )
    serve.set_defaults(run=_serve)

    backend = commands.add_parser("backend", help="run the reference torch backend")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=8001)
    backend.add_argument("--model", default="dynamo-media-echo")
    backend.add_argument("--preset", choices=sorted(PRESETS), help="the torch backend's family")
    _add_kind(backend, "--kind")
    backend.set_defaults(run=_backend)

    worker = commands.add_parser(
        "worker", help="run the reference backend as a worker on Dynamo's runtime"
    )
    worker.add_argument("--endpoint", default=_ENDPOINT)
    worker.add_argument("--model", default="dynamo-media-echo")
    worker.add_argument("--preset", choices=sorted(PRESETS), help="the torch backend's family")
    _add_kind(worker, "--kind")
    worker.set_defaults(run=_worker)

    processor = commands.add_parser(
        "processor",
        help="serve the media path behind Dynamo's HTTP frontend (python -m dynamo.frontend) as "
        "a text-input chat model; forwards to `dynamo-media worker`s",
    )
    processor.add_argument("--config", help="JSON file with fetcher, decoder and server sections")
    processor.add_argument(
        "--preset", choices=sorted(PRESETS), help="a model family's decoding defaults"
    )
    processor.add_argument(
        "--endpoint",
        default=_PROCESSOR_ENDPOINT,
        help=f"the endpoint dynamo.frontend reaches this processor on (default: "
        f"{_PROCESSOR_ENDPOINT})",
    )
    processor.add_argument(
        "--worker-endpoint", default=_ENDPOINT, help=f"the workers' endpoint (default: {_ENDPOINT})"
    )
    _add_worker_timeouts(processor)
    processor.add_argument(
        "--metrics-port",
        type=int,
        help="serve the processor's Prometheus metrics (the frontend's /metrics) on this port "
        "(default: none)",
    )
    processor.add_argument(
        "--metrics-host", default="127.0.0.1", help="the metrics' address (default: 127.0.0.1)"
    )
    processor.set_defaults(run=_processor)

    decode = commands.add_parser("decode", help="decode one file or URL; print and draw it")
    decode.add_argument("source", help="a path, http(s) or data: URL")
    sampling = decode.add_mutually_exclusive_group()
    sampling.add_argument("--fps", type=float)
    sampling.add_argument("--num-frames", type=int)
    decode.add_argument("--max-frames", type=int)
    decode.add_argument("--sample-rate", type=int)
    decode.add_argument("--out", help="write a contact sheet (video, image) or waveform (audio)")
    decode.set_defaults(run=_decode)

    stats = commands.add_parser(
        "stats", help="print what users send a running frontend: sizes, codecs, refusals"
    )
    stats.add_argument("url", help="the frontend's URL (or its /metrics URL)")
    stats.add_argument("--timeout-ms", type=int, default=10_000)
    stats.set_defaults(run=_stats)

    args = parser.parse_args(argv)
    if args.command == "serve" and args.transport == "dynamo" and args.backend:
        parser.error("--backend is a URL for --transport http; --transport dynamo finds workers")
    if args.command == "serve" and args.transport == "http" and args.route != "round_robin":
        parser.error("--route is for --transport dynamo; the http transport has one backend")
    kind = getattr(args, "kind", None) or getattr(args, "backend_kind", None)
    if kind == "torch" and not args.preset:
        parser.error("the torch backend runs a model family: give --preset")
    if args.command == "serve" and args.drain_seconds < 0:
        parser.error(f"--drain-seconds must be >= 0, got {args.drain_seconds}")
    if args.command == "serve" and args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
