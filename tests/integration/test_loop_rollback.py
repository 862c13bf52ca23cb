"""`churnops rollback` (python -m operations rollback) against a fresh registry (two tiny registered versions) and a stand-in service
that follows the `champion` alias on reload (or never does)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from core import registry, rollout, store
from operations.waiting import wait_until
from tests.conftest import REPO, LoopbackServer, QuietHandler

NAME = "rollback-test"


class StandInService(LoopbackServer):
    """GET /v1/model answers the version it loaded; POST /v1/admin/reload reloads the alias (if `follow`)."""

    def __init__(self, tracking_uri: str, follow: bool = True):
        self.version = None
        self.follow = follow
        self.reloads = 0
        outer = self
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

        def load():
            outer.version = str(client.get_model_version_by_alias(NAME, "champion").version)

        load()

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802
                if self.headers.get("X-API-Key") != "key":
                    return self._reply(401, {"message": "bad key"})
                self._reply(200, {"name": NAME, "version": outer.version})

            def do_POST(self):  # noqa: N802
                if self.headers.get("Authorization") != "Bearer admin":
                    return self._reply(403, {"message": "bad token"})
                outer.reloads += 1
                if outer.follow:
                    load()
                self._reply(200, {"version": outer.version, "error": None})

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)


@pytest.fixture
def two_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "MODEL_NAME": NAME,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'loop.db'}",
        "API_KEYS": "key",
        "ADMIN_TOKEN": "admin",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("rollback", artifact_location=(tmp_path / "artifacts").as_uri())
    X, y = np.arange(20.0).reshape(-1, 1), np.array([0, 1] * 10)
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                LogisticRegression().fit(X, y),
                name="model",
                registered_model_name=NAME,
                serialization_format="cloudpickle",
            )
    engine = store.engine_for(env["DATABASE_URL"])
    rollout.promote(engine, NAME, "1", "first", by="ci")  # the gate's path: the timeline has both moves
    rollout.promote(engine, NAME, "2", "second", by="ci")
    return env


def rollback(env, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "operations", "rollback", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_rollback_moves_champion_records_it_and_waits_until_served(two_versions):
    service = StandInService(two_versions["MLFLOW_TRACKING_URI"])
    try:
        assert service.version == "2"
        out = rollback(
            {**two_versions, "SERVICE_URL": service.url}, "--reason", "bad recall in prod", "--by", "alice"
        )
        assert out.returncode == 0, out.stderr
        assert "v2 -> v1" in out.stdout and "served v1" in out.stdout
        # where the seconds went: the parts add up to the whole (to rounding)
        took = re.search(
            r"rollback took ([\d.]+) s: ([\d.]+) s starting Python and loading MLflow, ([\d.]+) s moving the "
            r"alias and recording it, ([\d.]+) s until the service answered with v1",
            out.stdout,
        )
        assert took, out.stdout
        whole, *parts = (float(x) for x in took.groups())
        assert abs(whole - sum(parts)) <= 0.2 and all(p >= 0 for p in parts)
        assert service.version == "1" and service.reloads >= 1
    finally:
        service.close()
    mv = registry.version_by_alias(NAME, registry.CHAMPION)
    assert str(mv.version) == "1"
    assert mv.tags["rolled_back_from"] == "2" and mv.tags["rolled_back_by"] == "alice"
    assert mv.tags["rollback_reason"] == "bad recall in prod"
    with store.engine_for(two_versions["DATABASE_URL"]).connect() as conn:
        row = conn.execute(sa.select(store.rollbacks)).mappings().one()
    assert (row["from_version"], row["to_version"], row["by"], row["served"]) == ("2", "1", "alice", True)
    assert row["reason"] == "bad recall in prod" and row["at"] is not None
    # the champion timeline: the two promotions and the person's rollback; the registry agrees
    engine = store.engine_for(two_versions["DATABASE_URL"])
    moves = store.champion_timeline(engine, NAME)
    assert [(m["kind"], m["from_version"], m["to_version"], m["by"]) for m in moves] == [
        ("promotion", None, "1", "ci"),
        ("promotion", "1", "2", "ci"),
        ("rollback", "2", "1", "alice"),
    ]
    assert moves[-1]["reason"] == "bad recall in prod" and moves[-1]["details"] == {"rollback_id": row["id"]}
    verdict = rollout.reconcile(engine, NAME)
    assert verdict.agree, verdict.line


def test_rollback_refuses_a_version_that_does_not_exist(two_versions):
    out = rollback({**two_versions, "SERVICE_URL": "http://127.0.0.1:9"}, "99")
    assert out.returncode == 2
    assert "has no version '99'" in out.stderr and "registered versions: 1, 2" in out.stderr
    assert str(registry.version_by_alias(NAME, registry.CHAMPION).version) == "2"


def test_rollback_fails_when_the_service_does_not_follow(two_versions):
    service = StandInService(two_versions["MLFLOW_TRACKING_URI"], follow=False)
    try:
        out = rollback({**two_versions, "SERVICE_URL": service.url}, "1", "--timeout", "3")
    finally:
        service.close()
    assert out.returncode == 1
    assert "reports v2 after 3 s" in out.stderr
    with store.engine_for(two_versions["DATABASE_URL"]).connect() as conn:
        assert conn.execute(sa.select(store.rollbacks.c.served)).scalar_one() is False


def test_a_second_rollback_is_refused_at_once_while_one_is_in_progress(two_versions):
    """Two operators at the same moment: the second is told at once that a move is in progress, the
    alias moves once, and the lock is free again when the first ends."""
    service = StandInService(two_versions["MLFLOW_TRACKING_URI"], follow=False)  # the first keeps waiting
    env = {**two_versions, "SERVICE_URL": service.url}
    engine = sa.create_engine(env["DATABASE_URL"])
    try:
        first = subprocess.Popen(
            [sys.executable, "-m", "operations", "rollback", "1", "--by", "alice", "--timeout", "20"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def held():
            store.create_tables(engine)
            with engine.connect() as conn:
                return conn.execute(sa.select(store.alias_locks.c.holder)).scalars().all()

        wait_until(lambda: held() == ["alice"] or first.poll() is not None, 60, "the first rollback's lock")
        assert held() == ["alice"], first.communicate()
        second = rollback(env, "2", "--by", "bob", "--timeout", "5")
        assert second.returncode == 2, second.stderr
        assert "in progress: rollback by alice since" in second.stderr, second.stderr
        out, err = first.communicate(timeout=60)
        assert first.returncode == 1, err  # the stand-in never follows: the alias moved, not served
    finally:
        service.close()
    with engine.connect() as conn:
        moves = conn.execute(sa.select(store.rollbacks.c.by, store.rollbacks.c.to_version)).all()
        assert conn.execute(sa.select(store.alias_locks)).all() == []  # released
    assert moves == [("alice", "1")]
    assert str(registry.version_by_alias(NAME, registry.CHAMPION).version) == "1"
    timeline = [(m["kind"], m["to_version"]) for m in store.champion_timeline(engine, NAME)]
    assert timeline == [("promotion", "1"), ("promotion", "2"), ("rollback", "1")]  # bob's: no move
