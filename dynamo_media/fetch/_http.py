"""HTTP(S) downloads under the policy, with ``requests``.

Each hop (the URL, then every redirect) is parsed, checked and resolved once; the request goes to
the checked address with the original ``Host`` header, and TLS still verifies the host name (SNI
and certificate check use the name, the socket uses the address). Redirects are followed by hand
so that every hop is checked again. One deadline bounds the whole download, hops included: a
watchdog shuts down the socket of a fetch that passes it, so a server that drips bytes cannot
stretch it (see Note [One deadline, whatever the server does] in ``_deadline.py``). With
``http_cache_bytes``, cacheable answers are kept and reused (Note [HTTP cache] in
``_http_cache.py``).
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import urllib.parse
from typing import TYPE_CHECKING, Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool

from dynamo_media._errors import FetchError, TooLarge, TooManyRedirects, UpstreamStatus
from dynamo_media.fetch._deadline import Deadline, active_deadline
from dynamo_media.fetch._http_cache import HttpCache, StoredResponse
from dynamo_media.fetch._policy import check_url, resolve_checked
from dynamo_media.fetch._url import ParsedURL, parse_http_url, shorten_url

if TYPE_CHECKING:
    from dynamo_media.config import FetchPolicy, Resolver

__all__ = ["HttpClient"]

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


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Connects to the address in the URL, but names the ``Host`` header's host to TLS; its pools
    put every connection under the fetch's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        if host_params["scheme"] == "https":
            name = urllib.parse.urlsplit("//" + request.headers["Host"]).hostname
            pool_kwargs["server_hostname"] = name
            pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs


class HttpClient:
    """A pooled HTTP client bound to one policy.

    Args:
        policy: what may be fetched.
        resolver: ``(host, port) -> addresses``. Default: the system's DNS.
    """

    def __init__(self, policy: FetchPolicy, *, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        session = requests.Session()
        session.trust_env = False  # no proxies or .netrc from the environment
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = _PinnedAdapter(pool_connections=_POOL_SIZE, pool_maxsize=_POOL_SIZE)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.clear()
        session.headers.update(
            {"User-Agent": policy.user_agent, "Accept": "*/*", "Accept-Encoding": "identity"}
        )
        self.session = session
        self.cache = HttpCache(policy.http_cache_bytes) if policy.http_cache_bytes else None

    def _pinned_url(self, parsed: ParsedURL, url: str) -> str:
        ip = resolve_checked(parsed, self.policy, url, self.resolver)
        host = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
        return f"{parsed.scheme}://{host}:{parsed.port}{parsed.target}"

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
                pinned = self._pinned_url(parsed, url)
                response = self._send(pinned, parsed, url, deadline, stored)
                with response:
                    if response.status_code in _REDIRECTS and "Location" in response.headers:
                        url = urllib.parse.urljoin(url, response.headers["Location"])
                        continue
                    if stored is not None and response.status_code == 304:
                        assert self.cache is not None  # stored came from it
                        self.cache.revalidated(url, stored, response.headers)
                        return stored.body, stored.mime
                    body, mime = self._body(response, url, deadline)
                    if self.cache is not None:
                        self.cache.store(url, body, mime, response.headers)
                    return body, mime
        raise TooManyRedirects(
            f"Too many redirects fetching {shorten_url(url)} (max_redirects is "
            f"{self.policy.max_redirects})"
        )

    def _send(
        self,
        pinned: str,
        parsed: ParsedURL,
        url: str,
        deadline: Deadline,
        stored: StoredResponse | None,
    ) -> requests.Response:
        remaining = deadline.remaining()
        headers = {"Host": parsed.host_header}
        if stored is not None:
            headers.update(stored.validators())
        try:
            return self.session.get(
                pinned,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(remaining, remaining),
            )
        except requests.Timeout as exc:
            raise deadline.expired() from exc
        except requests.RequestException as exc:
            raise FetchError(f"Cannot fetch {shorten_url(url)}: {type(exc).__name__}") from exc

    def _body(
        self, response: requests.Response, url: str, deadline: Deadline
    ) -> tuple[bytes, str | None]:
        shown = shorten_url(url)
        status = response.status_code
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
        raw: urllib3.HTTPResponse = response.raw
        body = bytearray()
        try:
            while True:
                chunk = raw.read1(_CHUNK, decode_content=True)  # returns what has arrived
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
