"""The native stack's rendered configs (operations/native_stack.py): the monitor's webhook token reaches
Alertmanager as a credentials file and the monitor as MONITOR_WEBHOOK_TOKEN, the monitor binds to
loopback, and a STACK_DIR from before the token existed gets one."""

from __future__ import annotations

import yaml

from operations import native_stack as native
from tests.conftest import REPO


def test_webhook_token_reaches_alertmanager_and_monitor(tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    # a STACK_DIR prepared before the webhook token existed
    (tmp_path / "secrets.env").write_text(
        "MLFLOW_DB_PASSWORD=a\nCHURN_DB_PASSWORD=b\nAPI_KEY=c\nADMIN_TOKEN=d\n"
    )
    env = native.settings()
    token = env["MONITOR_WEBHOOK_TOKEN"]
    assert len(token) >= 16
    assert env["ADMIN_TOKEN"] == "d"  # existing secrets are kept
    assert env["MONITOR_HOST"] == "127.0.0.1"
    assert native.settings()["MONITOR_WEBHOOK_TOKEN"] == token  # stable across restarts

    native.render_configs(env)
    am = yaml.safe_load((tmp_path / "alertmanager.yml").read_text())
    hooks = [h for r in am["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks
    for hook in hooks:
        assert hook["url"].startswith("http://127.0.0.1:")
        auth = hook["http_config"]["authorization"]
        assert auth["type"] == "Bearer"
        assert (tmp_path / "webhook_token").samefile(auth["credentials_file"])
    assert (tmp_path / "webhook_token").read_text() == token
    assert (tmp_path / "webhook_token").stat().st_mode & 0o077 == 0


def test_compose_alertmanager_sends_the_token():
    am = yaml.safe_load((REPO / "prometheus" / "alertmanager.yml").read_text())
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    hooks = [h for r in am["receivers"] for h in r.get("webhook_configs", [])]
    for hook in hooks:
        path = hook["http_config"]["authorization"]["credentials_file"]
        assert path in " ".join(compose["services"]["alertmanager"]["entrypoint"])
    assert "MONITOR_WEBHOOK_TOKEN" in compose["services"]["alertmanager"]["environment"]
    assert "MONITOR_WEBHOOK_TOKEN" in compose["services"]["monitor"]["environment"]


def test_a_registry_whose_artifacts_were_in_memory_is_refused_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "PG_VERSION").write_text("15\n")  # a registry, but no artifacts folder
    try:
        native.prepare()
    except SystemExit as exc:
        message = str(exc.code)
    else:
        raise AssertionError("prepare accepted a registry without its artifacts")
    assert "make stack-native-reset" in message and str(tmp_path) in message
    assert native.settings()["MLFLOW_ARTIFACTS_DESTINATION"] == str(tmp_path / "artifacts")


def _free_ports(monkeypatch):
    import socket

    for name in native.PORTS:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            monkeypatch.setenv(f"NATIVE_{name}_PORT", str(s.getsockname()[1]))


def test_reset_deletes_the_stack_dir_but_not_while_it_runs(tmp_path, monkeypatch, capsys):
    import socket

    root = tmp_path / "stack"
    (root / "postgres").mkdir(parents=True)
    monkeypatch.setenv("STACK_DIR", str(root))
    _free_ports(monkeypatch)
    with socket.socket() as listening:  # a stack process still up
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("NATIVE_MLFLOW_PORT", str(listening.getsockname()[1]))
        assert native.main(["reset"]) == 1
        assert root.exists()
        assert "stop the stack first" in capsys.readouterr().err
    assert native.main(["reset"]) == 0
    assert not root.exists()
    assert "deleted" in capsys.readouterr().out


def test_a_stop_asked_for_is_a_clean_exit_and_the_output_is_logged(tmp_path):
    """run_logged (what `up` runs honcho with): SIGINT makes it stop its child and exit 0 although the
    child exits 130 as honcho does; every line goes to the log file too."""
    import signal
    import subprocess
    import sys

    fake_honcho = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(130))\n"
        "print('web.1 | started', flush=True)\n"
        "time.sleep(300)\n"
    )
    log = tmp_path / "stack.log"
    runner = (
        "import sys\n"
        "from operations import native_stack as n\n"
        f"sys.exit(n.run_logged([sys.executable, '-c', {fake_honcho!r}], n.Path({str(log)!r})))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "web.1 | started"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert "web.1 | started" in log.read_text()

    crash = subprocess.run(
        [sys.executable, "-c", runner.replace("time.sleep(300)", "sys.exit(3)")], capture_output=True
    )
    assert crash.returncode == 3  # a process that dies is not a clean stop
