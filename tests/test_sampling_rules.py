"""The sampling rules of issue #21 (Note [sampling rules] in ``sampling.py``), as pure functions.

Each rule is checked against its formula written out again here in exact rational arithmetic,
and, where transformers is importable, against HF's own sampler on the same inputs.
"""

import math
from fractions import Fraction

import pytest

from dynamo_media import InvalidOptions, VideoOptions, sample_frame_indices
from dynamo_media.sampling import RULES, SAMPLING_RULES, num_samples, window_frames

# --- The formulas, written independently of sampling.py -------------------------------------


def uniform_positions(total: int, n: int) -> list[int]:
    """DESIGN.md: floor(k*(T-1)/(n-1) + 1/2), [0] for one frame."""
    if n == 1:
        return [0]
    return [math.floor(Fraction(k * (total - 1), n - 1) + Fraction(1, 2)) for k in range(n)]


def start_positions(total: int, n: int) -> list[int]:
    """HF Qwen2-VL / LLaVA-OneVision: arange(0, T, T/n), truncated."""
    step = Fraction(total, n)
    return [math.floor(k * step) for k in range(n)]


def centre_positions(total: int, n: int) -> list[int]:
    """HF InternVL (initial_shift=True): arange(T/n/2, T, T/n), truncated."""
    step = Fraction(total, n)
    return [math.floor(step / 2 + k * step) for k in range(n)]


POSITIONS = {
    "uniform": uniform_positions,
    "qwen2_vl": start_positions,
    "llava_onevision": start_positions,
    "internvl": centre_positions,
}


def reference_count(
    rule: str, total: int, duration: float, fps: float | None, num_frames: int | None
) -> int:
    """Note [frame count], with the rule's defaults (qwen2_vl: at least 4, pairs, rounded down)."""
    low, multiple = (4, 2) if rule == "qwen2_vl" else (1, 1)
    if num_frames is not None:
        n = num_frames
    elif fps is not None:
        n = max(1, math.floor(duration * fps), min(low, total))
    else:
        n = total
    n = min(n, total)
    return n if n < multiple else n - n % multiple


# (T, duration_seconds, fps, num_frames): ties, n > T, counts below one frame, short clips.
CASES = [
    (50, 2.0, 2.0, None),  # the numbered test clip at 2 fps
    (50, 2.0, 2.5, None),  # duration*fps == 5 exactly
    (50, 2.0, 0.1, None),  # below one frame: 1 (qwen2_vl: 4)
    (50, 2.0, 30.0, None),  # fps over the source's: n > T clamps to T
    (50, 2.0, None, 7),  # odd count: qwen2_vl rounds down to 6
    (50, 2.0, None, 80),  # n > T
    (50, 2.0, None, 50),  # n == T
    (6, 0.24, None, 3),  # uniform tie: k*(T-1)/(n-1) = 2.5
    (10, 0.4, None, 5),  # start ties: k*T/n integral
    (6, 0.24, None, 2),  # centre ties: (2k+1)*T/(2n) integral
    (4, 0.16, None, 4),
    (3, 0.12, 0.5, None),  # shorter than qwen2_vl's 4 frames: 3, then rounded down to 2
    (1, 0.04, 2.0, None),  # one frame
    (1, 0.04, None, 1),
    (59, 2.36, 25.0, None),  # n = T - 1 = 58 for qwen2_vl (see test_hf_float_artifact)
    (250, 10.0, 0.5, None),
    (1801, 60.04, 2.0, None),
    (18000, 600.0, None, 128),
]


@pytest.mark.parametrize("rule", SAMPLING_RULES)
@pytest.mark.parametrize(("total", "duration", "fps", "num_frames"), CASES)
def test_rule_matches_its_formula(
    rule: str, total: int, duration: float, fps: float | None, num_frames: int | None
) -> None:
    n = reference_count(rule, total, duration, fps, num_frames)
    got = sample_frame_indices(total, duration, sampling=rule, fps=fps, num_frames=num_frames)
    assert got == POSITIONS[rule](total, n)
    assert num_samples(total, duration, sampling=rule, fps=fps, num_frames=num_frames) == n
    assert got == sorted(set(got)) and got[0] >= 0 and got[-1] < total


