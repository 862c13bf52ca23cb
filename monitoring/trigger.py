"""The retrain trigger: one interface, three backends (RETRAIN_TRIGGER = local | jenkins | log).

`RetrainTrigger(settings).fire(reason, ...)` decides, records and (when allowed) starts a retrain:

1. It claims a row in `trigger_events` (status `pending`), then looks at the rows before it:
   - `duplicate` when an event with the same dedupe key fired within TRIGGER_DEDUPE_SECONDS
     (Alertmanager re-sending the same alert, the monitor seeing the same drift every run);
   - `cooldown` when any retrain fired within TRIGGER_COOLDOWN_SECONDS (or another claim is pending);
   so a drifting hour starts one retrain, not twenty. Claim-then-check keeps two concurrent callers
   (the cron monitor and the Alertmanager webhook) from both firing: the earlier claim wins.
2. Otherwise the backend runs and the row becomes `fired` (or `failed`, which does not block a retry):
   - `jenkins`: POST `{JENKINS_URL}/job/{JOB}/buildWithParameters?token={JENKINS_JOB_TOKEN}` with
     basic auth (JENKINS_USER + JENKINS_API_TOKEN) and, when Jenkins issues one, the CSRF crumb from
     `/crumbIssuer/api/json` (same HTTP session, so the crumb's session cookie is sent back). Build
     parameters: REASON, TRIGGER_SOURCE, MONITORING_RUN_ID, DRIFT_SHARE, DRIFTED_FEATURES,
     PREDICTION_DRIFT_SCORE, LIVE_ROC_AUC, LIVE_RECALL, TRIGGER_KINDS (drift, quality, new data,
     schedule, manual), NEW_LABELS, SOURCE_HASH.
   - `local`: runs RETRAIN_COMMAND (default `python -m training.retrain`) detached, through
     `python -m monitoring.trigger run-local`, which keeps its log under RETRAIN_LOG_DIR and writes
     the exit code to `<log>.status.json` when it ends.
   - `log`: records the decision only.

CLI: `python -m monitoring.trigger fire --reason "..."` (manual trigger, same rules);
`python -m monitoring.trigger history` lists the last events.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import sqlalchemy as sa

from core import store
from core.logs import setup_logging
from core.settings import REPO_ROOT, load_or_exit
from monitoring.settings import JenkinsSettings, MonitorSettings

log = logging.getLogger("monitoring.trigger")


@dataclass(frozen=True)
class TriggerEvent:
    id: int
    status: str  # fired | failed | cooldown | duplicate | nothing_new (the schedule found no new data)
    # | waiting_labels (an alarm without the labels a retrain needs yet)
    backend: str
    detail: str
    parameters: dict[str, Any]

    @property
    def fired(self) -> bool:
        return self.status == "fired"


class TriggerError(RuntimeError):
    pass


def build_parameters(
    reason: str, source: str, run_id: int | None, figures: dict[str, Any] | None
) -> dict[str, str]:
    figures = figures or {}

    def fmt(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    return {
        "REASON": reason[:1000],
        "TRIGGER_SOURCE": source,
        "MONITORING_RUN_ID": "" if run_id is None else str(run_id),
        "DRIFT_SHARE": fmt(figures.get("drift_share")),
        "DRIFTED_FEATURES": ",".join(figures.get("drifted_features") or []),
        "PREDICTION_DRIFT_SCORE": fmt(figures.get("prediction_drift_score")),
        "LIVE_ROC_AUC": fmt(figures.get("roc_auc")),
        "LIVE_RECALL": fmt(figures.get("recall")),
        "TRIGGER_KINDS": ",".join(figures.get("trigger_kinds") or []),
        "NEW_LABELS": fmt(figures.get("new_labels")),
        "SOURCE_HASH": fmt(figures.get("source_hash")),
    }


def trigger_kinds(kinds: list[str]) -> list[str]:
    """What started a retrain, in words (drift, quality, new data) from the dedupe kinds of a check."""
    out = []
    for kind in kinds:
        word = (
            "quality"
            if kind.startswith("quality:")
            else "estimated harm"
            if kind.startswith("estimated_drop:")
            else "new data"
            if kind == "new_labels" or kind.startswith("source_changed")
            else "drift"
        )
        if word not in out:
            out.append(word)
    return out


def job_path(job: str) -> str:
    """`folder/name` -> `/job/folder/job/name` (Jenkins folders)."""
    return "".join(f"/job/{quote(part, safe='')}" for part in job.strip("/").split("/") if part)


def jenkins_build(jenkins: JenkinsSettings, parameters: dict[str, str], timeout: float = 15.0) -> str:
    """POST buildWithParameters; returns the queue item URL (Location header) or a short description."""
    session = requests.Session()
    if jenkins.user:
        session.auth = (jenkins.user, jenkins.api_token)
    headers: dict[str, str] = {}
    crumb = session.get(f"{jenkins.url}/crumbIssuer/api/json", timeout=timeout)
    if crumb.status_code == 200:
        body = crumb.json()
        headers[body["crumbRequestField"]] = body["crumb"]
    elif crumb.status_code not in (404,):  # 404: CSRF protection off, no crumb needed
        raise TriggerError(f"Jenkins crumb issuer answered HTTP {crumb.status_code}")
    url = f"{jenkins.url}{job_path(jenkins.job)}/buildWithParameters"
    params = {"token": jenkins.job_token} if jenkins.job_token else {}
    response = session.post(url, params=params, data=parameters, headers=headers, timeout=timeout)
    if response.status_code not in (200, 201):
        raise TriggerError(
            f"Jenkins answered HTTP {response.status_code} to POST {url}: {response.text[:200]}"
        )
    return response.headers.get("Location") or f"HTTP {response.status_code}"


def start_local(settings: MonitorSettings, parameters: dict[str, str], event_id: int) -> str:
    """Start the retrain pipeline detached; its log (and exit status) are kept under RETRAIN_LOG_DIR."""
    settings.retrain_log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log_file = settings.retrain_log_dir / f"retrain-{stamp}-event{event_id}.log"
    env = {**os.environ, **{f"RETRAIN_{k}": v for k, v in parameters.items()}}
    cmd = [
        sys.executable,
        "-m",
        "monitoring.trigger",
        "run-local",
        "--log",
        str(log_file),
        "--",
        *settings.retrain_command,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return json.dumps({"pid": proc.pid, "log": str(log_file), "status_file": str(status_file(log_file))})


def status_file(log_file: Path) -> Path:
    return log_file.with_name(log_file.name + ".status.json")


class RetrainTrigger:
    def __init__(self, settings: MonitorSettings, backend: str | None = None):
        self.settings = settings
        self.backend = backend or settings.trigger
        self.engine = store.engine_for(settings.database_url)

    def fire(
        self,
        reason: str,
        *,
        source: str = "monitor",
        dedupe_key: str | None = None,
        monitoring_run_id: int | None = None,
        figures: dict[str, Any] | None = None,
    ) -> TriggerEvent:
        s = self.settings
        key = (dedupe_key or f"{source}:{reason}")[:200]
        parameters = build_parameters(reason, source, monitoring_run_id, figures)
        now = store.utcnow()
        t = store.trigger_events
        with self.engine.begin() as conn:
            event_id = conn.execute(
                t.insert().values(
                    created_at=now,
                    backend=self.backend,
                    source=source,
                    dedupe_key=key,
                    reason=reason,
                    monitoring_run_id=monitoring_run_id,
                    status="pending",
                    parameters=parameters,
                )
            ).inserted_primary_key[0]
        status, detail = self._decide(event_id, key, now)
        if status == "go":
            try:
                if self.backend == "jenkins":
                    detail = "queued: " + jenkins_build(s.jenkins, parameters)
                elif self.backend == "local":
                    detail = start_local(s, parameters, event_id)
                else:
                    detail = "log only (RETRAIN_TRIGGER=log)"
                status = "fired"
            except (requests.RequestException, TriggerError, OSError) as exc:
                status, detail = "failed", f"{type(exc).__name__}: {exc}"[:1000]
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == event_id).values(status=status, detail=detail))
        level = logging.WARNING if status == "failed" else logging.INFO
        log.log(
            level,
            "retrain trigger %s (%s, event %s): %s -- %s",
            status,
            self.backend,
            event_id,
            reason,
            detail,
        )
        return TriggerEvent(event_id, status, self.backend, detail, parameters)

    def note(
        self,
        reason: str,
        *,
        source: str,
        status: str = "nothing_new",
        monitoring_run_id: int | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> TriggerEvent:
        """Record a decision not to retrain (the schedule found nothing new; an alarm waiting for labels,
        with its monitoring run and what a later retrain needs in `parameters`): a row, no backend call."""
        t = store.trigger_events
        with self.engine.begin() as conn:
            event_id = conn.execute(
                t.insert().values(
                    created_at=store.utcnow(),
                    backend=self.backend,
                    source=source,
                    dedupe_key=f"{source}:{status}",
                    reason=reason[:1000],
                    monitoring_run_id=monitoring_run_id,
                    status=status,
                    detail="no retrain",
                    parameters=parameters or {},
                )
            ).inserted_primary_key[0]
        log.info("retrain trigger %s (%s, event %s): %s", status, self.backend, event_id, reason)
        return TriggerEvent(event_id, status, self.backend, "no retrain", parameters or {})

    def _decide(self, event_id: int, key: str, now) -> tuple[str, str]:
        t = store.trigger_events
        s = self.settings
        dedupe_since = now - timedelta(seconds=s.dedupe_seconds)
        cooldown_since = now - timedelta(seconds=s.cooldown_seconds)
        active = t.c.status.in_(("fired", "pending"))
        with self.engine.connect() as conn:

            def latest_active(*where):
                """The newest fired or pending event before this one that matches `where`."""
                return conn.execute(
                    sa.select(t.c.id, t.c.created_at)
                    .where(t.c.id < event_id, active, *where)
                    .order_by(t.c.id.desc())
                    .limit(1)
                ).first()

            dup = latest_active(t.c.dedupe_key == key, t.c.created_at >= dedupe_since)
            if dup is not None:
                return "duplicate", (
                    f"same key fired as event {dup.id} at {store.as_utc(dup.created_at):%Y-%m-%d %H:%M:%S}Z, "
                    f"within the dedupe window of {s.dedupe_seconds:.0f} s"
                )
            recent = latest_active(t.c.created_at >= cooldown_since)
            if recent is not None:
                return "cooldown", (
                    f"retrain event {recent.id} fired at {store.as_utc(recent.created_at):%Y-%m-%d %H:%M:%S}Z, "
                    f"within the cooldown of {s.cooldown_seconds:.0f} s"
                )
        return "go", ""


def history(settings: MonitorSettings, limit: int = 20) -> list[dict[str, Any]]:
    engine = store.engine_for(settings.database_url)
    t = store.trigger_events
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def run_local(log_file: Path, command: list[str]) -> int:
    """Run `command` with its output in `log_file`; write the exit code next to it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log_file.open("ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        code = subprocess.call(
            command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.write(f"exit code {code} after {time.time() - started:.1f} s\n".encode())
    status_file(log_file).write_text(
        json.dumps(
            {"exit_code": code, "seconds": round(time.time() - started, 1), "finished_at": time.time()}
        )
        + "\n"
    )
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.trigger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fire = sub.add_parser("fire", help="trigger a retrain by hand (cooldown and dedupe apply)")
    fire.add_argument("--reason", required=True)
    fire.add_argument("--backend", choices=["local", "jenkins", "log"])
    sub.add_parser("history", help="the last trigger events")
    local = sub.add_parser("run-local", help="(internal) run the retrain command with its log kept")
    local.add_argument("--log", required=True, type=Path)
    local.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    settings = load_or_exit(MonitorSettings)
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "run-local":
        cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
        return run_local(args.log, cmd)
    if args.command == "history":
        for row in history(settings):
            print(
                f"{row['id']:>5} {store.as_utc(row['created_at']):%Y-%m-%d %H:%M:%S}Z {row['backend']:<8} "
                f"{row['status']:<10} {row['source']:<13} {row['reason'] or ''} | {row['detail'] or ''}"
            )
        return 0
    event = RetrainTrigger(settings, args.backend).fire(
        args.reason,
        source="manual",
        dedupe_key=f"manual:{args.reason}",
        figures={"trigger_kinds": ["manual"]},
    )
    print(f"event {event.id}: {event.status} ({event.backend}) {event.detail}")
    return 0 if event.status in ("fired", "cooldown", "duplicate") else 1


if __name__ == "__main__":
    sys.exit(main())
