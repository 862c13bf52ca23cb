"""Drift statistics and the alarm policy: the one decision function of the monitor and the drift bench.

Shared by three users, so they judge alike:
- training (`training.drift_calibration`) resamples the reference to calibrate the bounds and stores them
  with the model version (`reference/drift_calibration.json`, read back with `core.registry`);
- the monitor (`monitoring.drift`) computes the statistics of a window and calls `judge`;
- the drift bench (`tools/bench_drift.py`) calls the same `window_scores` and `judge` on thousands of
  simulated windows.

Statistics (the same as Evidently's `ValueDrift` with these methods, computed directly so thousands of
windows take seconds): numeric features and the score, the normed Wasserstein distance (distance divided
by the reference's standard deviation); categorical and binary features, the Jensen-Shannon distance of
the category shares (natural log). Missing values are left out (the monitor checks them on their own).

The policy (`DriftPolicy`, the data set config's `drift:` section) raises, at two levels (warning,
alarm), when any of:
- `feature`: one of the model's `top_k` most important features is past its own bound;
- `weighted_share`: the importance of the features past their `drifted` bound adds up past a bound (many
  small shifts together);
- `prediction_drift`: the score's distribution is past its bound;
- `drift_share` (uncalibrated champions only): the plain share of drifted features (DRIFT_SHARE_THRESHOLD).
Every bound depends on the window size; calibrated bounds are stored for a few sizes and interpolated
linearly in 1/sqrt(n) (a distance's noise shrinks like that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from core.dataset import DatasetConfig

SCORE = "score"
NUM_METHOD = "wasserstein"
CAT_METHOD = "jensenshannon"
LEVELS = ("ok", "warning", "alarm")
CALIBRATION_ARTIFACT = "reference/drift_calibration.json"


@dataclass(frozen=True)
class DriftPolicy:
    """The data set config's `drift:` section (docs/monitoring.md, "The alarm policy")."""

    top_k: int = 5  # the `feature` rule watches the k most important features
    false_alarm_rate: float = 0.05  # alarm level: share of undrifted windows allowed to alarm
    warning_rate: float = 0.20  # warning level: the same for a warning
    feature_level: float = 0.05  # a feature counts as drifted past its (1 - this) null quantile
    min_weighted_share: float = 0.25  # the weighted-share rule never fires below this importance
    window_sizes: tuple[int, ...] = (200, 300, 500)  # calibrated sizes (the monitor's min .. max window)
    bootstrap_windows: int = 1000  # resampled windows per size
    seed: int = 0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> DriftPolicy:
        raw = dict(raw or {})
        if "window_sizes" in raw:
            raw["window_sizes"] = tuple(sorted(int(n) for n in raw["window_sizes"]))
        return cls(**raw)


# --- statistics ---------------------------------------------------------------------------------------


def numeric_values(series: pd.Series) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
    return values[~np.isnan(values)]


def category_values(series: pd.Series, kind: str) -> pd.Series:
    """The present values of a categorical (or binary: as numbers, so 1 and "1" are one category)."""
    s = series[series.notna()]
    return pd.to_numeric(s, errors="coerce").dropna() if kind == "binary" else s.astype(str)


def wasserstein_norm(reference: np.ndarray, current: np.ndarray) -> float:
    """Evidently's `wasserstein`: Wasserstein-1 distance over the reference's std (at least 0.001)."""
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    return float(wasserstein_distance(reference, current) / max(np.std(reference), 0.001))


def js_distance(reference: pd.Series, current: pd.Series) -> float:
    """Evidently's `jensenshannon`: Jensen-Shannon distance (natural log) of the category shares."""
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    ref, cur = reference.value_counts(), current.value_counts()
    keys = ref.index.union(cur.index)
    return float(
        jensenshannon(ref.reindex(keys, fill_value=0).to_numpy(), cur.reindex(keys, fill_value=0).to_numpy())
    )


def method_of(kind: str) -> str:
    return NUM_METHOD if kind == "numeric" else CAT_METHOD


def methods(config: DatasetConfig) -> dict[str, str]:
    return {f.name: method_of(f.type) for f in config.features}


