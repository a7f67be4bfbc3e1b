"""``dynamo-media processor`` behind Dynamo's own HTTP frontend: ``python -m dynamo.frontend``, a
processor and a ``dynamo-media worker``, found through file discovery in a private directory
over the tcp request plane, driven by the official ``openai`` client. The media go inline
(``data:`` URLs); the echo worker's text lists what it read over NIXL (``dynamo.frontend`` keeps
only the chat fields, so the items are read from the text)."""

import base64
import contextlib
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from dynamo_media import decode_audio, decode_image, decode_video, tensor_sha256
from tests.media import ffmpeg, numbered_video
from tests.serve import dynamo_env, free_port, worker_process
from tests.test_image import LOSSY

pytest.importorskip("dynamo.runtime", reason="ai-dynamo-runtime (the dynamo extra) is missing")
pytest.importorskip(
    "dynamo.frontend",
    reason="dynamo.frontend is missing: pip install --no-deps ai-dynamo==1.6.1 pyyaml msgspec",
)

MODEL = "dynamo-media-echo"
CONFIG = {
    "decoder": {
        "image": {},
        "video": {"fps": 2.0, "max_frames": 128, "limits": {"max_alloc": 64 << 20}},
        "audio": {"sample_rate": 16000, "num_channels": 1},
    },
    "server": {"model": MODEL, "pool_capacity_bytes": 64 << 20},
}


def audio_bytes() -> bytes:
    sine = "sine=frequency=440:sample_rate=44100:duration=1"
    return ffmpeg("processor.wav", "-f", "lavfi", "-i", sine, "-ac", "2").read_bytes()


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Where the processor serves its metrics (``--metrics-port``)."""
    return free_port()


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[str]:
    """dynamo.frontend, a processor and a worker; yields the frontend's URL once it lists the
    processor's model. All three are stopped when the module ends."""
    root = tmp_path_factory.mktemp("processor")
    config = root / "config.json"
    config.write_text(json.dumps(CONFIG))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processor_args = ["--config", str(config), "--metrics-port", str(metrics_port)]
    frontend_args = ["dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
                     "--discovery-backend", "file", "--request-plane", "tcp"]  # fmt: skip
    with pytest.MonkeyPatch.context() as env, contextlib.ExitStack() as stack:
        for key, value in dynamo_env(root / "discovery").items():
            env.setenv(key, value)
        procs = [
            stack.enter_context(worker_process("dynamo_media.cli", "worker", "--model", MODEL)),
            stack.enter_context(worker_process("dynamo_media.cli", "processor", *processor_args)),
            stack.enter_context(worker_process(*frontend_args)),
        ]
        deadline = time.monotonic() + 120
        while True:
            assert all(p.poll() is None for p in procs), "a process exited"
            with contextlib.suppress(httpx.HTTPError):
                models = httpx.get(f"{url}/v1/models", timeout=1).json()
                if [m["id"] for m in models.get("data", [])] == [MODEL]:
                    break
            assert time.monotonic() < deadline, "dynamo.frontend did not list the model in 120 s"
            time.sleep(0.3)
        yield url
    for proc in procs:  # worker_process stopped each one
        assert proc.poll() is not None


@pytest.fixture(scope="module")
def client(frontend: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{frontend}/v1", api_key="unused", max_retries=0) as c:
        yield c


def items_in(text: str) -> list[dict]:
    """The echo worker's items, from its answer's text."""
    head, _, listed = text.partition(": ")
    assert head.startswith("Received "), text
    return [{k: v for k, v in item.items() if k != "read_seconds"} for item in json.loads(listed)]


def mixed_request() -> tuple[list[dict], dict, list[dict]]:
    """Messages with an image, a video and an audio clip; ``media_io_kwargs``; and what the
    worker must report for each, decoded here."""
    image, video, audio = LOSSY["jpeg"](), numbered_video("h264.mp4").read_bytes(), audio_bytes()
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": data_url("image/jpeg", image)}},
        {"type": "video_url", "video_url": {"url": data_url("video/mp4", video)}},
        {"type": "audio_url", "audio_url": {"url": data_url("audio/wav", audio)}},
    ]
    local_video = decode_video(video, num_frames=4)
    local_audio = decode_audio(audio, sample_rate=16000, num_channels=1)
    expected = [
        {"modality": "image", "shape": [3, 240, 320], "dtype": "uint8",
         "sha256": tensor_sha256(decode_image(image).tensor)},
        {"modality": "video", "shape": list(local_video.tensor.shape), "dtype": "uint8",
         "sha256": tensor_sha256(local_video.tensor),
         "frames_indices": local_video.metadata["frames_indices"]},
        {"modality": "audio", "shape": list(local_audio.tensor.shape), "dtype": "float32",
         "sha256": tensor_sha256(local_audio.tensor)},
    ]  # fmt: skip
    kwargs = {"media_io_kwargs": {"video": {"num_frames": 4}}}
    return [{"role": "user", "content": content}], kwargs, expected


def check(items: list[dict], expected: list[dict]) -> None:
    assert [item["modality"] for item in items] == ["image", "video", "audio"]
    for item, want in zip(items, expected, strict=True):
        assert {k: item[k] for k in want} == want
    assert expected[1]["shape"][0] == 4 and len(expected[1]["frames_indices"]) == 4


class TestProcessor:
    def test_models(self, client: openai.OpenAI) -> None:
        assert [m.id for m in client.models.list()] == [MODEL]

    def test_image_video_audio(self, client: openai.OpenAI) -> None:
        messages, kwargs, expected = mixed_request()
        out = client.chat.completions.create(model=MODEL, messages=messages, extra_body=kwargs)  # type: ignore[arg-type]
        assert out.choices[0].finish_reason == "stop"
        check(items_in(out.choices[0].message.content or ""), expected)

    def test_stream(self, client: openai.OpenAI) -> None:
        messages, kwargs, expected = mixed_request()
        stream = client.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            extra_body=kwargs,
            stream=True,
        )
        chunks = list(stream)
        check(items_in("".join(c.choices[0].delta.content or "" for c in chunks)), expected)
        assert chunks[-1].choices[0].finish_reason == "stop"

    def test_bad_media_is_a_400_with_the_reason(self, client: openai.OpenAI) -> None:
        broken = data_url("image/jpeg", b"not an image at all")
        content = [{"type": "image_url", "image_url": {"url": broken}}]
        start = time.monotonic()
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": content}]
            )
        assert time.monotonic() - start < 10
        assert "messages[0].content[0].image_url" in str(info.value)

    def test_bad_media_io_kwargs_is_a_400(self, client: openai.OpenAI) -> None:
        content = [
            {"type": "image_url", "image_url": {"url": data_url("image/jpeg", LOSSY["jpeg"]())}}
        ]
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
                extra_body={"media_io_kwargs": {"image": {"limits": {"max_alloc": 1}}}},
            )
        assert "limits" in str(info.value)

    def test_text_only(self, client: openai.OpenAI) -> None:
        out = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert (out.choices[0].message.content or "").startswith("Received 0 media item(s)")


REQUESTS = "dynamo_media_request_seconds_count"


def test_the_processor_serves_its_metrics(client: openai.OpenAI, metrics_port: int) -> None:
    """``--metrics-port``: the frontend's metrics, counting what the processor served."""

    def served() -> float:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        counts = [line for line in text.splitlines() if line.startswith(REQUESTS)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in counts)

    before = served()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert served() == before + 1
