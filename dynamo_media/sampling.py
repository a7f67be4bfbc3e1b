"""Frame-index selection for video: pure functions, no decoding.

A request picks its frames in one of two ways: explicit ``indices``, or a count ``n`` (Note
[frame count]) placed over the clip by a named rule (Note [sampling rules]). A time window
``[start_seconds, end_seconds)`` narrows the clip first: the rule then runs on the frames whose
``pts`` falls in the window, as if they were the whole video.

# Note [frame count]
``T`` is the number of frames in the stream (or the window). The number of samples ``n`` is:

1. ``num_frames``; or ``max(1, floor(duration_seconds * fps))`` for ``fps``; or ``T`` when
   neither is given.
2. For a count from ``fps`` or from ``T``: ``n = max(n, min(min_frames, T))``. ``num_frames``
   and ``indices`` are exact, so ``min_frames`` does not touch them.
3. ``n = min(n, max_frames)`` when ``max_frames`` is set.
4. When ``n > T``, strict mode refuses and otherwise ``n = T``.
5. With ``frames_multiple = m``, ``n`` is rounded DOWN to a multiple of ``m`` (a temporal patch
   of 2 needs pairs of frames): ``n = floor(n / m) * m``. Down, so that the count never passes
   ``max_frames``, ``T`` or the memory the limits allowed for; a count below ``m`` (a video or
   a ``max_frames`` shorter than one patch) stays as it is, and the model's processor pads it
   (HF's Qwen2-VL repeats the last frame).

``min_frames`` and ``frames_multiple`` left at ``None`` take the rule's own values (the table
in Note [sampling rules]); ``1`` turns either off.

# Note [sampling rules]
Each rule places ``n`` indices over ``T`` frames, computed in integers so that no rounding error
can move an index. ``k = 0 .. n-1``.

=================== ============================== ========== ================ =================
``sampling``        index ``k``                    min_frames frames_multiple  last frame?
=================== ============================== ========== ================ =================
``uniform``         ``floor(k*(T-1)/(n-1) + 1/2)`` none       none             when n > 1
``qwen2_vl``        ``floor(k*T/n)``               4          2 (round down)   only when n = T
``llava_onevision`` ``floor(k*T/n)``               none       none             only when n = T
``internvl``        ``floor((2k+1)*T/(2n))``       none       none             when 2n >= T
=================== ============================== ========== ================ =================

Sources, transformers 5.24:

- ``uniform`` (DESIGN.md): ``[0]`` when ``n == 1``; first and last frame included. The same
  positions as Qwen3-VL (``Qwen3VLVideoProcessor.sample_frames``:
  ``np.linspace(0, T - 1, n).round()``) and qwen-vl-utils (``torch.linspace(0, T - 1, n)
  .round()``), except on an exact tie ``k*(T-1)/(n-1) = j + 1/2``, where they round half to
  even and this rounds up (``T = 6, n = 3``: ``[0, 2, 5]`` there, ``[0, 3, 5]`` here).
- ``qwen2_vl``: ``Qwen2VLVideoProcessor.sample_frames`` (Qwen2.5-VL uses the same processor):
  ``torch.arange(0, T, T / n).int()``, with ``temporal_patch_size = 2``, ``min_frames = 4``;
  for ``fps``, ``n = floor(min(max(T / video_fps * fps, min_frames), floor(min(max_frames, T)
  / 2) * 2, T) / 2) * 2``, which steps 1 to 5 of Note [frame count] give for every ``T >= 2``.
  For ``num_frames`` HF rounds to the NEAREST multiple (``round(num_frames / 2) * 2``, half to
  even: 7 gives 8, 1 gives 0 and a division by zero); this rounds down (7 gives 6, 1 stays 1).
- ``llava_onevision``: ``LlavaOnevisionVideoProcessor`` uses the base
  ``BaseVideoProcessor.sample_frames``, i.e. ``video_utils.default_sample_indices_fn``:
  ``np.arange(n) * T // n``, with ``n = max(1, int(T / video_fps * fps))`` for ``fps``.
- ``internvl``: ``InternVLVideoProcessor.sample_frames`` with ``initial_shift=True`` (its
  default): ``torch.arange(T / n / 2, T, T / n).int()``, the centre of each of ``n`` equal bins;
  ``n = int(T / video_fps * fps)`` for ``fps`` (0 there below one frame, 1 here). InternVL's
  own ``get_index`` (the model card's ``load_video``) spans ``T - 1`` and rounds the bin
  offsets; this follows transformers.

HF refuses ``n > T``; here non-strict mode clamps to ``n = T`` (Note [frame count]). HF's
``arange`` runs in floating point, and its length ``ceil(T / (T/n))`` can come out ``n + 1``:
Qwen2-VL at ``T = 59``, 25 fps, ``fps=25`` samples ``n = 58`` and HF returns 59 indices, the
last one frame 59, past the end. The integer forms above agree with HF on every other case of
tests/test_sampling_rules.py where both are defined.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import get_args

from dynamo_media._errors import InvalidOptions
from dynamo_media.config import SamplingRule, VideoOptions

__all__ = [
    "RULES",
    "SAMPLING_RULES",
    "Rule",
    "centre_indices",
    "num_samples",
    "sample_frame_indices",
    "start_indices",
    "uniform_indices",
    "window_frames",
]

SAMPLING_RULES: tuple[SamplingRule, ...] = get_args(SamplingRule)


def uniform_indices(total_frames: int, n: int) -> list[int]:
    """``floor(k*(T-1)/(n-1) + 1/2)``: uniform, first and last frame included (``[0]`` for 1).

    Args:
        total_frames: ``T >= 1``.
        n: samples, ``1 <= n <= T``.
    """
    if n == 1:
        return [0]
    span = total_frames - 1
    # floor(k*span/(n-1) + 1/2) == floor((2*k*span + (n-1)) / (2*(n-1))), exactly in integers.
    return [(2 * k * span + n - 1) // (2 * (n - 1)) for k in range(n)]


def start_indices(total_frames: int, n: int) -> list[int]:
    """``floor(k*T/n)``: the first frame of each of ``n`` equal bins (Qwen2-VL, LLaVA-OneVision).

    Args:
        total_frames: ``T >= 1``.
        n: samples, ``1 <= n <= T``.
    """
    return [k * total_frames // n for k in range(n)]


def centre_indices(total_frames: int, n: int) -> list[int]:
    """``floor((2k+1)*T/(2n))``: the middle frame of each of ``n`` equal bins (InternVL).

    Args:
        total_frames: ``T >= 1``.
        n: samples, ``1 <= n <= T``.
    """
    return [(2 * k + 1) * total_frames // (2 * n) for k in range(n)]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A named sampling rule: where ``n`` indices go, and the rule's count defaults.

    Attributes:
        positions: ``(T, n) -> indices``, a pure function.
        min_frames: ``min_frames`` when the request leaves it ``None``.
        frames_multiple: ``frames_multiple`` when the request leaves it ``None``.
    """

    positions: Callable[[int, int], list[int]]
    min_frames: int | None = None
    frames_multiple: int | None = None


