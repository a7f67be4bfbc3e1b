"""HTTP(S) downloads under the policy, with ``urllib3``.

Each hop (the URL, then every redirect) is parsed, checked and resolved once; the request goes to
the checked address with the original ``Host`` header, and TLS still verifies the host name (SNI
and certificate check use the name, the socket uses the address). Redirects are followed by hand
so that every hop is checked again. One deadline bounds the whole download, hops included: a
watchdog shuts down the socket of a fetch that passes it, so a server that drips bytes cannot
stretch it (see Note [One deadline, whatever the server does] in ``_deadline.py``). With
``http_cache_bytes``, cacheable answers are kept and reused (Note [HTTP cache] in
``_http_cache.py``).

Note [pinned pools]
The client is a ``urllib3.PoolManager`` asked for pools by address, never by URL: a hop's pool is
``connection_from_host(ip, port, scheme)``, where ``ip`` is the address that ``resolve_checked``
passed, so urllib3 resolves nothing and a redirect cannot reach an unchecked address. For https
the pool key also holds the host name as ``server_hostname`` (SNI) and ``assert_hostname`` (the
certificate check): one address serving two names gets a pool per name, and a connection made for
one name never carries a request for another. Nothing comes from the environment (no proxies,
no ``.netrc``, no CA variables) and nothing is kept between requests but the connections (no
cookies). A connection goes back to its pool only when its body was read to the end; a body cut
short (a redirect's, an error's, one over ``max_bytes``) closes it.
"""

from __future__ import annotations

import ssl
import urllib.parse
from typing import TYPE_CHECKING

import certifi
import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.ssl_

from dynamo_media._errors import FetchError, TooLarge, TooManyRedirects, UpstreamStatus
from dynamo_media.fetch._deadline import Deadline, active_deadline
from dynamo_media.fetch._http_cache import HttpCache, StoredResponse
from dynamo_media.fetch._policy import check_url, resolve_checked
from dynamo_media.fetch._url import ParsedURL, parse_http_url, shorten_url

if TYPE_CHECKING:
    from dynamo_media.config import FetchPolicy, Resolver

__all__ = ["CA_CERTS", "HttpClient"]

# The certificates that https servers are verified against: certifi's bundle (what ``requests``
# trusts), not the system's store or an environment variable, so that what a deployment trusts
# does not change with its base image or environment. Read when an ``HttpClient`` is made (a
# fetcher's first http(s) fetch, and each policy change); tests point it at a CA of their own.
CA_CERTS = certifi.where()

_CHUNK = 1 << 20
_POOL_SIZE = 32
_REDIRECTS = (301, 302, 303, 307, 308)


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    """Hands each connection to the running fetch's deadline as it is taken from the pool."""

    def _get_conn(self, timeout: float | None = None) -> urllib3.connection.HTTPConnection:
        conn = super()._get_conn(timeout)
        assert isinstance(conn, urllib3.connection.HTTPConnection)  # what ConnectionCls makes
        active_deadline().claim(conn)
        return conn


class _WatchedHTTPSPool(_WatchedHTTPPool, urllib3.connectionpool.HTTPSConnectionPool):
    """``_WatchedHTTPPool`` for https."""


def _tls_context() -> ssl.SSLContext:
    """urllib3's TLS settings, verifying against ``CA_CERTS``; made once per client, since loading
    the bundle takes ~15 ms, which urllib3 would otherwise spend on every new connection."""
    context = urllib3.util.ssl_.create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(CA_CERTS)
    return context


