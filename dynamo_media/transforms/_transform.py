"""The base class of the transforms.

A transform stores its options at construction (and checks them there) and hands the work to its
functional twin: ``DecodeVideo(fps=2.0)(encoded)`` calls ``decode_video(encoded.data, fps=2.0)``.
The per-sample decisions (which frames, which size) are made once from the sample's metadata by
the twin, never by hidden state in the transform.
"""

from __future__ import annotations

import abc
from typing import Any

__all__ = ["Transform"]


class Transform(abc.ABC):
    """A step of a media pipeline: a callable with stored options and a readable repr."""

    def __call__(self, inpt: Any) -> Any:
        return self.forward(inpt)

    @abc.abstractmethod
    def forward(self, inpt: Any) -> Any:
        """Applies the transform to one sample."""

    def repr_options(self) -> dict[str, Any]:
        """The options shown in the repr; those at their default are left out by subclasses."""
        return {}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.repr_options().items())
        return f"{type(self).__name__}({options})"
