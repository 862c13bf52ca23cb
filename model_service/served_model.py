"""The served model and its hot reload.

`ModelManager` holds the `LoadedModel` each request uses. A request reads `manager.current` once and
uses that object to the end, so a swap never changes a model under a running request. A reload loads
the new version *fully* (artifact, metadata, schemas, fast path, a check of the fast path against the
pipeline, a warm-up prediction) before one reference assignment swaps it in. If anything fails, the
old model keeps serving; the error goes to the log, `/ready` (`reload_error`) and the metrics
(`model_service_reloads_total{result="failure"}`, `model_service_reload_failing`). No champion at all
(nothing promoted yet) is a state, not a failure: one log line, `/ready` says "no champion yet", and
`model_service_champion_missing` is 1.

What triggers a reload, in every worker: a background check of the registry alias every
RELOAD_INTERVAL_SECONDS, and `POST /v1/admin/reload` (the worker that receives it reloads at once and
touches a trigger file the other workers' threads notice within half a second). A version that failed
to load is retried at most every `FAILED_RETRY_SECONDS`, not on every check.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from core import registry
from core.fastpath import (
    TOLERANCE,
    CompiledPredictor,
    CompileError,
    PipelinePredictor,
    compile_pipeline,
    synthetic_records,
)
from core.feature_schema import FieldSpec, Validated, field_specs
from model_service import metrics as m
from model_service.explain import Explainer, build_explainer
from model_service.heap import settle_heap
from model_service.request_schema import RecordValidator, record_schema
from model_service.settings import ServiceSettings

log = logging.getLogger("model_service.served_model")
FAILED_RETRY_SECONDS = 60.0


@dataclass
class LoadedModel:
    name: str
    version: str
    alias: str
    metadata: dict[str, Any]
    pipeline: Any
    specs: list[FieldSpec]
    validator: RecordValidator
    predictor: CompiledPredictor | PipelinePredictor
    threshold: float
    run_id: str | None = None
    fast_path_note: str = ""
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    explainer: Explainer | None = None  # None: /v1/explain answers 501 (explain_note says why)
    explain_note: str = ""

    def predict(self, batch: Validated) -> np.ndarray:
        return self.predictor.predict(batch)

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return (scores >= self.threshold).astype(np.int64)

    @property
    def record_schema(self):
        return record_schema(self.specs)

    def describe(self) -> dict[str, Any]:
        meta = self.metadata
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "algorithm": meta.get("algorithm"),
            "trained_at": meta.get("trained_at"),
            "threshold": self.threshold,
            "test_metrics": meta.get("test_metrics") or {},
            "feature_schema": meta.get("feature_schema") or [],
            "git_commit": meta.get("git_commit"),
            "data_hash": meta.get("data_hash"),
            "dataset": meta.get("dataset"),
            "target": meta.get("target"),
            "why": meta.get("why") or {},
            "predictor": self.predictor.kind,
            "fast_path_note": self.fast_path_note,
            "loaded_at": self.loaded_at,
            "feature_importance": importance_list(meta.get("feature_importance")),
            "explanation_method": self.explainer.method if self.explainer else None,
            "explanation_note": self.explain_note,
        }


def importance_list(raw: Any) -> list[dict[str, Any]]:
    """The training-time global importance per input feature, largest first (ties by name)."""
    if not isinstance(raw, dict):
        return []
    items = []
    for name, value in raw.items():
        try:
            items.append((str(name), float(value)))
        except (TypeError, ValueError):
            continue
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return [{"feature": name, "importance": value} for name, value in items]


def build_loaded_model(
    name: str,
    version: str,
    alias: str,
    pipeline: Any,
    metadata: dict[str, Any],
    run_id: str | None = None,
    fast_path: bool = True,
) -> LoadedModel:
    """Everything a version needs to serve, checked; raises on anything unusable."""
    specs = field_specs(metadata.get("feature_schema"))
    if "threshold" not in metadata:
        raise ValueError("model metadata has no threshold")
    threshold = float(metadata["threshold"])
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"model threshold {threshold} is not a probability")
    validator = RecordValidator(specs)
    fallback = PipelinePredictor(pipeline, specs)
    probe = validator.validate(synthetic_records(specs, 256))
    predictor: CompiledPredictor | PipelinePredictor = fallback
    note = "fast path disabled (FAST_PATH=false)"
    reference = fallback.predict(probe)  # also proves the pipeline itself scores the schema's records
    if reference.shape != (probe.n,) or not np.isfinite(reference).all():
        raise ValueError("the pipeline returns no finite probability per record")
    if fast_path:
        try:
            compiled = compile_pipeline(pipeline, specs)
            diff = float(np.max(np.abs(compiled.predict(probe) - reference)))
            if diff > TOLERANCE:
                note = f"fast path differs from the pipeline by {diff:.2e} on synthetic records: not used"
                log.warning("model %s v%s: %s", name, version, note)
            else:
                predictor = compiled
                note = f"numpy fast path ({compiled.algorithm}), max |diff| {diff:.1e} vs pipeline on 256 records"
        except CompileError as exc:
            note = f"pipeline path: {exc}"
            log.warning(
                "model %s v%s: fast path not compiled (%s); serving through the pipeline", name, version, exc
            )
    predictor.predict(validator.validate(synthetic_records(specs, 1, seed=1)))  # warm-up
    explainer, explain_note = None, ""
    try:  # checked for additivity on the probe; a model without an explainer still serves predictions
        explainer = build_explainer(pipeline, specs, predictor, probe)
        explain_note = f"{explainer.method}: contributions add up to the log-odds on 256 synthetic records"
    except Exception as exc:  # noqa: BLE001 - ExplainUnavailable or a library error: predictions still serve
        explain_note = f"explanations unavailable: {exc}"
        log.warning("model %s v%s: %s", name, version, explain_note)
    return LoadedModel(
        name,
        str(version),
        alias,
        metadata,
        pipeline,
        specs,
        validator,
        predictor,
        threshold,
        run_id,
        note,
        explainer=explainer,
        explain_note=explain_note,
    )


class ModelManager:
    def __init__(self, settings: ServiceSettings, trigger_file: Path | None = None):
        self.settings = settings
        self.current: LoadedModel | None = None
        self.last_error: str | None = None  # the exception's text: logs and authenticated answers only
        self.public_error: str | None = None  # its class, without exception text: for the open /ready
        self.last_error_at: str | None = None
        self.last_check_at: str | None = None
        self.registry_ok: bool | None = None
        self._failed: dict[str, float] = {}  # version -> monotonic time of its last failed load
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trigger_file = trigger_file
        self._trigger_seen = self._trigger_mtime()
        registry.connect(settings.tracking_uri)

    # ---- loading
    def _resolve(self) -> Any:
        try:
            mv = registry.version_by_alias(self.settings.model_name, self.settings.model_alias, strict=True)
        except Exception as exc:
            self.registry_ok = False
            raise RuntimeError(f"registry unreachable: {exc}") from exc
        self.registry_ok = True
        return mv

    def _load(self, version: str, run_id: str | None, tags: dict | None = None) -> LoadedModel:
        name = self.settings.model_name
        metadata = {**registry.model_metadata(name, version), "why": registry.why(tags)}
        pipeline = mlflow.sklearn.load_model(registry.model_uri(name, version))
        return build_loaded_model(
            name, version, self.settings.model_alias, pipeline, metadata, run_id, self.settings.fast_path
        )

    def check(self, force: bool = False) -> dict[str, Any]:
        """Follow the alias: load and swap when it points elsewhere (or `force`). Never raises."""
        with self._lock:
            previous = self.current.version if self.current else None
            self.last_check_at = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                mv = self._resolve()
            except RuntimeError as exc:
                return self._failure(previous, None, exc, "registry")
            if mv is None and previous is None:
                return self._no_champion()
            if mv is None:
                err = RuntimeError(
                    f"model '{self.settings.model_name}' has no alias '{self.settings.model_alias}'"
                )
                return self._failure(previous, None, err, "no_alias")
            version = str(mv.version)
            if version == previous and not force:
                return {"changed": False, "previous_version": previous, "version": version, "error": None}
            failed_at = self._failed.get(version)
            if failed_at is not None and not force and time.monotonic() - failed_at < FAILED_RETRY_SECONDS:
                return {
                    "changed": False,
                    "previous_version": previous,
                    "version": previous,
                    "error": self.last_error,
                }
            started = time.perf_counter()
            try:
                loaded = self._load(version, getattr(mv, "run_id", None), getattr(mv, "tags", None))
            except Exception as exc:  # noqa: BLE001 - whatever breaks a load, the old model keeps serving
                self._failed[version] = time.monotonic()
                return self._failure(previous, version, exc, type(exc).__name__)
            self.current = loaded  # the swap: one reference assignment
            self._failed.pop(version, None)
            self.last_error = self.last_error_at = self.public_error = None
            self._publish(previous, loaded)
            settled = settle_heap()
            m.RELOADS.labels("success", "").inc()
            m.RELOAD_FAILING.set(0)
            m.CHAMPION_MISSING.set(0)
            log.info(
                "serving %s v%s (%s; %s) after %.1fs%s; %d objects frozen in %.2fs",
                loaded.name,
                loaded.version,
                loaded.predictor.kind,
                loaded.fast_path_note,
                time.perf_counter() - started,
                f", replacing v{previous}" if previous else "",
                gc.get_freeze_count(),
                settled,
            )
            return {
                "changed": version != previous,
                "previous_version": previous,
                "version": version,
                "error": None,
                "predictor": loaded.predictor.kind,
            }

    def _no_champion(self) -> dict[str, Any]:
        """Nothing to serve yet because nothing was promoted: a state, not a failed reload. Logged once
        (then at DEBUG), shown by /ready and `model_service_champion_missing`, not counted as a failure."""
        message = (
            f"no champion yet: model '{self.settings.model_name}' has no alias "
            f"'{self.settings.model_alias}': train and gate a model"
        )
        first = self.public_error != message
        self.last_error = self.public_error = message
        if first:
            self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds")
        m.CHAMPION_MISSING.set(1)
        m.RELOAD_FAILING.set(0)
        (log.warning if first else log.debug)(
            "%s (docs/runbook.md, 'No champion yet'); checking again every %ss",
            message,
            self.settings.reload_interval,
        )
        return {"changed": False, "previous_version": None, "version": None, "error": message}

    def _failure(
        self, previous: str | None, version: str | None, exc: BaseException, reason: str
    ) -> dict[str, Any]:
        text = str(exc).strip().splitlines()
        message = f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
        target = f" v{version}" if version else ""
        self.last_error = f"loading {self.settings.model_name}{target} failed: {message}"
        self.public_error = _classified(reason, self.settings.model_name, target, exc)
        self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds")
        m.RELOADS.labels("failure", reason[:40]).inc()
        m.RELOAD_FAILING.set(1)
        keep = f"; still serving v{previous}" if previous else "; no model loaded"
        log.error("%s%s", self.last_error, keep)
        return {"changed": False, "previous_version": previous, "version": previous, "error": self.last_error}

    def _publish(self, previous: str | None, loaded: LoadedModel) -> None:
        for labels in list(getattr(self, "_info_labels", [])):
            m.MODEL_INFO.labels(*labels).set(0)
        labels = (
            loaded.name,
            loaded.version,
            str(loaded.metadata.get("algorithm", "")),
            loaded.predictor.kind,
        )
        m.MODEL_INFO.labels(*labels).set(1)
        self._info_labels = [labels]
        m.MODEL_LOADED.set(1)

    # ---- background polling
    def _trigger_mtime(self) -> float:
        try:
            return self.trigger_file.stat().st_mtime_ns if self.trigger_file else 0.0
        except OSError:
            return 0.0

    def request_reload_everywhere(self, force: bool = False) -> None:
        """Make the other workers check the alias within half a second (they share the trigger file)."""
        if self.trigger_file is not None:
            self.trigger_file.parent.mkdir(parents=True, exist_ok=True)
            self.trigger_file.write_text("force" if force else "check")
            self._trigger_seen = self._trigger_mtime()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_check = time.monotonic() + self.settings.reload_interval
        while not self._stop.wait(0.5):
            mtime = self._trigger_mtime()
            triggered, forced = mtime != self._trigger_seen, False
            if triggered:
                self._trigger_seen = mtime
                with contextlib.suppress(OSError):
                    forced = self.trigger_file.read_text().strip() == "force"
            if triggered or time.monotonic() >= next_check:
                self.check(force=forced)
                next_check = time.monotonic() + self.settings.reload_interval


def _classified(reason: str, name: str, target: str, exc: BaseException) -> str:
    """A load failure as the open /ready may show it: what failed, never the exception's text (a
    database or registry error can name hosts, users and paths)."""
    if reason == "registry":
        return "registry unreachable"
    if reason == "no_alias":
        return str(exc)  # built here from MODEL_NAME and MODEL_ALIAS
    return f"loading {name}{target} failed ({type(exc).__name__})"
