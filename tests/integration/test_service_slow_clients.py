"""Slow clients cannot starve the service as `make serve` runs it (default workers and threads).

Twelve connections (the attack of issue 11) each send a request line and then one header byte at a
time, never finishing their headers; while they hang, `GET /health` and a prediction still answer.
No timing threshold: only a generous client timeout, which a starved worker would exceed (it queues
new requests behind the slow ones for as long as they keep sending). Then the server sheds them: a
client still sending its headers after HEADER_READ_TIMEOUT_MS is disconnected (long before its headers
would be complete).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from model_service.server import HEADER_READ_TIMEOUT_MS
from tests.support.service_process import API_KEY, RECORD, Service, private_store, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOW_CLIENTS = 12
HOLD_SECONDS = 40  # each slow client keeps sending for this long (longer than the checks below take)
assert HOLD_SECONDS > 2 * HEADER_READ_TIMEOUT_MS / 1000  # so that being shed is the server's doing


@pytest.fixture(scope="module")
def service(trained_champion, tmp_path_factory):
    root = tmp_path_factory.mktemp("svc-slow")
    env = service_env(private_store(trained_champion.env, root / "store"), root)
    env.pop("SERVICE_THREADS")  # the default of `make serve`
    svc = Service(root, env)
    svc.start()
    yield svc
    svc.cleanup()


class SlowClients:
    """Connections that send a request line, then one header byte every `interval` seconds."""

    def __init__(self, port: int, n: int, interval: float = 1.0):
        self.port, self.n, self.interval = port, n, interval
        self.stop = threading.Event()
        self.connected = threading.Semaphore(0)
        self.shed: list[float] = []  # seconds after which the server closed a connection still sending
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        connected = False
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                connected = True
                self.connected.release()
                header = b"X-Slow: " + b"a" * HOLD_SECONDS
                for byte in header:
                    if self.stop.wait(self.interval):
                        return
                    sock.sendall(bytes([byte]))
                    sock.settimeout(0.001)
                    try:
                        sock.recv(1024)  # an answer (408) or b"" (closed): the server let go of it
                    except TimeoutError:
                        sock.settimeout(5)  # still open: keep sending
                        continue
                    self._count_shed(start)
                    return
        except OSError:
            if connected:
                self._count_shed(start)  # reset by the server
            else:
                self.connected.release()  # never connected: not shed, and the test's count says so

    def _count_shed(self, start: float) -> None:
        with self.lock:
            self.shed.append(time.monotonic() - start)

    def __enter__(self) -> SlowClients:
        for t in self.threads:
            t.start()
        for _ in range(self.n):
            self.connected.acquire(timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_health_and_predict_answer_while_slow_clients_hang(service: Service):
    with SlowClients(service.port, SLOW_CLIENTS) as slow:
        threading.Event().wait(2 * slow.interval)  # they have started their headers
        for _ in range(10):  # fresh connections: they may land on any worker
            resp = requests.get(service.url + "/health", timeout=20, headers={"Connection": "close"})
            assert resp.status_code == 200
        resp = requests.post(
            service.url + "/v1/predict",
            json={"records": [RECORD]},
            headers={"X-API-Key": API_KEY, "Connection": "close"},
            timeout=20,
        )
        assert resp.status_code == 200, resp.text
        assert any(t.is_alive() for t in slow.threads), "the slow clients must still be hanging"
        for t in slow.threads:  # still inside HOLD_SECONDS: only the server can end them now
            t.join(HOLD_SECONDS)
        assert len(slow.shed) == SLOW_CLIENTS, f"{len(slow.shed)} of {SLOW_CLIENTS} slow clients shed"
        # shed by the header read timeout, not for some other reason before it (a lower bound only)
        assert min(slow.shed) >= HEADER_READ_TIMEOUT_MS / 1000 - 1, sorted(slow.shed)
