"""The drift reference of a retrained version: the production window it was retrained for.

A retrained version's own training data is mostly the old distribution (the base snapshot plus a few
hundred production records), so a reference sampled from it still reads the traffic the retrain was for
as drift, and the loop would retrain on it again and again. `log_production_reference` logs, with the
retrained version's run, the records of the monitoring window that started the retrain (the run
RETRAIN_MONITORING_RUN_ID names, else the newest run that alarmed on the champion being replaced),
scored by the new version, as `reference/production.parquet`, and tags the version
`reference_artifact` so the monitor compares live traffic with it. Unchanged traffic then reads as ok;
a new, different drift still differs from it. Fewer than `min_rows` records: the training reference
stays (the tag is not set). The drift bounds are calibrated again on the production reference
(training.drift_calibration, same artifact), so they match the reference the monitor compares with.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from core import registry, store
from core.dataset import DatasetConfig
from core.drift import CALIBRATION_ARTIFACT
from core.features import coerce_features
from training.drift_calibration import calibrate
from training.tracking import calibration_tag

log = logging.getLogger("training.reference")
MIN_ROWS = 100


@dataclass(frozen=True)
class ProductionReference:
    monitoring_run_id: int
    rows: int
    labelled: int

    def line(self) -> str:
        return (
            f"drift reference: the window of monitoring run {self.monitoring_run_id} "
            f"({self.rows} production records, {self.labelled} labelled)"
        )


def window_for_retrain(engine, model_name: str, replaced_version: str | None, run_id: str) -> int | None:
    """The monitoring run whose window a retrain is for: `run_id` when given, else the newest run that
    alarmed on the version being replaced."""
    if run_id.strip().isdigit():
        return int(run_id)
    if replaced_version is None:
        return None
    return store.last_alarm_run(engine, model_name, replaced_version)


def reference_frame(window: pd.DataFrame, config: DatasetConfig, score) -> pd.DataFrame:
    """Features as the model takes them, the feedback label (NaN where none) and the new model's score:
    the columns of the training reference."""
    features = coerce_features(window, config).reset_index(drop=True)
    return features.assign(label=window["label"].to_numpy(), score=score(features))


def log_production_reference(
    database_url: str,
    config: DatasetConfig,
    model_name: str,
    version: str,
    replaced_version: str | None,
    monitoring_run_id: str,
    score,
    min_rows: int = MIN_ROWS,
    archive: Any = None,
) -> ProductionReference | None:
    """Log the production window as the drift reference of `version` (see the module doc); None when
    there is no such window or it is smaller than `min_rows`."""
    engine = store.engine_for(database_url)
    run = window_for_retrain(engine, model_name, replaced_version, monitoring_run_id)
    window = store.run_window(engine, run, archive) if run is not None else None
    if window is None or len(window) < min_rows:
        log.info(
            "drift reference: the training data's (no production window of at least %d records%s)",
            min_rows,
            f"; monitoring run {run} has {0 if window is None else len(window)}" if run is not None else "",
        )
        return None
    frame = reference_frame(window, config, score)
    client = mlflow.MlflowClient()
    mv = registry.get_version(model_name, version, client)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(registry.PRODUCTION_REFERENCE_ARTIFACT).name
        frame.to_parquet(path, index=False)
        client.log_artifact(mv.run_id, str(path), str(Path(registry.PRODUCTION_REFERENCE_ARTIFACT).parent))
    out = ProductionReference(run, len(frame), int(frame["label"].notna().sum()))
    # the bounds were calibrated on the training reference: calibrate them on this one (same policy)
    importance = registry.model_metadata(model_name, version).get("feature_importance") or {}
    calibration = calibrate(frame, importance, config)
    client.log_dict(mv.run_id, calibration.as_dict(), CALIBRATION_ARTIFACT)
    for key, value in {
        registry.REFERENCE_TAG: registry.PRODUCTION_REFERENCE_ARTIFACT,
        "reference_source": f"monitoring run {run}: {out.rows} production records",
        "drift_calibration": f"{calibration_tag(calibration)}; recalibrated on the production reference",
    }.items():
        client.set_model_version_tag(model_name, version, key, value)
    log.info(out.line())
    return out
