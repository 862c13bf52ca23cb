"""The post-promotion guard: `python -m monitoring.guard check` (one check) or `... loop`; `monitor loop`
runs it in a thread every GUARD_INTERVAL_SECONDS (GUARD_ENABLED).

For `guard.watch_seconds` (data set config) after every move of `champion` -- the gate's promotion, a
retrain's, a forced one, a person's rollback -- the guard compares the new champion with the version it
replaced, on what each served:

- error rate: records of predict requests the model failed to score, over all its records (the
  service's `model_service_prediction_errors_total` and `model_service_predictions_total` by version,
  read from SERVICE_URL/metrics), judged once the new version has `min_records` predictions;
- p99 latency of a predict request (the prediction log's `latency_ms`, one value per request), judged
  once both have `min_records` predictions: a breach is above both `max_latency_p99_ratio` x the
  previous p99 and the previous p99 + `latency_slack_ms`;
- live quality as labels arrive (feedback joined to the prediction log: ROC AUC, recall... at each
  version's own threshold), judged once both have `min_labelled` labels: a breach is a drop larger than
  `max_quality_drop`;
- agreement, with no label: the new version's records since the promotion (their logged features, at
  most 2,000) scored again by the previous version (shadow, in this process) and compared
  (core.agreement): rank agreement of the two scores and the share of decisions that differ, judged
  once the new version has `min_records` records, against `min_rank_agreement` and `max_disagreement`,
  tightened to what the gate measured between the two on the test split (the `agreement` tag) with
  `agreement_slack`. A labels-flipped model ranks the records in reverse (rank agreement near -1) and
  is rolled back before any label comes.

The previous version's figures are from its most recent predictions before the promotion (at most
2,000); the new one's from its predictions since. A breach rolls back through core.rollout, the path of
`churnops rollback` (registry tags and history, a `rollbacks` row with by = `guard` and the figures as
the reason, the service asked to reload), blocks the version from promotion until a person lifts it
(`python -m training.gate --version N --unblock --reason TEXT`), writes the move to the champion
timeline (kind guard_rollback, both versions' figures in its details), counts `monitor_guard_rollbacks_total`
and sets `monitor_guard_breach`; `monitor_guard_blocked_versions` stays above 0 (the alert
ModelVersionBlockedByGuard) until a person lifts the block.
The guard does not judge a promotion whose previous version is blocked (it cannot roll back to it).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from core import registry, retention, rollout, store
from core.agreement import Agreement, agreement
from core.dataset import DatasetConfig, load_config
from core.features import coerce_features
from core.logs import setup_logging
from core.objects import ObjectStore
from core.settings import load_or_exit
from monitoring import metrics
from monitoring.drift import live_quality
from monitoring.settings import MonitorSettings

log = logging.getLogger("monitoring.guard")
GUARD = "guard"  # who, in the audit trail
PREVIOUS_ROWS = 2000


@dataclass
class Figures:
    """What one version served: records, errors (None: the service's metrics were not readable), p99
    latency per request, live quality on its labelled records."""

    version: str
    records: int = 0
    requests: int = 0
    errors: float | None = None
    scored: float | None = None
    p99_ms: float | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    agreement: Agreement | None = None  # the new version's: with the previous one on its records
    agreement_bounds: dict[str, Any] | None = None  # what it is judged against, and where from

    @property
    def error_rate(self) -> float | None:
        if self.errors is None or self.scored is None or self.errors + self.scored <= 0:
            return None
        return self.errors / (self.errors + self.scored)

    @property
    def labelled(self) -> int:
        return int(self.quality.get("n_labelled") or 0)


@dataclass
class Breach:
    figure: str  # error_rate | latency_p99 | roc_auc | recall | ...
    detail: str


@dataclass
class GuardOutcome:
    status: str  # idle | watching | breach | error
    reason: str
    version: str | None = None
    previous: str | None = None
    new: Figures | None = None
    old: Figures | None = None
    breaches: list[Breach] = field(default_factory=list)
    rollback: rollout.Rollback | None = None
    served: str | None = None

    def line(self) -> str:
        out = f"guard: {self.status.upper()}"
        if self.version:
            out += f" (champion v{self.version}" + (f" vs v{self.previous})" if self.previous else ")")
        out += f": {self.reason}"
        if self.rollback is not None:
            m = self.rollback.move
            out += f"\n  rolled back: rollback {self.rollback.row_id}, v{m.from_version} -> v{m.to_version} by {m.by}"
        if self.served:
            out += f"\n  {self.served}"
        return out


def guard_figures(new: Figures, old: Figures, breaches: list[Breach]) -> dict[str, Any]:
    """The figures the guard judged, as the champion timeline keeps them (a move's `details`)."""

    def of(f: Figures) -> dict[str, Any]:
        quality = {k: v for k, v in f.quality.items() if isinstance(v, int | float) and np.isfinite(v)}
        return {
            "version": f.version,
            "records": f.records,
            "requests": f.requests,
            "error_rate": f.error_rate,
            "p99_ms": f.p99_ms,
            "quality": quality,
            **(
                {"agreement": f.agreement.as_dict() | {"bounds": f.agreement_bounds}}
                if f.agreement is not None
                else {}
            ),
        }

    return {
        "breaches": [{"figure": b.figure, "detail": b.detail} for b in breaches],
        "new": of(new),
        "old": of(old),
    }


def watched_move(name: str, version: str) -> dict[str, Any] | None:
    """The newest champion move to `version` (the promotion, forced promotion or rollback that made it
    the champion), from the registry's champion history."""
    for move in reversed(registry.champion_history(name)):
        if str(move.get("to_version")) == str(version):
            return move
    return None


def version_records(
    engine: sa.Engine,
    name: str,
    version: str,
    since: datetime | None = None,
    until: datetime | None = None,
    size: int | None = None,
    archive: ObjectStore | None = None,
) -> pd.DataFrame:
    """request id, score, latency and feedback label (NaN: none) of a version's predictions, newest
    first; with `archive` (core.retention), archived ones after the database's when it holds fewer than
    `size` (the previous version's figures once its records are past the retention window)."""
    p, f = store.predictions, store.feedback
    query = (
        sa.select(p.c.request_id, p.c.created_at, p.c.score, p.c.latency_ms, f.c.label.label("feedback"))
        .select_from(
            p.outerjoin(f, sa.and_(p.c.request_id == f.c.request_id, p.c.record_index == f.c.record_index))
        )
        .where(p.c.model_name == name, p.c.model_version == str(version))
        .order_by(p.c.created_at.desc(), p.c.id.desc())
    )
    if since is not None:
        query = query.where(p.c.created_at >= since)
    if until is not None:
        query = query.where(p.c.created_at < until)
    if size:
        query = query.limit(size)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(
        {
            "request_id": [r.request_id for r in rows],
            "score": [float(r.score) for r in rows],
            "latency_ms": [float(r.latency_ms) for r in rows],
            "label": [np.nan if r.feedback is None else float(r.feedback) for r in rows],
        }
    )
    if archive is None or (size and len(frame) >= size):
        return frame
    # the version's older records were archived (retention): the newest of them make up the rest
    filters = [("model_name", "=", name), ("model_version", "=", str(version))]
    if since is not None:
        filters.append(("created_at", ">=", pd.Timestamp(since)))
    if until is not None:
        filters.append(("created_at", "<", pd.Timestamp(until)))
    old = retention.archived_with_labels(engine, archive, ["score", "latency_ms"], filters)
    if old.empty:
        return frame
    old = old.sort_values(["created_at", "id"], ascending=False)
    if size:
        old = old.head(size - len(frame))
    older = pd.DataFrame(
        {
            "request_id": old["request_id"].astype(str).to_numpy(),
            "score": old["score"].astype(float).to_numpy(),
            "latency_ms": old["latency_ms"].astype(float).to_numpy(),
            "label": old["label_fb"].astype(float).to_numpy(),
        }
    )
    return pd.concat([frame, older], ignore_index=True)


def service_counts(service: rollout.Service, timeout: float = 3.0) -> dict[str, tuple[float, float]] | None:
    """{version: (records scored, records failed)} from the service's /metrics; None when unreadable."""
    try:
        response = requests.get(f"{service.url}/metrics", timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        log.debug("service metrics not readable: %s", exc)
        return None
    scored: dict[str, float] = {}
    failed: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        base = family.name.removesuffix("_total")  # typed: the family's name; untyped: the sample's
        target = {"model_service_predictions": scored, "model_service_prediction_errors": failed}.get(base)
        if target is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and "model_version" in sample.labels:
                version = sample.labels["model_version"]
                target[version] = target.get(version, 0.0) + float(sample.value)
    return {v: (scored.get(v, 0.0), failed.get(v, 0.0)) for v in set(scored) | set(failed)}


def figures_of(
    frame: pd.DataFrame, version: str, threshold: float, counts: dict[str, tuple[float, float]] | None
) -> Figures:
    out = Figures(version, records=len(frame))
    if len(frame):
        per_request = frame.groupby("request_id")["latency_ms"].first()
        out.requests = len(per_request)
        out.p99_ms = float(np.percentile(per_request.to_numpy(), 99))
        out.quality = live_quality(frame["label"], frame["score"], threshold)
    if counts is not None:
        out.scored, out.errors = counts.get(str(version), (0.0, 0.0))
    return out


def judge(new: Figures, old: Figures, bounds: dict[str, Any]) -> tuple[list[Breach], list[str]]:
    """Breaches of the bounds, and what was not judged yet (and why)."""
    breaches: list[Breach] = []
    pending: list[str] = []
    min_records, min_labelled = int(bounds["min_records"]), int(bounds["min_labelled"])
    if new.records < min_records:
        pending.append(
            f"error rate and latency after {min_records} records (v{new.version} has {new.records})"
        )
    else:
        new_rate, old_rate = new.error_rate, old.error_rate
        if new_rate is None:
            pending.append("error rate: the service's metrics are not readable")
        else:
            base = old_rate or 0.0
            if new_rate - base > bounds["max_error_rate_increase"]:
                breaches.append(
                    Breach(
                        "error_rate",
                        f"error rate {new_rate:.1%} vs {base:.1%} (+{new_rate - base:.1%} > "
                        f"{bounds['max_error_rate_increase']:.1%})",
                    )
                )
        if old.records < min_records or old.p99_ms is None or new.p99_ms is None:
            pending.append(f"latency: v{old.version} has {old.records} records (needs {min_records})")
        else:
            limit = max(old.p99_ms * bounds["max_latency_p99_ratio"], old.p99_ms + bounds["latency_slack_ms"])
            if new.p99_ms > limit:
                breaches.append(
                    Breach(
                        "latency_p99",
                        f"p99 latency {new.p99_ms:.1f} ms vs {old.p99_ms:.1f} ms (limit {limit:.1f} ms)",
                    )
                )
    a, limits = new.agreement, new.agreement_bounds
    if a is not None and limits is not None:
        if a.n < min_records:
            pending.append(f"agreement after {min_records} records (v{new.version} has {a.n})")
        else:
            if np.isfinite(a.rank_agreement) and a.rank_agreement < limits["min_rank_agreement"]:
                breaches.append(
                    Breach(
                        "rank_agreement",
                        f"rank agreement with v{old.version} {a.rank_agreement:.2f} < "
                        f"{limits['min_rank_agreement']:.2f} on {a.n} records, no labels ({limits['from']})",
                    )
                )
            if a.disagreement > limits["max_disagreement"]:
                breaches.append(
                    Breach(
                        "disagreement",
                        f"decisions differing from v{old.version} {a.disagreement:.1%} > "
                        f"{limits['max_disagreement']:.1%} on {a.n} records, no labels ({limits['from']})",
                    )
                )
    if new.labelled < min_labelled or old.labelled < min_labelled:
        pending.append(
            f"live quality after {min_labelled} labels each (v{new.version} {new.labelled}, "
            f"v{old.version} {old.labelled})"
        )
    else:
        for figure, drop in (bounds.get("max_quality_drop") or {}).items():
            ours, theirs = new.quality.get(figure), old.quality.get(figure)
            if ours is None or theirs is None:
                continue
            if theirs - ours > drop:
                breaches.append(
                    Breach(
                        figure,
                        f"live {figure} {ours:.3f} vs {theirs:.3f} (drop {theirs - ours:.3f} > {drop}) "
                        f"on {new.labelled} and {old.labelled} labels",
                    )
                )
    return breaches, pending


def agreement_bounds(bounds: dict[str, Any], measured: dict[str, Any] | None) -> dict[str, Any]:
    """The rank-agreement floor and disagreement cap. The config's `min_rank_agreement` and
    `max_disagreement` always hold (a pair the gate measured as disagreeing -- a forced bad model -- is
    not excused by that figure); the gate's figures for the pair, with `agreement_slack`, tighten them:
    live traffic should look like the test split."""
    floor, cap = float(bounds["min_rank_agreement"]), float(bounds["max_disagreement"])
    slack = float(bounds["agreement_slack"])
    figures = ("rank_agreement", "disagreement")
    if (
        measured
        and all(isinstance(measured.get(k), int | float) for k in figures)
        and np.isfinite([measured[k] for k in figures]).all()
    ):
        return {
            "min_rank_agreement": max(floor, float(measured["rank_agreement"]) - slack),
            "max_disagreement": min(cap, float(measured["disagreement"]) + slack),
            "from": f"guard config, tightened by the gate's figures with v{measured.get('against')} "
            f"on the test split (slack {slack:g})",
        }
    return {
        "min_rank_agreement": floor,
        "max_disagreement": cap,
        "from": "guard config (the gate did not measure this pair)",
    }


@lru_cache(maxsize=4)
def _model(tracking_uri: str, name: str, version: str) -> tuple[Any, list[str]]:
    """A version's pyfunc model and its input columns (as the gate scores it), per registry."""
    meta = registry.model_metadata(name, version)
    return mlflow.pyfunc.load_model(registry.model_uri(name, version)), [
        f["name"] for f in meta["feature_schema"]
    ]


def rescore(name: str, version: str, frame: pd.DataFrame, config: DatasetConfig) -> np.ndarray:
    """Scores of `version` for the records of `frame` (their logged features)."""
    model, columns = _model(mlflow.get_tracking_uri(), name, version)
    out = model.predict(coerce_features(frame, config)[columns])
    out = out.to_numpy() if isinstance(out, pd.DataFrame) else np.asarray(out)
    return (out[:, 1] if out.ndim == 2 else out).astype(float)


def shadow_agreement(
    engine: sa.Engine,
    config: DatasetConfig,
    name: str,
    version: str,
    previous: str,
    since: datetime,
    thresholds: tuple[float, float],
) -> tuple[Agreement | None, str | None]:
    """The new version's records since `since` scored again by `previous`, compared with its own scores;
    (None, why) when there is nothing to compare (no records, or records logged without features)."""
    frame = store.recent_predictions(engine, name, version, PREVIOUS_ROWS, 0)
    frame = frame[frame["created_at"] >= since] if len(frame) else frame
    if frame.empty:
        return None, f"agreement: v{version} has no records yet"
    missing = [c for c in config.feature_names if c not in frame.columns]
    if missing:
        return None, f"agreement: v{version}'s records were logged without features ({missing[:3]})"
    try:
        old = rescore(name, previous, frame, config)
    except Exception as exc:  # noqa: BLE001 - the other figures are judged all the same; the reason is shown
        log.warning("agreement: v%s could not score v%s's records: %s", previous, version, exc)
        return None, f"agreement: v{previous} could not score the records ({type(exc).__name__}: {exc})"[:300]
    return agreement(frame["score"].to_numpy(float), old, *thresholds), None


def _threshold(name: str, version: str) -> float:
    mv = registry.get_version(name, version)
    if mv.tags.get("threshold"):
        return float(mv.tags["threshold"])
    return float(registry.model_metadata(name, version)["threshold"])


def blocked_versions(name: str) -> list[str]:
    found = registry.MlflowClient().search_model_versions(f"name='{name}'")
    return sorted((str(v.version) for v in found if registry.blocked(v)), key=int)


def _export(name: str, outcome: GuardOutcome) -> None:
    metrics.guard_checks.labels(name, outcome.status).inc()
    metrics.guard_blocked.labels(name).set(len(blocked_versions(name)))
    metrics.guard_breach.labels(name).set(1 if outcome.status == "breach" else 0)
    metrics.guard_watching.clear()
    if outcome.status == "watching" and outcome.version:
        metrics.guard_watching.labels(name, outcome.version).set(1)
    for side, figs in (("new", outcome.new), ("previous", outcome.old)):
        if figs is None:
            continue
        values = {
            "records": figs.records,
            "error_rate": figs.error_rate,
            "latency_p99_ms": figs.p99_ms,
            **{k: figs.quality.get(k) for k in ("roc_auc", "recall")},
            **(
                {"rank_agreement": figs.agreement.rank_agreement, "disagreement": figs.agreement.disagreement}
                if figs.agreement is not None and figs.agreement.n
                else {}
            ),
        }
        for figure, value in values.items():
            if value is not None and np.isfinite(value):
                metrics.guard_figure.labels(name, figure, side).set(float(value))


def check(
    settings: MonitorSettings, config: DatasetConfig, *, now: datetime | None = None, wait: bool = True
) -> GuardOutcome:
    """One guard check (see the module doc); rolls back on a breach. Exports the guard's metrics."""
    outcome = _check(settings, config, now=now, wait=wait)
    _export(settings.model_name, outcome)
    return outcome


def _check(
    settings: MonitorSettings, config: DatasetConfig, *, now: datetime | None = None, wait: bool = True
) -> GuardOutcome:
    name = settings.model_name
    bounds = config.guard
    now = store.as_utc(now) if now is not None else store.utcnow()
    registry.connect(settings.tracking_uri)
    champ = registry.version_by_alias(name, registry.CHAMPION)
    if champ is None:
        return GuardOutcome("idle", f"model '{name}' has no champion")
    version = str(champ.version)
    move = watched_move(name, version)
    if move is None or not move.get("from_version"):
        return GuardOutcome("idle", f"v{version} replaced no earlier champion: nothing to compare", version)
    previous = str(move["from_version"])
    at = store.as_utc(datetime.fromisoformat(move["at"]))
    age = (now - at).total_seconds()
    if age > bounds["watch_seconds"]:
        return GuardOutcome(
            "idle",
            f"watch over: promoted {age:.0f} s ago (watch_seconds {bounds['watch_seconds']})",
            version,
            previous,
        )
    if registry.blocked(registry.get_version(name, previous)):
        return GuardOutcome("idle", f"v{previous} is blocked: nothing to roll back to", version, previous)
    engine = store.engine_for(settings.database_url)
    service = rollout.Service(settings.service_url, settings.api_key, settings.admin_token)
    counts = service_counts(service)
    # promotion times have whole seconds: a second's slack so no record of the new version is missed
    new = figures_of(
        version_records(engine, name, version, since=at - timedelta(seconds=1)),
        version,
        new_threshold := _threshold(name, version),
        counts,
    )
    old = figures_of(
        version_records(
            engine,
            name,
            previous,
            until=at + timedelta(seconds=1),
            size=PREVIOUS_ROWS,
            # past the retention window, the previous version's records are in the archive
            archive=retention.archive_store(settings) if settings.log_retention_days > 0 else None,
        ),
        previous,
        old_threshold := _threshold(name, previous),
        counts,
    )
    new.agreement, why_not = shadow_agreement(
        engine, config, name, version, previous, at - timedelta(seconds=1), (new_threshold, old_threshold)
    )
    if new.agreement is not None:
        new.agreement_bounds = agreement_bounds(
            bounds, registry.gate_agreement(registry.get_version(name, version), previous)
        )
    breaches, pending = judge(new, old, bounds)
    if why_not:
        pending.append(why_not)
    outcome = GuardOutcome("watching", "", version, previous, new, old, breaches)
    if not breaches:
        judged = [
            f"{new.records} records, p99 {new.p99_ms:.1f} ms vs {old.p99_ms:.1f} ms"
            if new.p99_ms and old.p99_ms
            else "",
            f"live roc_auc {new.quality.get('roc_auc'):.3f} vs {old.quality.get('roc_auc'):.3f}"
            if new.quality.get("roc_auc") is not None and old.quality.get("roc_auc") is not None
            else "",
            f"rank agreement {new.agreement.rank_agreement:.2f}, decisions differing "
            f"{new.agreement.disagreement:.1%} on {new.agreement.n} records"
            if new.agreement is not None and new.agreement.n
            else "",
        ]
        outcome.reason = (
            f"within bounds, {age:.0f} of {bounds['watch_seconds']} s watched"
            + "".join(f"; {j}" for j in judged if j)
            + ("; not judged yet: " + "; ".join(pending) if pending else "")
        )
        return outcome
    figures = "; ".join(b.detail for b in breaches)
    reason = f"guard: v{version} vs v{previous} since its promotion {age:.0f} s ago: {figures}"
    outcome.status, outcome.reason = "breach", figures
    try:
        registry.block(name, version, reason=reason, by=GUARD)
        # one move of the alias at a time: a person's rollback in progress goes first; the next check
        # judges whatever is champion then
        with rollout.alias_lock(engine, name, GUARD, "guard rollback", settings.rollback_timeout + 60):
            outcome.rollback = rollout.roll_back(
                engine,
                name,
                previous,
                reason=reason,
                by=GUARD,
                kind="guard_rollback",
                details=guard_figures(new, old, breaches),
            )
            for b in breaches:
                metrics.guard_rollbacks.labels(name, version, b.figure).inc()
            log.warning("%s", outcome.rollback.line(name))
            if wait:
                _, outcome.served = rollout.follow(
                    engine, service, outcome.rollback, settings.rollback_timeout
                )
            else:
                outcome.served = rollout.request_reload(service)
    except (registry.RegistryError, rollout.AliasBusy) as exc:
        outcome.status, outcome.reason = "error", f"breach ({figures}) but the rollback was refused: {exc}"
    return outcome


def reconcile_at_start(settings: MonitorSettings) -> rollout.Reconciliation | None:
    """Compare the champion timeline with the registry once (core.rollout.reconcile) and log the verdict:
    a warning when they disagree. None when either cannot be asked (the checks report that)."""
    try:
        registry.connect(settings.tracking_uri)
        verdict = rollout.reconcile(store.engine_for(settings.database_url), settings.model_name)
    except Exception as exc:  # noqa: BLE001 - a start-up check: the guard's checks go on regardless
        log.warning("champion timeline not reconciled with the registry: %s", type(exc).__name__)
        return None
    (log.info if verdict.agree else log.warning)("champion timeline vs registry: %s", verdict.line)
    return verdict


def run_forever(
    settings: MonitorSettings, config: DatasetConfig, stop: threading.Event, iterations: int | None = None
) -> None:
    """A check every GUARD_INTERVAL_SECONDS until `stop` (the `monitor loop` thread and `guard loop`)."""
    reconcile_at_start(settings)
    done = 0
    while not stop.is_set():
        try:
            outcome = check(settings, config)
            if outcome.status in ("breach", "error"):
                print(outcome.line(), flush=True)
            else:
                log.info("%s", outcome.line())
        except Exception:
            log.exception("guard check failed")
            metrics.guard_checks.labels(settings.model_name, "error").inc()
        done += 1
        if iterations is not None and done >= iterations:
            return
        stop.wait(settings.guard_interval_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.guard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="one check (rolls back on a breach)")
    lp = sub.add_parser("loop", help="a check every GUARD_INTERVAL_SECONDS")
    lp.add_argument("--iterations", type=int, help="stop after this many checks (tests)")
    args = parser.parse_args(argv)
    settings = load_or_exit(MonitorSettings)
    setup_logging(settings.log_level, settings.log_format)
    config = load_config(settings.dataset_config)
    if args.command == "loop":
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        run_forever(settings, config, stop, args.iterations)
        return 0
    outcome = check(settings, config)
    print(outcome.line(), flush=True)
    return 1 if outcome.status == "error" else 0


if __name__ == "__main__":
    sys.exit(main())
