"""Roll the champion back: `churnops rollback [VERSION] [--reason TEXT]` (`make rollback`).

Moves the `champion` alias back to the version it replaced (or to VERSION), records who, when, why, from
and to (registry tags, by core.registry.rollback, and a row of the `rollbacks` table), asks the
service to reload (POST /v1/admin/reload with ADMIN_TOKEN), and waits until GET /v1/model reports the
version: core.rollout, the same path the post-promotion guard (monitoring.guard) rolls back through. Exit 0 when served, 1 when the service does not serve it within ROLLBACK_TIMEOUT_SECONDS,
2 when the rollback is refused (no such version, nothing to roll back to), cannot run, or an option is
invalid (a version that is not a positive integer, a timeout that is not a positive finite number):
options are all checked before the alias moves.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import shlex
import socket
import sys
import time

import psutil
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core import registry, rollout, store
from core.settings import load_or_exit
from monitoring.settings import MonitorSettings


def service_of(settings: MonitorSettings) -> rollout.Service:
    return rollout.Service(settings.service_url, settings.api_key, settings.admin_token)


def served_version(settings: MonitorSettings, timeout: float = 3.0) -> str | None:
    """The version GET /v1/model reports, or None when the service does not answer."""
    return rollout.served_version(service_of(settings), timeout)


def wait_served(
    settings: MonitorSettings, version: str, timeout: float, confirmations: int = 4
) -> tuple[bool, str | None, float]:
    """Until `confirmations` answers in a row (separate connections, so several workers) report `version`."""
    return rollout.wait_served(service_of(settings), version, timeout, confirmations)


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def known_versions(name: str) -> list[str]:
    try:
        found = MlflowClient().search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    return sorted((str(v.version) for v in found), key=lambda v: int(v) if v.isdigit() else 0)


def positive_version(text: str) -> str:
    """A registry version: a positive integer written in digits (checked before anything moves)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (a positive integer)")
    return str(int(text))


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds")
    return value


def non_empty(text: str) -> str:
    text = text.strip()
    if not text or len(text) > 500:
        raise argparse.ArgumentTypeError("must be 1 to 500 characters")
    return text


def with_env_args(argv: list[str]) -> list[str]:
    """`--args-env NAME` (how `make rollback` hands over ROLLBACK_ARGS): the value of environment variable
    NAME split as a shell would split it, without running one (shlex), in place of the option. An
    unbalanced quote stops the command before anything runs: SystemExit(2) with one line."""
    if "--args-env" not in argv:
        return argv
    at = argv.index("--args-env")
    name = argv[at + 1] if at + 1 < len(argv) else ""
    try:
        extra = shlex.split(os.environ.get(name, ""))
    except ValueError as exc:
        print(f"error: {name or '--args-env'}: {exc} (nothing was run)", file=sys.stderr)
        raise SystemExit(2) from None
    return argv[:at] + extra + argv[at + 2 :]


def main(argv: list[str] | None = None) -> int:
    try:
        argv = with_env_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code)
    parser = argparse.ArgumentParser(
        prog="churnops rollback", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "version",
        nargs="?",
        type=positive_version,
        help="version to serve, a positive integer (default: the one the champion replaced)",
    )
    parser.add_argument("--reason", default="manual rollback", type=non_empty, help="why (recorded)")
    parser.add_argument("--by", type=non_empty, help="who (default: user@host)")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        help="seconds to wait for the service, positive and finite (ROLLBACK_TIMEOUT_SECONDS)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="move the alias and record it; do not call the service"
    )
    args = parser.parse_args(argv)
    settings = load_or_exit(MonitorSettings)
    timeout = args.timeout if args.timeout is not None else settings.rollback_timeout
    started = time.monotonic()
    # the process's own start: the seconds Python and the imports (MLflow, pandas) took count too
    process_start = started - (time.time() - psutil.Process().create_time())

    registry.connect(settings.tracking_uri)
    name = settings.model_name
    by = args.by or who()
    if args.version is not None:
        try:
            registry.get_version(name, args.version)
        except registry.RegistryError:
            versions = known_versions(name)
            print(
                f"error: refused: model '{name}' has no version '{args.version}' "
                f"(registered versions: {', '.join(versions) or 'none'})",
                file=sys.stderr,
            )
            return 2
    engine = store.engine_for(settings.database_url)
    # one move of the alias at a time: held while the alias moves and the service follows
    try:
        with rollout.alias_lock(engine, name, by, "rollback", hold_seconds=timeout + 60):
            done = rollout.roll_back(engine, name, args.version, reason=args.reason, by=by)
            print(done.line(name), flush=True)
            moved = time.monotonic()
            if args.no_wait:
                return 0
            ok, detail = rollout.follow(engine, service_of(settings), done, timeout)
    except (registry.RegistryError, rollout.AliasBusy) as exc:
        print(f"error: refused: {exc}", file=sys.stderr)
        return 2
    move = done.move
    if not ok:
        print(f"error: {detail}; the alias is moved, the service has not followed", file=sys.stderr)
        return 1
    print(detail)
    print(
        f"rollback took {time.monotonic() - process_start:.1f} s: {started - process_start:.1f} s starting "
        f"Python and loading MLflow, "
        f"{moved - started:.1f} s moving the alias and recording it, "
        f"{time.monotonic() - moved:.1f} s until the service answered with v{move.to_version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
