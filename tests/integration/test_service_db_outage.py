"""Prediction log on PostgreSQL: the database stops and restarts under traffic, then SIGTERM; no record lost."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from sqlalchemy import func, select

from core.store import make_engine, predictions
from operations.waiting import wait_until
from tests.support.service_process import RECORD, Service, private_store, service_env, stored_by_request

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _count(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(predictions)).scalar_one()
    finally:
        engine.dispose()


def test_database_outage_and_shutdown_lose_nothing(postgres_server, trained_champion, tmp_path):
    db_url = postgres_server.create_database("svc_outage")
    store = private_store(trained_champion.env, tmp_path / "store")
    svc = Service(tmp_path / "svc", service_env(store, tmp_path / "svc", DATABASE_URL=db_url))
    svc.start()
    accepted: list[tuple[str, int]] = []  # (request id, records) of every 200
    failures: list[str] = []
    stop = threading.Event()

    def traffic():
        session = requests.Session()
        while not stop.is_set():
            n = 3
            try:
                r = session.post(
                    svc.url + "/v1/predict",
                    json={"records": [RECORD] * n},
                    headers={"X-API-Key": svc.env["API_KEYS"]},
                    timeout=30,
                )
            except requests.RequestException as exc:
                failures.append(repr(exc))
                continue
            if r.status_code == 200:
                accepted.append((r.json()["request_id"], n))
            else:
                failures.append(f"{r.status_code} {r.text[:200]}")
            time.sleep(0.01)

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(accepted) >= 20, 60, "traffic before the outage")
        postgres_server.stop()  # the database goes away under traffic
        down_since = len(accepted)
        wait_until(
            lambda: (
                len(accepted) > down_since + 10 and svc.metric("model_service_log_spooled_records_total") > 0
            ),
            60,
            "predictions accepted and spooled while the database is down",
        )
        ready = requests.get(svc.url + "/ready", timeout=10).json()
        assert ready["database"] == "unreachable" and ready["status"] == "degraded" and ready["ready"] is True
        postgres_server.start()  # back: spooled records are replayed
        wait_until(
            lambda: svc.metric("model_service_log_replayed_records_total") > 0, 60, "spooled records replayed"
        )
        stop.set()
        for t in threads:
            t.join(30)
        expected = sum(n for _, n in accepted)
        wait_until(lambda: _count(db_url) >= expected, 60, f"{expected} records in the database")
        assert svc.metric("model_service_log_replayed_records_total") > 0
        # a last burst, then SIGTERM at once: the workers flush their queues on the way out
        burst = [svc.predict([RECORD] * 20) for _ in range(10)]
        assert all(r.status_code == 200 for r in burst)
        accepted += [(r.json()["request_id"], 20) for r in burst]
        assert svc.stop() == 0, svc.log()[-2000:]
    finally:
        stop.set()
        svc.cleanup()
    assert failures == []
    expected = sum(n for _, n in accepted)
    assert _count(db_url) == expected, f"expected {expected} logged records, log:\n{svc.log()[-3000:]}"
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(predictions.c.request_id, func.count()).group_by(predictions.c.request_id)
        ).all()
    engine.dispose()
    assert dict(rows) == dict(accepted)  # every accepted request, every record, exactly once
    assert "DROPPED" not in svc.log()


def test_a_long_outage_hits_the_spool_bound_then_503_until_the_database_catches_up(
    postgres_server, trained_champion, tmp_path
):
    """Backpressure (issue 26 item 2): with the database down, the spool takes records up to
    SPOOL_MAX_BYTES; past it predictions answer 503 with Retry-After and a body naming the bound, and
    /ready says `backlogged`; once the database is back and has caught up, 200 again. Every 200 stored."""
    bound = 1_000_000  # bytes: about 50 requests of 50 records
    db_url = postgres_server.create_database("svc_backlog")
    store = private_store(trained_champion.env, tmp_path / "store")
    svc = Service(
        tmp_path / "svc",
        service_env(store, tmp_path / "svc", DATABASE_URL=db_url, SPOOL_MAX_BYTES=str(bound)),
    )
    svc.start()
    accepted: dict[str, int] = {}
    refusals: list[requests.Response] = []

    def post() -> requests.Response:
        r = svc.predict([RECORD] * 50)
        if r.status_code == 200:
            accepted[r.json()["request_id"]] = 50
        return r

    stopped = False
    try:
        assert post().status_code == 200
        postgres_server.stop()
        stopped = True
        for _ in range(1000):  # until refused
            r = post()
            if r.status_code == 503:
                refusals.append(r)
                if len(refusals) >= 3:
                    break
            else:
                assert r.status_code == 200, r.text
        assert refusals, f"no 503 after {len(accepted)} accepted requests with the database down"
        # each worker measures the spool every 0.25 s: both say so within a second or so
        (ready,) = wait_until(  # (a Response is falsy when not ok: wrapped)
            lambda: (r := requests.get(svc.url + "/ready", timeout=10)).status_code == 503 and (r,),
            10,
            "/ready to say the log is backlogged",
        )
        waiting = svc.metric("model_service_log_spool_backlog_bytes")
        refused_records = svc.metric("model_service_log_refused_records_total")
        postgres_server.start()
        stopped = False
        wait_until(lambda: post().status_code == 200, 90, "predictions accepted again once the log caught up")
        expected = sum(accepted.values())
        wait_until(lambda: _count(db_url) >= expected, 60, f"{expected} records in the database")
        ready_after = requests.get(svc.url + "/ready", timeout=10)
        assert svc.stop() == 0, svc.log()[-2000:]
    finally:
        if stopped:
            postgres_server.start()
        svc.cleanup()
    body = refusals[0].json()
    assert all(r.headers.get("Retry-After") for r in refusals)
    assert "SPOOL_MAX_BYTES" in body["message"] and "behind" in body["message"], body
    assert ready.status_code == 503 and ready.json()["log"] == "backlogged", ready.json()
    print(f"accepted with the database down: {len(accepted) - 1} requests; spool backlog {waiting:.0f} bytes")
    # the bound is soft by at most one measurement interval (0.25 s) of traffic, never unbounded
    assert bound < waiting < 2 * bound and refused_records >= 50
    assert ready_after.status_code == 200 and ready_after.json()["log"] == "ok", ready_after.json()
    assert stored_by_request(db_url) == accepted  # every 200 stored exactly once, nothing refused stored