def window_scores(reference: pd.DataFrame, current: pd.DataFrame, config: DatasetConfig) -> dict[str, float]:
    """Each feature's distance (and the score's, when both frames have one) between window and reference."""
    out: dict[str, float] = {}
    for feature in config.features:
        name = feature.name
        if name not in current or name not in reference:
            out[name] = float("nan")
        elif feature.type == "numeric":
            out[name] = wasserstein_norm(numeric_values(reference[name]), numeric_values(current[name]))
        else:
            out[name] = js_distance(
                category_values(reference[name], feature.type), category_values(current[name], feature.type)
            )
    if SCORE in current and SCORE in reference:
        out[SCORE] = wasserstein_norm(numeric_values(reference[SCORE]), numeric_values(current[SCORE]))
    return out


# --- bounds -------------------------------------------------------------------------------------------


@dataclass
class Bounds:
    """The bounds for one window size: a figure past its bound (strictly greater) counts."""

    drifted: dict[str, float]  # per feature: counts as drifted (the shares, the report's flags)
    warning: dict[str, float]  # per top-k feature and SCORE: warning
    alarm: dict[str, float]  # per top-k feature and SCORE: alarm
    weighted_share: dict[str, float]  # {"warning": w, "alarm": w}
    share: float | None = None  # uncalibrated: plain drifted share >= this alarms

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """Bounds at a few window sizes, the importance they were computed with, and how they were found."""

    policy: DriftPolicy
    importance: dict[str, float]  # per feature, sums to 1, most important first
    sizes: dict[int, Bounds]
    calibrated: bool = True  # False: the static thresholds of the monitor's settings
    info: dict[str, Any] = field(default_factory=dict)  # rates measured on the bootstrap, timings
    methods: dict[str, str] = field(default_factory=dict)  # per feature: wasserstein | jensenshannon

    @property
    def top(self) -> list[str]:
        return list(self.importance)[: self.policy.top_k]

    def rank(self, feature: str) -> int:
        return list(self.importance).index(feature) + 1 if feature in self.importance else 0

    def bounds(self, n: int) -> Bounds:
        """The bounds for a window of `n` records: interpolated in 1/sqrt(n) between the calibrated sizes
        (extrapolated linearly past the ends, never below zero)."""
        sizes = sorted(self.sizes)
        if len(sizes) == 1 or n in self.sizes:
            return self.sizes[n if n in self.sizes else sizes[0]]
        lo, hi = (sizes[0], sizes[1]) if n < sizes[0] else (sizes[-2], sizes[-1])
        for a, b in zip(sizes, sizes[1:], strict=False):
            if a <= n <= b:
                lo, hi = a, b
        x, xa, xb = n**-0.5, lo**-0.5, hi**-0.5
        t = (x - xa) / (xb - xa)
        A, B = self.sizes[lo], self.sizes[hi]

        def mix(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: max(0.0, a[k] + t * (b[k] - a[k])) for k in a}

        return Bounds(
            mix(A.drifted, B.drifted),
            mix(A.warning, B.warning),
            mix(A.alarm, B.alarm),
            mix(A.weighted_share, B.weighted_share),
            A.share,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": {**asdict(self.policy), "window_sizes": list(self.policy.window_sizes)},
            "importance": self.importance,
            "calibrated": self.calibrated,
            "sizes": {str(n): b.as_dict() for n, b in sorted(self.sizes.items())},
            "info": self.info,
            "methods": self.methods,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Calibration:
        return cls(
            DriftPolicy.from_mapping(raw["policy"]),
            {k: float(v) for k, v in raw["importance"].items()},
            {int(n): Bounds(**b) for n, b in raw["sizes"].items()},
            bool(raw.get("calibrated", True)),
            dict(raw.get("info") or {}),
            dict(raw.get("methods") or {}),
        )

    @classmethod
    def static(
        cls,
        config: DatasetConfig,
        policy: DriftPolicy,
        importance: Mapping[str, float],
        *,
        num_threshold: float,
        cat_threshold: float,
        score_threshold: float,
        share_threshold: float,
    ) -> Calibration:
        """Champions trained before calibration: the monitor's static thresholds at every level."""
        drifted = {f.name: num_threshold if f.type == "numeric" else cat_threshold for f in config.features}
        imp = normalised_importance(importance, config)
        top = list(imp)[: policy.top_k]
        strong = {**{f: drifted[f] for f in top}, SCORE: score_threshold}
        share = {"warning": policy.min_weighted_share, "alarm": policy.min_weighted_share}
        bounds = Bounds(drifted, strong, dict(strong), share, share_threshold)
        return cls(policy, imp, {0: bounds}, calibrated=False, methods=methods(config))


def normalised_importance(importance: Mapping[str, float], config: DatasetConfig) -> dict[str, float]:
    """Every feature's importance (0 when unknown), summing to 1, most important first (ties: config
    order); equal weights when none is known."""
    raw = {f: max(0.0, float(importance.get(f, 0.0) or 0.0)) for f in config.feature_names}
    total = sum(raw.values())
    if total <= 0:
        raw, total = dict.fromkeys(config.feature_names, 1.0), float(len(config.feature_names))
    order = sorted(config.feature_names, key=lambda f: (-raw[f], config.feature_names.index(f)))
    return {f: raw[f] / total for f in order}


# --- the decision -------------------------------------------------------------------------------------


@dataclass
class Finding:
    level: str  # warning | alarm
    kind: (
        str  # the trigger's dedupe key part: feature:<name> | weighted_share | prediction_drift | drift_share
    )
    reason: str


@dataclass
class Verdict:
    level: str  # ok | warning | alarm
    findings: list[Finding]
    drifted: list[str]  # features past their `drifted` bound
    share: float
    weighted_share: float
    bounds: Bounds

    def reasons(self, level: str = "alarm") -> list[str]:
        return [f.reason for f in self.findings if f.level == level]

    def kinds(self, level: str = "alarm") -> list[str]:
        return [f.kind for f in self.findings if f.level == level]


def _past(value: float, bound: float | None) -> bool:
    return bound is not None and value is not None and not np.isnan(value) and value > bound


def judge(scores: Mapping[str, float], calibration: Calibration, n: int) -> Verdict:
    """The policy's verdict on one window of `n` records whose distances are `scores` (window_scores)."""
    b = calibration.bounds(n)
    imp = calibration.importance
    features = [f for f in imp if f in b.drifted]
    drifted = [f for f in features if _past(scores.get(f, np.nan), b.drifted[f])]
    share = len(drifted) / len(features) if features else 0.0
    weighted = float(sum(imp[f] for f in drifted))
    findings: list[Finding] = []
    for level in ("alarm", "warning"):
        bound = b.alarm if level == "alarm" else b.warning
        for f in calibration.top:
            value = scores.get(f, np.nan)
            if f in bound and _past(value, bound[f]):
                findings.append(
                    Finding(
                        level,
                        f"feature:{f}",
                        f"{f} (importance {imp[f]:.2f}, #{calibration.rank(f)}): "
                        f"{calibration.methods.get(f, NUM_METHOD)} {value:.3f} > {level} bound {bound[f]:.3f}",
                    )
                )
        if _past(weighted, b.weighted_share[level] if weighted > 0 else None):
            findings.append(
                Finding(
                    level,
                    "weighted_share",
                    f"importance-weighted drift share {weighted:.2f} > {level} bound "
                    f"{b.weighted_share[level]:.2f} ({', '.join(drifted)})",
                )
            )
        value = scores.get(SCORE, np.nan)
        if SCORE in bound and _past(value, bound[SCORE]):
            findings.append(
                Finding(
                    level,
                    "prediction_drift",
                    f"prediction drift: {NUM_METHOD} {value:.3f} > {level} bound {bound[SCORE]:.3f}",
                )
            )
    if b.share is not None and drifted and share >= b.share:
        findings.append(
            Finding("alarm", "drift_share", f"drift share {share:.2f} >= {b.share} ({', '.join(drifted)})")
        )
    # a figure that alarms is not repeated as a warning
    alarmed = {f.kind for f in findings if f.level == "alarm"}
    findings = [f for f in findings if f.level == "alarm" or f.kind not in alarmed]
    level = "alarm" if alarmed else ("warning" if findings else "ok")
    return Verdict(level, findings, drifted, share, weighted, b)
