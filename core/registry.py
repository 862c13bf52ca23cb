"""MLflow tracking and model registry: set-up, aliases, promotion and rollback.

Aliases: `challenger` is the newest trained candidate, `champion` is what the service serves. Every
promotion and rollback is recorded as tags on the model version it moves `champion` to
(`replaced_version`, `promoted_at`, `promoted_by`, `promotion_reason`), so the previous champion is
always known and a rollback is one alias move.
"""

from __future__ import annotations

import getpass
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core.drift import CALIBRATION_ARTIFACT

CHAMPION = "champion"
CHALLENGER = "challenger"
log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """A registry operation cannot be done (unknown version, no previous champion, ...)."""


def connect(tracking_uri: str) -> None:
    """Point MLflow's tracking and registry at one store: the only place in the code that sets them."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def configure(tracking_uri: str, experiment: str, artifact_root: Path) -> str:
    """Connect to the store and return the experiment's id (created if needed)."""
    connect(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    # Local stores get an explicit artifact folder; a tracking server chooses (and proxies) its own.
    location = None if tracking_uri.startswith(("http://", "https://")) else artifact_root.as_uri()
    if location:
        artifact_root.mkdir(parents=True, exist_ok=True)
    try:
        return mlflow.create_experiment(experiment, artifact_location=location)
    except MlflowException:  # created concurrently
        return mlflow.get_experiment_by_name(experiment).experiment_id


# what MLflow answers for an unknown model or alias (an unreachable server is INTERNAL_ERROR & co.)
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def version_by_alias(
    name: str, alias: str, client: MlflowClient | None = None, strict: bool = False
) -> ModelVersion | None:
    """The version the alias points at; None when the model or the alias does not exist (and, unless
    `strict`, when the registry cannot be asked: `strict` raises those errors)."""
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if strict and exc.error_code not in NOT_FOUND_CODES:
            raise
        return None


def get_version(name: str, version: str | int, client: MlflowClient | None = None) -> ModelVersion:
    client = client or MlflowClient()
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"model '{name}' has no version '{version}'") from exc


@dataclass(frozen=True)
class AliasMove:
    alias: str
    from_version: str | None
    to_version: str
    at: str
    by: str
    reason: str


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


# A version the post-promotion guard rolled back is blocked (version tags): neither the gate, a retrain
# nor a rollback makes it the champion again until a person lifts the block (`unblock`, audited).
BLOCKED_TAG = "blocked"
AGREEMENT_TAG = "agreement"  # the gate's core.agreement figures with the champion it was judged against


def gate_agreement(mv: ModelVersion, against: str) -> dict[str, Any] | None:
    """The gate's agreement figures between `mv` and version `against` on the test split (None: the gate
    did not compare the two: a first model, a rollback to an older version, an unreadable tag)."""
    raw = (mv.tags or {}).get(AGREEMENT_TAG)
    try:
        figures = json.loads(raw) if raw else None
    except ValueError:
        return None
    if not isinstance(figures, dict) or str(figures.get("against")) != str(against):
        return None
    return figures


def blocked(mv: ModelVersion) -> str | None:
    """Why a version is blocked from promotion (None: it is not)."""
    tags = mv.tags or {}
    if tags.get(BLOCKED_TAG) != "true":
        return None
    return f"blocked by {tags.get('blocked_by', '?')} at {tags.get('blocked_at', '?')}: {tags.get('blocked_reason', '')}"


