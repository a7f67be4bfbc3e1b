"""``dynamo-media serve`` as a real process, for end-to-end tests and the load benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from dynamo_media.cli import loopback_dynamo_env
from tests.media import ROOT


def dynamo_env(discovery: Path) -> dict[str, str]:
    """Dynamo's environment for processes on 127.0.0.1 that find each other through file
    discovery in ``discovery``, over the tcp request plane: what ``serve --workers N`` sets for
    its own workers, for tests that start theirs (``serve --workers 0``)."""
    return {**loopback_dynamo_env(str(discovery)), "DYN_LOG": "warn"}


@contextlib.contextmanager
def worker_process(*cmd: str) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``python -m <cmd>`` (a worker on Dynamo's runtime, found through the environment)
    in its own session until the block ends; then SIGTERM, and SIGKILL if it lingers."""
    proc = subprocess.Popen([sys.executable, "-m", *cmd], cwd=ROOT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(
    config: dict[str, Any], *, quiet: bool = False, args: Sequence[str] = ()
) -> Iterator[str]:
    """Runs ``dynamo-media serve --config ... *args`` (frontend and reference backend, or
    workers) until the block ends; yields the frontend's URL once ``/health`` answers."""
    with serving_process(config, quiet=quiet, args=args) as (_, url):
        yield url


@contextlib.contextmanager
def serving_process(
    config: dict[str, Any], *, quiet: bool = False, args: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """As ``serving``; yields the ``serve`` process too. It leads its own process group, which
    the block's end stops."""
    path = Path(tempfile.mkdtemp()) / "config.json"
    path.write_text(json.dumps(config))
    port = free_port()
    cmd = [sys.executable, "-m", "dynamo_media.cli", "serve", "--config", str(path), "--port",
           str(port), *args]  # fmt: skip
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "dynamo-media serve exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "dynamo-media serve did not start in 120 s"
            time.sleep(0.3)
        yield proc, url
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