class HttpClient:
    """A pooled HTTP client bound to one policy (Note [pinned pools]).

    Args:
        policy: what may be fetched.
        resolver: ``(host, port) -> addresses``. Default: the system's DNS.
    """

    def __init__(self, policy: FetchPolicy, *, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        self._pools = urllib3.PoolManager(
            num_pools=_POOL_SIZE,
            maxsize=_POOL_SIZE,
            cert_reqs="CERT_REQUIRED",
            ssl_context=_tls_context(),
        )
        self._pools.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        self._headers = {
            "User-Agent": policy.user_agent,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }
        self.cache = HttpCache(policy.http_cache_bytes) if policy.http_cache_bytes else None

    def close(self) -> None:
        """Closes the pooled connections; a fetch after this opens new ones."""
        self._pools.clear()

    def _pool(self, parsed: ParsedURL, url: str) -> urllib3.connectionpool.HTTPConnectionPool:
        """The pool of the checked address of ``parsed`` (and, for https, its host name)."""
        ip = resolve_checked(parsed, self.policy, url, self.resolver)
        tls = {"server_hostname": parsed.host, "assert_hostname": parsed.host}
        return self._pools.connection_from_host(
            str(ip),
            parsed.port,
            parsed.scheme,
            pool_kwargs=tls if parsed.scheme == "https" else None,
        )

    def get(self, url: str, deadline: Deadline) -> tuple[bytes, str | None]:
        """Downloads a URL, following redirects under the policy.

        Args:
            url: the URL.
            deadline: bounds the whole download, redirects included.

        Returns:
            The body and the ``Content-Type`` (without parameters), if any.

        Raises:
            PolicyError: the URL or a redirect is refused.
            FetchTimeout: past the deadline.
            UpstreamStatus: the last hop answered other than 200.
            TooLarge: the body is over ``max_bytes``.
            TooManyRedirects: more hops than ``max_redirects``.
            FetchError: the host has no address, the connection was refused or broke.
        """
        with deadline:
            for _hop in range(self.policy.max_redirects + 1):
                parsed = parse_http_url(url)
                check_url(parsed, self.policy, url)
                hit = self.cache.lookup(url) if self.cache is not None else None
                stored, fresh = hit if hit is not None else (None, False)
                if stored is not None and fresh:
                    return stored.body, stored.mime
                pool = self._pool(parsed, url)
                response = self._send(pool, parsed, url, deadline, stored)
                try:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        url = urllib.parse.urljoin(url, response.headers["Location"])
                        continue
                    if stored is not None and response.status == 304:
                        assert self.cache is not None  # stored came from it
                        self.cache.revalidated(url, stored, response.headers)
                        return stored.body, stored.mime
                    body, mime = self._body(response, url, deadline)
                    if self.cache is not None:
                        self.cache.store(url, body, mime, response.headers)
                    return body, mime
                finally:
                    _end(response)
        raise TooManyRedirects(
            f"Too many redirects fetching {shorten_url(url)} (max_redirects is "
            f"{self.policy.max_redirects})"
        )

    def _send(
        self,
        pool: urllib3.connectionpool.HTTPConnectionPool,
        parsed: ParsedURL,
        url: str,
        deadline: Deadline,
        stored: StoredResponse | None,
    ) -> urllib3.BaseHTTPResponse:
        remaining = deadline.remaining()
        headers = {**self._headers, "Host": parsed.host_header}
        if stored is not None:
            headers.update(stored.validators())
        try:
            return pool.urlopen(
                "GET",
                parsed.target,
                headers=headers,
                retries=False,
                redirect=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # A refused connection (NewConnectionError) is a ConnectTimeoutError too, for
            # urllib3's history, but no timeout.
            if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
                exc, urllib3.exceptions.NewConnectionError
            ):
                raise deadline.expired() from exc
            raise FetchError(f"Cannot fetch {shorten_url(url)}: {type(exc).__name__}") from exc

    def _body(
        self, response: urllib3.BaseHTTPResponse, url: str, deadline: Deadline
    ) -> tuple[bytes, str | None]:
        shown = shorten_url(url)
        status = response.status
        if status != 200:
            problem = "HTTP" if status >= 400 else "Unexpected HTTP"
            raise UpstreamStatus(f"{problem} {status} fetching {shown}", upstream_status=status)
        limit = self.policy.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(
                f"{shown} is {declared} bytes, over max_bytes ({limit}); raise max_bytes or "
                "send a smaller file"
            )
        body = bytearray()
        try:
            while True:
                chunk = response.read1(_CHUNK, decode_content=True)  # returns what has arrived
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise TooLarge(
                        f"{shown} is over max_bytes ({limit}) bytes; raise max_bytes or send "
                        "a smaller file"
                    )
                deadline.remaining()
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
            raise deadline.expired() from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise FetchError(f"Connection broke while fetching {shown}") from exc
        mime = response.headers.get("Content-Type")
        return bytes(body), (mime.partition(";")[0].strip().lower() or None) if mime else None


def _end(response: urllib3.BaseHTTPResponse) -> None:
    """Gives a response's connection back to its pool, closed unless its body was read to the end.

    A body read to its end has already given its connection back (urllib3 does, on the read that
    finds the end). An empty one (a 304, a redirect with ``Content-Length: 0``) is read here, which
    touches no socket. Any other is cut short: its connection is closed, so that the rest of the
    body cannot be taken for the next request's answer, and the closed connection goes back to
    take its place in the pool (it connects again when next used).
    """
    if response.length_remaining == 0:
        response.read()
    response.close()
    response.release_conn()
