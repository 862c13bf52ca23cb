"""`make rollback` and operations/rollback.py: every option checked before the alias moves, and the
Makefile's variables never reach a shell as code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.settings import REPO_ROOT
from monitoring.settings import MonitorSettings
from operations import rollback

BAD = {
    "shell": ["2; touch pwned"],
    "zero": ["0"],
    "negative": ["-1"],
    "fraction": ["1.5"],
    "word": ["v2"],
    "unicode-digit": ["²"],
    "timeout-nan": ["2", "--timeout", "nan"],
    "timeout-negative": ["2", "--timeout", "-5"],
    "timeout-zero": ["2", "--timeout", "0"],
    "timeout-inf": ["2", "--timeout", "inf"],
    "timeout-word": ["2", "--timeout", "soon"],
    "reason-blank": ["2", "--reason", "  "],
}


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_a_bad_option_exits_2_before_anything_moves(argv, monkeypatch, capsys):
    def moved(*_a, **_k):
        raise AssertionError("the registry was touched")

    monkeypatch.setattr(rollback.registry, "connect", moved)
    monkeypatch.setattr(rollback.registry, "rollback", moved)
    with pytest.raises(SystemExit) as exit_:
        rollback.main(argv)
    assert exit_.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_good_options_are_read():
    assert rollback.positive_version("007") == "7"
    assert rollback.positive_seconds("2.5") == 2.5


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0"])
def test_the_rollback_timeout_setting_is_positive_and_finite(value, monkeypatch):
    from core.settings import SettingsError

    monkeypatch.setenv("ROLLBACK_TIMEOUT_SECONDS", value)
    with pytest.raises(SettingsError):
        MonitorSettings.from_env()


def make_rollback(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`make rollback ARGS...` as a person types it (the install step skipped), in `env` only."""
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "rollback", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.mark.parametrize(
    "make_args",
    [
        ["VERSION=2; touch {out}/semicolon"],
        ["VERSION=$(shell touch {out}/make-shell)"],
        ["VERSION=`touch {out}/backtick`"],
        ["VERSION=2", 'ROLLBACK_ARGS=--reason "x"; touch {out}/args'],
        ["VERSION=2", "ROLLBACK_ARGS=$$(touch {out}/dollar)"],
    ],
    ids=["semicolon", "make-shell", "backtick", "args-semicolon", "args-substitution"],
)
def test_make_rollback_passes_variables_without_a_shell(make_args, tmp_path: Path):
    """The values reach operations/rollback.py as arguments (and are refused there): no file is created."""
    marks = tmp_path / "out"
    marks.mkdir()
    out = make_rollback(
        *[a.format(out=marks) for a in make_args],
        env={"HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert list(marks.iterdir()) == [], out.stderr
    assert out.returncode != 0
    assert "error: argument" in out.stderr or "unrecognized arguments" in out.stderr, out.stderr


def test_make_rollback_hands_over_the_arguments_intact(tmp_path: Path):
    """Quoted ROLLBACK_ARGS stay one argument each: a stand-in interpreter records the command line and
    the environment make gives it, and the rollback command's own splitting (`--args-env`) is applied."""
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGS_OUT"\n'
        'printf "%s" "$ROLLBACK_EXTRA_ARGS" > "$ARGS_OUT.env"\n'
    )
    fake.chmod(0o755)
    got = tmp_path / "args"
    out = make_rollback(
        f"PY={fake}",
        "VERSION=3",
        'ROLLBACK_ARGS=--reason "recall dropped; after v4" --timeout 5',
        env={"ARGS_OUT": str(got)},
    )
    assert out.returncode == 0, out.stderr
    argv = got.read_text().splitlines()
    assert argv[:3] == ["-m", "operations", "rollback"]
    env = {"ROLLBACK_EXTRA_ARGS": (tmp_path / "args.env").read_text()}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert rollback.with_env_args(argv[3:]) == [
            "3",
            "--reason",
            "recall dropped; after v4",
            "--timeout",
            "5",
        ]


def test_an_unbalanced_quote_in_rollback_args_stops_before_anything_runs(tmp_path: Path):
    """`make rollback ROLLBACK_ARGS="--reason it's bad"`: one line naming the variable, exit 2, and the
    command never ran (no connection to the registry is even tried: its address is a dead port)."""
    out = make_rollback(
        "ROLLBACK_ARGS=--reason it's bad",
        env={"HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    )
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert lines == ["error: ROLLBACK_EXTRA_ARGS: No closing quotation (nothing was run)"], out.stderr
