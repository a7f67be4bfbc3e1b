import importlib
import pkgutil
import types

import pytest

import dynamo_media


def test_root_exports() -> None:
    assert dynamo_media.__all__ == sorted(dynamo_media.__all__)
    assert dynamo_media.__all__ == [
        "AudioLimits",
        "AudioOptions",
        "BackendNotReady",
        "BackendTimeout",
        "BackendUnavailable",
        "DecodeError",
        "DecodedMedia",
        "EncodedMedia",
        "FetchError",
        "FetchPolicy",
        "FetchTimeout",
        "ImageLimits",
        "ImageOptions",
        "InvalidOptions",
        "LimitExceeded",
        "MediaDecoder",
        "MediaError",
        "MediaFetcher",
        "ModalityDisabled",
        "NoMediaStream",
        "Overloaded",
        "PolicyError",
        "ReadError",
        "TooLarge",
        "TooManyRedirects",
        "UpstreamStatus",
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


SUBPACKAGES = {
    "backend": [
        "EchoAnswer",
        "Respond",
        "create_backend_app",
        "describe_items",
        "echo",
        "serve_worker",
    ],
    "decode": [
        "AudioProbe",
        "ImageInfo",
        "VideoProbe",
        "check_image_limits",
        "decode_audio",
        "decode_image",
        "decode_video",
        "probe_audio",
        "probe_image",
        "probe_video",
    ],
    "fetch": ["MediaFetcher"],
    "nixl": [
        "NixlAgent",
        "Region",
        "RegisteredMedia",
        "RegistrationPool",
        "decode_metadata",
        "default_pool",
        "encode_metadata",
        "get_agent",
        "read",
        "register_media",
    ],
    "server": [
        "Answer",
        "Backend",
        "Chunks",
        "DynamoBackend",
        "HttpBackend",
        "ServerConfig",
        "ServerSettings",
        "create_app",
        "create_chat",
        "default_config",
        "load_config",
        "parse_config",
        "serve_processor",
    ],
    "transforms": [
        "CheckAudioLimits",
        "CheckImageLimits",
        "CheckVideoLimits",
        "Compose",
        "DecodeAudio",
        "DecodeImage",
        "DecodeTransform",
        "DecodeVideo",
        "FetchURL",
        "NixlRegister",
        "ToCUDA",
        "ToDevice",
        "Transform",
        "build_pipeline",
        "to_device",
    ],
}


def test_every_subpackage_is_listed() -> None:
    found = {m.name for m in pkgutil.iter_modules(dynamo_media.__path__) if m.ispkg}
    assert found == set(SUBPACKAGES)


@pytest.mark.parametrize("name", sorted(SUBPACKAGES))
def test_subpackage_exports(name: str) -> None:
    module = importlib.import_module(f"dynamo_media.{name}")
    assert module.__all__ == sorted(module.__all__)
    assert module.__all__ == SUBPACKAGES[name]
    for member in module.__all__:
        assert getattr(module, member) is not None
    # Nothing else public-looking in the package's namespace: no helper imported on the side.
    others = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert others == set(module.__all__)
