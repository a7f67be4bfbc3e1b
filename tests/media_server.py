"""A real threaded HTTP(S) server on 127.0.0.1 for fetch tests and benchmarks; it counts hits and
notes the connection each request came on.

Routes:
    /file/<name>                 a registered body (Content-Type and headers from ``add``); 304
                                 to an ``If-None-Match`` that names its ``ETag``, or an
                                 ``If-Modified-Since`` not older than its ``Last-Modified``
    /chunked/<name>              the same body, chunked (no Content-Length)
    /redirect?to=<url>           302 to ``url``
    /status/<code>               that status, empty body
    /slow?seconds=<s>            headers, then a wait, then a small body
    /drip?bytes=<n>&every=<s>    one byte every ``every`` seconds
    /drip-headers?bytes=<n>&every=<s>
                                 the status line and headers (with ``n`` bytes of padding) one
                                 byte every ``every`` seconds, then a small body
"""

from __future__ import annotations

import collections
import email.utils
import http.server
import ssl
import threading
import time
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MediaServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, a keep-alive client's delayed
    # ACK held the body ~40 ms on every request after the first.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(
        self,
        status: int,
        body: bytes,
        mime: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _not_modified(self, headers: dict[str, str]) -> bool:
        etag, since = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
        if etag is not None:  # it wins over If-Modified-Since (RFC 9110, 13.2.2)
            return "ETag" in headers and headers["ETag"] in (t.strip() for t in etag.split(","))
        if since is not None and "Last-Modified" in headers:
            modified = email.utils.parsedate_to_datetime(headers["Last-Modified"])
            return modified <= email.utils.parsedate_to_datetime(since)
        return False

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.hits[url.path] += 1
        self.server.hosts.append(self.headers.get("Host", ""))
        self.server.peers.append(self.client_address)
        kind, _, name = url.path.strip("/").partition("/")
        if kind == "file" and name in self.server.files:
            body, mime = self.server.files[name]
            headers = self.server.file_headers.get(name, {})
            if self._not_modified(headers):
                self.server.not_modified[url.path] += 1
                self.send_response(304)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
            else:
                self._send(200, body, mime, headers)
        elif kind == "chunked" and name in self.server.files:
            body, mime = self.server.files[name]
            self.send_response(200)
            self.send_header("Content-Type", mime)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i in range(0, len(body), 65536):
                    piece = body[i : i + 65536]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client stopped reading (a body over max_bytes)
                self.close_connection = True
        elif kind == "redirect":
            self._send(302, b"", headers={"Location": query["to"]})
        elif kind == "status":
            self._send(int(name), b"")
        elif kind == "slow":
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            time.sleep(float(query.get("seconds", "2")))
            self.wfile.write(b"late")
        elif kind == "drip":
            n, every = int(query.get("bytes", "100")), float(query.get("every", "0.1"))
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                for _ in range(n):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(every)
            except OSError:
                pass
        elif kind == "drip-headers":
            pad, every = int(query.get("bytes", "100")), float(query.get("every", "0.1"))
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Pad: " + b"x" * pad + b"\r\n\r\n"
            self.close_connection = True
            try:
                for i in range(len(head)):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    time.sleep(every)
                self.wfile.write(b"late")
            except OSError:
                pass
        else:
            self._send(404, b"not found", "text/plain")


class MediaServer(http.server.ThreadingHTTPServer):
    """Serves registered bodies on 127.0.0.1 (a free port) from a background thread.

    Args:
        tls: serves https with this context (its certificate and key loaded). Default: ``None``,
            plain http.
    """

    daemon_threads = True
    # socketserver's 5 drops the connections of a burst of fetches (a benchmark's 32 fetch
    # threads opening theirs at once), which then wait a second for the SYN to be sent again.
    request_queue_size = 128

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            # The handshake runs as a connection is accepted; a client that refuses it makes
            # accept() fail, which socketserver ignores.
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "http" if tls is None else "https"
        self.files: dict[str, tuple[bytes, str]] = {}
        self.file_headers: dict[str, dict[str, str]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.not_modified: collections.Counter[str] = collections.Counter()  # 304s sent
        self.hosts: list[str] = []
        # The client address of each request: one per connection, so reuse shows.
        self.peers: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def add(
        self,
        name: str,
        body: bytes,
        mime: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> str:
        """Registers a body, with extra response headers (``Cache-Control``, ``ETag``,
        ``Last-Modified``); returns its path (``/file/<name>``)."""
        self.files[name] = (body, mime)
        self.file_headers[name] = dict(headers or {})
        return f"/file/{name}"

    def url(self, path: str, host: str = "media.test") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def main() -> None:
    """``python -m tests.media_server DIR``: serves DIR's files as /file/<name> in this process
    (so that a benchmark's client does not share the server's interpreter); prints the port."""
    import sys
    from pathlib import Path

    server = MediaServer()
    for path in Path(sys.argv[1]).iterdir():
        server.add(path.name, path.read_bytes())
    print(server.port, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.stop()


if __name__ == "__main__":
    main()
