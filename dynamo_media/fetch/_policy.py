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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_ISATAP_IDS = (0x0000_5EFE, 0x0200_5EFE)  # the interface id's upper half: ::5efe:a.b.c.d
_REASONS = (
    "unspecified",
    "loopback",
    "link_local",
    "site_local",
    "multicast",
    "reserved",
    "private",
)


def domain_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` matches the allowlist: exact, or ``*.example.com`` for subdomains.

    Both sides are in ``ascii_host``'s form: the parser writes hosts so, ``FetchPolicy`` its
    entries.
    """
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


# Note [IPv6 addresses that carry an IPv4 address]
# Some IPv6 addresses deliver to, or through, an IPv4 address written inside them: a 6to4 relay
# sends 2002:7f00:1:: to 127.0.0.1, a NAT64 gateway 64:ff9b::a9fe:a9fe to 169.254.169.254. So
# the IPv4 address inside is judged as if it were given. The translations (IPv4-mapped, 6to4,
# NAT64's well-known prefix) are judged by it alone, whatever Python's tables say of their IPv6
# ranges; the tunnels (Teredo's server and client, ISATAP) by their IPv6 address as well.
# IPv4-compatible addresses (::a.b.c.d, deprecated) lie in ::/8, refused as reserved, and so is
# NAT64's local-use prefix 64:ff9b:1::/48.


def _carried_ipv4(
    ip: ipaddress.IPv6Address,
) -> tuple[bool, list[tuple[str, ipaddress.IPv4Address]]]:
    """Whether ``ip`` is a translation, and the IPv4 addresses it carries, each with its form.

    See Note [IPv6 addresses that carry an IPv4 address].
    """
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip.ipv4_mapped is not None:
        return True, [("IPv4-mapped", ip.ipv4_mapped)]
    if ip.sixtofour is not None:
        return True, [("6to4", ip.sixtofour)]
    if ip in _NAT64:
        return True, [("NAT64", low32)]
    if ip.teredo is not None:
        server, client = ip.teredo
        return False, [("Teredo server", server), ("Teredo client", client)]
    if (int(ip) >> 32) & 0xFFFF_FFFF in _ISATAP_IDS:
        return False, [("ISATAP", low32)]
    return False, []


def _own_refusal(ip: IPAddress) -> str | None:
    for reason in _REASONS:
        if getattr(ip, f"is_{reason}", False):  # is_site_local is IPv6's only
            return reason.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why an address is not public, or ``None``.

    Returns:
        ``"loopback"``, ``"private"``, ``"site-local"``, ...; for an IPv6 address refused for
        the IPv4 address inside it, the form and that address too: ``"loopback (6to4
        127.0.0.1)"`` (see Note [IPv6 addresses that carry an IPv4 address]).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        translation, carried = _carried_ipv4(ip)
        for form, ipv4 in carried:
            reason = _own_refusal(ipv4)
            if reason is not None:
                return f"{reason} ({form} {ipv4})"
        if translation:
            return None
    return _own_refusal(ip)


def _host_of(parsed: ParsedURL, url: str) -> str:
    return f"{shorten_url(parsed.host)!r} of {shorten_url(url)!r}"


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
        raise PolicyError(
            f"Host {_host_of(parsed, url)} is not in allowed_media_domains; add it there to "
            "fetch from it"
        )


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
        PolicyError: an address is loopback, private, link-local, site-local, multicast, reserved
            or unspecified (or carries such an IPv4 address), and ``allow_private_ips`` is false.
    """
    if parsed.ip is not None:
        addresses: Sequence[IPAddress] = [parsed.ip]
    else:
        try:
            addresses = (resolver or system_resolver)(parsed.host, parsed.port)
        except OSError as exc:
            raise FetchError(f"Cannot resolve host {_host_of(parsed, url)}") from exc
        if not addresses:
            raise FetchError(f"Host {_host_of(parsed, url)} has no address")
    if not policy.allow_private_ips:
        # Every address must pass: a host with one public and one private record could
        # otherwise be steered to the private one (DNS rebinding).
        for ip in addresses:
            reason = address_refusal(ip)
            if reason is not None:
                raise PolicyError(
                    f"Host {_host_of(parsed, url)} resolves to {ip}, a {reason} address; refused "
                    "(allow_private_ips is false)"
                )
    return addresses[0]
