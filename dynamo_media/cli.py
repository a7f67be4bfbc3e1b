"""The ``dynamo-media`` command: ``serve``, ``backend`` and ``decode``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from dynamo_media._errors import MediaError, NoMediaStream
from dynamo_media._sniff import sniff_format
from dynamo_media.fetch import MediaFetcher

__all__ = ["main"]

_AUDIO = {"wav", "mp3", "flac", "ogg"}
_VIDEO = {"mp4", "mov", "matroska", "avi"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _backend_process(model: str) -> Iterator[str]:
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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dynamo_media.nixl import RegistrationPool
    from dynamo_media.server import HttpBackend, create_app, load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Hand the GIL to the event loop sooner when decode threads hold it (Python's default: 5 ms).
    sys.setswitchinterval(0.001)
    config = load_config(args.config)
    settings = config.settings
    with contextlib.ExitStack() as stack:
        url = args.backend or stack.enter_context(_backend_process(settings.model))
        pool = RegistrationPool(
            capacity_bytes=settings.pool_capacity_bytes,
            device=settings.device,
            wait_ms=settings.queue_timeout_ms,
        )
        stack.callback(pool.close)
        backend = HttpBackend(url, timeout_ms=settings.backend_timeout_ms)
        app = create_app(config, backend, pool)
        print(f"dynamo-media frontend on http://{args.host}:{args.port} -> {backend}")
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _backend(args: argparse.Namespace) -> int:
    import uvicorn

    from dynamo_media.backend import create_backend_app

    uvicorn.run(create_backend_app(args.model), host=args.host, port=args.port, log_level="warning")
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dynamo-media", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the OpenAI-compatible frontend")
    serve.add_argument("--config", help="JSON file with fetcher, decoder and server sections")
    serve.add_argument("--host", default=os.environ.get("DYNAMO_MEDIA_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("DYNAMO_MEDIA_PORT", 8000)))
    serve.add_argument("--backend", help="a running backend's URL; default: start the reference")
    serve.set_defaults(run=_serve)

    backend = commands.add_parser("backend", help="run the reference torch backend")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=8001)
    backend.add_argument("--model", default="dynamo-media-echo")
    backend.set_defaults(run=_backend)

    decode = commands.add_parser("decode", help="decode one file or URL; print and draw it")
    decode.add_argument("source", help="a path, http(s) or data: URL")
    sampling = decode.add_mutually_exclusive_group()
    sampling.add_argument("--fps", type=float)
    sampling.add_argument("--num-frames", type=int)
    decode.add_argument("--max-frames", type=int)
    decode.add_argument("--sample-rate", type=int)
    decode.add_argument("--out", help="write a contact sheet (video, image) or waveform (audio)")
    decode.set_defaults(run=_decode)

    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
