"""The soak's pure parts (tools/bench_soak.py): percentiles, the open-loop schedule and sender, the
per-minute aggregation, the durability comparison and the flatness verdict."""

from __future__ import annotations

import asyncio
import time

from tools import bench_soak as soak
from tools.bench_soak import BATCH, MB, SINGLE, Minute, Recorder, Sample


def test_percentile_is_nearest_rank_over_the_values_in_any_order():
    values = list(range(100, 0, -1))  # 100..1, unsorted on purpose
    assert soak.percentile(values, 50) == 50
    assert soak.percentile(values, 99) == 99
    assert soak.percentile(values, 100) == 100
    assert soak.percentile(range(1, 1001), 99) == 990
    assert soak.percentile([7.5], 99) == 7.5
    assert soak.percentile([], 50) is None
    # one slow answer in a hundred is the p99, not averaged away
    assert soak.percentile([1.0] * 99 + [500.0], 99) == 1.0
    assert soak.percentile([1.0] * 98 + [500.0] * 2, 99) == 500.0


def test_schedule_is_fixed_by_time_and_mixes_batches_evenly():
    plan = list(soak.schedule(rate=20, seconds=3, batch_share=0.1))
    assert len(plan) == 60
    assert [t for t, _ in plan[:3]] == [0.0, 0.05, 0.1]
    assert plan[-1][0] == 59 / 20
    batches = [i for i, (_, kind) in enumerate(plan) if kind == BATCH]
    assert len(batches) == 6  # exactly 10%
    assert all(b - a == 10 for a, b in zip(batches, batches[1:], strict=False))  # one in every ten
    assert {kind for _, kind in plan} == {SINGLE, BATCH}
    assert list(soak.schedule(0, 10, 0.1)) == []
    assert all(kind == SINGLE for _, kind in soak.schedule(100, 1, 0.0))


def test_open_loop_sends_on_time_however_slow_the_answers_are():
    """A closed loop would send the next request only after the 0.3 s answer; the open loop sends all
    20 within their 0.2 s schedule and charges each from its scheduled time."""
    started: list[float] = []
    results: list[tuple] = []

    async def slow_send(kind: str):
        started.append(time.monotonic())
        await asyncio.sleep(0.3)
        return 200, f"id-{len(started)}", 100 if kind == BATCH else 1

    def record(offset, kind, status, rid, records, latency, lag):
        results.append((offset, kind, status, rid, records, latency, lag))

    begin = time.monotonic()
    asyncio.run(soak.open_loop(soak.schedule(100, 0.2, 0.1), slow_send, record))
    elapsed = time.monotonic() - begin
    assert len(started) == 20 and len(results) == 20
    assert max(started) - begin < 0.2 + 0.1  # the last one went out on time, not after 19 answers
    assert elapsed < 1.0  # a closed loop of one connection: 6 s
    assert all(0.29 <= r[5] < 0.6 for r in results)  # latency includes the 0.3 s answer
    assert all(r[6] < 0.1 for r in results)  # sent when due
    assert sum(1 for r in results if r[1] == BATCH and r[4] == 100) == 2


def test_open_loop_counts_a_failed_send_as_status_zero():
    results = []

    async def failing(kind: str):
        raise ConnectionError("refused")

    asyncio.run(soak.open_loop([(0.0, SINGLE)], failing, lambda *r: results.append(r)))
    assert results[0][2] == 0 and results[0][3] is None


def recorder_two_minutes() -> Recorder:
    rec = Recorder()
    for i in range(100):  # minute 1: singles 1..100 ms, one batch
        rec.add(i * 0.5, SINGLE, 200, f"a{i}", 1, (i + 1) / 1000, 0.001)
    rec.add(30.0, BATCH, 200, "b0", 100, 0.040, 0.002)
    rec.add(31.0, SINGLE, 503, None, 0, 0.002, 0.001)
    rec.add(65.0, SINGLE, 200, "c0", 1, 0.003, 0.0)  # minute 2
    rec.add(70.0, BATCH, 0, None, 0, 30.0, 0.0)  # a timeout
    return rec


