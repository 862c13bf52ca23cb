"""Traffic simulator: `make simulate` (`churnops simulate`).

Sends held-out records (the test split of the data set's root snapshot: rows no model was trained on)
to the service's POST /v1/predict at a set rate, optionally drifted by a named scenario
(monitoring/scenarios.py: none, covariate[:features], unseen_category[:feature], missing[:features],
label_shift), and sends each record's true label back through POST /v1/feedback after a delay.

With `--per-day N` the traffic runs on a simulated clock (`SimulatedClock`): N records make one
business day, every request carries its `event_time`, and labels follow the data set config's
`labels:` (horizon_days, never_share): a record's label is sent once the clock has passed its event
time plus the horizon, with that time as the label's `event_time`, and a `never_share` of them never.
Months pass in minutes; labels not due when the traffic ends are counted, not sent.

    churnops simulate --records 400 --rate 50 --scenario covariate:monthly_charges,tenure
    churnops simulate --duration 60 --scenario label_shift --share 0.6
    churnops simulate --records 3000 --per-day 60 --rate 200     # 50 days, labels 30 days late

Environment: SERVICE_URL, SERVICE_API_KEY (or the first of API_KEYS), DATA_DIR, DATASET_CONFIG.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


@dataclass
class SimulatedClock:
    """Business time for the simulator: `per_day` records make a day, starting at `start`. Labels wait in
    `pending` until the clock passes their due time (event time + `horizon_days`); `never_share` of them
    are dropped when their record is scored. Kept across `simulate` calls, so one clock runs a story."""

    start: datetime
    per_day: float
    horizon_days: float
    never_share: float = 0.0
    seed: int = 0
    scored: int = 0  # records scored so far: the clock's position
    pending: list = field(default_factory=list)  # heap: (due, seq, request_id, index, label)
    never: int = 0  # labels dropped (never come back)
    seq: int = 0

    def __post_init__(self) -> None:
        if self.per_day <= 0:
            raise ValueError("per_day must be > 0")
        self.rng = np.random.default_rng(self.seed)

    @property
    def now(self) -> datetime:
        return self.start + timedelta(days=self.scored / self.per_day)

    @property
    def day(self) -> float:
        return self.scored / self.per_day

    def advance(self, records: int) -> datetime:
        """The event time of the next `records` records (the clock's time before them), then moves on."""
        at = self.now
        self.scored += records
        return at

    def expect(self, event_time: datetime, request_id: str, index: int, label: int) -> None:
        if self.rng.random() < self.never_share:
            self.never += 1
            return
        self.seq += 1
        due = event_time + timedelta(days=self.horizon_days)
        heapq.heappush(self.pending, (due, self.seq, request_id, index, label))

    def due(self) -> list[tuple[datetime, int, str, int, int]]:
        """The labels whose time has come, in due order (removed from `pending`)."""
        out = []
        while self.pending and self.pending[0][0] <= self.now:
            out.append(heapq.heappop(self.pending))
        return out

    def line(self) -> str:
        return (
            f"clock day {self.day:.1f} ({self.now:%Y-%m-%d}): {len(self.pending)} labels not due yet, "
            f"{self.never} never coming back"
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
    clock: SimulatedClock | None = None,
    log=print,
) -> SimulationStats:
    """Send `records` (drifted by `scenario`) at `rate` records/s; labels back after `feedback_delay` s,
    or, with a `clock`, each request stamped with its event time and labels back once the clock has
    passed their horizon (the rest stay in the clock for the next call)."""
    rng = np.random.default_rng(seed)
    scenario = scenario or Scenario()
    frame = apply(records, scenario, config, seed=seed, reference=reference)
    stats = SimulationStats(scenario.describe())
    session = requests.Session()
    session.headers["X-API-Key"] = api_key
    # (due, seq, request_id, index, label, tries, the label's event time or None)
    pending: list[tuple[float, int, str, int, int, int, str | None]] = []
    seq = 0
    interval = batch / rate if rate > 0 else 0.0
    next_send = time.monotonic()

    def flush_feedback(until_empty: bool = False) -> None:
        nonlocal seq
        if clock is not None:  # labels whose horizon the clock has passed, stamped with that time
            for due_at, _, rid, index, label in clock.due():
                seq += 1
                heapq.heappush(pending, (time.monotonic(), seq, rid, index, label, 0, due_at.isoformat()))
        while pending and (until_empty or pending[0][0] <= time.monotonic()):
            due, _, rid, index, label, tries, known_at = heapq.heappop(pending)
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            body = {"request_id": rid, "record_index": index, "label": label}
            if known_at is not None:
                body["event_time"] = known_at
            try:
                r = session.post(f"{url}/v1/feedback", json=body, timeout=timeout)
                code = r.status_code
            except requests.RequestException as exc:
                code, r = 0, None
                stats.errors.append(f"feedback: {type(exc).__name__}")
            if code in (200, 201, 409):  # 409: already labelled
                stats.feedback_sent += 1
            elif code in (0, 404, 503) and tries < 5:  # the prediction may not be in the log yet
                seq += 1
                heapq.heappush(pending, (time.monotonic() + 1.0, seq, rid, index, label, tries + 1, known_at))
            else:
                stats.feedback_failed += 1
                if r is not None:
                    stats.errors.append(f"feedback HTTP {code}: {r.text[:120]}")

    for start in range(0, len(frame), batch):
        chunk = frame.iloc[start : start + batch]
        body = {"records": [to_json_record(row, config) for _, row in chunk.iterrows()]}
        event_time = None
        if clock is not None:
            event_time = clock.advance(len(chunk))
            body["event_time"] = event_time.isoformat()
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
            if event_time is not None:
                clock.expect(event_time, rid, index, int(label))
            elif rng.random() < feedback_share:
                seq += 1
                heapq.heappush(
                    pending, (time.monotonic() + feedback_delay, seq, rid, index, int(label), 0, None)
                )
        flush_feedback()
    flush_feedback(until_empty=True)
    stats.finished = time.time()
    log(stats.line() + ("" if clock is None else f"; {clock.line()}"))
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
    parser.add_argument(
        "--per-day",
        type=float,
        help="records per simulated business day: run on a simulated clock, labels back after the data "
        "set config's labels.horizon_days (a labels.never_share of them never)",
    )
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        help="the simulated clock's first day, ISO 8601 (default: as many days before now as the traffic "
        "and the horizon take, so no event time is in the future)",
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
    n = args.records or int(args.rate * args.duration)
    clock = None
    if args.per_day is not None:
        if args.per_day <= 0:
            print(f"error: --per-day must be > 0, got {args.per_day:g}", file=sys.stderr)
            return 2
        days = n / args.per_day
        start = args.start or datetime.now(UTC) - timedelta(days=days + config.label_horizon_days + 1)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        clock = SimulatedClock(
            start, args.per_day, config.label_horizon_days, config.label_never_share, seed=args.seed
        )
        when = (
            f"on a simulated clock from {start:%Y-%m-%d} ({args.per_day:g} records a day, {days:.1f} days), "
            f"labels back {config.label_horizon_days:g} days after their score, "
            f"{config.label_never_share:.0%} never"
        )
    else:
        when = f"labels back after {args.feedback_delay:g} s"
    pool = held_out_records(tsettings, config)
    sample = pool.sample(n, replace=n > len(pool), random_state=args.seed).reset_index(drop=True)
    print(
        f"simulate: {n} held-out records at {args.rate:g}/s, scenario {scenario.describe()}, {when}",
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
        clock=clock,
    )
    return 0 if stats.accepted and not stats.rejected else 1


if __name__ == "__main__":
    sys.exit(main())