@pytest.mark.parametrize(
    ("rule", "total", "kwargs", "expected"),
    [
        ("uniform", 50, {"fps": 2.0}, [0, 16, 33, 49]),
        ("qwen2_vl", 50, {"fps": 2.0}, [0, 12, 25, 37]),
        ("llava_onevision", 50, {"fps": 2.0}, [0, 12, 25, 37]),
        ("internvl", 50, {"fps": 2.0}, [6, 18, 31, 43]),
        ("uniform", 6, {"num_frames": 3}, [0, 3, 5]),  # the tie rounds up
        ("qwen2_vl", 50, {"fps": 0.5}, [0, 12, 25, 37]),  # min_frames 4
        ("qwen2_vl", 50, {"num_frames": 7}, [0, 8, 16, 25, 33, 41]),  # 7 rounded down to 6
        ("qwen2_vl", 3, {"fps": 0.5}, [0, 1]),
        ("qwen2_vl", 1, {"fps": 2.0}, [0]),
        ("internvl", 6, {"num_frames": 3}, [1, 3, 5]),
        ("llava_onevision", 5, {"num_frames": 8}, [0, 1, 2, 3, 4]),  # n > T clamps
    ],
)
def test_table(rule: str, total: int, kwargs: dict, expected: list[int]) -> None:
    assert sample_frame_indices(total, total / 25, sampling=rule, **kwargs) == expected


class TestCountOptions:
    def test_min_frames_raises_an_fps_count_as_far_as_the_video_goes(self) -> None:
        assert num_samples(50, 2.0, fps=0.5, min_frames=6) == 6
        assert num_samples(5, 0.2, fps=0.5, min_frames=6) == 5
        assert num_samples(50, 2.0, num_frames=2, min_frames=6) == 2  # num_frames is exact

    def test_rule_defaults_can_be_turned_off(self) -> None:
        assert num_samples(50, 2.0, sampling="qwen2_vl", fps=0.5) == 4
        assert num_samples(50, 2.0, sampling="qwen2_vl", fps=0.5, min_frames=1) == 1
        assert num_samples(50, 2.0, sampling="qwen2_vl", num_frames=7, frames_multiple=1) == 7

    def test_frames_multiple_rounds_down_after_the_caps(self) -> None:
        assert num_samples(50, 2.0, num_frames=11, frames_multiple=4) == 8
        assert num_samples(50, 2.0, fps=25.0, max_frames=10, frames_multiple=4) == 8
        assert num_samples(3, 0.12, num_frames=3, frames_multiple=4) == 3  # below one multiple
        assert num_samples(50, 2.0, sampling="qwen2_vl", max_frames=9) == 8

    def test_strict_refuses_before_rounding(self) -> None:
        with pytest.raises(InvalidOptions, match="80 frames requested but the video has only 50"):
            sample_frame_indices(50, 2.0, sampling="internvl", num_frames=80, strict=True)

    def test_rule_table_defaults(self) -> None:
        assert {name: (r.min_frames, r.frames_multiple) for name, r in RULES.items()} == {
            "uniform": (None, None),
            "qwen2_vl": (4, 2),
            "llava_onevision": (None, None),
            "internvl": (None, None),
        }


class TestIndices:
    def test_explicit_indices_are_returned_as_given(self) -> None:
        assert sample_frame_indices(50, 2.0, indices=[3, 7, 49]) == [3, 7, 49]
        # the rule and its count options do not apply to explicit indices
        assert sample_frame_indices(50, 2.0, sampling="qwen2_vl", indices=[3]) == [3]

    def test_past_the_end(self) -> None:
        assert sample_frame_indices(50, 2.0, indices=[3, 49, 50, 90]) == [3, 49]
        with pytest.raises(InvalidOptions, match=r"indices up to 90 .* only 50 frames"):
            sample_frame_indices(50, 2.0, indices=[3, 90], strict=True)
        with pytest.raises(InvalidOptions, match="send smaller indices"):
            sample_frame_indices(50, 2.0, indices=[50])


