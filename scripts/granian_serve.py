"""The model service under granian (a Rust HTTP server, WSGI interface): `python -m scripts.granian_serve`.

`make bench-serve` runs it next to gunicorn to choose the server by measurement (docs/benchmarks.md,
Serving); `make serve` and the image run gunicorn (`model_service/gunicorn_conf.py`). It keeps what the
gunicorn configuration keeps, so the comparison is like for like (the integration tests of worker kill,
reload under load, metrics across workers and slow clients pass against it):

- refuses to start with a one-line error (exit 2) when the settings are inconsistent, before any worker;
- Prometheus multiprocess mode: PROMETHEUS_MULTIPROC_DIR set before prometheus_client is imported (a
  fresh temporary folder unless configured), emptied at start; the live gauges of a dead worker are
  removed when its replacement starts (granian has no child-exit hook in the main process);
- graceful shutdown: on SIGTERM granian stops accepting and drains the requests in flight, then each
  worker flushes its prediction log (`shutdown_all`, run by the worker process once the server has
  returned: granian's workers are multiprocessing children, which skip atexit handlers);
- hot reload: each worker calls the app factory itself, which starts its reload and log-writer threads;
- a killed worker (SIGKILL, OOM) is replaced (`respawn_failed_workers`), and its spool segment replayed.

GUNICORN_WORKERS and GUNICORN_THREADS size it too (workers, blocking threads per worker). Headers are
read by the Rust runtime without a Python thread, so a slow client holds none until its request is
complete. What it does not do (why gunicorn stays, for now): a request it cannot parse gets a bare 400
without a body, and there is no silent-worker timeout (GUNICORN_TIMEOUT is ignored).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from model_service.settings import ServiceSettings, SettingsError


def _mark_dead_workers(metrics_dir: str) -> None:
    """Drop the live gauges of worker processes that no longer exist (what gunicorn's child_exit does)."""
    from prometheus_client import multiprocess

    pids = set()
    for name in os.listdir(metrics_dir):
        stem = name.removesuffix(".db")
        if name.startswith("gauge_live") and stem.rsplit("_", 1)[-1].isdigit():
            pids.add(int(stem.rsplit("_", 1)[-1]))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, metrics_dir)
        except PermissionError:
            pass


def _worker(*args, **kwargs):
    """granian's WSGI worker, with the prediction log flushed once it has drained its requests."""
    from granian.server.mp import MPServer

    _mark_dead_workers(ServiceSettings.from_env().prometheus_multiproc_dir)  # main() exported it
    try:
        MPServer._spawn_wsgi_worker(*args, **kwargs)
    finally:
        from model_service.app import shutdown_all

        shutdown_all()


def main() -> int:
    try:
        settings = ServiceSettings.from_env().check()
    except SettingsError as exc:
        print(f"model_service: configuration error: {exc}", file=sys.stderr)
        return 2
    own_dir = settings.prometheus_multiproc_dir is None
    metrics_dir = settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="model-service-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    shutil.rmtree(metrics_dir, ignore_errors=True)  # values of an earlier run would be summed in
    os.makedirs(metrics_dir)

    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    server = Granian(
        "model_service.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        workers=settings.workers,
        blocking_threads=settings.threads,
        backlog=2048,
        http="1",
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=10_000, keep_alive=True),
        log_level=LogLevels(settings.log_level.lower()),
        log_access=settings.access_log is not None,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=settings.graceful_timeout,
    )
    try:
        server.serve(spawn_target=_worker)
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
