"""`make model-card`: rewrite the measured part of the model card from the registry's champion.

Reads the champion's `evaluation/evaluation.json` and `evaluation/segment_metrics.csv` artifacts and
replaces the text between `<!-- measured:begin -->` and `<!-- measured:end -->`; the written parts
of the card (intended use, limits) are left alone.

Each data set has its own card, so one data set's figures never overwrite another's: MODEL_CARD when
set, else docs/model_card.md for the built-in data set and docs/model_cards/<data set>.md for any other
(created with a stub of the written parts on first use). The tables' words come from the model's
metadata: its target and positive class (`churn rate` for Telco, `Purchase=MM rate` for OJ).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from core import registry
from core.dataset import ConfigError, load_config, positive_word
from core.settings import REPO_ROOT, Settings, load_or_exit
from training.settings import TrainingSettings

DOCS = REPO_ROOT / "docs"
CARD = DOCS / "model_card.md"  # the built-in data set's card
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def built_in_dataset() -> str:
    """The name of the data set DATASET_CONFIG defaults to (its card is docs/model_card.md)."""
    default = Settings.model_fields["dataset_config"].default
    try:
        return load_config(REPO_ROOT / default).name
    except ConfigError:
        return ""


def card_path(settings: TrainingSettings, dataset: str) -> Path:
    if settings.model_card is not None:
        return settings.model_card
    if dataset == built_in_dataset():
        return CARD
    return DOCS / "model_cards" / f"{dataset}.md"


def stub(name: str, dataset: str, metadata: dict[str, Any]) -> str:
    """A new card's written parts, to be completed by hand; the measured part is filled below them."""
    word = positive_word(metadata.get("target", "target"), metadata.get("positive_class", "positive"))
    return (
        f"# Model card: {name}\n\n"
        f"Data set `{dataset}`: predicts {word} (target `{metadata.get('target')}`, positive class "
        f"`{metadata.get('positive_class')}`). Written by `make model-card`; add the intended use, the data's "
        "source and the model's limits above the measured part, which each run rewrites.\n\n"
        f"## Measured\n\n{BEGIN}\n{END}\n"
    )


def render(name: str) -> str:
    champion = registry.version_by_alias(name, registry.CHAMPION)
    if champion is None:
        raise SystemExit(f"error: model '{name}' has no champion: run `make train gate` first")
    run_id = champion.run_id
    metadata = registry.model_metadata(name, champion.version)
    word = positive_word(metadata.get("target", "target"), metadata.get("positive_class", "positive"))
    evaluation = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/evaluation.json")
        ).read_text()
    )
    segments = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/segment_metrics.csv")
    )
    segments = segments.rename(columns={"churn_rate": "label_rate"})  # models trained before the rename
    run = mlflow.get_run(run_id)
    lines = [
        f"Champion: **{name} v{champion.version}** ({evaluation['chosen']}), run `{run_id}`, data "
        f"`{champion.tags.get('data_hash', '?')[:16]}`, commit `{champion.tags.get('git_commit', '?')[:12]}`, "
        f"{run.data.params.get('optuna_trials')} Optuna trials x {run.data.params.get('cv_folds')} folds.",
        "",
        "### Baseline vs tuned XGBoost (held-out test split; threshold chosen on validation)",
        "",
        "| model | valid PR AUC | threshold | test ROC AUC | test PR AUC | precision | recall | F1 | Brier "
        "| cost / record |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, cand in evaluation["candidates"].items():
        t = cand["test"]
        mark = " (chosen)" if model == evaluation["chosen"] else ""
        lines.append(
            f"| {model}{mark} | {cand['valid_pr_auc']:.4f} | {cand['threshold']:.3f} | {t['roc_auc']:.4f} | "
            f"{t['pr_auc']:.4f} | {t['precision']:.3f} | {t['recall']:.3f} | {t['f1']:.3f} | "
            f"{t['brier']:.4f} | {t['cost_per_customer']:.2f} |"
        )
    t = evaluation["test"]
    lines += [
        "",
        f"Confusion matrix of the champion on the {t['n']} test rows: TP {t['tp']}, FP {t['fp']}, "
        f"FN {t['fn']}, TN {t['tn']}.",
        "",
        "### Metrics by segment (bias audit, test split)",
        "",
        f"| column | segment | n | {word} rate | ROC AUC | recall | precision | predicted {word} rate |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in segments.itertuples():
        lines.append(
            f"| {row.column} | {row.segment} | {row.n} | {row.label_rate:.3f} | {row.roc_auc:.3f} | "
            f"{row.recall:.3f} | {row.precision:.3f} | {row.positive_rate:.3f} |"
        )
    lines += [
        "",
        "Largest gap between segments of a column:",
        "",
        f"| column | recall gap | precision gap | predicted {word} rate gap |",
        "|---|---:|---:|---:|",
    ]
    for column, gaps in evaluation["segment_gaps"].items():
        lines.append(
            f"| {column} | {gaps['recall']:.3f} | {gaps['precision']:.3f} | {gaps['positive_rate']:.3f} |"
        )
    return "\n".join(lines)


def write_card(settings: TrainingSettings) -> Path:
    name = settings.model_name
    champion = registry.version_by_alias(name, registry.CHAMPION)
    if champion is None:
        raise SystemExit(f"error: model '{name}' has no champion: run `make train gate` first")
    metadata = registry.model_metadata(name, champion.version)
    dataset = str(metadata.get("dataset") or name)
    card = card_path(settings, dataset)
    if not card.is_file():
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(stub(name, dataset, metadata))
    text = card.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {card} lacks the {BEGIN} / {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    card.write_text(f"{head}{BEGIN}\n{render(name)}\n{END}{tail}")
    return card


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="churnops model-card", description=__doc__).parse_args(argv)
    settings = load_or_exit(TrainingSettings)
    registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    try:
        card = write_card(settings)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"wrote {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
