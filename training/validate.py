"""Validation of a raw snapshot against the declared schema of its data set.

Checks: required columns, dtypes, binary values, numeric ranges, declared categories, missing values,
duplicate rows, row count and label balance. Every failure names the column and the rule. The report
(JSON: failures plus descriptive statistics used by docs/dataset.md) is always written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.dataset import ConfigError, DatasetConfig, load_config
from core.logs import setup_logging
from core.settings import load_or_exit
from training.data import DataError, latest_snapshot
from training.settings import TrainingSettings

log = logging.getLogger("training.validate")  # not __name__: `python -m` runs this as __main__


@dataclass(frozen=True)
class Failure:
    column: str
    rule: str
    message: str

    def line(self) -> str:
        return f"column '{self.column}' rule '{self.rule}': {self.message}"


@dataclass
class ValidationReport:
    dataset: str
    rows: int
    failures: list[Failure] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.ok:
            return f"validation passed: {self.rows} rows, {len(self.stats.get('columns', {}))} columns"
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return f"validation failed: {self.failures[0].line()}{more}"

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"ok": self.ok, "summary": self.summary(), **asdict(self)}
        path.write_text(json.dumps(body, indent=2, default=str) + "\n")
        return path


def _numeric(series: pd.Series) -> pd.Series | None:
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float)
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(float)
    return None


def validate(frame: pd.DataFrame, config: DatasetConfig) -> ValidationReport:
    report = ValidationReport(dataset=config.name, rows=int(len(frame)))
    fail = report.failures.append
    rules = config.validation
    columns_stats: dict[str, dict] = {}
    report.stats["columns"] = columns_stats

    min_rows = int(rules.get("min_rows", 1))
    if len(frame) < min_rows:
        fail(Failure("*", "min_rows", f"{len(frame)} rows, at least {min_rows} required"))

    for feature in config.features:
        name = feature.name
        if name not in frame.columns:
            fail(Failure(name, "missing_column", "declared feature not in the data"))
            continue
        series = frame[name]
        n_missing = int(series.isna().sum())
        share = n_missing / max(len(series), 1)
        stat: dict = {"type": feature.type, "missing": n_missing}
        columns_stats[name] = stat
        if share > feature.max_missing_share:
            fail(
                Failure(
                    name,
                    "missing",
                    f"{n_missing} missing values ({share:.2%}), at most "
                    f"{feature.max_missing_share:.2%} allowed",
                )
            )
        present = series.dropna()
        if feature.type in ("numeric", "binary"):
            values = _numeric(present)
            if values is None:
                fail(Failure(name, "dtype", f"expected numbers, found dtype {series.dtype}"))
                continue
            if feature.type == "binary":
                bad = int((~values.isin([0.0, 1.0])).sum())
                stat["positive_share"] = float(values.mean()) if len(values) else None
                if bad:
                    fail(Failure(name, "binary_values", f"{bad} values other than 0/1"))
                continue
            stat.update(
                min=float(values.min()),
                max=float(values.max()),
                mean=float(values.mean()),
                median=float(values.median()),
            )
            q1, q3 = values.quantile([0.25, 0.75])
            iqr = q3 - q1
            stat["iqr_outliers"] = int(((values < q1 - 1.5 * iqr) | (values > q3 + 1.5 * iqr)).sum())
            below = int((values < feature.min).sum()) if feature.min is not None else 0
            above = int((values > feature.max).sum()) if feature.max is not None else 0
            if below or above:
                fail(Failure(name, "range", f"{below + above} values outside [{feature.min}, {feature.max}]"))
        else:
            counts = present.astype(str).value_counts()
            stat["categories"] = {str(k): int(v) for k, v in counts.items()}
            unknown = sorted(set(counts.index) - set(feature.categories))
            if unknown:
                fail(Failure(name, "categories", f"undeclared categories {unknown[:5]}"))

    target = config.target
    if target not in frame.columns:
        fail(Failure(target, "missing_column", "target column not in the data"))
    else:
        labels = frame[target]
        if labels.isna().any():
            fail(Failure(target, "missing", f"{int(labels.isna().sum())} rows without a label"))
        classes = sorted(labels.dropna().astype(str).unique())
        positive = str(config.positive_class)
        if positive not in classes or len(classes) != 2:
            fail(
                Failure(
                    target, "label_classes", f"expected two classes including '{positive}', found {classes}"
                )
            )
        else:
            share = float((labels.astype(str) == positive).mean())
            report.stats["positive_share"] = share
            lo, hi = (
                (rules.get("label_share") or {}).get("min", 0.0),
                (rules.get("label_share") or {}).get("max", 1.0),
            )
            if not lo <= share <= hi:
                fail(
                    Failure(
                        target, "label_balance", f"positive share {share:.2%} outside [{lo:.0%}, {hi:.0%}]"
                    )
                )

    known = [c for c in [*config.feature_names, target] if c in frame.columns]
    dup = int(frame[known].duplicated().sum())
    report.stats["duplicates"] = dup
    max_dup = float(rules.get("max_duplicate_share", 0.0))
    if len(frame) and dup / len(frame) > max_dup:
        fail(
            Failure(
                "*", "duplicates", f"{dup} duplicate rows ({dup / len(frame):.2%}), at most {max_dup:.2%}"
            )
        )
    return report


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m training.validate", description=__doc__).parse_args(argv)
    settings = load_or_exit(TrainingSettings)
    setup_logging(settings.log_level, settings.log_format, plain="training")
    try:
        config = load_config(settings.dataset_config)
        snap = latest_snapshot(config, settings.data_dir)
    except (ConfigError, DataError) as exc:
        log.error("error: %s", exc)
        return 2
    report = validate(snap.load(), config)
    path = report.write(settings.reports_dir / f"validation-{config.name}-{snap.hash[:16]}.json")
    log.log(logging.INFO if report.ok else logging.ERROR, "%s (report: %s)", report.summary(), path)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
