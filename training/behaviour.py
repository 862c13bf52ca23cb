"""Behavioural tests of a model (CheckList style): invariance, directional expectations and minimum
functionality, declared per data set under `gate.behaviour` in its config.

- invariance: changing a feature that must not matter (binary: flipped; categorical: the next declared
  category; numeric: `delta` added) moves the score by at most `max_mean_abs_change` on average.
- directional: setting a feature (`set_to`, or numeric `delta`) moves scores the expected way
  (`increase` / `decrease`): at least `min_share` of the changed rows do not move against it by more
  than `tolerance` (default 0.005), and the mean change has the expected sign.
- minimum functionality: a named record must land on the expected side of the threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.dataset import DatasetConfig

Scorer = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: str
    limit: str
    detail: str = ""


def _perturb(frame: pd.DataFrame, config: DatasetConfig, spec: dict) -> pd.DataFrame:
    feature = config.feature(spec["feature"])
    out = frame.copy()
    col = out[feature.name]
    if "set_to" in spec:
        value = spec["set_to"]
        out[feature.name] = str(value) if feature.type == "categorical" else float(value)
    elif feature.type == "binary":
        out[feature.name] = 1.0 - col
    elif feature.type == "categorical":
        cats = list(feature.categories)
        out[feature.name] = col.map(lambda v: cats[(cats.index(v) + 1) % len(cats)] if v in cats else cats[0])
    else:
        if "delta" not in spec:
            raise ValueError(f"behaviour test on numeric '{feature.name}' needs 'delta' or 'set_to'")
        out[feature.name] = col + float(spec["delta"])
        if feature.max is not None:
            out[feature.name] = out[feature.name].clip(upper=feature.max)
    return out


def _where(frame: pd.DataFrame, spec: dict) -> pd.DataFrame:
    for column, allowed in (spec.get("only_where") or {}).items():
        frame = frame[frame[column].isin(list(allowed))]
    return frame


def invariance(score: Scorer, frame: pd.DataFrame, config: DatasetConfig, spec: dict) -> Check:
    base = _where(frame, spec)
    delta = score(_perturb(base, config, spec)) - score(base)
    mean_abs = float(np.mean(np.abs(delta))) if len(delta) else 0.0
    bound = float(spec["max_mean_abs_change"])
    return Check(
        f"invariance: {spec['feature']}",
        mean_abs <= bound,
        f"{mean_abs:.4f}",
        f"<= {bound}",
        f"mean |score change| over {len(base)} rows",
    )


def directional(score: Scorer, frame: pd.DataFrame, config: DatasetConfig, spec: dict) -> Check:
    base = _where(frame, spec)
    changed = _perturb(base, config, spec)
    moved = (changed[spec["feature"]] != base[spec["feature"]]).to_numpy()
    base, changed = base[moved], changed[moved]
    label = (
        f"directional: {spec['feature']} -> {spec.get('set_to', spec.get('delta'))} {spec['expect']}s score"
    )
    if not len(base):
        return Check(
            label, False, "no rows", f">= {spec['min_share']}", "no test row was changed by the perturbation"
        )
    delta = score(changed) - score(base)
    sign = -1.0 if spec["expect"] == "decrease" else 1.0
    tolerance = float(spec.get("tolerance", 0.005))
    share = float(np.mean(sign * delta >= -tolerance))
    mean = float(np.mean(delta))
    ok = share >= float(spec["min_share"]) and sign * mean > 0
    return Check(
        label,
        ok,
        f"{share:.3f}",
        f">= {spec['min_share']}",
        f"share of {len(base)} rows not moving against it; mean change {mean:+.4f}",
    )


def minimum_functionality(score: Scorer, config: DatasetConfig, spec: dict, threshold: float) -> Check:
    record = pd.DataFrame([spec["record"]])
    for feature in config.features:
        if feature.type == "categorical":
            record[feature.name] = record[feature.name].astype(str).astype(object)
        else:
            record[feature.name] = record[feature.name].astype("float64")
    value = float(score(record[config.feature_names])[0])
    want_positive = spec["expect"] == "positive"
    ok = value >= threshold if want_positive else value < threshold
    return Check(
        f"minimum functionality: {spec['name']}",
        ok,
        f"{value:.3f}",
        f"{'>=' if want_positive else '<'} {threshold:.3f}",
    )


def run_behaviour_tests(
    score: Scorer, test_features: pd.DataFrame, config: DatasetConfig, threshold: float
) -> list[Check]:
    spec = config.gate.get("behaviour") or {}
    checks = [invariance(score, test_features, config, s) for s in spec.get("invariance", [])]
    checks += [directional(score, test_features, config, s) for s in spec.get("directional", [])]
    checks += [
        minimum_functionality(score, config, s, threshold) for s in spec.get("minimum_functionality", [])
    ]
    return checks
