import re
import subprocess
import sys

import pytest

import dynamo_media._errors as errors
from dynamo_media import (
    BackendNotReady,
    BackendTimeout,
    BackendUnavailable,
    DecodeError,
    FetchError,
    FetchTimeout,
    InvalidOptions,
    LimitExceeded,
    MediaError,
    ModalityDisabled,
    NoMediaStream,
    Overloaded,
    PolicyError,
    ReadError,
    TooLarge,
    TooManyRedirects,
    UpstreamStatus,
    decode_video,
)
from dynamo_media._openai import error_body
from tests.test_audio import FORMATS, tone


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (InvalidOptions, 400),
        (ModalityDisabled, 400),
        (PolicyError, 400),
        (FetchError, 422),
        (FetchTimeout, 422),
        (TooLarge, 422),
        (TooManyRedirects, 422),
        (LimitExceeded, 400),
        (DecodeError, 400),
        (NoMediaStream, 400),
        (Overloaded, 503),
        (ReadError, 502),
        (BackendUnavailable, 502),
        (BackendTimeout, 504),
        (BackendNotReady, 503),
    ],
)
def test_status_and_tree(cls: type[MediaError], status: int) -> None:
    # LimitExceeded names the limit it counts under (tests/test_inputs.py checks each one).
    err = cls("boom", limit="max_alloc") if cls is LimitExceeded else cls("boom")
    assert isinstance(err, MediaError)
    assert err.status == status
    assert str(err) == "boom"
    assert err.param is None


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (FetchTimeout, FetchError),
        (UpstreamStatus, FetchError),
        (TooLarge, FetchError),
        (TooManyRedirects, FetchError),
        (NoMediaStream, DecodeError),
    ],
)
def test_subclasses_answer_as_their_parent(cls: type[MediaError], parent: type[MediaError]) -> None:
    assert cls.__bases__ == (parent,)
    assert cls.status == parent.status
    err = cls("boom", upstream_status=404) if cls is UpstreamStatus else cls("boom")
    body = error_body(err)["error"]
    assert body["type"] == error_body(parent("boom"))["error"]["type"]
    assert body["code"] == cls.__name__


@pytest.mark.parametrize(
    ("cls", "kind"), [(BackendTimeout, "server_error"), (BackendNotReady, "overloaded_error")]
)
def test_backend_errors_are_unavailable_with_their_own_status(
    cls: type[BackendUnavailable], kind: str
) -> None:
    """A caller catching ``BackendUnavailable`` catches both; the answer's status is their own."""
    assert cls.__bases__ == (BackendUnavailable,)
    body = error_body(cls("boom"))["error"]
    assert body["type"] == kind
    assert body["code"] == cls.__name__


def test_invalid_options_is_a_value_error() -> None:
    assert issubclass(InvalidOptions, ValueError)


def test_for_item_prefixes_and_chains() -> None:
    cause = ValueError("root cause")
    err = DecodeError("corrupt jpeg")
    err.__cause__ = cause
    item = err.for_item("messages[0].content[1].image_url")
    assert type(item) is DecodeError
    assert str(item) == "messages[0].content[1].image_url: corrupt jpeg"
    assert item.param == "messages[0].content[1].image_url"
    assert item.__cause__ is cause


def test_for_item_keeps_the_attributes_of_a_subclass() -> None:
    err = UpstreamStatus("HTTP 404 fetching http://a.test/x.png", upstream_status=404)
    item = err.for_item("messages[0].content[0].image_url")
    assert type(item) is UpstreamStatus
    assert isinstance(item, UpstreamStatus)  # for mypy
    assert item.upstream_status == 404
    assert str(item) == "messages[0].content[0].image_url: HTTP 404 fetching http://a.test/x.png"
    assert item.__cause__ is err


def test_no_media_stream_from_an_audio_only_file() -> None:
    with pytest.raises(NoMediaStream, match="no video stream in the file") as info:
        decode_video(tone(*FORMATS["aac-m4a"]))
    assert isinstance(info.value, DecodeError)
    assert info.value.status == 400


# One line of the drawing: the branches, the class name, and its status when it has one.
_TREE_LINE = re.compile(r"^(?P<indent>[│ ]*)[├└]── (?P<name>\w+)\s+(?P<status>\d{3})\s")


def drawn_tree() -> dict[str, tuple[str, int]]:
    """``{class name: (parent name, status)}`` as the docstring of ``_errors.py`` draws them."""
    assert errors.__doc__ is not None
    lines = errors.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    root = lines[0].split()[0]
    parents, drawn = [root], {}
    for line in lines[1:]:
        if match := _TREE_LINE.match(line.removeprefix("    ")):
            depth = len(match["indent"]) // 4
            del parents[depth + 1 :]
            drawn[match["name"]] = (parents[depth], int(match["status"]))
            parents.append(match["name"])
    return drawn


def test_tree_is_drawn_in_docstring() -> None:
    classes = {
        name: cls
        for name in errors.__all__
        if isinstance(cls := getattr(errors, name), type) and name != "MediaError"
    }
    assert len(classes) == 16
    assert drawn_tree() == {
        name: (cls.__bases__[0].__name__, cls.status) for name, cls in classes.items()
    }


def test_completion_ids_differ_across_calls_and_forked_processes() -> None:
    """In a process of its own (forking this one, which has threads, is unsafe): a forked child
    draws another key, so its first id is not its parent's next one."""
    script = (
        "import os\n"
        "from dynamo_media._openai import completion_id\n"
        "ids = [completion_id(), completion_id()]\n"
        "read, write = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.write(write, completion_id().encode())\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print(*ids, os.read(read, 100).decode(), completion_id())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    ids = done.stdout.split()
    assert len(ids) == 4 and all(re.fullmatch(r"chatcmpl-[0-9a-f]{24}", i) for i in ids), done
    assert len(set(ids)) == 4  # the child's first id is not the parent's third
