"""The prediction log's writer process SIGKILLed at random points while traffic flows (issue 26, item 1).

The server restarts the writer each time; every request answered 200 is stored exactly once (by request
id and record count), nothing is stored that was not answered, and no spool segment is left once the
server has stopped (SIGTERM: the workers retire their segments, then the writer moves them). On SQLite
and on PostgreSQL (the COPY path).
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from operations.waiting import wait_until
from tests.support.service_process import (
    Service,
    Traffic,
    private_store,
    service_env,
    stored_by_request,
    writer_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 10


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_writer_killed_at_random_points_loses_and_duplicates_nothing(
    backend, trained_champion, tmp_path, request
):
    store = private_store(trained_champion.env, tmp_path / "store")
    extra = {"LOG_SEGMENT_SECONDS": "0.2"}  # many segments: the kills land in every phase of the writer
    if backend == "postgresql":
        extra["DATABASE_URL"] = request.getfixturevalue("postgres_server").create_database("svc_writer_kill")
    env = service_env(store, tmp_path / "svc", **extra)
    db_url = env["DATABASE_URL"]
    svc = Service(tmp_path / "svc", env).start()
    rng = random.Random(26)
    killed: list[int] = []
    try:
        with Traffic(svc) as traffic:
            traffic.wait_for(50, "traffic before the first kill")
            for _ in range(ROUNDS):
                (writer,) = wait_until(
                    lambda: (w := writer_of(svc.process.pid)) not in (None, *killed) and (w,),
                    30,
                    "a (new) writer process",
                )
                traffic.wait_for(rng.randint(5, 60), "traffic before the kill")
                os.kill(writer, signal.SIGKILL)
                killed.append(writer)
            traffic.wait_for(50, "traffic after the last kill")
        expected = dict(traffic.accepted)
        wait_until(
            lambda: all(stored_by_request(db_url).get(rid) == n for rid, n in expected.items()),
            90,
            f"{len(expected)} accepted requests stored",
        )
        assert svc.stop() == 0, svc.log()[-2000:]
    finally:
        svc.cleanup()
    stored = stored_by_request(db_url)
    print(
        f"{backend}: writer killed {len(killed)} times; accepted {len(expected)} requests / "
        f"{sum(expected.values())} records; stored {len(stored)} / {sum(stored.values())}"
    )
    assert traffic.errors == 0
    assert stored == expected  # every answered record exactly once, nothing else
    assert not list((svc.root / "spool").rglob("*.jsonl")), "spool segments left after the drain"
    assert svc.log().count("prediction log writer (pid") >= ROUNDS  # each death seen and restarted
    assert "DROPPED" not in svc.log() and "REFUSED" not in svc.log()
