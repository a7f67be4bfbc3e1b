"""Each option is declared once: the options class is the schema, and the functional and the
transform of each modality take exactly its fields (plus ``device``), with the same defaults."""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from dynamo_media import (
    AudioOptions,
    ImageOptions,
    VideoOptions,
    decode_audio,
    decode_image,
    decode_video,
)
from dynamo_media.transforms import DecodeAudio, DecodeImage, DecodeVideo

TWINS = {
    "image": (ImageOptions, decode_image, DecodeImage),
    "video": (VideoOptions, decode_video, DecodeVideo),
    "audio": (AudioOptions, decode_audio, DecodeAudio),
}


def keywords(fn: Callable[..., Any]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def option_defaults(cls: type) -> dict[str, Any]:
    return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("modality", sorted(TWINS))
class TestSignaturesAgree:
    def test_same_names(self, modality: str) -> None:
        options, functional, transform = TWINS[modality]
        names = set(option_defaults(options)) | {"device"}
        assert set(keywords(functional)) == names
        assert set(keywords(transform.__init__)) == names

    def test_same_defaults(self, modality: str) -> None:
        options, functional, transform = TWINS[modality]
        defaults = option_defaults(options) | {"device": "cpu"}
        assert keywords(functional) == defaults
        # The transform takes limits=None for "the default limits", the others an object.
        built = transform()
        assert built.options == options() and built.device == "cpu"
