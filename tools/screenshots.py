"""Retake every picture in docs/images/ from scratch: `make screenshots` (`python -m tools.screenshots`).

On a throwaway store under /tmp (never var/), in this order:
1. `make demo` (operations/demo.py) with DEMO_DIR in that store: train and gate v1, serve, normal and drifted
   traffic with feedback, monitor runs (the drift report), the triggered retrain to v2, rollback to v1.
   Its console output is kept for the timeline picture.
2. The model service (granian) and `mlflow server` on that store, on free loopback ports.
3. Headless Chromium (Debian's `chromium`, driven by playwright-core from tools/screenshots.cjs):
   - architecture.png   the Mermaid diagram of docs/architecture.md, rendered with a local mermaid.min.js
   - swagger-predict.png Swagger UI: Authorize, POST /v1/predict, Try it out, Execute, the answer
   - mlflow-runs.png    MLflow UI: the experiment's runs
   - mlflow-model.png   MLflow UI: the registered model's versions and aliases
   - drift-report.png   the Evidently HTML report of the monitor run that detected drift
   - demo-timeline.png  the demo's output as text
4. Stop what it started; the store is deleted unless --keep.

`--only diagram` (`make diagram`) renders only the architecture diagram (no store, a few seconds). The
diagram's PNG carries the SHA-256 of its Mermaid source (tEXt chunk `mermaid-sha256`); the docs test
fails when the source in docs/architecture.md changed and the picture was not rendered again.
Pictures are written to a temporary folder first and moved into --out only when every one succeeded.
The npm packages (playwright-core, mermaid) live outside the repository in --node-dir; the Makefile
installs them there when missing.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from core.dataset import load_config
from operations import waiting as local_servers

REPO = Path(__file__).resolve().parent.parent
NODE_SCRIPT = REPO / "tools" / "screenshots.cjs"
ARCHITECTURE = REPO / "docs" / "architecture.md"
ALL = ("architecture", "swagger-predict", "mlflow-runs", "mlflow-model", "drift-report", "demo-timeline")
API_KEY = "screenshots-" + "k" * 20  # a throwaway key for a throwaway service on loopback

# The record Swagger UI sends: the data set's example record (a new month-to-month fibre customer).
RECORD = load_config(REPO / "config" / "telco_churn.yaml").example_record


class ShotError(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"screenshots: {msg}", flush=True)


def mermaid_source(markdown: Path = ARCHITECTURE) -> str:
    """The first ```mermaid block of the page: the page is the single source of the picture."""
    match = re.search(r"^```mermaid\n(.*?)^```", markdown.read_text(), flags=re.S | re.M)
    if not match:
        raise ShotError(f"no ```mermaid block in {markdown}")
    return match.group(1)


def mermaid_sha256(source: str) -> str:
    return hashlib.sha256(source.strip().encode()).hexdigest()


