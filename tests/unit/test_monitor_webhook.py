"""The monitor's HTTP endpoints (monitoring.webhook): malformed payloads, unknown paths and bad tokens
through Flask's test client; bad Content-Lengths, oversize bodies and idle connections against the real
server on a socket (the server closes an idle connection after MONITOR_HTTP_TIMEOUT_SECONDS and its
thread ends). Nothing refused reaches the retrain trigger."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import store
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger
from monitoring.webhook import create_app, make_server

TOKEN = "hook-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FIRING = {"alerts": [{"status": "firing", "labels": {"alertname": "ChurnLiveRecallLow"}}]}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MonitorSettings:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'hook.db'}")
    monkeypatch.setenv("RETRAIN_TRIGGER", "log")
    monkeypatch.setenv("MONITOR_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("MONITOR_METRICS_PORT", "0")
    monkeypatch.setenv("MONITOR_HTTP_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("MONITOR_WEBHOOK_MAX_BYTES", "4096")
    return MonitorSettings.from_env()


@pytest.fixture
def client(settings):
    return create_app(settings, RetrainTrigger(settings)).test_client()


@pytest.fixture
def port(settings):
    server = make_server(settings, RetrainTrigger(settings), host="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def events(settings: MonitorSettings) -> int:
    with store.engine_for(settings.database_url).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(store.trigger_events)).scalar()


def raw(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, dict]:
    """Send `request` as it is; the status and the JSON body of the answer (the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(headers: str, body: bytes = b"") -> bytes:
    return (
        f"POST /alerts HTTP/1.1\r\nHost: monitor\r\nAuthorization: Bearer {TOKEN}\r\n{headers}\r\n".encode()
        + body
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([1, 2], "the body must be an object"),
        ("x", "the body must be an object"),
        ({"alerts": "abc"}, "`alerts` must be an array, not a string"),
        ({"alerts": [{"status": "firing"}, 7]}, "`alerts[1]` must be an object, not a number"),
        ({"alerts": [["firing"]]}, "`alerts[0]` must be an object, not an array"),
        ({"alerts": [{"labels": "ChurnDataDrift"}]}, "`alerts[0].labels` must be an object"),
        ({"alerts": [{"labels": {"alertname": 3}}]}, "`alerts[0].labels.alertname` must be a string"),
        ({"alerts": [{"annotations": {"summary": None}}]}, "`alerts[0].annotations.summary` must be a"),
        ({"alerts": [{"status": True}]}, "`alerts[0].status` must be a string"),
        ({"status": 1, "alerts": []}, "`status` must be a string"),
    ],
)
def test_a_malformed_payload_is_400_naming_the_field(client, settings, payload, field):
    # a valid alert before the bad one: nothing is acted on until the whole payload is checked
    r = client.post("/alerts", json=payload, headers=AUTH)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert field in r.json["error"]
    assert events(settings) == 0


def test_a_body_that_is_not_json_is_400(client, settings):
    for body in (b"{not json", b"\xff\xfe", b"[" * 4000):
        r = client.post("/alerts", data=body, headers=AUTH, content_type="application/json")
        assert r.status_code == 400 and r.json == {"error": "body is not JSON"}
    assert events(settings) == 0


def test_an_empty_body_and_no_alerts_fire_nothing(client, port, settings):
    assert raw(port, post("Content-Length: 0\r\n")) == (200, {"events": []})
    assert client.post("/alerts", json={"alerts": None}, headers=AUTH).json == {"events": []}
    assert events(settings) == 0


def test_a_firing_alert_fires_once(client, settings):
    r = client.post("/alerts", json=FIRING, headers=AUTH)
    assert r.status_code == 200 and r.json["events"][0]["status"] == "fired"
    assert client.post("/alerts", json=FIRING, headers=AUTH).json["events"][0]["status"] == "duplicate"


