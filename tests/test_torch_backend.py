"""The torch backend in its own process, fed over real NIXL: its processor outputs equal, bit for
bit, what HF's processor gives from the files on HF's own path (its loader, its frame sampler,
the same frames), and the tiny model of the family generates on them.

Skipped without transformers (the ``backend`` extra).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("transformers")

from transformers.audio_utils import load_audio
from transformers.image_utils import load_image

from dynamo_media import decode_audio, decode_image, decode_video, tensor_sha256
from dynamo_media.backend._tiny import build_family
from dynamo_media.backend._torch import DEFAULT_MAX_NEW_TOKENS, describe_outputs
from dynamo_media.nixl import RegistrationPool, register_media
from dynamo_media.presets import get_preset
from dynamo_media.server import parse_config
from tests.media import ROOT, ffmpeg, numbered_video
from tests.serve import free_port

PROMPT = "describe this"


def clip() -> Path:
    """2 s at 25 fps, 320x240: 50 frames; under every preset's per-frame pixel cap."""
    return numbered_video("torch-backend.mp4", seconds=2.0, fps=25, size="320x240")


def picture() -> Path:
    return ffmpeg(
        "torch-backend.jpg", "-f", "lavfi", "-i", "testsrc2=size=300x200", "-frames:v", "1"
    )


def speech() -> Path:
    """Mono at 44.1 kHz, so that both paths resample to 16 kHz."""
    return ffmpeg(
        "torch-backend.wav", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2"
    )


@contextlib.contextmanager
def torch_backend(preset: str) -> Iterator[str]:
    """``dynamo-media backend --kind torch --preset NAME`` as a process; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "dynamo_media.cli", "backend", "--kind", "torch",
           "--preset", preset, "--port", str(port), "--model", f"tiny-{preset}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the torch backend for {preset} exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the torch backend did not start in 120 s"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, str]]:
    """The URL of each preset's torch backend, started on first use, stopped with the module."""
    with contextlib.ExitStack() as stack:

        class Started(dict[str, str]):
            def __missing__(self, preset: str) -> str:
                self[preset] = stack.enter_context(torch_backend(preset))
                return self[preset]

        yield Started()


@pytest.fixture(scope="module")
def pool() -> Iterator[RegistrationPool]:
    pool = RegistrationPool(capacity_bytes=256 << 20)
    yield pool
    pool.close()


def ask(url: str, pool: RegistrationPool, items: dict[str, list[Any]]) -> httpx.Response:
    """Registers the decoded items and sends them as the frontend would; the answer."""
    registered = {
        key: [register_media(media, pool) for media in group] for key, group in items.items()
    }
    try:
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": PROMPT}],
            "multi_modal_data": {k: [r.descriptor for r in v] for k, v in registered.items()},
        }
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    finally:
        for group in registered.values():
            for r in group:
                r.release()


# (preset, HF's sampler keywords giving the frames our preset picks, our media_io_kwargs)
VISION = [
    ("qwen2_5_vl", {"fps": 2.0}, {}),
    ("qwen3_vl", {"fps": 2.0}, {}),
    ("llava_onevision", {"num_frames": 8}, {"num_frames": 8}),  # 8, not the preset's 32: time
]


@pytest.mark.parametrize(("preset", "hf_sampling", "overrides"), VISION)
def test_vision_parity_with_hf_from_files(
    backends: dict[str, str],
    pool: RegistrationPool,
    preset: str,
    hf_sampling: dict[str, Any],
    overrides: dict[str, Any],
) -> None:
    decoder = parse_config({}, preset=preset).decoder
    image = decode_image(picture().read_bytes(), **decoder.options("image").to_kwargs())
    video = decode_video(clip().read_bytes(), **decoder.options("video", overrides).to_kwargs())

    response = ask(backends[preset], pool, {"image_url": [image], "video_url": [video]})
    assert response.status_code == 200, response.text
    facts = response.json()["dynamo_media"]

    family = build_family(get_preset(preset))
    placeholders = family.placeholders["image"] + family.placeholders["video"]
    hf = family.processor(  # HF's own path: PIL from the file, its video loader and sampler
        text=[f"{placeholders} {PROMPT}"],
        images=[load_image(str(picture()))],
        videos=[str(clip())],
        do_sample_frames=True,
        return_metadata=True,
        return_tensors="pt",
        **hf_sampling,
    )
    hf_indices = [int(i) for i in hf.pop("video_metadata")[0].frames_indices]
    assert video.metadata["frames_indices"] == hf_indices
    got = facts["outputs"]["processor"]
    want = describe_outputs(hf)
    assert set(got) == set(want)
    for key in ("pixel_values", "pixel_values_videos", "input_ids"):
        assert got[key] == want[key], key  # shape, dtype and sha256: bit for bit
    assert got == want
    if preset == "qwen2_5_vl":  # the temporal step from our metadata: 2 frames at 2 fps
        assert hf["second_per_grid_ts"].tolist() == [1.0]
    assert len(facts["outputs"]["generated_token_ids"]) == DEFAULT_MAX_NEW_TOKENS
    assert [item["sha256"] for item in facts["items"]] == [
        tensor_sha256(image.tensor),
        tensor_sha256(video.tensor),
    ]


def test_whisper_features_parity_with_hf_from_file(
    backends: dict[str, str], pool: RegistrationPool
) -> None:
    decoder = parse_config({}, preset="whisper").decoder
    audio = decode_audio(speech().read_bytes(), **decoder.options("audio").to_kwargs())

    response = ask(backends["whisper"], pool, {"audio_url": [audio]})
    assert response.status_code == 200, response.text
    facts = response.json()["dynamo_media"]

    features = build_family(get_preset("whisper")).processor
    hf = features(
        [load_audio(str(speech()), sampling_rate=features.sampling_rate)],
        sampling_rate=features.sampling_rate,
        return_tensors="pt",
    )
    assert facts["outputs"]["processor"] == describe_outputs(hf)
    assert facts["outputs"]["processor"]["input_features"]["shape"] == [1, 80, 3000]
    assert facts["outputs"]["generated_token_ids"]


def test_wrong_audio_rate_is_refused_naming_the_fix(
    backends: dict[str, str], pool: RegistrationPool
) -> None:
    audio = decode_audio(speech().read_bytes(), sample_rate=8000, num_channels=1)
    response = ask(backends["whisper"], pool, {"audio_url": [audio]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "audio_url[0]" in message and "8000 Hz" in message and '"sample_rate": 16000' in message


def test_an_item_the_family_does_not_take_is_named_by_its_own_key(
    backends: dict[str, str], pool: RegistrationPool
) -> None:
    image = decode_image(picture().read_bytes())
    audio = decode_audio(speech().read_bytes(), sample_rate=16000, num_channels=1)
    response = ask(backends["qwen2_5_vl"], pool, {"image_url": [image], "audio_url": [audio]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("audio_url[0]: preset"), message  # not audio_url[1]
