"""The machinery behind the option value objects of ``config.py``.

An ``Options`` subclass is a frozen dataclass. Its annotations are its schema: every value is
checked against its annotation at construction (``bool``, ``int`` and ``float`` > 0 unless the
field's metadata says ``min``, ``str``, ``Literal[...]``, ``tuple[...]``, nested ``Options``,
``X | None``), so a bad value fails where it is set, naming the key. ``from_dict`` refuses unknown
keys and names the allowed ones; ``merge`` applies a request's ``media_io_kwargs`` over defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

from dynamo_media._errors import InvalidOptions

__all__ = ["Options", "changed_fields", "check_choice", "format_bytes"]

OptionsT = TypeVar("OptionsT", bound="Options")


def format_bytes(n: float) -> str:
    """Formats a byte count for messages: ``402653184`` -> ``'384.0 MiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_choice(path: str, value: Any, choices: Any) -> Any:
    """Checks ``value`` against a ``Literal[...]``; returns it.

    Raises:
        InvalidOptions: ``value`` is not one of them, naming it and the allowed ones.
    """
    allowed = typing.get_args(choices)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise InvalidOptions(f"Invalid {path} ({value!r}). Supported values are {shown}.")
    return value


def _check(path: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """Checks ``value`` against a type hint; returns it, normalised (lists become tuples)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(path, value, inner, meta)
    if origin is Literal:
        return check_choice(path, value, hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InvalidOptions(f"{path} must be a list, got {_describe(value)}")
        args = typing.get_args(hint)
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        if len(items) != len(value):
            raise InvalidOptions(f"{path} must have {len(items)} items, got {len(value)}")
        return tuple(
            _check(f"{path}[{i}]", v, t, meta)
            for i, (v, t) in enumerate(zip(value, items, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidOptions(f"{path} must be true or false, got {_describe(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InvalidOptions(f"{path} must be a string, got {_describe(value)}")
        return value
    if hint in (int, float):
        ok = isinstance(value, int) or (hint is float and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            kind = "an integer" if hint is int else "a number"
            raise InvalidOptions(f"{path} must be {kind}, got {_describe(value)}")
        if not math.isfinite(value):
            raise InvalidOptions(f"{path} must be finite, got {value!r}")
        low = meta.get("min")
        if low is None and not value > 0:
            raise InvalidOptions(f"{path} must be > 0, got {value!r}")
        if low is not None and value < low:
            raise InvalidOptions(f"{path} must be >= {low}, got {value!r}")
        if "max" in meta and value > meta["max"]:
            raise InvalidOptions(f"{path} must be <= {meta['max']}, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, Options):
        if isinstance(value, Mapping):
            return hint.from_dict(value, where=path)
        if not isinstance(value, hint):
            raise InvalidOptions(f"{path} must be a mapping, got {_describe(value)}")
        return value
    raise AssertionError(f"no check for the annotation {hint!r} of {path}")


class Options:
    """Base of the frozen, validated option dataclasses.

    Subclasses are ``@dataclasses.dataclass(frozen=True)``. ``_exclusive`` lists groups of keys
    of which at most one may be set, and of which a request's ``media_io_kwargs`` setting one
    resets the others (``fps`` and ``num_frames``: setting one replaces the default sampling
    mode).
    """

    _exclusive: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @classmethod
    @functools.cache
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def _fields(cls) -> tuple[dataclasses.Field[Any], ...]:
        return dataclasses.fields(cls)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        hints = self._hints()
        for f in self._fields():
            value = _check(
                f"{type(self).__name__}.{f.name}", getattr(self, f.name), hints[f.name], f.metadata
            )
            object.__setattr__(self, f.name, value)
        for group in self._exclusive:
            modes = [key for key in group if getattr(self, key) is not None]
            if len(modes) > 1:
                raise InvalidOptions(
                    f"{' and '.join(modes)} are mutually exclusive; set only one of them"
                )

    @classmethod
    def _known_keys(cls, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise InvalidOptions(f"{where} must be a mapping, got {_describe(data)}")
        names = [f.name for f in cls._fields()]
        for key in data:
            if key not in names:
                raise InvalidOptions(
                    f"Unknown option {key!r} in {where}. Allowed keys: {', '.join(sorted(names))}"
                )

    @classmethod
    def from_dict(
        cls: type[OptionsT], data: Mapping[str, Any], *, where: str | None = None
    ) -> OptionsT:
        """Builds the options from a JSON-style mapping.

        Args:
            data: keys are the field names; missing keys take their defaults.
            where: the mapping's place, for messages (``"video"``). Default: the class name.

        Returns:
            The validated options.

        Raises:
            InvalidOptions: an unknown key, or a value of the wrong type or range.
        """
        where = where or cls.__name__
        cls._known_keys(data, where)
        hints = cls._hints()
        fields = {f.name: f for f in cls._fields()}
        values = {
            key: _check(f"{where}.{key}", value, hints[key], fields[key].metadata)
            for key, value in data.items()
        }
        try:
            return cls(**values)
        except InvalidOptions as exc:
            raise InvalidOptions(f"{where}: {exc.message}") from None

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready data; ``from_dict`` of it gives an equal object."""

        def plain(value: Any) -> Any:
            if isinstance(value, Options):
                return value.to_dict()
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        return {f.name: plain(getattr(self, f.name)) for f in self._fields()}

    def to_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments (nested options stay objects)."""
        return {f.name: getattr(self, f.name) for f in self._fields()}

    def merge(self: OptionsT, overrides: Mapping[str, Any] | None, *, where: str) -> OptionsT:
        """These options with a request's overrides applied (``media_io_kwargs``).

        ``limits`` cannot be overridden, and ``null`` is refused: a request may change a
        default but not remove it (``"max_frames": null`` would lift the server's cap). Setting
        one key of an exclusive group (``fps``, ``num_frames``) resets the others.

        Args:
            overrides: the request's keys for this modality; ``None`` changes nothing.
            where: the mapping's place, for messages (``"media_io_kwargs.video"``).

        Returns:
            New options.

        Raises:
            InvalidOptions: ``limits`` given, an unknown key, ``null``, or a bad value.
        """
        if not overrides:
            return self
        if isinstance(overrides, Mapping) and "limits" in overrides:
            raise InvalidOptions(
                f"{where}.limits cannot be set per request: limits are the server's "
                "configuration. Remove 'limits' from media_io_kwargs."
            )
        self._known_keys(overrides, where)
        for key, value in overrides.items():
            if value is None:
                raise InvalidOptions(
                    f"{where}.{key} is null; a request cannot remove the server's "
                    f"{key} ({getattr(self, key)!r}): omit the key to keep it, or give a value"
                )
        values = {**self.to_dict(), **overrides}
        for group in self._exclusive:
            if any(key in overrides for key in group):
                values.update({key: overrides.get(key) for key in group})
        return type(self).from_dict(values, where=where)


def changed_fields(options: Options, *, skip: tuple[str, ...] = ("limits",)) -> dict[str, Any]:
    """The fields of ``options`` that differ from their defaults, for reprs."""
    default = type(options)()
    return {
        f.name: getattr(options, f.name)
        for f in options._fields()
        if f.name not in skip and getattr(options, f.name) != getattr(default, f.name)
    }