PTS = tuple(i / 25 for i in range(50))  # the numbered clip's timestamps


class TestWindow:
    def test_half_open(self) -> None:
        assert window_frames(PTS, 13 / 25, 37 / 25) == range(13, 37)
        assert window_frames(PTS, 0.5, 1.5) == range(13, 38)
        assert window_frames(PTS, None, 0.1) == range(0, 3)
        assert window_frames(PTS, 1.9, None) == range(48, 50)

    @pytest.mark.parametrize("rule", SAMPLING_RULES)
    def test_rule_runs_on_the_window(self, rule: str) -> None:
        # [0.5, 1.5): frames 13..37, 25 of them over 1.0 s
        got = sample_frame_indices(
            50,
            2.0,
            sampling=rule,
            num_frames=5,
            start_seconds=0.5,
            end_seconds=1.5,
            pts_seconds=PTS,
        )
        assert got == [13 + i for i in POSITIONS[rule](25, 4 if rule == "qwen2_vl" else 5)]

    def test_fps_counts_the_window_duration(self) -> None:
        kwargs = {"fps": 4.0, "pts_seconds": PTS}
        assert len(sample_frame_indices(50, 2.0, start_seconds=0.5, end_seconds=1.5, **kwargs)) == 4
        # clipped to the stream: [1.0, 2.0) of a 2.0 s clip is 1.0 s
        assert len(sample_frame_indices(50, 2.0, start_seconds=1.0, end_seconds=9.0, **kwargs)) == 4

    def test_empty_window(self) -> None:
        with pytest.raises(
            InvalidOptions, match=r"no frame starts in \[start_seconds, end_seconds\)"
        ):
            sample_frame_indices(50, 2.0, start_seconds=5.0, pts_seconds=PTS)
        with pytest.raises(InvalidOptions, match=r"has only 25"):
            sample_frame_indices(
                50,
                2.0,
                num_frames=30,
                start_seconds=0.5,
                end_seconds=1.5,
                pts_seconds=PTS,
                strict=True,
            )

    def test_window_needs_the_timestamps(self) -> None:
        with pytest.raises(ValueError, match="pts_seconds"):
            sample_frame_indices(50, 2.0, start_seconds=0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 2.0, "indices": [1]}, r"fps and indices are mutually exclusive"),
        ({"num_frames": 2, "indices": [1]}, r"num_frames and indices are mutually exclusive"),
        ({"indices": [3, 1]}, r"indices must be strictly increasing, got \[3, 1\]"),
        ({"indices": [2, 2]}, r"strictly increasing"),
        ({"indices": []}, r"indices is empty"),
        ({"indices": [-1]}, r"VideoOptions\.indices\[0\] must be >= 0, got -1"),
        ({"indices": [1, 2, 3], "max_frames": 2}, r"3 indices, over max_frames \(2\)"),
        ({"indices": [1], "start_seconds": 1.0}, r"indices and start_seconds/end_seconds"),
        ({"start_seconds": 2.0, "end_seconds": 1.0}, r"end_seconds \(1\.0\) must be > start"),
        ({"start_seconds": -1.0}, r"start_seconds must be >= 0"),
        ({"min_frames": 8, "max_frames": 4}, r"min_frames \(8\) must be <= max_frames \(4\)"),
        ({"frames_multiple": 4, "max_frames": 2}, r"frames_multiple \(4\) must be <= max_frames"),
        ({"frames_multiple": 0}, r"VideoOptions\.frames_multiple must be > 0"),
        ({"sampling": "qwen3_vl"}, r"Invalid VideoOptions\.sampling \('qwen3_vl'\)\. Supported"),
    ],
)
def test_bad_combinations_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        VideoOptions(**kwargs)
    with pytest.raises(InvalidOptions, match=message):
        sample_frame_indices(50, 2.0, **kwargs)