RULES: Mapping[SamplingRule, Rule] = {
    "uniform": Rule(uniform_indices),
    "qwen2_vl": Rule(start_indices, min_frames=4, frames_multiple=2),
    "llava_onevision": Rule(start_indices),
    "internvl": Rule(centre_indices),
}
"""The rules of Note [sampling rules], by their ``sampling`` name."""


def window_frames(
    pts_seconds: Sequence[float], start_seconds: float | None, end_seconds: float | None
) -> range:
    """The frames whose ``pts`` lies in ``[start_seconds, end_seconds)``.

    Args:
        pts_seconds: every frame's ``pts``, in presentation order (sorted).
        start_seconds: the window's start, inclusive. ``None``: the first frame.
        end_seconds: the window's end, exclusive. ``None``: past the last frame.

    Returns:
        The frame indices in the window, a ``range``.

    Raises:
        InvalidOptions: no frame starts inside the window.
    """
    first = 0 if start_seconds is None else bisect.bisect_left(pts_seconds, start_seconds)
    stop = len(pts_seconds) if end_seconds is None else bisect.bisect_left(pts_seconds, end_seconds)
    if stop <= first:
        span = f"{pts_seconds[0]:.3f} to {pts_seconds[-1]:.3f} s" if pts_seconds else "nothing"
        raise InvalidOptions(
            f"no frame starts in [start_seconds, end_seconds) = [{start_seconds}, {end_seconds}); "
            f"the video's frames start from {span}"
        )
    return range(first, stop)


def num_samples(
    total_frames: int,
    duration_seconds: float | None,
    *,
    sampling: SamplingRule = "uniform",
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    min_frames: int | None = None,
    frames_multiple: int | None = None,
    strict: bool = False,
) -> int:
    """How many frames a request samples from a stream (see Note [frame count]).

    Args:
        total_frames: frames in the stream, ``T >= 1``.
        duration_seconds: the stream's duration; needed only with ``fps``.
        sampling: the rule, whose ``min_frames`` and ``frames_multiple`` fill in for ``None``.
            Default: ``"uniform"``.
        num_frames: sample exactly this many frames. Default: ``None``.
        fps: sample this many frames per second of video. Default: ``None``.
        max_frames: cap on the number of samples. Default: ``None`` (no cap).
        min_frames: floor on a count from ``fps`` (or all frames), as far as the video has
            frames. Default: ``None`` (the rule's).
        frames_multiple: round the count down to a multiple of this. Default: ``None`` (the
            rule's).
        strict: refuse a request for more frames than the stream has. Default: ``False``.

    Returns:
        The number of samples ``n``, ``1 <= n <= total_frames``.

    Raises:
        InvalidOptions: options in conflict (see ``VideoOptions``); ``fps`` without a duration;
            in strict mode, more frames asked for than the stream has.
    """
    options = VideoOptions(  # the schema checks the values and their conflicts
        sampling=sampling,
        num_frames=num_frames,
        fps=fps,
        max_frames=max_frames,
        min_frames=min_frames,
        frames_multiple=frames_multiple,
    )
    return _count(total_frames, duration_seconds, options, strict=strict, span="the video")


