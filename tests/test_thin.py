"""Decoding below the keyframe floor (issue #16): the frames no sampled frame needs are left out
of the stream (Note [non-reference frames] in dynamo_media/decode/_thin.py), and what comes back
is bit for bit what the whole stream gives."""

import random

import pytest
import torch
from torchcodec.decoders import VideoDecoder

from dynamo_media import decode_video
from dynamo_media.decode._thin import thin
from tests.fuzz.mutate import mutate
from tests.fuzz.seeds import seed_named
from tests.media import ffmpeg, numbered_video, read_frame_number

_SOURCE = ("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=8")
_X264 = ("-c:v", "libx264", "-preset", "veryfast", "-g", "250", "-pix_fmt", "yuv420p")
_X265 = ("-c:v", "libx265", "-preset", "veryfast", "-x265-params", "log-level=error")

# Every clip here has B-frames that nothing references.
THINNED = {
    "h264.mp4": (*_SOURCE, *_X264),
    "h264-faststart.mp4": (*_SOURCE, *_X264, "-movflags", "+faststart"),
    "hevc.mp4": (*_SOURCE, *_X265, "-pix_fmt", "yuv420p", "-tag:v", "hvc1"),
    "h264-aac.mov": (*_SOURCE, "-f", "lavfi", "-i", "sine=duration=8", *_X264, "-c:a", "aac"),
}
NOT_THINNED = {
    "no-b-frames.mp4": (*_SOURCE, *_X264, "-bf", "0"),
    "vp9.webm": (*_SOURCE, "-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline", "realtime"),
    "fragmented.mp4": (*_SOURCE, *_X264, "-movflags", "frag_keyframe+empty_moov"),
}
SAMPLES = {"num_frames=8": {"num_frames": 8}, "fps=2": {"fps": 2.0}, "every 3rd": {"fps": 8.33}}


def clip(name: str) -> bytes:
    return ffmpeg(name, *{**THINNED, **NOT_THINNED}[name]).read_bytes()


