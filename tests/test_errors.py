import pytest

from dynamo_media import (
    BackendUnavailable,
    DecodeError,
    FetchError,
    InvalidOptions,
    LimitExceeded,
    MediaError,
    ModalityDisabled,
    Overloaded,
    PolicyError,
    ReadError,
)


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (InvalidOptions, 400),
        (ModalityDisabled, 400),
        (PolicyError, 400),
        (FetchError, 422),
        (LimitExceeded, 400),
        (DecodeError, 400),
        (Overloaded, 503),
        (ReadError, 502),
        (BackendUnavailable, 502),
    ],
)
def test_status_and_tree(cls: type[MediaError], status: int) -> None:
    err = cls("boom")
    assert isinstance(err, MediaError)
    assert err.status == status
    assert str(err) == "boom"
    assert err.param is None


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


def test_tree_is_drawn_in_docstring() -> None:
    import dynamo_media._errors as errors

    classes = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    assert len(classes) == 10
    for name in classes:
        assert name in errors.__doc__
