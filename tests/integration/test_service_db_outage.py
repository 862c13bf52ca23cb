"""Prediction log on PostgreSQL: the database stops and restarts under traffic, then SIGTERM; no record lost."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from sqlalchemy import func, select

from core.store import make_engine, predictions
from operations.waiting import wait_until
from tests.support.service_process import RECORD, Service, private_store, service_env

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
