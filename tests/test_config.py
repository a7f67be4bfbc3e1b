import json

import pytest

from dynamo_media import (
    AudioOptions,
    FetchPolicy,
    ImageLimits,
    InvalidOptions,
    MediaDecoder,
    MediaFetcher,
    ModalityDisabled,
    VideoOptions,
)


# fmt: off
def seed_fetcher() -> MediaFetcher:
    # The seed's snippet, verbatim.
    fetcher = MediaFetcher()
    fetcher.user_agent("dynamo"); fetcher.timeout_ms(15000)  # noqa: E702
    fetcher.allow_direct_ip(True); fetcher.allow_direct_port(False)  # noqa: E702
    fetcher.allowed_media_domains(["google.com"])
    return fetcher


def seed_decoder() -> MediaDecoder:
    # The seed's snippet, verbatim.
    decoder = MediaDecoder()
    decoder.enable_image({"limits": {"max_image_width": 4096, "max_image_height": 4096, "max_alloc": 16*1024*1024}})  # noqa: E501
    decoder.enable_video({"fps": 2.0, "max_frames": 128, "limits": {"max_alloc": 1024*1024*128*3}})
    decoder.enable_audio({"sample_rate": 16000, "num_channels": 1, "limits": {"max_duration_seconds": 600, "max_alloc": 256*1024*1024}})  # noqa: E501
    return decoder
# fmt: on


class TestMediaFetcher:
    def test_seed_snippet(self) -> None:
        policy = seed_fetcher().policy
        assert policy.user_agent == "dynamo"
        assert policy.timeout_ms == 15000
        assert policy.allow_direct_ip is True
        assert policy.allow_direct_port is False
        assert policy.allowed_media_domains == ("google.com",)

    def test_defaults_are_safe(self) -> None:
        policy = MediaFetcher().policy
        assert policy == FetchPolicy()
        assert (policy.allow_direct_ip, policy.allow_direct_port, policy.allow_private_ips) == (
            False,
            False,
            False,
        )
        assert policy.max_redirects == 3
        assert policy.allowed_local_media_path is None

    def test_json_round_trip(self) -> None:
        fetcher = seed_fetcher().allow_private_ips(True).max_bytes(1 << 20)
        again = MediaFetcher.from_dict(json.loads(json.dumps(fetcher.to_dict())))
        assert again == fetcher
        assert again != MediaFetcher()

    def test_setters_chain(self) -> None:
        fetcher = MediaFetcher().max_redirects(0).allowed_local_media_path("/tmp")
        assert fetcher.policy.max_redirects == 0
        assert fetcher.policy.allowed_local_media_path == "/tmp"

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (lambda f: f.timeout_ms(0), r"FetchPolicy.timeout_ms must be > 0, got 0"),
            (lambda f: f.timeout_ms("15s"), r"timeout_ms must be an integer, got '15s' \(str\)"),
            (lambda f: f.allow_direct_ip(1), r"allow_direct_ip must be true or false"),
            (lambda f: f.max_redirects(-1), r"max_redirects must be >= 0"),
            (lambda f: f.allowed_media_domains("google.com"), None),
        ],
    )
    def test_bad_values_fail_at_the_call(self, call, message) -> None:
        fetcher = MediaFetcher()
        if message is None:  # a bare string is a sequence of characters: still a list of str
            call(fetcher)
            return
        with pytest.raises(InvalidOptions, match=message):
            call(fetcher)

    def test_from_dict_unknown_key(self) -> None:
        with pytest.raises(InvalidOptions, match=r"Unknown option 'timeout' in fetcher\. Allowed"):
            MediaFetcher.from_dict({"timeout": 5})

    def test_repr_shows_changes(self) -> None:
        assert repr(MediaFetcher().timeout_ms(1000)) == "MediaFetcher(timeout_ms=1000)"


class TestMediaDecoder:
    def test_seed_snippet(self) -> None:
        decoder = seed_decoder()
        assert decoder.enabled == ("image", "video", "audio")
        assert decoder.options("image").limits == ImageLimits(4096, 4096, 16 * 1024 * 1024)
        video = decoder.options("video")
        assert (video.fps, video.num_frames, video.max_frames) == (2.0, None, 128)
        assert video.limits.max_alloc == 384 << 20
        audio = decoder.options("audio")
        assert (audio.sample_rate, audio.num_channels) == (16000, 1)
        assert audio.limits.max_duration_seconds == 600

    def test_json_round_trip(self) -> None:
        decoder = seed_decoder()
        again = MediaDecoder.from_dict(json.loads(json.dumps(decoder.to_dict())))
        assert again == decoder
        assert again.to_dict() == decoder.to_dict()

    def test_disabled_modality(self) -> None:
        decoder = MediaDecoder()
        decoder.enable_image()
        with pytest.raises(ModalityDisabled, match=r"video input is not enabled.*enabled: image"):
            decoder.options("video")

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            (
                {"fpss": 2},
                r"Unknown option 'fpss' in video\. Allowed keys: end_seconds, fps, frames_multiple",
            ),
            ({"limits": {"max_alloc": 0}}, r"video\.limits\.max_alloc must be > 0, got 0"),
            ({"fps": 2.0, "num_frames": 8}, r"fps and num_frames are mutually exclusive"),
            ({"fps": "2"}, r"video\.fps must be a number, got '2' \(str\)"),
            ({"max_frames": True}, r"video\.max_frames must be an integer, got True"),
            ({"layout": "CTHW"}, r"Invalid video\.layout \('CTHW'\)\. Supported values are"),
            ({"limits": {"max_frames": 3}}, r"Unknown option 'max_frames' in video\.limits"),
            ({"fps": float("nan")}, r"video\.fps must be finite"),
        ],
    )
    def test_bad_video_options(self, options: dict, message: str) -> None:
        with pytest.raises(InvalidOptions, match=message):
            MediaDecoder().enable_video(options)

    def test_bad_image_and_audio_options(self) -> None:
        with pytest.raises(InvalidOptions, match=r"image\.background\[1\] must be <= 255"):
            MediaDecoder().enable_image({"background": [0, 256, 0]})
        with pytest.raises(InvalidOptions, match=r"stop_seconds \(1\.0\) must be > start"):
            MediaDecoder().enable_audio({"start_seconds": 2.0, "stop_seconds": 1.0})
        with pytest.raises(InvalidOptions, match="Unknown modality 'text'"):
            MediaDecoder.from_dict({"text": {}})

    def test_options_objects_are_accepted(self) -> None:
        decoder = MediaDecoder()
        decoder.enable_video(VideoOptions(num_frames=4))
        assert decoder.options("video").num_frames == 4


