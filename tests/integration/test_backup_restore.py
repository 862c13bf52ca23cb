"""`churnops backup` / `churnops restore` (operations/backup.py): a round trip of the embedded default that
must load and score the same champion from the restored folder alone, the refusals (each exit 2, one
line, the target untouched), and PostgreSQL + S3 stores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest
import sqlalchemy as sa

from core import registry, store
from core.dataset import load_config
from core.objects import ObjectStore, S3Access
from operations import backup
from tests.conftest import embedded_env_vars, put_back_environ, start_mlflow_server, stop_process
from tests.support import loop_helpers


def env_of(root: Path, **extra: str) -> dict[str, str]:
    return {**embedded_env_vars(root), "STATE_DIR": str(root), "BACKUP_KEEP": "0", **extra}


@contextlib.contextmanager
def using(env: dict[str, str]) -> Iterator[None]:
    """`env` in os.environ (and MLflow's client) for the block; restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    mlflow.set_tracking_uri(env.get("MLFLOW_TRACKING_URI"))
    mlflow.set_registry_uri(env.get("MLFLOW_TRACKING_URI"))
    try:
        yield
    finally:
        put_back_environ(saved)
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def run(command, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = command(list(args))
    return code, out.getvalue(), err.getvalue()


def take_backup(env: dict[str, str], folder: Path) -> Path:
    with using(env):
        code, out, err = run(backup.main, "--dir", str(folder))
    assert code == 0, err
    print(out)  # the measured time and size (pytest -s)
    (archive,) = folder.glob("churnops-backup-*.tar")
    return archive


def restore_into(env: dict[str, str], archive: Path, *args: str) -> tuple[int, str, str]:
    with using(env):
        code, out, err = run(backup.main_restore, str(archive), *args)
    print(out)
    return code, out, err


def service_counts(env: dict[str, str]) -> dict[str, int]:
    return backup.describe_database(env["DATABASE_URL"], service=True)["row_counts"]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(scope="module")
def first_archive(trained_champion, tmp_path_factory) -> Path:
    """The trained store backed up (read only: the session's store is not changed)."""
    env = env_of(trained_champion.root)
    return take_backup(env, tmp_path_factory.mktemp("backups"))


@pytest.fixture(scope="module")
def loop_state(trained_champion, first_archive, tmp_path_factory):
    """The trained store restored into A, then predictions, feedback and a rollback-free timeline there;
    A backed up: (A's env, its archive, expected scores on held-out rows, A's timeline)."""
    a = tmp_path_factory.mktemp("site-a")
    env_a = env_of(a)
    code, _, err = restore_into(env_a, first_archive)
    assert code == 0, err
    name = trained_champion.model_name
    with using(env_a):
        engine = store.engine_for(env_a["DATABASE_URL"])
        _, test, model = loop_helpers.champion_data(name)
        frame = test.head(120)
        config = load_config(Path("config/telco_churn.yaml"))
        scores = loop_helpers.score(model, frame, config)
        # after the promotion: the timeline counts them as served by the champion
        after = store.utcnow() + timedelta(seconds=len(frame) + 1)
        loop_helpers.log_predictions(engine, frame, scores, config, name, trained_champion.version, at=after)
        timeline = store.champion_timeline(engine, name)
        engine.dispose()
        store._engines.pop(env_a["DATABASE_URL"], None)
    archive = take_backup(env_a, tmp_path_factory.mktemp("backups-a"))
    return env_a, archive, frame, scores, timeline


def test_round_trip_serves_the_same_champion_from_the_restored_folder_alone(
    trained_champion, loop_state, tmp_path
):
    env_a, archive, frame, scores, timeline = loop_state
    manifest = backup.read_archive(archive).manifest
    service = manifest["databases"]["service"]
    assert service["backend"] == "sqlite" and service["schema_revision"] == store.schema_revision(
        store.make_engine(env_a["DATABASE_URL"])
    )
    assert service["row_counts"]["predictions"] == 120 and service["row_counts"]["feedback"] == 120
    assert manifest["databases"]["mlflow"]["row_counts"]["registered_models"] == 1
    assert manifest["object_roots"]["mlflow-artifacts"]["objects"] > 5
    assert manifest["object_roots"]["data"]["objects"] > 0
    expected_counts = service_counts(env_a)

    b = tmp_path / "site-b"
    env_b = env_of(b)
    code, out, err = restore_into(env_b, archive)
    assert code == 0, err
    # A is gone: what loads below can only come from B (MLflow's recorded paths were moved to B)
    shutil.rmtree(Path(env_a["STATE_DIR"]))
    assert service_counts(env_b) == expected_counts
    assert store.schema_revision(store.make_engine(env_b["DATABASE_URL"])) == service["schema_revision"]
    name = trained_champion.model_name
    with using(env_b):
        registry.connect(env_b["MLFLOW_TRACKING_URI"])
        champion = registry.version_by_alias(name, registry.CHAMPION)
        assert str(champion.version) == trained_champion.version
        _, _, model = loop_helpers.champion_data(name)
        config = load_config(Path("config/telco_churn.yaml"))
        assert (loop_helpers.score(model, frame, config) == scores).all()
        engine = store.make_engine(env_b["DATABASE_URL"])
        assert store.champion_timeline(engine, name) == timeline
        assert timeline and timeline[-1]["records_served"] == 120
    assert all((b / "data" / n).is_file() for n, _ in backup.read_archive(archive).objects("data"))


def rewrite(archive: Path, into: Path, change) -> Path:
    """A copy of `archive` with `change(name, data) -> data | None` applied to each member (None: left out)."""
    with tarfile.open(archive) as src, tarfile.open(into, "w") as dst:
        for info in src:
            data = change(info.name, src.extractfile(info).read())
            if data is None:
                continue
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return into


def assert_refused(env: dict[str, str], archive: Path, words: str, *args: str) -> None:
    before = files_under(Path(env["STATE_DIR"]))
    code, out, err = restore_into(env, archive, *args)
    assert code == 2, (out, err)
    assert words in err and err.count("\n") == 1, err
    assert files_under(Path(env["STATE_DIR"])) == before, "a refused restore changed the target"


def test_a_tampered_member_is_refused(first_archive, tmp_path):
    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "databases/service.sqlite" else data

    bad = rewrite(first_archive, tmp_path / "tampered.tar", flip)
    assert_refused(env_of(tmp_path / "target"), bad, "checksum mismatch in 1 member(s)")


def test_a_missing_member_or_a_truncated_archive_is_refused(first_archive, tmp_path):
    partial = rewrite(
        first_archive, tmp_path / "partial.tar", lambda n, d: None if n.startswith("objects/data/") else d
    )
    assert_refused(env_of(tmp_path / "target"), partial, "member(s) missing")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(first_archive.read_bytes()[: first_archive.stat().st_size // 2])
    assert_refused(env_of(tmp_path / "target"), truncated, "nothing was restored")


def test_an_archive_from_newer_code_is_refused(first_archive, tmp_path):
    def newer(name: str, data: bytes) -> bytes:
        if name != backup.MANIFEST:
            return data
        manifest = json.loads(data)
        manifest["databases"]["service"]["schema_revision"] = "9999"
        return json.dumps(manifest).encode()

    bad = rewrite(first_archive, tmp_path / "newer.tar", newer)
    assert_refused(env_of(tmp_path / "target"), bad, "revision 9999 is unknown to this code's migrations")


def test_a_non_empty_target_is_refused_untouched_and_replaced_with_force(loop_state, first_archive, tmp_path):
    _, archive_a, *_ = loop_state
    env = env_of(tmp_path / "target")
    assert restore_into(env, first_archive)[0] == 0  # the trained store: no prediction yet
    counts = service_counts(env)
    assert counts["predictions"] == 0
    assert_refused(env, archive_a, "the target is not empty")
    assert service_counts(env) == counts
    code, _, err = restore_into(env, archive_a, "--force")
    assert code == 0, err
    assert (
        service_counts(env) == backup.read_archive(archive_a).manifest["databases"]["service"]["row_counts"]
    )


def register_tiny_model(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A logistic regression logged, registered and made champion on the current tracking server;
    (inputs, its probabilities)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
    return x, model.predict_proba(x)


def test_postgresql_and_s3_round_trip(postgres_server, s3_server, tmp_path):
    """The stack's layout: an MLflow server on PostgreSQL with its artifacts in S3 (read by the backup
    through MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION), the service's store in
    PostgreSQL (pg_dump / pg_restore), the monitor's reports in S3. Restored into other databases and
    buckets, a new MLflow server there serves the same champion."""
    access = S3Access(s3_server.endpoint, s3_server.access_key, s3_server.secret_key)

    def site(label: str) -> dict[str, str]:
        return env_of(
            tmp_path / label,
            DATABASE_URL=postgres_server.create_database(f"svc_{label}"),
            MLFLOW_BACKEND_STORE_URI=postgres_server.create_database(f"mlf_{label}"),
            MLFLOW_ARTIFACTS_DESTINATION=f"s3://{label}-artifacts/mlflow",
            MONITOR_REPORTS_URI=f"s3://{label}-reports/reports",
            MODEL_NAME="bk-model",
            **s3_server.env(),
        )

    def server(env: dict[str, str]):
        s3_server.make_bucket(env["MLFLOW_ARTIFACTS_DESTINATION"].split("/")[2])
        return start_mlflow_server(
            env["MLFLOW_BACKEND_STORE_URI"], env["MLFLOW_ARTIFACTS_DESTINATION"], tmp_path, s3_server.env()
        )

    src, dst = site("src"), site("dst")
    mlflow_src = server(src)
    try:
        src["MLFLOW_TRACKING_URI"] = mlflow_src.url
        with using(src):
            x, probabilities = register_tiny_model("bk-model")
        engine = store.engine_for(src["DATABASE_URL"])
        with engine.begin() as conn:
            conn.execute(
                store.champion_moves.insert(),
                [
                    {
                        "at": store.utcnow(),
                        "model_name": "bk-model",
                        "to_version": "1",
                        "kind": "promotion",
                        "by": "test",
                        "reason": "first",
                    }
                ],
            )
        reports = ObjectStore(src["MONITOR_REPORTS_URI"], access)
        for i in range(3):
            reports.put(f"2026/12/0{i}/report.html", b"<html>%d</html>" % i)
        archive = take_backup(src, tmp_path / "backups")
    finally:
        stop_process(mlflow_src.process)

    manifest = backup.read_archive(archive).manifest
    service, registry_db = manifest["databases"]["service"], manifest["databases"]["mlflow"]
    assert service["backend"] == registry_db["backend"] == "postgresql"
    assert service["server_version"].startswith("15") and service["row_counts"]["champion_moves"] == 1
    assert registry_db["row_counts"]["registered_models"] == 1 and registry_db["schema_revision"]
    assert "password" not in json.dumps(manifest)
    assert manifest["object_roots"]["monitor-reports"] == {
        "uri": src["MONITOR_REPORTS_URI"],
        "objects": 3,
        "bytes": sum(len(b"<html>%d</html>" % i) for i in range(3)),
    }
    assert manifest["object_roots"]["mlflow-artifacts"]["objects"] >= 3  # MLmodel, model.pkl, ...

    # a fresh stack: its MLflow server and the service's tables up, empty
    store.engine_for(dst["DATABASE_URL"])
    mlflow_dst = server(dst)
    try:
        dst["MLFLOW_TRACKING_URI"] = mlflow_dst.url
        code, out, err = restore_into(dst, archive)
        assert code == 0, err
        assert service_counts(dst) == service["row_counts"]
        restored_registry = backup.describe_database(dst["MLFLOW_BACKEND_STORE_URI"], service=False)
        assert restored_registry["row_counts"] == registry_db["row_counts"]
        restored = ObjectStore(dst["MONITOR_REPORTS_URI"], access)
        assert sorted(restored.names()) == sorted(reports.names())
        assert restored.get("2026/12/01/report.html") == b"<html>1</html>"
        with using(dst):
            model = mlflow.sklearn.load_model("models:/bk-model@champion")
            assert (model.predict_proba(x) == probabilities).all()
    finally:
        stop_process(mlflow_dst.process)
    # it holds rows, a registered model and objects now: a second restore is refused, nothing changed
    assert_refused(dst, archive, "the target is not empty")
    assert service_counts(dst) == service["row_counts"]


def test_an_archive_from_older_code_restores_at_its_revision_and_the_migrations_upgrade_it(
    first_archive, tmp_path
):
    """The service database of an archive made before the last migration (0004: no champion_moves)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    older = tmp_path / "older.sqlite"
    engine = store.make_engine(f"sqlite:///{older}")
    config = store.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    engine.dispose()

    def at_0004(name: str, data: bytes) -> bytes:
        if name == "databases/service.sqlite":
            return older.read_bytes()
        if name == backup.MANIFEST:
            manifest = json.loads(data)
            manifest["members"]["databases/service.sqlite"] = backup.sha256(older.read_bytes())
            manifest["databases"]["service"]["schema_revision"] = "0004"
            return json.dumps(manifest).encode()
        return data

    archive = rewrite(first_archive, tmp_path / "older.tar", at_0004)
    env = env_of(tmp_path / "target")
    code, _, err = restore_into(env, archive)
    assert code == 0, err
    restored = store.make_engine(env["DATABASE_URL"])
    assert store.schema_revision(restored) == "0004"
    assert "champion_moves" not in sa.inspect(restored).get_table_names()
    store.create_tables(restored)  # what the service runs when it starts
    head = ScriptDirectory.from_config(config).get_current_head()
    assert store.schema_revision(restored) == head and head > "0004"
    assert "champion_moves" in sa.inspect(restored).get_table_names()


def test_a_fresh_stacks_own_rows_do_not_make_it_non_empty(first_archive, tmp_path):
    """A freshly started stack's monitor records a skipped run (no champion yet): still an empty target.
    A run that judged data is state: refused."""
    env = env_of(tmp_path / "target")
    engine = store.engine_for(env["DATABASE_URL"])
    run_row = {"started_at": store.utcnow(), "status": "skipped", "reason": "no champion yet", "alarm": False}
    with engine.begin() as conn:
        conn.execute(store.monitoring_runs.insert(), [run_row, {**run_row, "status": "error"}])
    checked = {**run_row, "status": "ok", "reason": None}
    with engine.begin() as conn:
        conn.execute(store.monitoring_runs.insert(), [checked])
    assert_refused(env, first_archive, "1 rows in monitoring_runs")
    with engine.begin() as conn:
        conn.execute(store.monitoring_runs.delete().where(store.monitoring_runs.c.status == "ok"))
    engine.dispose()
    store._engines.pop(env["DATABASE_URL"], None)
    code, _, err = restore_into(env, first_archive)
    assert code == 0, err
