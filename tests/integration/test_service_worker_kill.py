"""A 200 means stored: a server worker SIGKILLed under concurrent load loses no answered record.

Four clients post predictions; one worker is killed with SIGKILL (as the OOM killer would); the
server (granian) starts another; the writer process moves the killed worker's spool segment. Every answered
request is then in the database with all its records, exactly once. On SQLite, and on PostgreSQL with
an outage and the kill together.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from operations.waiting import wait_until
from tests.support.service_process import (
    Service,
    Traffic,
    private_store,
    service_env,
    stored_by_request,
    workers_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _workers(master: int) -> list[int]:
    return workers_of(master)


def _kill_a_worker(svc: Service) -> int:
    victim = _workers(svc.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    return victim


def _segments_of(svc: Service, pids: list[int]) -> list[Path]:
    return [p for pid in pids for p in (svc.root / "spool").glob(f"*/spool-{pid}-*.jsonl")]


def _check(svc: Service, db_url: str, traffic: Traffic, victims: list[int]) -> None:
    expected = dict(traffic.accepted)
    # the killed workers' segments are moved (and deleted) by the writer process
    wait_until(lambda: not _segments_of(svc, victims), 90, "the killed workers' segments moved")
    wait_until(
        lambda: all(stored_by_request(db_url).get(rid) == n for rid, n in expected.items()),
        90,
        f"{len(expected)} accepted requests ({sum(expected.values())} records) stored",
    )
    assert svc.stop() == 0, svc.log()[-2000:]
    stored = stored_by_request(db_url)
    print(
        f"accepted {len(expected)} requests / {sum(expected.values())} records; "
        f"stored {len(stored)} / {sum(stored.values())}; client errors {traffic.errors}"
    )
    assert {rid: stored.get(rid) for rid in expected} == expected  # every answered record, exactly once
    assert "DROPPED" not in svc.log() and "REFUSED" not in svc.log()


@pytest.mark.parametrize("sync", ["fsync", "write"])
def test_sigkill_of_a_worker_loses_no_answered_record_sqlite(trained_champion, tmp_path, sync):
    store = private_store(trained_champion.env, tmp_path / "store")
    env = service_env(store, tmp_path / "svc", LOG_SYNC=sync)
    db_url = env["DATABASE_URL"]
    svc = Service(tmp_path / "svc", env).start()
    try:
        with Traffic(svc) as traffic:
            traffic.wait_for(200, "traffic before the kill")
            victim = _kill_a_worker(svc)
            traffic.wait_for(200, "traffic after the kill")
            wait_until(lambda: victim not in _workers(svc.process.pid), 30, "the killed worker reaped")
            wait_until(lambda: len(_workers(svc.process.pid)) == 2, 60, "a new worker")
            traffic.wait_for(50, "traffic with the new worker")
        _check(svc, db_url, traffic, [victim])
    finally:
        svc.cleanup()


def test_outage_and_sigkill_together_lose_no_answered_record_postgres(
    postgres_server, trained_champion, tmp_path
):
    db_url = postgres_server.create_database("svc_kill")
    store = private_store(trained_champion.env, tmp_path / "store")
    svc = Service(tmp_path / "svc", service_env(store, tmp_path / "svc", DATABASE_URL=db_url)).start()
    try:
        with Traffic(svc) as traffic:
            traffic.wait_for(100, "traffic before the kill")
            victims = [_kill_a_worker(svc)]  # a kill with the database up
            traffic.wait_for(100, "traffic after the first kill")
            postgres_server.stop()  # then an outage ...
            traffic.wait_for(100, "traffic while the database is down")
            victims.append(
                _kill_a_worker(svc)
            )  # ... and a kill during it: that worker's records are only on disk
            traffic.wait_for(100, "traffic after the second kill")
            postgres_server.start()
            traffic.wait_for(50, "traffic once the database is back")
        _check(svc, db_url, traffic, victims)
    finally:
        svc.cleanup()


# --------------------------------------------------------------------------- the main process (issue 24)
def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for PID 1 to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_free(port: int) -> bool:
    """Nothing listens on the port: a socket without SO_REUSEPORT can bind it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigkill_of_the_main_process_takes_its_workers_down(trained_champion, tmp_path):
    """Issue 24, item 4: on f185c98 the workers of a SIGKILLed main process were re-parented to PID 1
    and kept serving the port. Now each worker exits when its parent dies and the port is freed."""
    store = private_store(trained_champion.env, tmp_path / "store")
    svc = Service(tmp_path / "svc", service_env(store, tmp_path / "svc")).start()
    workers = _workers(svc.process.pid)
    assert len(workers) == 2
    try:
        os.kill(svc.process.pid, signal.SIGKILL)
        svc.process.wait(10)
        wait_until(lambda: not any(_alive(pid) for pid in workers), 30, "the orphaned workers gone")
        wait_until(lambda: _port_free(svc.port), 30, "the port free")
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        svc.cleanup()


def test_a_second_server_on_a_served_port_refuses_to_start(trained_champion, tmp_path):
    """granian binds with SO_REUSEPORT: on f185c98 a second server on the same port started and
    shared the connections with the first (4 listeners). Now it exits 2 with one line naming the port."""
    store = private_store(trained_champion.env, tmp_path / "store")
    first = Service(tmp_path / "first", service_env(store, tmp_path / "first")).start()
    second = Service(tmp_path / "second", service_env(store, tmp_path / "second"), port=first.port)
    try:
        second.start(wait=False)
        try:
            code = second.process.wait(60)
        except subprocess.TimeoutExpired:
            code = None
        lines = second.log().strip().splitlines()
        assert code == 2, lines[-5:]
        assert len(lines) == 1 and str(first.port) in lines[0], lines
        assert requests.get(first.url + "/health", timeout=10).status_code == 200
    finally:
        second.cleanup()
        first.cleanup()
