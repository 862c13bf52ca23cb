"""The whole loop on the embedded default, one command: `make demo` (`churnops demo`).

The demo is a list of named phases (PHASES, at the end of this module), run in order:

1. v1            train v1, gate it, promote it
2. serve         start the service (granian) and wait until it serves v1
3. normal        held-out traffic with labels; a monitor run that raises no alarm
4. drift         drifted traffic (covariate shift); a monitor run that alarms and fires one retrain trigger
                 (local backend)
5. heal          the retrain on the new labelled data, the gate, v2 promoted and served by every worker
6. settle        more of the same drift; the check on v2 is ok (v2's drift reference is the window it was
                 retrained for), so no second retrain: the loop settles
7. rollback      `churnops rollback 1`, v1 served again
8. guard         a deliberately bad model (labels flipped) forced past the gate (the audited admin
                 override) and served, normal traffic with no label back; the post-promotion guard
                 scores the same records with v1, rolls it back by itself (no label needed) and blocks it
9. summary       seconds from drift onset to v2 serving and from the bad promotion to v1 serving again,
                 monitoring runs, trigger decisions, and the champion timeline (`churnops history`):
                 every move the demo made, with who, why and the records each version served

`churnops demo --late-labels` (`make demo-late-labels`) runs the loop as it works when churn is known
only after the data set config's label horizon (30 days; 20% of labels never come back). The traffic
runs on a simulated clock (operations.simulate.SimulatedClock: DEMO_RECORDS records make 5 business
days; every record and label carries its event time), so months pass in minutes:

1. v1, serve     as above
2. normal        10 days of held-out traffic, no label back yet; a check with no alarm
3. harmless      5 days with `female` moved (a feature the model barely uses): drift the check reports,
                 no estimated harm, no retrain (estimate.drift_needs_harm: drift needs harm to retrain)
4. harmful       5 days with `contract` and `tenure` shifted (top features): the check alarms on the
                 quality estimated without labels (CBPE) and the retrain waits for this cohort's labels
5. labels        the same shift goes on; checks every 2.5 days; the drifted cohort's labels come back
                 30 days after its scores, and the waiting alarm fires the retrain that learns from them
6. heal          the retrain, the gate, v2 served
7. guard         a bad model forced past the gate, rolled back by the guard with no label in its watch
8. summary       business days and seconds from the harm alarm to its labels, to v2 serving, and more

Every step is printed with its time and recorded in STATE_DIR/demo-timeline.json (rewritten after every
step, so a failed demo leaves its record too): `passed`, `failure`, `events` (phase, event, text,
detail and the step's facts: versions, statuses, ids) and `summary` (the figures above). Stops what it
started; exits non-zero if any step fails.

State goes to DEMO_DIR (default var/demo, emptied first), so the demo never touches `make train`'s
state (the late-label demo: var/demo-late-labels). Settings (environment): DEMO_DIR, DEMO_PORT (default: a free port), DEMO_RECORDS (records per
traffic phase, 300), DEMO_RATE (records/s, 150), DEMO_TIMEOUT (seconds for the retrain + reload, 240),
OPTUNA_TRIALS (3), CV_FOLDS (2) and TRAIN_THREADS (1) for both trainings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from operations.waiting import NotReady, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
TIMELINE_FILE = "demo-timeline.json"
TRIGGER_WORDS = {  # trigger_events.status, as a newcomer reads it
    "fired": "fired (a retrain ran)",
    "cooldown": "held back by the cooldown",
    "duplicate": "ignored as a duplicate",
    "failed": "failed",
}


def ordered(events: dict[str, int]) -> list[str]:
    """Trigger statuses in TRIGGER_WORDS' order, any other after them."""
    return [s for s in TRIGGER_WORDS if s in events] + sorted(set(events) - set(TRIGGER_WORDS))


STATE_VARIABLES = (
    "DATA_DIR",
    "REPORTS_DIR",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_ARTIFACT_ROOT",
    "DATABASE_URL",
    "MONITOR_REPORTS_URI",
    "RETRAIN_LOG_DIR",
    "SPOOL_DIR",
)


class DemoFailure(RuntimeError):
    pass


