"""`make demo` end to end: the whole closed loop on the embedded default, read from the timeline the demo
writes (STATE_DIR/demo-timeline.json), not from its sentences. Its time is printed, not asserted (speed
is measured by benchmarks, never by timed assertions): it settles after the heal, and the guard rolls a
bad model forced past the gate back by itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.demo_run import run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PHASES = ["start", "v1", "serve", "normal", "drift", "heal", "settle", "rollback", "guard", "summary"]


def test_make_demo(tmp_path: Path):
    timeline, elapsed = run_demo(tmp_path / "demo")
    events = timeline["events"]

    # every phase ran, in order (the summary phase records no event of its own)
    seen = list(dict.fromkeys(e["phase"] for e in events))
    assert seen == PHASES[:-1], seen

    def of(phase: str, event: str) -> list[dict]:
        return [e for e in events if e["phase"] == phase and e["event"] == event]

    # the versions served, in order: v1, v2 after the heal, v1 after the rollback, the bad one, v1 (guard)
    served = [e["version"] for e in events if e["event"] == "served"]
    bad = of("guard", "forced")[0]["version"]
    assert served == ["1", "2", "1", bad, "1"], served
    assert bad not in ("1", "2")

    # the monitor's verdicts: quiet on normal traffic, an alarm that fires one retrain, settled on v2
    checks = {e["phase"]: e for e in events if e["event"] == "monitor_run"}
    assert (checks["normal"]["status"], checks["normal"]["trigger_fired"]) == ("ok", False)
    assert (checks["drift"]["status"], checks["drift"]["trigger_fired"]) == ("drift", True)
    assert (checks["settle"]["status"], checks["settle"]["trigger_fired"]) == ("ok", False)
    assert checks["settle"]["version"] == "2"
    assert of("drift", "retrain_triggered")[0]["backend"] == "local"
    assert [e["exit_code"] for e in of("heal", "retrain_ended")] == [0]

    # the guard: its own audit row, bad -> v1, and the bad version blocked
    (rolled,) = of("guard", "guard_rolled_back")
    assert (rolled["by"], rolled["from_version"], rolled["to_version"], rolled["blocked"]) == (
        "guard",
        bad,
        "1",
        True,
    )

    # the loop settles: one retrain, no second trigger (not even one held back by the cooldown)
    summary = timeline["summary"]
    assert summary["trigger_decisions"] == {"fired": 1}
    assert summary["monitoring_runs"] >= 3
    assert summary["onset_to_v2_s"] > 0 and summary["bad_to_good_s"] > 0
    # the champion timeline answers which version, when, why for every move the demo made, the guard's
    # too: v1 promoted, v2 (the retrain) promoted, the rollback to v1, the bad version forced, the guard
    moves = summary["champion_moves"]
    assert [(m["kind"], m["from_version"], m["to_version"]) for m in moves] == [
        ("promotion", None, "1"),
        ("promotion", "1", "2"),
        ("rollback", "2", "1"),
        ("forced_promotion", "1", bad),
        ("guard_rollback", bad, "1"),
    ], moves
    assert all(m["reason"].strip() and m["by"].strip() for m in moves), moves
    assert "retrained for" in moves[1]["reason"] and moves[3]["reason"].startswith("FORCED past the gate")
    assert moves[3]["by"] == "demo-admin" and moves[4]["by"] == "guard"
    assert moves[4]["details"]["rollback_id"] == rolled["rollback_id"] and moves[4]["details"]["breaches"]
    # with no label in its watch window: the guard scored the bad model's records with v1 and compared
    breached = {b["figure"] for b in moves[4]["details"]["breaches"]}
    assert breached and breached <= {"rank_agreement", "disagreement"}, moves[4]["details"]["breaches"]
    assert moves[4]["details"]["new"]["quality"].get("n_labelled", 0) == 0
    assert moves[4]["details"]["new"]["agreement"]["rank_agreement"] < 0  # it ranks in reverse
    assert moves[1]["records_served"] > 0 and moves[3]["records_served"] > 0  # v2 and the bad one served
    assert summary["champion_timeline_agrees"] is True
    # the demo stops what it started: nothing answers on the service's port any more
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{events[0]['service_url']}/health", timeout=5)
    print(
        f"demo: {elapsed:.0f} s in all, drift onset -> v2 serving {summary['onset_to_v2_s']:.0f} s, "
        f"bad -> good {summary['bad_to_good_s']:.1f} s"
    )
