"""Traffic simulator: `make simulate` (`churnops simulate`).

Sends held-out records (the test split of the data set's root snapshot: rows no model was trained on)
to the service's POST /v1/predict at a set rate, optionally drifted by a named scenario
(monitoring/scenarios.py: none, covariate[:features], unseen_category[:feature], missing[:features],
label_shift), and sends each record's true label back through POST /v1/feedback after a delay.

    churnops simulate --records 400 --rate 50 --scenario covariate:monthly_charges,tenure
    churnops simulate --duration 60 --scenario label_shift --share 0.6

Environment: SERVICE_URL, SERVICE_API_KEY (or the first of API_KEYS), DATA_DIR, DATASET_CONFIG.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import requests

from core.dataset import DatasetConfig, load_config
from core.features import json_record, prepare
from core.settings import load_or_exit
from monitoring.scenarios import SCENARIOS, Scenario, ScenarioSpec, apply
from monitoring.settings import MonitorSettings
from training.data import DataError, assign_split, ingest, latest_snapshot, lineage_root
from training.settings import TrainingSettings


@dataclass
class SimulationStats:
    scenario: str
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    feedback_sent: int = 0
    feedback_failed: int = 0
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        served = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items()))
        return (
            f"simulate [{self.scenario}]: {self.accepted}/{self.sent} records accepted in {self.requests} requests "
            f"over {self.finished - self.started:.1f} s (served by {served or '-'}); feedback {self.feedback_sent} sent, "
            f"{self.feedback_failed} failed" + (f"; first error: {self.errors[0]}" if self.errors else "")
        )


def held_out_records(settings: TrainingSettings, config: DatasetConfig) -> pd.DataFrame:
    """Test-split rows of the root snapshot: typed features + `label`."""
    try:
        snap = latest_snapshot(config, settings.data_dir)
    except DataError:
        snap = ingest(config, settings.data_dir)
    frame = lineage_root(snap).load()
    features, label = prepare(frame, config)
    side = assign_split(features, config.split["valid_share"], config.split["test_share"])
    return features[side == "test"].assign(label=label[side == "test"].to_numpy()).reset_index(drop=True)


def to_json_record(row: pd.Series, config: DatasetConfig) -> dict[str, Any]:
    """The record as sent: null for a missing value, never "nan" (core.features.json_record)."""
    return json_record(row, config)


def simulate(
    url: str,
    api_key: str,
    records: pd.DataFrame,
    config: DatasetConfig,
    *,
    scenario: Scenario | None = None,
    rate: float = 50.0,
    batch: int = 10,
    feedback_delay: float = 2.0,
    feedback_share: float = 1.0,
    seed: int = 0,
    reference: pd.DataFrame | None = None,
    timeout: float = 10.0,
    log=print,
) -> SimulationStats:
    """Send `records` (drifted by `scenario`) at `rate` records/s; labels back after `feedback_delay` s."""
    rng = np.random.default_rng(seed)
    scenario = scenario or Scenario()
    frame = apply(records, scenario, config, seed=seed, reference=reference)
    stats = SimulationStats(scenario.describe())
    session = requests.Session()
    session.headers["X-API-Key"] = api_key
    pending: list[tuple[float, int, str, int, int, int]] = []  # (due, seq, request_id, index, label, tries)
    seq = 0
    interval = batch / rate if rate > 0 else 0.0
    next_send = time.monotonic()

    def flush_feedback(until_empty: bool = False) -> None:
        nonlocal seq
        while pending and (until_empty or pending[0][0] <= time.monotonic()):
            due, _, rid, index, label, tries = heapq.heappop(pending)
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            try:
                r = session.post(
                    f"{url}/v1/feedback",
                    json={"request_id": rid, "record_index": index, "label": label},
                    timeout=timeout,
                )
                code = r.status_code
            except requests.RequestException as exc:
                code, r = 0, None
                stats.errors.append(f"feedback: {type(exc).__name__}")
            if code in (200, 201, 409):  # 409: already labelled
                stats.feedback_sent += 1
            elif code in (0, 404, 503) and tries < 5:  # the prediction may not be in the log yet
                seq += 1
                heapq.heappush(pending, (time.monotonic() + 1.0, seq, rid, index, label, tries + 1))
            else:
                stats.feedback_failed += 1
                if r is not None:
                    stats.errors.append(f"feedback HTTP {code}: {r.text[:120]}")

    for start in range(0, len(frame), batch):
        chunk = frame.iloc[start : start + batch]
        body = {"records": [to_json_record(row, config) for _, row in chunk.iterrows()]}
        delay = next_send - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_send = max(next_send + interval, time.monotonic() - 1.0)
        stats.sent += len(chunk)
        stats.requests += 1
        try:
            r = session.post(f"{url}/v1/predict", json=body, timeout=timeout)
        except requests.RequestException as exc:
            stats.rejected += len(chunk)
            stats.errors.append(f"predict: {type(exc).__name__}: {exc}")
            continue
        if r.status_code != 200:
            stats.rejected += len(chunk)
            stats.errors.append(f"predict HTTP {r.status_code}: {r.text[:200]}")
            continue
        out = r.json()
        stats.accepted += len(chunk)
        version = str(out.get("model_version"))
        stats.versions[version] = stats.versions.get(version, 0) + len(chunk)
        rid = out["request_id"]
        for index, label in enumerate(chunk["label"].to_numpy()):
            if rng.random() < feedback_share:
                seq += 1
                heapq.heappush(pending, (time.monotonic() + feedback_delay, seq, rid, index, int(label), 0))
        flush_feedback()
    flush_feedback(until_empty=True)
    stats.finished = time.time()
    log(stats.line())
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="churnops simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="service base URL (SERVICE_URL)")
    parser.add_argument("--api-key", help="X-API-Key (SERVICE_API_KEY or the first of API_KEYS)")
    parser.add_argument(
        "--scenario", default="none", help=f"one of {', '.join(SCENARIOS)}, optionally :feature,..."
    )
    parser.add_argument("--strength", type=float, default=1.0, help="covariate shift in standard deviations")
    parser.add_argument(
        "--share",
        type=float,
        default=0.5,
        help="share of records hit (unseen, missing) or positive share (label_shift)",
    )
    parser.add_argument("--records", type=int, help="records to send (default: rate x duration)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of traffic when --records is not given"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="records per second")
    parser.add_argument("--batch", type=int, default=5, help="records per request")
    parser.add_argument(
        "--feedback-delay", type=float, default=5.0, help="seconds before a label is sent back"
    )
    parser.add_argument(
        "--feedback-share", type=float, default=1.0, help="share of records whose label comes back"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    msettings = load_or_exit(MonitorSettings)
    tsettings = load_or_exit(TrainingSettings)
    config = load_config(tsettings.dataset_config)
    try:
        scenario = ScenarioSpec(args.scenario).scenario(args.strength, args.share)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pool = held_out_records(tsettings, config)
    n = args.records or int(args.rate * args.duration)
    sample = pool.sample(n, replace=n > len(pool), random_state=args.seed).reset_index(drop=True)
    print(
        f"simulate: {n} held-out records at {args.rate:g}/s, scenario {scenario.describe()}, "
        f"labels back after {args.feedback_delay:g} s",
        flush=True,
    )
    stats = simulate(
        args.url or msettings.service_url,
        args.api_key or msettings.api_key,
        sample,
        config,
        scenario=scenario,
        rate=args.rate,
        batch=args.batch,
        feedback_delay=args.feedback_delay,
        feedback_share=args.feedback_share,
        seed=args.seed,
        reference=pool,
    )
    return 0 if stats.accepted and not stats.rejected else 1


if __name__ == "__main__":
    sys.exit(main())