class TestMediaIoKwargs:
    def test_request_overrides_defaults(self) -> None:
        video = seed_decoder().options("video", {"max_frames": 16, "strict": True})
        assert (video.fps, video.max_frames, video.strict) == (2.0, 16, True)

    def test_num_frames_replaces_fps(self) -> None:
        video = seed_decoder().options("video", {"num_frames": 8})
        assert (video.fps, video.num_frames) == (None, 8)

    def test_fps_replaces_num_frames(self) -> None:
        decoder = MediaDecoder()
        decoder.enable_video({"num_frames": 8})
        video = decoder.options("video", {"fps": 1.0})
        assert (video.fps, video.num_frames) == (1.0, None)

    def test_sampling_rule_keeps_the_mode(self) -> None:
        video = seed_decoder().options("video", {"sampling": "qwen2_vl", "min_frames": 8})
        assert (video.sampling, video.fps, video.max_frames, video.min_frames) == (
            "qwen2_vl",
            2.0,
            128,
            8,
        )

    def test_indices_replace_fps(self) -> None:
        video = seed_decoder().options("video", {"indices": [0, 10, 20]})
        assert (video.fps, video.num_frames, video.indices) == (None, None, (0, 10, 20))

    def test_fps_replaces_indices(self) -> None:
        decoder = MediaDecoder()
        decoder.enable_video({"indices": [1, 2]})
        video = decoder.options("video", {"fps": 1.0})
        assert (video.fps, video.indices) == (1.0, None)

    def test_time_window(self) -> None:
        video = seed_decoder().options("video", {"start_seconds": 0, "end_seconds": 4.5})
        assert (video.fps, video.start_seconds, video.end_seconds) == (2.0, 0, 4.5)

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (
                {"sampling": "qwen3"},
                r"Invalid media_io_kwargs\.video\.sampling \('qwen3'\)\. Supported values are "
                "'uniform', 'qwen2_vl', 'llava_onevision', 'internvl'",
            ),
            ({"indices": list(range(129))}, r"129 indices, over max_frames \(128\)"),
            ({"indices": [5, 1]}, r"media_io_kwargs\.video: indices must be strictly increasing"),
            ({"indices": [1], "fps": 1.0}, r"fps and indices are mutually exclusive"),
            ({"min_frames": 256}, r"min_frames \(256\) must be <= max_frames \(128\)"),
            ({"end_seconds": 0}, r"media_io_kwargs\.video\.end_seconds must be > 0"),
        ],
    )
    def test_bad_sampling_overrides(self, overrides: dict, message: str) -> None:
        with pytest.raises(InvalidOptions, match=message):
            seed_decoder().options("video", overrides)

    def test_sampling_options_round_trip(self) -> None:
        video = VideoOptions(sampling="internvl", indices=(1, 5), frames_multiple=2)
        assert VideoOptions.from_dict(json.loads(json.dumps(video.to_dict()))) == video

    def test_both_in_one_request_is_an_error(self) -> None:
        with pytest.raises(InvalidOptions, match="mutually exclusive"):
            seed_decoder().options("video", {"num_frames": 8, "fps": 1.0})

    def test_limits_are_refused(self) -> None:
        with pytest.raises(InvalidOptions, match=r"media_io_kwargs\.video\.limits cannot be set"):
            seed_decoder().options("video", {"limits": {"max_alloc": 1 << 40}})

    @pytest.mark.parametrize("key", ["fps", "max_frames", "num_frames"])
    def test_null_is_refused(self, key: str) -> None:
        # Before issue #14, {"fps": null, "max_frames": null} sampled every frame with no cap.
        with pytest.raises(InvalidOptions, match=rf"media_io_kwargs\.video\.{key} is null"):
            seed_decoder().options("video", {key: None})

    def test_unknown_key_is_refused(self) -> None:
        with pytest.raises(InvalidOptions, match=r"Unknown option 'fsp' in media_io_kwargs\.video"):
            seed_decoder().options("video", {"fsp": 1})

    def test_limits_survive_the_merge(self) -> None:
        decoder = seed_decoder()
        merged = decoder.options("audio", {"sample_rate": 8000})
        assert merged.limits == decoder.options("audio").limits
        assert merged == AudioOptions(sample_rate=8000, num_channels=1, limits=merged.limits)

    def test_bad_value_names_the_key(self) -> None:
        with pytest.raises(InvalidOptions, match=r"media_io_kwargs\.image\.mode"):
            seed_decoder().options("image", {"mode": "CMYK"})
