"""Serving benchmark: `make bench-serve` (this service under gunicorn and under granian, each with
LOG_SYNC=write and LOG_SYNC=fsync, vs `mlflow models serve`, same model, same workers, in one run).

Starts the model service four times: under granian (`model_service/server.py`, what `make serve`, the
image and the stacks run) and under gunicorn (`tools/gunicorn_conf.py`, the server it replaced, kept
for this comparison), each once per durability mode (`LOG_SYNC`:
`write`, the spool line in the page cache before the 200; `fsync`, also synced), each with
SERVICE_WORKERS workers x SERVICE_THREADS threads and its own SQLite prediction log and spool on
local disk; `mlflow models serve` for the same champion version with the same number of workers; and
MLServer (PyPI `mlserver` + `mlserver-mlflow`, its MLflow runtime, in its own virtual environment built by
tools/mlserver_venv.sh from tools/mlserver-requirements.txt) on the same model's artifacts with
`parallel_workers` = the same number of workers, asked over its V2 inference protocol (one input per
column, the `pd` content type). Before the wrk rows, every other server's probabilities for a few records
are checked against this service's (within 1e-6). MLServer missing or failing to start costs its rows
only: the section says why in one line. wrk drives each (same connections, threads and duration), interleaved per row so that the machine's
load drifts over all of them alike (after each row of this service, the next waits until its
prediction log has caught up: a writer still inserting would slow the next server down): one record
per request, 1,000 records per request, and GET /health (once per server). After the run every
service is stopped (SIGTERM: graceful flush) and the records in each prediction log (database + spool)
are counted against the records wrk saw answered. Then the in-process predict time of one record (the
floor) and the per-record cost of each step of a 1,000-record request. Writes the tables under
`## Serving` in docs/benchmarks.md (only that section; the rest of the file belongs to the other
benchmarks) and prints them, with the load average at the start and the end of the wrk rows.

Needs: a champion in the registry (`make train gate`), wrk (`apt-get install wrk`), the venv's
bin on PATH for `mlflow models serve` (the make target sets it) and, for the MLServer rows, its venv
(`make mlserver-venv`, which `make bench-serve` runs first; MLSERVER_VENV, default $STATE_DIR/venvs/mlserver).
Settings: BENCH_SECONDS (15), BENCH_CONNECTIONS (8), BENCH_THREADS (2), SERVICE_WORKERS (2),
SERVICE_THREADS (16). About 7 minutes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from core.dataset import load_config
from core.settings import Settings
from operations.waiting import NotReady, free_port, wait_http

REPO = Path(__file__).resolve().parent.parent
RECORD = load_config(Settings.from_env().dataset_config).example_record  # the data set's sample record
DOC = REPO / "docs" / "benchmarks.md"
HEADING = "## Serving"

LUA = """
{request}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%f non2xx=%d socket=%d p50=%d p95=%d p99=%d\\n",
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def progress(message: str) -> None:
    """One line on stderr while the run goes on (the tables come at the end)."""
    print(f"bench-serve {datetime.now(UTC):%H:%M:%S}: {message}", file=sys.stderr, flush=True)


def wrk(
    url: str, body: str | None, headers: dict[str, str], work: Path, seconds: int, conns: int, threads: int
) -> dict:
    request = ""
    if body is not None:
        body_path = work / f"body-{abs(hash(body))}.json"
        body_path.write_text(body)
        request = (
            f'wrk.method = "POST"\nwrk.body = io.open("{body_path}"):read("*a")\n'
            'wrk.headers["Content-Type"] = "application/json"'
        )
    script = work / "bench.lua"
    script.write_text(
        LUA.format(
            request=request, headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        )
    )

    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    match = re.search(r"RESULT (.*)", out.stdout)
    if not match:
        raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")
    r = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    r["rps"] = r["requests"] / r["seconds"]
    progress(f"{url}: {r['rps']:,.0f} requests/s, p99 {r['p99'] / 1000:.1f} ms, non-2xx {r['non2xx']:.0f}")
    return r


def stop(proc: subprocess.Popen | None, signalled: bool = False) -> None:
    """SIGTERM (unless `signalled` already), up to 60 s for the graceful stop, then SIGKILL."""
    if proc is not None and proc.poll() is None:
        if not signalled:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def in_process_floor(name: str, version: str) -> dict[str, float]:
    """In-process medians: one record through the service's predictor (validation + model) and through the
    raw pipeline (ms), and the per-record cost (us) of each step of a 1,000-record request."""
    import mlflow
    import pandas as pd

    from core.registry import model_metadata, model_uri
    from model_service.served_model import build_loaded_model

    meta = model_metadata(name, version)
    pipe = mlflow.sklearn.load_model(model_uri(name, version))
    loaded = build_loaded_model(name, version, "champion", pipe, meta)
    fast = timed(lambda: loaded.predict(loaded.validator.validate([dict(RECORD)])), 300) * 1000
    frame = pd.DataFrame([RECORD]).astype({k: "float64" for k, v in RECORD.items() if not isinstance(v, str)})
    slow = timed(lambda: pipe.predict_proba(frame), 100) * 1000
    return {"one": fast, "pipeline_one": slow, **per_record_costs(loaded)}


