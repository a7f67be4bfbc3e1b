"""End to end: the official ``openai`` client against ``dynamo-media serve`` (frontend and
reference backend in their own processes), fetching from a real HTTP server on 127.0.0.1."""

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from dynamo_media import decode_audio, decode_image, decode_video, tensor_sha256
from tests.media import numbered_video
from tests.media_server import MediaServer
from tests.serve import serving
from tests.test_audio import FORMATS, tone
from tests.test_hostile_media import gif_past_its_screen
from tests.test_image import LOSSY

MODEL = "dynamo-media-echo"


@pytest.fixture(scope="module")
def frontend() -> Iterator[str]:
    config = {
        # The media server below is on 127.0.0.1 with a port: allow exactly that.
        "fetcher": {
            "allow_direct_ip": True,
            "allow_private_ips": True,
            "allow_direct_port": True,
            "allowed_media_domains": ["127.0.0.1"],
            "timeout_ms": 5000,
        },
        "decoder": {
            "image": {},
            "video": {"fps": 2.0, "max_frames": 128, "limits": {"max_alloc": 64 << 20}},
            "audio": {"sample_rate": 16000, "num_channels": 1},
        },
        "server": {"pool_capacity_bytes": 256 << 20, "max_concurrent_requests": 4},
    }
    with serving(config) as url:
        yield url


@pytest.fixture(scope="module")
def client(frontend: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{frontend}/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def media_server() -> Iterator[MediaServer]:
    srv = MediaServer()
    yield srv
    srv.stop()


def items_of(completion: ChatCompletion) -> list[dict]:
    """The reference backend's structured account of what it read, without the timings."""
    items = (completion.model_extra or {})["dynamo_media"]["items"]
    return [{k: v for k, v in item.items() if k != "read_seconds"} for item in items]


def url_of(server: MediaServer, name: str, data: bytes, mime: str) -> str:
    return server.url(server.add(name, data, mime), host="127.0.0.1")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TestChatCompletions:
    def test_models(self, client: openai.OpenAI) -> None:
        assert [m.id for m in client.models.list()] == [MODEL]

    def test_image_url(self, client: openai.OpenAI, media_server: MediaServer) -> None:
        data = LOSSY["jpeg"]()
        out = client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": url_of(media_server, "e.jpg", data, "image/jpeg")},
                        },
                    ],
                }
            ],
        )
        (item,) = items_of(out)
        assert item == {
            "modality": "image",
            "shape": [3, 240, 320],
            "dtype": "uint8",
            "sha256": tensor_sha256(decode_image(data).tensor),
        }

    def test_video_with_media_io_kwargs(
        self, client: openai.OpenAI, media_server: MediaServer
    ) -> None:
        data = numbered_video("h264.mp4").read_bytes()
        url = url_of(media_server, "e.mp4", data, "video/mp4")
        out = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}
            ],
            extra_body={"media_io_kwargs": {"video": {"fps": 4.0, "max_frames": 5}}},
        )
        (item,) = items_of(out)
        local = decode_video(data, fps=4.0, max_frames=5)
        assert item["frames_indices"] == local.metadata["frames_indices"] == [0, 12, 25, 37, 49]
        assert item["sha256"] == tensor_sha256(local.tensor)
        # The defaults (fps 2) apply without media_io_kwargs.
        out = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}
            ],
        )
        assert items_of(out)[0]["frames_indices"] == [0, 16, 33, 49]

    def test_audio_url_and_input_audio(
        self, client: openai.OpenAI, media_server: MediaServer
    ) -> None:
        mp3, wav = tone(*FORMATS["mp3"]), tone(*FORMATS["wav-s16"])
        out = client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "audio_url",
                            "audio_url": {"url": url_of(media_server, "e.mp3", mp3, "audio/mpeg")},
                        },
                        {"type": "input_audio", "input_audio": {"data": b64(wav), "format": "wav"}},
                    ],
                }
            ],
        )
        first, second = items_of(out)
        assert first["sha256"] == tensor_sha256(
            decode_audio(mp3, sample_rate=16000, num_channels=1).tensor
        )
        assert second["sha256"] == tensor_sha256(
            decode_audio(wav, sample_rate=16000, num_channels=1).tensor
        )
        assert first["dtype"] == "float32" and first["shape"][0] == 1

    def test_several_media_in_order_and_streaming(
        self, client: openai.OpenAI, media_server: MediaServer
    ) -> None:
        image, video = LOSSY["jpeg"](), numbered_video("h264.mp4").read_bytes()
        content = [
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(image)}"}},
            {
                "type": "video_url",
                "video_url": {"url": url_of(media_server, "s.mp4", video, "video/mp4")},
            },
            {"type": "text", "text": "compare"},
            {
                "type": "image_url",
                "image_url": {"url": url_of(media_server, "s.jpg", image, "image/jpeg")},
            },
        ]
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        items = json.loads(text.split(": ", 1)[1])
        assert [i["modality"] for i in items] == ["image", "image", "video"]  # by key, in order
        assert items[0]["sha256"] == items[1]["sha256"] == tensor_sha256(decode_image(image).tensor)
        assert items[2]["sha256"] == tensor_sha256(decode_video(video, fps=2.0).tensor)

    def test_text_only(self, client: openai.OpenAI) -> None:
        out = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}]
        )
        assert out.choices[0].message.content == "Received 0 media item(s): []"


def error_of(client: openai.OpenAI, content: list, **extra: object) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], extra_body=extra or None
        )
    return info.value


