"""Drift bounds calibrated at training time by resampling the reference (docs/monitoring.md).

For each window size of the data set config's `drift.window_sizes`, `bootstrap_windows` undrifted
windows are drawn with replacement from the reference, each compared with a resampled reference of the
reference's size (two independent draws from the same population: the noise of both samples, as a live
window against a fixed reference sample has it). That gives each feature's and the score's distance
under no drift; the bounds are quantiles of it:

- `drifted` (per feature): the (1 - `feature_level`) quantile;
- `alarm` / `warning`: one tail level `a` for every top-k feature and the score, and the weighted share's
  (1 - a) quantile (at least `min_weighted_share`), with `a` the largest level at which at most
  `false_alarm_rate` (`warning_rate`) of the resampled windows raise anything under core.drift.judge's rules.

The statistics are core.drift's (normed Wasserstein, Jensen-Shannon), computed on counts: every resampled
value is one of the reference's, so each column's distance for all windows is a few matrix operations
(about a second for 3 sizes x 1,000 windows).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.special import rel_entr

from core.dataset import DatasetConfig
from core.drift import (
    SCORE,
    Bounds,
    Calibration,
    DriftPolicy,
    category_values,
    methods,
    normalised_importance,
)


class _Column:
    """One reference column as codes into its sorted distinct values (-1: missing)."""

    def __init__(self, series: pd.Series, kind: str):
        self.numeric = kind == "numeric"
        if self.numeric:
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
            present = ~np.isnan(values)
            self.values = np.unique(values[present])
        else:
            present = series.notna().to_numpy()
            values = np.full(len(series), "", dtype=object)
            values[present] = category_values(series, kind).astype(str).to_numpy()
            self.values = np.unique(values[present].astype(str))
        self.codes = np.full(len(series), -1, dtype=np.int64)
        self.codes[present] = np.searchsorted(self.values, values[present].astype(self.values.dtype))

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """(windows x distinct values) counts of the rows drawn in each window."""
        codes = self.codes[rows]
        k = len(self.values)
        offsets = np.arange(rows.shape[0])[:, None] * k
        flat = (codes + offsets)[codes >= 0]
        return np.bincount(flat, minlength=rows.shape[0] * k).reshape(rows.shape[0], k).astype(float)

    def shares(self, rows: np.ndarray) -> np.ndarray:
        counts = self.counts(rows)
        with np.errstate(invalid="ignore", divide="ignore"):
            return counts / counts.sum(1, keepdims=True)

    def distance(self, window: np.ndarray, reference_shares: np.ndarray) -> np.ndarray:
        """Each window's distance to its resampled reference (`shares` of the reference rows)."""
        pw, pr = self.shares(window), reference_shares
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.numeric:  # Wasserstein-1 = area between the CDFs; over the reference's std
                gaps = np.diff(self.values)
                area = (np.abs(np.cumsum(pw, 1) - np.cumsum(pr, 1))[:, :-1] * gaps).sum(1)
                mean = pr @ self.values
                std = np.sqrt(np.maximum(pr @ self.values**2 - mean**2, 0.0))
                return area / np.maximum(std, 0.001)
            mid = (pw + pr) / 2  # Jensen-Shannon distance, natural log (scipy's jensenshannon)
            return np.sqrt((rel_entr(pw, mid).sum(1) + rel_entr(pr, mid).sum(1)) / 2)


def columns_of(reference: pd.DataFrame, config: DatasetConfig) -> dict[str, _Column]:
    out = {f.name: _Column(reference[f.name], f.type) for f in config.features if f.name in reference}
    out[SCORE] = _Column(reference[SCORE], "numeric")
    return out


def null_distances(
    columns: dict[str, _Column],
    reference_shares: dict[str, np.ndarray],
    size: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """(windows x features + score) distances of resampled undrifted windows of `size` records, each
    against its own resampled reference (`reference_shares`, one row per window)."""
    windows = next(iter(reference_shares.values())).shape[0]
    m = len(next(iter(columns.values())).codes)
    window_rows = rng.integers(0, m, size=(windows, size))
    return pd.DataFrame(
        {name: col.distance(window_rows, reference_shares[name]) for name, col in columns.items()}
    )


def _raised(null: np.ndarray, strong: np.ndarray, weighted: np.ndarray, share: float) -> np.ndarray:
    return (null > strong).any(1) | ((weighted > share) & (weighted > 0))


def calibrate_size(
    null: pd.DataFrame, imp: dict[str, float], policy: DriftPolicy
) -> tuple[Bounds, dict[str, float]]:
    """The bounds of one window size from its null distances, and the rates they give on them."""
    top = [*list(imp)[: policy.top_k], SCORE]
    features = [f for f in imp if f in null]
    values = null[features].to_numpy()
    drifted = np.nanquantile(values, 1 - policy.feature_level, axis=0)
    weighted = (values > drifted) @ np.array([imp[f] for f in features])
    strong_null = null[top].to_numpy()

    def bounds_at(level: float) -> tuple[np.ndarray, float]:
        strong = np.nanquantile(strong_null, 1 - level, axis=0)
        return strong, max(float(np.quantile(weighted, 1 - level)), policy.min_weighted_share)

    levels, rates, found = {}, {}, {}
    for name, target in (("alarm", policy.false_alarm_rate), ("warning", policy.warning_rate)):
        lo, hi = 0.0, target  # the largest tail level whose union rate stays within the target
        for _ in range(25):
            mid = (lo + hi) / 2
            strong, share = bounds_at(mid)
            if _raised(strong_null, strong, weighted, share).mean() <= target:
                lo = mid
            else:
                hi = mid
        strong, share = bounds_at(lo)
        levels[name], found[name] = lo, ({c: float(v) for c, v in zip(top, strong, strict=True)}, share)
        rates[name] = float(_raised(strong_null, strong, weighted, share).mean())
    bounds = Bounds(
        drifted={f: float(v) for f, v in zip(features, drifted, strict=True)},
        warning=found["warning"][0],
        alarm=found["alarm"][0],
        weighted_share={"warning": found["warning"][1], "alarm": found["alarm"][1]},
    )
    return bounds, {
        "bootstrap_alarm_rate": rates["alarm"],
        "bootstrap_warning_rate": rates["warning"],
        "alarm_tail_level": levels["alarm"],
        "warning_tail_level": levels["warning"],
    }


def calibrate(
    reference: pd.DataFrame,
    importance: Mapping[str, float],
    config: DatasetConfig,
    policy: DriftPolicy | None = None,
) -> Calibration:
    """The bounds at each of the policy's window sizes, from `reference` (features + score)."""
    started = time.perf_counter()
    policy = policy or DriftPolicy.from_mapping(config.drift)
    imp = normalised_importance(importance, config)
    rng = np.random.default_rng(policy.seed)
    columns = columns_of(reference, config)
    # one resampled reference per window, shared by the sizes
    reference_rows = rng.integers(0, len(reference), size=(policy.bootstrap_windows, len(reference)))
    shares = {name: col.shares(reference_rows) for name, col in columns.items()}
    sizes, rates = {}, {}
    for n in policy.window_sizes:
        null = null_distances(columns, shares, n, rng)
        sizes[n], rates[str(n)] = calibrate_size(null, imp, policy)
    info = {
        "reference_rows": len(reference),
        "bootstrap_windows": policy.bootstrap_windows,
        "rates": rates,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return Calibration(policy, imp, sizes, calibrated=True, info=info, methods=methods(config))
