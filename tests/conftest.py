"""Shared fixtures.

`embedded_env` points every component at a fresh embedded default (SQLite + local folders) under a
temporary directory; `trained_champion` trains a small model there once per session and promotes it.
Servers: `require_server(reason)` skips loudly on a developer machine and fails under CI (CI=true),
where every server must be available.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from operations.waiting import NotReady, free_port, wait_http

REPO = Path(__file__).resolve().parent.parent
FAST_TRAINING = {"OPTUNA_TRIALS": "2", "CV_FOLDS": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


KINDS = ("unit", "data", "model", "integration")
# what a unit test must not need: a trained model or a real server
HEAVY_FIXTURES = {
    "trained_champion",
    "champion_env",
    "served",
    "postgres_server",
    "s3_server",
    "mlflow_server",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its kind (its folder), so `pytest -m unit` (or `-m "not
    integration"`) selects kinds wherever the tests are run from."""
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        heavy = sorted(HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if kind == "unit" and heavy:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses {heavy}: move it to its kind")


@pytest.fixture(autouse=True)
def _isolate_mlflow_uris():
    """MLflow keeps the tracking and registry URIs in module globals and copies them into os.environ:
    a test that points MLflow at its store would leak it into every later test. Reset both after each."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# MLflow's defaults relative to the working folder: the tracking store `sqlite:///mlflow.db` (MLflow 3) or
# `./mlruns`, the Default experiment's artifacts `./mlruns/0`, `mlflow server`'s `./mlartifacts`.
MLFLOW_DEFAULTS = ("mlruns", "mlflow.db", "mlartifacts")


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


_MLFLOW_DEFAULTS_AT_START = {name: _stat(REPO / name) for name in MLFLOW_DEFAULTS}


@pytest.fixture(autouse=True)
def _no_mlflow_default_store(request: pytest.FixtureRequest):
    """Fails the test after which MLflow's default store or its artifacts appeared (or changed) in the
    repository: some code used MLflow without core.registry.connect / MLFLOW_TRACKING_URI, or logged
    into the Default experiment instead of the one registry.configure returned."""
    yield
    changed = [n for n in MLFLOW_DEFAULTS if _stat(REPO / n) != _MLFLOW_DEFAULTS_AT_START[n]]
    if changed:
        _MLFLOW_DEFAULTS_AT_START.update({n: _stat(REPO / n) for n in changed})  # blamed once
        pytest.fail(
            f"{request.node.nodeid}: MLflow's default store in the repository: {', '.join(changed)}",
            pytrace=False,
        )


# Where the suite may write inside the repository: STATE_DIR and caches. Anything else new is a leak.
ALLOWED_TOP = {".git", ".venv", ".pytest_cache", ".ruff_cache", ".import_linter_cache", ".hypothesis"}
_REPO_BEFORE = pytest.StashKey[set]()


def _repo_paths() -> set[str]:
    state = Path(os.environ.get("STATE_DIR") or "var")
    state = state if state.is_absolute() else REPO / state
    found: set[str] = set()
    for root, dirs, files in os.walk(REPO):
        here = Path(root)
        skip = ALLOWED_TOP if here == REPO else set()
        dirs[:] = [
            d
            for d in dirs
            if d not in skip and d != "__pycache__" and not d.endswith(".egg-info") and here / d != state
        ]
        found.update(str((here / name).relative_to(REPO)) for name in (*dirs, *files))
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_REPO_BEFORE] = _repo_paths()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_REPO_BEFORE, None)
    if before is None:
        return
    new = sorted(_repo_paths() - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"the suite left {len(new)} new path(s) in the repository outside STATE_DIR: "
                + ", ".join(new[:20]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def require_server(reason: str) -> None:
    """A test that cannot get its server: fail in CI, skip loudly elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must have this server: {reason}")
    warnings.warn(f"SKIPPED, server not available: {reason}", stacklevel=2)
    pytest.skip(f"server not available: {reason}")


class LoopbackServer:
    """A stand-in HTTP server: `handler` on a free loopback port (`url`), served by a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr."""

    def log_message(self, *args):
        pass


def embedded_env_vars(root: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(root / "data"),
        "REPORTS_DIR": str(root / "reports"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "DATABASE_URL": f"sqlite:///{root / 'service.db'}",
        **FAST_TRAINING,
    }


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key, value in embedded_env_vars(tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path


def put_back_environ(saved: dict[str, str | None]) -> None:
    """os.environ as `saved` recorded it (None: the variable was unset)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass(frozen=True)
class TrainedStore:
    root: Path
    env: dict[str, str]
    model_name: str
    version: str


@pytest.fixture(scope="session")
def trained_champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedStore]:
    """A real model trained on the real data set (few tuning trials), registered and promoted."""
    from core import registry
    from training import gate, train
    from training.settings import TrainingSettings

    root = tmp_path_factory.mktemp("store")
    env = embedded_env_vars(root)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = TrainingSettings.from_env()
        result = train.train(settings)
        assert gate.main([]) == 0, "the first model must pass the gate on its floors"
        assert (
            str(registry.version_by_alias(settings.model_name, registry.CHAMPION).version) == result.version
        )
    finally:
        put_back_environ(saved)
    yield TrainedStore(root, env, settings.model_name, result.version)


@pytest.fixture
def champion_env(trained_champion: TrainedStore, monkeypatch: pytest.MonkeyPatch) -> TrainedStore:
    """The trained store's settings applied to this test's environment (and MLflow's client)."""
    import mlflow

    for key, value in trained_champion.env.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    return trained_champion


@pytest.fixture(scope="module")
def served(trained_champion: TrainedStore):
    """The champion's sklearn pipeline, its registry metadata and its held-out test split."""
    import mlflow
    import pandas as pd

    from core import registry

    mlflow.set_tracking_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(trained_champion.env["MLFLOW_TRACKING_URI"])
    name, version = trained_champion.model_name, trained_champion.version
    meta = registry.model_metadata(name, version)
    pipe = mlflow.sklearn.load_model(registry.model_uri(name, version))
    mv = registry.get_version(name, version)
    test = pd.read_parquet(
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="data/test.parquet")
    )
    return pipe, meta, test


# --- real servers ---------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL 15 cluster (Debian's postgresql-common tools) on a free loopback port."""

    name: str
    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        import subprocess

        out = subprocess.run(
            [
                "su",
                "postgres",
                "-c",
                f'psql -p {self.port} -h /var/run/postgresql -d {database} -tAc "{sql}"',
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def create_database(self, database: str) -> str:
        self.psql(f"CREATE DATABASE {database}")
        return self.url(database)

    def stop(self) -> None:
        import subprocess

        subprocess.run(
            ["pg_ctlcluster", "15", self.name, "stop", "-m", "fast"], check=True, capture_output=True
        )

    def start(self) -> None:
        from tools import pg_cluster

        pg_cluster.start(self.name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Creates and starts a PostgreSQL cluster for the session; dropped at the end.

    Host connections from loopback are trusted (a test cluster holding no data worth a password).
    """
    from tools import pg_cluster

    if not pg_cluster.installed():
        require_server("PostgreSQL 15 (apt-get install postgresql) is not installed")
    name, port = f"test{os.getpid()}", free_port()
    failed = pg_cluster.create(name, port)
    if failed:
        require_server(failed)
    server = PostgresServer(name, port)
    try:
        server.start()
        yield server
    finally:
        pg_cluster.drop(name)


@dataclass(frozen=True)
class S3Server:
    """moto's S3-compatible server on loopback (stands in for MinIO; objects live in memory)."""

    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"

    def env(self) -> dict[str, str]:
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def make_bucket(self, bucket: str) -> None:
        from minio import Minio

        client = Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
        )
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)


def wait_for_http(url: str, timeout: float = 60.0, process=None) -> bool:
    """True once `url` answers below 500; False after `timeout` or when `process` exits."""
    try:
        wait_http(url, timeout, process, ok=lambda status: status < 500)
    except NotReady:
        return False
    return True


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    import subprocess
    import sys

    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        require_server("moto_server (pip moto[server]) is not installed")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        if not wait_for_http(f"http://127.0.0.1:{port}/", 30, proc):
            require_server(f"moto_server did not answer on port {port}")
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["folder", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path):
    """A core.objects.ObjectStore on a folder, then on moto's S3 server (a fresh bucket, a prefix)."""
    import uuid

    from core.objects import ObjectStore, S3Access

    if request.param == "folder":
        return ObjectStore(str(tmp_path / "objects"))
    server = request.getfixturevalue("s3_server")
    access = S3Access(server.endpoint, server.access_key, server.secret_key)
    return ObjectStore(f"s3://objects-{uuid.uuid4().hex[:12]}/some/prefix", access)


@dataclass
class MlflowServer:
    url: str
    process: object
    log_path: Path


def start_mlflow_server(
    backend_uri: str, artifacts_destination: str, log_dir: Path, extra_env: dict[str, str] | None = None
) -> MlflowServer:
    """A real `mlflow server` process (proxied artifacts, one worker, background jobs off)."""
    import subprocess
    import sys

    port = free_port()
    log_path = log_dir / f"mlflow-{port}.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)
    if not wait_for_http(f"http://127.0.0.1:{port}/health", 120, proc):
        proc.terminate()
        tail = log_path.read_text()[-600:]
        require_server(f"mlflow server did not start on port {port}: {tail}")
    return MlflowServer(f"http://127.0.0.1:{port}", proc, log_path)


def stop_process(process, timeout: float = 20) -> None:
    import subprocess

    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
