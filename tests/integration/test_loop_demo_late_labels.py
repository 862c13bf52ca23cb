"""`make demo-late-labels` end to end: the loop when labels come back 30 days after their scores, on a
simulated clock. Read from the timeline the demo writes and from the prediction log it leaves, not from
its sentences: a harmless shift retrains nothing; a harmful one alarms on the quality estimated without
labels, and the retrain waits for that cohort's labels, which come back after the horizon; v2 is served;
a bad model is rolled back by the guard with no label in its watch window. Times are printed, not
asserted (speed is measured by benchmarks)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core import store
from core.dataset import load_config
from tests.support.demo_run import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PHASES = ["start", "v1", "serve", "normal", "harmless", "harmful", "labels", "heal", "guard"]


def test_make_demo_late_labels(tmp_path: Path):
    state = tmp_path / "demo"
    timeline, elapsed = run_demo(state, "--late-labels")
    events = timeline["events"]
    assert list(dict.fromkeys(e["phase"] for e in events)) == PHASES

    def of(phase: str, event: str) -> list[dict]:
        return [e for e in events if e["phase"] == phase and e["event"] == event]

    config = load_config(state / "dataset-late-labels.yaml")
    horizon = config.label_horizon_days
    assert horizon == 30 and config.drift_needs_harm
    checks = {e["phase"]: e for e in events if e["event"] == "monitor_run"}  # each phase's last check
    assert (checks["normal"]["status"], checks["normal"]["trigger_fired"]) == ("ok", False)

    # the harmless shift: seen, no harm estimated, nothing started (not even a wait for labels)
    (harmless,) = of("harmless", "harmless_judged")
    assert "female" in harmless["drifted"]
    assert harmless["trigger_status"] is None and checks["harmless"]["trigger_fired"] is False
    assert all(
        d < config.estimate_max_drop[m]
        for m, d in harmless["estimated_drop"].items()
        if m in config.estimate_max_drop
    )

    # the harmful shift: alarmed by the estimate, before any label of its window
    (alarm,) = of("harmful", "harm_alarm")
    assert alarm["kinds"] and all(k.startswith("estimated_drop:") for k in alarm["kinds"])
    assert alarm["labelled"] == 0 and checks["harmful"]["trigger_fired"] is False

    # the retrain fires on that cohort's labels, once the horizon has passed for them
    (fired,) = of("labels", "retrain_triggered")
    assert fired["run_id"] == alarm["run_id"]
    assert fired["labelled"] >= config.retrain_min_labels
    assert set(alarm["kinds"]) <= set(fired["kinds"])
    first_scored = alarm["day"] - 5  # the cohort is the 5 days before the alarm
    assert fired["day"] >= first_scored + horizon, (fired["day"], alarm["day"])
    waits = [e for e in events if e["phase"] == "labels" and e["event"] == "monitor_run"]
    assert [w["trigger_fired"] for w in waits] == [False] * (len(waits) - 1) + [True]
    assert [e["exit_code"] for e in of("heal", "retrain_ended")] == [0]
    assert "labelled production records" in of("heal", "retrain_ended")[0]["detail"]

    # served: v1, v2 after the retrain, the bad one, v2 again (the guard, with no label)
    served = [e["version"] for e in events if e["event"] == "served"]
    bad = of("guard", "forced")[0]["version"]
    assert served == ["1", "2", bad, "2"], served
    summary = timeline["summary"]
    assert summary["trigger_decisions"].get("fired") == 1
    assert summary["trigger_decisions"].get("waiting_labels", 0) >= 1
    moves = summary["champion_moves"]
    assert [(m["kind"], m["from_version"], m["to_version"]) for m in moves] == [
        ("promotion", None, "1"),
        ("promotion", "1", "2"),
        ("forced_promotion", "2", bad),
        ("guard_rollback", bad, "2"),
    ], moves
    assert "estimated_drop" in json.dumps(moves[1]["details"]) or "estimated" in moves[1]["reason"]
    assert moves[3]["by"] == "guard" and moves[3]["details"]["new"]["quality"].get("n_labelled", 0) == 0
    breached = {b["figure"] for b in moves[3]["details"]["breaches"]}
    assert breached and breached <= {"rank_agreement", "disagreement"}, moves[3]["details"]["breaches"]

    # the log holds business time: scores spread over the simulated days, each label stamped with the
    # day it came back, never before its record's event time plus the horizon
    engine = store.engine_for(f"sqlite:///{state / 'service' / 'service.db'}")
    p, f = store.predictions, store.feedback
    with engine.connect() as conn:
        first, last = conn.execute(sa.select(sa.func.min(p.c.event_at), sa.func.max(p.c.event_at))).one()
        pairs = conn.execute(
            sa.select(p.c.event_at, f.c.event_at).join(
                f, sa.and_(f.c.request_id == p.c.request_id, f.c.record_index == p.c.record_index)
            )
        ).all()
        scored = conn.execute(
            sa.select(sa.func.count()).select_from(p).where(p.c.event_at.is_not(None))
        ).scalar()
    assert store.as_utc(last) - store.as_utc(first) >= timedelta(days=45)
    assert pairs, "no label came back"
    lags = [store.as_utc(known) - store.as_utc(at) for at, known in pairs]
    assert min(lags) >= timedelta(days=horizon) and max(lags) < timedelta(days=horizon + 1), (
        min(lags),
        max(lags),
    )
    # labels came back for fewer records than were scored on the clock (due ones, less the never share)
    assert len(pairs) < scored
    print(
        f"demo --late-labels: {elapsed:.0f} s in all; harm alarm day {alarm['day']:g}, retrain day "
        f"{fired['day']:g}; onset -> v2 {summary['onset_to_v2_s']:.0f} s; bad -> good {summary['bad_to_good_s']:.1f} s"
    )
