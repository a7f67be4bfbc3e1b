"""Audio -> 16 kHz mono float32: ours against soundfile + a resampler (vLLM's default path),
PyAV with its resampler, and plain torchcodec, in one run on the same files.

Note: FFmpeg's downmix (ours, PyAV, torchcodec) is (L+R)/sqrt(2); soundfile users take the
mean, 3 dB lower. Lengths agree within one sample per second.

    python -m benchmarks.audio [--quick]
"""

from __future__ import annotations

import argparse
import io

import numpy as np

from benchmarks._common import Row, interleaved, machine, report, table, versions
from dynamo_media import AudioLimits, decode_audio
from tests.media import ffmpeg

RATE = 16000
LIMITS = AudioLimits(max_duration_seconds=3600)  # the 10 min file is just over the default


def inputs(quick: bool) -> dict[str, bytes]:
    made = {
        "30 s WAV 48 kHz stereo": ffmpeg(
            "b30s.wav",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=30",
            "-ac",
            "2",
        ),
        "10 min MP3 44.1 kHz stereo": ffmpeg(
            "b10min.mp3",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=600",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
        ),
    }
    names = list(made)[:1] if quick else list(made)
    return {name: made[name].read_bytes() for name in names}


def soundfile_resample(data: bytes) -> np.ndarray:
    import soundfile
    from scipy.signal import resample_poly

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    from math import gcd

    g = gcd(RATE, rate)
    return resample_poly(mono, RATE // g, rate // g).astype(np.float32)


def pyav(data: bytes) -> np.ndarray:
    import av

    parts = []
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray() for f in resampler.resample(frame))
        parts.extend(f.to_ndarray() for f in resampler.resample(None))
    return np.concatenate(parts, axis=1)


def torchcodec_plain(data: bytes) -> object:
    from torchcodec.decoders import AudioDecoder

    return AudioDecoder(data, sample_rate=RATE, num_channels=1).get_all_samples().data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    rows = []
    for name, data in inputs(args.quick).items():
        ours = decode_audio(data, sample_rate=RATE, num_channels=1, limits=LIMITS).tensor
        theirs = soundfile_resample(data)
        seconds_of_audio = ours.shape[1] / RATE
        assert abs(ours.shape[1] - len(theirs)) <= seconds_of_audio + 1200, (
            ours.shape,
            theirs.shape,
        )
        methods = {
            "dynamo-media": lambda d=data: decode_audio(
                d, sample_rate=RATE, num_channels=1, limits=LIMITS
            ),
            "soundfile+mean+resample_poly": lambda d=data: soundfile_resample(d),
            "PyAV+AudioResampler": lambda d=data: pyav(d),
            "torchcodec plain": lambda d=data: torchcodec_plain(d),
        }
        seconds = interleaved(methods, repeats=repeats)
        speed = seconds_of_audio / seconds["dynamo-media"]  # type: ignore[operator]
        rows.append(Row(name, seconds, f"{speed:.0f}x real time"))
        print(rows[-1])
    head = (
        f"Machine: {machine()}; {versions('torch', 'torchcodec', 'soundfile', 'scipy', 'av')}\n\n"
    )
    report("audio", head + table("Audio -> 16 kHz mono float32 (median)", rows))


if __name__ == "__main__":
    main()
