"""Register a deliberately bad model version: `churnops bad-model` (the demo's guard phase).

A logistic-regression pipeline of the usual shape (so the service loads it and compiles its fast path)
fitted on the training split with the labels flipped: it ranks churners last (live ROC AUC far below
0.5). Registered under MODEL_NAME with the usual metadata and aliased `challenger`; the gate fails it on
its floors, so only the audited override (`python -m training.gate --force --reason ...`) promotes it,
and the post-promotion guard then rolls it back. Prints the new version on the last line.
"""

from __future__ import annotations

import argparse
import sys

import mlflow

from core import registry
from core.settings import load_or_exit
from training import tracking
from training.fit import baseline_pipeline
from training.settings import TrainingSettings
from training.train import load_training_data


def register_bad_model(settings: TrainingSettings) -> str:
    data = load_training_data(settings)
    config, splits = data.config, data.splits
    pipe = baseline_pipeline(config, settings.seed).fit(splits.X["train"], 1 - splits.y["train"])
    experiment_id = registry.configure(settings.tracking_uri, settings.experiment, settings.artifact_root)
    tags = {**tracking.run_tags(data, settings.git_commit), "deliberately_bad": "labels flipped"}
    reference = splits.X["valid"].assign(
        label=splits.y["valid"].to_numpy(), score=pipe.predict_proba(splits.X["valid"])[:, 1]
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"bad-model-{config.name}", tags=tags):
        return tracking.log_model_version(
            pipe,
            config,
            settings,
            threshold=0.5,
            sample=splits.X["train"].head(100),
            test_set=splits.X["test"].assign(label=splits.y["test"].to_numpy()),
            reference=reference,
            tags={**tags, "algorithm": "logistic_regression (labels flipped)"},
            metadata={"dataset": config.name, "algorithm": "logistic_regression (labels flipped)"},
        )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="churnops bad-model", description=__doc__).parse_args(argv)
    settings = load_or_exit(TrainingSettings)
    version = register_bad_model(settings)
    print(f"registered deliberately bad {settings.model_name} v{version} (labels flipped) as 'challenger'")
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
