"""The ``Backend`` seam: the real frontend app driving a fake backend (what it receives, when
registrations are released, how its failures answer), and ``HttpBackend`` against a real HTTP
server on 127.0.0.1 that answers garbage."""

import asyncio
import base64
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from dynamo_media import (
    BackendNotReady,
    BackendTimeout,
    BackendUnavailable,
    MediaDecoder,
    MediaFetcher,
)
from dynamo_media.nixl import RegistrationPool
from dynamo_media.preprocess import MediaPreprocessor
from dynamo_media.server import (
    Answer,
    Backend,
    Chunks,
    HttpBackend,
    create_app,
    create_chat,
    parse_config,
)
from tests.media import numbered_video
from tests.test_image import LOSSY

MODEL = "fake"
CHUNK = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "ok"}}]}
COMPLETION = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "ok"}}]}


class FakeBackend(Backend):
    """Records each payload, and the registrations lent while it answers; raises ``error`` when
    set (at once, or after the first chunk of a stream); reports ``events`` for each request."""

    def __init__(self, pool: RegistrationPool) -> None:
        self.pool = pool
        self.payloads: list[dict[str, Any]] = []
        self.lent: list[int] = []
        self.error: BackendUnavailable | None = None
        self.events: list[tuple[Any, str]] = []

    async def chat(self, payload: dict[str, Any]) -> Answer | Chunks:
        for kind, instance in self.events:
            self._emit(kind, instance)
        self.payloads.append(payload)
        self.lent.append(self.pool.stats()["lent"])
        if payload.get("stream"):
            return self._chunks()
        if self.error:
            raise self.error
        return Answer(COMPLETION)

    async def _chunks(self) -> Chunks:
        yield CHUNK
        self.lent.append(self.pool.stats()["lent"])
        if self.error:
            raise self.error
        yield CHUNK

    async def models(self) -> dict[str, Any]:
        if self.error:
            raise self.error
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}


@pytest.fixture(scope="module")
def pool() -> Iterator[RegistrationPool]:
    pool = RegistrationPool(capacity_bytes=4 << 20)
    yield pool
    pool.close()


@pytest.fixture
def backend(pool: RegistrationPool) -> FakeBackend:
    return FakeBackend(pool)


@pytest.fixture
def client(backend: FakeBackend, pool: RegistrationPool) -> Iterator[TestClient]:
    config = parse_config({"decoder": {"image": {}}})
    with TestClient(create_app(config, backend, pool)) as test_client:
        yield test_client


def image_part() -> dict[str, Any]:
    data = base64.b64encode(LOSSY["jpeg"]()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


def chat(client: TestClient, content: Any, **extra: Any) -> httpx.Response:
    messages = [{"role": "user", "content": content}]
    return client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, **extra})


class TestBackendSeam:
    def test_payload_has_placeholders_and_descriptors(
        self, client: TestClient, backend: FakeBackend
    ) -> None:
        content = [{"type": "text", "text": "what is this?"}, image_part(), image_part()]
        answer = chat(client, content, media_io_kwargs={"image": {}}, temperature=0.5)
        assert answer.status_code == 200 and answer.json() == COMPLETION
        (payload,) = backend.payloads
        assert payload["request_id"].startswith("chatcmpl-")
        assert payload["model"] == MODEL and payload["temperature"] == 0.5
        assert "media_io_kwargs" not in payload
        assert payload["messages"][0]["content"] == [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "dynamo-media://image_url/0"}},
            {"type": "image_url", "image_url": {"url": "dynamo-media://image_url/1"}},
        ]
        descriptors = payload["multi_modal_data"]["image_url"]
        assert list(payload["multi_modal_data"]) == ["image_url"] and len(descriptors) == 2
        for descriptor in descriptors:
            assert descriptor["shape"] == [3, 240, 320] and descriptor["dtype"] == "UINT8"
            assert descriptor["nixl_descriptor"]["size"] == 3 * 240 * 320
            assert descriptor["nixl_metadata"] and descriptor["lease"]["id"] is not None

    def test_text_only_goes_as_it_came(self, client: TestClient, backend: FakeBackend) -> None:
        assert chat(client, "hello", request_id="mine").status_code == 200
        (payload,) = backend.payloads
        assert payload == {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hello"}],
            "request_id": "mine",
        }

    @pytest.mark.parametrize("stream", [False, True])
    def test_released_after_the_answer(
        self, client: TestClient, backend: FakeBackend, pool: RegistrationPool, stream: bool
    ) -> None:
        answer = chat(client, [image_part()], stream=stream)
        assert answer.status_code == 200
        if stream:
            event = f"data: {json.dumps(CHUNK)}\n\n"
            assert answer.text == event + event + "data: [DONE]\n\n"
        assert backend.lent == ([1, 1] if stream else [1])  # held while the backend answers
        assert pool.stats()["lent"] == 0

    def test_unavailable_backend_then_still_serving(
        self, client: TestClient, backend: FakeBackend, pool: RegistrationPool
    ) -> None:
        backend.error = BackendUnavailable("the backend at fake:// failed: ConnectError()")
        for answer in (chat(client, [image_part()]), client.get("/v1/models")):
            assert answer.status_code == 502 and "Retry-After" not in answer.headers
            assert answer.json() == {
                "error": {
                    "message": "the backend at fake:// failed: ConnectError()",
                    "type": "server_error",
                    "param": None,
                    "code": "BackendUnavailable",
                }
            }
        assert pool.stats()["lent"] == 0
        assert 'dynamo_media_errors_total{modality="image",type="BackendUnavailable"} 1.0' in (
            client.get("/metrics").text
        )
        backend.error = None
        assert chat(client, [image_part()]).json() == COMPLETION
        assert client.get("/v1/models").json()["data"][0]["id"] == MODEL

    def test_failure_mid_stream_ends_with_an_error_event(
        self, client: TestClient, backend: FakeBackend, pool: RegistrationPool
    ) -> None:
        backend.error = BackendUnavailable("the backend at fake:// failed: ReadError()")
        answer = chat(client, [image_part()], stream=True)
        assert answer.status_code == 200  # sent before the failure
        first, error = answer.text.removesuffix("\n\n").split("\n\n")
        assert json.loads(first.removeprefix("data: ")) == CHUNK
        assert json.loads(error.removeprefix("data: "))["error"]["code"] == "BackendUnavailable"
        assert pool.stats()["lent"] == 0


