"""The Dynamo transport end to end: ``dynamo-media serve --transport dynamo --workers 2`` (a
frontend and two ``dynamo-media worker`` processes on Dynamo's runtime, file discovery in a
private directory, tcp request plane) driven by the official ``openai`` client; a worker is
SIGKILLed and requests fail over, one SIGSTOPped answers 504; with no live worker ``/health``,
chat and ``/v1/models`` answer 503; a client that goes away mid-stream stops its worker
(``tests/slow_worker.py``) and frees its registrations; SIGTERM to ``serve`` stops every child;
``--route hash`` sends the same image to the same worker, and to the other once it is killed.
Images go inline (``data:`` URLs): fetching over HTTP is test_server.py's."""

import asyncio
import base64
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from dynamo_media import BackendNotReady, BackendUnavailable, cli, decode_image, tensor_sha256
from dynamo_media.server import DynamoBackend
from tests.images import pillow_bytes
from tests.serve import dynamo_env, serving_process, worker_process
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


@pytest.fixture(scope="class")
def hashed() -> Iterator[str]:
    """``serve --route hash``, for ``TestHashRoute`` alone: its last test kills a worker."""
    with serving_process(CONFIG, args=[*SERVE_ARGS, "--route", "hash"]) as (_, url):
        yield url


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


def image_pid(client: openai.OpenAI, data: bytes) -> int:
    """The pid of the worker that answers a request with one image."""
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [image_part(data)]}]
    )
    return int((out.model_extra or {})["dynamo_media"]["pid"])


def worker_pid(client: openai.OpenAI) -> int:
    """The pid of the worker that answers a text-only request."""
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    return int((out.model_extra or {})["dynamo_media"]["pid"])


def lent(url: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=5).json()["pool"]["lent"])


def samples(url: str, name: str) -> dict[str, float]:
    """The samples of one metric on ``/metrics``: ``{labels: value}``."""
    found = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name):
            key, value = line.removeprefix(name).rsplit(" ", 1)
            found[key] = float(value)
    return found


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.1)


class TestDynamoBackend:
    def test_invalid_choices(self) -> None:
        with pytest.raises(ValueError, match=r"Invalid discovery \('zk'\). Supported values are"):
            DynamoBackend(model=MODEL, discovery="zk")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"Invalid request_plane \('udp'\)"):
            DynamoBackend(model=MODEL, request_plane="udp")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"Invalid route \('random'\). Supported values are"):
            DynamoBackend(model=MODEL, route="random")  # type: ignore[arg-type]
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

    def test_health_counts_the_live_workers(
        self, served: tuple[subprocess.Popen[bytes], str]
    ) -> None:
        answer = httpx.get(f"{served[1]}/health", timeout=5)
        assert answer.status_code == 200
        assert answer.json()["status"] == "ok"
        assert answer.json()["backend"] == {"instances": 2, "barred": 0}

    def test_metrics_per_worker_and_first_chunk(
        self, served: tuple[subprocess.Popen[bytes], str]
    ) -> None:
        url = served[1]
        with openai_client(url) as client:
            for _ in range(4):
                worker_pid(client)
            list(client.chat.completions.create(model=MODEL, stream=True, messages=[
                {"role": "user", "content": "hi"}]))  # fmt: skip
        answered = samples(url, "dynamo_media_backend_requests_total")
        assert len(answered) == 2  # one series per worker, all answered
        assert all('outcome="answered"' in labels for labels in answered)
        assert sum(answered.values()) >= 5
        first_chunk = samples(url, "dynamo_media_backend_first_chunk_seconds_count")
        assert first_chunk['{kind="whole"}'] >= 4 and first_chunk['{kind="stream"}'] >= 1
        assert samples(url, "dynamo_media_backend_failovers_total") == {"": 0.0}

    def test_a_frozen_worker_is_a_clean_error_then_skipped(
        self, served: tuple[subprocess.Popen[bytes], str]
    ) -> None:
        """Last in this class: the frozen worker stays barred for a while."""
        url = served[1]
        with openai_client(url) as client:
            frozen = worker_pid(client)
            os.kill(frozen, signal.SIGSTOP)
            try:
                # The next request but one goes to the frozen worker.
                other = worker_pid(client)
                with pytest.raises(openai.APIStatusError) as info:
                    worker_pid(client)
                # Barred, it gets no requests while the other is live; health still says ready.
                assert [worker_pid(client) for _ in range(4)] == [other] * 4
                assert httpx.get(f"{url}/health", timeout=5).json()["backend"]["barred"] == 1
            finally:
                os.kill(frozen, signal.SIGCONT)
        assert info.value.status_code == 504
        error = info.value.body
        assert isinstance(error, dict)
        assert error["code"] == "BackendTimeout"
        assert (
            f"sent nothing within first_chunk_timeout_ms ({FIRST_CHUNK_TIMEOUT_MS})"
            in (error["message"])
        )
        outcomes = samples(url, "dynamo_media_backend_requests_total")
        (timeout,) = [labels for labels in outcomes if 'outcome="timeout"' in labels]
        assert outcomes[timeout] == 1


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
            assert samples(url, "dynamo_media_backend_failovers_total")[""] >= 1
            failed = samples(url, "dynamo_media_backend_requests_total")
            assert any('outcome="failed"' in labels for labels in failed)

            os.kill(proc.pid, signal.SIGTERM)  # serve alone, not its group
            assert proc.wait(timeout=30) == 0
            with pytest.raises(ProcessLookupError):  # nothing left in its process group
                os.killpg(proc.pid, 0)


