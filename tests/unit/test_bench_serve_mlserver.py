"""`make bench-serve`'s MLServer rows: the V2 request built from records, its answer read back, the probe
records, the settings that give MLServer the same workers, the per-row ratios, its venv's pins and the
build script's idempotence."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest

from tests.conftest import REPO
from tools import bench_serve as bs

RECORDS = [
    {"tenure": 1, "contract": "Month-to-month", "monthly_charges": 95.5},
    {"tenure": 30, "contract": "Two year", "monthly_charges": 20},
]


def test_v2_request_has_one_input_per_column_in_record_order_with_pandas_content_type():
    body = bs.v2_request(RECORDS)
    assert body["parameters"] == {"content_type": "pd"}
    assert [i["name"] for i in body["inputs"]] == ["tenure", "contract", "monthly_charges"]
    tenure, contract, charges = body["inputs"]
    assert tenure == {"name": "tenure", "datatype": "FP64", "shape": [2, 1], "data": [1.0, 30.0]}
    assert all(isinstance(v, float) for v in tenure["data"] + charges["data"])
    assert contract == {
        "name": "contract",
        "datatype": "BYTES",
        "shape": [2, 1],
        "data": ["Month-to-month", "Two year"],
        "parameters": {"content_type": "str"},
    }
    json.dumps(body, allow_nan=False)  # what wrk sends


def test_v2_request_of_the_data_sets_sample_record_covers_every_column():
    body = bs.v2_request([bs.RECORD] * 3)
    assert [i["name"] for i in body["inputs"]] == list(bs.RECORD)
    assert all(i["shape"] == [3, 1] and len(i["data"]) == 3 for i in body["inputs"])


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "no records"),
        ([{"a": 1.0}, {"a": None}], "a: missing values"),
        ([{"a": "x"}, {"a": 2.0}], "a: strings mixed"),
    ],
)
def test_v2_request_refuses_what_the_runtime_would_decode_wrongly(records, message):
    with pytest.raises(ValueError, match=message):
        bs.v2_request(records)


def test_v2_probabilities_take_the_last_column_of_the_row_major_output():
    answer = {
        "model_name": "champion",
        "outputs": [
            {"name": "output-1", "shape": [3, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.2, 0.8, 0.6, 0.4]}
        ],
    }
    assert bs.v2_probabilities(answer) == pytest.approx([0.1, 0.8, 0.4])
    one_column = {"outputs": [{"shape": [2], "data": [0.3, 0.7]}]}
    assert bs.v2_probabilities(one_column) == [0.3, 0.7]


@pytest.mark.parametrize(
    "outputs",
    [
        [],
        [{"shape": [1, 2], "data": [0.5, 0.5]}, {"shape": [1, 2], "data": [0.5, 0.5]}],
        [{"shape": [2, 2], "data": [0.5, 0.5, 0.5]}],
        [{"shape": [1, 2, 1], "data": [0.5, 0.5]}],
    ],
)
def test_v2_probabilities_refuse_an_answer_of_another_shape(outputs):
    with pytest.raises(ValueError):
        bs.v2_probabilities({"outputs": outputs})


def test_probe_records_add_the_complete_example_rows_in_the_records_column_order():
    record = {"tenure": 1.0, "contract": "Month-to-month"}
    example = {
        "columns": ["contract", "tenure"],
        "data": [["Two year", 40.0], ["One year", float("nan")], [None, 3.0], ["One year", 12.0]],
    }
    probes = bs.probe_records(record, example)
    assert probes == [
        record,
        {"tenure": 40.0, "contract": "Two year"},
        {"tenure": 12.0, "contract": "One year"},
    ]
    assert [list(p) for p in probes] == [["tenure", "contract"]] * 3
    assert bs.probe_records(record, {}) == [record]


def test_max_difference_is_the_largest_gap_and_needs_as_many_answers():
    assert bs.max_difference([0.1, 0.5, 0.9], [0.1, 0.5000004, 0.8999]) == pytest.approx(1e-4)
    assert bs.max_difference([0.2], [0.2]) == 0.0
    with pytest.raises(ValueError):
        bs.max_difference([0.1, 0.2], [0.1])


def test_mlserver_runs_the_mlflow_runtime_with_the_same_number_of_workers_on_loopback():
    config = bs.mlserver_config("champion", {"http": 8001, "grpc": 8002, "metrics": 8003}, workers=3)
    server, model = config["settings.json"], config["model-settings.json"]
    assert server["parallel_workers"] == 3
    assert (server["host"], server["http_port"], server["grpc_port"], server["metrics_port"]) == (
        "127.0.0.1",
        8001,
        8002,
        8003,
    )
    assert model == {
        "name": "champion",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": "./model"},
    }


def _results(ours: float, mlserver: float | None, mlflow: float) -> dict:
    results = {(bs.MLFLOW, "1"): {"rps": mlflow}, (("granian", "write"), "1"): {"rps": ours}}
    if mlserver is not None:
        results[(bs.MLSERVER, "1")] = {"rps": mlserver}
    return results


def test_ratio_cells_divide_the_row_by_mlserver_and_by_mlflow_at_the_same_size():
    results = _results(ours=2000.0, mlserver=400.0, mlflow=160.0)
    assert bs.ratio_cells(results, ("granian", "write"), "1") == "5.00x | 12.50x"
    assert bs.ratio_cells(results, bs.MLSERVER, "1") == "- | 2.50x"
    assert bs.ratio_cells(results, bs.MLFLOW, "1") == "0.40x | -"


def test_ratio_cells_without_mlserver_leave_its_column_empty():
    results = _results(ours=2000.0, mlserver=None, mlflow=160.0)
    assert bs.ratio_cells(results, ("granian", "write"), "1") == "- | 12.50x"
    assert bs.ratio_cells(results, ("granian", "write"), "1000") == "- | -"


def test_mlserver_line_says_in_one_line_why_it_was_not_measured():
    missing = {"error": "no MLServer venv at var/venvs/mlserver", "agreement": {bs.MLFLOW: "agree: x"}}
    line = bs.mlserver_line(missing, 2)
    assert "\n" not in line
    assert line.startswith("MLServer: not measured in this run: no MLServer venv at var/venvs/mlserver.")
    assert f"{bs.MLFLOW} agree: x" in line


def test_mlserver_line_names_its_versions_workers_and_the_answer_check():
    versions = {p: f"{i}.0" for i, p in enumerate(bs.MLSERVER_PACKAGES)}
    agreement = {bs.MLFLOW: "agree: a", bs.MLSERVER: "**DIFFER**: b"}
    line = bs.mlserver_line({"versions": versions, "agreement": agreement}, 2)
    assert line.startswith("MLServer 0.0 with its MLflow runtime (mlserver-mlflow 1.0; mlflow 2.0, ")
    assert "`parallel_workers` 2" in line and "make mlserver-venv" in line
    assert f"{bs.MLSERVER} **DIFFER**: b" in line


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_mlserver_venv_loads_the_model_with_the_locks_versions():
    lock = _pins(REPO / "requirements.lock")
    mlserver = _pins(REPO / "tools" / "mlserver-requirements.txt")
    assert {"mlserver", "mlserver-mlflow"} <= set(mlserver)
    for name in (
        "mlflow",
        "scikit-learn",
        "xgboost-cpu",
        "pandas",
        "numpy",
        "scipy",
        "cloudpickle",
        "pyyaml",
    ):
        assert mlserver[name] == lock[name], f"{name}: tools/mlserver-requirements.txt differs from the lock"
    assert "mlserver" not in lock and "mlserver-mlflow" not in lock


def _venv_script(venv, python: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLSERVER_VENV": str(venv), "PYTHON": python}
    return subprocess.run(
        [str(REPO / "tools" / "mlserver_venv.sh")], env=env, capture_output=True, text=True, timeout=60
    )


def test_mlserver_venv_is_not_rebuilt_for_the_same_requirements_and_is_for_others(tmp_path):
    venv = tmp_path / "mlserver"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "mlserver").write_text("#!/bin/sh\n")
    (venv / "bin" / "mlserver").chmod(0o755)
    digest = hashlib.sha256((REPO / "tools" / "mlserver-requirements.txt").read_bytes()).hexdigest()
    (venv / ".requirements-sha256").write_text(digest + "\n")
    same = _venv_script(venv, python="false")  # a build would fail at once: `false -m venv`
    assert same.returncode == 0 and same.stdout == ""
    assert (venv / "bin" / "mlserver").exists()

    (venv / ".requirements-sha256").write_text("0" * 64 + "\n")
    changed = _venv_script(venv, python="false")
    assert changed.returncode != 0
    assert "building" in changed.stdout
    assert not (venv / "bin" / "mlserver").exists()  # the stale venv was removed before the rebuild


METRICS = """# HELP model_service_log_spool_backlog_age_seconds Age of the oldest spool segment
model_service_log_spool_backlog_age_seconds {age}
model_service_prediction_score_count{{model_version="2"}} {scored_2}
model_service_prediction_score_count{{model_version="3"}} 10.0
model_service_log_written_records_total {written}
model_service_log_replayed_records_total 5.0
"""


def test_log_progress_sees_the_log_caught_up_despite_a_stale_backlog_gauge():
    # after the load, a request worker's last backlog age stays published: every scored record moved
    moved, empty = bs.log_progress(METRICS.format(age=0.83, scored_2=1467.0, written=1472.0))
    assert (moved, empty) == (1477.0, True)


def test_log_progress_waits_while_records_are_not_moved_and_a_segment_waits():
    assert bs.log_progress(METRICS.format(age=0.83, scored_2=1467.0, written=1000.0)) == (1005.0, False)
    assert bs.log_progress(METRICS.format(age=0.0, scored_2=1467.0, written=1000.0)) == (1005.0, True)


def test_without_its_venv_mlserver_is_reported_missing_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSERVER_VENV", str(tmp_path / "nowhere"))
    settings = type("S", (), {"state_dir": tmp_path, "model_name": "m"})()
    with pytest.raises(bs.MLServerUnavailable, match=r"no MLServer venv at .*nowhere \(`make mlserver-venv`"):
        bs.start_mlserver(settings, "1", tmp_path, workers=2)
    assert not (tmp_path / "mlserver").exists()  # no download, no settings written
    monkeypatch.delenv("MLSERVER_VENV")
    assert bs.mlserver_venv(settings) == tmp_path / "venvs" / "mlserver"
