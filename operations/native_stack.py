"""The stack's services natively on loopback, run by honcho from the repository's Procfile.

    python -m operations.native_stack up        # prepare STACK_DIR, then honcho start (Ctrl-C / SIGTERM stops all)
    python -m operations.native_stack env       # print the settings (KEY=value) the Procfile's processes get
    python -m operations.native_stack prepare   # only prepare STACK_DIR (PostgreSQL cluster, configs, env file)
    python -m operations.native_stack reset     # delete STACK_DIR (the stack must be stopped): a fresh start

Same entry points and the same settings names as compose/docker-compose.yml; only the addresses
differ (127.0.0.1 and the ports below instead of Compose service names):

| process      | what                                                 | port (env)                  |
|--------------|------------------------------------------------------|-----------------------------|
| postgres     | PostgreSQL 15 (Debian), databases mlflow and churn   | NATIVE_PG_PORT 55432        |
| s3           | Ceph RGW (docker/s3/entrypoint.sh, Debian packages)  | NATIVE_S3_PORT 59000        |
|              | mon, mgr, one OSD on a file in STACK_DIR/s3 (reports)| NATIVE_S3_MON_PORT 53300    |
| mlflow       | mlflow server: PostgreSQL backend, proxied artifacts | NATIVE_MLFLOW_PORT 55000    |
|              | (kept on disk in STACK_DIR/artifacts)                |                             |
| service      | python -m model_service.server (granian, champion)  | NATIVE_SERVICE_PORT 58000   |
| monitor      | python -m monitoring.monitor loop (+ POST /alerts)   | NATIVE_MONITOR_PORT 59108   |
| prometheus   | Prometheus (Debian) with prometheus/rules            | NATIVE_PROMETHEUS_PORT 59090|
| alertmanager | Alertmanager (Debian), webhook to the monitor        | NATIVE_ALERTMANAGER_PORT 59093|

State (database files, MLflow artifacts, TSDB, configs, secrets, logs/stack.log) lives in STACK_DIR
(default var/stack), so a restarted stack serves what it served before; the monitor's HTML reports
(s3://monitoring) are kept by the S3 server in STACK_DIR/s3. Passwords and the S3 keys are generated
there on first use, never kept in the repository.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PORTS = {
    "PG": 55432,
    "S3": 59000,
    "S3_MON": 53300,
    "MLFLOW": 55000,
    "SERVICE": 58000,
    "MONITOR": 59108,
    "PROMETHEUS": 59090,
    "ALERTMANAGER": 59093,
}
BUCKETS = ("mlflow", "monitoring")
SECRETS = (
    "MLFLOW_DB_PASSWORD",
    "CHURN_DB_PASSWORD",
    "API_KEY",
    "ADMIN_TOKEN",
    "MONITOR_WEBHOOK_TOKEN",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)


def stack_dir() -> Path:
    path = Path(os.environ.get("STACK_DIR") or REPO / "var" / "stack")
    return path if path.is_absolute() else REPO / path


def port(name: str) -> int:
    return int(os.environ.get(f"NATIVE_{name}_PORT") or PORTS[name])


def _secrets(root: Path) -> dict[str, str]:
    path = root / "secrets.env"
    values = dict(line.split("=", 1) for line in path.read_text().split()) if path.exists() else {}
    missing = [k for k in SECRETS if k not in values]
    if missing:  # first use, or a STACK_DIR from before a secret was added
        values.update({k: secrets.token_urlsafe(18) for k in missing})
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
    return values


def settings() -> dict[str, str]:
    """Every variable the Procfile's processes read (the names of .env.example / the compose file)."""
    root = stack_dir()
    sec = _secrets(root)
    pg = f"127.0.0.1:{port('PG')}"
    s3 = f"http://127.0.0.1:{port('S3')}"
    env = {
        "STACK_DIR": str(root),
        "PGDATA": str(root / "postgres"),
        **{f"NATIVE_{k}_PORT": str(port(k)) for k in PORTS},
        # MLflow server (proxied artifacts to the S3 server: its clients need no S3 credentials)
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://mlflow:{sec['MLFLOW_DB_PASSWORD']}@{pg}/mlflow",
        # on disk next to the PostgreSQL registry: both survive a restart
        "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "AWS_ACCESS_KEY_ID": sec["S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": sec["S3_SECRET_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
        # the S3 server (docker/s3/entrypoint.sh, the image's entry point, run here as a process)
        "S3_DATA_DIR": str(root / "s3"),
        "S3_PORT": str(port("S3")),
        "S3_MON_PORT": str(port("S3_MON")),
        "S3_ACCESS_KEY": sec["S3_ACCESS_KEY"],
        "S3_SECRET_KEY": sec["S3_SECRET_KEY"],
        "S3_DISK_GB": os.environ.get("S3_DISK_GB", "8"),
        # clients
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port('MLFLOW')}",
        "MODEL_NAME": os.environ.get("MODEL_NAME", "telco-churn"),
        "DATABASE_URL": f"postgresql+psycopg2://churn:{sec['CHURN_DB_PASSWORD']}@{pg}/churn",
        # model service
        "HOST": "127.0.0.1",  # PORT: set on the Procfile line (honcho gives every process its own PORT)
        "API_KEYS": sec["API_KEY"],
        "ADMIN_TOKEN": sec["ADMIN_TOKEN"],
        "AUTH_ENABLED": "true",
        "RELOAD_INTERVAL_SECONDS": os.environ.get("RELOAD_INTERVAL_SECONDS", "3"),
        "MAX_BATCH_SIZE": "1000",
        "SERVICE_WORKERS": os.environ.get("SERVICE_WORKERS", "2"),
        "SPOOL_DIR": str(root / "spool"),
        # monitor
        "MONITOR_INTERVAL_SECONDS": os.environ.get("MONITOR_INTERVAL_SECONDS", "300"),
        "MONITOR_HOST": "127.0.0.1",
        "MONITOR_METRICS_PORT": str(port("MONITOR")),
        "MONITOR_WEBHOOK_TOKEN": sec["MONITOR_WEBHOOK_TOKEN"],
        "MONITOR_REPORTS_URI": "s3://monitoring/reports",
        "S3_ENDPOINT_URL": s3,
        "RETRAIN_TRIGGER": os.environ.get("RETRAIN_TRIGGER", "log"),
        "SERVICE_URL": f"http://127.0.0.1:{port('SERVICE')}",
        # training (make train / gate against this stack)
        "DATA_DIR": str(root / "data"),
        "REPORTS_DIR": str(root / "reports"),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    for key in (
        "MONITOR_MIN_WINDOW",
        "MONITOR_WINDOW_SIZE",
        "MONITOR_WINDOW_MINUTES",
        "QUALITY_MIN_LABELLED",
        "TRIGGER_COOLDOWN_SECONDS",
        "TRIGGER_DEDUPE_SECONDS",
        "OPTUNA_TRIALS",
        "CV_FOLDS",
    ):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


