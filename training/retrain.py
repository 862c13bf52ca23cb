"""Retrain on the original data plus the labelled production records: `python -m training.retrain`
(`make retrain`; the local retrain trigger and the Jenkins retrain job run this).

1. Base: the root snapshot (the one ingested from the source) of the current champion's training data
   (its `data_hash` tag; the latest snapshot when there is no champion); with `retrain.on_source_change`
   in the data set config, a new ingestion of the source when its content differs from that root.
2. Production records: every logged prediction with a feedback label (`predictions` joined with
   `feedback` on request id and record index, DATABASE_URL), mapped back to the raw columns of the
   data set config: features from the logged record, the target from the label (1 -> positive class),
   dropped columns (e.g. the row id) continued after the base's.
   Left out, and counted (core.newdata: the monitor counts new data by the same rules): records outside the declared schema (an unseen category, a value out of range),
   records identical (features and label) to a row already in the data (replayed held-out records add
   nothing new), and records with a missing value the config does not allow: in a feature without
   `max_missing_share`, or beyond it (the new snapshot keeps every column within its declared missing
   share, so it passes validation; records are kept oldest first until a column's share is used up).
   Records whose missing values are within the declared shares are kept, missing values and all:
   missingness can be what predicts the label.
3. New snapshot = base rows + the kept production rows, content-hashed, with the base as its parent.
4. Train on it; log as the new version's drift reference the production window the retrain is for
   (training.reference), so the loop settles; gate the new version, promote it when the gate passes
   (training.train, training.gate). The running service picks the new champion up by its own reload poll.

Exit codes: 0 promoted (or nothing new: no new labelled record, source unchanged), 1 gate failed (champion unchanged),
2 cannot run (config, data, registry).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass, field

import pandas as pd

from core import registry, retention, store
from core.dataset import ConfigError, DatasetConfig, load_config
from core.logs import setup_logging

# the rules, shared with the monitor's new-data count (MISSING_LEFT_OUT, to_raw and
# within_missing_shares re-exported: they lived here)
from core.newdata import MISSING_LEFT_OUT as MISSING_LEFT_OUT
from core.newdata import new_rows
from core.newdata import to_raw as to_raw
from core.newdata import within_missing_shares as within_missing_shares
from core.objects import ObjectStore
from core.settings import load_or_exit
from core.snapshot import Snapshot, champion_snapshot, lineage_root
from training import gate, reference
from training.data import DataError, ingest, write_snapshot
from training.settings import TrainingSettings
from training.train import train

log = logging.getLogger("training.retrain")  # not __name__: `python -m` runs this as __main__


@dataclass
class RetrainData:
    frame: pd.DataFrame
    base: Snapshot
    labelled: int = 0
    added: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    source_changed: bool = False  # the base is a new ingestion of a changed source

    def summary(self) -> str:
        out = ", ".join(f"{n} {why}" for why, n in self.left_out.items() if n)
        return (
            f"base snapshot {self.base.hash[:16]} ({self.base.manifest['rows']} rows) + {self.added} of "
            f"{self.labelled} labelled production records" + (f" (left out: {out})" if out else "")
        )


def base_snapshot(settings: TrainingSettings, config: DatasetConfig) -> Snapshot:
    return current_base(settings, config)[0]


def current_base(settings: TrainingSettings, config: DatasetConfig) -> tuple[Snapshot, bool]:
    """The base to add production records to, and whether it is a changed source.

    The root of the champion's training data; but when the config says `retrain.on_source_change` and
    the source's content now differs from that root, a fresh ingestion of the source (the monitor's
    "new data: the source changed" trigger retrains on the new source)."""
    champion = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    data_hash = champion.tags.get("data_hash") if champion is not None else None
    try:
        snap = champion_snapshot(data_hash, config, settings.data_dir)
    except DataError:
        snap = ingest(config, settings.data_dir)
    root = lineage_root(snap)
    if not config.retrain_on_source_change:
        return root, False
    try:
        fresh = ingest(config, settings.data_dir)
    except DataError as exc:
        log.warning("source not readable, retraining on the champion's base: %s", exc)
        return root, False
    if fresh.hash != root.hash:
        log.info("the source changed: base %s (was %s)", fresh.hash[:16], root.hash[:16])
        return fresh, True
    return root, False


def labelled_records(database_url: str, archive: ObjectStore | None = None) -> pd.DataFrame:
    """Logged features + feedback label of every labelled prediction (oldest first), the archived
    ones too (LOG_ARCHIVE_URI: the prediction log's retention moved them there)."""
    return store.labelled_predictions(store.engine_for(database_url), archive)


def build_training_data(settings: TrainingSettings, config: DatasetConfig, database_url: str) -> RetrainData:
    base, source_changed = current_base(settings, config)
    base_frame = base.load()
    records = labelled_records(database_url, retention.archive_of(settings))
    added = new_rows(records, base_frame, config)
    frame = pd.concat([base_frame, added.rows], ignore_index=True)
    for column in base_frame.columns:  # keep the base's dtypes where the new rows allow it
        if frame[column].dtype != base_frame[column].dtype and not frame[column].isna().any():
            with contextlib.suppress(TypeError, ValueError):
                frame[column] = frame[column].astype(base_frame[column].dtype)
    return RetrainData(
        frame,
        base,
        labelled=added.labelled,
        added=added.added,
        left_out=added.left_out,
        source_changed=source_changed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--force", action="store_true", help="retrain even without new labelled records")
    parser.add_argument("--dry-run", action="store_true", help="write the new snapshot, do not train")
    args = parser.parse_args(argv)
    settings = load_or_exit(TrainingSettings)
    setup_logging(settings.log_level, settings.log_format, plain="training")
    replaced = None
    # the local trigger sets RETRAIN_*; the Jenkins retrain job passes its build parameters as they are
    reason = settings.retrain_reason
    run_id = settings.retrain_monitoring_run_id
    try:
        config = load_config(settings.dataset_config)
        registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
        champion = registry.version_by_alias(settings.model_name, registry.CHAMPION)
        replaced = str(champion.version) if champion is not None else None
        data = build_training_data(settings, config, settings.database_url)
        log.info("retrain (%s): %s", reason, data.summary())
        if data.added == 0 and not data.source_changed and not args.force:
            log.info(
                "no new labelled production records and the source is unchanged: nothing to retrain on "
                "(use --force to retrain anyway)"
            )
            return 0
        snapshot = write_snapshot(
            data.frame,
            config,
            settings.data_dir,
            parent=data.base.hash,
            note=f"retrain: base + {data.added} labelled production records; {reason}"[:500],
        )
        log.info(
            "new snapshot %s: %s rows (parent %s)",
            snapshot.hash[:16],
            snapshot.manifest["rows"],
            data.base.hash[:16],
        )
        if args.dry_run:
            return 0
        result = train(settings, snapshot.hash[:16])
    except (ConfigError, DataError, registry.RegistryError) as exc:
        log.error("error: %s", exc)
        return 2
    client = registry.MlflowClient()
    # why this version exists (registry.WHY_TAGS): on the model version and on its training run
    tags = {
        # an Alertmanager-started retrain has no kinds: its source (`alertmanager`) says why
        "retrain_trigger": settings.retrain_trigger_kinds or settings.retrain_trigger_source or "manual",
        "retrain_reason": reason[:500],
        "retrain_production_rows": str(data.added),
        "retrain_new_labels": settings.retrain_new_labels,
        "retrain_source_changed": str(data.source_changed).lower(),
        "monitoring_run_id": run_id,
    }
    for key, value in tags.items():
        client.set_model_version_tag(result.model_name, result.version, key, value)
        client.set_tag(result.run_id, key, value)
    m = result.test_metrics
    log.info(
        "trained %s v%s (%s): test ROC AUC %.4f, recall %.3f",
        result.model_name,
        result.version,
        result.chosen,
        m["roc_auc"],
        m["recall"],
    )
    reference.log_production_reference(
        settings.database_url,
        config,
        result.model_name,
        result.version,
        replaced,
        run_id,
        gate.load_version(result.model_name, result.version).score,
        archive=retention.archive_of(settings),
    )
    code = gate.main(["--version", result.version])
    if code == 0:
        log.info("retrain done: v%s is the champion", result.version)
    else:
        log.info(
            "retrain done: v%s did not pass the gate (exit %d); champion unchanged", result.version, code
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
