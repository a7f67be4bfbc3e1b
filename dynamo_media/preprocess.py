"""``MediaPreprocessor``: an OpenAI chat request in, decoded (and registered) media out.

It walks every message's content parts (``image_url``, ``video_url``, ``audio_url``,
``input_audio``), applies the request's ``media_io_kwargs`` over the configured defaults, and runs
every item's pipeline concurrently: fetches overlap on the fetch pool, and each item's guard,
decode and registration run on a bounded worker pool, so the event loop never blocks. The items
keep their order. If one item fails, everything the others took is released before the error
(naming the item, ``messages[0].content[2].video_url``) is raised.

With a ``MediaCache``, an item whose fetched bytes were decoded before under the same options is
not decoded again: the request holds the cached tensor and registers it (Note [cache sharing] in
``_cache.py``). The fetch still happens, since the key is the bytes' hash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from dynamo_media._cache import CachedMedia, MediaCache, cache_key
from dynamo_media._decoder import MediaDecoder
from dynamo_media._errors import InvalidOptions, MediaError
from dynamo_media._media import DecodedMedia
from dynamo_media._priority import low_priority_pool
from dynamo_media.config import MODALITIES
from dynamo_media.fetch import MediaFetcher
from dynamo_media.nixl import RegisteredMedia, RegistrationPool
from dynamo_media.transforms import Transform, build_pipeline

__all__ = [
    "MediaCache",
    "MediaItem",
    "MediaPreprocessor",
    "PreprocessResult",
    "find_media",
]

# OpenAI part type -> (modality, multi_modal_data key)
PART_TYPES = {
    "image_url": ("image", "image_url"),
    "video_url": ("video", "video_url"),
    "audio_url": ("audio", "audio_url"),
    "input_audio": ("audio", "audio_url"),
}
_AUDIO_FORMATS = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "webm": "audio/webm",
    "pcm16": "audio/wav",
}


@dataclasses.dataclass(eq=False)
class MediaItem:
    """One media part of a request and what became of it.

    Attributes:
        param: where it sits (``messages[0].content[1].image_url``).
        modality: ``"image"``, ``"video"`` or ``"audio"``.
        key: its ``multi_modal_data`` key (``"image_url"``, ...).
        url: the URL (``input_audio`` becomes a ``data:`` URL).
        output: ``DecodedMedia``, or ``RegisteredMedia`` with a NIXL pool.
        timings: seconds per stage (fetch, guard, decode, device, register; ``cache``: the
            lookup, or the wait for a concurrent request's decode).
        fetched_bytes: size of the encoded media.
        cached: the hold on the cache entry, when a cache served or stored the item.
        error: why the item failed (named by its place), or ``None``.
    """

    param: str
    modality: str
    key: str
    url: str
    output: DecodedMedia | RegisteredMedia | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    fetched_bytes: int = 0
    cached: CachedMedia | None = None
    error: MediaError | None = None

    @property
    def media(self) -> DecodedMedia:
        """The decoded media, registered or not."""
        out = self.output
        assert out is not None, "the item has not been processed"
        return out.media if isinstance(out, RegisteredMedia) else out

    def release(self) -> None:
        """Ends the item's registration and its hold on the cache entry (idempotent)."""
        if isinstance(self.output, RegisteredMedia):
            self.output.release()
        if self.cached is not None:
            self.cached.release()


@dataclasses.dataclass(eq=False)
class PreprocessResult:
    """The preprocessed request.

    Attributes:
        messages: the request's messages with inline ``data:`` payloads replaced by
            placeholders (``dynamo-media://image_url/0``).
        items: every media item, in request order.
    """

    messages: list[Any]
    items: list[MediaItem]
    media_io_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def multi_modal_data(self) -> dict[str, list[Any]]:
        """``{"image_url": [...], "video_url": [...], "audio_url": [...]}``: descriptors when
        registered, ``DecodedMedia`` otherwise; only the keys present."""
        out: dict[str, list[Any]] = {}
        for item in self.items:
            value = (
                item.output.descriptor if isinstance(item.output, RegisteredMedia) else item.output
            )
            out.setdefault(item.key, []).append(value)
        return out

    def release(self) -> None:
        """Releases every registration the request holds (idempotent)."""
        for item in self.items:
            item.release()

    def defer_early_free(self) -> None:
        """Keeps the registrations when a backend reads them, until ``allow_early_free``: the
        request may still go to another backend (Note [early free] in nixl/_pool.py)."""
        for item in self.items:
            if isinstance(item.output, RegisteredMedia):
                item.output.region.defer_early_free()

    def allow_early_free(self) -> None:
        """The backend answered: registrations it read are freed at once (by the pool's
        listener), the others when read."""
        for item in self.items:
            if isinstance(item.output, RegisteredMedia):
                item.output.region.allow_early_free()


def _part_url(part: Mapping[str, Any], kind: str, param: str) -> str:
    value = part.get(kind)
    if kind == "input_audio":
        if not isinstance(value, Mapping) or not isinstance(value.get("data"), str):
            raise InvalidOptions(f"{param} must be {{'data': <base64>, 'format': ...}}")
        fmt = str(value.get("format", "wav")).lower()
        if fmt not in _AUDIO_FORMATS:
            raise InvalidOptions(
                f"{param}.format {fmt!r} is not supported; use one of {', '.join(_AUDIO_FORMATS)}"
            )
        return f"data:{_AUDIO_FORMATS[fmt]};base64,{value['data']}"
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str) or not url:
        raise InvalidOptions(f"{param} must be {{'url': <string>}}")
    return url


