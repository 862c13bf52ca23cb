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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from model_service.server import HEADER_READ_TIMEOUT_MS
from model_service.settings import ServiceSettings
from operations.waiting import wait_until
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


# --------------------------------------------------------------------------- slow bodies (issue 24)
STALLED_BODIES = 40  # the attack of issue 24: more than the app threads of both workers (2 x 16)


def _stall_a_body(port: int) -> socket.socket:
    """A predict request with a valid key whose body never comes: 100,000 bytes announced, 13 sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-API-Key: " + API_KEY.encode() + b"\r\nContent-Length: 100000\r\n\r\n" + b'{"records": ['
    )
    return sock


def _answer(sock: socket.socket, timeout: float) -> tuple[int | None, bool]:
    """(status of the answer, or None if none came within `timeout`; whether the server closed)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        status = int(data.split(b" ", 2)[1]) if data else None
        sock.settimeout(2)
        while sock.recv(65536):
            pass
        return status, True
    except TimeoutError:
        return (int(data.split(b" ", 2)[1]) if data else None), False
    except ConnectionResetError:
        return (int(data.split(b" ", 2)[1]) if data else None), True


def test_stalled_bodies_do_not_starve_health(service: Service):
    """Issue 24, item 2: on f185c98 each stalled body held an app thread for as long as its client
    wanted, so 40 of them (more than 2 workers x 16 threads) made /health and predict time out. Now at
    most BODY_READERS threads of a worker (half of them) read bodies: /health answers, the stalled
    requests past that bound are answered 503 (after waiting up to 1 s for a reader) and closed, and
    the threads are free again once the stalled clients leave (granian cannot time out a body read)."""
    readers = 2 * (ServiceSettings.model_fields["threads"].default // 2)  # BODY_READERS of both workers
    stalled = [_stall_a_body(service.port) for _ in range(STALLED_BODIES)]
    try:
        threading.Event().wait(1)  # every stalled request has reached a worker
        for _ in range(10):  # fresh connections: they may land on any worker
            resp = requests.get(service.url + "/health", timeout=5, headers={"Connection": "close"})
            assert resp.status_code == 200
        with ThreadPoolExecutor(STALLED_BODIES) as pool:  # those being read get no answer: liveness only
            answers = list(pool.map(lambda sock: _answer(sock, timeout=5), stalled))
        counts = Counter(status for status, _ in answers)
        print(f"answers to the {STALLED_BODIES} stalled bodies: {dict(counts)}")
        assert set(counts) <= {503, None}, counts
        assert counts[503] >= STALLED_BODIES - readers, counts
        assert all(closed for status, closed in answers if status == 503)
    finally:
        for sock in stalled:
            sock.close()

    # the stalled clients have left: their bodies ended short (400), the threads are free again
    def predict() -> bool:
        resp = requests.post(
            service.url + "/v1/predict",
            json={"records": [RECORD]},
            headers={"X-API-Key": API_KEY, "Connection": "close"},
            timeout=20,
        )
        assert resp.status_code in (200, 503), resp.text
        return resp.status_code == 200

    wait_until(predict, 30, "a prediction once the stalled clients have left")
