"""One URL parser that decides, for http(s) URLs; what it returns is what gets connected to.

It refuses what parsers disagree on (userinfo, backslashes, percent-encoded or control characters
in the host) and reads IPv4 the way browsers do (WHATWG): ``2130706433``, ``0x7f.1``, ``0177.0.0.1``
and ``127.1`` are all 127.0.0.1, so none of them slips past the direct-IP and address checks.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from dynamo_media._errors import PolicyError
from dynamo_media.config import ascii_host

__all__ = ["IPAddress", "ParsedURL", "parse_http_url", "shorten_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_PORT = re.compile(r"[0-9]{1,5}")  # not str.isdigit, which takes other digits, such as '²'
_MAX_SHOWN = 120


def shorten_url(url: str) -> str:
    """A URL, or a part of one (a host, a port), fit for a message: ``data:`` payloads and long
    values are cut. Every message that shows what a client sent goes through it."""
    if url[:5].lower() == "data:":
        head, _, payload = url.partition(",")
        return f"{head[:60]},...({len(payload)} chars)"
    return url if len(url) <= _MAX_SHOWN else f"{url[:_MAX_SHOWN]}...({len(url)} chars)"


@dataclasses.dataclass(frozen=True)
class ParsedURL:
    """An http(s) URL after parsing.

    Attributes:
        scheme: ``"http"`` or ``"https"``.
        host: the host name, lower case without a trailing dot (IDNA-encoded), or the canonical
            text of an IP address.
        ip: the address when the host is an IP literal, else ``None``.
        port: the port to connect to.
        explicit_port: the URL names a port other than the scheme's default.
        target: path and query, as sent in the request line.
    """

    scheme: str
    host: str
    ip: IPAddress | None
    port: int
    explicit_port: bool
    target: str

    @property
    def host_header(self) -> str:
        """The ``Host`` header value."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{host}:{self.port}" if self.explicit_port else host


def _ipv4_number(part: str) -> int | None:
    if not _NUMBER.match(part):
        return None
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8) if set(part) <= set("01234567") else None
    return int(part)


def _invalid_host(host: str, url: str, problem: str) -> PolicyError:
    return PolicyError(f"Invalid host {shorten_url(host)!r} in {shorten_url(url)!r}: {problem}")


def _parse_ipv4(host: str, url: str) -> ipaddress.IPv4Address:
    """WHATWG's IPv4 parser: 1 to 4 parts, decimal, octal or hex; the last fills the rest."""
    parts = host.split(".")
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise _invalid_host(host, url, "not a valid IPv4 address")
    *head, last = numbers
    assert last is not None
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(parts)):  # type: ignore[operator]
        raise _invalid_host(host, url, "IPv4 part out of range")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))  # type: ignore[operator]
    return ipaddress.IPv4Address(value)


def _parse_host(host: str, url: str) -> tuple[str, IPAddress | None]:
    if host.startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise _invalid_host(host, url, "not a valid IPv6 address") from exc
        return str(ip6), ip6
    try:
        name = ascii_host(host)
    except ValueError as exc:
        raise _invalid_host(host, url, str(exc)) from exc
    labels = name.split(".")
    if _NUMBER.match(labels[-1]):  # a host ending in a number is an IPv4 address (WHATWG)
        ip4 = _parse_ipv4(name, url)
        return str(ip4), ip4
    if len(name) > 253:
        raise _invalid_host(host, url, f"{len(name)} characters, over 253")
    for label in labels:  # IDNA kept each label under 64 characters
        if not _LABEL.match(label):
            raise _invalid_host(
                host,
                url,
                f"label {label!r} must be letters, digits, '-' or '_', not empty, and not start "
                "or end with '-'",
            )
    return name, None


def parse_http_url(url: str) -> ParsedURL:
    """Parses an http(s) URL, refusing every form that parsers read differently.

    Args:
        url: the URL as the client sent it.

    Returns:
        The parsed URL.

    Raises:
        PolicyError: not http(s), userinfo, backslashes, control characters, an invalid or
            percent-encoded host, a bad port.
    """
    shown = shorten_url(url)
    if "\\" in url or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise PolicyError(f"URL {shown!r} contains a backslash, space or control character")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS or not rest.startswith("//"):
        raise PolicyError(f"Not an http(s) URL: {shown!r}")
    rest = rest[2:]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, target = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority:
        raise PolicyError(f"URLs with credentials (user@host) are refused: {shown!r}")
    if "%" in authority:
        raise PolicyError(f"Percent-encoded hosts are refused: {shown!r}")
    host, port_text = authority, ""
    if authority.startswith("["):
        close = authority.find("]")
        host, port_text = authority[: close + 1], authority[close + 1 :]
        if port_text and not port_text.startswith(":"):
            raise PolicyError(f"Invalid host in {shown!r}")
        port_text = port_text[1:]
    elif ":" in authority:
        host, _, port_text = authority.partition(":")
    if not host:
        raise PolicyError(f"URL has no host: {shown!r}")
    name, ip = _parse_host(host, url)
    port = DEFAULT_PORTS[scheme]
    if port_text:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise PolicyError(f"Invalid port {shorten_url(port_text)!r} in {shown!r}")
        port = int(port_text)
    return ParsedURL(
        scheme=scheme,
        host=name,
        ip=ip,
        port=port,
        explicit_port=port != DEFAULT_PORTS[scheme],
        target=target if target.startswith("/") else "/" + target,
    )
