"""The torch backend: reads each item over NIXL (into VRAM where CUDA is present), runs the
model family's HF fast processor on the tensors with our metadata, and a tiny randomly
initialised model of that family (``_tiny.py``) through ``generate()`` for a few tokens.

It answers like the echo backend (``_echo.py``), with the processor's outputs (shape, dtype and
sha256 of each tensor) and the generated token ids under ``outputs``: a client can compare those
hashes with HF's own processor run on the files, and see that the model took the inputs.

It needs the ``backend`` extra (``transformers``), so ``dynamo_media.backend`` does not import
this module; ``dynamo-media backend --kind torch`` and ``dynamo-media worker --kind torch`` do.

# Note [processor call]
The frames are chosen by the frontend (``sampling.py``), so the processor must not choose again:
each video goes with ``do_sample_frames=False`` and a ``VideoMetadata`` built from the item's
metadata (``source_total_frames``, ``source_fps``, ``source_duration_seconds``,
``frames_indices``). Without them, Qwen2.5-VL's ``second_per_grid_ts`` (the temporal position
step) is computed from a default 24 fps over the decoded frames alone (0.083 s instead of 1 s at
2 fps), and Qwen3-VL samples the frames a second time, or refuses too few of them. Audio must
arrive at the feature extractor's rate, mono: the preset's ``media.audio`` asks the frontend for
that, and a mismatch is refused here rather than resampled (which would hide the
misconfiguration).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import transformers
from fastapi.concurrency import run_in_threadpool
from transformers.video_utils import VideoMetadata

from dynamo_media._errors import InvalidOptions
from dynamo_media._media import tensor_sha256
from dynamo_media.backend._echo import EchoAnswer, ReadItem, read_items
from dynamo_media.backend._tiny import TinyFamily, build_family
from dynamo_media.presets import Preset, get_preset

__all__ = ["TorchBackend", "describe_outputs", "video_metadata"]

DEFAULT_MAX_NEW_TOKENS = 4


def video_metadata(item: ReadItem) -> VideoMetadata:
    """The ``VideoMetadata`` HF's video processors take, from a video item's metadata.

    Raises:
        InvalidOptions: the metadata lacks a field the processor needs.
    """
    meta = item.metadata
    missing = [
        key
        for key in ("source_total_frames", "source_fps", "frames_indices")
        if meta.get(key) is None
    ]
    if missing:
        raise InvalidOptions(
            f"video metadata lacks {', '.join(missing)}; the processor needs them for the "
            "frames' timestamps (is the frontend an older dynamo-media?)"
        )
    height, width = (item.tensor.shape[-2:] if meta.get("layout", "TCHW") == "TCHW"
                     else item.tensor.shape[1:3])  # fmt: skip
    return VideoMetadata(
        total_num_frames=int(meta["source_total_frames"]),
        fps=float(meta["source_fps"]),
        width=int(width),
        height=int(height),
        duration=meta.get("source_duration_seconds"),
        frames_indices=list(meta["frames_indices"]),
    )


def describe_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Each processor output: a tensor's shape, dtype and sha256 (``tensor_sha256``); a list of
    numbers as it is."""
    described: dict[str, Any] = {}
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor):
            described[key] = {
                "shape": list(value.shape),
                "dtype": str(value.dtype).removeprefix("torch."),
                "sha256": tensor_sha256(value),
            }
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            described[key] = value
    return described


def _prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text parts of the messages, joined by spaces."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, Mapping) and "text" in p]
    return " ".join(texts)


