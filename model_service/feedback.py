"""The feedback store: the true label of a scored record, with typed errors for each way it can fail.

`FeedbackStore.record` checks that the prediction exists (in the database; or in a spool segment on
disk not yet moved by the writer process, any worker's: inserted from there, duplicates skipped; the
database is read again after the spool, for a segment the writer moved meanwhile; or,
when its day is past LOG_RETENTION_DAYS, in the prediction-log archive, core.retention: a late label is
stored in `feedback` and joined with the archived record by its readers) and stores the label once. An
unknown id is answered at once (no polling). It raises `FeedbackNotFound` (no such request id and record
index), `DuplicateFeedback` (the record already has a label), `FeedbackBeforeRecord` (an event time
before the record's own) or `FeedbackUnavailable` (the database is down); anything else is a bug and
propagates.

Event time: a label given an `event_at` (business time: when the outcome became known) is checked
against its record's event time (COALESCE(event_at, created_at), one indexed lookup, only when an event
time is given; a record only in the archive is not checked) and stored in `feedback.event_at`; without
one, `event_at` is the time it was received.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from core.objects import ObjectStore
from model_service.prediction_log.request_ids import request_id_age
from model_service.prediction_log.store import now
from model_service.prediction_log.writer import PredictionLog


class FeedbackError(Exception):
    """Feedback that cannot be stored; the message says why."""


class FeedbackNotFound(FeedbackError):
    pass


class DuplicateFeedback(FeedbackError):
    pass


class FeedbackBeforeRecord(FeedbackError):
    """The label's event time is before its record's event time (the outcome known before the event)."""


class FeedbackUnavailable(FeedbackError):
    """The prediction log database cannot answer now (retry later)."""


class FeedbackStore:
    def __init__(self, plog: PredictionLog, archive: ObjectStore | None = None, retention_days: int = 0):
        self.plog = plog
        self.archive = archive if retention_days > 0 else None
        self.retention_days = retention_days

    def record(
        self, request_id: str, record_index: int, label: int, event_at: datetime | None = None
    ) -> tuple[datetime, datetime]:
        """Store the label; returns when it was received and its event time (`event_at`, UTC, or the
        time it was received)."""
        try:
            found = self._prediction_exists(request_id, record_index)
        except SQLAlchemyError as exc:
            raise FeedbackUnavailable(str(exc)) from exc
        if not found:
            raise FeedbackNotFound(
                f"no prediction with request_id {request_id} and record_index {record_index}"
            )
        received = now()
        try:
            if event_at is not None:
                self._check_event_time(request_id, record_index, event_at)
            stored = self.plog.store.insert_feedback(request_id, record_index, label, received, event_at)
        except SQLAlchemyError as exc:
            raise FeedbackUnavailable(str(exc)) from exc
        if not stored:
            raise DuplicateFeedback(f"record {record_index} of request {request_id} already has a label")
        return received, event_at or received

    def _check_event_time(self, request_id: str, record_index: int, event_at: datetime) -> None:
        """Raise `FeedbackBeforeRecord` when `event_at` is before the record's event time (read from the
        database, where the existence check left the record; an archived record is not checked)."""
        record_at = self.plog.store.prediction_event_time(request_id, record_index)
        if record_at is not None and event_at < record_at:
            raise FeedbackBeforeRecord(
                f"before the record's event time ({event_at.isoformat()} < {record_at.isoformat()})"
            )

    def _prediction_exists(self, request_id: str, record_index: int) -> bool:
        """In the database; or in a spool segment on disk (any worker's, not yet moved by the writer
        process): inserted from there now. Never waits for time to pass."""
        if self.plog.store.prediction_exists(request_id, record_index):
            return True
        age = request_id_age(request_id)
        if age is None:
            return False  # not an id this service issues (UUIDv7): nothing to look for on disk
        if self.plog.store_from_spool(request_id, record_index):
            return True
        # The writer process commits a segment's rows before it deletes the file: a segment moved between
        # the first look and the spool scan is in the database now. Look once more (no waiting).
        if self.plog.store.prediction_exists(request_id, record_index):
            return True
        return self._archived(request_id, record_index, age)

    def _archived(self, request_id: str, record_index: int, age: float) -> bool:
        """In the archive: only for an id issued before the retention window's last day (a day the job may
        have archived); its day's Parquet parts are read (a few, for one late label)."""
        if self.archive is None or age < (self.retention_days - 1) * 86_400:
            return False
        from core import retention  # pyarrow: only for a late label

        issued = (datetime.now(UTC) - timedelta(seconds=age)).date()
        try:
            return retention.archived_record(self.archive, request_id, record_index, issued)
        except Exception as exc:  # a folder's OSError, S3's S3Error or connection errors: retry later
            raise FeedbackUnavailable(f"the prediction-log archive cannot be read: {exc}") from exc
