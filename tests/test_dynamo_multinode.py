"""Many nodes, on loopback: etcd discovery and the NATS request plane, as a deployment across
machines runs them. The test starts ``etcd`` and ``nats-server`` (Debian's ``etcd-server`` and
``nats-server``, which ``make setup`` installs) on free 127.0.0.1 ports, two ``dynamo-media
worker`` processes and ``dynamo-media serve --workers 0``, all configured by Dynamo's environment
alone (the README's deployment section), and sends mixed requests with media through them."""

import asyncio
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.serve import free_port, serving_process, worker_process
from tests.test_dynamo_load import (
    CONFIG,
    Outcome,
    assert_answers_right,
    assert_nothing_held,
    load,
    mixed_requests,
)

pytest.importorskip("dynamo.runtime", reason="ai-dynamo-runtime (the dynamo extra) is missing")

ETCD = shutil.which("etcd")
NATS = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
pytestmark = pytest.mark.skipif(
    ETCD is None or NATS is None,
    reason="etcd or nats-server is not installed: `make setup` installs Debian's etcd-server "
    "and nats-server (apt-get install etcd-server nats-server)",
)


@contextlib.contextmanager
def daemon(cmd: Sequence[str], port: int, log: Path) -> Iterator[None]:
    """Runs ``cmd`` until the block ends, once it accepts connections on 127.0.0.1:``port``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"{cmd[0]} exited: {log.read_text()[-2000:]}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, f"{cmd[0]} did not listen on {port} in 30 s"
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def etcd_instances(endpoint: str) -> list[dict]:
    """The instance records Dynamo keeps in etcd (``v1/instances/...``), through etcd's JSON
    gateway."""
    prefix = b"v1/instances/"
    query = {
        "key": base64.b64encode(prefix).decode(),
        "range_end": base64.b64encode(prefix[:-1] + b"0").decode(),  # '/' + 1: the prefix's end
    }
    answer = httpx.post(f"{endpoint}/v3/kv/range", json=query, timeout=5).json()
    return [json.loads(base64.b64decode(kv["value"])) for kv in answer.get("kvs", [])]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """etcd, NATS, two workers and a frontend; yields the frontend's URL and etcd's."""
    assert ETCD is not None and NATS is not None
    root = tmp_path_factory.mktemp("multinode")
    client, peer, nats = free_port(), free_port(), free_port()
    etcd_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    etcd = [ETCD, "--name", "t", "--data-dir", str(root / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"t={peer_url}"]  # fmt: skip
    nats_server = [NATS, "-a", "127.0.0.1", "-p", str(nats), "-js", "-sd", str(root / "nats")]
    env = {
        "DYN_DISCOVERY_BACKEND": "etcd",
        "ETCD_ENDPOINTS": etcd_url,
        "DYN_REQUEST_PLANE": "nats",
        "NATS_SERVER": f"nats://127.0.0.1:{nats}",
        "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",  # where workers stream answers back
        "DYN_LOG": "warn",
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(daemon(etcd, client, root / "etcd.log"))
        stack.enter_context(daemon(nats_server, nats, root / "nats.log"))
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for key, value in env.items():
            patch.setenv(key, value)
        for _ in range(2):
            stack.enter_context(worker_process("dynamo_media.cli", "worker"))
        args = ["--transport", "dynamo", "--workers", "0"]
        _, url = stack.enter_context(serving_process(CONFIG, args=args))
        yield url, etcd_url


class TestEtcdAndNats:
    def test_both_workers_are_listed_in_etcd_on_the_nats_plane(
        self, cluster: tuple[str, str]
    ) -> None:
        url, etcd_url = cluster
        instances = etcd_instances(etcd_url)
        assert len(instances) == 2
        # "nats_tcp": how Dynamo names an instance reached over the NATS request plane.
        assert all(list(i["transport"]) == ["nats_tcp"] for i in instances), instances
        assert httpx.get(f"{url}/health", timeout=5).json()["backend"] == {
            "instances": 2,
            "barred": 0,
        }

    def test_mixed_requests_with_media(self, cluster: tuple[str, str]) -> None:
        url, _ = cluster
        outcomes: list[Outcome] = []
        asyncio.run(load(url, mixed_requests(24), outcomes, 4))
        assert [o.status for o in outcomes] == [200] * 24
        assert_answers_right(outcomes)
        assert len({o.pid for o in outcomes if o.pid is not None}) == 2
        assert_nothing_held(url)
