import math

import pytest

from dynamo_media import InvalidOptions, sample_frame_indices
from dynamo_media.sampling import num_samples


def reference(total: int, n: int) -> list[int]:
    """DESIGN's formula, in floating point, for comparison."""
    if n == 1:
        return [0]
    return [math.floor(k * (total - 1) / (n - 1) + 0.5) for k in range(n)]


@pytest.mark.parametrize(
    ("total", "duration", "kwargs", "expected"),
    [
        (100, 4.0, {"num_frames": 1}, [0]),
        (100, 4.0, {"num_frames": 2}, [0, 99]),
        (5, 1.0, {"num_frames": 5}, [0, 1, 2, 3, 4]),  # n == T
        (5, 1.0, {"num_frames": 8}, [0, 1, 2, 3, 4]),  # n > T, non-strict clamps
        (100, 4.0, {"num_frames": 8}, [0, 14, 28, 42, 57, 71, 85, 99]),
        (250, 10.0, {"fps": 0.5}, [0, 62, 125, 187, 249]),  # floor(10 * 0.5) = 5
        (250, 10.0, {"fps": 0.05}, [0]),  # below one frame: max(1, floor(0.5)) = 1
        (250, 10.0, {"fps": 2.0, "max_frames": 4}, [0, 83, 166, 249]),  # max_frames caps
        (10, 0.4, {}, list(range(10))),  # neither: all frames
        (10, 0.4, {"max_frames": 3}, [0, 5, 9]),  # all frames capped
        (1, 0.04, {"num_frames": 1}, [0]),
        (1, 0.04, {"fps": 30.0}, [0]),
    ],
)
def test_table(total: int, duration: float, kwargs: dict, expected: list[int]) -> None:
    assert sample_frame_indices(total, duration, **kwargs) == expected


@pytest.mark.parametrize("total", [1, 2, 3, 7, 100, 1801, 18000])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 32, 128])
def test_matches_formula(total: int, n: int) -> None:
    got = sample_frame_indices(total, None, num_frames=n)
    want = reference(total, min(n, total))
    assert got == want
    assert got[0] == 0 and got[-1] == (total - 1 if len(got) > 1 else 0)
    assert got == sorted(set(got))


def test_strict_refuses_more_than_the_video_has() -> None:
    with pytest.raises(InvalidOptions, match=r"8 frames requested but the video has only 5"):
        sample_frame_indices(5, 1.0, num_frames=8, strict=True)
    with pytest.raises(InvalidOptions, match="lower fps or num_frames"):
        sample_frame_indices(5, 10.0, fps=1.0, strict=True)
    # max_frames applies before the strict check
    assert sample_frame_indices(5, 10.0, fps=1.0, max_frames=5, strict=True) == [0, 1, 2, 3, 4]


def test_fps_with_num_frames_is_an_error() -> None:
    with pytest.raises(InvalidOptions, match="mutually exclusive"):
        sample_frame_indices(100, 4.0, fps=1.0, num_frames=4)


@pytest.mark.parametrize("kwargs", [{"fps": 0.0}, {"num_frames": 0}, {"max_frames": -1}])
def test_values_must_be_positive(kwargs: dict) -> None:
    with pytest.raises(InvalidOptions, match="must be > 0"):
        sample_frame_indices(100, 4.0, **kwargs)


def test_fps_needs_a_duration() -> None:
    with pytest.raises(InvalidOptions, match="use num_frames"):
        num_samples(100, None, fps=2.0)