# ------------------------------------------------------------------------------------------ prepare


def _pg_run(cmd: list[str]) -> None:
    out = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"stack-native: {' '.join(cmd[:1])} failed: {out.stdout}{out.stderr}")


def _as_postgres(cmd: list[str]) -> list[str]:
    """postgres refuses to run as root: as root, run it as the Debian 'postgres' user."""
    if os.geteuid() != 0:
        return cmd
    return [
        "su",
        "postgres",
        "-s",
        "/bin/sh",
        "-c",
        " ".join(c if c == "exec" else shlex.quote(c) for c in cmd),
    ]


def prepare_postgres(env: dict[str, str]) -> None:
    data = Path(env["PGDATA"])
    if (data / "PG_VERSION").exists():
        return
    if not (PG_BIN / "initdb").exists():
        raise SystemExit("PostgreSQL 15 is not installed: apt-get install postgresql")
    data.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    data.chmod(0o700)
    _pg_run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
        ]
    )
    # start once on a private socket to create the roles and databases, then stop
    sock = str(data)
    _pg_run(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "setup.log"),
            "-w",
            "-o",
            f"-p {env['NATIVE_PG_PORT']} -k {sock} -c listen_addresses=''",
            "start",
        ]
    )
    try:
        sec = _secrets(stack_dir())
        sql = (
            f"CREATE ROLE mlflow LOGIN PASSWORD '{sec['MLFLOW_DB_PASSWORD']}'; CREATE DATABASE mlflow OWNER mlflow;"
            f" CREATE ROLE churn LOGIN PASSWORD '{sec['CHURN_DB_PASSWORD']}'; CREATE DATABASE churn OWNER churn;"
        )
        for statement in sql.split(";"):
            if statement.strip():
                _pg_run(
                    [
                        str(PG_BIN / "psql"),
                        "-h",
                        sock,
                        "-p",
                        env["NATIVE_PG_PORT"],
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-c",
                        statement.strip(),
                    ]
                )
    finally:
        _pg_run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"])


