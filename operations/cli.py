"""`churnops`: the operator's commands, one entry point (`[project.scripts]`; `python -m operations`).

    churnops demo                              # the whole loop on the embedded default (make demo)
    churnops rollback [VERSION] [--reason T]   # champion back, wait until served (make rollback)
    churnops history [--limit N] [--json]      # every champion move: when, who, why (make history)
    churnops retention [--days N] [--dry-run]  # archive and delete the log's old days (make retention)
    churnops simulate --scenario covariate     # traffic to the service (make simulate)
    churnops model-card                        # the champion's measured tables (make model-card)
    churnops bad-model                         # register a deliberately bad version: the guard drill
    churnops native-stack up|reset|env         # the stack's services natively (make stack-native)
    churnops backup [--dir D] [--keep N]       # one dated archive of the whole state (make backup)
    churnops restore ARCHIVE [--force]         # into an empty target, checked first (make restore)

Each command is one module of this package with a `main(argv)` (or `module:function`); `churnops COMMAND --help` lists its options.
The lifecycle packages never import this one (import-linter); it stands on them.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("operations.demo", "the whole loop on the embedded default, with a timeline"),
    "rollback": ("operations.rollback", "move 'champion' back and wait until the service serves it"),
    "history": ("operations.history", "the champion timeline: every move, who, why, records served"),
    "retention": (
        "operations.retention",
        "archive the prediction log's days past LOG_RETENTION_DAYS, delete them",
    ),
    "simulate": ("operations.simulate", "send held-out traffic (optionally drifted) and its labels"),
    "model-card": ("operations.model_card", "rewrite the measured tables of the champion's model card"),
    "bad-model": ("operations.bad_model", "register a deliberately bad model version (the guard drill)"),
    "native-stack": ("operations.native_stack", "the stack's services natively on loopback (honcho)"),
    "backup": ("operations.backup", "one dated archive of the databases, objects and data (make backup)"),
    "restore": ("operations.backup:main_restore", "put an archive back into an empty target (make restore)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: churnops COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"churnops: unknown command {command!r} (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[command][0].partition(":")
    module = importlib.import_module(module_name)  # only the command's own imports
    return getattr(module, function or "main")(rest)


if __name__ == "__main__":
    sys.exit(main())