class TestNoLiveWorker:
    def test_health_chat_and_models_answer_503(self) -> None:
        """The only worker goes (SIGTERM: it leaves discovery): ``/health`` says not ready and
        requests answer 503 ``BackendNotReady`` at once, in OpenAI's shape."""
        args = [*SERVE_ARGS[:3], "1", *SERVE_ARGS[4:]]
        with serving_process(CONFIG, args=args) as (_, url), openai_client(url) as client:
            os.kill(worker_pid(client), signal.SIGTERM)
            wait_for(lambda: httpx.get(f"{url}/health").status_code == 503, "health 503")
            health = httpx.get(f"{url}/health", timeout=5)
            assert health.headers["Retry-After"] == "1"
            assert health.json()["status"] == "unavailable"
            assert health.json()["error"]["code"] == "BackendNotReady"
            assert health.json()["pool"]["lent"] == 0
            no_worker = (
                "no live worker serves dynamo_media.backend.generate (file discovery); start one "
                "with `dynamo-media worker`"
            )
            for call in (lambda: ask_image(client, LOSSY["jpeg"]()), client.models.list):
                with pytest.raises(openai.APIStatusError) as info:
                    call()
                assert info.value.status_code == 503
                assert info.value.body == {
                    "message": no_worker,
                    "type": "overloaded_error",
                    "param": None,
                    "code": BackendNotReady.__name__,
                }
            assert lent(url) == 0


@pytest.fixture
def slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """``serve --workers 0`` and a slow worker of the test's own (``tests/slow_worker.py``),
    found through file discovery: the worker's record file, and the frontend's URL."""
    for key, value in dynamo_env(tmp_path / "discovery").items():
        monkeypatch.setenv(key, value)
    record = tmp_path / "record"
    with (
        worker_process("tests.slow_worker", str(record)),
        serving_process(CONFIG, args=[*SERVE_ARGS[:3], "0"]) as (_, url),
    ):
        yield record, url


class TestClientDisconnect:
    def test_stops_the_worker_and_frees_the_registrations(self, slow: tuple[Path, str]) -> None:
        """The client reads three chunks of an image request's stream and hangs up."""
        record, url = slow
        body = {
            "model": MODEL,
            "stream": True,
            "messages": [{"role": "user", "content": [image_part(LOSSY["jpeg"]())]}],
        }
        with (
            httpx.Client(timeout=10) as http,
            http.stream("POST", f"{url}/v1/chat/completions", json=body) as answer,
        ):
            events = (line for line in answer.iter_lines() if line.startswith("data:"))
            for _ in range(3):
                assert '"chat.completion.chunk"' in next(events)
            assert lent(url) == 1  # the image, held while the answer streams
        # The connection is closed: the frontend stops the worker and releases.
        wait_for(lambda: lent(url) == 0, "the release")
        wait_for(record.exists, "the worker's stop")
        (line,) = record.read_text().splitlines()
        assert line.startswith("stopped after ")
        stopped_after = int(line.split()[2])
        assert 3 <= stopped_after < 200


class TestWholeAnswer:
    def test_is_sent_before_the_workers_stream_ends(self, slow: tuple[Path, str]) -> None:
        """A whole answer goes to the client at once; the stream's end is read in the background
        (Note [Dynamo wire]). The slow worker keeps its stream open 2 s after the answer, then
        sends a second message, which is logged, not sent."""
        record, url = slow
        with httpx.Client(timeout=30) as http:
            messages = [{"role": "user", "content": "hi"}]
            body = {"model": MODEL, "max_tokens": 40, "messages": messages}
            answer = http.post(f"{url}/v1/chat/completions", json=body)
            assert not record.exists()  # the worker's stream is still open
            assert answer.status_code == 200, answer.text
            assert answer.json()["choices"][0]["message"]["content"] == "whole"
            wait_for(record.exists, "the worker's second message")
            assert record.read_text() == "answered, then a second message\n"
            assert http.get(f"{url}/health").status_code == 200


class TestHashRoute:
    """``serve --route hash``: a serve of its own, whose worker is killed last."""

    def test_the_same_image_goes_to_one_worker(self, hashed: str) -> None:
        with openai_client(hashed) as client:
            assert len({image_pid(client, LOSSY["jpeg"]()) for _ in range(6)}) == 1

    def test_images_spread_and_text_goes_round_robin(self, hashed: str) -> None:
        with openai_client(hashed) as client:
            # 24 images all on one of 2 workers: odds 2**-23 that the hash is fine and this fails.
            pids = {image_pid(client, pillow_bytes(Image.new("RGB", (32, 32), (i, 0, 0)), "PNG"))
                    for i in range(24)}  # fmt: skip
            text = [worker_pid(client) for _ in range(4)]
        assert len(pids) == 2
        assert len(set(text)) == 2 and text[:2] * 2 == text

    def test_the_same_image_moves_when_its_worker_dies(self, hashed: str) -> None:
        data = LOSSY["jpeg"]()
        expected = tensor_sha256(decode_image(data).tensor)
        with openai_client(hashed) as client:
            victim = image_pid(client, data)
            os.kill(victim, signal.SIGKILL)
            # Listed for seconds more, the dead worker is tried once, refuses, and is barred.
            pids = [image_pid(client, data) for _ in range(4)]
            (item,) = ask_image(client, data)
        assert item["sha256"] == expected
        assert len(set(pids)) == 1 and pids[0] != victim
        assert samples(hashed, "dynamo_media_backend_failovers_total")[""] >= 1
        assert lent(hashed) == 0