def stamp_diagram(png: Path, source: str) -> None:
    """Record the hash of the Mermaid source in the PNG (a tEXt chunk), so a test sees a stale picture."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("mermaid-sha256", mermaid_sha256(source))
    with Image.open(png) as image:
        image.load()
    image.save(png, pnginfo=info, optimize=True)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    try:
        local_servers.wait_http(url, timeout, proc)
    except local_servers.NotReady as exc:
        raise ShotError(str(exc)) from None


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def run_demo(store: Path, env: dict[str, str]) -> str:
    """`make demo` on the throwaway store; returns its console output (printed as it comes)."""
    say(f"running the demo on {store / 'demo'} (a few minutes)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "operations.demo"],
        cwd=REPO,
        env={**env, "DEMO_DIR": str(store / "demo")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write("  | " + line)
        lines.append(line.rstrip("\n"))
    if proc.wait() != 0:
        raise ShotError(f"the demo failed (exit {proc.returncode}); its state is in {store / 'demo'}")
    return "\n".join(lines)


def timeline_html(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        esc = html.escape(line)
        if "FAILED" in line:
            esc = f'<span class="bad">{esc}</span>'
        elif "PASSED" in line or line.startswith("drift onset ->"):
            esc = f'<span class="ok">{esc}</span>'
        elif re.search(r": drift\b|drift onset|retrain triggered|v2 served|rollback", line):
            esc = f'<span class="step">{esc}</span>'
        out.append(esc)
    return out


def drift_report(demo: Path) -> Path:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{demo / 'service' / 'service.db'}")
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "select report_uri from monitoring_runs where status = 'drift' and report_uri is not null "
                "order by id limit 1"
            )
        ).first()
    engine.dispose()
    if row is None:
        raise ShotError("the demo's store has no monitoring run with status 'drift' and a report")
    path = Path(row[0].removeprefix("file://"))
    if not path.exists():
        raise ShotError(f"drift report {path} does not exist")
    return path


def experiment_id(tracking_uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if exp is None:
        raise ShotError(f"no experiment {name!r} in {tracking_uri}")
    return exp.experiment_id


# MLflow 3's UI opens in "GenAI" mode with an assistant panel: switch to "Model training", close the panel.
MLFLOW_SETUP = [
    {"click_text": "Model training", "optional": True},
    {"click_selector": 'button[aria-label="Close"]', "optional": True},
    {"click_selector": 'button[aria-label="Toggle sidebar"]', "optional": True},
]
# Runs table: drop two attribute columns to make room, add the test metrics and the chosen algorithm.
RUN_COLUMNS = ["Dataset", "Source", "test_roc_auc", "test_pr_auc", "test_recall", "model"]


def mlflow_jobs(mlflow_url: str, exp: str, model: str, work: Path) -> list[dict]:
    columns = [{"click_text": "Columns"}, {"wait_ms": 800}]
    columns += [{"click_text": name, "within": "[role=dialog]", "optional": True} for name in RUN_COLUMNS]
    return [
        {
            "kind": "page",
            "url": f"{mlflow_url}/#/experiments/{exp}/runs",
            "steps": [*MLFLOW_SETUP, {"wait_text": "train.py"}, *columns, {"press": "Escape"}],
            "height": 400,
            "out": str(work / "mlflow-runs.png"),
        },
        {
            "kind": "page",
            "url": f"{mlflow_url}/#/models/{model}",
            "steps": [
                *MLFLOW_SETUP,
                {"wait_text": "Versions"},
                {"click_text": "Tags", "optional": True},  # collapse the long champion_history tag
                {"wait_text": "champion"},
            ],
            "height": 1110,
            "out": str(work / "mlflow-model.png"),
        },
    ]


def shoot(jobs: list[dict], node_dir: Path, work: Path) -> None:
    spec = work / "jobs.json"
    spec.write_text(json.dumps({"node_dir": str(node_dir), "chromium": chromium(), "jobs": jobs}))
    code = subprocess.call(["node", str(NODE_SCRIPT), str(spec)], cwd=REPO, timeout=600)
    if code != 0:
        raise ShotError(f"tools/screenshots.cjs failed (exit {code}); see the .failed.png files in {work}")


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise ShotError("Debian's chromium is not installed: apt-get install -y chromium")


def diagram_job(node_dir: Path, out: Path) -> dict:
    return {
        "kind": "mermaid",
        "source": mermaid_source(),
        "mermaid_js": str(node_dir / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"),
        "out": str(out / "architecture.png"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument(
        "--node-dir", type=Path, default=Path(os.environ.get("NODE_DIR") or "/tmp/churnops-node")
    )
    parser.add_argument("--only", choices=("all", "diagram"), default="all")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway store (path is printed)")
    args = parser.parse_args(argv)

    node_dir = args.node_dir.resolve()
    if not shutil.which("node"):
        say("Node.js is not installed (apt-get install -y nodejs npm)")
        return 2
    if not (node_dir / "node_modules" / "playwright-core").is_dir():
        say(f"playwright-core is not installed in {node_dir} (make screenshots installs it)")
        return 2
    store = Path(tempfile.mkdtemp(prefix="churnops-shots-", dir="/tmp"))
    if (REPO / "var") in store.parents:
        raise SystemExit("refusing a store under var/")
    work = store / "png"
    work.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        jobs = [diagram_job(node_dir, work)]
        if args.only == "all":
            base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABASE_URL"))}
            base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
            timeline = run_demo(store, base)
            demo = store / "demo"
            tracking = f"sqlite:///{demo / 'mlflow' / 'mlflow.db'}"
            env = {
                **base,
                "STATE_DIR": str(demo),  # the demo's state: every path derives from it
                "SPOOL_DIR": str(store / "spool"),
                "HOST": "127.0.0.1",
                "PORT": str(local_servers.free_port()),
                "API_KEYS": API_KEY,
                "AUTH_ENABLED": "true",
                "SERVICE_WORKERS": "1",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            }
            service_url = f"http://127.0.0.1:{env['PORT']}"
            say(f"starting the model service on {service_url}")
            procs.append(
                start(
                    [
                        sys.executable,
                        "-m",
                        "model_service.server",
                    ],
                    env,
                    store / "service.log",
                )
            )
            mlflow_port = local_servers.free_port()
            mlflow_url = f"http://127.0.0.1:{mlflow_port}"
            say(f"starting mlflow server on {mlflow_url}")
            procs.append(
                start(
                    [
                        str(Path(sys.executable).parent / "mlflow"),
                        "server",
                        "--backend-store-uri",
                        tracking,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(mlflow_port),
                        "--workers",
                        "1",
                    ],
                    env,
                    store / "mlflow.log",
                )
            )
            wait_http(f"{service_url}/ready", 120, procs[0])
            wait_http(f"{mlflow_url}/health", 120, procs[1])
            model = os.environ.get("MODEL_NAME") or "telco-churn"
            exp = experiment_id(tracking, os.environ.get("MLFLOW_EXPERIMENT") or "churn")
            jobs += [
                {
                    "kind": "swagger",
                    "url": f"{service_url}/docs",
                    "api_key": API_KEY,
                    "body": {"records": [RECORD]},
                    "out": str(work / "swagger-predict.png"),
                },
                *mlflow_jobs(mlflow_url, exp, model, work),
                {
                    "kind": "page",
                    "url": drift_report(demo).as_uri(),
                    # the summary (drifted count and share) is in the timeline; show a drifted feature
                    "steps": [{"wait_text": "Drift in column"}, {"scroll_text": "Drift in column 'tenure'"}],
                    "height": 755,
                    "settle_ms": 3000,
                    "out": str(work / "drift-report.png"),
                },
                {
                    "kind": "pre",
                    "title": "make demo: the closed loop on the embedded default",
                    "html_lines": timeline_html(timeline),
                    "out": str(work / "demo-timeline.png"),
                },
            ]
        shoot(jobs, node_dir, work)
        stamp_diagram(work / "architecture.png", jobs[0]["source"])
        args.out.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            src = Path(job["out"])
            shutil.copyfile(src, args.out / src.name)
            say(f"{args.out / src.name}: {src.stat().st_size // 1024} KiB")
        return 0
    except ShotError as exc:
        say(f"FAILED: {exc}")
        args.keep = True  # the logs, the demo's state and the .failed.png pictures are in the store
        return 1
    finally:
        for proc in procs:
            stop(proc)
        if args.keep:
            say(f"store kept in {store}")
        else:
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
