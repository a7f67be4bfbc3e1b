"""Decode + HF processor per request: our path (decode with the model preset's options, then the
torch backend's processor call on the tensors, Note [processor call]) against HF's own path
(the processor given the file: its loader, its frame sampler), same frames, one run. Each row
also checks that both paths give the same processor outputs, bit for bit.

The NIXL hop between the two processes is left out here (``benchmarks/nixl.py`` measures it).
Needs transformers (the ``backend`` extra).

    python -m benchmarks.processor [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import Row, interleaved, machine, report, table, versions
from benchmarks.clips import VIDEO_CLIPS
from dynamo_media import DecodedMedia, decode_audio, decode_image, decode_video
from dynamo_media.backend._echo import ReadItem
from dynamo_media.backend._torch import TorchBackend, describe_outputs
from dynamo_media.server import parse_config
from tests.media import ffmpeg

PROMPT = "describe this"


def _item(media: DecodedMedia) -> ReadItem:
    return ReadItem(
        f"{media.modality}_url[0]", media.modality, media.tensor, dict(media.metadata), {}
    )


def case(
    preset: str, modality: str, path: Path, hf_sampling: dict[str, Any], overrides: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(ours, HF's) for one file: each returns the processor outputs."""
    from transformers.audio_utils import load_audio
    from transformers.image_utils import load_image

    backend = TorchBackend(preset, device="cpu")
    processor = backend.family.processor
    options = parse_config({}, preset=preset).decoder.options(modality, overrides).to_kwargs()
    decode = {"image": decode_image, "video": decode_video, "audio": decode_audio}[modality]

    def ours() -> Any:
        return backend.process([_item(decode(path.read_bytes(), **options))], PROMPT)

    def hf() -> Any:
        if modality == "audio":
            rate = processor.sampling_rate
            waveform = load_audio(str(path), sampling_rate=rate)
            return processor([waveform], sampling_rate=rate, return_tensors="pt")
        placeholder = backend.family.placeholders[modality]
        media = (
            {"images": [load_image(str(path))]} if modality == "image" else {"videos": [str(path)]}
        )
        extra = {"do_sample_frames": True, **hf_sampling} if modality == "video" else {}
        return processor(text=[f"{placeholder} {PROMPT}"], return_tensors="pt", **media, **extra)

    return ours, hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run of each")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    clip = VIDEO_CLIPS["720p 10 s GOP 30"]()
    src = ["-f", "lavfi", "-i"]
    photo = ffmpeg("i1080.jpg", *src, "testsrc2=size=1920x1080", "-frames:v", "1", "-q:v", "2")
    speech = ffmpeg("p30s.wav", *src, "sine=frequency=440:sample_rate=44100:duration=30")
    cases = [
        ("Qwen2.5-VL image, 1080p JPEG", "qwen2_5_vl", "image", photo, {}, {}),
        ("Qwen2.5-VL video, 720p 10 s, 2 fps (20 frames)", "qwen2_5_vl", "video", clip,
         {"fps": 2.0}, {}),
        ("Qwen3-VL video, 720p 10 s, 2 fps (20 frames)", "qwen3_vl", "video", clip,
         {"fps": 2.0}, {}),
        ("LLaVA-OneVision video, 720p 10 s, 8 frames", "llava_onevision", "video", clip,
         {"num_frames": 8}, {"num_frames": 8}),
        ("Whisper, 30 s WAV 44.1 kHz mono", "whisper", "audio", speech, {}, {}),
    ]  # fmt: skip
    rows = []
    for name, preset, modality, path, hf_sampling, overrides in cases:
        ours, hf = case(preset, modality, path, hf_sampling, overrides)
        same = describe_outputs(ours()) == describe_outputs(hf())
        seconds = interleaved({"dynamo-media": ours, "HF from the file": hf}, repeats=repeats)
        rows.append(Row(name, seconds, "outputs equal" if same else "OUTPUTS DIFFER"))
        print(rows[-1])
    head = f"Machine: {machine()}; {versions('torch', 'torchcodec', 'transformers')}\n\n"
    title = f"Decode + HF processor per request, same frames (median of {repeats}, ms)"
    report("processor", head + table(title, rows))


if __name__ == "__main__":
    main()