def timed(fn, n: int) -> float:
    """Median seconds of `fn` over n calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


NOTE = (
    "What was measured and decided (the 2026-11 performance pass): before it, batches of 100 gave 10"
    "-15k records/s and batches of 1,000 about 24k, with the log writer ~70% of the workers' CPU sam"
    "ples (py-spy). Kept: orjson for request bodies, responses, log features and spool lines (`model"
    "_service/jsonfast.py`, with exact `json.loads` semantics: bodies orjson would read differently "
    "go to json; unit-tested), rows handed to the writer as tuples and bound column by column (one D"
    "ateTime processor call per request instead of per record), one `executemany` per batch, and no "
    "separate `request_id` index (the unique (request_id, record_index) index serves those lookups):"
    " the writer's cost per record fell from ~59 to ~15 us in the same run. WAL with `synchronous=NO"
    "RMAL` was already set for SQLite URLs. Not done: a separate writer process (the rows would have"
    " to be serialised again to cross the process boundary, and on 2 saturated cores total CPU per r"
    "ecord, not the GIL, is the limit; sqlite3 releases the GIL while it steps)."
)

DURABLE_NOTE = """\
{verdict}

What a 200 guarantees in each mode (docs/api.md, "A 200 means stored"). `write` (the default since
this pass): the request's spool line has been written, i.e. it is in the kernel's page cache, which a
killed worker (SIGKILL, the OOM killer) cannot lose; that is issue 11's durable
acceptance, and the SIGKILL integration tests run in both modes. A power loss or kernel crash can take
the lines written since the worker's last background `fdatasync` (every `LOG_SYNC_SECONDS`, 1 s).
`fsync`: the line is also synced before the 200, so a power loss takes no answered record either; the
opt-in for that safety, at the price shown in the table (each request waits for the disk).

What was measured and decided (the second 2026-12 pass, single records in `write` mode). Where a
request's CPU went, from py-spy (`--gil`) on the two gunicorn workers under wrk and py-spy/cProfile on
the WSGI app in process: gunicorn's own Python (its main loop, HTTP parsing, the hand-off to a
thread, writing the answer) about a third of the GIL time; Flask, flask-smorest, the request metrics
and the headers about a fifth; the view the rest, led by XGBoost's `inplace_predict`, whose Python side
(input type dispatch, the JSON of its arguments and of both array interfaces, a class built per call)
cost more than the trees: ~95 us for one record in a tight loop, where the C call alone takes ~40 us.
Kept, each checked against the path it replaces by a unit test: for 1 to 64 records the fast path calls
the same C function (`XGBoosterPredictFromDense`) itself, with its arguments serialised once
(`core.fastpath.DensePredict`, compared with `inplace_predict` on probe rows when the model is compiled
and not used if anything differs); one record is transformed (`transform_row`, 33 -> 4 us) and range-
checked in plain Python on the same float64 values instead of a numpy call per block and column; the
predict route's metric children are looked up once and one score is observed directly; Flask's
`ensure_sync` (a coroutine check for the view, each flask-smorest wrapper and each hook, about 16 a
request) remembers its answer per function; the security headers take one pass over the response's
headers; API key digests are computed once; request ids are formatted without building a UUID. In
process (WSGI calls without a server, on the shared machine) a single-record request went from about
0.73-0.83 to 0.47-0.52 ms of CPU; under wrk the gunicorn workers' CPU per request from about 1.28 to
1.10 ms and granian's from 1.09 to 0.83 ms (different load averages, 7-10 and 4.5). Inside a request
the trees take ~150 us rather than 40: the rest of the request pushes them out of the CPU caches. Not
changed: the writer thread (at these rates it inserts a batch of 500 every 0.25 s, under 3% of the GIL
samples), the request metrics of prometheus-flask-exporter (multiprocess values: a lock and a pid check
per update); gunicorn's share is its design, granian does that part in Rust.

