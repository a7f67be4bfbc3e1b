"""https through the pinned path (Note [pinned pools]): the socket goes to the checked address,
while SNI and the certificate check use the URL's host name. A throwaway CA and a certificate for
``media.test``, made by the ``openssl`` CLI, serve a file from 127.0.0.1."""

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_media import FetchError, MediaFetcher
from dynamo_media.fetch import _http
from tests.conftest import resolve_test_host
from tests.media_server import MediaServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")

BODY = bytes(range(256)) * 400


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path, host: str) -> None:
    """``ca.pem`` (a CA) and ``leaf.pem``/``leaf.key`` (a server certificate for ``host``, signed
    by it), with the extensions a strict verifier asks for."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        *("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"),
        *("-subj", "/CN=dynamo-media test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign"),
        cwd=folder,
    )
    openssl(
        "req",
        "-new",
        *key,
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        f"/CN={host}",
        cwd=folder,
    )
    (folder / "leaf.ext").write_text(
        f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        *("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"),
        cwd=folder,
    )


class TlsServer:
    """A ``MediaServer`` over TLS with a ``media.test`` certificate, and the server names (SNI)
    its clients asked for."""

    def __init__(self, folder: Path) -> None:
        make_certificates(folder, "media.test")
        self.ca = folder / "ca.pem"
        self.sni: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
        context.sni_callback = lambda _sock, name, _context: self.sni.append(name)
        self.media = MediaServer(tls=context)
        self.path = self.media.add("tls.bin", BODY, "image/png")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path_factory.mktemp("tls"))
    yield server
    server.media.stop()


def local_fetcher() -> MediaFetcher:
    """``media.test`` and ``other.test`` are 127.0.0.1, allowed with the server's port."""
    return (
        MediaFetcher(resolver=resolve_test_host)
        .allow_private_ips(True)
        .allow_direct_port(True)
        .timeout_ms(5000)
    )


@pytest.fixture
def trust_test_ca(tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "CA_CERTS", str(tls_server.ca))


class TestHttps:
    def test_fetches_from_the_name_at_the_pinned_address(
        self, tls_server: TlsServer, trust_test_ca: None
    ) -> None:
        url = tls_server.media.url(tls_server.path)
        enc = local_fetcher().fetch(url)
        assert enc.data == BODY
        assert enc.mime == "image/png"
        assert tls_server.sni[-1] == "media.test"  # not the address it connected to
        assert tls_server.media.hosts[-1] == f"media.test:{tls_server.media.port}"

    def test_unknown_ca_is_refused(self, tls_server: TlsServer) -> None:
        url = tls_server.media.url(tls_server.path)
        with pytest.raises(FetchError, match=r"^Cannot fetch https://media\.test:\d+/.*: SSLError"):
            local_fetcher().fetch(url)

    def test_certificate_for_another_name_is_refused(
        self, tls_server: TlsServer, trust_test_ca: None
    ) -> None:
        # other.test is the same address and port: after a verified connection to media.test,
        # it must get a pool (and a handshake) of its own.
        fetcher = local_fetcher()
        assert fetcher.fetch(tls_server.media.url(tls_server.path)).data == BODY
        other = tls_server.media.url(tls_server.path, host="other.test")
        with pytest.raises(FetchError, match=r"^Cannot fetch https://other\.test:\d+/.*: SSLError"):
            fetcher.fetch(other)
        assert tls_server.sni[-1] == "other.test"

    def test_connection_is_reused(self, tls_server: TlsServer, trust_test_ca: None) -> None:
        fetcher = local_fetcher()
        for _ in range(4):
            assert fetcher.fetch(tls_server.media.url(tls_server.path)).data == BODY
        assert len(set(tls_server.media.peers[-4:])) == 1
