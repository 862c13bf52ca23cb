"""`make model-card`: rewrite the measured part of docs/model_card.md from the registry's champion.

Reads the champion's `evaluation/evaluation.json` and `evaluation/segment_metrics.csv` artifacts and
replaces the text between `<!-- measured:begin -->` and `<!-- measured:end -->`; the written parts
of the card (intended use, limits) are left alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd

from core import registry
from core.settings import load_or_exit
from training.settings import TrainingSettings

CARD = Path(__file__).resolve().parent.parent / "docs" / "model_card.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def render(name: str) -> str:
    champion = registry.version_by_alias(name, registry.CHAMPION)
    if champion is None:
        raise SystemExit(f"error: model '{name}' has no champion: run `make train gate` first")
    run_id = champion.run_id
    evaluation = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/evaluation.json")
        ).read_text()
    )
    segments = pd.read_csv(
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/segment_metrics.csv")
    )
    run = mlflow.get_run(run_id)
    lines = [
        f"Champion: **{name} v{champion.version}** ({evaluation['chosen']}), run `{run_id}`, data "
        f"`{champion.tags.get('data_hash', '?')[:16]}`, commit `{champion.tags.get('git_commit', '?')[:12]}`, "
        f"{run.data.params.get('optuna_trials')} Optuna trials x {run.data.params.get('cv_folds')} folds.",
        "",
        "### Baseline vs tuned XGBoost (held-out test split; threshold chosen on validation)",
        "",
        "| model | valid PR AUC | threshold | test ROC AUC | test PR AUC | precision | recall | F1 | Brier "
        "| cost / customer |",
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
        "| column | segment | n | churn rate | ROC AUC | recall | precision | offer rate |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in segments.itertuples():
        lines.append(
            f"| {row.column} | {row.segment} | {row.n} | {row.churn_rate:.3f} | {row.roc_auc:.3f} | "
            f"{row.recall:.3f} | {row.precision:.3f} | {row.positive_rate:.3f} |"
        )
    lines += [
        "",
        "Largest gap between segments of a column:",
        "",
        "| column | recall gap | precision gap | offer-rate gap |",
        "|---|---:|---:|---:|",
    ]
    for column, gaps in evaluation["segment_gaps"].items():
        lines.append(
            f"| {column} | {gaps['recall']:.3f} | {gaps['precision']:.3f} | {gaps['positive_rate']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    settings = load_or_exit(TrainingSettings)
    registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    text = CARD.read_text()
    if BEGIN not in text or END not in text:
        print(f"error: {CARD} lacks the {BEGIN} / {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    CARD.write_text(f"{head}{BEGIN}\n{render(settings.model_name)}\n{END}{tail}")
    print(f"wrote {CARD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
