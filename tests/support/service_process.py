"""A real server process (`python -m model_service.server`, granian) running the model service, for the integration tests (tests/integration/test_service_*)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import func, select

from core.dataset import load_config
from core.store import make_engine, predictions
from operations.waiting import wait_until
from tests.conftest import REPO, free_port, wait_for_http

API_KEY = "test-key-0123456789abcdef"
ADMIN_TOKEN = "test-admin-0123456789abcdef"

RECORD = load_config(REPO / "config" / "telco_churn.yaml").example_record


def private_store(trained_env: dict[str, str], root: Path) -> dict[str, str]:
    """A copy of the session's MLflow store, so these tests may move aliases without touching others'."""
    root.mkdir(parents=True, exist_ok=True)
    src = trained_env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    dst = root / "mlflow.db"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return {**trained_env, "MLFLOW_TRACKING_URI": f"sqlite:///{dst}"}


@dataclass
class Service:
    root: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 120.0) -> Service:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        env.setdefault("SPOOL_DIR", str(self.root / "spool"))
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.root / f"metrics-{self.port}")
        self.log_path = self.root / f"service-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "model_service.server"],
            cwd=REPO,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        if wait and not self.wait_ready(timeout):
            self.stop()
            raise RuntimeError(f"service did not become ready; log:\n{self.log()[-3000:]}")
        return self

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """Ready in every worker: /metrics counts one loaded model per worker."""
        if not wait_for_http(self.url + "/health", timeout, self.process):
            return False
        workers = int(self.env.get("SERVICE_WORKERS", "2"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            text = requests.get(self.url + "/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith("model_service_model_loaded ") and float(line.split()[1]) >= workers:
                    return True
            time.sleep(0.3)
        return False

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root / f"metrics-{self.port}", ignore_errors=True)

    # ---- client helpers
    def predict(self, records: list[dict], key: str = API_KEY, session=None, **kw) -> requests.Response:
        return (session or requests).post(
            self.url + "/v1/predict",
            json={"records": records},
            headers={"X-API-Key": key},
            timeout=kw.pop("timeout", 30),
            **kw,
        )

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in requests.get(self.url + "/metrics", timeout=5).text.splitlines():
            if not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total


WRITER_MODULE = "model_service.prediction_log.writer_process"


def children(parent: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live child of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def workers_of(parent: int) -> list[int]:
    """The granian worker processes of a server's main process (its writer process left out)."""
    return [pid for pid, cmd in children(parent) if WRITER_MODULE not in cmd]


def writer_of(parent: int) -> int | None:
    """The prediction log writer process of a server's main process."""
    return next((pid for pid, cmd in children(parent) if WRITER_MODULE in cmd), None)


class Traffic:
    """`clients` threads posting 3-record predictions; every 200 is remembered as (request id, records)."""

    def __init__(self, svc: Service, clients: int = 4):
        self.svc = svc
        self.accepted: dict[str, int] = {}
        self.errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            n = 3
            try:
                r = self.svc.predict([RECORD] * n, session=session)
            except requests.RequestException:
                self.errors += 1  # in flight to the killed worker: not answered, not counted
                session = requests.Session()
                continue
            if r.status_code == 200:
                self.accepted[r.json()["request_id"]] = n
            else:
                self.errors += 1

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def wait_for(self, more: int, what: str) -> None:
        target = len(self.accepted) + more
        wait_until(lambda: len(self.accepted) >= target, 120, what)


def service_env(store_env: dict[str, str], root: Path, **extra: str) -> dict[str, str]:
    return {
        **store_env,
        "DATABASE_URL": f"sqlite:///{root / 'service.db'}",
        "API_KEYS": API_KEY,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SERVICE_WORKERS": "2",
        "SERVICE_THREADS": "4",
        "RELOAD_INTERVAL_SECONDS": "1",
        "GRACEFUL_TIMEOUT": "20",
        **extra,
    }


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no HTTP client to fix them up) and read until the server closes:
    (status code, headers lower-cased, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status.split()[1]), headers, body


def stored_by_request(url: str) -> dict[str, int]:
    """Records in the prediction log's database, by request id ({} while its tables are not there or it
    is down)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id)
            ).all()
    except Exception:  # noqa: BLE001 - tables not there yet / database down: nothing stored
        return {}
    finally:
        engine.dispose()
    return dict(rows)