def _count(
    total_frames: int,
    duration_seconds: float | None,
    options: VideoOptions,
    *,
    strict: bool,
    span: str,
) -> int:
    """Note [frame count], on checked options; ``span`` names the frames for messages."""
    rule = RULES[options.sampling]
    num_frames, fps, max_frames = options.num_frames, options.fps, options.max_frames
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if num_frames is not None:
        n = num_frames
    else:
        if fps is None:
            n = total_frames
        elif duration_seconds is None or not math.isfinite(duration_seconds):
            raise InvalidOptions(
                "fps sampling needs the video's duration, which its metadata lacks; "
                "use num_frames instead"
            )
        else:
            n = max(1, math.floor(duration_seconds * fps))
        low = options.min_frames if options.min_frames is not None else rule.min_frames
        if low is not None:
            n = max(n, min(low, total_frames))
    if max_frames is not None:
        n = min(n, max_frames)
    if n > total_frames:
        if strict:
            raise InvalidOptions(
                f"{n} frames requested but {span} has only {total_frames}; "
                "lower fps or num_frames, or set strict=False"
            )
        n = total_frames
    multiple = options.frames_multiple
    if multiple is None:
        multiple = rule.frames_multiple
    if multiple is not None and n >= multiple:
        n = n // multiple * multiple
    return n


def sample_frame_indices(
    total_frames: int,
    duration_seconds: float | None,
    *,
    sampling: SamplingRule = "uniform",
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    min_frames: int | None = None,
    frames_multiple: int | None = None,
    indices: Sequence[int] | None = None,
    start_seconds: float | None = None,
    end_seconds: float | None = None,
    pts_seconds: Sequence[float] | None = None,
    strict: bool = False,
) -> list[int]:
    """The frame indices a request samples.

    The count follows Note [frame count] and the positions the rule (Note [sampling rules]);
    with a window, both apply to the frames in ``[start_seconds, end_seconds)`` and to the
    window's duration (clipped to the stream), and the indices are then the stream's.

    Args:
        total_frames, duration_seconds, sampling, num_frames, fps, max_frames, min_frames,
            frames_multiple, strict: as :func:`num_samples`.
        indices: explicit frame indices, sorted and distinct (exclusive with ``fps`` and
            ``num_frames``); those past the end are refused in strict mode and otherwise
            dropped. Default: ``None``.
        start_seconds: the window's start, inclusive, on the stream's timeline (as
            ``pts_seconds``). Default: ``None`` (the start).
        end_seconds: the window's end, exclusive. Default: ``None`` (the end).
        pts_seconds: every frame's ``pts`` in presentation order; needed only for a window.
            Default: ``None``.

    Returns:
        Sorted, distinct indices in ``[0, total_frames)``.

    Raises:
        InvalidOptions: as :func:`num_samples`; ``indices`` past the
            end in strict mode, or none inside the video; a window holding no frame.
        ValueError: a window without ``pts_seconds``.
    """
    options = VideoOptions(  # the schema checks the values and their conflicts
        sampling=sampling,
        num_frames=num_frames,
        fps=fps,
        indices=None if indices is None else tuple(indices),
        max_frames=max_frames,
        min_frames=min_frames,
        frames_multiple=frames_multiple,
        start_seconds=start_seconds,
        end_seconds=end_seconds,
    )
    if indices is not None:
        return _explicit(total_frames, indices, strict)
    window = range(total_frames)
    span = "the video"
    if start_seconds is not None or end_seconds is not None:
        if pts_seconds is None or len(pts_seconds) != total_frames:
            raise ValueError("a time window needs every frame's pts_seconds")
        window = window_frames(pts_seconds, start_seconds, end_seconds)
        span = f"[{start_seconds}, {end_seconds}) s"
        if duration_seconds is not None:
            begin, end = pts_seconds[0], pts_seconds[0] + duration_seconds
            if start_seconds is not None:
                begin = max(begin, start_seconds)
            if end_seconds is not None:
                end = min(end, end_seconds)
            duration_seconds = end - begin
    n = _count(len(window), duration_seconds, options, strict=strict, span=span)
    return [window.start + i for i in RULES[sampling].positions(len(window), n)]


def _explicit(total_frames: int, indices: Sequence[int], strict: bool) -> list[int]:
    """Explicit indices inside the video: past the end, strict refuses and otherwise drops."""
    kept = [i for i in indices if i < total_frames]
    if len(kept) < len(indices) and (strict or not kept):
        raise InvalidOptions(
            f"indices up to {indices[-1]} requested but the video has only {total_frames} frames "
            f"(0 to {total_frames - 1}); "
            + ("set strict=False to drop those past the end" if kept else "send smaller indices")
        )
    return kept
