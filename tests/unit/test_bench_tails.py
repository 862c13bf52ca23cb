"""`make bench-tails`' pure parts (tools/bench_tails.py): py-spy's raw output read into the busiest
functions, the CPU ceiling, the sustained rate with the catch-up, and the verdicts against issue 26's
targets (met, missed by how much, and whether the writer makes the tail)."""

from __future__ import annotations

from tools import bench_tails as tails


def _row(size, rps, p50_ms, p99_ms, catch_up=0.0, seconds=10.0, cpu=(10.0, 5.0, 0.0)):
    records = rps * seconds * size
    return {
        "size": size,
        "rps": rps,
        "requests": rps * seconds,
        "non2xx": 0,
        "seconds": seconds,
        "p50": p50_ms * 1000,
        "p99": p99_ms * 1000,
        "catch_up": catch_up,
        "records": records,
        "cpu_ms_per_1000": dict(zip(("workers", "writer", "database"), cpu, strict=True)),
    }


def _results(p99_100=60.0, p99_paused=30.0, rps_1000=120.0, catch_up=0.0, single=900.0):
    health = {"rps": 1000.0, "requests": 10000, "non2xx": 0, "p50": 2000, "p99": 9000, "worker_ms": 0.3}
    return {
        "SQLite": {
            "GET /health": health,
            "single": _row(1, single, 4, 20, cpu=(1100.0, 50.0, 0.0)),
            "100": _row(100, 300, 20, p99_100),
            "100, writer paused": _row(100, 320, 19, p99_paused),
            "1000": _row(1000, rps_1000, 150, 400, catch_up=catch_up, cpu=(9.0, 6.0, 0.0)),
        },
        "PostgreSQL": {"error": "PostgreSQL 15 is not installed (make system-packages)"},
    }


def test_top_functions_counts_own_samples_of_the_last_frame(tmp_path):
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "main (app.py:1);predict (svc/api/predict.py:9);loads (svc/jsonfast.py:36) 30\n"
        "main (app.py:1);predict (svc/api/predict.py:9) 10\n"
        "main (app.py:1);insert (svc/store.py:5);loads (svc/jsonfast.py:36) 20\n"
        "garbage line\n"
        "\n"
        " 40\n"
    )
    top = tails.top_functions(raw, n=2)
    assert top[0] == ("loads (svc/jsonfast.py:36)", 50 / 100)
    assert top[1] == ("(native, no Python frame)", 40 / 100)
    assert len(top) == 2
    assert tails.top_functions(tmp_path / "missing.txt") == []


def test_stage_shares_count_every_sample_passing_through_a_stage(tmp_path):
    raw = tmp_path / "spy.txt"
    raw.write_text(
        "_runner (granian/wsgi.py:62);wsgi_app (flask/app.py:1479);predict (api/predict.py:42);"
        "submit (prediction_log/writer.py:134);append (spool.py:200) 30\n"
        "_runner (granian/wsgi.py:62);wsgi_app (flask/app.py:1479);predict (api/predict.py:42) 20\n"
        "_runner (granian/wsgi.py:62) 50\n"
    )
    assert tails.stage_shares(raw) == [
        ("Flask app", 0.5),
        ("predict view", 0.5),
        ("prediction log append", 0.3),
    ]
    assert tails.stage_shares(tmp_path / "missing.txt") == []


def test_ceiling_is_the_cores_over_the_cpu_per_record(monkeypatch):
    monkeypatch.setattr(tails, "cores", lambda: 2)
    # 10 + 5 + 5 ms per 1,000 records = 20 us a record: 2 cores serve 100,000 a second
    assert round(tails.ceiling(_row(1000, 100, 1, 2, cpu=(10.0, 5.0, 5.0)))) == 100_000
    assert tails.ceiling(_row(1000, 100, 1, 2, cpu=(0.0, 0.0, 0.0))) is None


def test_sustained_counts_the_catch_up_in():
    r = _row(1000, 100, 1, 2, catch_up=10.0, seconds=10.0)
    assert r["records"] == 1_000_000
    assert tails.sustained(r) == 50_000


def test_verdicts_say_met_and_missed_with_the_figures(monkeypatch):
    monkeypatch.setattr(tails, "cores", lambda: 2)
    lines = tails.verdicts(_results())
    text = "\n".join(lines)
    assert "SQLite, 100-record p99 <= 3x p50: **met**: p50 20.0 ms, p99 60.0 ms (3.0x)" in text
    assert "1,000-record requests >= 100,000 records/s with the log caught up: **met**" in text
    assert "single records >= 75% of `/health`: **met**" in text
    assert "PostgreSQL: not measured: PostgreSQL 15 is not installed" in text

    missed = "\n".join(tails.verdicts(_results(p99_100=200.0, rps_1000=50.0, catch_up=10.0, single=300.0)))
    assert "p99 200.0 ms (10.0x)" in missed and "**NOT met** (3.3x the bound)" in missed
    assert "**NOT met** (25% of it): 50,000 answered, 25,000 with the catch-up (10.0 s)" in missed
    # the CPU budget is the reason given: 9 + 6 ms per 1,000 records on 2 cores
    assert "workers 9.0 ms, writer 6.0 ms: 2 cores give at most 133,333 records/s" in missed
    assert "**NOT met** (30% of /health): 300 against 1,000 requests/s" in missed
    assert "worker CPU per request 1.10 ms against 0.30 ms for /health" in missed


def test_the_writer_is_named_only_when_pausing_it_shrinks_the_tail():
    shrinks = "\n".join(tails.verdicts(_results(p99_100=200.0, p99_paused=40.0)))
    assert "the writer competing for the cores accounts for part of the tail" in shrinks
    stays = "\n".join(tails.verdicts(_results(p99_100=200.0, p99_paused=190.0)))
    assert "not the writer's: the tail stays without it" in stays


def test_the_report_has_one_row_per_measurement_and_the_profiles():
    results = _results()
    results["SQLite"]["1000"]["profile"] = {"writer": [("executemany (store.py:1)", 0.4)]}
    results["SQLite"]["single"]["stages"] = [("Flask app", 0.6), ("model", 0.1)]
    text = tails.report(
        results,
        {"seconds": 15, "connections": 8, "threads": 2, "workers": 2, "version": "3", "flavor": "xgboost"},
        {"start": 1.0, "end": 2.0},
    )
    table = [line for line in text.splitlines() if line.startswith("| SQLite")]
    assert len(table) == 5
    assert "| SQLite | 1000 | 120 | 120,000 |" in text
    assert "- SQLite, 1000 records, writer: executemany (store.py:1) 40%" in text
    assert "- SQLite, single records, worker, inclusive: Flask app 60%; model 10%" in text
    assert "champion v3 (xgboost)" in text
