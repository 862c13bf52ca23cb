"""Named drift scenarios, applied to a frame of records (feature columns + `label`).

Used by the traffic simulator (`make simulate`), the demo and the drift tests, so what is tested is
what is sent.

| scenario          | what changes                                                                  |
|-------------------|-------------------------------------------------------------------------------|
| none              | nothing: held-out records as they are                                         |
| covariate         | numeric features shifted by `strength` standard deviations (clipped to the    |
|                   | declared range); categorical/binary features: `strength`/2 of the rows moved  |
|                   | to another category                                                           |
| move              | a `share` of the rows (chosen among those not in it) moved to the feature's   |
|                   | least common category in `reference` (categorical/binary features)            |
| unseen_category   | a `share` of one categorical feature set to a value never declared            |
| missing           | a `share` of nullable features (or the chosen ones) set to missing            |
| label_shift       | records resampled so that `share` of them are positives (churners)            |
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.dataset import DatasetConfig

SCENARIOS = ("none", "covariate", "move", "unseen_category", "missing", "label_shift")
UNSEEN_VALUE = "Unseen category"


@dataclass(frozen=True)
class Scenario:
    name: str = "none"
    features: tuple[str, ...] = ()
    strength: float = 1.0
    share: float = 0.5

    def describe(self) -> str:
        if self.name == "none":
            return "no drift"
        what = ", ".join(self.features) if self.features else "default features"
        return f"{self.name} on {what} (strength {self.strength}, share {self.share})"


DEFAULT_FEATURES = {
    "covariate": ("monthly_charges", "tenure"),
    "move": ("internet_service",),
    "unseen_category": ("payment_method",),
    "missing": (),
}


def _features(scenario: Scenario, config: DatasetConfig) -> list[str]:
    if scenario.features:
        return list(scenario.features)
    if scenario.name == "missing":
        nullable = [f.name for f in config.features if f.max_missing_share > 0]
        return nullable or [config.of_type("numeric")[0]]
    if scenario.name == "unseen_category":
        default = DEFAULT_FEATURES["unseen_category"]
        cats = config.of_type("categorical")
        return [c for c in default if c in cats] or cats[:1]
    default = [c for c in DEFAULT_FEATURES.get(scenario.name, ()) if c in config.feature_names]
    return default or config.of_type("numeric")[:2]


def apply(
    frame: pd.DataFrame,
    scenario: Scenario,
    config: DatasetConfig,
    seed: int = 0,
    reference: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A drifted copy of `frame`. `reference` (default: `frame`) gives the scale of numeric shifts."""
    rng = np.random.default_rng(seed)
    out = frame.copy().reset_index(drop=True)
    base = frame if reference is None else reference
    if scenario.name == "none":
        return out
    if scenario.name == "label_shift":
        if "label" not in out:
            raise ValueError("label_shift needs a 'label' column")
        pos, neg = out[out["label"] == 1], out[out["label"] == 0]
        n = len(out)
        n_pos = round(n * scenario.share)
        picked = pd.concat(
            [
                pos.sample(n_pos, replace=n_pos > len(pos), random_state=seed),
                neg.sample(n - n_pos, replace=n - n_pos > len(neg), random_state=seed),
            ]
        )
        return picked.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    for name in _features(scenario, config):
        feature = config.feature(name)
        if scenario.name == "covariate":
            if feature.type == "numeric":
                std = float(pd.to_numeric(base[name], errors="coerce").std())
                shifted = pd.to_numeric(out[name], errors="coerce") + scenario.strength * std
                lo = feature.min if feature.min is not None else -np.inf
                hi = feature.max if feature.max is not None else np.inf
                out[name] = shifted.clip(lo, hi)
                if pd.api.types.is_integer_dtype(frame[name]):
                    out[name] = out[name].round()
            else:
                move = rng.random(len(out)) < min(1.0, scenario.strength / 2)
                if feature.type == "binary":
                    out.loc[move, name] = 1 - pd.to_numeric(out.loc[move, name])
                else:
                    cats = list(feature.categories)
                    out.loc[move, name] = out.loc[move, name].map(
                        lambda v, c=cats: c[(c.index(v) + 1) % len(c)] if v in c else c[0]
                    )
        elif scenario.name == "move":
            if feature.type == "numeric":
                raise ValueError(f"move needs a categorical or binary feature, {name} is numeric")
            present = base[name].dropna()
            if feature.type == "binary":
                present = pd.to_numeric(present).astype(int)
            target = present.value_counts().sort_values(kind="stable").index[0]
            current = pd.to_numeric(out[name]) if feature.type == "binary" else out[name]
            movable = np.flatnonzero((current != target).to_numpy())
            k = min(len(movable), round(scenario.share * len(out)))
            out[name] = out[name].astype(object)
            out.loc[rng.choice(movable, size=k, replace=False), name] = target
            if feature.type == "binary":
                out[name] = pd.to_numeric(out[name])
        elif scenario.name == "unseen_category":
            hit = rng.random(len(out)) < scenario.share
            out[name] = out[name].astype(object)
            out.loc[hit, name] = UNSEEN_VALUE
        elif scenario.name == "missing":
            hit = rng.random(len(out)) < scenario.share
            out[name] = (
                out[name].astype("float64") if feature.type != "categorical" else out[name].astype(object)
            )
            out.loc[hit, name] = np.nan if feature.type != "categorical" else None
        else:
            raise ValueError(f"unknown scenario '{scenario.name}'; known: {', '.join(SCENARIOS)}")
    return out


@dataclass
class ScenarioSpec:
    """Parsed from the command line: `covariate:monthly_charges,tenure` or `missing`."""

    text: str
    extra: dict = field(default_factory=dict)

    def scenario(self, strength: float = 1.0, share: float = 0.5) -> Scenario:
        name, _, feats = self.text.partition(":")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario '{name}'; known: {', '.join(SCENARIOS)}")
        return Scenario(name, tuple(f for f in feats.split(",") if f), strength, share)