# --- Against transformers' own samplers ------------------------------------------------------


@pytest.fixture(scope="module")
def hf() -> dict:
    """Each rule's HF sampler as (T, duration, fps, num_frames) -> indices; skipped without HF."""
    pytest.importorskip("transformers")
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    def metadata(total: int, duration: float) -> VideoMetadata:
        return VideoMetadata(total_num_frames=total, fps=total / duration, duration=duration)

    qwen2, qwen3, llava, internvl = (
        Qwen2VLVideoProcessor(),
        Qwen3VLVideoProcessor(),
        LlavaOnevisionVideoProcessor(),
        InternVLVideoProcessor(),
    )
    return {
        "uniform": lambda t, d, fps, n: qwen3.sample_frames(metadata(t, d), num_frames=n, fps=fps),
        "qwen2_vl": lambda t, d, fps, n: qwen2.sample_frames(
            metadata(t, d), num_frames=n, fps=fps, max_frames=1 << 20
        ),
        "llava_onevision": lambda t, d, fps, n: llava.sample_frames(
            metadata(t, d), num_frames=n, fps=fps
        ),
        "internvl": lambda t, d, fps, n: internvl.sample_frames(
            metadata(t, d), num_frames=n, fps=fps
        ),
    }


def hf_applies(rule: str, total: int, duration: float, fps: float | None, n: int | None) -> bool:
    """Whether HF's sampler and this rule are defined alike on these inputs (the docstring of
    ``sampling.py`` lists the differences): HF refuses n > T, Qwen2-VL rounds an odd num_frames
    to the nearest even number, and the fps paths of Qwen2-VL below one pair of frames and of
    InternVL below one frame divide by zero."""
    if n is not None:
        return n <= total and not (rule == "qwen2_vl" and n % 2)
    want = math.floor(duration * (fps or 0))
    if rule == "qwen2_vl":
        return total >= 2
    return want <= total and (want >= 1 or rule == "llava_onevision")


@pytest.mark.parametrize("rule", ["qwen2_vl", "llava_onevision", "internvl"])
@pytest.mark.parametrize(("total", "duration", "fps", "num_frames"), CASES)
def test_rule_matches_transformers(
    hf: dict, rule: str, total: int, duration: float, fps: float | None, num_frames: int | None
) -> None:
    if not hf_applies(rule, total, duration, fps, num_frames) or (rule, total) == ("qwen2_vl", 59):
        pytest.skip("HF is not defined alike here (see hf_applies)")
    want = [int(i) for i in hf[rule](total, duration, fps, num_frames)]
    got = sample_frame_indices(total, duration, sampling=rule, fps=fps, num_frames=num_frames)
    assert got == want


@pytest.mark.parametrize(("total", "n"), [(7, 3), (50, 7), (100, 8), (1801, 32), (6, 3), (10, 3)])
def test_uniform_matches_qwen3_vl_but_for_ties(hf: dict, total: int, n: int) -> None:
    want = [int(i) for i in hf["uniform"](total, total / 25, None, n)]
    got = sample_frame_indices(total, total / 25, num_frames=n)
    assert got == uniform_positions(total, n)
    for k, (mine, theirs) in enumerate(zip(got, want, strict=True)):
        if 2 * k * (total - 1) % (2 * (n - 1)) == n - 1:  # a tie: j + 1/2 with j = mine - 1
            assert theirs == (mine - 1 if (mine - 1) % 2 == 0 else mine)  # half to even there
        else:
            assert theirs == mine
    if (total, n) in ((6, 3), (10, 3)):
        assert got != want  # the cases above hold a tie that rounds differently


def test_hf_float_artifact(hf: dict) -> None:
    # HF's arange(0, 59, 59/58) has 59 elements in floating point; its last is frame 59 of 59.
    want = [int(i) for i in hf["qwen2_vl"](59, 2.36, 25.0, None)]
    assert len(want) == 59 and want[-1] == 59
    assert sample_frame_indices(59, 2.36, sampling="qwen2_vl", fps=25.0) == list(range(58))
