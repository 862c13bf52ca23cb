"""The scheduled retrain (`python -m monitoring.monitor scheduled`, `make retrain-scheduled`; `monitor
loop` every RETRAIN_SCHEDULE_SECONDS): it retrains only when there is new data since the champion was
trained, and records `nothing_new` otherwise.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from core import registry, store
from core.dataset import DatasetConfig, load_config
from monitoring import check, metrics
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, TriggerEvent

log = logging.getLogger("monitoring.schedule")


def scheduled_retrain(
    settings: MonitorSettings,
    config: DatasetConfig | None = None,
    *,
    trigger: RetrainTrigger | None = None,
    now=None,
) -> TriggerEvent | None:
    """The scheduled retrain: fire (reason `schedule`) only when there is new data since the champion was
    trained -- any labelled record a retrain would add (core.newdata), or a changed source (`retrain.on_source_change`) -- and otherwise
    record `nothing_new`. None when there is no champion. Cooldown and dedupe apply as to any trigger."""
    config = config or load_config(settings.dataset_config)
    engine = store.engine_for(settings.database_url)
    trigger = trigger or RetrainTrigger(settings)
    registry.connect(settings.tracking_uri)
    champ = check.champion(settings)
    if champ is None:
        log.info("scheduled retrain: model '%s' has no champion yet", settings.model_name)
        return None
    fresh = check.check_freshness(settings, config, champ, engine, now, label_bound=1)
    if not fresh.reasons:
        labels = "unknown" if fresh.new_labels is None else str(fresh.new_labels)
        if fresh.new_rows is not None:
            labels += f", {fresh.new_rows} a retrain would add"
        return trigger.note(
            f"schedule: nothing new since v{champ.version} was trained ({labels} labelled records, "
            f"source {'unchanged' if fresh.source_hash else 'not checked'})",
            source="schedule",
        )
    event = trigger.fire(
        "schedule: " + "; ".join(fresh.reasons),
        source="schedule",
        dedupe_key=f"schedule:{settings.model_name}:v{champ.version}:" + ",".join(fresh.kinds),
        figures={**fresh.figures(), "trigger_kinds": ["schedule", "new data"]},
    )
    metrics.triggers.labels(settings.model_name, event.backend, event.status, "schedule").inc()
    return event


def schedule_due(settings: MonitorSettings, now=None) -> bool:
    """Is a scheduled retrain due? RETRAIN_SCHEDULE_SECONDS since the last one (kept in trigger_events,
    so a restarted loop keeps its rhythm); never when the schedule is off."""
    if settings.schedule_seconds <= 0:
        return False
    now = store.as_utc(now) if now is not None else store.utcnow()
    t = store.trigger_events
    with store.engine_for(settings.database_url).connect() as conn:
        last = conn.execute(sa.select(sa.func.max(t.c.created_at)).where(t.c.source == "schedule")).scalar()
    return last is None or (now - store.as_utc(last)).total_seconds() >= settings.schedule_seconds
