"""Regression tests for the decode holes an attacker found (issue #13): each failed on the code
before its fix. The fuzzing harness (tests/fuzz/) looks for more of their kind."""

import contextlib
import io
import struct

import pytest
import torch
from PIL import Image

from dynamo_media import (
    AudioLimits,
    DecodeError,
    ImageLimits,
    LimitExceeded,
    MediaError,
    VideoLimits,
    decode_audio,
    decode_image,
    decode_video,
    probe_image,
)
from tests.fuzz.mutate import mutate
from tests.fuzz.seeds import seed_named
from tests.fuzz.target import decode
from tests.media import ffmpeg
from tests.memory import peak_delta

SMALL = ImageLimits(max_image_width=4096, max_image_height=4096, max_alloc=16 << 20)


def gif_past_its_screen(frame: int, screen: int = 10, offset: int = 0) -> bytes:
    """A one-frame GIF of ``frame``x``frame`` pixels at ``offset`` on a ``screen``x``screen``
    logical screen: decoders grow the image to hold the frame."""
    buf = io.BytesIO()
    Image.new("P", (frame, frame)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", screen, screen)
    descriptor = data.index(b",", 13)
    data[descriptor + 1 : descriptor + 5] = struct.pack("<HH", offset, offset)
    return bytes(data)


def size_change_webm() -> bytes:
    """VP9 that starts at 64x48 and switches to 320x240 at frame 10 (the header says 64x48)."""
    parts = [
        ffmpeg(
            f"vp9-{size}.webm",
            *("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10:duration=1"),
            *("-c:v", "libvpx-vp9", "-b:v", "200k"),
        )
        for size in ("64x48", "320x240")
    ]
    listing = parts[0].with_name("vp9-size-change.txt")
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = ffmpeg(
        "vp9-size-change.webm", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy"
    )
    return out.read_bytes()


class TestImageSizeIsTheCheckedSize:
    def test_gif_frame_past_the_screen_meets_the_limits(self) -> None:
        data = gif_past_its_screen(5000)
        assert (probe_image(data).width, probe_image(data).height) == (5000, 5000)
        with pytest.raises(LimitExceeded, match="5000x5000, wider than limits.max_image_width"):
            decode_image(data, limits=SMALL)

    def test_gif_bomb_costs_no_memory(self) -> None:
        result = peak_delta(
            f"""
            from dynamo_media import decode_image, ImageLimits
            from tests.test_hostile_media import gif_past_its_screen
            data = gif_past_its_screen(12000)
            limits = ImageLimits(max_image_width=16384, max_image_height=16384,
                                 max_alloc={16 << 20})
            """,
            "decode_image(data, limits=limits)",
        )
        assert result["error"].startswith("LimitExceeded: image of 12000x12000 RGB needs")
        assert result["peak_delta_mib"] < 64

    def test_offset_frame_decodes_to_the_probed_size(self) -> None:
        data = gif_past_its_screen(40, screen=30, offset=20)
        out = decode_image(data, limits=SMALL)
        assert out.tensor.shape == (3, 60, 60)
        assert (out.metadata["width"], out.metadata["height"]) == (60, 60)
        assert out.metadata["original_size"] == [60, 60]

    def test_pillow_bomb_is_a_media_error(self) -> None:
        # Pillow refuses past 2 * MAX_IMAGE_PIXELS with its own exception type at open.
        data = gif_past_its_screen(200, screen=20000)
        big = ImageLimits(max_image_width=65535, max_image_height=65535, max_alloc=1 << 40)
        with pytest.raises(DecodeError, match="Image size .* exceeds limit"):
            decode_image(data, limits=big)


class TestVideoSizeChangeMidStream:
    def test_frames_are_scaled_to_the_checked_size(self) -> None:
        out = decode_video(size_change_webm(), num_frames=20)
        assert out.tensor.shape == (20, 3, 48, 64)
        assert out.metadata["frames_indices"] == list(range(20))
        assert (out.metadata["width"], out.metadata["height"]) == (64, 64 * 3 // 4)

    def test_strict_refuses(self) -> None:
        with pytest.raises(DecodeError, match="set strict=False"):
            decode_video(size_change_webm(), num_frames=20, strict=True)

    def test_max_alloc_holds_for_the_output(self) -> None:
        limits = VideoLimits(max_alloc=20 * 64 * 48 * 3)
        out = decode_video(size_change_webm(), num_frames=20, limits=limits)
        assert out.tensor.numel() <= limits.max_alloc


class TestAudioRange:
    @pytest.mark.parametrize(
        ("name", "expr"), [("loud.wav", "3*sin(2*PI*440*t)"), ("step.wav", "-7*gt(t\\,0.2)")]
    )
    def test_float_pcm_past_full_scale_is_clipped(self, name: str, expr: str) -> None:
        wav = ffmpeg(
            name,
            *("-f", "lavfi", "-i", f"aevalsrc={expr}:d=0.5:s=16000"),
            *("-c:a", "pcm_f32le"),
        )
        out = decode_audio(wav, limits=AudioLimits())
        assert out.tensor.dtype == torch.float32
        assert out.tensor.abs().max().item() == 1.0
        assert torch.isfinite(out.tensor).all()


def raw_stream(codec: str, fmt: str, ext: str, channels: int) -> bytes:
    """One second of a 440 Hz tone at 22.05 kHz as a raw bitstream (no tags, no index)."""
    return ffmpeg(
        f"{channels}ch.{ext}",
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=1"),
        *("-ac", str(channels), "-c:a", codec, "-f", fmt),
        *(("-write_xing", "0", "-id3v2_version", "0") if fmt == "mp3" else ()),
    ).read_bytes()


def layout_switch(codec: str, fmt: str, ext: str) -> bytes:
    """A stereo stream followed by a mono one, joined at a frame boundary."""
    return raw_stream(codec, fmt, ext, 2) + raw_stream(codec, fmt, ext, 1)


SWITCHES = {
    "mp3": ("libmp3lame", "mp3", "mp3"),
    "mp2": ("mp2", "mp2", "mp2"),
    "adts": ("aac", "adts", "aac"),
}


class TestAudioLayoutSwitch:
    """torchcodec's resampler crashed the process (SIGSEGV) on these (Note [resampler crash])."""

    @pytest.mark.parametrize("name", sorted(SWITCHES))
    def test_refused_and_the_process_lives(self, name: str) -> None:
        result = peak_delta(
            f"""
            from dynamo_media import decode_audio
            from tests.test_hostile_media import SWITCHES, layout_switch
            data = layout_switch(*SWITCHES[{name!r}])
            """,
            "decode_audio(data, sample_rate=16000, num_channels=1)",
        )
        assert result["error"].startswith("DecodeError: the "), result
        assert "switches from 2 channel(s) at 22050 Hz to 1 at 22050 Hz" in result["error"]

    @pytest.mark.parametrize("name", sorted(SWITCHES))
    def test_one_layout_still_decodes(self, name: str) -> None:
        out = decode_audio(raw_stream(*SWITCHES[name], 2), sample_rate=16000, num_channels=1)
        assert out.tensor.shape[0] == 1 and abs(out.tensor.shape[1] - 16000) < 2048

    @pytest.mark.parametrize("container", ["m4a", "mkv"])
    def test_aac_in_a_container_is_not_judged_by_stray_adts_words(self, container: str) -> None:
        """AAC in MP4/Matroska has no ADTS headers: bytes that merely look like ADTS frames of
        two layouts (here in a trailing ``free`` box / Void element) refused the file."""

        def adts(rate_index: int, channels: int, length: int = 16) -> bytes:
            b2 = 0x40 | rate_index << 2 | channels >> 2  # AAC LC
            b3, b4 = (channels & 3) << 6 | length >> 11, length >> 3 & 0xFF
            header = bytes([0xFF, 0xF1, b2, b3, b4, (length & 7) << 5 | 0x1F, 0xFC])
            return header + bytes(length - 7)

        stray = adts(4, 2) * 2 + adts(0, 7) * 2  # 2 channels at 44.1 kHz, then 7 at 96 kHz
        audio = ffmpeg(f"aac.{container}", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac")
        box = (len(stray) + 8).to_bytes(4, "big") + b"free" + stray
        void = b"\xec\x01" + len(stray).to_bytes(8, "big")[1:] + stray  # 8-byte size: 0x01...
        data = audio.read_bytes() + (box if container == "m4a" else void)
        out = decode_audio(data, sample_rate=16000, num_channels=1)
        assert abs(out.tensor.shape[1] - 16000) < 2048

    def test_codec_that_can_switch_is_not_accepted(self) -> None:
        ac3 = ffmpeg("a.ac3", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "ac3")
        with pytest.raises(DecodeError, match="audio codec ac3 is not accepted"):
            decode_audio(ac3.read_bytes(), sample_rate=16000)


def riff_with_huge_info(name: str, *args: str) -> bytes:
    """An FFmpeg-made RIFF file whose ``LIST INFO`` and first item claim ~2 GB / 1.4 GB."""
    data = bytearray(ffmpeg(name, *args, "-metadata", "title=x").read_bytes())
    info = data.index(b"INFO") - 8
    data[info + 4 : info + 8] = (0x7FFFFFFF).to_bytes(4, "little")
    data[info + 16 : info + 20] = (1_430_913_072).to_bytes(4, "little")
    return bytes(data)


RIFF_BOMBS = {
    "avi": ("bomb.avi", "-f", "lavfi", "-i", "testsrc2=size=64x48:duration=0.4", "-c:v", "mjpeg"),
    "wav": ("bomb.wav", "-f", "lavfi", "-i", "sine=duration=0.4"),
}


class TestRiffHeaderSizes:
    @pytest.mark.parametrize("name", sorted(RIFF_BOMBS))
    def test_header_chunk_past_the_end_costs_nothing(self, name: str) -> None:
        decode = "decode_video(data)" if name == "avi" else "decode_audio(data)"
        result = peak_delta(
            f"""
            from dynamo_media import decode_audio, decode_video
            from tests.test_hostile_media import RIFF_BOMBS, riff_with_huge_info
            data = riff_with_huge_info(*RIFF_BOMBS[{name!r}])
            """,
            decode,
        )
        assert "'INFO' chunk claims 2147483647 bytes" in result["error"], result
        assert result["peak_delta_mib"] < 64

    def test_media_chunks_may_run_past_the_end(self) -> None:
        avi = ffmpeg(*RIFF_BOMBS["avi"]).read_bytes()
        assert decode_video(avi[: len(avi) * 2 // 3]).tensor.shape[0] >= 1  # a download cut short
        wav = bytearray(ffmpeg(*RIFF_BOMBS["wav"]).read_bytes())
        data = wav.index(b"data")
        wav[data + 4 : data + 8] = b"\xff\xff\xff\xff"  # as FFmpeg writes to a pipe
        assert decode_audio(bytes(wav)).metadata["duration_seconds"] == pytest.approx(0.4, 0.05)

    def test_lists_nested_as_deep_as_an_attacker_likes(self) -> None:
        """1,500 ``LIST`` chunks one inside the other (18 KB): the walk is a loop, not a
        recursion, so this is a WAV like any other, not a RecursionError (a 500)."""
        wav = bytearray(ffmpeg(*RIFF_BOMBS["wav"]).read_bytes())
        nested = b""
        for _ in range(1500):
            nested = b"LIST" + (4 + len(nested)).to_bytes(4, "little") + b"INFO" + nested
        data = wav.index(b"data")
        wav[data:data] = nested
        wav[4:8] = (len(wav) - 8).to_bytes(4, "little")
        with contextlib.suppress(MediaError):  # FFmpeg may refuse the tags; nothing else
            decode_audio(bytes(wav))


# What the harness found on main before issue #13 (python -m tests.fuzz --seed 777 --formats
# tiff,gif,mp4,webm,mkv,mov,avi), regenerated from (seed, mutation seed): each was a raw exception
# (a 500 from the server) or a broken output contract there.
FOUND_BEFORE = {
    "tiff-typeerror": ("testsrc2.tiff", 2641),
    "mkv-best-stream-valueerror": ("h264.mkv", 982),
    "avi-best-stream-valueerror": ("bars-mjpeg.avi", 1014),
    "mp4-metadata-jsondecodeerror": ("h264-aac.mp4", 5836),
    "gif-decompression-bomb-error": ("testsrc2.gif", 3367),
    "gif-larger-than-checked": ("testsrc2.gif", 1155),
    "avi-stack-of-two-sizes": ("mjpeg.avi", 789),
    "webm-metadata-not-the-frames-size": ("vp9-opus.webm", 2310),
}


class TestFuzzFindings:
    @pytest.mark.parametrize("case", sorted(FOUND_BEFORE))
    def test_media_error_or_a_kept_contract(self, case: str) -> None:
        name, mutation_seed = FOUND_BEFORE[case]
        seed = seed_named(name)
        with contextlib.suppress(MediaError):  # a refusal is fine; anything else fails
            decode(seed.modality, mutate(seed, mutation_seed).data)


# What the first 100,000-input campaign found after the fixes above (--seed 2000000): a crash (an
# MP3 whose last, cut-short frame is mono) and 624 MiB for a WAV whose header says 1 Hz; and the
# last one (--seed 11000000): 409 MiB for a WebM whose VP9 frame header claims 4096x61488.
FOUND_AFTER = {
    "mp3-mono-tail-sigsegv": ("tone.mp3", 2012024, "DecodeError: "),
    "wav-1-hz-upsampled": ("s16.wav", 2042592, "DecodeError: "),
    "vp9-frame-4096x61488": ("vp9.webm", 11096854, "LimitExceeded: video is 4096x61488"),
}


class TestFuzzFindingsInAChild:
    @pytest.mark.parametrize("case", sorted(FOUND_AFTER))
    def test_refused_without_a_crash_or_memory(self, case: str) -> None:
        result = peak_delta(
            f"""
            from tests.fuzz.mutate import mutate
            from tests.fuzz.seeds import seed_named
            from tests.fuzz.target import decode
            seed = seed_named({FOUND_AFTER[case][0]!r})
            data = mutate(seed, {FOUND_AFTER[case][1]}).data
            """,
            "decode(seed.modality, data)",
        )
        assert result["error"].startswith(FOUND_AFTER[case][2]), result
        assert result["peak_delta_mib"] < 64


class TestFfmpegAllocationCap:
    """Note [ffmpeg allocations]: FFmpeg allocates no frame past the limits, in any request."""

    def test_a_video_frame_bomb_in_an_audio_request_costs_no_memory(self) -> None:
        result = peak_delta(
            """
            from dynamo_media import decode_audio
            from tests.fuzz.mutate import mutate
            from tests.fuzz.seeds import seed_named
            data = mutate(seed_named("vp9.webm"), 11096854).data
            """,
            "decode_audio(data)",
        )
        assert result["error"].startswith("NoMediaStream: no audio stream"), result
        assert result["peak_delta_mib"] < 64

    def test_a_packed_rgb_frame_at_the_size_limits_still_decodes(self) -> None:
        # PNG in MOV decodes to one packed RGB plane: the widest frame the cap must admit.
        clip = ffmpeg(
            "rgb24-8192.mov",
            *("-f", "lavfi", "-i", "testsrc2=size=8192x8192:rate=1", "-frames:v", "1"),
            *("-pix_fmt", "rgb24", "-c:v", "png"),
        )
        result = peak_delta(
            """
            from dynamo_media import decode_video
            """,
            f"assert decode_video({str(clip)!r}).tensor.shape == (1, 3, 8192, 8192)",
        )
        assert result["error"] is None
