"""Frame-index selection for video: pure functions, no decoding.

# Note [uniform sampling]
``T`` is the number of frames in the stream. The number of samples ``n`` is ``num_frames``, or
``max(1, floor(duration_seconds * fps))`` for ``fps``, or ``T`` when neither is given; then
``n = min(n, max_frames)`` when ``max_frames`` is set. When ``n > T``, strict mode refuses and
otherwise ``n = T``. The indices are ``floor(k * (T - 1) / (n - 1) + 0.5)`` for ``k = 0 .. n-1``
(``[0]`` when ``n == 1``): uniform over the clip, first and last frame included. They are computed
in integers, so no rounding error can move an index.
"""

from __future__ import annotations

import math

from dynamo_media._errors import InvalidOptions

__all__ = ["num_samples", "sample_frame_indices"]


def num_samples(
    total_frames: int,
    duration_seconds: float | None,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    strict: bool = False,
) -> int:
    """How many frames a request samples from a stream (see Note [uniform sampling]).

    Args:
        total_frames: frames in the stream, ``T >= 1``.
        duration_seconds: the stream's duration; needed only with ``fps``.
        num_frames: sample exactly this many frames. Default: ``None``.
        fps: sample this many frames per second of video. Default: ``None``.
        max_frames: cap on the number of samples. Default: ``None`` (no cap).
        strict: refuse a request for more frames than the stream has. Default: ``False``.

    Returns:
        The number of samples ``n``, ``1 <= n <= total_frames``.

    Raises:
        InvalidOptions: ``fps`` with ``num_frames``; a value that is not > 0; ``fps`` without a
            duration; in strict mode, more frames asked for than the stream has.
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if num_frames is not None and fps is not None:
        raise InvalidOptions("fps and num_frames are mutually exclusive; set only one of them")
    for name, value in (("num_frames", num_frames), ("fps", fps), ("max_frames", max_frames)):
        if value is not None and not value > 0:
            raise InvalidOptions(f"{name} must be > 0, got {value!r}")
    if num_frames is not None:
        n = num_frames
    elif fps is not None:
        if duration_seconds is None or not math.isfinite(duration_seconds):
            raise InvalidOptions(
                "fps sampling needs the video's duration, which its metadata lacks; "
                "use num_frames instead"
            )
        n = max(1, math.floor(duration_seconds * fps))
    else:
        n = total_frames
    if max_frames is not None:
        n = min(n, max_frames)
    if n > total_frames:
        if strict:
            raise InvalidOptions(
                f"{n} frames requested but the video has only {total_frames}; "
                "lower fps or num_frames, or set strict=False"
            )
        n = total_frames
    return n


def sample_frame_indices(
    total_frames: int,
    duration_seconds: float | None,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    strict: bool = False,
) -> list[int]:
    """The frame indices a request samples, uniform and including both ends.

    See Note [uniform sampling] for the formula. Arguments are those of :func:`num_samples`.

    Returns:
        Sorted, distinct indices in ``[0, total_frames)``.

    Raises:
        InvalidOptions: as :func:`num_samples`.
    """
    n = num_samples(
        total_frames,
        duration_seconds,
        num_frames=num_frames,
        fps=fps,
        max_frames=max_frames,
        strict=strict,
    )
    if n == 1:
        return [0]
    span = total_frames - 1
    # floor(k*span/(n-1) + 1/2) == floor((2*k*span + (n-1)) / (2*(n-1))), exactly in integers.
    return [(2 * k * span + n - 1) // (2 * (n - 1)) for k in range(n)]
