"""The whole loop on the embedded default, one command: `make demo` (`python -m scripts.demo`).

Train and promote v1, start the service (granian), normal traffic, a monitor run that raises no alarm,
drifted traffic (covariate shift), a monitor run that detects it, one retrain trigger (local backend),
the retrain on the new labelled data, the gate, v2 promoted and served, more of the same drifted traffic
and a monitor run on v2 that is ok (v2's drift reference is the window it was retrained for: the loop
settles), then a rollback to v1 and v1 served; then a deliberately bad model (labels flipped) forced past
the gate (`training.gate --force`, the audited admin override) and served, normal traffic, and the
post-promotion guard (`monitoring.guard loop`) rolling it back by itself and blocking it. Prints the
seconds from drift onset to v2 serving and from the bad promotion to v1 serving again. Prints a timeline with
timestamps and the time from drift onset to v2 serving; stops what it started; exits non-zero if any
step fails.

State goes to DEMO_DIR (default var/demo, emptied first), so the demo never touches `make train`'s
state. Settings (environment): DEMO_DIR, DEMO_PORT (default: a free port), DEMO_RECORDS (records per
traffic phase, 300), DEMO_RATE (records/s, 150), DEMO_TIMEOUT (seconds for the retrain + reload, 240),
OPTUNA_TRIALS (3), CV_FOLDS (2) and TRAIN_THREADS (1) for both trainings.
"""

from __future__ import annotations

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
from datetime import UTC, datetime
from pathlib import Path

from scripts.local_servers import NotReady, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
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
    def __init__(self) -> None:
        self.t0 = time.time()
        self.events: list[tuple[float, str, str]] = []

    def mark(self, step: str, detail: str = "") -> float:
        now = time.time()
        self.events.append((now, step, detail))
        stamp = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S")
        print(f"[{stamp} +{now - self.t0:6.1f}s] {step}" + (f": {detail}" if detail else ""), flush=True)
        return now

    def table(self) -> str:
        lines = ["", "timeline", "--------"]
        for at, step, _ in self.events:
            lines.append(f"{datetime.fromtimestamp(at, UTC):%H:%M:%S}Z  +{at - self.t0:6.1f}s  {step}")
        return "\n".join(lines)


def configure_environment() -> dict[str, str]:
    state = Path(os.environ.get("DEMO_DIR") or REPO / "var" / "demo").resolve()
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
    os.environ.update(env)
    return env


