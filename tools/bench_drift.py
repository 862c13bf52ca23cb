"""`make bench-drift`: how often the monitor catches one feature's shift, and how often it alarms for nothing.

Needs a champion in the registry (`make train gate`). Windows are drawn from the champion's held-out test
split (records training never saw), drifted with the simulator's scenarios (monitoring.scenarios: numeric
features `covariate` by 0.25/0.5/1/2 reference standard deviations, clipped to the declared range;
categorical and binary features `move`: 10/20/40% of the window's rows moved to the reference's least
common category), scored by the champion, and judged by the monitor's own function
(monitoring.drift.compute_drift without the Evidently report) against the champion's reference and its
calibrated bounds. For each of the ten most important features and each shift, 20 windows per window size;
the false-alarm rate over 100 undrifted windows per size. Beside it, the policy before calibration (the
static thresholds 0.2 / 0.1 / 0.2 and a two-of-19 drifted share) on the same windows.

Writes the "Drift detection power" section of docs/benchmarks.md and docs/images/drift_power.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from core import registry
from core.dataset import load_config
from core.drift import Calibration
from core.features import coerce_features
from core.settings import load_or_exit
from monitoring.drift import compute_drift
from monitoring.scenarios import Scenario, apply
from monitoring.settings import MonitorSettings
from tools.bench_report import update_section
from training import gate
from training.drift_calibration import calibrate

SIZES = (200, 300, 500)
TARGET_SIZE = 300
NUM_SHIFTS = (0.25, 0.5, 1.0, 2.0)  # reference standard deviations
CAT_MOVES = (0.10, 0.20, 0.40)  # share of the window's rows
TARGET_NUM, TARGET_CAT = 1.0, 0.20
IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "drift_power.png"


def judge_windows(frames, ctx, calibration) -> list[str]:
    """The monitor's verdict level for each window (features + score)."""
    config, settings, model = ctx["config"], ctx["settings"], ctx["model"]
    out = []
    for frame in frames:
        result = compute_drift(
            ctx["reference"],
            frame,
            config,
            settings.drift,
            settings.quality,
            model.threshold,
            calibration=calibration,
            importance=ctx["importance"],
            report=False,
        )
        out.append(result.level)
    return out


def windows(ctx, size: int, count: int, seed: int, scenario: Scenario | None) -> list[pd.DataFrame]:
    test, config, model = ctx["test"], ctx["config"], ctx["model"]
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        window = test.sample(size, random_state=int(rng.integers(2**31))).reset_index(drop=True)
        if scenario is not None:
            window = apply(window, scenario, config, seed=seed * 1000 + i, reference=ctx["reference"])
        frames.append(window.assign(score=model.score(coerce_features(window, config))))
    return frames


def rate(levels: list[str]) -> float:
    return sum(level == "alarm" for level in levels) / len(levels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20, help="drifted windows per feature, shift, size")
    parser.add_argument("--undrifted", type=int, default=100, help="undrifted windows per size")
    parser.add_argument("--features", type=int, default=10, help="most important features benchmarked")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    settings = load_or_exit(MonitorSettings)
    config = load_config(settings.dataset_config)
    registry.connect(settings.tracking_uri)
    mv = registry.version_by_alias(settings.model_name, registry.CHAMPION)
    if mv is None:
        print(f"bench-drift: model '{settings.model_name}' has no champion: run `make train gate` first")
        return 2
    started = time.perf_counter()
    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="reference/reference.parquet")
    )
    model = gate.load_version(settings.model_name, str(mv.version))
    importance = registry.model_metadata(settings.model_name, mv.version).get("feature_importance", {})
    raw = registry.drift_calibration(mv.run_id)
    # a champion trained before calibration: calibrated here, as training would
    calibration = calibrate(reference, importance, config) if raw is None else Calibration.from_dict(raw)
    # the policy before calibration: static thresholds, two of 19 features drifted or the score drifted
    static = Calibration.static(
        config,
        replace(calibration.policy, top_k=0, min_weighted_share=1.0),
        importance,
        num_threshold=0.2,
        cat_threshold=0.1,
        score_threshold=0.2,
        share_threshold=0.1,
    )
    ctx = {
        "config": config,
        "settings": settings,
        "model": model,
        "reference": reference,
        "test": gate.test_set_of(mv),
        "importance": importance,
    }
    top = list(calibration.importance)[: args.features]
    print(f"champion v{mv.version}; top {len(top)}: {', '.join(top)}; test rows {len(ctx['test'])}")

    false_alarms, static_false = {}, {}
    for size in SIZES:
        frames = windows(ctx, size, args.undrifted, seed=size, scenario=None)
        false_alarms[size] = rate(judge_windows(frames, ctx, calibration))
        static_false[size] = rate(judge_windows(frames, ctx, static))
        print(
            f"undrifted, window {size}: false alarms {false_alarms[size]:.0%} (static {static_false[size]:.0%})"
        )

    rows = []
    for rank, name in enumerate(top, 1):
        kind = config.feature(name).type
        shifts = NUM_SHIFTS if kind == "numeric" else CAT_MOVES
        for shift in shifts:
            scenario = (
                Scenario("covariate", (name,), strength=shift)
                if kind == "numeric"
                else Scenario("move", (name,), share=shift)
            )
            row = {"rank": rank, "feature": name, "kind": kind, "shift": shift}
            for size in SIZES:
                frames = windows(ctx, size, args.windows, seed=rank * 7919 + size, scenario=scenario)
                row[size] = rate(judge_windows(frames, ctx, calibration))
                if size == TARGET_SIZE:
                    row["static"] = rate(judge_windows(frames, ctx, static))
            rows.append(row)
            print(
                f"#{rank} {name} {shift:g}: "
                + " ".join(f"{size}: {row[size]:.0%}" for size in SIZES)
                + f" (static at {TARGET_SIZE}: {row['static']:.0%})"
            )
    table = pd.DataFrame(rows)
    seconds = time.perf_counter() - started
    body = render(table, calibration, false_alarms, static_false, args, mv.version, seconds)
    print(body)
    if not args.no_write:
        plot(table, calibration)
        print(f"wrote {update_section('Drift detection power', body)} and {IMAGE}")
    return 0


