"""The champion timeline: `churnops history [--limit N] [--json] [--check]` (`make history`).

Every move of the model's `champion` alias, oldest first (the newest `--limit`, default 100, at most
1000): when, from and to which version, what kind of move (promotion, forced_promotion, rollback,
guard_rollback), who or what made it, the records the moved-to version served until the next move
(the prediction log and its archive, LOG_ARCHIVE_URI), and why (the gate verdict and the retrain's trigger, a rollback's reason, the
guard's figures). It reads the loop's store directly (DATABASE_URL, the `champion_moves` table that
core.rollout writes under the alias lock) and compares its last move with the registry's `champion`
alias and champion_history (core.rollout.reconcile): a disagreement is one line on stderr, and exit 1
with `--check`. `--json`: the moves and the comparison as one JSON document, for machines. Exit 2 with
one line on an invalid option or setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from core import registry, retention, rollout, store
from core.settings import load_or_exit
from monitoring.settings import MonitorSettings
from operations.rollback import with_env_args

MAX_LIMIT = 1000
WHY_WIDTH = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (not argparse's usage block)
        print(f"error: {message} (churnops history --help)", file=sys.stderr)
        raise SystemExit(2)


def bounded_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_LIMIT}")
    return value


def as_json(move: dict[str, Any]) -> dict[str, Any]:
    out = dict(move)
    for key in ("at", "until"):
        out[key] = _iso(out.get(key))
    return out


def _iso(value: datetime | None) -> str | None:
    return None if value is None else store.as_utc(value).isoformat()


def served(move: dict[str, Any]) -> str:
    """The records the moved-to version served, and those other versions logged meanwhile (replicas
    still following the move)."""
    others = {v: n for v, n in move["records_by_version"].items() if v != str(move["to_version"])}
    extra = ", ".join(f"v{v} {n}" for v, n in sorted(others.items()))
    return f"{move['records_served']}" + (f" (+{extra})" if extra else "")


def table(moves: list[dict[str, Any]]) -> str:
    rows = [
        (
            f"{move['at']:%Y-%m-%d %H:%M:%S}Z",
            f"v{move['from_version'] or '-'} -> v{move['to_version']}",
            move["kind"],
            move["by"],
            served(move),
            _cut(move["reason"]),
        )
        for move in moves
    ]
    head = ("time", "move", "kind", "by", "records served", "why")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = [
        "  ".join(f"{c:<{w}}" for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in [head, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _cut(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= WHY_WIDTH else text[: WHY_WIDTH - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    try:
        argv = with_env_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code)
    parser = _Parser(
        prog="churnops history", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--limit", type=bounded_limit, default=100, help=f"the newest N moves, 1 to {MAX_LIMIT} (100)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the timeline and the registry disagree"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        settings = load_or_exit(MonitorSettings)
    except SystemExit as exc:
        return int(exc.code)
    name = settings.model_name
    engine = store.engine_for(settings.database_url)
    moves = store.champion_timeline(engine, name, args.limit, retention.archive_of(settings))
    try:
        registry.connect(settings.tracking_uri)
        verdict: dict[str, Any] = rollout.reconcile(engine, name).as_dict()
    except Exception as exc:  # noqa: BLE001 - the timeline is still worth printing without the registry
        verdict = {
            "agree": None,
            "line": f"not compared with the registry: {type(exc).__name__} (is MLFLOW_TRACKING_URI reachable?)",
        }
    if args.json:
        print(
            json.dumps(
                {"model_name": name, "moves": [as_json(m) for m in moves], "registry": verdict}, indent=2
            )
        )
    else:
        print(table(moves) if moves else f"no move of '{name}' champion recorded yet")
    if verdict["agree"] is not True:
        print(f"warning: {verdict['line']}", file=sys.stderr)
    return 1 if args.check and verdict["agree"] is not True else 0


if __name__ == "__main__":
    sys.exit(main())