The server: granian, chosen by this measurement (2026-12-01/02). The same app, settings and durability
ran under gunicorn (gthread, the server until then) and under granian (`model_service/server.py`:
granian's WSGI interface, SERVICE_WORKERS workers x SERVICE_THREADS blocking threads, the prediction
log flushed by each worker after granian has drained it on SIGTERM, the multiprocess metrics folder
emptied at start and a dead worker's live gauges dropped when its replacement starts, the reload thread
started by the app factory in each worker). With `write` (the default), granian met the 10x single-record
floor in every run since the single-record pass (11.8x, 12.0x, 13.7x), gunicorn in one of four (8.8x,
9.4x, 9.5x, 10.3x), and granian's 1,000-record batches stayed above 100k records/s where gunicorn's
did not always (88k in the 2026-12-02 run):
gunicorn's Python main loop, HTTP parsing and thread hand-off cost about 0.3 ms a request, which
granian does in Rust (its /health ceiling is about twice gunicorn's). It keeps the graceful flush, the multiprocess metrics and the reload: the integration tests of worker SIGKILL (no answered
record lost, SQLite and PostgreSQL, fsync and write), reload under load and reload failure, metrics
summed across workers, slow clients, the graceful flush, and the Compose stack test's replica kill and
redeploys run against it, and the durability check above holds. What it gives up against gunicorn:
a request it cannot parse as HTTP (malformed request line or header, more than 100 headers, headers
over 112 KB) gets granian's own 400/431 with an empty body instead of JSON (in the stack nginx answers
those before the service, as JSON: compose/nginx/nginx.conf), and it has no silent-worker timeout
(gunicorn's gthread timeout only fired when a worker's main loop stalled, not for one hung request). With `fsync`, that
pass profiled about two thirds of a single-record request's wall time in the spool's `fdatasync`; the
group commit now overlaps syncs (`Spool.sync`: a request waits only for a sync that started after its
line was written, else starts its own at once; concurrent `fdatasync` calls on one file share the
kernel's journal commit). How loaded the machine is moves the ratio to `mlflow models serve` most:
mlflow loses more to other work than this service does (61 to 133 single-record requests/s in the
first pass's runs at load average 6 to 15, against 214 to 220 on an idle machine), so a ratio measured
under load flatters this service: read it with the load average above.
"""

MLSERVER_NOTE = (
    "How MLServer serves here (1.7.1, read from its code): one process runs the HTTP server (uvicorn and Fa"
    "stAPI on uvloop) and parses the V2 JSON into pydantic models; each request is then pickled onto a mul"
    "tiprocessing queue to one of the `parallel_workers` inference processes (round robin), which decodes "
    "the inputs into a pandas DataFrame (the `pd` codec, column by column), calls the MLflow pyfunc (MLflo"
    "w's schema enforcement, then the sklearn pipeline's `predict_proba`: ColumnTransformer and XGBoost) a"
    "nd sends the [records, 2] float32 output back the same way for the HTTP process to encode. `mlflow mo"
    "dels serve` runs the same pyfunc inside each of its uvicorn worker processes, without the hand-off, "
    "and reads `dataframe_records` (a key per value) where MLServer's body has one array per column. Neith"
    "er authenticates, validates beyond MLflow's schema or logs a record; this service does all three, th"
    "e prediction log durable before the 200 (the rows above)."
)

COST_STEPS = {
    "parse": "JSON parsing of the body (orjson; stdlib json shown for comparison)",
    "parse_stdlib": "(stdlib `json.loads` of the same body, not used)",
    "validate": "validation of the complete batch (type checks, one float matrix, vectorised ranges)",
    "model": "fast path transform + XGBoost `inplace_predict` + labels",
    "respond": "response: one dict per record + orjson",
    "metrics": "metrics: score histogram in bulk, label counters",
    "log_rows": "prediction log: rows handed over (one tuple per record)",
    "log_insert": "prediction log: SQLite insert (orjson features, executemany, commit; 500 a batch)",
}


def per_record_costs(loaded, n: int = 1000) -> dict[str, float]:
    """Microseconds per record of each step of an n-record request, in process (medians)."""
    from model_service import jsonfast
    from model_service import metrics as m
    from model_service.prediction_log.request_ids import new_request_id
    from model_service.prediction_log.store import Item, LogStore, now

    body = json.dumps({"records": [RECORD] * n}).encode()
    reps = 40
    us = {}
    us["parse"] = timed(lambda: jsonfast.loads(body), reps)
    us["parse_stdlib"] = timed(lambda: json.loads(body), reps)
    us["validate"] = (
        timed(lambda: loaded.validator.validate(jsonfast.loads(body)["records"]), reps) - us["parse"]
    )
    batch = loaded.validator.validate(jsonfast.loads(body)["records"])
    us["model"] = timed(lambda: loaded.labels(loaded.predict(batch)), reps)
    scores = loaded.predict(batch)
    labels = loaded.labels(scores)

    def respond() -> str:
        out = [
            {"index": i, "probability": s, "label": lab}
            for i, (s, lab) in enumerate(zip(scores.tolist(), labels.tolist(), strict=True))
        ]
        return jsonfast.dumps({"request_id": "x", "predictions": out})

    us["respond"] = timed(respond, reps)
    hist = m.SCORES.labels("bench")
    us["metrics"] = timed(lambda: (m.observe_many(hist, scores), int(labels.sum())), reps)

    def item(k: int = n) -> Item:
        return Item(new_request_id(), now(), "m", "1", batch.records[:k], scores[:k], labels[:k], 1.0)

    us["log_rows"] = timed(lambda: item().rows(), reps)
    with tempfile.TemporaryDirectory() as tmp:
        store = LogStore(f"sqlite:///{tmp}/bench.db")
        store.ensure_tables()
        us["log_insert"] = timed(lambda: store.insert(item(500).rows()), reps) * n / 500 - us["log_rows"]
        store.engine.dispose()
    return {k: v / n * 1e6 for k, v in us.items()}


def write_section(text: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    current = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"{HEADING}\n\n{text.strip()}\n\n"
    updated = (
        pattern.sub(lambda _m: section, current)
        if pattern.search(current)
        else current.rstrip("\n") + "\n\n" + section
    )
    DOC.write_text(updated.rstrip("\n") + "\n")


SERVERS = {
    "granian": ["{python}", "-m", "model_service.server"],
    "gunicorn": ["{bin}/gunicorn", "-c", "tools/gunicorn_conf.py", "model_service.app:create_app()"],
}
MODES = ("write", "fsync")  # LOG_SYNC: both durability modes are measured, each in its own instance
INSTANCES = [(kind, mode) for kind in SERVERS for mode in MODES]
MLFLOW = "mlflow models serve"
MLSERVER = "MLServer (MLflow runtime)"
MLSERVER_MODEL = "champion"  # the model's name in MLServer's model-settings.json and its V2 URLs
MLSERVER_PACKAGES = (
    "mlserver",
    "mlserver-mlflow",
    "mlflow",
    "scikit-learn",
    "xgboost-cpu",
    "pandas",
    "uvloop",
)
AGREE = 1e-6  # largest difference in probability accepted between two servers' answers for one record


class MLServerUnavailable(RuntimeError):
    """MLServer could not be measured (no venv, it did not start, ...): its rows say why, the rest runs."""


def v2_request(records: list[dict]) -> dict:
    """The V2 inference request body that MLServer's MLflow runtime decodes into the DataFrame the model
    was logged with: one input per column (`pd` content type for the request), numbers as FP64 and
    strings as BYTES with the `str` content type, each of shape [records, 1]. Every record must have
    every column and no missing value."""
    if not records:
        raise ValueError("no records")
    n = len(records)
    inputs = []
    for column in records[0]:
        values = [r[column] for r in records]
        if any(v is None for v in values):
            raise ValueError(f"{column}: missing values are not sent to MLServer")
        if any(isinstance(v, str) for v in values):
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"{column}: strings mixed with other values")
            inputs.append(
                {
                    "name": column,
                    "datatype": "BYTES",
                    "shape": [n, 1],
                    "data": values,
                    "parameters": {"content_type": "str"},
                }
            )
        else:
            inputs.append(
                {"name": column, "datatype": "FP64", "shape": [n, 1], "data": [float(v) for v in values]}
            )
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def v2_probabilities(answer: dict) -> list[float]:
    """The positive class's probability per record from the MLflow runtime's V2 answer to a
    `predict_proba` model: its one output of shape [records, classes], row-major; the last column."""
    outputs = answer.get("outputs") or []
    if len(outputs) != 1:
        raise ValueError(f"expected one output, got {len(outputs)}")
    out = outputs[0]
    shape, data = out["shape"], out["data"]
    rows, width = shape[0], (shape[1] if len(shape) > 1 else 1)
    if len(shape) > 2 or len(data) != rows * width:
        raise ValueError(f"output of shape {shape} with {len(data)} values")
    return [float(data[i * width + width - 1]) for i in range(rows)]


def probe_records(record: dict, example: dict) -> list[dict]:
    """The records every server's answers are checked on: the data set's sample record and the complete
    rows of the model's input example (MLflow's `split` orient: columns + data), in the record's column
    order."""
    records = [dict(record)]
    for row in example.get("data", []):
        candidate = dict(zip(example["columns"], row, strict=True))
        if set(candidate) == set(record) and all(
            v is not None and (isinstance(v, str) or v == v) for v in candidate.values()
        ):
            records.append({k: candidate[k] for k in record})
    return records


def max_difference(ours: list[float], theirs: list[float]) -> float:
    """The largest difference in probability between two servers' answers for the same records."""
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} answers against {len(theirs)}")
    return max(abs(a - b) for a, b in zip(ours, theirs, strict=True))


