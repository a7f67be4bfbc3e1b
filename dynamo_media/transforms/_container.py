"""``Compose``: a plain loop over transforms, whose repr prints the whole pipeline."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from dynamo_media.transforms._transform import Transform

__all__ = ["Compose"]


class Compose(Transform):
    """Applies transforms one after the other.

    Args:
        transforms: the steps, in order.

    Example:
        >>> Compose([FetchURL(fetcher), CheckVideoLimits(...), DecodeVideo(fps=2.0)])
        Compose(
            FetchURL(timeout_ms=30000)
         -> CheckVideoLimits(max_alloc='1.0 GiB', ...)
         -> DecodeVideo(fps=2.0)
        )
    """

    stage = "pipeline"

    def __init__(self, transforms: Sequence[Transform]) -> None:
        if not isinstance(transforms, Sequence):
            raise TypeError(f"transforms must be a sequence, got {type(transforms).__name__}")
        self.transforms = list(transforms)

    def forward(self, inpt: Any) -> Any:
        for transform in self.transforms:
            inpt = transform(inpt)
        return inpt

    @overload
    def __getitem__(self, index: int) -> Transform: ...

    @overload
    def __getitem__(self, index: slice) -> Compose: ...

    def __getitem__(self, index: int | slice) -> Transform | Compose:
        if isinstance(index, slice):
            return Compose(self.transforms[index])
        return self.transforms[index]

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def __repr__(self) -> str:
        if not self.transforms:
            return "Compose()"
        steps = [f"    {self.transforms[0]!r}"] + [f" -> {t!r}" for t in self.transforms[1:]]
        return "Compose(\n" + "\n".join(steps) + "\n)"
