"""The champion timeline: every path that moves the `champion` alias (core.rollout.promote for the gate,
a retrain's gate and a forced promotion; core.rollout.roll_back for a person and the guard) writes one
`champion_moves` row, the records each version served are counted per interval, `reconcile` agrees with
the registry after each move and names a move made behind its back, and `churnops history` prints it.
A registry on SQLite with versions registered from a folder (no trained model), the loop's store on
SQLite in tmp_path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa

from core import registry, rollout, store
from monitoring import guard
from operations import cli, history

NAME = "timeline-test"


@pytest.fixture
def loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    """Three registered versions (no champion yet) and the loop's store; the settings point at both."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    database = f"sqlite:///{tmp_path / 'loop.db'}"
    for key, value in {"MLFLOW_TRACKING_URI": uri, "DATABASE_URL": database, "MODEL_NAME": NAME}.items():
        monkeypatch.setenv(key, value)
    registry.connect(uri)
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    (tmp_path / "model").mkdir()
    for _ in range(3):
        client.create_model_version(NAME, source=(tmp_path / "model").as_uri())
    return store.engine_for(database)


def moves(engine: sa.Engine) -> list[tuple]:
    m = store.champion_moves
    with engine.connect() as conn:
        return conn.execute(
            sa.select(m.c.kind, m.c.from_version, m.c.to_version, m.c.by).order_by(m.c.id)
        ).all()


def promote(engine, version, reason="gate passed (12 of 12 checks passed)", by="ci", forced=False, **kw):
    with rollout.alias_lock(engine, NAME, by, "promotion", 60):
        return rollout.promote(engine, NAME, version, reason=reason, by=by, forced=forced, **kw)


def roll_back(engine, version, reason, by, **kw):
    with rollout.alias_lock(engine, NAME, by, "rollback", 60):
        return rollout.roll_back(engine, NAME, version, reason=reason, by=by, **kw)


def agrees(engine) -> str:
    verdict = rollout.reconcile(engine, NAME)
    assert verdict.agree, verdict.line
    return verdict.line


def test_every_path_writes_one_move_and_the_registry_agrees_after_each(loop):
    assert agrees(loop) == f"'{NAME}' has no champion and the timeline no move"
    promote(loop, "1", details={"checks": 12})
    agrees(loop)
    promote(loop, "2", reason="gate passed; retrained for drift: drift_share 0.40 (12 of 12 checks passed)")
    agrees(loop)
    roll_back(loop, "1", "bad recall in prod", "alice@host")
    agrees(loop)
    promote(loop, "3", reason="FORCED past the gate: drill (failed: roc_auc)", by="bob", forced=True)
    agrees(loop)
    new, old = guard.Figures("3", records=300, p99_ms=4.0), guard.Figures("1", records=2000, p99_ms=2.0)
    breaches = [guard.Breach("roc_auc", "live roc_auc 0.41 vs 0.83: a drop of 0.42 > 0.05")]
    done = roll_back(
        loop,
        "1",
        "guard: v3 vs v1 since its promotion 12 s ago: live roc_auc 0.41 vs 0.83",
        guard.GUARD,
        kind="guard_rollback",
        details=guard.guard_figures(new, old, breaches),
    )
    assert (
        "agree: champion of 'timeline-test' v1, the timeline's last move guard_rollback v3 -> v1"
        in agrees(loop)
    )
    assert moves(loop) == [
        ("promotion", None, "1", "ci"),
        ("promotion", "1", "2", "ci"),
        ("rollback", "2", "1", "alice@host"),
        ("forced_promotion", "1", "3", "bob"),
        ("guard_rollback", "3", "1", "guard"),
    ]
    last = store.last_champion_move(loop, NAME)
    assert last["details"]["rollback_id"] == done.row_id  # the rollbacks row, same transaction
    assert last["details"]["breaches"][0]["figure"] == "roc_auc"
    assert last["details"]["new"]["p99_ms"] == 4.0 and last["details"]["old"]["records"] == 2000
    assert last["reason"].startswith("guard: v3 vs v1")


def test_a_move_that_moves_nothing_or_is_refused_writes_nothing(loop):
    with pytest.raises(registry.RegistryError, match="no champion to roll back from"):
        roll_back(loop, None, "nothing yet", "alice")
    promote(loop, "1")
    promote(loop, "1")  # already the champion: no move
    with pytest.raises(registry.RegistryError, match="replaced no earlier version"):
        roll_back(loop, None, "nothing before v1", "alice")
    assert moves(loop) == [("promotion", None, "1", "ci")]
    with pytest.raises(ValueError, match="unknown kind of champion move 'sideways'"):
        roll_back(loop, "2", "x", "alice", kind="sideways")
    assert str(registry.version_by_alias(NAME, registry.CHAMPION).version) == "1"  # refused before moving