def shift_label(kind: str, shift: float) -> str:
    return f"+{shift:g} sd" if kind == "numeric" else f"{shift:.0%} moved"


def target_check(table: pd.DataFrame, name: str) -> str:
    row = table[(table.feature == name) & table["shift"].isin([TARGET_NUM, TARGET_CAT])]
    if row.empty:
        return ""
    row = row.iloc[0]
    if row[TARGET_SIZE] >= 0.9:
        return f"yes ({row[TARGET_SIZE]:.0%} at {TARGET_SIZE})"
    reached = [size for size in SIZES if row[size] >= 0.9]
    return f"no at {TARGET_SIZE}; reached at {reached[0]}" if reached else f"no, not even at {SIZES[-1]}"


def render(table, calibration, false_alarms, static_false, args, version, seconds) -> str:
    lines = [
        f"`make bench-drift` (`tools/bench_drift.py`): champion v{version}, windows drawn from its held-out "
        f"test split, drifted with the simulator's scenarios (numeric: `covariate`, + k reference sd, clipped "
        f"to the declared range; categorical and binary: `move`, that share of the window's rows moved to "
        f"the reference's least common category), scored by the champion and judged by the monitor's own "
        f"`compute_drift` against its calibrated bounds (policy: `drift:` in config/telco_churn.yaml, top "
        f"{calibration.policy.top_k}, target false-alarm rate {calibration.policy.false_alarm_rate:.0%}). "
        f"Each cell: share of {args.windows} windows that alarmed, at window sizes "
        f"{' / '.join(str(s) for s in SIZES)}. `static`: the policy before calibration (distance thresholds "
        f"0.2 / 0.1 / 0.2 on the score, two of 19 features drifted) on the same windows of {TARGET_SIZE}. "
        f"Target: >= 90% at {TARGET_SIZE} for +1 sd or a 20% move in any of the five most important features. "
        f"Run time {seconds:.0f} s.",
        "",
        "| undrifted windows | " + " | ".join(f"window {s}" for s in SIZES) + " |",
        "| --- | " + " | ".join("---" for _ in SIZES) + " |",
        f"| false alarms, calibrated ({args.undrifted} windows) | "
        + " | ".join(f"{false_alarms[s]:.0%}" for s in SIZES)
        + " |",
        "| false alarms, static | " + " | ".join(f"{static_false[s]:.0%}" for s in SIZES) + " |",
        "",
        "| # | feature (importance) | shift | "
        + " | ".join(f"{s}" for s in SIZES)
        + f" | static {TARGET_SIZE} |",
        "| --- | --- | --- | " + " | ".join("---" for _ in SIZES) + " | --- |",
    ]
    for _, row in table.iterrows():
        lines.append(
            f"| {row['rank']} | {row['feature']} ({calibration.importance[row['feature']]:.3f}) | "
            f"{shift_label(row['kind'], row['shift'])} | "
            + " | ".join(f"{row[s]:.0%}" for s in SIZES)
            + f" | {row['static']:.0%} |"
        )
    lines += ["", f"Target met (>= 90% of windows of {TARGET_SIZE}, +1 sd or 20% moved)?", ""]
    lines += ["| # | feature | target |", "| --- | --- | --- |"]
    for rank, name in enumerate(table.feature.unique(), 1):
        lines.append(f"| {rank} | {name} | {target_check(table, name)} |")
    lines += ["", "![Detection power](images/drift_power.png)"]
    return "\n".join(lines)


def plot(table: pd.DataFrame, calibration: Calibration) -> None:
    top = table[table["rank"] <= calibration.policy.top_k]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ("numeric", "categorical"), strict=True):
        part = top[(top.kind == "numeric") == (kind == "numeric")]
        for name, rows in part.groupby("feature", sort=False):
            ax.plot(rows["shift"], rows[TARGET_SIZE], marker="o", label=f"{name} (#{rows['rank'].iloc[0]})")
        ax.axhline(0.9, color="grey", ls="--", lw=1)
        ax.set(
            xlabel="shift (reference sd)" if kind == "numeric" else "share of rows moved",
            title=f"{'numeric' if kind == 'numeric' else 'categorical / binary'}, window {TARGET_SIZE}",
        )
        if len(part):
            ax.legend(fontsize=8)
    axes[0].set_ylabel("share of windows alarmed")
    fig.suptitle(f"Drift detection power, top {calibration.policy.top_k} features")
    fig.tight_layout()
    IMAGE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMAGE, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
