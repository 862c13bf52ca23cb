"""Shadow scoring: the challenger scores a share of live requests beside the champion, off the request
path, without changing any answer.

`SHADOW_SHARE` (0 to 1, default 0: off) of predict requests are handed, after the champion has answered,
to one background thread per worker: it scores the same validated records with the `SHADOW_ALIAS`
version (default `challenger`, loaded and followed like the champion, every RELOAD_INTERVAL_SECONDS;
nothing is shadowed while it is the champion itself or absent) and writes each score with both versions
to the `shadow_predictions` table. The answer, the prediction log and the request's latency are the
champion's alone; a full queue drops shadow work (counted), a failing challenger is counted and
skipped. The gate reads the table back (`core.store.shadow_pairs`): once enough shadowed records have
feedback labels it compares the challenger's live quality with the champion's on the same records.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np

from core import registry, store
from model_service.metrics import SHADOW_RECORDS
from model_service.request_schema import Validated
from model_service.served_model import LoadedModel, build_loaded_model
from model_service.settings import ServiceSettings

log = logging.getLogger("model_service.shadow")


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    champion_version: str
    batch: Validated
    at: Any


class ShadowScorer:
    def __init__(self, settings: ServiceSettings, queue_size: int = 1000, rng: random.Random | None = None):
        self.settings = settings
        self.share = settings.shadow_share
        self.model: LoadedModel | None = None
        self.champion_version: str | None = None
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._rng = rng or random.Random()
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        return self.share > 0

    # ---- the challenger
    def check(self, champion_version: str | None) -> None:
        """Follow the shadow alias: load the version it names when it differs from the champion."""
        self.champion_version = champion_version
        name = self.settings.model_name
        try:
            mv = registry.version_by_alias(name, self.settings.shadow_alias)
        except Exception as exc:  # noqa: BLE001 - the registry unreachable: keep what is loaded
            log.debug("shadow: registry not readable: %s", exc)
            return
        if mv is None or str(mv.version) == str(champion_version):
            self.model = None
            return
        version = str(mv.version)
        if self.model is not None and self.model.version == version:
            return
        try:
            metadata = registry.model_metadata(name, version)
            pipeline = mlflow.sklearn.load_model(registry.model_uri(name, version))
            self.model = build_loaded_model(
                name,
                version,
                self.settings.shadow_alias,
                pipeline,
                metadata,
                mv.run_id,
                self.settings.fast_path,
            )
            log.info("shadow: scoring %.0f%% of requests with %s v%s", self.share * 100, name, version)
        except Exception as exc:  # noqa: BLE001 - a challenger that does not load is not shadowed
            self.model = None
            log.warning("shadow: %s v%s does not load: %s", name, version, exc)

    # ---- the request path: one random draw and, for the chosen share, one enqueue
    def offer(self, request_id: str, champion_version: str, batch: Validated, at) -> bool:
        model = self.model
        if model is None or model.version == champion_version or self._rng.random() >= self.share:
            return False
        try:
            self._queue.put_nowait(ShadowJob(request_id, champion_version, batch, at))
        except queue.Full:
            SHADOW_RECORDS.labels(model.version, "dropped").inc(batch.n)
            return False
        return True

    # ---- the background thread
    def score(self, job: ShadowJob) -> list[dict[str, Any]]:
        model = self.model
        if model is None:
            return []
        try:
            scores = np.asarray(model.predict(job.batch), dtype=float)
        except Exception as exc:  # noqa: BLE001 - counted; the champion's answer is already out
            SHADOW_RECORDS.labels(model.version, "failed").inc(job.batch.n)
            log.warning("shadow: v%s failed to score: %s", model.version, exc)
            return []
        SHADOW_RECORDS.labels(model.version, "scored").inc(job.batch.n)
        return [
            {
                "request_id": job.request_id,
                "record_index": i,
                "created_at": job.at,
                "model_name": model.name,
                "champion_version": job.champion_version,
                "shadow_version": model.version,
                "score": float(s),
            }
            for i, s in enumerate(scores.tolist())
        ]

    def _run(self) -> None:
        engine = store.engine_for(self.settings.database_url)
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                jobs = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(jobs) < 100:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for job in jobs for row in self.score(job)]
            if not rows:
                continue
            try:
                with engine.begin() as conn:
                    conn.execute(store.shadow_predictions.insert(), rows)
            except Exception as exc:  # noqa: BLE001 - shadow records are best effort
                log.warning("shadow: %d records not written: %s", len(rows), exc)

    def _follow(self, manager) -> None:
        while not self._stop.wait(self.settings.reload_interval):
            current = manager.current
            self.check(current.version if current else None)

    def start(self, manager) -> None:
        if not self.enabled:
            return
        current = manager.current
        self.check(current.version if current else None)
        for target, args, name in (
            (self._run, (), "shadow-writer"),
            (self._follow, (manager,), "shadow-follow"),
        ):
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Score and write what is queued (within `timeout`), then end the threads."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