def test_unknown_paths_are_404_and_other_methods_405(client, settings):
    for path in ("/alertsXYZ", "/alerts/", "/alerts/x", "/", "/v1/alerts"):
        r = client.post(path, json=FIRING, headers=AUTH)
        assert r.status_code == 404 and r.json == {"error": "not found"}, path
    for path in ("/metricsX", "/healthzz", "/metrics/x"):
        assert client.get(path).status_code == 404, path
    assert client.get("/alerts").status_code == 405
    assert client.post("/metrics", headers=AUTH).json == {"error": "method not allowed"}
    assert events(settings) == 0
    assert client.get("/healthz").json == {"status": "ok"}
    assert b"monitor_alert_webhooks_total" in client.get("/metrics?name=x").data


def test_a_wrong_or_missing_token_is_401(client, settings):
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN}X"},
        {"Authorization": f"bearer {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer  {TOKEN}"},
        {"Authorization": "Bearer hook-secrét"},
    ):
        r = client.post("/alerts", json=FIRING, headers=headers)
        assert r.status_code == 401 and r.json == {"error": "bad or missing bearer token"}, headers
    # refused before the body is read: a malformed one is still 401, not 400
    assert client.post("/alerts", data=b"[", headers={"Authorization": "Bearer x"}).status_code == 401
    assert events(settings) == 0


def test_without_a_token_the_webhook_is_503(settings, monkeypatch):
    closed = settings.model_copy(update={"webhook_token": ""})
    client = create_app(closed, RetrainTrigger(closed)).test_client()
    for headers in ({}, {"Authorization": "Bearer "}, AUTH):
        r = client.post("/alerts", json=FIRING, headers=headers)
        assert r.status_code == 503 and "MONITOR_WEBHOOK_TOKEN" in r.json["error"]
    assert events(settings) == 0


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ("Content-Length: -1\r\n", 400, "bad Content-Length: '-1'"),
        ("Content-Length: abc\r\n", 400, "bad Content-Length: 'abc'"),
        ("Content-Length: 1e3\r\n", 400, "bad Content-Length"),
        ("", 411, "Content-Length header is required"),
        ("Transfer-Encoding: chunked\r\n", 411, "no Transfer-Encoding"),
        ("Content-Length: 5000\r\n", 413, "body over 4096 bytes (MONITOR_WEBHOOK_MAX_BYTES)"),
    ],
    ids=["negative", "text", "float", "missing", "chunked", "over-the-limit"],
)
def test_a_bad_content_length_is_answered_at_once(port, settings, headers, status, message):
    started = time.monotonic()
    code, body = raw(port, post(headers, b'{"alerts": []}'))
    assert (code, time.monotonic() - started < 0.9) == (status, True), body
    assert message in body["error"]
    assert events(settings) == 0


def test_an_oversize_body_is_413(port, settings):
    body = json.dumps({"alerts": [FIRING["alerts"][0]] * 100}).encode()
    assert len(body) > 4096
    code, answer = raw(port, post(f"Content-Length: {len(body)}\r\n", body))
    assert code == 413 and "MONITOR_WEBHOOK_MAX_BYTES" in answer["error"]
    assert events(settings) == 0


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_idle_connections_are_closed_and_their_threads_end(port, settings):
    """MONITOR_HTTP_TIMEOUT_SECONDS=1: connections that send nothing, or a request cut short, are closed
    by the server after about a second, and the thread count comes back to what it was."""
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(post("Content-Length: 100\r\n", b'{"alerts": '))  # the body never completes
    opened = time.monotonic()
    try:
        assert wait_until(lambda: threading.active_count() >= before + 21, 5), threading.active_count()
        for sock in [*idle, half]:
            while sock.recv(65536):  # whatever the server answers, then its end of the connection
                pass
        closed_after = time.monotonic() - opened
        assert 0.9 <= closed_after < 5, closed_after
        assert wait_until(lambda: threading.active_count() <= before, 5), threading.active_count()
    finally:
        for sock in [*idle, half]:
            sock.close()
    assert events(settings) == 0
    # the server still answers
    assert raw(port, b"GET /healthz HTTP/1.1\r\nHost: monitor\r\n\r\n") == (200, {"status": "ok"})
