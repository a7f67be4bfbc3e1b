"""The fetch policy's checks: what a parsed URL may be, and where it may resolve to."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dynamo_media._errors import FetchError, PolicyError
from dynamo_media.fetch._url import IPAddress, ParsedURL, shorten_url

if TYPE_CHECKING:
    from dynamo_media.config import FetchPolicy, Resolver

__all__ = ["address_refusal", "check_url", "domain_allowed", "resolve_checked", "system_resolver"]


def domain_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` matches the allowlist: exact, or ``*.example.com`` for subdomains.

    Both sides compare in lower case without a trailing dot.
    """
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def address_refusal(ip: IPAddress) -> str | None:
    """Why an address is not public (``"loopback"``, ``"private"``, ...), or ``None``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def check_url(parsed: ParsedURL, policy: FetchPolicy, url: str) -> None:
    """Checks what can be checked before resolving: direct IP, port, allowed domains.

    Raises:
        PolicyError: naming the rule and the setting that would allow the URL.
    """
    shown = shorten_url(url)
    if parsed.ip is not None and not policy.allow_direct_ip:
        raise PolicyError(
            f"URL {shown!r} uses an IP address as its host; direct IPs are refused "
            "(allow_direct_ip is false)"
        )
    if parsed.explicit_port and not policy.allow_direct_port:
        raise PolicyError(
            f"URL {shown!r} names port {parsed.port}; explicit ports are refused "
            "(allow_direct_port is false)"
        )
    allowed = policy.allowed_media_domains
    if allowed is not None and not domain_allowed(parsed.host, allowed):
        raise PolicyError(f"Host {parsed.host!r} of {shown!r} is not in allowed_media_domains")


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Resolves with the system's DNS (``getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


def resolve_checked(
    parsed: ParsedURL, policy: FetchPolicy, url: str, resolver: Resolver | None
) -> IPAddress:
    """Resolves the host once and checks every address; returns the one to connect to.

    Raises:
        FetchError: the host does not resolve.
        PolicyError: an address is loopback, private, link-local, multicast, reserved or
            unspecified, and ``allow_private_ips`` is false.
    """
    if parsed.ip is not None:
        addresses: Sequence[IPAddress] = [parsed.ip]
    else:
        try:
            addresses = (resolver or system_resolver)(parsed.host, parsed.port)
        except OSError as exc:
            raise FetchError(f"Cannot resolve host {parsed.host!r} of {shorten_url(url)}") from exc
        if not addresses:
            raise FetchError(f"Host {parsed.host!r} of {shorten_url(url)} has no address")
    if not policy.allow_private_ips:
        # Every address must pass: a host with one public and one private record could
        # otherwise be steered to the private one (DNS rebinding).
        for ip in addresses:
            reason = address_refusal(ip)
            if reason is not None:
                raise PolicyError(
                    f"Host {parsed.host!r} of {shorten_url(url)} resolves to {ip}, a {reason} "
                    "address; refused (allow_private_ips is false)"
                )
    return addresses[0]
