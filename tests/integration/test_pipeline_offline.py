"""Offline validation of the stack and pipeline files (compose/validate_stack.py), as tests.

The validators are real tools (Compose v2, hadolint, promtool, amtool, jenkins-jobs, groovy); a missing
one skips loudly here and fails under CI (.ci/run installs the Debian ones, the dev extras the rest).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_server

_spec = importlib.util.spec_from_file_location("validate_stack", REPO / "compose" / "validate_stack.py")
vs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vs)


def _run(check) -> list[str]:
    try:
        return check()
    except vs.ToolMissing as exc:
        require_server(f"validator not installed: {exc}")
        raise AssertionError("unreachable") from exc


@pytest.mark.parametrize("name", list(vs.CHECKS))
def test_stack_file_is_valid(name: str) -> None:
    problems = _run(vs.CHECKS[name])
    assert not problems, "\n".join(problems)


def test_compose_refuses_missing_secrets_and_bad_files(tmp_path) -> None:
    """The validator itself catches errors: a broken compose file fails `config -q`."""
    try:
        binary = vs.tool("docker-compose")
    except vs.ToolMissing as exc:
        require_server(str(exc))
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        "services:\n  web:\n    image: nginx\n    depends_on:\n      db: {condition: service_healthy}\n"
    )
    out = subprocess.run(
        [binary, "-f", str(bad), "config", "-q"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0 and "db" in out.stderr


def test_groovy_check_catches_a_syntax_error(tmp_path) -> None:
    broken = tmp_path / "Jenkinsfile"
    broken.write_text("pipeline {\n  stages {\n    stage('Lint') { steps { sh 'make lint' } }\n")
    problems = _run(lambda: vs.check_groovy_syntax([broken]))
    assert problems and "expecting '}'" in problems[0]


def test_jenkinsfile_stages_are_make_targets() -> None:
    stages = vs.jenkinsfile_stages(REPO / "Jenkinsfile")
    assert list(stages) == ["Lint", "Test", "Train", "Gate", "Build & Push", "Deploy", "Smoke", "Load test"]
    assert {stage: calls[0] for stage, calls in stages.items()} == {
        "Lint": "make lint",
        "Test": "make test",
        "Train": "make train",
        "Gate": "make gate",
        "Build & Push": "make push",
        "Deploy": "make deploy",
        "Smoke": "make smoke",
        "Load test": "make load-test",
    }
    targets = vs.makefile_targets()
    for target in (
        "lint",
        "test",
        "train",
        "gate",
        "images",
        "push",
        "deploy",
        "smoke",
        "load-test",
        "stack-up",
        "stack-down",
        "stack-native",
        "validate-stack",
    ):
        assert target in targets, f"make {target} is missing"


def test_target_check_flags_an_unknown_target(tmp_path, monkeypatch) -> None:
    jf = tmp_path / "Jenkinsfile"
    jf.write_text("pipeline { stages { stage('X') { steps { sh 'make no-such-target' } } } }")
    monkeypatch.setattr(vs, "JENKINSFILES", [jf])
    assert any("no-such-target" in p for p in vs.check_jenkinsfile_targets())


def test_make_lint_runs_the_stack_validators() -> None:
    out = subprocess.run(["make", "-n", "lint"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "validate-stack" in out


def test_dashboards_are_generated_and_parse() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "grafana" / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout
    titles = {json.loads(p.read_text())["title"] for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    assert len(titles) == 4


def test_env_example_keeps_no_secret() -> None:
    env = vs.env_example()
    for key in (
        "POSTGRES_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "API_KEYS",
        "ADMIN_TOKEN",
        "JENKINS_API_TOKEN",
        "JENKINS_JOB_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert key in env and env[key] == "", key
