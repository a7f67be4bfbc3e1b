"""Video: 32 frames uniformly sampled, ours against what users run today, in one run.

Peers: OpenCV's grab()/retrieve() loop (vLLM's default loader), PyAV decoding every frame (HF's
default), decord ``get_batch``, plain torchcodec (exact mode, its default single thread), and HF
transformers' ``load_video`` with its PyAV and torchcodec backends and its own frame choice. The
"keyframe floor" is the cheapest decode every peer can reach: PyAV seeking to each sampled frame's
keyframe only when it is ahead, decoding forward with automatic threads, and converting only the
sampled frames to RGB; the note counts the frames that decodes. Ours goes below it: frames that no
sampled frame references are left out of the stream (Note [non-reference frames]).

    python -m benchmarks.video [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np

from benchmarks._common import Row, interleaved, machine, report, versions
from benchmarks.clips import VIDEO_CLIPS
from dynamo_media import decode_video, probe_video
from dynamo_media.decode._thin import thin
from dynamo_media.sampling import sample_frame_indices
from tests.media import numbered_video
from tests.memory import peak_delta

N = 32


def opencv_grab(path: Path, indices: list[int]) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    wanted, frames = set(indices), []
    for i in range(indices[-1] + 1):
        if not cap.grab():
            break
        if i in wanted:
            _, bgr = cap.retrieve()
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def pyav_decode_all(data: bytes, indices: list[int]) -> list[np.ndarray]:
    import av

    wanted, frames = set(indices), []
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= indices[-1]:
                break
    return frames


def decord_batch(data: bytes, indices: list[int]) -> np.ndarray:
    import decord

    return decord.VideoReader(io.BytesIO(data)).get_batch(indices).asnumpy()


def torchcodec_plain(data: bytes, indices: list[int]) -> object:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(data).get_frames_at(indices).data


def hf_load_video(path: Path, backend: str) -> object:
    from transformers.video_utils import load_video

    return load_video(str(path), num_frames=N, backend=backend)


def selection_table() -> str:
    """Which frames each stack picks for the same request, on a 100-frame clip."""
    from transformers.video_utils import load_video

    clip = numbered_video("hundred.mp4", seconds=4.0)  # 100 frames at 25 fps
    rows = ["| stack | frames chosen for num_frames=8 of 100 |", "|---|---|"]
    rows.append(f"| dynamo-media | {sample_frame_indices(100, None, num_frames=8)} |")
    _, meta = load_video(str(clip), num_frames=8, backend="pyav")
    rows.append(f"| HF load_video (default rule) | {[int(i) for i in meta.frames_indices]} |")
    vllm = np.linspace(0, 99, 8, dtype=int).tolist()
    rows.append(f"| vLLM OpenCV loader (linspace, truncated) | {vllm} |")
    return "\n".join(["### Frame choice for the same request", "", *rows, ""])


def pyav_floor(data: bytes, indices: list[int], key_frames: list[int]) -> list[np.ndarray]:
    """Seek only where the next sample's keyframe is ahead; convert only the samples."""
    import av

    frames: list[np.ndarray] = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = len(os.sched_getaffinity(0))
        pos = -1
        it = None
        for target in indices:
            key = max(k for k in key_frames if k <= target)
            if it is None or key > pos:
                container.seek(int(key / stream.average_rate / stream.time_base), stream=stream)
                it, pos = container.decode(stream), key - 1
            for frame in it:
                pos += 1
                if pos == target:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    break
    return frames


def bench_clip(name: str, path: Path, repeats: int) -> Row:
    from torchcodec.decoders import Demuxer

    data = path.read_bytes()
    probe = probe_video(data, num_frames=N)
    indices = probe.frames_indices
    key_frames = Demuxer(data).streams[0].scan().key_frame_indices.tolist()
    ours = decode_video(data, num_frames=N).tensor
    # Every method returns the same frames (checked once, outside the timing).
    assert np.array_equal(ours.numpy(), torchcodec_plain(data, indices).numpy())
    methods = {
        "dynamo-media": lambda: decode_video(data, num_frames=N),
        "OpenCV grab loop (vLLM)": lambda: opencv_grab(path, indices),
        "PyAV decode all (HF)": lambda: pyav_decode_all(data, indices),
        "decord get_batch": lambda: decord_batch(data, indices),
        "torchcodec plain": lambda: torchcodec_plain(data, indices),
        "HF load_video (PyAV)": lambda: hf_load_video(path, "pyav"),
        "HF load_video (torchcodec)": lambda: hf_load_video(path, "torchcodec"),
        "keyframe floor (PyAV)": lambda: pyav_floor(data, indices, key_frames),
    }
    seconds = interleaved(methods, repeats=repeats)
    thinned = thin(data, indices, probe.total_frames, probe.out_width * probe.out_height)
    left_out = f"; ours leaves out {thinned.dropped} unneeded frames" if thinned else ""
    peak = peak_delta(
        f"from dynamo_media import decode_video; data = open({str(path)!r}, 'rb').read()",
        f"decode_video(data, num_frames={N})",
    )["peak_delta_mib"]
    output = ours.numel() / 2**20
    note = (
        f"{probe.frames_to_decode} of {probe.total_frames} frames from the keyframes{left_out}; "
        f"ours peaks at +{peak:.0f} MiB for {output:.0f} MiB of frames"
    )
    return Row(name, seconds, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short clip, one run")
    args = parser.parse_args()
    clips = list(VIDEO_CLIPS.items())[:1] if args.quick else list(VIDEO_CLIPS.items())
    repeats = 1 if args.quick else 3
    rows = []
    for name, make in clips:
        rows.append(bench_clip(name, make(), repeats))
        print(rows[-1])
    text = table_text(rows)
    report("video", text)


def table_text(rows: list[Row]) -> str:
    from benchmarks._common import table

    peers = versions("torch", "torchcodec", "cv2", "av", "decord", "transformers")
    head = f"Machine: {machine()}; {peers}\n\n"
    text = table(f"Video, {N} frames uniformly sampled (median seconds)", rows, unit="s")
    return head + text + "\n" + selection_table()


if __name__ == "__main__":
    main()
