"""The stack's load balancer (compose/nginx/nginx.conf) run for real by Debian's nginx, in front of the
service under its real server: what nginx answers itself is JSON like the service's errors, and the
service's own answers pass through untouched.

The config is the shipped file with only what Compose provides replaced: the replicas' address
(Docker's DNS name `model-service` -> the test's service on loopback), the listen address, and the
paths of the pid file, temporary folders and logs (so no root-owned path is needed). The Compose stack
test (`make stack-test`) runs it unchanged in the stack.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from operations.waiting import wait_until
from tests.conftest import REPO, free_port, require_server
from tests.support.service_process import (
    API_KEY,
    RECORD,
    Service,
    private_store,
    raw_request,
    service_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = REPO / "compose" / "nginx" / "nginx.conf"


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        require_server("nginx (apt-get install nginx-light) is not installed")
    return found


def render(service_port: int, port: int, root: Path) -> Path:
    text = CONFIG.read_text()
    swaps = {
        "set $service http://model-service:8000;": f"set $service http://127.0.0.1:{service_port};",
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "pid /tmp/nginx.pid;": f"pid {root}/nginx.pid;",
        "access_log /dev/stdout main;": f"access_log {root}/access.log main;",
        "error_log  /dev/stderr warn;": f"error_log {root}/error.log warn;",
    }
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        swaps[f"/tmp/{temp};"] = f"{root}/{temp};"
    for old, new in swaps.items():
        assert old in text, f"compose/nginx/nginx.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    path = root / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def service(trained_champion, tmp_path_factory):
    root = tmp_path_factory.mktemp("svc-lb")
    svc = Service(root, service_env(private_store(trained_champion.env, root / "store"), root))
    svc.start()
    yield svc
    svc.cleanup()


@contextlib.contextmanager
def running_nginx(upstream_port: int, root: Path) -> Iterator[tuple[str, int]]:
    """Debian's nginx on the shipped config, in front of 127.0.0.1:upstream_port: (url, port)."""
    nginx = _nginx()
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render(upstream_port, port, root)
    checked = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-e", str(root / "error.log")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-e", str(root / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 20, "nginx to answer /lb-health")
        yield url, port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def lb(service: Service, tmp_path_factory):
    with running_nginx(service.port, tmp_path_factory.mktemp("lb")) as running:
        yield running


def _up(url: str) -> bool:
    try:
        return requests.get(url + "/lb-health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n", 400),
        (b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (
            b"POST /v1/predict HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Content-Length: 9000000\r\n\r\n",
            413,
        ),
        (b"GET /_lb/400.json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 404),
    ],
    ids=[
        "not-http",
        "malformed-header",
        "header-over-16KB",
        "request-line-over-16KB",
        "body-over-8MB",
        "lb-path",
    ],
)
def test_what_nginx_answers_itself_is_json(lb, request_bytes, code):
    status, headers, body = raw_request(lb[1], request_bytes)
    assert status == code
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["code"] == code and answer["message"] and answer["status"]


def test_the_service_answers_pass_through(lb, service: Service):
    url = lb[0]
    ok = requests.post(
        url + "/v1/predict", json={"records": [RECORD]}, headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] in (0, 1)
    assert ok.headers["X-Request-ID"] == ok.json()["request_id"]  # the service's header, not nginx's
    missing = requests.get(url + "/nope", timeout=10)
    assert missing.status_code == 404 and missing.json()["message"] == "no endpoint at /nope"  # the service's
    refused = requests.post(
        url + "/v1/predict",
        json={"records": [RECORD]},
        headers={"X-API-Key": "wrong-key-0123456789"},
        timeout=10,
    )
    assert refused.status_code == 403 and refused.json()["code"] == 403  # a key that is not known


def test_no_replica_answering_is_a_json_503(tmp_path: Path):
    with running_nginx(free_port(), tmp_path / "lb") as (_, port):  # nothing listens on that port
        status, headers, body = raw_request(
            port, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    assert status == 503 and headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == 503