def test_minutes_aggregates_by_scheduled_minute_and_closing_sample():
    samples = [
        Sample(30.0, 1.0 * MB, [100 * MB, 120 * MB], 50 * MB, 1.0),
        Sample(60.0, 3.0 * MB, [110 * MB, 130 * MB], 55 * MB, 1.5, db_rows=1_500),  # closes minute 1
        Sample(90.0, 0.5 * MB, [111 * MB, 131 * MB], 56 * MB, 2.0),
        Sample(120.0, 0.25 * MB, [112 * MB, 132 * MB], 57 * MB, 2.5, db_rows=1_600),
    ]
    rows = soak.minutes(recorder_two_minutes(), samples, 3, rows_before=1_000)
    one, two, three = rows
    assert (one.minute, one.sent, one.ok, one.records, one.non_200) == (1, 102, 101, 200, 1)
    assert one.single_p50_ms == 50.0 and one.single_p99_ms == 99.0  # failed request's 2 ms not in
    assert one.batch_p50_ms == one.batch_p99_ms == 40.0
    assert one.spool_max_bytes == 3.0 * MB  # the highest sample, not the last
    assert (one.worker_rss_sum, one.worker_rss_max, one.writer_rss) == (240 * MB, 130 * MB, 55 * MB)
    assert (one.db_rows, one.db_rows_added, one.load1) == (1_500, 500, 1.5)
    assert (two.sent, two.ok, two.records, two.non_200) == (2, 1, 1, 1)
    assert two.batch_p99_ms is None  # the timed-out batch has no latency
    assert two.spool_max_bytes == 0.5 * MB and two.db_rows_added == 100
    assert (three.sent, three.single_p99_ms, three.spool_max_bytes, three.db_rows) == (0, None, None, None)


def test_recorder_remembers_only_answered_requests():
    rec = recorder_two_minutes()
    assert rec.answered["b0"] == 100 and rec.answered["c0"] == 1
    assert len(rec.answered) == 102  # 100 + b0 + c0; the 503 and the timeout are not there


def test_durability_counts_missing_duplicated_and_unanswered_records():
    answered = {"a": 1, "b": 100, "c": 1}
    assert soak.durability(answered, {"a": 1, "b": 100, "c": 1}) == soak.Durability(3, 102, 102, 0, 0, 0)
    d = soak.durability(answered, {"a": 1, "b": 98, "x": 5})
    assert (d.missing, d.duplicates, d.unanswered_stored, d.stored_records) == (3, 0, 5, 104)
    d = soak.durability(answered, {"a": 2, "b": 100, "c": 1}, duplicate_rows=4)
    assert (d.missing, d.duplicates) == (0, 5)


def minute(m: int, p99: float = 10.0, rss: int = 500 * MB, spool: float = 1 * MB, **kw) -> Minute:
    values = dict(
        minute=m,
        sent=60_000,
        ok=60_000,
        records=600_000,
        non_200=0,
        single_p50_ms=3.0,
        single_p99_ms=p99,
        batch_p50_ms=20.0,
        batch_p99_ms=60.0,
        send_lag_p99_ms=1.0,
        spool_max_bytes=spool,
        worker_rss_sum=rss,
        worker_rss_max=rss // 2,
        writer_rss=100 * MB,
        db_rows=600_000 * m,
        db_rows_added=600_000,
        load1=2.0,
    )
    values.update(kw)
    return Minute(**values)


def test_verdict_flat_when_nothing_drifts_beyond_noise():
    rows = [minute(m, p99=10.0 + (m % 3), rss=500 * MB + m * MB) for m in range(1, 16)]
    verdict = soak.judge(rows)
    assert verdict.flat and verdict.text() == "flat"


def test_verdict_names_a_growing_spool_and_the_writer():
    rows = [minute(m, spool=(1 if m <= 5 else 10 * m) * MB, db_rows_added=500_000) for m in range(1, 16)]
    verdict = soak.judge(rows)
    assert not verdict.flat
    assert "spool grew" in verdict.text() and "writer process" in verdict.text()


def test_verdict_rows_falling_behind_without_spool_figures():
    rows = [minute(m, spool=None, db_rows_added=400_000 if m > 10 else 600_000) for m in range(1, 16)]
    verdict = soak.judge(rows)
    assert not verdict.flat and "fell behind" in verdict.text()