def block(name: str, version: str | int, reason: str, by: str) -> None:
    client = MlflowClient()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {BLOCKED_TAG: "true", "blocked_by": by, "blocked_at": at, "blocked_reason": reason[:4000]}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def unblock(name: str, version: str | int, reason: str, by: str | None = None) -> None:
    """A person's override: the version may be promoted again (recorded on the version)."""
    client = MlflowClient()
    mv = get_version(name, version, client)
    if blocked(mv) is None:
        return
    at = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {
        BLOCKED_TAG: "false",
        "unblocked_by": by or _who(),
        "unblocked_at": at,
        "unblocked_reason": reason[:4000],
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def refuse_blocked(name: str, mv: ModelVersion) -> None:
    """Raise RegistryError naming the block (and how to lift it) when `mv` is blocked."""
    why_blocked = blocked(mv)
    if why_blocked:
        raise RegistryError(
            f"v{str(mv.version)} of '{name}' is {why_blocked} (a person lifts it: python -m training.gate "
            f"--version {str(mv.version)} --unblock --reason TEXT)"
        )


def promote(
    name: str, version: str | int, reason: str, by: str | None = None, forced: bool = False
) -> AliasMove:
    """Move `champion` to `version`, recording the version it replaced for rollback. Refused for a
    blocked version. `forced`: promoted past a failed gate (an audited override, tagged `forced`)."""
    client = MlflowClient()
    target = get_version(name, version, client)
    refuse_blocked(name, target)
    current = version_by_alias(name, CHAMPION, client)
    move = AliasMove(
        CHAMPION,
        str(current.version) if current else None,
        str(target.version),
        datetime.now(UTC).isoformat(timespec="seconds"),
        by or _who(),
        reason,
    )
    if current is not None and str(current.version) == str(target.version):
        return move
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    tags = {
        "promoted_at": move.at,
        "promoted_by": move.by,
        "promotion_reason": reason,
        "replaced_version": move.from_version or "",
        "forced": str(forced).lower(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, str(target.version), key, value)
    _append_history(client, name, move)
    return move


def previous_champion(name: str) -> str | None:
    current = version_by_alias(name, CHAMPION)
    if current is None:
        return None
    return current.tags.get("replaced_version") or None


def rollback(
    name: str, to_version: str | int | None = None, reason: str = "rollback", by: str | None = None
) -> AliasMove:
    """Move `champion` back to the version it replaced, or to `to_version`."""
    client = MlflowClient()
    current = version_by_alias(name, CHAMPION, client)
    if current is None:
        raise RegistryError(f"model '{name}' has no champion to roll back from")
    if to_version is None:
        to_version = current.tags.get("replaced_version") or None
        if to_version is None:
            raise RegistryError(f"champion v{str(current.version)} of '{name}' replaced no earlier version")
    target = get_version(name, to_version, client)
    if str(target.version) == str(current.version):
        raise RegistryError(f"v{str(target.version)} is already the champion of '{name}'")
    refuse_blocked(name, target)
    move = AliasMove(
        CHAMPION,
        str(current.version),
        str(target.version),
        datetime.now(UTC).isoformat(timespec="seconds"),
        by or _who(),
        reason,
    )
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    tags = {
        "rolled_back_at": move.at,
        "rolled_back_by": move.by,
        "rollback_reason": reason,
        "rolled_back_from": str(current.version),
        # the version it replaced stays the one before it, so repeated rollbacks walk back in time
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, str(target.version), key, value)
    _append_history(client, name, move)
    return move


def _append_history(client: MlflowClient, name: str, move: AliasMove) -> None:
    """Keep the last alias moves as a registered-model tag (MLflow tags are limited to 5000 chars)."""
    model = client.get_registered_model(name)
    history: list[dict[str, Any]] = json.loads(model.tags.get("champion_history", "[]"))
    history.append(move.__dict__)
    while history and len(json.dumps(history)) > 4500:
        history.pop(0)
    client.set_registered_model_tag(name, "champion_history", json.dumps(history))


def champion_history(name: str) -> list[dict[str, Any]]:
    model = MlflowClient().get_registered_model(name)
    return json.loads(model.tags.get("champion_history", "[]"))


# The drift reference logged with a version's training run. A retrained version also gets the production
# window it was retrained for (training.retrain), named by its `reference_artifact` tag: the monitor
# compares live traffic with that, so traffic the model has already learned does not read as drift.
REFERENCE_ARTIFACT = "reference/reference.parquet"
PRODUCTION_REFERENCE_ARTIFACT = "reference/production.parquet"
REFERENCE_TAG = "reference_artifact"


def reference_artifact(tags: dict[str, str] | None) -> str:
    """The artifact path of a version's drift reference (its `reference_artifact` tag, else the sample of
    its training data's valid split)."""
    return (tags or {}).get(REFERENCE_TAG) or REFERENCE_ARTIFACT


def model_uri(name: str, version: str | int) -> str:
    return f"models:/{name}/{version}"


# Why a model version exists: what started its retrain, with its figures, and its data's lineage
# (training.retrain and training.tracking write them; GET /v1/model and the gate report show them).
WHY_TAGS = (
    "retrain_trigger",  # drift | quality | new data | manual (comma-separated when several)
    "retrain_reason",
    "monitoring_run_id",
    "retrain_production_rows",
    "retrain_new_labels",
    "retrain_source_changed",
    "data_snapshot",
    "data_parent",
    "source_hash",
)


def why(tags: dict[str, str] | None) -> dict[str, str]:
    """The WHY_TAGS among a model version's tags."""
    tags = tags or {}
    return {key: tags[key] for key in WHY_TAGS if tags.get(key)}


def drift_calibration(run_id: str) -> dict[str, Any] | None:
    """The drift bounds calibrated with a training run (core.drift.CALIBRATION_ARTIFACT), None for a run
    trained before calibration existed."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{CALIBRATION_ARTIFACT}")
    except (MlflowException, OSError) as exc:
        log.info("run %s has no drift calibration (%s)", run_id, type(exc).__name__)
        return None


def model_metadata(name: str, version: str | int) -> dict[str, Any]:
    """Metadata stored with the logged model: threshold, feature schema, data hash, git commit."""
    return dict(mlflow.models.get_model_info(model_uri(name, version)).metadata or {})
