import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamo_media import (
    AudioLimits,
    DecodeError,
    EncodedMedia,
    InvalidOptions,
    LimitExceeded,
    MediaDecoder,
    MediaFetcher,
    decode_audio,
    probe_audio,
)
from dynamo_media.transforms import CheckAudioLimits, Compose, DecodeAudio
from tests.conftest import DEVICES
from tests.media import ffmpeg
from tests.media_server import MediaServer
from tests.memory import peak_delta


def tone(
    name: str,
    *codec: str,
    seconds: float = 3.0,
    freq: int = 440,
    rate: int = 44100,
    channels: int = 2,
) -> bytes:
    """A sine of ``freq`` Hz, ``seconds`` long, encoded as ``name``'s container with ``codec``."""
    return ffmpeg(
        name,
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}",
        "-ac",
        str(channels),
        *codec,
    ).read_bytes()


def peak_hz(samples: torch.Tensor, rate: int) -> float:
    mono = samples.mean(dim=0).numpy()
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rate)[spectrum.argmax()])


FORMATS = {
    "wav-s16": ("s16.wav", "-c:a", "pcm_s16le"),
    "wav-s24": ("s24.wav", "-c:a", "pcm_s24le"),
    "wav-s32": ("s32.wav", "-c:a", "pcm_s32le"),
    "wav-f32": ("f32.wav", "-c:a", "pcm_f32le"),
    "mp3": ("a.mp3", "-c:a", "libmp3lame", "-b:a", "128k"),
    "flac": ("a.flac", "-c:a", "flac"),
    "vorbis": ("a.ogg", "-c:a", "libvorbis"),
    "opus": ("a.opus", "-c:a", "libopus", "-ar", "48000"),
    "aac-m4a": ("a.m4a", "-c:a", "aac"),
}


class TestDecodeAudio:
    @pytest.mark.parametrize("name", sorted(FORMATS))
    def test_formats_resampled_to_16k_mono(self, name: str) -> None:
        data = tone(*FORMATS[name])
        out = decode_audio(data, sample_rate=16000, num_channels=1)
        assert out.tensor.dtype == torch.float32 and out.tensor.shape[0] == 1
        assert abs(out.tensor.shape[1] - 3 * 16000) <= 3 + (1024 if "aac" in name else 0)
        assert peak_hz(out.tensor, 16000) == pytest.approx(440, abs=2)
        assert out.tensor.abs().max() <= 1.0
        assert out.metadata["sample_rate"] == 16000 and out.metadata["num_channels"] == 1

    @pytest.mark.parametrize(
        ("name", "codec"),
        [("v.mp4", ("-c:a", "aac")), ("v.webm", ("-c:a", "libopus"))],
    )
    def test_audio_track_of_a_video(self, name: str, codec: tuple[str, ...]) -> None:
        data = ffmpeg(
            name,
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000:duration=2",
            *codec,
            "-shortest",
        ).read_bytes()
        out = decode_audio(data, sample_rate=16000, num_channels=1)
        assert peak_hz(out.tensor, 16000) == pytest.approx(1000, abs=3)

    def test_native_rate_and_channels(self) -> None:
        out = decode_audio(tone(*FORMATS["wav-s16"]))
        assert out.tensor.shape == (2, 3 * 44100)
        assert out.metadata == {
            "sample_rate": 44100,
            "num_channels": 2,
            "duration_seconds": 3.0,
            "source_codec": "pcm_s16le",
            "source_sample_rate": 44100,
            "source_num_channels": 2,
            "layout": "CN",
        }

    def test_length_within_one_sample_per_second(self) -> None:
        for rate in (8000, 16000, 22050, 48000):
            out = decode_audio(tone(*FORMATS["flac"]), sample_rate=rate)
            assert abs(out.tensor.shape[1] - 3 * rate) <= 3

    def test_stereo_downmix_is_ffmpegs(self) -> None:
        # Left 440 Hz, right 880 Hz: the mono mix holds both, each at 1/sqrt(2) of its level.
        data = ffmpeg(
            "lr.wav",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=16000:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=880:sample_rate=16000:duration=1",
            "-filter_complex",
            "[0][1]amerge=inputs=2",
            "-c:a",
            "pcm_f32le",
        ).read_bytes()
        stereo = decode_audio(data).tensor
        mono = decode_audio(data, num_channels=1).tensor
        assert stereo.shape[0] == 2 and mono.shape[0] == 1
        expected = (stereo[0] + stereo[1]) / np.sqrt(2)
        assert torch.allclose(mono[0], expected, atol=1e-4)

    def test_window_and_layout(self) -> None:
        data = tone(*FORMATS["wav-f32"], rate=16000)
        out = decode_audio(data, start_seconds=1.0, stop_seconds=2.5, layout="NC")
        assert out.tensor.shape == (24000, 2)
        full = decode_audio(data).tensor
        assert torch.equal(out.tensor.t(), full[:, 16000:40000])

    def test_long_file_decodes_in_chunks_without_seams(self) -> None:
        data = tone("long.flac", "-c:a", "flac", seconds=75, rate=16000, channels=1)
        out = decode_audio(data, sample_rate=8000)
        assert out.tensor.shape[1] == 75 * 8000
        whole = torch.from_numpy(
            np.sin(2 * np.pi * 440 * np.arange(75 * 16000) / 16000).astype(np.float32)
        )
        assert peak_hz(out.tensor, 8000) == pytest.approx(440, abs=1)
        native = decode_audio(data).tensor[0]
        assert (native - whole * native.abs().max()).abs().max() < 0.01  # no seam at 30 s, 60 s

    @pytest.mark.parametrize("device", DEVICES)
    def test_devices(self, device: str) -> None:
        out = decode_audio(tone(*FORMATS["mp3"]), sample_rate=16000, device=device)
        assert out.tensor.device.type == device