def test_reconcile_names_a_move_made_outside_the_timeline(loop):
    promote(loop, "1")
    registry.promote(NAME, "2", reason="by hand, behind the timeline's back")
    verdict = rollout.reconcile(loop, NAME)
    assert not verdict.agree and (verdict.registry_version, verdict.timeline_version) == ("2", "1")
    assert (
        "the registry's champion of 'timeline-test' is v2, the timeline's last move is to v1" in verdict.line
    )
    # back to v1 by hand too: the alias agrees, champion_history's last move (2 -> 1) does not
    registry.rollback(NAME, "1", reason="by hand")
    verdict = rollout.reconcile(loop, NAME)
    assert not verdict.agree and "champion_history's last move is v2 -> v1" in verdict.line


def test_records_served_are_counted_per_interval(loop):
    promote(loop, "1")
    promote(loop, "2")
    m = store.champion_moves
    t0 = store.utcnow() - timedelta(hours=2)
    with loop.begin() as conn:  # the moves an hour apart, so the records fall into known intervals
        ids = conn.execute(sa.select(m.c.id).order_by(m.c.id)).scalars().all()
        for i, move_id in enumerate(ids):
            conn.execute(sa.update(m).where(m.c.id == move_id).values(at=t0 + timedelta(hours=i)))

    def record(n, minutes, version):
        return {
            "request_id": f"r-{version}-{minutes}-{n}",
            "record_index": 0,
            "created_at": t0 + timedelta(minutes=minutes),
            "model_name": NAME,
            "model_version": version,
            "features": {},
            "score": 0.5,
            "label": 0,
            "latency_ms": 1.0,
        }

    rows = [record(n, 10, "1") for n in range(5)]  # v1's hour
    rows += [record(n, 61, "1") for n in range(2)]  # a replica still on v1 just after the move to v2
    rows += [record(n, 90, "2") for n in range(7)]  # v2's time, up to now
    rows += [record(0, -30, "0")]  # before the first move: in no interval
    with loop.begin() as conn:
        conn.execute(sa.insert(store.predictions), rows)
    first, second = store.champion_timeline(loop, NAME)
    assert (first["records_served"], first["records_by_version"]) == (5, {"1": 5})
    assert first["until"] == second["at"] and second["until"] is None
    assert (second["records_served"], second["records_by_version"]) == (7, {"1": 2, "2": 7})
    (only,) = store.champion_timeline(loop, NAME, limit=1)  # the newest moves, oldest first
    assert only["to_version"] == "2"


def test_churnops_history_prints_the_table_and_json(loop, capsys):
    promote(loop, "1")
    roll_back_to = promote(loop, "2", reason="gate passed; retrained for drift (12 of 12 checks passed)")
    assert roll_back_to.to_version == "2"
    assert cli.main(["history"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["time", "move", "kind", "by", "records", "served", "why"]
    assert "v1 -> v2" in lines[2] and "promotion" in lines[2] and "retrained for drift" in lines[2]
    assert out.err == ""  # timeline and registry agree: nothing to warn about
    assert history.main(["--json", "--limit", "1"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["registry"]["agree"] is True and body["model_name"] == NAME
    (move,) = body["moves"]
    assert (move["kind"], move["from_version"], move["to_version"], move["by"]) == (
        "promotion",
        "1",
        "2",
        "ci",
    )
    assert move["records_served"] == 0 and move["until"] is None and move["at"].endswith("+00:00")


def test_churnops_history_check_exits_1_when_the_registry_disagrees(loop, capsys):
    promote(loop, "1")
    registry.promote(NAME, "2", reason="by hand")
    assert history.main([]) == 0
    assert "warning: DISAGREE" in capsys.readouterr().err
    assert history.main(["--check"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "argument --limit: 0 is not between 1 and 1000"),
        (["--limit", "1001"], "argument --limit: 1001 is not between 1 and 1000"),
        (["--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
        (["--since", "monday"], "unrecognized arguments: --since monday"),
    ],
)
def test_churnops_history_bad_option_exits_2_with_one_line(args, message, capsys):
    assert history.main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message} (churnops history --help)"