def test_verdict_p99_rise_and_its_likely_reason():
    loaded = [minute(m, p99=10.0 if m <= 5 else 40.0, load1=2.0 if m <= 5 else 6.0) for m in range(1, 16)]
    text = soak.judge(loaded).text()
    assert "p99 rose from 10.0 to 40.0 ms" in text and "machine got busier" in text
    generator = [
        minute(m, p99=10.0 if m <= 5 else 40.0, send_lag_p99_ms=1.0 if m <= 5 else 30.0) for m in range(1, 16)
    ]
    assert "generator itself fell behind" in soak.judge(generator).text()
    unexplained = [minute(m, p99=10.0 if m <= 5 else 40.0) for m in range(1, 16)]
    assert "PostgreSQL" in soak.judge(unexplained).text()
    small = [minute(m, p99=1.0 if m <= 5 else 2.5) for m in range(1, 16)]  # +150% but 1.5 ms: noise
    assert soak.judge(small).flat


def test_verdict_memory_growth_and_failures_and_too_short():
    growing = [minute(m, rss=(500 + 20 * m) * MB) for m in range(1, 16)]
    assert "worker RSS (sum) grew" in soak.judge(growing).text()
    failing = [minute(m, non_200=3 if m == 7 else 0) for m in range(1, 16)]
    assert "3 requests not answered 200" in soak.judge(failing).text()
    short = soak.judge([minute(1), minute(2)])
    assert not short.flat and "too short" in short.text()


def test_metric_reads_a_plain_sample_and_not_a_longer_name():
    text = (
        "# HELP x\nmodel_service_log_spool_backlog_bytes_total 9\n"
        "model_service_log_spool_backlog_bytes 12345.0\nother 1\n"
    )
    assert soak.metric(text, "model_service_log_spool_backlog_bytes") == 12345.0
    assert soak.metric(text, "absent") is None


def test_spool_depth_is_every_segment_file_under_the_spool(tmp_path):
    (tmp_path / "abc123").mkdir()
    (tmp_path / "abc123" / "1-w1.jsonl").write_bytes(b"x" * 1000)
    (tmp_path / "abc123" / "2-w2.jsonl").write_bytes(b"x" * 500)
    (tmp_path / "abc123" / "notes.txt").write_bytes(b"x" * 99)  # not a segment
    assert soak.spool_bytes(tmp_path) == 1500
    assert soak.spool_bytes(tmp_path / "absent") == 0


def test_table_cells_show_missing_figures_as_dashes_and_counts_as_integers():
    row = minute(1, spool=None, db_rows=1_234_567)
    line = soak.table([row]).splitlines()[-1]
    assert "| 1,234,567 | 600,000 |" in line and "| - |" in line


def test_verdict_judges_batches_and_the_writer_too():
    batches = [minute(m, batch_p99_ms=60.0 if m <= 5 else 200.0) for m in range(1, 16)]
    assert "batch p99 rose from 60.0 to 200.0 ms" in soak.judge(batches).text()
    writer = [minute(m, writer_rss=(100 if m <= 5 else 300) * MB) for m in range(1, 16)]
    assert "writer RSS grew from 100 to 300 MB" in soak.judge(writer).text()


def test_row_counter_adds_only_the_rows_past_the_last_id(tmp_path):
    from datetime import UTC, datetime

    from core.store import make_engine, predictions

    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = make_engine(url)
    predictions.create(engine)

    def insert(first: int, n: int) -> None:
        row = dict(
            created_at=datetime(2026, 12, 7, tzinfo=UTC),
            model_name="m",
            model_version="1",
            features={},
            score=0.5,
            label=1,
            latency_ms=1.0,
        )
        with engine.begin() as conn:
            conn.execute(
                predictions.insert(),
                [{**row, "request_id": f"r{first + i}", "record_index": 0} for i in range(n)],
            )

    counter = soak.RowCounter(url)
    assert counter.count() == 0
    insert(0, 5)
    assert counter.count() == 5
    insert(5, 3)
    assert counter.count() == 8 and counter.count() == 8  # nothing new: unchanged
    assert soak.count_rows(url) == 8
    assert soak.count_rows(f"sqlite:///{tmp_path / 'absent' / 'x.db'}") is None
    engine.dispose()