def render_configs(env: dict[str, str]) -> None:
    """prometheus/*.yml with loopback targets (and a faster cadence, for tests and demos)."""
    root = Path(env["STACK_DIR"])
    prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    interval = os.environ.get("NATIVE_SCRAPE_INTERVAL", "5s")
    prom["global"].update({"scrape_interval": interval, "evaluation_interval": interval})
    prom["rule_files"] = [str(REPO / "prometheus" / "rules" / "*.yml")]
    prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        f"127.0.0.1:{env['NATIVE_ALERTMANAGER_PORT']}"
    ]
    targets = {
        "model-service": f"127.0.0.1:{env['NATIVE_SERVICE_PORT']}",
        "monitor": f"127.0.0.1:{env['NATIVE_MONITOR_PORT']}",
        "mlflow": f"127.0.0.1:{env['NATIVE_MLFLOW_PORT']}",
        "prometheus": f"127.0.0.1:{env['NATIVE_PROMETHEUS_PORT']}",
        "alertmanager": f"127.0.0.1:{env['NATIVE_ALERTMANAGER_PORT']}",
    }
    for job in prom["scrape_configs"]:
        job.pop("dns_sd_configs", None)  # one replica natively: a static target
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (root / "prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))

    token_file = root / "webhook_token"
    token_file.write_text(env["MONITOR_WEBHOOK_TOKEN"])
    token_file.chmod(0o600)
    am = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{env['NATIVE_MONITOR_PORT']}/alerts"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    am["route"].update({"group_wait": "1s", "group_interval": "5s"})
    for route in am["route"].get("routes", []):
        route["group_wait"] = "1s"
    (root / "alertmanager.yml").write_text(yaml.safe_dump(am, sort_keys=False))


STALE_REGISTRY = """stack-native: {root} holds a model registry (PostgreSQL) whose artifacts are gone
(they were kept in moto_server's memory before the stack kept them in {root}/artifacts). The service
could not load any model from it. Start afresh: make stack-native-reset (deletes {root}), then
make stack-native and train again (docs/runbook.md, 'No champion yet')."""


CEPH = ("ceph-mon", "ceph-mgr", "ceph-osd", "radosgw", "ceph-authtool", "monmaptool")


def prepare() -> dict[str, str]:
    root = stack_dir()
    root.mkdir(parents=True, exist_ok=True)
    if not all(shutil.which(tool) or Path("/usr/bin", tool).exists() for tool in CEPH):
        raise SystemExit(
            "Ceph is not installed (the S3 server): apt-get install --no-install-recommends "
            "ceph-mon ceph-mgr ceph-osd radosgw ceph-common"
        )
    if (root / "postgres" / "PG_VERSION").exists() and not (root / "artifacts").is_dir():
        raise SystemExit(STALE_REGISTRY.format(root=root))
    for sub in (
        "prometheus-data",
        "alertmanager-data",
        "prometheus-multiproc",
        "spool",
        "data",
        "reports",
        "logs",
        "artifacts",
        "s3",
    ):
        (root / sub).mkdir(exist_ok=True)
    env = settings()
    prepare_postgres(env)
    render_configs(env)
    (root / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    (root / "stack.env").chmod(0o600)
    return env


# ------------------------------------------------------------------------------------------ helpers


def wait_tcp(port_: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port_), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on 127.0.0.1:{port_} after {timeout:.0f}s") from None
            time.sleep(0.3)


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {timeout:.0f}s")
        time.sleep(0.5)


def make_buckets(timeout: float = 120) -> None:
    """The buckets, once the S3 server answers with the stack's key (its port opens a little before)."""
    import boto3
    import botocore.exceptions

    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except (botocore.exceptions.ClientError, botocore.exceptions.EndpointConnectionError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"the S3 server did not accept the stack's key within {timeout:.0f}s: {exc}"
                ) from exc
            time.sleep(1)
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def run_postgres() -> int:
    """PostgreSQL in the foreground for honcho, as the 'postgres' user when root (it refuses root).

    honcho stops processes with SIGTERM, which PostgreSQL takes as a "smart" shutdown that waits for
    every client; it is passed on as SIGINT (fast shutdown: clients cut, data flushed) instead.
    """
    import pwd
    import signal

    env = settings()
    cmd = [
        str(PG_BIN / "postgres"),
        "-D",
        env["PGDATA"],
        "-p",
        env["NATIVE_PG_PORT"],
        "-k",
        env["PGDATA"],
        "-c",
        "listen_addresses=127.0.0.1",
    ]

    def drop_root() -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.setgid(user.pw_gid)
            os.initgroups("postgres", user.pw_gid)
            os.setuid(user.pw_uid)

    child = subprocess.Popen(cmd, preexec_fn=drop_root)  # noqa: PLW1509 - setuid before exec is the point
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: child.send_signal(signal.SIGINT))
    return child.wait()


def run_logged(cmd: list[str], log_path: Path) -> int:
    """Run honcho, its output to the terminal and appended to log_path. A stop asked for by SIGINT
    (Ctrl-C) or SIGTERM is a clean exit (0), not honcho's 130/143; a process that dies keeps its code."""
    import signal

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # honcho's lines reach the log as they come
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    asked = []

    def stop(signum: int, _frame: object) -> None:
        asked.append(signum)
        child.send_signal(signum)  # honcho stops every process (a second signal is ignored by it)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    with log_path.open("ab") as log:
        log.write(f"--- stack-native up {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        for line in child.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
    rc = child.wait()
    return 0 if asked and rc in (0, 130, 143) else rc


def reset() -> int:
    """Delete STACK_DIR, loudly; refused while a stack process still listens on its ports."""
    root = stack_dir()
    busy = []
    for name in PORTS:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port(name))) == 0:
                busy.append(f"{name} ({port(name)})")
    if busy:
        print(
            f"stack-native-reset: stop the stack first; still listening: {', '.join(busy)}", file=sys.stderr
        )
        return 1
    if not root.exists():
        print(f"stack-native-reset: {root} does not exist; nothing to delete")
        return 0
    shutil.rmtree(root)
    print(
        f"stack-native-reset: deleted {root} (registry, artifacts, database, metrics, secrets); "
        "the next make stack-native starts empty: train and gate a model"
    )
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    if command == "env":
        for key, value in settings().items():
            print(f"{key}={value}")
        return 0
    if command == "prepare":
        prepare()
        return 0
    if command == "wait-tcp":
        for p in argv[1:]:
            wait_tcp(int(p))
        return 0
    if command == "wait-http":
        for url in argv[1:]:
            wait_http(url)
        return 0
    if command == "run-postgres":
        return run_postgres()
    if command == "make-buckets":
        make_buckets()
        return 0
    if command == "reset":
        return reset()
    if command == "up":
        env = prepare()
        honcho = Path(sys.executable).with_name("honcho")
        root = Path(env["STACK_DIR"])
        print(
            f"stack-native: state in {root}; MLflow {env['MLFLOW_TRACKING_URI']}, service {env['SERVICE_URL']}, "
            f"Prometheus http://127.0.0.1:{env['NATIVE_PROMETHEUS_PORT']}; log {root / 'logs' / 'stack.log'}",
            flush=True,
        )
        cmd = [str(honcho), "-d", str(REPO), "-f", str(REPO / "Procfile"), "-e", str(root / "stack.env")]
        return run_logged([*cmd, "start", *argv[1:]], root / "logs" / "stack.log")
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