class TestBadRequests:
    def test_errors_then_still_serving(
        self, client: openai.OpenAI, frontend: str, media_server: MediaServer
    ) -> None:
        good = url_of(media_server, "ok.jpg", LOSSY["jpeg"](), "image/jpeg")
        corrupt = url_of(media_server, "bad.jpg", LOSSY["jpeg"]()[:500], "image/jpeg")
        gif_bomb = f"data:image/gif;base64,{b64(gif_past_its_screen(16000))}"
        cases = [
            # (content, extra, status, code, words in the message)
            (
                [{"type": "image_url", "image_url": {"url": "http://evil.example/x.jpg"}}],
                {},
                400,
                "PolicyError",
                "not in allowed_media_domains",
            ),
            (
                [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.jpg"}}],
                {},
                422,
                "FetchError",
                "Cannot fetch",
            ),
            (
                [{"type": "image_url", "image_url": {"url": corrupt}}],
                {},
                400,
                "DecodeError",
                "corrupt or truncated jpeg image: Image is incomplete",
            ),
            (
                [
                    {
                        "type": "video_url",
                        "video_url": {
                            "url": url_of(
                                media_server,
                                "long.mp4",
                                numbered_video("h264.mp4").read_bytes(),
                                "video/mp4",
                            )
                        },
                    }
                ],
                {"media_io_kwargs": {"video": {"limits": {"max_alloc": 1}}}},
                400,
                "InvalidOptions",
                "limits cannot be set per request",
            ),
            (
                [
                    {
                        "type": "video_url",
                        "video_url": {
                            "url": url_of(
                                media_server,
                                "big.mp4",
                                numbered_video("big.mp4", size="1280x720").read_bytes(),
                                "video/mp4",
                            )
                        },
                    }
                ],
                {"media_io_kwargs": {"video": {"num_frames": 50}}},
                400,
                "LimitExceeded",
                "over limits.max_alloc",
            ),
            (  # a GIF whose first frame is far larger than its screen (issue #13)
                [{"type": "image_url", "image_url": {"url": gif_bomb}}],
                {},
                400,
                "LimitExceeded",
                "image of 16000x16000 RGB needs",
            ),
            (
                [
                    {"type": "image_url", "image_url": {"url": good}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "midi"}},
                ],
                {},
                400,
                "InvalidOptions",
                "format 'midi' is not supported",
            ),
        ]
        for content, extra, status, code, words in cases:
            err = error_of(client, content, **extra)
            assert err.status_code == status, (code, err)
            body = err.body
            assert body["code"] == code and words in body["message"], body
            assert body["param"] is None or body["param"].startswith("messages[0].content[")
        health = httpx.get(f"{frontend}/health").json()
        assert health["pool"]["lent"] == 0  # nothing held after the failures
        out = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": good}}]}
            ],
        )
        assert items_of(out)[0]["modality"] == "image"

    def test_disabled_modality(self, tmp_path: Path) -> None:
        from fastapi.testclient import TestClient

        from dynamo_media import MediaDecoder
        from dynamo_media.nixl import RegistrationPool
        from dynamo_media.server import HttpBackend, create_app, parse_config

        config = parse_config({"decoder": {"image": {}}})
        assert MediaDecoder.from_dict({"image": {}}) == config.decoder
        pool = RegistrationPool(capacity_bytes=1 << 20)
        try:
            backend = HttpBackend("http://127.0.0.1:9", timeout_ms=1000)
            with TestClient(create_app(config, backend, pool)) as test_client:
                answer = test_client.post(
                    "/v1/chat/completions",
                    json={
                        "model": MODEL,
                        "messages": [
                            {
                                "role": "user",
                                "content": [
                                    {
                                        "type": "audio_url",
                                        "audio_url": {"url": "data:audio/wav;base64,AAAA"},
                                    }
                                ],
                            }
                        ],
                    },
                )
        finally:
            pool.close()
        assert answer.status_code == 400
        assert answer.json()["error"] == {
            "message": "messages[0].content[0].audio_url: audio input is not enabled on this "
            "server (enabled: image)",
            "type": "invalid_request_error",
            "param": "messages[0].content[0].audio_url",
            "code": "ModalityDisabled",
        }

    @pytest.mark.parametrize(
        ("body", "words"),
        [
            (b'{"messages": [', "not JSON"),
            (b'{"messages": [], "temperature": NaN}', "not JSON"),  # not JSON, though json took it
            (b'{"messages": "\xff"}', "not JSON"),  # not UTF-8
            (b"[1, 2]", "a JSON object with a 'messages' list"),
        ],
    )
    def test_a_body_that_is_not_a_request(self, frontend: str, body: bytes, words: str) -> None:
        answer = httpx.post(f"{frontend}/v1/chat/completions", content=body, timeout=30)
        assert answer.status_code == 400
        assert words in answer.json()["error"]["message"]
        assert httpx.get(f"{frontend}/health", timeout=30).status_code == 200

    def test_data_url_is_not_echoed(self, client: openai.OpenAI) -> None:
        payload = b64(b"this is not an image at all " * 200)
        err = error_of(
            client,
            [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{payload}"}}],
        )
        assert err.status_code == 400 and payload not in json.dumps(err.body)

    def test_metrics(self, frontend: str) -> None:
        text = httpx.get(f"{frontend}/metrics").text
        for name in (
            "dynamo_media_stage_seconds_bucket",
            "dynamo_media_fetched_bytes_total",
            "dynamo_media_errors_total",
            "dynamo_media_registered_bytes",
            "dynamo_media_frames_decoded_total",
            "process_resident_memory_bytes",
        ):
            assert name in text
        assert 'stage="transfer"' in text and 'stage="decode"' in text
