"""Model presets: their values are valid options, ``serve --preset`` merges them over the
configured decoder, and a request's ``media_io_kwargs`` still override them."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo_media import InvalidOptions, VideoOptions
from dynamo_media.cli import main
from dynamo_media.config import OPTION_TYPES
from dynamo_media.presets import PRESETS, get_preset
from dynamo_media.server import default_config, parse_config


@pytest.mark.parametrize("name", sorted(PRESETS))
class TestPreset:
    def test_values_are_valid_options(self, name: str) -> None:
        preset = PRESETS[name]
        assert preset.name == name
        for modality, options in preset.media.items():
            OPTION_TYPES[modality].from_dict(options, where=modality)

    def test_every_value_has_a_source(self, name: str) -> None:
        preset = PRESETS[name]
        named = set(preset.sources)
        for modality, options in preset.media.items():
            for key in options:
                assert {f"media.{modality}", f"media.{modality}.{key}"} & named, (
                    f"{name}: media.{modality}.{key} has no source"
                )
        for part in preset.processor:
            assert f"processor.{part}" in named, f"{name}: processor.{part} has no source"

    def test_serve_merges_it_over_the_defaults(self, name: str) -> None:
        decoder = parse_config({}, preset=name).decoder
        for modality, options in PRESETS[name].media.items():
            merged = decoder.options(modality)
            assert {k: getattr(merged, k) for k in options} == {
                k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
            }
            assert merged.limits == parse_config({}).decoder.options(modality).limits

    def test_hf_builds_its_processor(self, name: str) -> None:
        pytest.importorskip("transformers")
        from dynamo_media.backend._tiny import FAMILIES, build_family

        if name not in FAMILIES:
            pytest.skip(f"no tiny model for {name}")
        family = build_family(PRESETS[name])
        for part, values in PRESETS[name].processor.items():
            built = (
                family.processor
                if part in ("processor", "feature_extractor")
                else getattr(family.processor, part)
            )
            for key, value in values.items():
                got = getattr(built, key)
                if key == "size":
                    got = {k: v for k, v in dict(got).items() if v is not None}
                if isinstance(got, tuple):
                    got = list(got)
                assert got == value, f"{name}: {part}.{key}"


def test_a_request_still_overrides_the_preset() -> None:
    decoder = parse_config({}, preset="qwen2_5_vl").decoder
    assert decoder.options("video").fps == 2.0
    request = decoder.options("video", {"num_frames": 6})
    assert (request.num_frames, request.fps, request.sampling) == (6, None, "qwen2_vl")


@pytest.mark.parametrize(
    ("modality", "served", "library"), [("image", "HWC", "CHW"), ("video", "THWC", "TCHW")]
)
def test_served_layouts_are_channels_last_and_a_config_keeps_its_own(
    modality: str, served: str, library: str
) -> None:
    # Note [served layouts]: what Dynamo's backends read; the library's default stays first.
    assert parse_config({}).decoder.options(modality).layout == served
    assert parse_config({}, preset="qwen2_5_vl").decoder.options(modality).layout == served
    assert parse_config({"decoder": {modality: {}}}).decoder.options(modality).layout == library
    asked = parse_config({}).decoder.options(modality, {"layout": library})
    assert asked.layout == library  # a request still chooses


def test_num_frames_preset_replaces_the_default_fps() -> None:
    assert default_config()["decoder"]["video"]["fps"] == 2.0
    options: VideoOptions = parse_config({}, preset="llava_onevision").decoder.options("video")
    assert (options.fps, options.num_frames, options.max_frames) == (None, 32, 128)


def test_a_disabled_modality_stays_disabled() -> None:
    config: dict[str, Any] = {"decoder": {"image": {}}}
    assert parse_config(config, preset="whisper").decoder.enabled == ("image",)


def test_unknown_preset() -> None:
    with pytest.raises(InvalidOptions, match=r"Unknown preset 'qwen9'\. Supported values are "):
        get_preset("qwen9")
    with pytest.raises(InvalidOptions, match="Unknown preset"):
        parse_config({}, preset="qwen9")


def test_class_defaults_are_not_the_hub_values() -> None:
    # Note [preset sources]: Qwen2-VL's hub config allows 12,845,056 pixels, the class 1,003,520.
    assert PRESETS["qwen2_vl"].processor["image_processor"]["size"]["longest_edge"] == 12845056


@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "--kind", "torch"],
        ["backend", "--kind", "torch"],
        ["serve", "--backend-kind", "torch"],
        ["serve", "--preset", "qwen9"],
    ],
)
def test_cli_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--preset" in err
