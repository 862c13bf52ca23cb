"""What one app instance owns (settings, the model manager, the prediction log, the feedback store), kept
in `app.extensions["model_service"]` and read by the views through `services()`; `shutdown_all` hands
every instance's spool segment to the writer process (model_service/server.py's workers on SIGTERM, and
atexit)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from flask import current_app

from model_service.bodies import BodyReader
from model_service.feedback import FeedbackStore
from model_service.prediction_log.writer import PredictionLog
from model_service.served_model import ModelManager
from model_service.settings import ServiceSettings
from model_service.shadow import ShadowScorer

log = logging.getLogger("model_service")
EXTENSION = "model_service"
PING_CACHE_SECONDS = 2.0

_STATES: list[ServiceState] = []
_STATES_LOCK = threading.Lock()


@dataclass
class ServiceState:
    settings: ServiceSettings
    manager: ModelManager
    plog: PredictionLog
    feedback: FeedbackStore
    shadow: ShadowScorer | None = None
    bodies: BodyReader | None = None
    _closed: bool = field(default=False, init=False)
    _ping_cache: tuple[float, bool] = field(default=(0.0, True), init=False)

    def db_reachable(self) -> bool:
        """The prediction log database answers (a ping at most every PING_CACHE_SECONDS)."""
        at, ok = self._ping_cache
        if time.monotonic() - at > PING_CACHE_SECONDS:
            ok = self.plog.ping()
            self._ping_cache = (time.monotonic(), ok)
        return ok

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.manager.stop()
        if self.shadow is not None:
            self.shadow.stop()
        self.plog.close(timeout=max(1.0, self.settings.graceful_timeout - 5))
        log.info("model service worker %d stopped; spool segment handed to the writer", os.getpid())


def track(state: ServiceState) -> None:
    """Register an instance for `shutdown_all`."""
    with _STATES_LOCK:
        _STATES.append(state)


def shutdown_all() -> None:
    with _STATES_LOCK:
        states = list(_STATES)
    for state in states:
        state.shutdown()


def services() -> ServiceState:
    """The state of the app handling the current request."""
    return current_app.extensions[EXTENSION]