def mlserver_config(name: str, ports: dict[str, int], workers: int) -> dict[str, dict]:
    """MLServer's settings.json (its ports on the loopback interface, `parallel_workers` inference
    processes: the same number of workers as the other servers) and model-settings.json (the MLflow
    runtime on the model's artifacts in ./model)."""
    return {
        "settings.json": {
            "host": "127.0.0.1",
            "http_port": ports["http"],
            "grpc_port": ports["grpc"],
            "metrics_port": ports["metrics"],
            "parallel_workers": workers,
            "debug": False,
        },
        "model-settings.json": {
            "name": name,
            "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": "./model"},
        },
    }


def mlserver_venv(settings) -> Path:
    return Path(os.environ.get("MLSERVER_VENV") or settings.state_dir / "venvs" / "mlserver")


def mlserver_versions(venv: Path) -> dict[str, str]:
    """The versions of MLServer and the libraries that load the model, as installed in its venv."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *MLSERVER_PACKAGES],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise MLServerUnavailable(f"its venv {venv} does not list its packages: {out.stderr.strip()[-200:]}")
    return json.loads(out.stdout)


def start_mlserver(
    settings, version: str, work: Path, workers: int
) -> tuple[subprocess.Popen, int, dict[str, str], Path]:
    """Download the champion's artifacts through the registry, write MLServer's settings and start it
    from its venv (the repository on PYTHONPATH: the pipeline's FunctionTransformer refers to
    `core.features`). Returns the process, its HTTP port, its versions and the model folder; raises
    MLServerUnavailable when it cannot be started."""
    import mlflow

    from core.registry import model_uri

    venv = mlserver_venv(settings)
    if not (venv / "bin" / "mlserver").exists():
        raise MLServerUnavailable(f"no MLServer venv at {venv} (`make mlserver-venv` builds it)")
    versions = mlserver_versions(venv)
    root = work / "mlserver"
    root.mkdir()
    model = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri(settings.model_name, version), dst_path=str(root / "model")
        )
    )
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    for filename, content in mlserver_config(MLSERVER_MODEL, ports, workers).items():
        (root / filename).write_text(json.dumps(content, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [str(venv / "bin" / "mlserver"), "start", str(root)],
        cwd=root,
        env=env,
        stdout=(work / "mlserver.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc, ports["http"], versions, model


def instance_name(kind: str, mode: str) -> str:
    return f"{kind}-{mode}"


def start_service(
    kind: str, mode: str, work: Path, key: str, workers: int
) -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    root = work / instance_name(kind, mode)
    root.mkdir()
    url = f"sqlite:///{root / 'service.db'}"
    env = {
        **os.environ,
        "PORT": str(port),
        "API_KEYS": key,
        "SERVICE_WORKERS": str(workers),
        "DATABASE_URL": url,
        "SPOOL_DIR": str(root / "spool"),
        "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
        "LOG_LEVEL": "WARNING",
        "LOG_SYNC": mode,
    }
    cmd = [a.format(bin=Path(sys.executable).parent, python=sys.executable) for a in SERVERS[kind]]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=(root / "server.log").open("w"), stderr=subprocess.STDOUT
    )
    return proc, port, url


def log_progress(metrics: str) -> tuple[float, bool]:
    """From a service's /metrics text: the records its prediction log has moved into the database, and
    whether nothing waits any more: no spool segment waits (backlog age 0), or every record scored is
    moved. The second test is needed because the backlog gauges keep the highest value of the live
    processes, and a request worker refreshes its own only when it answers a request: after the load
    stops, a worker's last non-zero age stays published although the writer process has emptied the
    spool."""
    values = {"spool_backlog_age_seconds": 0.0, "written_records_total": 0.0, "replayed_records_total": 0.0}
    scored = 0.0
    for line in metrics.splitlines():
        name, _, value = line.rpartition(" ")
        key = name.removeprefix("model_service_log_")
        if key in values:
            values[key] = float(value)
        elif name.startswith("model_service_prediction_score_count"):
            scored += float(value)
    moved = values["written_records_total"] + values["replayed_records_total"]
    return moved, values["spool_backlog_age_seconds"] == 0 or moved >= scored


def settle(port: int, timeout: float = 300.0) -> None:
    """Wait until a service's prediction log has caught up (`log_progress`, and the records it moved
    stayed the same for 3 s): its writer would otherwise still be inserting during the next row, on the
    same cores, and slow down whichever server is measured next."""
    deadline = time.monotonic() + timeout
    calm, last = 0, -1.0
    while time.monotonic() < deadline and calm < 3:
        moved, empty = log_progress(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)
        calm = calm + 1 if empty and moved == last else 0
        last = moved
        time.sleep(1.0)


def stored_records(url: str, spool: Path) -> int:
    """Records in a prediction log after its service stopped: database rows plus spooled ones (replayed
    at the next start)."""
    from model_service.prediction_log.spool import rows_from_line

    path = url.removeprefix("sqlite:///")
    import sqlite3

    with sqlite3.connect(path) as conn:
        n = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    for seg in spool.rglob("*.jsonl"):
        n += sum(len(rows_from_line(line)) for line in seg.read_text().splitlines() if line.strip())
    return n


def _tail(path: Path, chars: int = 300) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " ".join(text[-chars:].split()) or "empty"


def check_answers(port: int, key: str, mlflow_port: int, mlserver: dict) -> dict[str, str]:
    """Every other server's probabilities for the probe records against this service's: per server, the
    largest difference and whether it is within AGREE, or why it could not be compared."""
    example = {}
    if "model" in mlserver and (mlserver["model"] / "input_example.json").exists():
        example = json.loads((mlserver["model"] / "input_example.json").read_text())
    records = probe_records(RECORD, example)
    floats = [{k: v if isinstance(v, str) else float(v) for k, v in r.items()} for r in records]
    ours = [
        p["probability"]
        for p in requests.post(
            f"http://127.0.0.1:{port}/v1/predict",
            json={"records": records},
            headers={"X-API-Key": key},
            timeout=30,
        ).json()["predictions"]
    ]
    answers: dict[str, list[float] | str] = {}
    try:
        out = requests.post(
            f"http://127.0.0.1:{mlflow_port}/invocations", json={"dataframe_records": floats}, timeout=30
        )
        out.raise_for_status()
        answers[MLFLOW] = [float(row[-1]) for row in out.json()["predictions"]]
    except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
        answers[MLFLOW] = f"no answer to compare ({exc})"
    if "error" not in mlserver:
        try:
            out = requests.post(
                f"http://127.0.0.1:{mlserver['port']}/v2/models/{MLSERVER_MODEL}/infer",
                json=v2_request(floats),
                timeout=30,
            )
            out.raise_for_status()
            answers[MLSERVER] = v2_probabilities(out.json())
        except (requests.RequestException, KeyError, TypeError, ValueError) as exc:
            answers[MLSERVER] = f"no answer to compare ({exc})"
    verdict = {}
    for server, theirs in answers.items():
        if isinstance(theirs, str):
            verdict[server] = theirs
            continue
        diff = max_difference(ours, theirs)
        ok = "agree" if diff <= AGREE else "**DIFFER**"
        verdict[server] = f"{ok}: largest difference {diff:.1e} over {len(records)} records"
    return verdict


def main() -> int:
    from tools.bench_report import champion

    found = champion("bench-serve", needs=("wrk",))
    if found is None:
        return 2
    settings, mv = found
    version = str(mv.version)
    workers = settings.workers
    seconds = int(os.environ.get("BENCH_SECONDS", "15"))
    conns = int(os.environ.get("BENCH_CONNECTIONS", "8"))
    threads = int(os.environ.get("BENCH_THREADS", "2"))
    # local disk (not a tmpfs) under the state folder: the spool's fdatasync costs what it costs in use
    bench_root = settings.state_dir / "bench"
    bench_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=bench_root))
    key = secrets.token_hex(16)
    mlflow_port = free_port()
    procs: dict[object, subprocess.Popen] = {}
    ports: dict[tuple[str, str], int] = {}
    urls: dict[tuple[str, str], str] = {}
    results: dict[tuple, dict] = {}
    answered: dict[tuple[str, str], int] = {}
    stored: dict[tuple[str, str], int] = {}
    load = {"start": os.getloadavg()[0]}
    # MLServer's port, versions, model folder (or "error": why its rows are missing), and "agreement": the
    # answer check of every other server against this service
    mls: dict = {}
    try:
        try:
            procs[MLSERVER], mls["port"], mls["versions"], mls["model"] = start_mlserver(
                settings, version, work, workers
            )
        except (MLServerUnavailable, OSError) as exc:
            mls["error"] = str(exc)
            progress(f"MLServer not measured: {exc}")
        for inst in INSTANCES:
            procs[inst], ports[inst], urls[inst] = start_service(*inst, work, key, workers)
        procs[MLFLOW] = subprocess.Popen(
            [
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{settings.model_name}/{version}",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
                "-w",
                str(workers),
            ],
            cwd=work,
            env={**os.environ},
            stdout=(work / "mlflow.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for inst in INSTANCES:
            wait_http(f"http://127.0.0.1:{ports[inst]}/ready", 180, procs[inst])
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping", 180, procs[MLFLOW])
        if "port" in mls:
            try:
                wait_http(
                    f"http://127.0.0.1:{mls['port']}/v2/models/{MLSERVER_MODEL}/ready",
                    300,
                    procs[MLSERVER],
                )
            except NotReady as exc:
                mls["error"] = f"it did not become ready ({exc}; its log: {_tail(work / 'mlserver.log')})"
                stop(procs.pop(MLSERVER))
        progress("every server answers")
        time.sleep(8)  # every worker of every server loaded (each loads at boot)
        floats = {k: float(v) if not isinstance(v, str) else v for k, v in RECORD.items()}
        mls["agreement"] = check_answers(ports[INSTANCES[0]], key, mlflow_port, mls)
        progress(f"answers: {mls['agreement']}")
        for batch in (1, 1000):
            ours_body = json.dumps({"records": [RECORD] * batch})
            theirs_body = json.dumps({"dataframe_records": [floats] * batch})
            check = requests.post(
                f"http://127.0.0.1:{mlflow_port}/invocations",
                data=theirs_body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            check.raise_for_status()
            results[(MLFLOW, str(batch))] = wrk(
                f"http://127.0.0.1:{mlflow_port}/invocations", theirs_body, {}, work, seconds, conns, threads
            )
            if "error" not in mls:
                results[(MLSERVER, str(batch))] = wrk(
                    f"http://127.0.0.1:{mls['port']}/v2/models/{MLSERVER_MODEL}/infer",
                    json.dumps(v2_request([floats] * batch)),
                    {},
                    work,
                    seconds,
                    conns,
                    threads,
                )
            for inst in INSTANCES:
                r = results[(inst, str(batch))] = wrk(
                    f"http://127.0.0.1:{ports[inst]}/v1/predict",
                    ours_body,
                    {"X-API-Key": key},
                    work,
                    seconds,
                    conns,
                    threads,
                )
                answered[inst] = answered.get(inst, 0) + int(r["requests"] - r["non2xx"]) * batch
                started = time.monotonic()
                settle(ports[inst])
                r["catch_up"] = max(0.0, time.monotonic() - started - 3.0)  # minus the 3 calm polls
        for kind in SERVERS:  # no prediction log on /health: one instance per server
            results[(f"{kind}, GET /health", "0")] = wrk(
                f"http://127.0.0.1:{ports[(kind, MODES[0])]}/health", None, {}, work, seconds, conns, threads
            )
        load["end"] = os.getloadavg()[0]
    finally:
        progress("stopping the servers")
        for proc in procs.values():  # SIGTERM to all first: their graceful stops overlap
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            stop(proc, signalled=True)
    for inst in INSTANCES:
        stored[inst] = stored_records(urls[inst], work / instance_name(*inst) / "spool")
    progress("in-process floor and per-record costs")
    floor = in_process_floor(settings.model_name, version)
    text = report(
        settings, mv, version, workers, seconds, conns, threads, results, answered, stored, floor, load, mls
    )
    write_section(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def ratio_cells(results: dict, server: object, batch: str) -> str:
    """Two table cells: the row's requests/s over MLServer's and over `mlflow models serve`'s at the same
    request size, in this run ("-" for the reference itself, a missing reference or the /health rows)."""
    cells = []
    for reference in (MLSERVER, MLFLOW):
        theirs = results.get((reference, batch))
        if reference == server or theirs is None or not theirs["rps"]:
            cells.append("-")
        else:
            cells.append(f"{results[(server, batch)]['rps'] / theirs['rps']:.2f}x")
    return " | ".join(cells)


def _row(server: str, mode: str, batch: str, r: dict, ratios: str = "- | -") -> str:
    records = f"{r['rps'] * int(batch):,.0f}" if batch != "0" else "-"
    if "catch_up" in r:
        sustained = r["requests"] * int(batch) / (r["seconds"] + r["catch_up"])
        catch_up = f"{r['catch_up']:.1f} | {sustained:,.0f}"
    else:
        catch_up = "- | -"
    return (
        f"| {server} | {mode} | {batch if batch != '0' else '-'} | {r['rps']:,.0f} | {records} | "
        f"{r['p50'] / 1000:.2f} | {r['p95'] / 1000:.2f} | {r['p99'] / 1000:.2f} | {int(r['non2xx'])} | "
        f"{int(r['socket'])} | {catch_up} | {ratios} |"
    )


def mlserver_line(mlserver: dict, workers: int) -> str:
    """The paragraph on MLServer: how it ran and with which versions, or in one line why it did not; and
    how the other servers' answers compared with this service's (its "agreement")."""
    checked = "; ".join(f"{server} {verdict}" for server, verdict in mlserver.get("agreement", {}).items())
    checked = f"Answers checked before the wrk rows against this service's probabilities: {checked}."
    if "error" in mlserver:
        return f"MLServer: not measured in this run: {mlserver['error']}. {checked}"
    v = mlserver["versions"]
    libs = ", ".join(f"{p} {v[p]}" for p in MLSERVER_PACKAGES[2:] if p in v)
    return (
        f"MLServer {v.get('mlserver', '?')} with its MLflow runtime (mlserver-mlflow {v.get('mlserver-mlflow', '?')}; "
        f"{libs}) in its own venv (`make mlserver-venv`: tools/mlserver_venv.sh installs "
        "tools/mlserver-requirements.txt, never the project's lock), on the champion's artifacts downloaded "
        f"through the registry, `parallel_workers` {workers} (inference processes behind its one HTTP "
        "process), its other settings the defaults; asked over the V2 inference protocol "
        f"(`POST /v2/models/{MLSERVER_MODEL}/infer`, one input per column, `pd` content type). {checked}"
    )


def verdicts(results: dict) -> dict[tuple[str, str], float]:
    """Single-record requests/s of each instance over `mlflow models serve`'s, in this run."""
    t1 = results[(MLFLOW, "1")]["rps"]
    return {inst: results[(inst, "1")]["rps"] / t1 for inst in INSTANCES}


