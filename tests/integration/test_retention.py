"""Retention of the prediction log (core.retention) on SQLite and PostgreSQL, into a folder and S3 (moto):
days past the window archived as Parquet and gone from the database, the rest kept, nothing lost or
doubled after a crash, late labels, readers of older records, and the service's writes during the job."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest
from sqlalchemy import func, select

from core import retention, store
from core.objects import ObjectStore, S3Access
from model_service.feedback import FeedbackNotFound, FeedbackStore
from model_service.prediction_log.store import LogStore
from monitoring import guard
from monitoring.monitor import seconds_to_next_day

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
COLUMNS = [c.name for c in store.predictions.columns]


def uuid7(at: datetime) -> str:
    """A UUIDv7 issued at `at` (the service's request ids carry their time)."""
    ms = int(at.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (int.from_bytes(os.urandom(10), "big") & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


EVENT_LAG = timedelta(days=1)  # the records' event time (business time): a day before they were logged


def rows_at(at: datetime, n: int, version: str = "1", request_id: str | None = None) -> list[tuple]:
    rid = request_id or uuid7(at)
    features = {"Contract": "Month-to-month"}
    return [
        (rid, i, at, "telco-churn", version, {"tenure": i, **features}, i / n, i % 2, 3.5, at - EVENT_LAG)
        for i in range(n)
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def log_store(request, tmp_path) -> LogStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'service.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(f"ret_{uuid.uuid4().hex[:10]}")
    log = LogStore(url)
    log.ensure_tables()
    return log


@pytest.fixture
def archive(object_store) -> ObjectStore:
    """The archive: a folder, or a prefix of a fresh bucket on moto's S3 (tests/conftest.py)."""
    return object_store


def fill(log: LogStore) -> dict[str, list[str]]:
    """Requests of 40, 35 and 31 days ago (past a 30-day window), of 29 and 0 days ago (inside), each with
    a label on one record the same day."""
    ids: dict[str, list[str]] = {"old": [], "kept": []}
    for days, n in ((40, 7), (35, 5), (31, 3), (29, 4), (0, 6)):
        at = NOW - timedelta(days=days, hours=1)
        rows = rows_at(at, n)
        log.insert(rows)
        log.insert_feedback(rows[0][0], 0, 1, at + timedelta(minutes=5))
        ids["old" if days > 30 else "kept"].append(rows[0][0])
    return ids


def count(log: LogStore, table) -> int:
    with log.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_past_days_archived_and_deleted_the_rest_kept(log_store, archive, tmp_path):
    ids = fill(log_store)
    before = store.labelled_predictions(log_store.engine)
    result = retention.run_retention(log_store.engine, archive, 30, now=NOW, batch=2)
    assert result.tables["predictions"].archived == 15 and result.tables["predictions"].deleted == 15
    assert result.tables["feedback"].archived == 3 and result.tables["feedback"].days == 3
    assert count(log_store, store.predictions) == 10 and count(log_store, store.feedback) == 2
    with log_store.engine.connect() as conn:
        left = set(conn.execute(select(store.predictions.c.request_id)).scalars())
    assert left == set(ids["kept"])
    names = sorted(archive.names())
    assert [n.split("/")[1] for n in names if n.startswith("predictions/")] == [
        "day=2026-10-28",
        "day=2026-11-02",
        "day=2026-11-06",
    ]
    old = retention.read_archive(archive, "predictions")
    assert sorted(old["request_id"].unique()) == sorted(ids["old"]) and len(old) == 15
    assert list(old.columns) == COLUMNS
    assert str(old["created_at"].dt.tz) == "UTC" and old["created_at"].min() == NOW - timedelta(
        days=40, hours=1
    )
    assert (old["event_at"] == old["created_at"] - EVENT_LAG).all()  # new parts carry the event time
    # DB + archive equals what was there: the retrain's labelled records are the same, same order
    after = store.labelled_predictions(log_store.engine, archive)
    pd.testing.assert_frame_equal(after, before)
    assert len(store.labelled_predictions(log_store.engine)) == 2  # the database alone lost them
    again = retention.run_retention(log_store.engine, archive, 30, now=NOW)
    assert again.tables["predictions"].archived == 0 and sorted(archive.names()) == names


def test_archive_folder_readable_by_pandas_with_the_original_columns(tmp_path):
    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    fill(log)
    folder = tmp_path / "archive"
    retention.run_retention(log.engine, ObjectStore(str(folder)), 30, now=NOW)
    frame = pd.read_parquet(folder / "predictions")  # hive partitions: `day` becomes a column
    assert set(frame.columns) == {*COLUMNS, "day"} and len(frame) == 15
    assert sorted(frame["day"].astype(str).unique()) == ["2026-10-28", "2026-11-02", "2026-11-06"]
    assert pd.read_parquet(folder / "feedback")["label"].tolist() == [1, 1, 1]
    one_day = pd.read_parquet(folder / "predictions", filters=[("day", "=", "2026-11-02")])
    assert len(one_day) == 5
    # `make score`'s readers (scoring.job): the part files of a folder, a pyarrow dataset of it
    from scoring.job import parquet_files

    assert len(parquet_files(folder / "predictions")) == 3
    assert pads.dataset(folder / "predictions", format="parquet").count_rows() == 15


def test_archive_on_s3_readable_by_a_pyarrow_dataset(tmp_path, s3_server):
    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    fill(log)
    access = S3Access(s3_server.endpoint, s3_server.access_key, s3_server.secret_key)
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    retention.run_retention(log.engine, ObjectStore(f"s3://{bucket}/prediction-log", access), 30, now=NOW)
    s3 = pafs.S3FileSystem(
        endpoint_override=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region="us-east-1",
    )
    data = pads.dataset(f"{bucket}/prediction-log/predictions", filesystem=s3, partitioning="hive").to_table()
    assert data.num_rows == 15 and set(data.column_names) == {*COLUMNS, "day"}


def test_a_crash_between_write_and_delete_neither_loses_nor_doubles(log_store, archive, monkeypatch):
    fill(log_store)
    log_store.insert(rows_at(NOW - timedelta(days=40, hours=2), 20))  # day 40 now has 27 rows
    total = count(log_store, store.predictions)
    real_delete = retention._delete
    calls = {"n": 0}

    def killed(engine, table, ids, batch, pause):
        calls["n"] += 1
        if calls["n"] == 1:  # the first day: one batch deleted, then the process dies
            real_delete(engine, table, ids[:batch], batch, pause)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(retention, "_delete", killed)
    with pytest.raises(KeyboardInterrupt):
        retention.run_retention(log_store.engine, archive, 30, now=NOW, batch=4)
    monkeypatch.setattr(retention, "_delete", real_delete)
    # a row logged late into the half-archived day (a spool replay) must be archived too
    log_store.insert(rows_at(NOW - timedelta(days=40, hours=3), 2))
    total += 2
    result = retention.run_retention(log_store.engine, archive, 30, now=NOW, batch=4)
    assert result.tables["predictions"].archived == 35 - 27 + 2  # the 27 of day 40 not written again
    old = retention.read_archive(archive, "predictions")
    assert old["id"].is_unique and len(old) == 35 + 2
    assert count(log_store, store.predictions) + len(old) == total
    with log_store.engine.connect() as conn:
        oldest = conn.execute(select(func.min(store.predictions.c.created_at))).scalar()
    assert store.as_utc(oldest) >= retention.cutoff(30, NOW)


def test_a_late_label_for_an_archived_prediction_is_stored_and_read(tmp_path, archive):
    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    at = datetime.now(UTC) - timedelta(days=45)
    rows = rows_at(at, 3)
    log.insert(rows)
    retention.run_retention(log.engine, archive, 30)
    assert count(log, store.predictions) == 0
    plog = SimpleNamespace(store=log, is_pending=lambda _rid: False, store_from_spool=lambda *_: False)
    feedback = FeedbackStore(plog, archive, retention_days=30)
    feedback.record(rows[1][0], 1, 1)  # months late: the prediction is only in the archive
    with pytest.raises(FeedbackNotFound):
        feedback.record(rows[1][0], 7, 1)  # no such record, archived or not
    with pytest.raises(FeedbackNotFound):
        FeedbackStore(plog, archive, retention_days=0).record(rows[1][0], 2, 1)  # retention off: not read
    labelled = store.labelled_predictions(log.engine, archive)
    assert len(labelled) == 1 and labelled["tenure"].tolist() == [1] and labelled["__label__"].tolist() == [1]
    # and the label itself is archived in its turn, still joined
    retention.run_retention(log.engine, archive, 30, now=datetime.now(UTC) + timedelta(days=40))
    assert count(log, store.feedback) == 0
    assert store.labelled_predictions(log.engine, archive)["__label__"].tolist() == [1]


def test_guard_reads_the_previous_versions_archived_records(tmp_path):
    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    folder = ObjectStore(str(tmp_path / "archive"))
    log.insert(rows_at(NOW - timedelta(days=40), 5, version="1"))
    log.insert(rows_at(NOW - timedelta(days=2), 3, version="1"))
    before = guard.version_records(log.engine, "telco-churn", "1", until=NOW, size=100)
    retention.run_retention(log.engine, folder, 30, now=NOW)
    assert len(guard.version_records(log.engine, "telco-churn", "1", until=NOW, size=100)) == 3
    after = guard.version_records(log.engine, "telco-churn", "1", until=NOW, size=100, archive=folder)
    assert len(after) == 8
    pd.testing.assert_frame_equal(
        after.sort_values(["request_id", "score"]).reset_index(drop=True),
        before.sort_values(["request_id", "score"]).reset_index(drop=True),
    )
    assert len(guard.version_records(log.engine, "telco-churn", "1", until=NOW, size=4, archive=folder)) == 4


def test_the_service_keeps_writing_while_the_job_runs(log_store, tmp_path):
    old = NOW - timedelta(days=40)
    for k in range(20):
        log_store.insert(rows_at(old + timedelta(minutes=k), 500))  # 10,000 rows to archive
    errors: list[BaseException] = []
    written: list[str] = []
    stop = threading.Event()
    waits: list[float] = []

    def writer() -> None:
        while not stop.is_set():
            rows = rows_at(datetime.now(UTC), 10)
            started = time.perf_counter()
            try:
                log_store.insert(rows)
                written.append(rows[0][0])
            except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(exc)
            waits.append(time.perf_counter() - started)
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = retention.run_retention(
            log_store.engine, ObjectStore(str(tmp_path / "a")), 30, now=NOW, batch=500
        )
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert result.tables["predictions"].deleted == 10_000
    assert len(written) > 0
    with log_store.engine.connect() as conn:
        kept = set(conn.execute(select(store.predictions.c.request_id)).scalars())
    assert set(written) <= kept
    assert max(waits) < 5.0  # no insert waited for the whole job


def test_operator_command_and_monitor_schedule(tmp_path, monkeypatch, capsys):
    from operations import retention as command

    url = f"sqlite:///{tmp_path / 'service.db'}"
    log = LogStore(url)
    log.ensure_tables()
    log.insert(rows_at(datetime.now(UTC) - timedelta(days=10), 4))
    log.insert(rows_at(datetime.now(UTC), 2))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LOG_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("LOG_ARCHIVE_URI", raising=False)
    assert command.main([]) == 2  # off by default
    assert command.main(["--days", "5", "--dry-run"]) == 0 and count(log, store.predictions) == 6
    assert "predictions: 4 rows" in capsys.readouterr().out
    monkeypatch.setenv("LOG_RETENTION_DAYS", "5")
    assert command.main([]) == 0
    assert count(log, store.predictions) == 2
    assert len(pd.read_parquet(tmp_path / "state" / "archive" / "prediction-log" / "predictions")) == 4
    assert seconds_to_next_day(datetime(2026, 12, 7, 23, 59, tzinfo=UTC)) == 60 + 60


def test_timeline_counts_archived_records(tmp_path):
    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    folder = ObjectStore(str(tmp_path / "archive"))
    with log.engine.begin() as conn:
        for at, version in ((NOW - timedelta(days=50), "1"), (NOW - timedelta(days=33), "2")):
            conn.execute(
                store.champion_moves.insert().values(
                    at=at,
                    model_name="telco-churn",
                    to_version=version,
                    kind="promotion",
                    by="gate",
                    reason="r",
                )
            )
    log.insert(rows_at(NOW - timedelta(days=45), 4, version="1"))
    log.insert(rows_at(NOW - timedelta(days=32), 3, version="2"))
    log.insert(rows_at(NOW - timedelta(days=1), 2, version="2"))
    served = [m["records_by_version"] for m in store.champion_timeline(log.engine, "telco-churn")]
    assert served == [{"1": 4}, {"2": 5}]
    retention.run_retention(log.engine, folder, 30, now=NOW)
    assert [m["records_served"] for m in store.champion_timeline(log.engine, "telco-churn")] == [0, 2]
    after = [
        m["records_by_version"] for m in store.champion_timeline(log.engine, "telco-churn", archive=folder)
    ]
    assert after == served


def test_the_monitor_loop_runs_the_job_then_waits_for_the_next_day(tmp_path):
    from monitoring.monitor import retention_forever
    from monitoring.settings import MonitorSettings

    url = f"sqlite:///{tmp_path / 'service.db'}"
    log = LogStore(url)
    log.ensure_tables()
    log.insert(rows_at(datetime.now(UTC) - timedelta(days=10), 4))
    off = MonitorSettings.from_env(database_url=url, state_dir=tmp_path, log_retention_days=0)
    assert retention.run_from_settings(off) is None
    settings = MonitorSettings.from_env(database_url=url, state_dir=tmp_path, log_retention_days=5)

    class OneDay(threading.Event):
        def wait(self, timeout=None):
            self.waited = timeout
            self.set()
            return True

    stop = OneDay()
    retention_forever(settings, stop)
    assert count(log, store.predictions) == 0
    assert len(retention.read_archive(retention.archive_store(settings), "predictions")) == 4
    assert 60 < stop.waited <= 86_400 + 60


def test_a_monitoring_runs_window_is_read_back_from_the_archive(tmp_path):
    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    folder = ObjectStore(str(tmp_path / "archive"))
    start = NOW - timedelta(days=40)
    rows = rows_at(start, 6) + rows_at(start + timedelta(minutes=10), 4)
    log.insert(rows)
    log.insert_feedback(rows[2][0], 2, 1, start + timedelta(minutes=1))
    with log.engine.begin() as conn:
        run_id = conn.execute(
            store.monitoring_runs.insert().values(
                started_at=start + timedelta(minutes=11),
                status="drift",
                model_name="telco-churn",
                model_version="1",
                window_size=8,
                window_start=start,
                window_end=start + timedelta(minutes=10),
            )
        ).inserted_primary_key[0]
    before = store.run_window(log.engine, run_id)
    assert len(before) == 8 and before["label"].notna().sum() == 1
    retention.run_retention(log.engine, folder, 30, now=NOW)
    assert len(store.run_window(log.engine, run_id)) == 0
    after = store.run_window(log.engine, run_id, folder)
    key = ["created_at", "request_id", "record_index"]
    pd.testing.assert_frame_equal(
        after.sort_values(key).reset_index(drop=True), before.sort_values(key).reset_index(drop=True)
    )


def test_parts_archived_before_event_times_read_with_their_processing_time(tmp_path):
    """A part written before migration 0006 has no `event_at` column: it reads as created_at (feedback:
    received_at), beside newer parts that carry it, in every reader."""
    import io

    import pyarrow.parquet as pq

    log = LogStore(f"sqlite:///{tmp_path / 'service.db'}")
    log.ensure_tables()
    folder = ObjectStore(str(tmp_path / "archive"))
    old_at, new_at = NOW - timedelta(days=45), NOW - timedelta(days=40)
    old_rows = rows_at(old_at, 3)
    log.insert(old_rows)
    log.insert_feedback(old_rows[0][0], 0, 1, old_at + timedelta(minutes=5))
    retention.run_retention(log.engine, folder, 30, now=NOW - timedelta(days=3))
    for name in folder.names():  # as the archive job wrote them before the column existed
        part = pq.read_table(io.BytesIO(folder.get(name)))
        folder.put(name, retention._parquet(part.drop_columns(["event_at"])))
    log.insert(rows_at(new_at, 2))
    retention.run_retention(log.engine, folder, 30, now=NOW)

    frame = retention.read_archive(folder, "predictions")
    assert list(frame.columns) == COLUMNS and len(frame) == 5
    old = frame[frame["created_at"] == old_at]
    new = frame[frame["created_at"] == new_at]
    assert len(old) == 3 and (old["event_at"] == old_at).all()  # no event time archived: created_at
    assert len(new) == 2 and (new["event_at"] == new_at - EVENT_LAG).all()
    some = retention.read_archive(
        folder, "predictions", ["request_id", "event_at"], filters=[("record_index", "=", 0)]
    )
    assert list(some.columns) == ["request_id", "event_at"] and sorted(some["event_at"]) == [
        old_at,
        new_at - EVENT_LAG,
    ]
    fb = retention.read_archive(folder, "feedback")
    assert fb["event_at"].tolist() == [old_at + timedelta(minutes=5)]
    window = store.recent_predictions(log.engine, "telco-churn", "1", 10, 0, archive=folder)
    assert sorted(window["event_at"]) == [old_at] * 3 + [new_at - EVENT_LAG] * 2