def _xing_frames(data: bytes, frames: int) -> bytes:
    """Rewrites the frame count in an MP3's Xing/Info header (what FFmpeg takes as duration)."""
    at = max(data.find(b"Xing"), data.find(b"Info"))
    assert at > 0 and struct.unpack(">I", data[at + 4 : at + 8])[0] & 1
    return data[: at + 8] + struct.pack(">I", frames) + data[at + 12 :]


class TestAudioLimits:
    def test_duration_and_alloc_from_the_header(self) -> None:
        data = tone(*FORMATS["mp3"])
        with pytest.raises(LimitExceeded, match=r"audio lasts 3\.0 s, over limits"):
            decode_audio(data, limits=AudioLimits(max_duration_seconds=2.0))
        with pytest.raises(LimitExceeded, match=r"2 channel\(s\) at 44100 Hz, 1\.0 MiB of float"):
            decode_audio(data, limits=AudioLimits(max_alloc=1 << 20))
        # The same clip fits once downmixed and resampled.
        assert decode_audio(
            data, sample_rate=16000, num_channels=1, limits=AudioLimits(max_alloc=1 << 20)
        ).tensor.numel()

    def test_header_claiming_far_more_than_it_holds(self) -> None:
        claims_hours = _xing_frames(tone(*FORMATS["mp3"]), 10_000_000)  # ~72 hours
        roomy = AudioLimits(max_duration_seconds=1e9, max_alloc=1 << 50)
        assert probe_audio(claims_hours, limits=roomy).duration_seconds == pytest.approx(261224.5)
        with pytest.raises(LimitExceeded, match="audio lasts 261224.5 s"):
            decode_audio(claims_hours)

    def test_header_claiming_far_less_than_it_holds(self, tmp_path: Path) -> None:
        long = tone("hidden.mp3", "-c:a", "libmp3lame", "-b:a", "32k", seconds=120, channels=1)
        claims_a_second = _xing_frames(long, 38)
        meta_seconds = probe_audio(claims_a_second).duration_seconds
        assert meta_seconds is not None and meta_seconds < 1.1
        with pytest.raises(LimitExceeded, match="decodes to more than its header says"):
            decode_audio(claims_a_second, limits=AudioLimits(max_duration_seconds=45))
        (tmp_path / "hidden.mp3").write_bytes(claims_a_second)
        result = peak_delta(
            setup=f"""
                from dynamo_media import AudioLimits, decode_audio
                data = open({str(tmp_path / "hidden.mp3")!r}, "rb").read()
                limits = AudioLimits(max_duration_seconds=45)
                decode_audio(data, stop_seconds=1.0)  # warm up
            """,
            body="decode_audio(data, limits=limits)",
        )
        assert result["error"].startswith("LimitExceeded")
        # 45 s + one 30 s chunk of 44.1 kHz mono float32 is 13 MiB at most
        assert result["peak_delta_mib"] < 40

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"", "empty audio data"),
            (b"definitely not audio" * 50, "no audio stream FFmpeg can read"),
        ],
    )
    def test_not_audio(self, data: bytes, message: str) -> None:
        with pytest.raises(DecodeError, match=message):
            decode_audio(data)

    def test_truncated_file_keeps_what_decodes(self) -> None:
        data = tone(*FORMATS["mp3"])
        out = decode_audio(data[: len(data) // 2], sample_rate=16000)
        assert 0.5 * 16000 < out.tensor.shape[1] < 2.5 * 16000
        assert peak_hz(out.tensor, 16000) == pytest.approx(440, abs=3)

    def test_video_without_audio(self) -> None:
        silent = ffmpeg("silent.mp4", "-f", "lavfi", "-i", "testsrc2=size=64x64:duration=0.5")
        with pytest.raises(DecodeError, match="no audio stream"):
            decode_audio(silent.read_bytes())


class TestTransforms:
    def test_check_then_decode(self) -> None:
        enc = EncodedMedia.from_bytes(tone(*FORMATS["flac"]), mime="audio/flac")
        checked = CheckAudioLimits(sample_rate=16000, num_channels=1)(enc)
        assert checked.probe.sample_rate == 16000 and checked.probe.source_sample_rate == 44100
        out = DecodeAudio(sample_rate=16000, num_channels=1)(checked)
        assert out.tensor.shape == (1, 48000) and out.content_hash is not None
        with pytest.raises(LimitExceeded):
            CheckAudioLimits(AudioLimits(max_duration_seconds=1.0))(enc)

    def test_check_and_decode_cannot_disagree(self) -> None:
        # Checked at 8 kHz, decoded at 16 kHz: this returned 8 kHz audio before issue #14.
        enc = EncodedMedia.from_bytes(tone(*FORMATS["flac"]), mime="audio/flac")
        pipe = Compose([CheckAudioLimits(sample_rate=8000), DecodeAudio(sample_rate=16000)])
        assert "CheckAudioLimits(sample_rate=8000" in repr(pipe)
        with pytest.raises(InvalidOptions, match="sample_rate=8000 vs 16000"):
            pipe(enc)

    def test_bad_options_at_construction(self) -> None:
        with pytest.raises(InvalidOptions, match=r"AudioOptions.sample_rate must be > 0"):
            DecodeAudio(sample_rate=0)
        with pytest.raises(InvalidOptions, match="must be > start_seconds"):
            DecodeAudio(start_seconds=2.0, stop_seconds=1.0)

    def test_pipeline(self, server: MediaServer, fetcher: MediaFetcher) -> None:
        decoder = MediaDecoder()
        decoder.enable_audio({"sample_rate": 16000, "num_channels": 1})
        pipe = decoder.pipeline("audio", fetcher=fetcher)
        assert repr(pipe).endswith(
            " -> CheckAudioLimits(sample_rate=16000, num_channels=1, max_duration_seconds=600.0, "
            "max_alloc='256.0 MiB')\n"
            " -> DecodeAudio(sample_rate=16000, num_channels=1)\n)"
        )
        out = pipe(server.url(server.add("t.mp3", tone(*FORMATS["mp3"]), "audio/mpeg")))
        assert peak_hz(out.tensor, 16000) == pytest.approx(440, abs=2)
