"""Model presets: per model family, how the frontend decodes its media and what its HF processor
needs, as plain values (``dynamo-media serve --preset NAME``; the torch backend reads the same
table).

A preset's ``media`` is written like a request's ``media_io_kwargs``; ``serve --preset`` merges it
over the configured decoder options, and a request's own ``media_io_kwargs`` still override it.
``max_pixels`` is the decoder's per-frame cap (shrink inside the decoder, aspect kept): frames at
or under the cap are untouched, so the processor sees exactly what it would have decoded from the
file; frames over it are resampled twice (decoder, then processor), which saves memory but is no
longer bit-identical to HF's own path.

# Note [preset sources]
Each value says where it comes from:

- *hub*: the model's ``preprocessor_config.json`` / ``video_preprocessor_config.json`` /
  ``processor_config.json`` on the Hugging Face hub, as written down from the repositories named
  below (no download happens here; check them against the hub before relying on them);
- *class*: the default of the transformers 5.24 class, read from its source;
- *utils*: ``qwen-vl-utils`` (Qwen's own loader), ``vision_process.py`` constants.

Class defaults are not the hub values: ``Qwen2VLImageProcessor`` caps images at 1,003,520 pixels,
Qwen2-VL's hub config at 12,845,056; ``LlavaOnevisionImageProcessor`` normalises with CLIP's mean,
the hub config with SigLIP's 0.5. So the processor settings below are the hub's, and the backend
builds each processor from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dynamo_media._errors import InvalidOptions
from dynamo_media.config import Modality

__all__ = ["PRESETS", "Preset", "get_preset"]

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_HALF = [0.5, 0.5, 0.5]
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_QWEN2_VIDEO_MAX_PIXELS = 768 * 28 * 28  # utils VIDEO_MAX_PIXELS; class Qwen2VLVideoProcessor

# The processor call a video family needs (Note [processor call] in backend/_torch.py).
_VIDEO_CALL: Mapping[str, Any] = {"do_sample_frames": False}


@dataclasses.dataclass(frozen=True)
class Preset:
    """One model family's settings (see Note [preset sources]).

    Attributes:
        name: the family, as transformers' ``model_type`` spells it (``"qwen2_5_vl"``).
        checkpoint: the hub repository the *hub* values were taken from.
        media: decoder options per modality, in ``media_io_kwargs`` form (``sampling``, ``fps``
            or ``num_frames``, ``max_frames``, ``min_frames``, ``max_pixels``; ``sample_rate``,
            ``num_channels``), merged over the server's configured defaults.
        processor: constructor keywords per processor part (``"image_processor"``,
            ``"video_processor"``, ``"feature_extractor"``, and ``"processor"`` for the
            wrapping processor), the hub values where they differ from the class defaults.
        processor_call: keywords every processor call takes: for video, ``do_sample_frames=False``
            (the frames are already chosen; with each item's ``video_metadata`` beside them).
        sources: where each value comes from, by key.
    """

    name: str
    checkpoint: str
    media: Mapping[Modality, Mapping[str, Any]]
    processor: Mapping[str, Mapping[str, Any]]
    processor_call: Mapping[str, Any]
    sources: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Preset({self.name!r}, checkpoint={self.checkpoint!r}, media={dict(self.media)})"


_QWEN2_IMAGE = {
    "size": {"shortest_edge": 3136, "longest_edge": 12845056},
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
}
# utils caps each frame at its share of VIDEO_TOTAL_PIXELS; transformers 5.24 does so only when
# asked (and warns that the default will change), so the presets ask.
_QWEN_VIDEO = {"cap_pixels_per_frame": True}
_QWEN2_VIDEO_MEDIA = {
    "sampling": "qwen2_vl",
    "fps": 2.0,
    "min_frames": 4,
    "max_frames": 768,
    "max_pixels": _QWEN2_VIDEO_MAX_PIXELS,
}
_QWEN2_SOURCES = {
    "media.video.sampling": "class Qwen2VLVideoProcessor.sample_frames (Note [sampling rules])",
    "media.video.fps": "utils FPS = 2.0; class Qwen2VLVideoProcessor.sample_frames fps=2",
    "media.video.min_frames": "utils FPS_MIN_FRAMES = 4; class min_frames = 4",
    "media.video.max_frames": "utils FPS_MAX_FRAMES = 768; class max_frames = 768",
    "media.video.max_pixels": "utils VIDEO_MAX_PIXELS = 768*28*28; class size.longest_edge",
    "processor.image_processor": "hub min_pixels 3136, max_pixels 12845056, patch 14",
    "processor.video_processor": "class defaults (the hub repository has no video config); "
    "cap_pixels_per_frame as utils",
}

PRESETS: Mapping[str, Preset] = {
    "qwen2_vl": Preset(
        name="qwen2_vl",
        checkpoint="Qwen/Qwen2-VL-7B-Instruct",
        media={"video": _QWEN2_VIDEO_MEDIA},
        processor={"image_processor": _QWEN2_IMAGE, "video_processor": _QWEN_VIDEO},
        processor_call=_VIDEO_CALL,
        sources=_QWEN2_SOURCES,
    ),
    "qwen2_5_vl": Preset(
        name="qwen2_5_vl",
        checkpoint="Qwen/Qwen2.5-VL-7B-Instruct",
        media={"video": _QWEN2_VIDEO_MEDIA},
        processor={"image_processor": _QWEN2_IMAGE, "video_processor": _QWEN_VIDEO},
        processor_call=_VIDEO_CALL,
        sources=_QWEN2_SOURCES,
    ),
    "qwen3_vl": Preset(
        name="qwen3_vl",
        checkpoint="Qwen/Qwen3-VL-8B-Instruct",
        media={"video": {"sampling": "uniform", "fps": 2.0, "min_frames": 4, "max_frames": 768}},
        processor={
            "image_processor": {
                "size": {"shortest_edge": 65536, "longest_edge": 16777216},
                "patch_size": 16,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": _HALF,
                "image_std": _HALF,
            },
            "video_processor": {
                "size": {"shortest_edge": 4096, "longest_edge": 25165824},
                "patch_size": 16,
                "temporal_patch_size": 2,
                "merge_size": 2,
                **_QWEN_VIDEO,
            },
        },
        processor_call=_VIDEO_CALL,
        sources={
            "media.video.sampling": "class Qwen3VLVideoProcessor.sample_frames: linspace(0, T-1)"
            " rounded, the uniform rule but for ties (Note [sampling rules])",
            "media.video.fps": "hub video fps 2; class fps = 2",
            "media.video.min_frames": "hub video min_frames 4; class min_frames = 4",
            "media.video.max_frames": "hub video max_frames 768; class max_frames = 768",
            "media.video.max_pixels": "none: the video budget (hub longest_edge 25165824) is "
            "over the whole clip, T*H*W, not per frame",
            "processor.image_processor": "hub size 65536..16777216 pixels, patch 16, mean 0.5",
            "processor.video_processor": "hub size 4096..25165824 (T*H*W), patch 16; "
            "cap_pixels_per_frame as utils",
        },
    ),
    "llava_onevision": Preset(
        name="llava_onevision",
        checkpoint="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        media={"video": {"sampling": "llava_onevision", "num_frames": 32}},
        processor={
            "image_processor": {"image_mean": _HALF, "image_std": _HALF},
            "video_processor": {"image_mean": _HALF, "image_std": _HALF},
            "processor": {
                "num_image_tokens": 729,
                "vision_feature_select_strategy": "full",
                "vision_aspect_ratio": "anyres_max_9",
            },
        },
        processor_call=_VIDEO_CALL,
        sources={
            "media.video.sampling": "class LlavaOnevisionVideoProcessor: the base "
            "default_sample_indices_fn (Note [sampling rules])",
            "media.video.num_frames": "the LLaVA-OneVision paper's 32 video frames (the class "
            "has no default)",
            "media.video.max_pixels": "none: the processor resizes every frame to 384x384",
            "processor.image_processor": "hub SigLIP mean/std 0.5 (class: CLIP's); 384x384 and "
            "the anyres pinpoints are the class defaults",
            "processor.video_processor": "hub SigLIP mean/std 0.5 (class: CLIP's), 384x384",
            "processor.processor": "hub processor_config.json",
        },
    ),
    "internvl": Preset(
        name="internvl",
        checkpoint="OpenGVLab/InternVL3-1B-hf",
        media={"video": {"sampling": "internvl", "num_frames": 8}},
        processor={
            "image_processor": {
                "size": {"height": 448, "width": 448},
                "crop_to_patches": True,
                "min_patches": 1,
                "max_patches": 12,
                "image_mean": _IMAGENET_MEAN,
                "image_std": _IMAGENET_STD,
            },
            "video_processor": {
                "size": {"height": 448, "width": 448},
                "image_mean": _IMAGENET_MEAN,
                "image_std": _IMAGENET_STD,
            },
        },
        processor_call=_VIDEO_CALL,
        sources={
            "media.video.sampling": "class InternVLVideoProcessor.sample_frames, bin centres",
            "media.video.num_frames": "hub model card's video example, 8 frames",
            "media.video.max_pixels": "none: the processor resizes every frame to 448x448",
            "processor.image_processor": "hub 448x448 tiles, 1..12 patches, ImageNet mean/std",
            "processor.video_processor": "hub 448x448, ImageNet mean/std",
        },
    ),
    "whisper": Preset(
        name="whisper",
        checkpoint="openai/whisper-small",
        media={"audio": {"sample_rate": 16000, "num_channels": 1}},
        processor={"feature_extractor": {"feature_size": 80, "sampling_rate": 16000}},
        processor_call={},
        sources={
            "media.audio": "hub sampling_rate 16000; mono, as WhisperFeatureExtractor takes it",
            "processor.feature_extractor": "hub feature_size 80 (large-v3: 128), 30 s chunks",
        },
    ),
    "qwen2_audio": Preset(
        name="qwen2_audio",
        checkpoint="Qwen/Qwen2-Audio-7B-Instruct",
        media={"audio": {"sample_rate": 16000, "num_channels": 1}},
        processor={"feature_extractor": {"feature_size": 128, "sampling_rate": 16000}},
        processor_call={},
        sources={
            "media.audio": "hub sampling_rate 16000; mono",
            "processor.feature_extractor": "hub WhisperFeatureExtractor, feature_size 128",
        },
    ),
}
"""The presets, by family name."""


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        InvalidOptions: no such preset; the message lists the known ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(repr(n) for n in sorted(PRESETS))
        raise InvalidOptions(f"Unknown preset {name!r}. Supported values are {known}.") from None
