"""The "Stack" table of docs/benchmarks.md, from the stack test's own measurements (`make bench-stack`).

`make stack-test` writes var/stack-test/results-<start>.json, where <start> is how it found the machine:
`cold` (no base image, no project image, no build cache: debootstrap and every build from scratch),
`bases-kept` (debootstrap bases present, project and service images and their cache removed) or
`warm` (images and build cache from an earlier run). This script puts the runs it finds in one table;
it measures nothing itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tools.bench_report import update_section

STATE = Path(__file__).resolve().parent.parent / "var" / "stack-test"
KINDS = ("cold", "bases-kept", "warm")


def row(kind: str, r: dict) -> str:
    images = r.get("image_mb") or {}
    steps = r.get("build_steps") or {}
    base = sum(int(steps.get(k, 0)) for k in ("bases", "docker-tools"))
    services = sum(
        int(steps.get(k, 0)) for k in ("postgres", "prometheus", "alertmanager", "nginx", "registry", "s3")
    )
    return (
        f"| {kind} | {'passed' if r.get('ok') else 'FAILED'} | {r.get('wall_seconds', '-')} | "
        f"{r.get('build_seconds', '-')} ({base} / {services} / {steps.get('project', '-')}) | "
        f"{r.get('warm_build_push_seconds', '-')} | {r.get('start_seconds', '-')} | "
        f"{images.get('service', '-')} / {images.get('monitor', '-')} / {images.get('training', '-')} / "
        f"{images.get('s3', '-')} | "
        f"{r.get('answered', '-')} / {r.get('failed', '-')} / {r.get('stored', '-')} | "
        f"{r.get('rollback_seconds', '-')} | {r.get('guard_seconds', '-')} | "
        f"{r.get('s3_memory', '-')} | {r.get('s3_restart_seconds', '-')} | {r.get('stack_restart_seconds', '-')} "
        f"({r.get('restart_answered', '-')}) | {r.get('promql', '-')} |"
    )


def main() -> int:
    runs = {
        k: json.loads((STATE / f"results-{k}.json").read_text())
        for k in KINDS
        if (STATE / f"results-{k}.json").exists()
    }
    if not runs:
        print("bench-stack: no var/stack-test/results-*.json: run `make stack-test` first")
        return 1
    body = "\n".join(
        [
            "`make stack-test` (tests/support/stack_test.py) on the offline images: engine check, image builds, stack up, the",
            "pipeline's stages in the training image, the drift -> retrain loop, rollback, faults, the guard, restarts, PromQL.",
            "One run per starting state; seconds are wall time on the shared 2-core machine.",
            "",
            "| start | result | whole run s | image builds s (bases / services / project) | Build & Push stage s (rebuild from cache) "
            "| stack start s | image MB service / monitor / training / s3 | requests answered / failed / stored "
            "| rollback s | guard: forced bad model -> good one on every replica s | S3 memory | S3 restart to healthy s "
            "| whole stack down + up s (records answered before down, all stored) | PromQL with data |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(row(kind, r) for kind, r in runs.items()),
            "",
            "cold: no image and no build cache (2026-12-07: the engine already running, `docker system prune -af`",
            "before a clean-clone `CI=true bash .ci/run`; debootstrap and every build from scratch). warm: images and",
            "build cache of an earlier run, here while the native stack test ran beside it for its first 4 minutes.",
            "Build & Push: `make push` in the training image, i.e. `make images` (all cached) and the push of the",
            "four images to the stack's registry (about 4.1 GB uncompressed, gzip on 2 cores).",
            "Stack start: PostgreSQL, S3 (Ceph RGW since 2026-12-07; moto, in memory, before), MLflow, registry,",
            "Prometheus, Alertmanager and the Jenkins stand-in up and healthy (`docker compose up --wait`); the service replicas and the monitor start with the Deploy stage.",
            "Image sizes are `docker image inspect` sizes (uncompressed). Requests: single-record predictions through the",
            "load balancer during a PostgreSQL restart and a replica kill; stored: prediction records in PostgreSQL for",
            "the answered requests.",
        ]
    )
    print(f"bench-stack: {update_section('Stack', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
