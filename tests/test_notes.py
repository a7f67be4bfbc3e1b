"""Every ``Note [title]`` the package points to exists: a line of its own, ``# Note [title]`` (or
``Note [title]`` in a docstring), somewhere in ``dynamo_media`` (STYLE.md, "Code")."""

import collections
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dynamo_media"

_TITLE = re.compile(r"Note \[([^\]]+)\]")
_DEFINITION = re.compile(r"^\s*(?:# )?Note \[([^\]]+)\]\s*$", re.MULTILINE)
# A reference may wrap: a line break (and a comment's "#") inside it reads as one space.
_WRAP = re.compile(r"\s*\n\s*(?:#\s*)?")


def notes() -> tuple[collections.Counter[str], dict[str, list[str]]]:
    """The titles defined (with how often), and the titles referred to (with where)."""
    defined: collections.Counter[str] = collections.Counter()
    referred: dict[str, list[str]] = collections.defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        titles = _DEFINITION.findall(text)
        defined.update(titles)
        remaining = collections.Counter(titles)  # each definition also matches _TITLE once
        for title in _TITLE.findall(_WRAP.sub(" ", text)):
            if remaining[title]:
                remaining[title] -= 1
            else:
                referred[title].append(path.relative_to(PACKAGE.parent).as_posix())
    return defined, referred


def test_every_referenced_note_exists() -> None:
    defined, referred = notes()
    missing = {title: where for title, where in referred.items() if title not in defined}
    assert not missing, missing


def test_each_note_is_defined_once() -> None:
    defined, _ = notes()
    assert defined  # the pattern still finds them
    assert [title for title, count in defined.items() if count > 1] == []


def test_a_dangling_reference_is_found(tmp_path: Path) -> None:
    text = "# Note [kept]\nx = 1  # see Note [kept], and Note [gone,\n# wrapped]\n"
    assert _DEFINITION.findall(text) == ["kept"]
    assert _TITLE.findall(_WRAP.sub(" ", text)) == ["kept", "kept", "gone, wrapped"]