class TorchBackend:
    """A backend that runs a preset's HF processor and a tiny model of its family.

    Calls are serialised on one lock: one model, one request at a time (reading over NIXL
    still overlaps).

    Args:
        preset: the family (``dynamo_media.presets.PRESETS``; those with a tiny model in
            ``_tiny.FAMILIES``).
        device: where items are read to and the model runs. Default: ``"cuda"`` when
            available, else ``"cpu"``.
        max_new_tokens: tokens ``generate()`` produces. Default: 4.
        seed: the random weights' seed. Default: 0.

    Raises:
        InvalidOptions: an unknown preset.
        ValueError: a preset without a tiny model.
    """

    def __init__(
        self,
        preset: str,
        *,
        device: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        seed: int = 0,
    ) -> None:
        self.preset: Preset = get_preset(preset)
        self.family: TinyFamily = build_family(self.preset, seed=seed)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.family.model.to(self.device)
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TorchBackend({self.preset.name!r}, device={self.device!r})"

    async def __call__(self, body: dict[str, Any], model: str) -> EchoAnswer:
        """Reads the request's items, processes them and generates; the answer as ``model``.

        Raises:
            MediaError: ``InvalidOptions`` for items the family cannot take (see
                ``process``) or malformed ``multi_modal_data``; ``ReadError`` for NIXL.
        """
        items = await read_items(body.get("multi_modal_data") or {}, device=self.device)
        prompt = _prompt_text(body.get("messages") or [])
        outputs = await run_in_threadpool(self.run, items, prompt)
        return EchoAnswer(body, model, [item.item for item in items], outputs=outputs)

    def process(self, items: Sequence[ReadItem], prompt: str = "") -> transformers.BatchFeature:
        """Runs the family's processor on the items (Note [processor call]); the prompt is one
        placeholder per item, in order, then ``prompt``.

        Raises:
            InvalidOptions: a modality the family does not take; audio at another rate than
                the feature extractor's, or not mono.
        """
        family, name = self.family, self.preset.name
        images: list[torch.Tensor] = []
        videos: list[torch.Tensor] = []
        metadata: list[VideoMetadata] = []
        audios: list[Any] = []
        for item in items:
            if item.modality not in family.placeholders:
                takes = ", ".join(family.placeholders)
                raise InvalidOptions(
                    f"{item.where}: preset {name!r} takes {takes} only; send those, or serve a "
                    f"preset for {item.modality}"
                )
            layout = item.metadata.get("layout")
            if item.modality == "image":
                images.append(item.tensor.permute(2, 0, 1) if layout == "HWC" else item.tensor)
            elif item.modality == "video":
                videos.append(item.tensor.permute(0, 3, 1, 2) if layout == "THWC" else item.tensor)
                try:
                    metadata.append(video_metadata(item))
                except InvalidOptions as exc:
                    raise InvalidOptions(f"{item.where}: {exc}") from exc
            else:
                audios.append(self._mono(item))
        if not family.takes_text:
            rate = family.processor.sampling_rate
            return family.processor(audios, sampling_rate=rate, return_tensors="pt")
        placeholders = "".join(family.placeholders[item.modality] for item in items)
        return family.processor(
            text=[f"{placeholders} {prompt}".strip()],
            images=images or None,
            videos=videos or None,
            video_metadata=metadata or None,
            return_tensors="pt",
            **self.preset.processor_call,
        )

    def _mono(self, item: ReadItem) -> Any:
        want = self.family.processor.sampling_rate
        rate, channels = item.metadata.get("sample_rate"), item.metadata.get("num_channels")
        if rate != want or channels != 1:
            raise InvalidOptions(
                f"{item.where}: {channels} channel(s) at {rate} Hz, but the {self.preset.name} "
                f"feature extractor takes mono at {want} Hz; set media_io_kwargs.audio to "
                f'{{"sample_rate": {want}, "num_channels": 1}} (serve --preset '
                f"{self.preset.name} does)"
            )
        samples = item.tensor.reshape(-1)  # (1, N) or (N, 1)
        return samples.cpu().numpy()

    def run(self, items: Sequence[ReadItem], prompt: str = "") -> dict[str, Any]:
        """Processes the items and generates; returns the answer's ``outputs``: the family,
        ``processor`` (``describe_outputs``) and ``generated_token_ids``."""
        with self._lock:
            inputs = self.process(items, prompt)
            described = describe_outputs(inputs)
            inputs = inputs.to(self.device)
            with torch.inference_mode():
                sequences = self.family.model.generate(
                    **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
                )
        prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
        return {
            "preset": self.preset.name,
            "processor": described,
            "generated_token_ids": sequences[0, prompt_length:].tolist(),
        }
