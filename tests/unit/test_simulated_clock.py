"""The simulator's business clock (operations/simulate.py `SimulatedClock`): every request carries its
event time, a label goes back only once the clock has passed its record's event time plus the horizon,
stamped with that time, and a share never does. The service is a recording stand-in here (the real one,
storing what it is sent, is in tests/integration/test_loop_demo_late_labels.py)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from core.dataset import load_config
from core.settings import REPO_ROOT
from operations.simulate import SimulatedClock, simulate

pytestmark = pytest.mark.unit

CONFIG = load_config(REPO_ROOT / "config" / "telco_churn.yaml")
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def service():
    """A stand-in for the service that answers predict and feedback and records every body."""
    seen: dict[str, list[dict]] = {"/v1/predict": [], "/v1/feedback": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen[self.path].append(body)
            out = (
                {"request_id": str(uuid.uuid4()), "model_version": "1"} if self.path == "/v1/predict" else {}
            )
            data = json.dumps(out).encode()
            self.send_response(200 if self.path == "/v1/predict" else 201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def records(n: int) -> pd.DataFrame:
    row = dict(CONFIG.example_record)
    return pd.DataFrame([row] * n).assign(label=[i % 2 for i in range(n)])


def test_the_clock_moves_a_day_per_per_day_records_and_holds_labels_for_the_horizon():
    clock = SimulatedClock(DAY0, per_day=10, horizon_days=30, never_share=0.0)
    assert clock.advance(10) == DAY0 and clock.now == DAY0 + timedelta(days=1)
    clock.expect(DAY0, "a", 0, 1)
    clock.advance(290)  # day 30 exactly: due
    assert [(due, rid) for due, _, rid, _, _ in clock.due()] == [(DAY0 + timedelta(days=30), "a")]
    clock.expect(clock.now, "b", 0, 0)
    clock.advance(299)  # one record short of 30 days later
    assert clock.due() == [] and len(clock.pending) == 1


def test_labels_go_back_after_the_horizon_with_their_event_time(service):
    url, seen = service
    clock = SimulatedClock(DAY0, per_day=20, horizon_days=2, never_share=0.25, seed=3)
    simulate(url, "key", records(100), CONFIG, rate=0, batch=10, clock=clock, log=lambda _: None)
    # 100 records, 20 a day: 5 days, one event time per request of 10, half a day apart
    times = [datetime.fromisoformat(b["event_time"]) for b in seen["/v1/predict"]]
    assert times == [DAY0 + timedelta(days=0.5 * i) for i in range(10)]
    # labels of the first 3 days (scored before day 5 - 2) are back, each stamped event time + 2 days
    labels = list(seen["/v1/feedback"])
    known = [datetime.fromisoformat(b["event_time"]) for b in labels]
    assert labels and max(known) <= DAY0 + timedelta(days=4.5) + timedelta(days=2)
    assert min(known) == DAY0 + timedelta(days=2)
    assert all((k - DAY0) / timedelta(days=0.5) == int((k - DAY0) / timedelta(days=0.5)) for k in known)
    # a share never comes back, the rest wait for later days in the clock
    assert clock.never > 0
    assert len(labels) + len(clock.pending) + clock.never == 100
    assert all(due > clock.now for due, *_ in clock.pending)
    # the next call sends what has come due since, with the same clock
    simulate(url, "key", records(60), CONFIG, rate=0, batch=10, clock=clock, log=lambda _: None)
    assert len(seen["/v1/feedback"]) > len(labels)


def test_without_a_clock_nothing_carries_an_event_time(service):
    url, seen = service
    simulate(url, "key", records(20), CONFIG, rate=0, batch=10, feedback_delay=0, log=lambda _: None)
    assert all("event_time" not in b for b in seen["/v1/predict"] + seen["/v1/feedback"])
    assert len(seen["/v1/feedback"]) == 20