def find_media(messages: Any) -> tuple[list[Any], list[MediaItem]]:
    """The media parts of ``messages``, and a copy of the messages with placeholders.

    Raises:
        InvalidOptions: malformed messages or parts.
    """
    if not isinstance(messages, list):
        raise InvalidOptions("messages must be a list")
    out, items = copy.deepcopy(messages), []
    counts: dict[str, int] = {}
    for i, message in enumerate(out):
        if not isinstance(message, dict):
            raise InvalidOptions(f"messages[{i}] must be an object")
        content = message.get("content")
        if not isinstance(content, list):
            continue  # a string (or no) content holds no media
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES:
                continue
            param = f"messages[{i}].content[{j}].{kind}"
            modality, key = PART_TYPES[kind]
            url = _part_url(part, kind, param)
            index = counts.get(key, 0)
            counts[key] = index + 1
            items.append(MediaItem(param, modality, key, url))
            if url.startswith("data:") or kind == "input_audio":
                content[j] = {"type": kind, kind: {"url": f"dynamo-media://{key}/{index}"}}
    return out, items


def _release_abandoned(work: concurrent.futures.Future[Any]) -> None:
    """Releases the registration of a decode whose request was cancelled while it ran."""
    if not work.cancelled() and work.exception() is None:
        result = work.result()
        if isinstance(result, RegisteredMedia):
            result.release()