def report(
    settings, mv, version, workers, seconds, conns, threads, results, answered, stored, floor, load, mls
) -> str:
    """The section's text; `mls`: MLServer's versions (or why it is missing) and the answer check."""
    order = ", ".join(f"{k} {m}" for k, m in INSTANCES)
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make bench-serve` on {os.cpu_count()} cores "
        f"({platform.machine()}, Python {platform.python_version()}), load average {load['start']:.1f} at "
        f"the start and {load.get('end', float('nan')):.1f} at the end of the wrk rows: model "
        f"`{settings.model_name}` v{version} ({mv.tags.get('algorithm', '?')}), {workers} workers each "
        f"({settings.threads} threads per worker for this service), wrk {threads} threads / {conns} "
        f"connections / {seconds} s per row, load generator on the same machine, rows interleaved (mlflow, "
        f"MLServer, then {order}, for each request size). Durability on in both modes (`LOG_SYNC`, one instance of "
        "each server per mode; SQLite prediction log and spool on local disk): `write`, each request's "
        "spool line written (in the page cache) before its 200; `fsync`, also `fdatasync`ed before it. "
        "The machine is shared with other work, so treat the figures as indicative; ratios within one run "
        "are more stable than absolute values.",
        "",
        mlserver_line(mls, workers),
        "",
        "| server | LOG_SYNC | records per request | requests/s | records/s | p50 ms | p95 ms | p99 ms | "
        "non-2xx | socket errors | log catch-up s | records/s with the catch-up | vs MLServer | vs mlflow |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in ("1", "1000"):
        lines.append(_row(MLFLOW, "-", batch, results[(MLFLOW, batch)], ratio_cells(results, MLFLOW, batch)))
        if (MLSERVER, batch) in results:
            lines.append(
                _row(MLSERVER, "-", batch, results[(MLSERVER, batch)], ratio_cells(results, MLSERVER, batch))
            )
        for kind, mode in INSTANCES:
            inst = (kind, mode)
            lines.append(
                _row(
                    f"this service, {kind}",
                    mode,
                    batch,
                    results[(inst, batch)],
                    ratio_cells(results, inst, batch),
                )
            )
    for kind in SERVERS:
        lines.append(
            _row(
                f"this service, {kind}, GET /health (HTTP ceiling)",
                "-",
                "0",
                results[(f"{kind}, GET /health", "0")],
            )
        )
    lines += [
        "",
        "vs MLServer, vs mlflow: the row's requests/s (so also records/s) over MLServer's and over "
        "`mlflow models serve`'s at the same request size in this run.",
        "",
        "Log catch-up: after a row, the seconds until the service's prediction log had written every "
        "record it accepted to the database (the writer inserts off the request path; a full queue leaves "
        "records in the spool for replay); the last column counts them in, as sustained throughput.",
        "",
        "Durability check after the run (every instance stopped with SIGTERM): records wrk saw answered 200 "
        "vs records in the prediction log (database rows + spooled lines; a request in flight when wrk "
        "stopped may be stored without being counted as answered, so stored >= answered is the pass):",
        "",
        "| server | LOG_SYNC | records answered | records stored | |",
        "|---|---|---:|---:|---|",
    ]
    for kind, mode in INSTANCES:
        inst = (kind, mode)
        ok = "ok" if stored[inst] >= answered[inst] else "**LOST RECORDS**"
        lines.append(f"| {kind} | {mode} | {answered[inst]:,} | {stored[inst]:,} | {ok} |")
    t1 = results[(MLFLOW, "1")]
    cores = os.cpu_count() or 1
    total = sum(v for k, v in floor.items() if k in COST_STEPS and k != "parse_stdlib")
    health = max(results[(f"{k}, GET /health", "0")]["rps"] for k in SERVERS)
    http_us = cores / health * 1e6 / 1000
    lines += [
        "",
        f"In-process floor, one record (median): the service's predictor (validation + numpy fast path) "
        f"{floor['one']:.3f} ms; the sklearn pipeline's `predict_proba` on a one-row DataFrame "
        f"{floor['pipeline_one']:.2f} ms.",
        "",
        "Where a 1,000-record request's CPU goes, per record (in process, medians; every step runs on the "
        "same cores, the prediction log's writer too, so their sum bounds the throughput):",
        "",
        "| step | us per record | records/s of one core if it were the only cost |",
        "|---|---:|---:|",
    ]
    for k, what in COST_STEPS.items():
        rate = "-" if k == "parse_stdlib" else f"{1e6 / floor[k]:,.0f}"
        lines.append(f"| {what} | {floor[k]:.2f} | {rate} |")
    lines += [
        f"| **sum of the steps** | **{total:.2f}** | **{1e6 / total:,.0f}** |",
        f"| HTTP + Flask + auth per request, spread over 1,000 records (from the better /health "
        f"ceiling: {cores} cores / {health:,.0f} requests/s) | {http_us:.2f} | - |",
        "",
        f"On {cores} cores that is a ceiling of about **{cores * 1e6 / (total + http_us):,.0f} records/s**, "
        "before the load generator (wrk, on the same cores) and the kernel take their share.",
        "",
        "Targets, per server and durability mode (single records: >= 10x `mlflow models serve` the floor, "
        "15x the stretch; 1,000-record batches >= 100k records/s):",
        "",
        "| server | LOG_SYNC | single record vs mlflow | p99 vs mlflow's p99 | 1,000-record batches, records/s | "
        "vs MLServer, 1 / 1,000 records |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratios = verdicts(results)
    for kind, mode in INSTANCES:
        inst = (kind, mode)
        o1, ob = results[(inst, "1")], results[(inst, "1000")]
        ratio = ratios[inst]
        verdict = "stretch met" if ratio >= 15 else ("met" if ratio >= 10 else "NOT met")
        recs = ob["rps"] * 1000
        default = " (default)" if mode == type(settings).model_fields["log_sync"].default else ""
        lines.append(
            f"| {kind} | {mode}{default} | **{ratio:.1f}x** ({verdict}) | {o1['p99'] / t1['p99']:.2f} | "
            f"**{recs:,.0f}** ({'met' if recs >= 100_000 else 'NOT met'}) | "
            f"{ratio_cells(results, inst, '1').split(' | ')[0]} / {ratio_cells(results, inst, '1000').split(' | ')[0]} |"
        )
    met = [f"{k} with `{m}` ({r:.1f}x)" for (k, m), r in ratios.items() if r >= 10]
    missed = [f"{k} with `{m}` ({r:.1f}x)" for (k, m), r in ratios.items() if r < 10]
    verdict = "In this run the single-record floor (10x `mlflow models serve`) is " + (
        f"met by {', '.join(met)}" + (f"; not by {', '.join(missed)}." if missed else ".")
        if met
        else "met by no server and mode."
    )
    lines += ["", DURABLE_NOTE.format(verdict=verdict), MLSERVER_NOTE, "", NOTE]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