class HangingBackend(FakeBackend):
    """Records the payload, then never answers."""

    async def chat(self, payload: dict[str, Any]) -> Answer | Chunks:
        self.payloads.append(payload)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_request_cancelled_while_the_backend_answers_releases_everything(
    pool: RegistrationPool,
) -> None:
    """The runtime cancels a processor's request, uvicorn a frontend's at its drain deadline:
    what the request registered goes back, the leases a backend read included."""
    backend = HangingBackend(pool)
    chat = create_chat(parse_config({"decoder": {"image": {}}}), backend, pool)
    body = {"model": MODEL, "messages": [{"role": "user", "content": [image_part()]}]}

    async def cancel_while_answering() -> None:
        task = asyncio.create_task(chat.forward(body))
        while not backend.payloads:
            await asyncio.sleep(0.01)
        assert pool.stats()["lent"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancel_while_answering())
    finally:
        chat.preprocessor.close()
    assert pool.stats()["lent"] == 0


def test_an_item_still_decoding_when_its_request_is_cancelled_is_released(
    pool: RegistrationPool,
) -> None:
    """The decode thread runs on after the request is cancelled; what it registers when it
    ends goes back to the pool, since no request holds it any more."""
    clip = base64.b64encode(numbered_video("h264.mp4").read_bytes()).decode()
    part = {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{clip}"}}
    decoder = MediaDecoder()
    decoder.enable_video({"num_frames": 8})
    preprocessor = MediaPreprocessor(decoder, MediaFetcher(), pool, max_workers=1)
    result = preprocessor.prepare({"messages": [{"role": "user", "content": [part]}]})

    async def cancel_while_decoding() -> None:
        task = asyncio.create_task(preprocessor.run(result))
        while not result.items[0].fetched_bytes:  # fetched: the decode thread has the item
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_decoding())
    preprocessor.close()  # waits for the decode thread
    assert result.items[0].output is None
    assert pool.stats()["lent"] == 0


class TestReadiness:
    def test_health_follows_the_backend(self, client: TestClient, backend: FakeBackend) -> None:
        """The default ``ready()`` asks ``models()``: a dead backend is 503 here, not 200."""
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "backend": {},
            "pool": health.json()["pool"],
            "cache": health.json()["cache"],
        }
        backend.error = BackendUnavailable("the backend at fake:// failed: ConnectError()")
        health = client.get("/health")
        assert health.status_code == 503 and health.headers["Retry-After"] == "1"
        assert health.json()["status"] == "unavailable"
        assert health.json()["error"]["code"] == "BackendUnavailable"
        assert health.json()["error"]["message"] == str(backend.error)
        assert health.json()["pool"]["lent"] == 0

    @pytest.mark.parametrize(
        ("error", "status"),
        [(BackendNotReady("no live worker"), 503), (BackendTimeout("sent nothing"), 504)],
    )
    def test_backend_errors_answer_their_status(
        self, client: TestClient, backend: FakeBackend, error: BackendUnavailable, status: int
    ) -> None:
        backend.error = error
        answers = [chat(client, [image_part()])]
        if isinstance(error, BackendNotReady):
            answers.append(client.get("/v1/models"))
        for answer in answers:
            assert answer.status_code == status
            assert ("Retry-After" in answer.headers) == (status == 503)
            assert answer.json()["error"]["code"] == type(error).__name__

    def test_events_and_first_chunk_become_metrics(
        self, client: TestClient, backend: FakeBackend
    ) -> None:
        backend.events = [("failed", "a1"), ("failover", "b2"), ("answered", "b2")]
        assert chat(client, "hi").status_code == 200
        assert chat(client, "hi", stream=True).status_code == 200
        text = client.get("/metrics").text
        for line in [
            'dynamo_media_backend_requests_total{instance="a1",outcome="failed"} 2.0',
            'dynamo_media_backend_requests_total{instance="b2",outcome="answered"} 2.0',
            "dynamo_media_backend_failovers_total 2.0",
            'dynamo_media_backend_first_chunk_seconds_count{kind="whole"} 1.0',
            'dynamo_media_backend_first_chunk_seconds_count{kind="stream"} 1.0',
        ]:
            assert line in text.splitlines()