def whole_stream(data: bytes, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    batch = VideoDecoder(data, seek_mode="exact").get_frames_at(indices)
    return batch.data, batch.pts_seconds


@pytest.mark.parametrize("name", sorted(THINNED))
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_thinned_frames_are_the_whole_streams_bit_for_bit(name: str, sample: str) -> None:
    data = clip(name)
    out = decode_video(data, **SAMPLES[sample])
    indices = out.metadata["frames_indices"]
    thinned = thin(data, indices, out.metadata["source_total_frames"], 320 * 240)
    assert thinned is not None and thinned.dropped > 0  # the thinned path ran
    frames, pts = whole_stream(data, indices)
    assert torch.equal(out.tensor, frames)
    assert out.metadata["pts_seconds"] == pts.tolist()


@pytest.mark.parametrize("name", sorted(THINNED))
def test_sampled_non_reference_frames_are_kept(name: str) -> None:
    data = clip(name)
    total = len(VideoDecoder(data, seek_mode="exact"))
    indices = list(range(1, total, 2))  # half of them sit on frames nothing references
    thinned = thin(data, indices, total, 320 * 240)
    assert thinned is not None
    got = VideoDecoder(thinned.open(), seek_mode="exact").get_frames_at(thinned.indices)
    assert torch.equal(got.data, whole_stream(data, indices)[0])


def test_the_frames_asked_for_come_back() -> None:
    data = numbered_video("thin-numbered.mp4", seconds=8, codec=list(_X264)).read_bytes()
    out = decode_video(data, num_frames=12)
    assert thin(data, out.metadata["frames_indices"], 200, 320 * 240) is not None
    assert [read_frame_number(f) for f in out.tensor] == out.metadata["frames_indices"]


@pytest.mark.parametrize("name", sorted(NOT_THINNED))
def test_other_streams_decode_as_before(name: str) -> None:
    data = clip(name)
    total = len(VideoDecoder(data, seek_mode="exact"))
    assert thin(data, [0, total // 2, total - 1], total, 10**9) is None
    out = decode_video(data, num_frames=5)
    assert torch.equal(out.tensor, whole_stream(data, out.metadata["frames_indices"])[0])


def test_it_declines_when_the_saving_does_not_pay_for_the_scan() -> None:
    data = clip("h264.mp4")
    assert thin(data, [0, 100, 199], 200, 320 * 240) is not None
    assert thin(data, [0, 100, 199], 200, 16) is None  # 16-pixel frames: nothing worth saving


def test_a_wrong_frame_count_declines() -> None:
    assert thin(clip("h264.mp4"), [0, 100], 199, 10**9) is None


@pytest.mark.parametrize("name", ["h264.mp4", "h264-aac.mp4", "h264.mov"])
def test_mutated_tables_never_raise(name: str) -> None:
    """The sample tables are attacker bytes: a mutant is thinned or declined, never an error."""
    seed = seed_named(name)
    total = len(VideoDecoder(seed.data, seek_mode="exact"))
    thinned = 0
    for mutation in range(300):
        result = thin(mutate(seed, mutation).data, [0, total // 2, total - 1], total, 10**9)
        thinned += result is not None
    assert thinned > 0  # the mutants reach the rewrite, not only the first checks


# The kinds of stream the property below covers (issue #16); each made by FFmpeg.
PROPERTY_CLIPS = {
    "b-pyramid": lambda: ffmpeg("pyramid.mp4", *_SOURCE, "-c:v", "libx264", "-preset", "medium"),
    "open-gop": lambda: ffmpeg(
        "open-gop.mp4", *_SOURCE, *_X264, "-x264-params", "open-gop=1:keyint=50"
    ),
    "no-b-frames": lambda: ffmpeg("no-b-frames.mp4", *NOT_THINNED["no-b-frames.mp4"]),
    "hevc": lambda: ffmpeg("hevc.mp4", *THINNED["hevc.mp4"]),
    "vp9": lambda: ffmpeg("vp9.webm", *NOT_THINNED["vp9.webm"]),
    "variable-rate": lambda: ffmpeg(
        "thin-vfr.mp4",
        *_SOURCE,
        *("-vf", "setpts='if(lt(N,80),N/25,3.2+(N-80)/10)/TB'", "-fps_mode", "vfr"),
        *_X264,
    ),
    "rotated": lambda: ffmpeg(
        "rotated.mp4",
        "-i",
        str(ffmpeg("h264.mp4", *THINNED["h264.mp4"])),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
    ),
    "edit-list": lambda: ffmpeg(
        "edit-list.mp4",
        "-ss",
        "1.3",
        "-i",
        str(ffmpeg("h264.mp4", *THINNED["h264.mp4"])),
        "-c",
        "copy",
    ),
    "cut-mid-gop": lambda: ffmpeg(
        "cut-mid-gop.mp4",
        "-i",
        str(ffmpeg("h264.mp4", *THINNED["h264.mp4"])),
        "-t",
        "3.3",
        "-c",
        "copy",
    ),
}


@pytest.mark.parametrize("kind", sorted(PROPERTY_CLIPS))
def test_any_sample_gives_the_whole_streams_frames(kind: str) -> None:
    """Property: for random sample sets, the thinned stream (forced to apply wherever it can)
    and decode_video give the exact whole-stream frames, indices and timestamps."""
    data = PROPERTY_CLIPS[kind]().read_bytes()
    total = len(VideoDecoder(data, seek_mode="exact"))
    rng = random.Random(kind)
    for _ in range(8):
        indices = sorted(rng.sample(range(total), rng.randint(1, min(32, total))))
        frames, pts = whole_stream(data, indices)
        out = decode_video(data, indices=indices)
        assert torch.equal(out.tensor, frames)
        assert (out.metadata["frames_indices"], out.metadata["pts_seconds"]) == (
            indices,
            pts.tolist(),
        )
        thinned = thin(data, indices, total, 10**9)
        if thinned is not None:
            got = VideoDecoder(thinned.open(), seek_mode="exact").get_frames_at(thinned.indices)
            assert torch.equal(got.data, frames) and torch.equal(got.pts_seconds, pts)


def test_junk_after_the_sample_tables_declines_not_500() -> None:
    """4 stray bytes at the end of the video ``trak`` (FFmpeg reads the file): the rewrite
    walks boxes the table parse never reached, and must decline there too."""
    data = bytearray(clip("h264.mp4"))
    moov = data.index(b"moov") - 4
    trak = data.index(b"trak", moov) - 4
    trak_end = trak + int.from_bytes(data[trak : trak + 4], "big")
    data[trak_end:trak_end] = b"\0\0\0\x09"  # a box header that runs past its parent
    for at in (moov, trak):
        data[at : at + 4] = (int.from_bytes(data[at : at + 4], "big") + 4).to_bytes(4, "big")
    data = bytes(data)
    assert thin(data, [0, 100, 199], 200, 10**9) is None
    out = decode_video(data, num_frames=3)
    assert torch.equal(out.tensor, whole_stream(data, out.metadata["frames_indices"])[0])
