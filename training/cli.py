"""What the command-line entry points of training share: their log output.

Each `main()` calls `setup_logging(settings.log_level)` once. Training's own messages are written as
they are (`%(message)s`), so a terminal shows the same lines as before logging replaced `print`:
information on stdout, warnings and errors (the one `error: ...` line of a failed command) on stderr.
Records of other libraries reach the same handler at WARNING and above, prefixed with their level and
logger name. The streams are looked up at each record, so a caller that swaps `sys.stdout` (pytest's
capture, a redirect) gets the lines.
"""

from __future__ import annotations

import logging
import sys

PACKAGE = "training"
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


class ConsoleFormatter(logging.Formatter):
    """Training's records as their message; anyone else's with level and logger name."""

    def __init__(self) -> None:
        super().__init__(LIBRARY_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.name == PACKAGE or record.name.startswith(PACKAGE + "."):
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self.formatException(record.exc_info)
            return message
        return super().format(record)


def setup_logging(level: str = "INFO") -> None:
    """Route log records to the terminal; training's loggers at `level` (LOG_LEVEL), others at WARNING.

    Idempotent: a second call (retrain runs the gate's `main`) only sets the level again.
    """
    root = logging.getLogger()
    if not any(isinstance(h, ConsoleHandler) for h in root.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(ConsoleFormatter())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger(PACKAGE).setLevel(level)