class _RawHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's ``answer``, byte for byte, then hangs up."""

    server: "RawServer"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.wfile.write(self.server.answer)
        self.close_connection = True

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class RawServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.answer = b""
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.shutdown()
    server.server_close()


def http_answer(body: bytes, *, status: str = "200 OK", mime: str = "application/json") -> bytes:
    """A raw HTTP answer; without a length, so its body ends where the connection does."""
    return f"HTTP/1.1 {status}\r\nContent-Type: {mime}\r\nConnection: close\r\n\r\n".encode() + body


async def send(url: str, payload: dict[str, Any] | None) -> Any:
    """``HttpBackend(url).chat(payload)``, with a stream's chunks collected; ``models()`` when
    the payload is ``None``."""
    backend = HttpBackend(url, timeout_ms=5000)
    try:
        if payload is None:
            return await backend.models()
        answer = await backend.chat(payload)
        return answer if isinstance(answer, Answer) else [chunk async for chunk in answer]
    finally:
        await backend.aclose()


class TestHttpBackend:
    def test_answer_and_error_answer(self, raw: RawServer) -> None:
        raw.answer = http_answer(json.dumps(COMPLETION).encode())
        answer = asyncio.run(send(raw.url, {"stream": True}))  # a backend may answer whole
        assert answer == Answer(COMPLETION, 200)
        error = {"error": {"message": "stale", "code": "ReadError"}}
        raw.answer = http_answer(json.dumps(error).encode(), status="502 Bad Gateway")
        assert asyncio.run(send(raw.url, {})) == Answer(error, 502)  # relayed, not wrapped

    def test_stream(self, raw: RawServer) -> None:
        events = f": comment\n\ndata: {json.dumps(CHUNK)}\n\ndata: [DONE]\n\n".encode()
        raw.answer = http_answer(events, mime="text/event-stream")
        assert asyncio.run(send(raw.url, {"stream": True})) == [CHUNK]

    @pytest.mark.parametrize(
        ("answer", "words"),
        [
            (http_answer(b"<html>oops</html>"), "with something other than JSON: b'<html>"),
            (http_answer(b"[1, 2]"), "with JSON that is not an object: b'[1, 2]'"),
            (
                http_answer(f"data: {json.dumps(CHUNK)}\n\n".encode(), mime="text/event-stream"),
                "ended its stream before [DONE]",
            ),
            (
                http_answer(b"data: {'not': json}\n\n", mime="text/event-stream"),
                "answered a streamed chunk with something other than JSON",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "RemoteProtocolError"),
        ],
    )
    def test_garbage_is_unavailable(self, raw: RawServer, answer: bytes, words: str) -> None:
        raw.answer = answer
        with pytest.raises(BackendUnavailable) as info:
            asyncio.run(send(raw.url, {"stream": True}))
        assert info.value.status == 502
        assert str(info.value).startswith(f"the backend at {raw.url} ")
        assert words in str(info.value)

    def test_unreachable(self) -> None:
        with pytest.raises(BackendUnavailable, match=r"ConnectError.*backend_timeout_ms") as info:
            asyncio.run(send("http://127.0.0.1:9", {}))
        assert isinstance(info.value.__cause__, httpx.ConnectError)

    def test_models(self, raw: RawServer) -> None:
        raw.answer = http_answer(b'{"object": "list", "data": []}')
        assert asyncio.run(send(raw.url, None)) == {"object": "list", "data": []}
        raw.answer = http_answer(b"down", status="500 Internal Server Error")
        with pytest.raises(BackendUnavailable, match="answered 500 to GET /v1/models: 'down'"):
            asyncio.run(send(raw.url, None))
