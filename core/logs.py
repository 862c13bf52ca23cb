"""The one logging setup of every entry point: `LOG_LEVEL` and `LOG_FORMAT` (core.settings.Settings).

`setup_logging(settings.log_level, settings.log_format)` is called once by each command and server (training's commands, the model
service, the monitor and its trigger and guard, batch scoring):

- the project's packages log at `LOG_LEVEL`; every other library at WARNING and above;
- one handler on the root logger: INFO and below to stdout, WARNING and above to stderr, the stream looked
  up at each record (a caller that swaps `sys.stdout`, pytest's capture or a redirect, gets the lines);
- `LOG_FORMAT=text` (default): a command's own records (`plain=`, e.g. training) as their bare message,
  so a terminal reads like the command's output; a server's records and every library's with time,
  level, process and logger name. `LOG_FORMAT=json`: one JSON object per line (time, level, logger,
  process, message, exception) for a log collector;
- idempotent: a second call (retrain runs the gate's `main`) only sets the level and format again.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# the project's top-level packages: they log at LOG_LEVEL, everyone else at WARNING
PACKAGES = ("core", "training", "model_service", "monitoring", "scoring", "operations", "load_tests")
# libraries that configure a logger of their own (MLflow installs a handler at INFO): held at WARNING
LIBRARIES = ("mlflow", "alembic")
SERVER_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
LIBRARY_FORMAT = "%(levelname)s %(name)s: %(message)s"


class ConsoleHandler(logging.Handler):
    """INFO and below to stdout, WARNING and above to stderr, flushed at every record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


def _within(name: str, package: str | None) -> bool:
    return package is not None and (name == package or name.startswith(package + "."))


class TextFormatter(logging.Formatter):
    """A command's own records (`plain`) as their message; the rest with level and logger name, and with
    time and process when no command owns the terminal (servers)."""

    def __init__(self, plain: str | None) -> None:
        super().__init__(LIBRARY_FORMAT if plain else SERVER_FORMAT)
        self.plain = plain

    def format(self, record: logging.LogRecord) -> str:
        if _within(record.name, self.plain):
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.formatException(record.exc_info)
            return message
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for a log collector."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", *, plain: str | None = None) -> None:
    """Route every record through one console handler; the project's packages at `level`."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, ConsoleHandler)), None)
    if handler is None:
        handler = ConsoleHandler()
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(plain))
    root.setLevel(logging.WARNING)
    for package in PACKAGES:
        logging.getLogger(package).setLevel(level)
    for library in LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
