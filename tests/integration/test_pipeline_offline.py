"""Offline validation of the stack and pipeline files (tools/validate_stack.py), as tests.

The validators are real tools (Compose v2, hadolint, promtool, amtool, jenkins-jobs, groovy); a missing
one skips loudly here and fails under CI (.ci/run installs the Debian ones, the dev extras the rest).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, require_server
from tools import validate_stack as vs


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
        [sys.executable, "-m", "tools.build_dashboards", "--check"],
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
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "API_KEYS",
        "ADMIN_TOKEN",
        "JENKINS_API_TOKEN",
        "JENKINS_JOB_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        assert key in env and env[key] == "", key


# ------------------------------------------------------------------------------ time moves under a build
# Debian's security suite keeps only the newest version of a package: nginx=1.22.1-9+deb12u11 was the
# current one on 2026-12-02 and was gone on 2026-12-07. These tests force such a pin against today's index.
GONE_PIN = "nginx=1.22.1-9+deb12u11"


def test_lint_names_a_pin_that_debian_dropped(tmp_path, monkeypatch) -> None:
    """A recipe with a version today's index lacks fails `make lint` with one line that names the fix."""
    recipe = tmp_path / "old.Dockerfile"
    recipe.write_text(
        "FROM debian:bookworm\nARG NGINX_VERSION=1.22.1-9+deb12u11\n"
        "COPY docker/apt-install.sh /usr/local/sbin/apt-install\n"
        "RUN apt-install nginx=${NGINX_VERSION} wget \\\n && true\nHEALTHCHECK NONE\n"
    )
    monkeypatch.setattr(vs, "DOCKERFILES", [recipe])
    monkeypatch.setattr(vs, "REPO", tmp_path)
    problems = _run(vs.check_apt_recipes)
    assert len(problems) == 1, problems
    assert "nginx=1.22.1-9+deb12u11 is gone from Debian's archive (today 1.22.1-9+deb12u" in problems[0]
    assert "drop the pin" in problems[0]


def test_lint_names_an_unknown_package_and_a_bypass(tmp_path, monkeypatch) -> None:
    recipe = tmp_path / "bad.Dockerfile"
    recipe.write_text(
        "FROM debian:bookworm\nRUN apt-install no-such-package-churnops wget\nRUN apt-get install -y curl\n"
    )
    monkeypatch.setattr(vs, "DOCKERFILES", [recipe])
    monkeypatch.setattr(vs, "REPO", tmp_path)
    problems = _run(vs.check_apt_recipes)
    assert any("no-such-package-churnops is not in bookworm" in p for p in problems), problems
    assert any("apt-get install` without docker/apt-install.sh" in p for p in problems), problems
    assert not any("wget" in p for p in problems), problems


def test_every_recipe_installs_debian_packages_through_apt_install() -> None:
    """No recipe pins a Debian version or calls apt-get install itself; each installs something."""
    installs = {}
    for path in vs.DOCKERFILES:
        wanted, problems = vs.apt_requests(path)
        assert not problems, problems
        assert all(version is None for _, version in wanted), (path.name, wanted)
        installs[path.name] = [name for name, _ in wanted]
    assert "radosgw" in installs["s3.Dockerfile"] and "nginx" in installs["services.Dockerfile"]


def _apt_install(*args: str, **env: str) -> subprocess.CompletedProcess:
    if not shutil.which("apt-get") or os.geteuid() != 0:
        require_server("apt-install runs apt-get update: a Debian host as root")
    return subprocess.run(
        ["sh", str(REPO / "docker" / "apt-install.sh"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "APT_SIMULATE": "1", **env},
        timeout=300,
    )


def test_apt_install_falls_back_to_the_current_version_and_says_so() -> None:
    """In a build, a pin Debian dropped installs today's version with a printed line (APT_SIMULATE: resolve
    and plan the install without changing the host); APT_STRICT_PINS=1 refuses it in one line."""
    out = _apt_install(GONE_PIN)
    assert out.returncode == 0, out.stderr
    assert (
        f"apt-install: {GONE_PIN} is gone from the archive; installing today's 1.22.1-9+deb12u" in out.stderr
    )
    # the pin is dropped and apt resolves what is left (nginx may already be installed on this host)
    assert "apt-install: resolved: nginx\n" in out.stdout, out.stdout
    strict = _apt_install(GONE_PIN, APT_STRICT_PINS="1")
    assert strict.returncode == 1
    assert (
        strict.stderr.strip()
        .splitlines()[-1]
        .startswith(f"apt-install: {GONE_PIN} is gone from the archive (today:")
    )
    unknown = _apt_install("no-such-package-churnops=1.0")
    assert unknown.returncode == 1 and "not in today's index" in unknown.stderr


def test_a_gone_upstream_image_is_refused(tmp_path, monkeypatch) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n  s3:\n    image: minio/minio:RELEASE.2024-12-18T13-15-44Z\n"
        "  init:\n    image: docker.io/minio/mc\n  cache:\n    image: bitnami/redis:7.4\n"
        "  ok:\n    image: postgres:15.13-bookworm\n  s3b:\n    image: localhost:5000/churnops-s3:abc\n"
    )
    monkeypatch.setattr(vs, "COMPOSE_FILE", compose)
    monkeypatch.setattr(vs, "OVERRIDES", [])
    monkeypatch.setattr(vs, "DOCKERFILES", [])
    problems = vs.check_upstream_images()
    assert len(problems) == 3, problems
    assert {p.split(":")[0] for p in problems} == {
        "docker-compose.yml service s3",
        "docker-compose.yml service init",
        "docker-compose.yml service cache",
    }