class MediaPreprocessor:
    """Turns OpenAI chat requests into decoded, optionally NIXL-registered, media.

    Args:
        decoder: enabled modalities and defaults.
        fetcher: the fetch policy. Default: ``MediaFetcher()``.
        nixl: register every item in this pool. Default: ``None`` (not registered).
        device: where tensors end up. Default: ``"cpu"``.
        max_workers: threads for guard, decode and registration. Default: the CPU count.
        cache: decoded media kept between requests. Default: ``None`` (every item is decoded).
    """

    def __init__(
        self,
        decoder: MediaDecoder,
        fetcher: MediaFetcher | None = None,
        nixl: RegistrationPool | None = None,
        *,
        device: str = "cpu",
        max_workers: int | None = None,
        cache: MediaCache | None = None,
    ) -> None:
        self.decoder = decoder
        self.fetcher = fetcher or MediaFetcher()
        self.nixl = nixl
        self.device = device
        self.cache = cache
        self._pool = low_priority_pool("dynamo-media", max_workers)

    def _run_steps(self, steps: list[Transform], item: MediaItem, value: Any) -> Any:
        try:
            for step in steps:
                start = time.perf_counter()
                value = step(value)
                item.timings[step.stage] = time.perf_counter() - start
        except BaseException:
            if isinstance(value, RegisteredMedia):
                value.release()
            raise
        return value

    async def _on_decode_thread(self, steps: list[Transform], item: MediaItem, value: Any) -> Any:
        """``_run_steps`` on a decode thread. Cancelled while the thread still runs (the request
        went away), what it registers when it ends is released: nobody will."""
        work = self._pool.submit(self._run_steps, steps, item, value)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            work.add_done_callback(_release_abandoned)
            raise

    async def _process_item(self, item: MediaItem, media_io_kwargs: Mapping[str, Any]) -> None:
        try:
            options = self.decoder.options(item.modality, media_io_kwargs.get(item.modality))
            nixl = self.nixl or False
            pipeline = build_pipeline(
                item.modality, options, fetcher=self.fetcher, device=self.device, nixl=nixl
            )
            steps = list(pipeline)
            value: Any = item.url
            while steps and steps[0].stage == "fetch":  # I/O here; the rest on decode threads
                step = steps.pop(0)
                start = time.perf_counter()
                value = await step.aforward(value)
                item.timings[step.stage] = time.perf_counter() - start
            item.fetched_bytes = len(value.data)
            if self.cache is not None:
                key = cache_key(item.modality, value, options, device=self.device)
                steps, value = await self._from_cache(self.cache, key, item, steps, value)
            if steps:
                value = await self._on_decode_thread(steps, item, value)
            item.output = value
        except MediaError as exc:
            item.error = exc.for_item(item.param)
            raise item.error from exc.__cause__

    async def _from_cache(
        self, cache: MediaCache, key: str, item: MediaItem, steps: list[Transform], value: Any
    ) -> tuple[list[Transform], DecodedMedia]:
        """Holds the item's cache entry, decoding it with ``steps`` (but registration) when
        nobody has; returns the steps left (registration) and the decoded media."""
        decode = [step for step in steps if step.stage != "register"]
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        item.cached = await cache.get(
            key, lambda: loop.run_in_executor(self._pool, self._run_steps, decode, item, value)
        )
        if item.cached.hit:
            item.timings["cache"] = time.perf_counter() - start
        return [step for step in steps if step.stage == "register"], item.cached.media

    def prepare(self, request: Mapping[str, Any]) -> PreprocessResult:
        """Finds a request's media items (nothing fetched yet); ``run`` processes them.

        Raises:
            InvalidOptions: malformed messages or parts.
        """
        messages, items = find_media(request.get("messages"))
        return PreprocessResult(messages, items, request.get("media_io_kwargs") or {})

    async def run(self, result: PreprocessResult) -> None:
        """Fetches, checks, decodes (and registers) the items of a prepared request, in place.

        Raises:
            InvalidOptions: bad ``media_io_kwargs``.
            MediaError: the first failing item's error, named by its place in the request;
                every other item's registration has been released.
        """
        media_io_kwargs = result.media_io_kwargs
        if not isinstance(media_io_kwargs, Mapping):
            raise InvalidOptions("media_io_kwargs must be an object keyed by image/video/audio")
        unknown = set(media_io_kwargs) - set(MODALITIES)
        if unknown:
            raise InvalidOptions(
                f"Unknown modality {sorted(unknown)[0]!r} in media_io_kwargs. "
                "Allowed keys: audio, image, video"
            )
        try:
            outcomes = await asyncio.gather(
                *(self._process_item(item, media_io_kwargs) for item in result.items),
                return_exceptions=True,
            )
        except BaseException:  # cancelled: what the items took so far is given back
            result.release()
            raise
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            result.release()
            raise errors[0]

    async def process(self, request: Mapping[str, Any]) -> PreprocessResult:
        """Fetches, checks, decodes (and registers) every media item of a request.

        Args:
            request: an OpenAI chat completion request (``messages``, optional
                ``media_io_kwargs``).

        Returns:
            The messages with placeholders and the items in order. Call ``release()`` when the
            request ends (registrations also free early when the backend has read them).

        Raises:
            MediaError: the first failing item's error, named by its place in the request;
                every other item's registration has been released.
        """
        result = self.prepare(request)
        await self.run(result)
        return result

    def close(self) -> None:
        """Stops the worker threads and closes the cache (its files are deleted)."""
        self._pool.shutdown(wait=True)
        if self.cache is not None:
            self.cache.close()
