import dynamo_media
import dynamo_media.fetch
import dynamo_media.transforms


def test_root_exports() -> None:
    assert dynamo_media.__all__ == sorted(dynamo_media.__all__)
    assert dynamo_media.__all__ == [
        "AudioLimits",
        "AudioOptions",
        "BackendUnavailable",
        "DecodeError",
        "DecodedMedia",
        "EncodedMedia",
        "FetchError",
        "FetchPolicy",
        "ImageLimits",
        "ImageOptions",
        "InvalidOptions",
        "LimitExceeded",
        "MediaDecoder",
        "MediaError",
        "MediaFetcher",
        "ModalityDisabled",
        "Overloaded",
        "PolicyError",
        "ReadError",
        "VideoLimits",
        "VideoOptions",
        "decode_audio",
        "decode_image",
        "decode_video",
        "probe_audio",
        "probe_image",
        "probe_video",
        "sample_frame_indices",
        "tensor_sha256",
    ]
    for name in dynamo_media.__all__:
        assert getattr(dynamo_media, name) is not None


def test_transforms_exports() -> None:
    assert dynamo_media.transforms.__all__ == sorted(dynamo_media.transforms.__all__)
    assert dynamo_media.transforms.__all__ == [
        "CheckAudioLimits",
        "CheckImageLimits",
        "CheckVideoLimits",
        "Compose",
        "DecodeAudio",
        "DecodeImage",
        "DecodeTransform",
        "DecodeVideo",
        "DecodedMedia",
        "EncodedMedia",
        "FetchURL",
        "NixlRegister",
        "ToCUDA",
        "ToDevice",
        "Transform",
        "build_pipeline",
        "to_device",
    ]


def test_subpackages_sorted() -> None:
    for module in (dynamo_media.fetch, dynamo_media.decode):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name)