class Timeline:
    """The demo's steps: printed as they happen and kept as JSON (`path`, rewritten after every step)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0 = time.time()
        self.phase = "start"
        self.events: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self.passed: bool | None = None
        self.failure: str | None = None

    def mark(self, event: str, text: str, detail: str = "", **facts: Any) -> float:
        """Record one step: `event` is its stable key, `text` what a person reads, `facts` its data."""
        now = time.time()
        self.events.append(
            {
                "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                "offset_s": round(now - self.t0, 2),
                "phase": self.phase,
                "event": event,
                "text": text,
                "detail": detail,
                **facts,
            }
        )
        stamp = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S")
        print(f"[{stamp} +{now - self.t0:6.1f}s] {text}" + (f": {detail}" if detail else ""), flush=True)
        self.write()
        return now

    def write(self) -> None:
        record = {
            "passed": self.passed,
            "failure": self.failure,
            "started_at": datetime.fromtimestamp(self.t0, UTC).isoformat(timespec="seconds"),
            "events": self.events,
            "summary": self.summary,
        }
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        partial.replace(self.path)

    def table(self) -> str:
        lines = ["", "timeline", "--------"]
        for event in self.events:
            at = datetime.fromisoformat(event["at"])
            lines.append(f"{at:%H:%M:%S}Z  +{event['offset_s']:6.1f}s  {event['text']}")
        return "\n".join(lines)


LATE_LABELS_CONFIG = "dataset-late-labels.yaml"


def late_labels_config(state: Path) -> Path:
    """The telco config as a team with late labels runs it: a drift alarm retrains only when the quality
    estimated without labels dropped too (estimate.drift_needs_harm), since labels cannot say for weeks."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "telco_churn.yaml").read_text())
    raw.setdefault("estimate", {})["drift_needs_harm"] = True
    path = state / LATE_LABELS_CONFIG
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def configure_environment(late_labels: bool = False) -> dict[str, str]:
    default = REPO / "var" / ("demo-late-labels" if late_labels else "demo")
    state = Path(os.environ.get("DEMO_DIR") or default).resolve()
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    port = int(os.environ.get("DEMO_PORT") or free_port())
    api_key, admin = secrets.token_hex(16), secrets.token_hex(16)
    # every path of the embedded default derives from STATE_DIR: drop any inherited override of one
    for variable in STATE_VARIABLES:
        os.environ.pop(variable, None)
    env = {
        "STATE_DIR": str(state),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "OPTUNA_TRIALS": os.environ.get("OPTUNA_TRIALS") or "3",
        "CV_FOLDS": os.environ.get("CV_FOLDS") or "2",
        # one XGBoost thread: on 2 cores the service, the monitor and the trainer share the CPU, and the
        # gate's one-record latency budget is measured in CPU time (threads add to it)
        "TRAIN_THREADS": os.environ.get("TRAIN_THREADS") or "1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SERVICE_URL": f"http://127.0.0.1:{port}",
        "API_KEYS": api_key,
        "SERVICE_API_KEY": api_key,
        "ADMIN_TOKEN": admin,
        "SERVICE_WORKERS": os.environ.get("SERVICE_WORKERS") or "2",
        "RELOAD_INTERVAL_SECONDS": "2",
        "RETRAIN_TRIGGER": "local",
        "TRIGGER_COOLDOWN_SECONDS": "3600",
        "TRIGGER_DEDUPE_SECONDS": "21600",
        "MONITOR_WINDOW_SIZE": os.environ.get("DEMO_RECORDS") or "300",
        "MONITOR_MIN_WINDOW": "200",
        "MONITOR_WINDOW_MINUTES": "60",
        "GUARD_INTERVAL_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    if late_labels:
        env["DATASET_CONFIG"] = str(late_labels_config(state))
    os.environ.update(env)
    return env


def stop(process: subprocess.Popen | None, timeout: float) -> bool:
    """SIGTERM a process the demo started (its session: SIGKILL after `timeout`); False when not running."""
    if process is None or process.poll() is not None:
        return False
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return True


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    try:
        return wait_until(predicate, timeout, what, interval)
    except NotReady as exc:
        raise DemoFailure(f"timed out waiting for {exc}") from None


@dataclass
class Demo:
    """What the phases share: settings, the timeline, the processes started, the figures measured."""

    env: dict[str, str]
    timeline: Timeline
    records: int = field(default_factory=lambda: int(os.environ.get("DEMO_RECORDS") or 300))
    rate: float = field(default_factory=lambda: float(os.environ.get("DEMO_RATE") or 150))
    budget: float = field(default_factory=lambda: float(os.environ.get("DEMO_TIMEOUT") or 240))
    service: subprocess.Popen | None = None
    guard: subprocess.Popen | None = None
    retrain_pid: int | None = None
    # set by the `serve` phase (imports after the environment is set: every settings module reads it)
    msettings: Any = None
    config: Any = None
    pool: Any = None
    scenario: Any = None
    onset: float = 0.0
    retrain: dict[str, Any] = field(default_factory=dict)  # the fired trigger's detail
    clock: Any = None  # the late-label demo's simulated clock (operations.simulate.SimulatedClock)
    harm_run: int | None = None  # the late-label demo's harm alarm (its monitoring run)

    @property
    def state(self) -> Path:
        return Path(self.env["STATE_DIR"])

    @property
    def logs(self) -> Path:
        return self.state / "logs" / "retrain"

    def mark(self, event: str, text: str, detail: str = "", **facts: Any) -> float:
        return self.timeline.mark(event, text, detail, **facts)

    def run_step(self, event: str, text: str, cmd: list[str], log_name: str, timeout: float, **facts) -> str:
        """Run one command to its end (log in logs/retrain); its last line is the step's detail."""
        log_file = self.logs / log_name
        started = time.time()
        with log_file.open("wb") as out:
            try:
                code = subprocess.call(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise DemoFailure(f"{text}: no result within {timeout:.0f} s (log: {log_file})") from exc
        tail = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        last = tail[0] if tail else ""
        if code != 0:
            raise DemoFailure(f"{text}: exit {code} (log: {log_file}): {last}")
        self.mark(
            event,
            text,
            f"{time.time() - started:.1f} s; {last}",
            seconds=round(time.time() - started, 1),
            **facts,
        )
        return last

    def served_version(self) -> str | None:
        from operations.rollback import served_version

        return served_version(self.msettings)

    def wait_every_worker(self, version: str) -> None:
        """`version` from every worker: 8 answers in a row on fresh connections, within 60 s."""
        from operations.rollback import wait_served

        every_worker, seen, _ = wait_served(self.msettings, version, 60, confirmations=8)
        if not every_worker:
            raise DemoFailure(
                f"the service did not serve v{version} on every worker within 60 s (last: v{seen})"
            )

    def sample(self, seed: int):
        return self.pool.sample(
            self.records, replace=self.records > len(self.pool), random_state=seed
        ).reset_index(drop=True)

    def traffic(self, frame, seed: int, scenario=None, feedback_share: float = 1.0):
        from operations.simulate import simulate

        return simulate(
            self.msettings.service_url,
            self.msettings.api_key,
            frame,
            self.config,
            scenario=scenario,
            rate=self.rate,
            batch=10,
            feedback_delay=1.0,
            feedback_share=feedback_share,
            seed=seed,
            reference=self.pool,
            clock=self.clock if feedback_share > 0 else None,
            log=lambda line: self.mark("traffic_done", "traffic done", line),
        )

    def send(self, frame, seed: int, scenario=None) -> None:
        stats = self.traffic(frame, seed, scenario)
        if stats.rejected or stats.accepted < self.records:
            raise DemoFailure(f"{self.timeline.phase} traffic: {stats.line()}")

    def check(self, about: str = "", settled: bool = False):
        """One monitor run, after the service's log has been written: a worker hands its spool segment
        to the writer process within LOG_SEGMENT_SECONDS (0.5 s), which moves it within about 0.1 s more."""
        from monitoring.check import run_check

        time.sleep(2.0)
        outcome = run_check(self.msettings, self.config, summary_table=False)
        self.mark(
            "monitor_run",
            f"monitor run {outcome.run_id}{about}: {outcome.status}",
            f"{'settled: ' if settled and outcome.status == 'ok' else ''}{outcome.reason}",
            run_id=outcome.run_id,
            status=outcome.status,
            version=outcome.version,
            trigger_fired=outcome.trigger is not None and outcome.trigger.fired,
        )
        return outcome

    def stop_all(self) -> None:
        if self.retrain_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.retrain_pid, signal.SIGTERM)  # still running only when the demo failed
        stop(self.guard, 20)
        if stop(self.service, 40):
            print(f"service stopped (exit {self.service.returncode})", flush=True)


def gate_verdict(log: Path) -> tuple[list[str], str]:
    lines = log.read_text(errors="replace").splitlines()
    return lines, next((ln for ln in lines if ln.startswith("verdict:")), "no gate verdict")


# ---- the phases, in order ------------------------------------------------------------------------------


def train_v1(demo: Demo) -> None:
    py = sys.executable
    demo.run_step("trained", "v1 trained (make train)", [py, "-m", "training.train"], "train-v1.log", 600)
    demo.run_step(
        "promoted",
        "v1 gated and promoted (make gate)",
        [py, "-m", "training.gate"],
        "gate-v1.log",
        300,
        version="1",
    )


def serve(demo: Demo) -> None:
    from core.dataset import load_config
    from monitoring.settings import MonitorSettings
    from operations.simulate import held_out_records
    from training.settings import TrainingSettings

    demo.msettings = MonitorSettings.from_env()
    tsettings = TrainingSettings.from_env()
    demo.config = load_config(tsettings.dataset_config)
    demo.service = service = subprocess.Popen(
        [sys.executable, "-m", "model_service.server"],
        cwd=REPO,
        stdout=(demo.logs / "service.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(
        lambda: service.poll() is not None or demo.served_version() == "1", 90, "the service to serve v1"
    )
    if service.poll() is not None:
        raise DemoFailure(f"the service exited with {service.returncode} (log: {demo.logs / 'service.log'})")
    demo.mark("served", "service up, serving v1", f"server pid {service.pid}", version="1")
    demo.pool = held_out_records(tsettings, demo.config)


def normal_traffic(demo: Demo) -> None:
    demo.mark(
        "traffic_start",
        "normal traffic",
        f"{demo.records} held-out records at {demo.rate:g}/s, labels back after 1 s",
    )
    demo.send(demo.sample(1), seed=1)
    outcome = demo.check()
    if outcome.status != "ok":
        raise DemoFailure(f"the monitor run on normal traffic should raise no alarm: {outcome.line()}")


def drift_and_trigger(demo: Demo) -> None:
    from monitoring.scenarios import Scenario

    demo.onset = demo.mark(
        "drift_onset",
        "drift onset",
        f"{demo.records} records, covariate shift on monthly_charges, tenure (+1 sd)",
    )
    demo.scenario = Scenario("covariate", ("monthly_charges", "tenure"), strength=1.0)
    demo.send(demo.sample(2), seed=2, scenario=demo.scenario)
    outcome = demo.check()
    if outcome.status != "drift" or outcome.trigger is None:
        raise DemoFailure(f"the monitor run on drifted traffic should alarm and trigger: {outcome.line()}")
    if not outcome.trigger.fired:
        raise DemoFailure(f"the retrain trigger did not fire: {outcome.trigger}")
    detail = json.loads(outcome.trigger.detail)
    demo.retrain_pid = detail["pid"]
    demo.retrain = detail
    demo.mark(
        "retrain_triggered",
        f"retrain triggered (local backend, event {outcome.trigger.id})",
        f"log {detail['log']}",
        trigger_id=outcome.trigger.id,
        backend=outcome.trigger.backend,
    )


def retrain_serves_v2(demo: Demo) -> None:
    detail = demo.retrain
    status_file, log = Path(detail["status_file"]), Path(detail["log"])

    def retrain_ended() -> None:
        code = json.loads(status_file.read_text())["exit_code"]
        lines, gate_line = gate_verdict(log)
        learned = next((ln.split("): ")[-1] for ln in lines if "labelled production records" in ln), "")
        demo.mark(
            "retrain_ended",
            "retrain + gate finished",
            f"exit {code}; {gate_line}" + (f"; learned from {learned}" if learned else ""),
            exit_code=code,
        )
        if code != 0:
            tail = "\n    ".join(lines[-15:])
            raise DemoFailure(f"the retrain failed (exit {code}, log {log}):\n    {tail}")

    wait_for(
        lambda: status_file.exists() or demo.served_version() == "2",
        demo.budget,
        "the retrain to finish",
        1.0,
    )
    ended = status_file.exists()
    if ended:
        retrain_ended()
    demo.wait_every_worker("2")  # before the next traffic phase
    served = demo.mark("served", "v2 served", "picked up by every worker's reload poll", version="2")
    demo.timeline.summary["onset_to_v2_s"] = round(served - demo.onset, 1)
    if not ended:  # v2 is served once promoted; the retrain process ends just after
        wait_for(status_file.exists, 60, "the retrain process to end", 0.5)
        retrain_ended()


def loop_settles(demo: Demo) -> None:
    """The drift goes on, unchanged, on other records than the ones v2 was retrained for: v2's drift
    reference is the window it was retrained for, so the check is ok and no second retrain runs."""
    demo.traffic(demo.sample(3), seed=3, scenario=demo.scenario)
    again = demo.check(" on v2 (the same drift, other records)", settled=True)
    if again.status != "ok" or (again.trigger is not None and again.trigger.fired):
        raise DemoFailure(
            f"the check after the heal, on the traffic v2 was retrained for, should be ok: {again.line()}"
        )


def rollback_drill(demo: Demo) -> None:
    demo.run_step(
        "rolled_back",
        "rollback to v1 (churnops rollback 1)",
        [
            sys.executable,
            "-m",
            "operations",
            "rollback",
            "1",
            "--reason",
            "demo: rollback drill",
            "--timeout",
            "60",
        ],
        "rollback.log",
        120,
        version="1",
        by="operator",
    )
    if demo.served_version() != "1":
        raise DemoFailure("after the rollback the service does not report v1")
    demo.mark("served", "v1 served again", version="1")


def guard_drill(demo: Demo) -> None:
    """A deliberately bad model forced past the gate; the post-promotion guard rolls it back by itself."""
    import sqlalchemy as sa

    from core import registry, store

    py = sys.executable
    good = demo.served_version() or "1"  # what the guard must bring back
    demo.guard = guard = subprocess.Popen(
        [py, "-m", "monitoring.guard", "loop"],
        cwd=REPO,
        stdout=(demo.logs / "guard.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    demo.mark(
        "guard_started",
        "post-promotion guard started",
        f"a check every {demo.env['GUARD_INTERVAL_SECONDS']} s (pid {guard.pid})",
    )
    bad = demo.run_step(
        "bad_model_registered",
        "deliberately bad model registered (labels flipped)",
        [py, "-m", "operations", "bad-model"],
        "bad-model.log",
        300,
    ).split()[-1]
    demo.run_step(
        "forced",
        f"v{bad} FORCED past the gate (audited admin override)",
        [
            py,
            "-m",
            "training.gate",
            "--version",
            bad,
            "--force",
            "--by",
            "demo-admin",
            "--reason",
            "demo: emergency override of a failed gate",
        ],  # fmt: skip
        "gate-forced.log",
        300,
        version=bad,
    )
    # the promotion's recorded time (whole seconds, rounded down: the figure errs on the long side)
    forced_at = datetime.fromisoformat(
        registry.champion_history(demo.msettings.model_name)[-1]["at"]
    ).timestamp()
    wait_for(lambda: demo.served_version() == bad, 60, f"the service to serve the forced v{bad}")
    demo.mark(
        "served",
        f"v{bad} served (bad)",
        f"normal traffic, no label comes back: the guard scores the same records with v{good} (shadow) "
        "and compares the two",
        version=bad,
    )
    sent = threading.Thread(target=demo.traffic, args=(demo.sample(1), 4, None, 0.0), daemon=True)
    sent.start()

    def guard_rollback():
        """The guard's audit row for rolling the bad version back (None until there is one)."""
        with store.engine_for(demo.msettings.database_url).connect() as conn:
            return (
                conn.execute(
                    sa.select(store.rollbacks)
                    .where(store.rollbacks.c.by == "guard", store.rollbacks.c.from_version == bad)
                    .order_by(store.rollbacks.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )

    # one answer of v1 proves nothing: a worker that has not yet reloaded the bad version still answers
    # v1. So first the guard's own audit row, then v1 from every worker (answers in a row)
    wait_for(
        lambda: guard.poll() is not None or guard_rollback() is not None,
        max(60.0, demo.budget / 2),
        "the guard to roll the bad model back",
    )
    if guard.poll() is not None:
        raise DemoFailure(f"the guard exited with {guard.returncode} (log: {demo.logs / 'guard.log'})")
    demo.wait_every_worker(good)
    healed = demo.mark("served", f"v{good} served again: rolled back by the guard", version=good)
    demo.timeline.summary["bad_to_good_s"] = round(healed - forced_at, 1)
    sent.join(timeout=30)
    row = guard_rollback()
    demo.mark(
        "guard_rolled_back",
        f"guard's audit: rollback {row['id']} v{row['from_version']} -> v{row['to_version']} by guard",
        f"{row['reason']}; v{bad} blocked from promotion until a person lifts it",
        rollback_id=row["id"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        by=row["by"],
        blocked=registry.blocked(registry.get_version(demo.msettings.model_name, bad)) is not None,
    )


def summarize(demo: Demo) -> None:
    import sqlalchemy as sa

    from core import rollout, store
    from operations.history import as_json, table

    with store.engine_for(demo.msettings.database_url).connect() as conn:
        n_runs = conn.execute(sa.select(sa.func.count()).select_from(store.monitoring_runs)).scalar()
        events = dict(
            conn.execute(
                sa.select(store.trigger_events.c.status, sa.func.count()).group_by(
                    store.trigger_events.c.status
                )
            ).all()
        )
    engine = store.engine_for(demo.msettings.database_url)
    name = demo.msettings.model_name
    moves = store.champion_timeline(engine, name, limit=1000)
    verdict = rollout.reconcile(engine, name)
    summary = demo.timeline.summary
    summary.update(
        champion_moves=[as_json(m) for m in moves],
        champion_timeline_agrees=verdict.agree,
        monitoring_runs=n_runs,
        trigger_decisions=events,
        total_s=round(time.time() - demo.timeline.t0, 1),
        state=str(demo.state),
    )
    print(demo.timeline.table())
    print(f"\nchampion timeline (churnops history; the registry: {verdict.line})")
    print(table(moves))
    if "harm_alarm_day" in summary:  # the late-label demo
        alarm, fired = summary["harm_alarm_day"], summary["retrain_day"]
        print(
            f"\nharm alarmed by estimation on business day {alarm:g}, before any of its labels; its cohort's "
            f"labels fired the retrain on day {fired:g} ({fired - alarm:g} days later)"
        )
        print(f"harmful shift onset -> v2 serving: {summary['onset_to_v2_s']:.1f} s")
    else:
        print(f"\ndrift onset -> v2 serving: {summary['onset_to_v2_s']:.1f} s")
    print(
        f"bad model forced -> good model serving again (the guard, by itself): {summary['bad_to_good_s']:.1f} s"
    )
    print(
        f"demo total: {summary['total_s']:.1f} s; {n_runs} monitoring runs; retrain trigger decisions: "
        + ", ".join(f"{events[status]} {TRIGGER_WORDS.get(status, status)}" for status in ordered(events))
        + f"; state in {demo.state}; timeline {demo.timeline.path}"
    )


PHASES: tuple[tuple[str, Callable[[Demo], None]], ...] = (
    ("v1", train_v1),
    ("serve", serve),
    ("normal", normal_traffic),
    ("drift", drift_and_trigger),
    ("heal", retrain_serves_v2),
    ("settle", loop_settles),
    ("rollback", rollback_drill),
    ("guard", guard_drill),
    ("summary", summarize),
)


# ---- the late-label demo's phases (churnops demo --late-labels) -----------------------------------------

DAYS_PER_TRAFFIC = 5  # DEMO_RECORDS records make this many business days
LATE_CHECK_DAYS = 2.5  # business days between the checks while the labels come back
LATE_MAX_DAYS = 45  # the shift's labels must fire a retrain within this many days of the harm alarm


def start_clock(demo: Demo) -> None:
    from datetime import timedelta

    from operations.simulate import SimulatedClock

    per_day = demo.records / DAYS_PER_TRAFFIC
    horizon, never = demo.config.label_horizon_days, demo.config.label_never_share
    if horizon <= 0:
        raise DemoFailure(f"{demo.config.path}: labels.horizon_days is 0: there is no late label to wait for")
    # far enough back that no event time of the story (scores and labels) lies in the future
    back = 20 + LATE_MAX_DAYS + horizon + 5
    day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=back)
    demo.clock = SimulatedClock(day0, per_day, horizon, never, seed=7)
    demo.mark(
        "clock",
        f"simulated clock starts on {day0:%Y-%m-%d}",
        f"{per_day:g} records make a business day; a label comes back {horizon:g} days after its score, "
        f"{never:.0%} never",
        per_day=per_day,
        horizon_days=horizon,
        never_share=never,
    )


def business_days(demo: Demo, days: float, seed: int, scenario=None) -> None:
    """`days` business days of traffic on the clock (labels due meanwhile sent back with their time)."""
    n = round(days * demo.clock.per_day)
    frame = demo.pool.sample(n, replace=n > len(demo.pool), random_state=seed).reset_index(drop=True)
    stats = demo.traffic(frame, seed, scenario)
    if stats.rejected or stats.accepted < n or stats.feedback_failed:
        raise DemoFailure(f"{demo.timeline.phase} traffic: {stats.line()}")


def on_day(demo: Demo) -> str:
    return f" on day {demo.clock.day:g} ({demo.clock.now:%Y-%m-%d})"


def late_normal(demo: Demo) -> None:
    start_clock(demo)
    business_days(demo, 2 * DAYS_PER_TRAFFIC, seed=11)
    outcome = demo.check(on_day(demo))
    if outcome.status != "ok":
        raise DemoFailure(f"the check on normal traffic should raise no alarm: {outcome.line()}")


def harmless_shift(demo: Demo) -> None:
    """`female` moved: drift the check sees, on a feature the model barely uses (the gate's invariance
    test holds its effect under 0.03): no estimated harm, so no retrain."""
    from monitoring.scenarios import Scenario

    demo.mark(
        "harmless_onset",
        "harmless shift",
        f"{DAYS_PER_TRAFFIC} days with half the customers moved to female = its rarer value "
        "(a feature the model barely uses)",
    )
    business_days(demo, DAYS_PER_TRAFFIC, seed=12, scenario=Scenario("move", ("female",), share=0.5))
    outcome = demo.check(on_day(demo))
    if outcome.result is None or outcome.harm is None:
        raise DemoFailure(f"the check on the harmless shift judged nothing: {outcome.line()}")
    drifted = [f.feature for f in outcome.result.features if f.drifted]
    if "female" not in drifted:
        raise DemoFailure(f"the check should see the shift of female (drifted: {drifted}): {outcome.line()}")
    if outcome.harm.kinds or (
        outcome.trigger is not None and outcome.trigger.status in ("fired", "waiting_labels")
    ):
        raise DemoFailure(f"a harmless shift must retrain nothing: {outcome.line()}")
    drops = ", ".join(f"{m} {d:+.3f}" for m, d in outcome.harm.drops.items())
    demo.mark(
        "harmless_judged",
        "harmless: drift seen, no harm estimated, nothing retrained",
        f"drifted {', '.join(drifted)}; estimated drop {drops} (bounds {outcome.harm.bounds})"
        + (f"; {outcome.warning}" if outcome.warning else ""),
        drifted=drifted,
        estimated_drop=outcome.harm.drops,
        trigger_status=None if outcome.trigger is None else outcome.trigger.status,
    )


def harmful_shift(demo: Demo) -> None:
    """`contract` and `tenure` shifted: the estimate (no labels) drops past its bound: an alarm, and the
    retrain waits for this cohort's labels (30 days away)."""
    from monitoring.scenarios import Scenario

    demo.onset = demo.mark(
        "harm_onset",
        "harmful shift",
        f"{DAYS_PER_TRAFFIC} days with contract and tenure shifted (the model's top features)",
        day=demo.clock.day,
    )
    demo.scenario = Scenario("covariate", ("contract", "tenure"), strength=1.5)
    business_days(demo, DAYS_PER_TRAFFIC, seed=13, scenario=demo.scenario)
    outcome = demo.check(on_day(demo))
    if outcome.harm is None or not outcome.harm.kinds:
        raise DemoFailure(f"the harmful shift should alarm on the estimate: {outcome.line()}")
    if outcome.trigger is None or outcome.trigger.status != "waiting_labels" or outcome.cohort is None:
        raise DemoFailure(f"the harm alarm should wait for its cohort's labels: {outcome.line()}")
    demo.timeline.summary["harm_alarm_day"] = demo.clock.day
    demo.harm_run = outcome.run_id
    demo.mark(
        "harm_alarm",
        f"alarm by estimation{on_day(demo)}, {outcome.cohort.have} labels in its window",
        "; ".join(outcome.harm.reasons) + f"; the retrain waits for {outcome.cohort.need} of this cohort's "
        f"labels, due {demo.clock.horizon_days:g} days after their scores",
        run_id=outcome.run_id,
        kinds=outcome.harm.kinds,
        labelled=outcome.cohort.have,
        day=demo.clock.day,
    )


def labels_come_back(demo: Demo) -> None:
    """The shift goes on; the cohort's labels come back after the horizon and fire the waiting retrain."""
    alarm_day = demo.timeline.summary["harm_alarm_day"]
    seed = 20
    while demo.clock.day < alarm_day + LATE_MAX_DAYS:
        seed += 1
        business_days(demo, LATE_CHECK_DAYS, seed=seed, scenario=demo.scenario)
        outcome = demo.check(on_day(demo))
        if outcome.trigger is not None and outcome.trigger.fired:
            break
    else:
        raise DemoFailure(f"no retrain fired within {LATE_MAX_DAYS} business days of the harm alarm")
    cohort = outcome.cohort
    if cohort is None or cohort.run_id != demo.harm_run:
        raise DemoFailure(
            f"the retrain should fire on the harm alarm's cohort (run {demo.harm_run}): {outcome.line()}"
        )
    detail = json.loads(outcome.trigger.detail)
    demo.retrain_pid, demo.retrain = detail["pid"], detail
    demo.timeline.summary["retrain_day"] = demo.clock.day
    demo.mark(
        "retrain_triggered",
        f"the cohort's labels are back{on_day(demo)}: retrain triggered (event {outcome.trigger.id})",
        f"{cohort.have} of the {cohort.size} records of run {cohort.run_id} labelled "
        f"({demo.clock.day - alarm_day:g} days after the alarm); log {detail['log']}",
        trigger_id=outcome.trigger.id,
        run_id=cohort.run_id,
        labelled=cohort.have,
        kinds=cohort.kinds,
        day=demo.clock.day,
    )


LATE_PHASES: tuple[tuple[str, Callable[[Demo], None]], ...] = (
    ("v1", train_v1),
    ("serve", serve),
    ("normal", late_normal),
    ("harmless", harmless_shift),
    ("harmful", harmful_shift),
    ("labels", labels_come_back),
    ("heal", retrain_serves_v2),
    ("guard", guard_drill),
    ("summary", summarize),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="churnops demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--late-labels",
        action="store_true",
        help="labels come back only after the data set's label horizon, on a simulated clock",
    )
    args = parser.parse_args(argv)
    env = configure_environment(args.late_labels)
    timeline = Timeline(Path(env["STATE_DIR"]) / TIMELINE_FILE)
    demo = Demo(env, timeline)
    demo.logs.mkdir(parents=True, exist_ok=True)
    demo.mark(
        "start",
        "demo start",
        f"state in {demo.state}, service on {env['SERVICE_URL']}",
        service_url=env["SERVICE_URL"],
    )
    try:
        for name, phase in LATE_PHASES if args.late_labels else PHASES:
            timeline.phase = name
            phase(demo)
        timeline.passed = True
        timeline.write()
        print("DEMO PASSED")
        return 0
    except DemoFailure as exc:
        timeline.passed, timeline.failure = False, str(exc)
        demo.mark("failed", "FAILED", str(exc))
        print(timeline.table())
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        demo.stop_all()


if __name__ == "__main__":
    sys.exit(main())
