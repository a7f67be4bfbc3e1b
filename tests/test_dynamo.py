"""The Dynamo transport end to end: ``dynamo-media serve --transport dynamo --workers 2`` (a
frontend and two ``dynamo-media worker`` processes on Dynamo's runtime, file discovery in a
private directory, tcp request plane) driven by the official ``openai`` client; a worker is
SIGKILLed and requests fail over; SIGTERM to ``serve`` stops every child. Images go inline
(``data:`` URLs): fetching over HTTP is test_server.py's."""

import asyncio
import base64
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from dynamo_media import BackendUnavailable, cli, decode_image, tensor_sha256
from dynamo_media.server import DynamoBackend
from tests.serve import serving_process
from tests.test_image import LOSSY
from tests.test_server import items_of

pytest.importorskip("dynamo.runtime", reason="ai-dynamo-runtime (the dynamo extra) is missing")

MODEL = "dynamo-media-echo"
CONFIG = {
    "decoder": {"image": {}},
    "server": {"pool_capacity_bytes": 64 << 20, "max_concurrent_requests": 4},
}
FIRST_CHUNK_TIMEOUT_MS = 5000
SERVE_ARGS = ["--transport", "dynamo", "--workers", "2",
              "--first-chunk-timeout-ms", str(FIRST_CHUNK_TIMEOUT_MS)]  # fmt: skip


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with serving_process(CONFIG, args=SERVE_ARGS) as (proc, url):
        yield proc, url


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def image_part(data: bytes) -> dict:
    url = f"data:image/jpeg;base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def ask_image(client: openai.OpenAI, data: bytes) -> list[dict]:
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [image_part(data)]}],
    )
    return items_of(out)


def worker_pid(client: openai.OpenAI) -> int:
    """The pid of the worker that answers a text-only request."""
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    return int((out.model_extra or {})["dynamo_media"]["pid"])


def lent(url: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=5).json()["pool"]["lent"])


class TestDynamoBackend:
    def test_invalid_choices(self) -> None:
        with pytest.raises(ValueError, match=r"Invalid discovery \('zk'\). Supported values are"):
            DynamoBackend(model=MODEL, discovery="zk")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"Invalid request_plane \('udp'\)"):
            DynamoBackend(model=MODEL, request_plane="udp")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="first_chunk_timeout_ms must be > 0, got 0"):
            DynamoBackend(model=MODEL, first_chunk_timeout_ms=0)

    def test_the_cli_default_endpoint_is_the_backends(self) -> None:
        assert DynamoBackend(model=MODEL).endpoint == cli._ENDPOINT

    def test_no_worker(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DYN_FILE_KV", str(tmp_path))  # an empty discovery directory

        async def run() -> list[str]:
            backend = DynamoBackend(model=MODEL, connect_timeout_ms=300)
            errors = []
            try:
                for call in (backend.connect(), backend.chat({"messages": []}), backend.models()):
                    with pytest.raises(BackendUnavailable) as info:
                        await call
                    errors.append(str(info.value))
            finally:
                await backend.aclose()
            return errors

        waited, *fast = asyncio.run(run())
        assert waited.startswith("0 worker(s) of dynamo_media.backend.generate (file discovery)")
        assert "connect_timeout_ms (300), 1 needed" in waited
        for message in fast:
            assert message == (
                "no live worker serves dynamo_media.backend.generate (file discovery); start one "
                "with `dynamo-media worker`"
            )


class TestServeDynamo:
    def test_models(self, served: tuple[subprocess.Popen[bytes], str]) -> None:
        with openai_client(served[1]) as client:
            assert [m.id for m in client.models.list()] == [MODEL]

    def test_image_round_trip(self, served: tuple[subprocess.Popen[bytes], str]) -> None:
        data = LOSSY["jpeg"]()
        with openai_client(served[1]) as client:
            (item,) = ask_image(client, data)
        assert item == {
            "modality": "image",
            "shape": [3, 240, 320],
            "dtype": "uint8",
            "sha256": tensor_sha256(decode_image(data).tensor),
        }
        assert lent(served[1]) == 0

    def test_stream(self, served: tuple[subprocess.Popen[bytes], str]) -> None:
        data = LOSSY["jpeg"]()
        with openai_client(served[1]) as client:
            stream = client.chat.completions.create(
                model=MODEL,
                stream=True,
                messages=[{"role": "user", "content": [image_part(data)]}],
            )
            chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text.startswith("Received 1 media item(s): ")
        assert tensor_sha256(decode_image(data).tensor) in text
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert lent(served[1]) == 0

    def test_requests_are_spread_over_both_workers(
        self, served: tuple[subprocess.Popen[bytes], str]
    ) -> None:
        with openai_client(served[1]) as client:
            pids = [worker_pid(client) for _ in range(6)]
        assert len(set(pids)) == 2
        assert pids[:2] * 3 == pids  # round robin

    def test_a_frozen_worker_is_a_clean_error_then_skipped(
        self, served: tuple[subprocess.Popen[bytes], str]
    ) -> None:
        """Last in this class: the frozen worker stays barred for a while."""
        with openai_client(served[1]) as client:
            frozen = worker_pid(client)
            os.kill(frozen, signal.SIGSTOP)
            try:
                # The next request but one goes to the frozen worker.
                other = worker_pid(client)
                with pytest.raises(openai.InternalServerError) as info:
                    worker_pid(client)
                # Barred, it gets no requests while the other is live.
                assert [worker_pid(client) for _ in range(4)] == [other] * 4
            finally:
                os.kill(frozen, signal.SIGCONT)
        assert info.value.status_code == 502
        error = info.value.body
        assert isinstance(error, dict)
        assert error["code"] == "BackendUnavailable"
        assert (
            f"sent nothing within first_chunk_timeout_ms ({FIRST_CHUNK_TIMEOUT_MS})"
            in (error["message"])
        )


class TestWorkerLoss:
    """A serve of its own: its workers are killed here."""

    def test_sigkill_then_sigterm(self) -> None:
        """Requests fail over from a SIGKILLed worker; SIGTERM to serve stops every child."""
        data = LOSSY["jpeg"]()
        expected = tensor_sha256(decode_image(data).tensor)
        with serving_process(CONFIG, args=SERVE_ARGS) as (proc, url):
            with openai_client(url) as client:
                pids = {worker_pid(client) for _ in range(4)}
                assert len(pids) == 2
                victim, survivor = sorted(pids)
                os.kill(victim, signal.SIGKILL)
                # Discovery lists the dead worker for seconds more: each request that the round
                # robin sends there is refused before its first chunk and goes to the survivor.
                for _ in range(4):
                    (item,) = ask_image(client, data)
                    assert item["sha256"] == expected
                    assert worker_pid(client) == survivor
                stream = client.chat.completions.create(
                    model=MODEL, stream=True, messages=[{"role": "user", "content": "hi"}]
                )
                assert "".join(c.choices[0].delta.content or "" for c in stream).startswith(
                    "Received 0 media item(s)"
                )
            assert lent(url) == 0

            os.kill(proc.pid, signal.SIGTERM)  # serve alone, not its group
            assert proc.wait(timeout=30) == 0
            with pytest.raises(ProcessLookupError):  # nothing left in its process group
                os.killpg(proc.pid, 0)
