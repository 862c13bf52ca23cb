"""Slow clients against the service: `make bench-slow-clients` -> docs/benchmarks.md ("Slow clients").

Starts the service as `make serve` runs it (granian, `model_service/server.py`, default workers and
threads) and, for comparison, under gunicorn (`tools/gunicorn_conf.py`, gthread, the server it
replaced) with the same threads; against each: `GET /health` timed 20 times on an idle server, then
12 connections that each send a request line and one header byte per second (never finishing their
headers) and, while they hang, `GET /health` timed 10 times (fresh connections, 30 s client timeout);
finally how long the server kept the slow connections before closing them (granian's header read
timeout; gunicorn has none for a request that has started). Needs a champion (`make train gate`).
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from model_service.server import HEADER_READ_TIMEOUT_MS
from model_service.settings import ServiceSettings
from operations.waiting import wait_http
from tools.bench_report import update_section
from tools.bench_serve import start_service, stop

SLOW = 12
HOLD = 60  # seconds a slow client keeps sending one byte a second, unless the server closes it first


class SlowConnections:
    def __init__(self, port: int):
        self.port = port
        self.closed_after: list[float] = []  # seconds from the request line until the server let go
        self.ended = 0  # connections finished either way (closed by the server, or sent everything)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(SLOW)]

    def _run(self) -> None:
        start = time.monotonic()
        shed = False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                try:
                    for _ in range(HOLD):
                        if self.stop.wait(1.0):
                            break
                        sock.sendall(b"a")
                        sock.settimeout(0.001)
                        try:
                            sock.recv(1024)  # an answer or the end: the server let go of it
                        except TimeoutError:
                            sock.settimeout(5)
                            continue
                        shed = True
                        break
                except OSError:
                    shed = True  # reset by the server while sending
        except OSError:
            pass  # never connected: not counted as shed
        with self.lock:
            self.ended += 1
            if shed:
                self.closed_after.append(time.monotonic() - start)

    def __enter__(self) -> SlowConnections:
        for t in self.threads:
            t.start()
        time.sleep(2.0)  # every one has started its headers
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def health_ms(url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        try:
            requests.get(url + "/health", timeout=30, headers={"Connection": "close"}).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
        except requests.RequestException:
            times.append(float("inf"))
    return times


def fmt(ms: float) -> str:
    return "over 30 s (timed out)" if ms == float("inf") else f"{ms:.1f} ms"


def measure(kind: str, work: Path, key: str, workers: int) -> dict:
    proc, port, _ = start_service(kind, "write", work, key, workers)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ready", 180, proc)
        idle = health_ms(url, 20)
        with SlowConnections(port) as slow:
            loaded = health_ms(url, 10)
            deadline = time.monotonic() + HOLD + 5
            while slow.ended < SLOW and time.monotonic() < deadline:
                time.sleep(0.5)
            closed = sorted(slow.closed_after)
        return {
            "kind": kind,
            "idle_p50": statistics.median(idle),
            "p50": statistics.median(loaded),
            "max": max(loaded),
            "shed": len(closed),
            "shed_after": statistics.median(closed) if closed else float("nan"),
        }
    finally:
        stop(proc)


def main() -> int:
    settings = ServiceSettings.from_env()
    key = secrets.token_hex(16)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        for kind in ("granian", "gunicorn"):
            rows.append(measure(kind, Path(tmp), key, settings.workers))
            print(rows[-1], flush=True)
    lines = [
        f"`make bench-slow-clients` (`tools/bench_slow_clients.py`): the service with {settings.workers} "
        f"workers x {settings.threads} threads (`SERVICE_THREADS`, the default of `make serve`) under each "
        f"server; `GET /health` 20 times idle, then {SLOW} connections that each send a request line and one "
        "header byte per second, and `GET /health` 10 times (fresh connections, 30 s timeout) while they "
        f"hang; then how long the server kept them (each would send for {HOLD} s).",
        "",
        "| server | /health idle p50 | under 12 slow connections: p50 | max | slow connections closed by the server | after (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']}{' (the server)' if r['kind'] == 'granian' else ''} | {fmt(r['idle_p50'])} | "
            f"{fmt(r['p50'])} | {fmt(r['max'])} | {r['shed']} of {SLOW} | "
            + (f"{r['shed_after']:.1f} s |" if r["shed"] else "- |")
        )
    granian, gunicorn = rows
    lines += [
        "",
        "granian reads requests in its Rust runtime: a connection still sending its headers holds no Python "
        f"thread, and one that has not finished them after {HEADER_READ_TIMEOUT_MS / 1000:.0f} s is closed "
        f"(`model_service/server.py`; in this run {granian['shed']} of {SLOW}). gunicorn's gthread worker "
        "gives each connection that has started its headers a thread until it finishes them, so more slow "
        "clients than threads starve a worker (with 4 threads, some `/health` calls waited over 30 s in the "
        f"first measurement); in this run it closed {gunicorn['shed']} of {SLOW} within {HOLD} s. In the "
        "Compose stack nginx reads whole requests before it passes them on. "
        "`tests/integration/test_service_slow_clients.py` runs the attack against `make serve`'s setup: "
        "while the slow connections hang, `/health` and a prediction answer, and the server closes every "
        "one of them, none before the header read timeout.",
    ]
    text = "\n".join(lines)
    print(text)
    update_section("Slow clients", text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.exit(main())
