"""Helpers of the closed-loop tests (monitoring, trigger, retrain): the held-out data of a trained
champion, scored by it, and rows written straight into the prediction log tables."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from werkzeug.serving import make_server

from core import registry, store
from core.dataset import DatasetConfig
from training import gate


def champion_data(model_name: str) -> tuple[pd.DataFrame, pd.DataFrame, gate.LoadedModel]:
    """(reference, test set with label, loaded champion) of the current champion."""
    mv = registry.version_by_alias(model_name, registry.CHAMPION)
    ref = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="reference/reference.parquet")
    )
    test = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="data/test.parquet")
    )
    return ref, test, gate.load_version(model_name, mv.version)


def score(model: gate.LoadedModel, frame: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    from core.features import coerce_features

    return model.score(coerce_features(frame, config))


def _jsonable(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def log_predictions(
    engine: sa.Engine,
    frame: pd.DataFrame,
    scores: np.ndarray,
    config: DatasetConfig,
    model_name: str,
    version: str,
    *,
    feedback: bool = True,
    at: datetime | None = None,
    per_request: int = 10,
    event_at: datetime | None = None,
) -> list[tuple[str, int]]:
    """Write `frame`'s records as logged predictions (and their `label` as feedback when asked); with
    `event_at`, the records' business time ends there as their processing time ends at `at`."""
    at = at or datetime.now(UTC)
    preds, fbs, keys = [], [], []
    request_id = None
    for i, (_, row) in enumerate(frame.reset_index(drop=True).iterrows()):
        if i % per_request == 0:
            request_id = str(uuid.uuid4())
        index = i % per_request
        created = at - timedelta(seconds=len(frame) - i)
        preds.append(
            {
                "request_id": request_id,
                "record_index": index,
                "created_at": created,
                "model_name": model_name,
                "model_version": str(version),
                "features": {f: _jsonable(row[f]) for f in config.feature_names},
                "score": float(scores[i]),
                "label": int(scores[i] >= 0.5),
                "latency_ms": 1.0,
                "event_at": None if event_at is None else event_at - timedelta(seconds=len(frame) - i),
            }
        )
        keys.append((request_id, index))
        if feedback and "label" in frame and not pd.isna(row["label"]):
            fbs.append(
                {
                    "request_id": request_id,
                    "record_index": index,
                    "label": int(row["label"]),
                    "received_at": created + timedelta(seconds=1),
                }
            )
    with engine.begin() as conn:
        conn.execute(store.predictions.insert(), preds)
        if fbs:
            conn.execute(store.feedback.insert(), fbs)
    return keys


@contextmanager
def served_app(app) -> Iterator[str]:
    """The app on a free loopback port (werkzeug, threaded) while the block runs; yields its URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
