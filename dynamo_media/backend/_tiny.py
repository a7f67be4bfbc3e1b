"""Tiny, randomly initialised models of each family, with the family's HF processor built from
the preset's values (``dynamo_media.presets``) and a small tokenizer made in code: the torch
backend's model, built with nothing downloaded.

The weights are random, so the generated tokens mean nothing; what the model checks is the
contract: the processor's placeholder expansion matches the features the vision or audio tower
produces, the grids and timestamps have the shapes the model's position code needs, and the
dtypes are what it takes. One layer, hidden size 32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from dynamo_media.config import Modality
from dynamo_media.presets import Preset

__all__ = ["FAMILIES", "TinyFamily", "build_family"]

_WORDS = ["[UNK]", "describe", "this", "what", "is", "in", "the", "image", "video", "audio"]
_QWEN_VISION = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_TEXT = {  # one decoder layer; head_dim 16
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 32768,
}
_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "depth": 1}
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}


@dataclasses.dataclass(frozen=True)
class TinyFamily:
    """A family's processor and tiny model.

    Attributes:
        processor: the HF processor (a feature extractor for speech-only families).
        model: the randomly initialised model, in eval mode.
        placeholders: the prompt text that stands for one item, per modality it takes.
        takes_text: whether the processor takes a prompt; ``False`` for a feature extractor,
            whose features go to the model's encoder alone. Default: ``True``.
    """

    processor: Any
    model: Any
    placeholders: Mapping[Modality, str]
    takes_text: bool = True


def _tokenizer(special: list[str]) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer: the family's special tokens, then a few words; ids from 0."""
    tokens = ["<|endoftext|>", *special, *_WORDS]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(["<|endoftext|>", *special])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
    )


def _ids(tokenizer: Any, **tokens: str) -> dict[str, Any]:
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in tokens.items()}
    return {**ids, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.eos_token_id}


def _text(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    ids = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return {**_TEXT, "vocab_size": len(tokenizer), **ids, **extra}


def _qwen_vl(preset: Preset, version: str) -> TinyFamily:
    """Qwen2-VL, Qwen2.5-VL and Qwen3-VL share the tokens and the shape of their configs."""
    tokenizer = _tokenizer(_QWEN_VISION)
    parts = preset.processor
    image = transformers.Qwen2VLImageProcessor(**parts["image_processor"])
    video_class = (
        transformers.Qwen3VLVideoProcessor if version == "3" else transformers.Qwen2VLVideoProcessor
    )
    video = video_class(**parts["video_processor"])
    ids = _ids(
        tokenizer,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )
    vision: dict[str, Any] = {
        **_VISION,
        "out_hidden_size": _TEXT["hidden_size"],
        "patch_size": image.patch_size,
    }
    if version == "2":
        processor: Any = transformers.Qwen2VLProcessor(image, tokenizer, video)
        vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
        config: Any = transformers.Qwen2VLConfig(
            text_config=_text(tokenizer, rope_parameters=_MROPE), vision_config=vision, **ids
        )
        model_class: Any = transformers.Qwen2VLForConditionalGeneration
    elif version == "2.5":
        processor = transformers.Qwen2_5_VLProcessor(image, tokenizer, video)
        vision |= {"fullatt_block_indexes": [0], "window_size": 2 * image.patch_size * 4}
        config = transformers.Qwen2_5_VLConfig(
            text_config=_text(tokenizer, rope_parameters=_MROPE), vision_config=vision, **ids
        )
        model_class = transformers.Qwen2_5_VLForConditionalGeneration
    else:
        processor = transformers.Qwen3VLProcessor(image, tokenizer, video)
        vision |= {"deepstack_visual_indexes": [0], "num_position_embeddings": 2304}
        rope = {**_MROPE, "mrope_interleaved": True}
        config = transformers.Qwen3VLConfig(
            text_config=_text(tokenizer, rope_parameters=rope, head_dim=16),
            vision_config=vision,
            **ids,
        )
        model_class = transformers.Qwen3VLForConditionalGeneration
    return TinyFamily(
        processor=processor,
        model=model_class(config).eval(),
        placeholders={
            "image": "<|vision_start|><|image_pad|><|vision_end|>",
            "video": "<|vision_start|><|video_pad|><|vision_end|>",
        },
    )


def _llava_onevision(preset: Preset) -> TinyFamily:
    tokenizer = _tokenizer(["<image>", "<video>"])
    parts = preset.processor
    image = transformers.LlavaOnevisionImageProcessor(**parts["image_processor"])
    video = transformers.LlavaOnevisionVideoProcessor(**parts["video_processor"])
    processor = transformers.LlavaOnevisionProcessor(image, tokenizer, video, **parts["processor"])
    side = image.size["height"]
    config = transformers.LlavaOnevisionConfig(
        vision_config={  # SigLIP at 384 px in patches of 14: 729 tokens, num_image_tokens
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": side,
            "patch_size": 14,
        },
        text_config={"model_type": "qwen2", **_text(tokenizer)},
        image_grid_pinpoints=image.image_grid_pinpoints,
        vision_feature_select_strategy=parts["processor"]["vision_feature_select_strategy"],
        vision_feature_layer=-1,
        vision_aspect_ratio=parts["processor"]["vision_aspect_ratio"],
        **_ids(tokenizer, image_token_id="<image>", video_token_id="<video>"),
    )
    return TinyFamily(
        processor=processor,
        model=transformers.LlavaOnevisionForConditionalGeneration(config).eval(),
        placeholders={"image": "<image>", "video": "<video>"},
    )


def _whisper(preset: Preset) -> TinyFamily:
    features = transformers.WhisperFeatureExtractor(**preset.processor["feature_extractor"])
    config = transformers.WhisperConfig(
        vocab_size=64,
        num_mel_bins=features.feature_size,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=features.nb_max_frames // 2,  # the encoder's stride-2 convolution
        max_target_positions=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return TinyFamily(
        processor=features,
        model=transformers.WhisperForConditionalGeneration(config).eval(),
        placeholders={"audio": ""},
        takes_text=False,
    )


FAMILIES: Mapping[str, Callable[[Preset], TinyFamily]] = {
    "qwen2_vl": lambda preset: _qwen_vl(preset, "2"),
    "qwen2_5_vl": lambda preset: _qwen_vl(preset, "2.5"),
    "qwen3_vl": lambda preset: _qwen_vl(preset, "3"),
    "llava_onevision": _llava_onevision,
    "whisper": _whisper,
}
"""The families the torch backend can build, by preset name."""


def build_family(preset: Preset, *, seed: int = 0) -> TinyFamily:
    """The preset's processor and a tiny model, its weights drawn from ``seed``.

    Raises:
        ValueError: the preset names a family without a tiny model here.
    """
    if preset.name not in FAMILIES:
        known = ", ".join(repr(n) for n in sorted(FAMILIES))
        raise ValueError(
            f"the torch backend has no tiny model for preset {preset.name!r}; use one of {known}"
        )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FAMILIES[preset.name](preset)