def run_step(timeline: Timeline, step: str, cmd: list[str], log_file: Path, timeout: float) -> None:
    started = time.time()
    with log_file.open("wb") as out:
        try:
            code = subprocess.call(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DemoFailure(f"{step}: no result within {timeout:.0f} s (log: {log_file})") from exc
    tail = [ln for ln in log_file.read_text(errors="replace").splitlines() if ln.strip()][-1:]
    if code != 0:
        raise DemoFailure(f"{step}: exit {code} (log: {log_file}): {tail[0] if tail else ''}")
    timeline.mark(step, f"{time.time() - started:.1f} s; {tail[0] if tail else ''}")  # the whole last line


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


def main() -> int:
    env = configure_environment()
    state = Path(env["STATE_DIR"])
    logs = state / "logs" / "retrain"
    logs.mkdir(parents=True, exist_ok=True)
    timeline = Timeline()
    timeline.mark("demo start", f"state in {state}, service on {env['SERVICE_URL']}")
    py = sys.executable
    service: subprocess.Popen | None = None
    guard: subprocess.Popen | None = None
    retrain_pid: int | None = None
    records = int(os.environ.get("DEMO_RECORDS") or 300)
    rate = float(os.environ.get("DEMO_RATE") or 150)
    budget = float(os.environ.get("DEMO_TIMEOUT") or 240)
    try:
        # -- 1. v1
        run_step(
            timeline, "v1 trained (make train)", [py, "-m", "training.train"], logs / "train-v1.log", 600
        )
        run_step(
            timeline,
            "v1 gated and promoted (make gate)",
            [py, "-m", "training.gate"],
            logs / "gate-v1.log",
            300,
        )

        # imports after the environment is set: every settings module reads it
        import sqlalchemy as sa

        from core import registry, store
        from core.dataset import load_config
        from monitoring import monitor
        from monitoring.scenarios import Scenario
        from monitoring.settings import MonitorSettings
        from scripts.rollback import served_version, wait_served
        from scripts.simulate import held_out_records, simulate
        from training.settings import TrainingSettings

        msettings = MonitorSettings.from_env()
        tsettings = TrainingSettings.from_env()
        config = load_config(tsettings.dataset_config)

        # -- 2. the service
        service_log = (logs / "service.log").open("wb")
        service = subprocess.Popen(
            [py, "-m", "model_service.server"],
            cwd=REPO,
            stdout=service_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            lambda: service.poll() is not None or served_version(msettings) == "1",
            90,
            "the service to serve v1",
        )
        if service.poll() is not None:
            raise DemoFailure(f"the service exited with {service.returncode} (log: {logs / 'service.log'})")
        timeline.mark("service up, serving v1", f"server pid {service.pid}")

        pool = held_out_records(tsettings, config)
        normal = pool.sample(records, replace=records > len(pool), random_state=1).reset_index(drop=True)
        drifted = pool.sample(records, replace=records > len(pool), random_state=2).reset_index(drop=True)
        url, key = msettings.service_url, msettings.api_key

        def quiet(line: str) -> None:
            timeline.mark("traffic done", line)

        def traffic(frame, seed: int, scenario=None):
            return simulate(
                url,
                key,
                frame,
                config,
                scenario=scenario,
                rate=rate,
                batch=10,
                feedback_delay=1.0,
                seed=seed,
                reference=pool,
                log=quiet,
            )

        def check():
            time.sleep(1.0)  # the service writes its log in batches (<= 0.25 s)
            return monitor.run_once(msettings, config, summary_table=False)

        def mark_check(outcome) -> None:
            timeline.mark(f"monitor run {outcome.run_id}: {outcome.status}", outcome.reason)  # whole verdict

        def gate_verdict(log: Path) -> tuple[list[str], str]:
            lines = log.read_text(errors="replace").splitlines()
            return lines, next((ln for ln in lines if ln.startswith("verdict:")), "no gate verdict")

        # -- 3. normal traffic and a quiet monitor run
        timeline.mark("normal traffic", f"{records} held-out records at {rate:g}/s, labels back after 1 s")
        stats = traffic(normal, seed=1)
        if stats.rejected or stats.accepted < records:
            raise DemoFailure(f"normal traffic: {stats.line()}")
        outcome = check()
        mark_check(outcome)
        if outcome.status != "ok":
            raise DemoFailure(f"the monitor run on normal traffic should raise no alarm: {outcome.line()}")

        # -- 4. drift
        onset = timeline.mark(
            "drift onset", f"{records} records, covariate shift on monthly_charges, tenure (+1 sd)"
        )
        scenario = Scenario("covariate", ("monthly_charges", "tenure"), strength=1.0)
        stats = traffic(drifted, seed=2, scenario=scenario)
        if stats.rejected or stats.accepted < records:
            raise DemoFailure(f"drifted traffic: {stats.line()}")
        outcome = check()
        mark_check(outcome)
        if outcome.status != "drift" or outcome.trigger is None:
            raise DemoFailure(
                f"the monitor run on drifted traffic should alarm and trigger: {outcome.line()}"
            )
        if not outcome.trigger.fired:
            raise DemoFailure(f"the retrain trigger did not fire: {outcome.trigger}")
        detail = json.loads(outcome.trigger.detail)
        retrain_pid = detail["pid"]
        timeline.mark(
            f"retrain triggered (local backend, event {outcome.trigger.id})", f"log {detail['log']}"
        )

        # -- 5. retrain, gate, v2 served
        status_file = Path(detail["status_file"])
        wait_for(
            lambda: status_file.exists() or served_version(msettings) == "2",
            budget,
            "the retrain to finish",
            1.0,
        )
        if status_file.exists():
            code = json.loads(status_file.read_text())["exit_code"]
            lines, gate_line = gate_verdict(Path(detail["log"]))
            timeline.mark("retrain + gate finished", f"exit {code}; {gate_line}")
            if code != 0:
                tail = "\n    ".join(lines[-15:])
                raise DemoFailure(f"the retrain failed (exit {code}, log {detail['log']}):\n    {tail}")
        # every worker must serve v2 before the next traffic phase: 8 answers in a row on fresh connections
        every_worker, seen, _ = wait_served(msettings, "2", 60, confirmations=8)
        if not every_worker:
            raise DemoFailure(
                f"the service did not serve v2 on every worker within 60 s (last answer: v{seen})"
            )
        served_v2 = timeline.mark("v2 served", "picked up by every worker's reload poll")
        onset_to_v2 = served_v2 - onset

        if not status_file.exists():  # v2 is served once promoted; the retrain process ends just after
            wait_for(status_file.exists, 60, "the retrain process to end", 0.5)
            lines, gate_line = gate_verdict(Path(detail["log"]))
            timeline.mark(
                "retrain process ended",
                f"exit {json.loads(status_file.read_text())['exit_code']}; {gate_line}",
            )

        # -- 6. the drift goes on, unchanged: v2 was retrained for it and its drift reference is the
        # window it was retrained for, so the check is ok and no second retrain is needed (the loop settles)
        # other records than the ones v2 was retrained for, with the same drift
        more = pool.sample(records, replace=records > len(pool), random_state=3).reset_index(drop=True)
        stats = traffic(more, seed=3, scenario=scenario)
        again = check()
        timeline.mark(
            f"monitor run {again.run_id} on v2 (the same drift, other records): {again.status}",
            f"{'settled: ' if again.status == 'ok' else ''}{again.reason}",
        )
        if again.status != "ok" or (again.trigger is not None and again.trigger.fired):
            raise DemoFailure(
                f"the check after the heal, on the traffic v2 was retrained for, should be ok: {again.line()}"
            )

        # -- 7. rollback to v1
        run_step(
            timeline,
            "rollback to v1 (scripts/rollback.sh 1)",
            ["bash", "scripts/rollback.sh", "1", "--reason", "demo: rollback drill", "--timeout", "60"],
            logs / "rollback.log",
            120,
        )
        if served_version(msettings) != "1":
            raise DemoFailure("after the rollback the service does not report v1")
        timeline.mark("v1 served again")

        # -- 8. a deliberately bad model forced past the gate; the guard rolls it back by itself
        guard_log = (logs / "guard.log").open("wb")
        guard = subprocess.Popen(
            [py, "-m", "monitoring.guard", "loop"],
            cwd=REPO,
            stdout=guard_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timeline.mark(
            "post-promotion guard started",
            f"a check every {env['GUARD_INTERVAL_SECONDS']} s (pid {guard.pid})",
        )
        run_step(
            timeline,
            "deliberately bad model registered (labels flipped)",
            [py, "-m", "scripts.bad_model"],
            logs / "bad-model.log",
            300,
        )
        bad = (logs / "bad-model.log").read_text().split()[-1]
        run_step(
            timeline,
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
            ],
            logs / "gate-forced.log",
            300,
        )
        # the promotion's recorded time (whole seconds, rounded down: the figure errs on the long side)
        forced_at = datetime.fromisoformat(
            registry.champion_history(msettings.model_name)[-1]["at"]
        ).timestamp()
        wait_for(lambda: served_version(msettings) == bad, 60, f"the service to serve the forced v{bad}")
        timeline.mark(f"v{bad} served (bad)", "normal traffic, labels back after 1 s; the guard watches")
        sent = threading.Thread(target=traffic, args=(normal, 4), daemon=True)
        sent.start()

        def guard_rollback():
            """The guard's audit row for rolling the bad version back (None until there is one)."""
            with store.engine_for(msettings.database_url).connect() as conn:
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

        # one answer of v1 proves nothing: a worker that has not yet reloaded v3 still answers v1. So
        # first the guard's own audit row, then v1 from every worker (answers in a row)
        wait_for(
            lambda: guard.poll() is not None or guard_rollback() is not None,
            max(60.0, budget / 2),
            "the guard to roll the bad model back",
        )
        if guard.poll() is not None:
            raise DemoFailure(f"the guard exited with {guard.returncode} (log: {logs / 'guard.log'})")
        every_worker, seen, _ = wait_served(msettings, "1", 60, confirmations=8)
        if not every_worker:
            raise DemoFailure(f"the guard rolled back, but the service still answers v{seen}")
        healed = timeline.mark("v1 served again: rolled back by the guard")
        bad_to_good = healed - forced_at
        sent.join(timeout=30)
        row = guard_rollback()
        timeline.mark(
            f"guard's audit: rollback {row['id']} v{row['from_version']} -> v{row['to_version']} by guard",
            f"{row['reason']}; v{bad} blocked from promotion until a person lifts it",
        )

        with store.engine_for(msettings.database_url).connect() as conn:
            n_runs = conn.execute(sa.select(sa.func.count()).select_from(store.monitoring_runs)).scalar()
            events = dict(
                conn.execute(
                    sa.select(store.trigger_events.c.status, sa.func.count()).group_by(
                        store.trigger_events.c.status
                    )
                ).all()
            )
        total = time.time() - timeline.t0
        print(timeline.table())
        print(f"\ndrift onset -> v2 serving: {onset_to_v2:.1f} s")
        print(f"bad model forced -> good model serving again (the guard, by itself): {bad_to_good:.1f} s")
        print(
            f"demo total: {total:.1f} s; {n_runs} monitoring runs; retrain trigger decisions: "
            + ", ".join(f"{events[status]} {TRIGGER_WORDS.get(status, status)}" for status in ordered(events))
            + f"; state in {state}"
        )
        print("DEMO PASSED")
        return 0
    except DemoFailure as exc:
        timeline.mark("FAILED", str(exc))
        print(timeline.table())
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if retrain_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(retrain_pid, signal.SIGTERM)  # still running only when the demo failed
        stop(guard, 20)
        if stop(service, 40):
            print(f"service stopped (exit {service.returncode})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
