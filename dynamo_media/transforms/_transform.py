"""The base class of the transforms.

A transform stores its options at construction (and checks them there) and hands the work to its
functional twin: ``DecodeVideo(fps=2.0)(encoded)`` calls ``decode_video(encoded.data, fps=2.0)``.
The per-sample decisions (which frames, which size) are made once from the sample's metadata by
the twin, never by hidden state in the transform.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from dynamo_media._media import DecodedMedia, EncodedMedia, ProbedMedia
from dynamo_media._options import Options, changed_fields

__all__ = ["DecodeTransform", "Transform"]


class Transform(abc.ABC):
    """A step of a media pipeline: a callable with stored options and a readable repr.

    Attributes:
        stage: what the step does, for timings and for callers that run steps apart:
            ``"fetch"`` (I/O: ``aforward`` waits without blocking), ``"guard"``, ``"decode"``,
            ``"device"``, ``"register"``, or ``"pipeline"`` for ``Compose``.
    """

    stage: ClassVar[str]

    def __call__(self, inpt: Any) -> Any:
        return self.forward(inpt)

    @abc.abstractmethod
    def forward(self, inpt: Any) -> Any:
        """Applies the transform to one sample."""

    async def aforward(self, inpt: Any) -> Any:
        """``forward`` for an event loop; I/O steps override it so as not to block."""
        return self.forward(inpt)

    def repr_options(self) -> dict[str, Any]:
        """The options shown in the repr; those at their default are left out by subclasses."""
        return {}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.repr_options().items())
        return f"{type(self).__name__}({options})"


class DecodeTransform(Transform):
    """The shared body of ``DecodeImage``, ``DecodeVideo`` and ``DecodeAudio``.

    A subclass's ``__init__`` builds ``self.options`` (validated at construction) and sets
    ``self.device``; ``decode`` names its functional twin, which ``forward`` calls with them.
    """

    stage = "decode"
    options: Options
    device: str
    decode: ClassVar[Callable[..., DecodedMedia]]

    @classmethod
    def from_options(cls, options: Options, *, device: str = "cpu") -> Any:
        """The transform for configured options."""
        return cls(**options.to_kwargs(), device=device)  # type: ignore[call-arg]

    def forward(self, inpt: EncodedMedia | ProbedMedia) -> DecodedMedia:
        return type(self).decode(inpt, **self.options.to_kwargs(), device=self.device)

    def repr_options(self) -> dict[str, Any]:
        shown = changed_fields(self.options)
        return shown | ({"device": self.device} if self.device != "cpu" else {})
