"""The service under gunicorn, for `make bench-serve`'s comparison only: `gunicorn -c tools/gunicorn_conf.py
"model_service.app:create_app()"`. The service runs under granian (`model_service/server.py`); this keeps
what gunicorn served with before that choice, so the two are compared like for like.

Every value comes from `model_service.settings` (environment variables). What this file adds:

- refuses to start with a one-line error (exit 2) when the settings are inconsistent, e.g. auth on
  without API_KEYS, before any worker boots;
- Prometheus multiprocess mode: PROMETHEUS_MULTIPROC_DIR is set before prometheus_client is imported
  anywhere (a fresh temporary folder unless configured) and emptied at start; a dead worker's live
  gauges are removed (`child_exit`);
- the prediction log's writer process, as under granian (`model_service.server.WriterSupervisor`:
  started when the arbiter is ready, restarted if it exits, stopped after the workers);
- graceful shutdown: on SIGTERM the workers stop accepting, finish their requests within
  GRACEFUL_TIMEOUT and then hand their spool segments to the writer (`worker_exit`), which moves them
  before it stops (`on_exit`), so nothing accepted is lost;
- errors gunicorn answers itself, before the app sees a request (a request line or header over its
  limits, a malformed request), are JSON like every other error (`{"code", "status", "message"}`),
  with the security headers, not gunicorn's HTML page (`_json_error`, in place of
  `gunicorn.util.write_error`; the workers inherit it through the fork);
- gthread workers (keep-alive connections; the GIL makes more threads useless for CPU work, but they
  keep slow clients from blocking a worker). No preload: each worker loads the model itself, because
  the reload and spool threads must start after the fork.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

import gunicorn.util

from model_service.settings import ServiceSettings, SettingsError

try:
    _settings = ServiceSettings.from_env().check()
except SettingsError as _exc:
    print(f"model_service: configuration error: {_exc}", file=sys.stderr)
    sys.exit(2)


def _json_error(sock, status_int, reason, mesg):
    body = json.dumps({"code": status_int, "status": reason, "message": str(mesg)[:500]}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
        "Cache-Control: no-store\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin1") + body)


gunicorn.util.write_error = _json_error

# the workers read it from the environment (prometheus_client), so a folder we make is exported there
_own_metrics_dir = _settings.prometheus_multiproc_dir is None
_metrics_dir = _settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="model-service-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
worker_class = "gthread"
threads = _settings.threads
timeout = 60  # silent worker limit, seconds (also covers model loading at boot)
graceful_timeout = _settings.graceful_timeout
keepalive = 5
backlog = 2048
accesslog = "-" if _settings.access_log else None
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "model-service"
preload_app = False
control_socket_disable = (
    True  # gunicorn 26's control socket has one default path per user: instances would collide
)


def on_starting(server):
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):
        path = os.path.join(_metrics_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    server.log.info("model service: metrics in %s, %d workers x %d threads", _metrics_dir, workers, threads)


_writer = None


def when_ready(server):
    global _writer
    from model_service.server import WriterSupervisor

    _writer = WriterSupervisor(_metrics_dir, stop_timeout=_settings.graceful_timeout + 10).start()


def child_exit(server, worker):
    from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def worker_exit(server, worker):
    from model_service.app import shutdown_all

    shutdown_all()


def on_exit(server):
    if _writer is not None:
        _writer.stop()  # after the workers: it moves the segments they retired
    if _own_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
