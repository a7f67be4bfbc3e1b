"""The ``dynamo-media`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dynamo_media import MediaDecoder, MediaError, MediaFetcher

__all__ = ["main"]


def _decode(args: argparse.Namespace) -> int:
    source: str = args.source
    url = source if ":" in source.split("/")[0] else f"file://{_abspath(source)}"
    fetcher = MediaFetcher().allowed_local_media_path("/")
    decoder = MediaDecoder()
    decoder.enable_image()
    pipe = decoder.pipeline("image", fetcher=fetcher)
    print(pipe)
    try:
        out = pipe(url)
    except MediaError as exc:
        print(f"error ({exc.status}): {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="dynamo-media", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    decode = commands.add_parser("decode", help="decode one file or URL and print a summary")
    decode.add_argument("source", help="a path or URL")
    decode.set_defaults(run=_decode)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
