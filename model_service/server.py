"""The model service's HTTP server: `python -m model_service.server` (`make serve`, the image, the stacks).

granian (a Rust HTTP server) runs the Flask app through its WSGI interface: SERVICE_WORKERS worker
processes, each with SERVICE_THREADS blocking threads that run the app. It was chosen over gunicorn by
measurement (docs/benchmarks.md, "Serving": single records 11.8x `mlflow models serve` against
gunicorn's 9.4x on the same machine, same app, same durability). What this module adds to granian:

- refuses to start with a one-line error (exit 2) when the settings are inconsistent, e.g. auth on
  without API_KEYS, before any worker starts;
- Prometheus multiprocess mode: PROMETHEUS_MULTIPROC_DIR is set before prometheus_client is imported
  (a fresh temporary folder unless configured) and emptied at start; the live gauges of a dead worker
  are removed when its replacement starts (granian has no child-exit hook in the main process);
- the prediction log's writer process (`WriterSupervisor`): started beside the workers
  (`python -m model_service.prediction_log.writer_process`), it moves the spool segments the workers
  retire into the database; restarted (after `WRITER_RESTART_SECONDS`) whenever it exits while the
  server runs, its dead gauges dropped; stopped after the workers, so that it moves what they retired;
- graceful shutdown: on SIGTERM granian stops accepting and drains the requests in flight (within
  GRACEFUL_TIMEOUT), then each worker retires its spool segment (`shutdown_all`, run by the worker
  process once the server has returned: granian's workers are multiprocessing children, which skip
  atexit handlers); once the workers are gone the writer gets SIGTERM, moves every segment left into
  the database (within GRACEFUL_TIMEOUT; none while the database is down: they wait for the next start)
  and exits;
- hot reload: each worker calls the app factory itself (`worker_app`), which starts its reload and
  spool threads; a SIGTERM that reaches a worker while it is still loading ends it at once (it has
  accepted nothing yet) instead of being caught by the handler it inherited from the main process;
- a start on a port something already listens on is refused (exit 2, one line naming the port):
  granian's workers bind with SO_REUSEPORT, so a second server would share the port with the first;
- each worker exits when the main process dies, even by SIGKILL (parent-death signal, and a watchdog
  thread): no orphan worker keeps serving the port (`exit_with_parent`);
- a killed worker (SIGKILL, the OOM killer) is replaced (`respawn_failed_workers`) and the writer moves
  its spool segment, so no answered record is lost. A replacement that dies again within 5.5 s of its
  start makes granian stop the whole server (exit 1): a supervisor restarts it (Compose's restart
  policy, systemd), as it would any crashed process.

Request lines and headers are read by the Rust runtime without a Python thread, so a client slow to
send them holds no app thread; one that takes longer than 10 s is disconnected. A body is read by the
app thread (model_service/bodies.py: at most BODY_READERS threads of a worker at once, 503 past it),
with no timeout: granian has none for bodies. Two things granian does differently from gunicorn (docs/api.md, "Errors"): a request it
cannot parse (a malformed request line or header, more than 100 headers, over 112 KB of headers) gets its
own 400/431 with an empty body, before the app; and there is no silent-worker timeout that kills a
worker whose requests hang.
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from model_service.settings import ServiceSettings, SettingsError

HEADER_READ_TIMEOUT_MS = 10_000  # a client has 10 s to send its request line and headers
# request line + headers: granian's read buffer (hyper's max_buf_size). Measured with 64 KB: requests
# are refused (431) from 112 KB of head on; below that they reach the app.
MAX_HEADER_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WRITER_RESTART_SECONDS = 0.5  # pause before a writer process that exited is started again
WRITER_MODULE = "model_service.prediction_log.writer_process"


def _mark_dead_workers(metrics_dir: str) -> None:
    """Drop the live gauges of worker processes that no longer exist (what gunicorn's child_exit did)."""
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


class WriterSupervisor:
    """The prediction log's writer process, kept running while the server runs (a thread of the main
    process waits on it and starts another when it exits), stopped with SIGTERM by `stop`."""

    def __init__(self, metrics_dir: str, stop_timeout: float):
        self.metrics_dir = metrics_dir
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="log-writer-supervisor", daemon=True)

    def start(self) -> WriterSupervisor:
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            # its own session: a Ctrl-C in a terminal reaches the workers, not the writer, which stops
            # only after them (`stop`)
            self.process = subprocess.Popen(
                [sys.executable, "-m", WRITER_MODULE, "--parent", str(os.getpid())], start_new_session=True
            )
            self.starts += 1

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            proc = self.process
            code = proc.wait() if proc is not None else None
            if self._stopping.is_set():
                return
            print(
                f"model service: the prediction log writer (pid {proc.pid if proc else '?'}) exited ({code}); "
                "restarting it",
                file=sys.stderr,
            )
            _mark_dead_workers(self.metrics_dir)
            time.sleep(WRITER_RESTART_SECONDS)
            self._spawn()

    def stop(self) -> int | None:
        """SIGTERM the writer (once the workers are gone: it moves what they retired) and wait for it."""
        with self._lock:
            self._stopping.set()
            proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(
                    "model service: the prediction log writer did not stop in time; killed", file=sys.stderr
                )
                proc.kill()
                proc.wait(10)
        _mark_dead_workers(self.metrics_dir)
        return proc.returncode


def worker_app():
    """The app factory granian calls in each worker process, before the worker installs its own signal
    handlers (it loads the champion: up to a few seconds)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from model_service.app import create_app

    return create_app()


def _empty(folder: str) -> None:
    """Empty the metrics folder in place (it may be a mount point: a volume, a tmpfs)."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def _parent_death_signal(sig: int) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_parent(parent: int, grace: float) -> None:
    """End this worker when the server's main process dies (SIGKILL, the OOM killer), instead of
    serving on as an orphan of PID 1: SIGTERM from the kernel at the parent's death (granian's worker
    then drains and the prediction log is flushed, as on a normal stop), and a watchdog thread that
    sends it where prctl is unavailable and ends the process `grace` seconds later if it is still
    there."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the main process's handler, inherited by fork
    armed = _parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # it died before the signal was armed; nothing accepted yet
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        if not armed:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)  # every answered record is in the spool: the next start replays it

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker(*args, **kwargs):
    """granian's WSGI worker: ends with its parent, flushes the prediction log once it has drained its
    requests."""
    from granian.server.mp import MPServer

    settings = ServiceSettings.from_env()
    parent = multiprocessing.parent_process()  # the main process, as recorded when this one was started
    exit_with_parent(parent.pid if parent else os.getppid(), settings.graceful_timeout + 5)
    _mark_dead_workers(settings.prometheus_multiproc_dir)  # main() exported it
    try:
        MPServer._spawn_wsgi_worker(*args, **kwargs)
    finally:
        from model_service.app import shutdown_all

        shutdown_all()


def _served(host: str, port: int) -> bool:
    """Something is bound to the port: a socket without SO_REUSEPORT cannot bind it. granian's workers
    bind with SO_REUSEPORT, so without this check a second server (or a new one beside the orphaned
    workers of a killed one) would share the port with the first instead of failing."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # granian reports the bad address itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT socket is no server
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def main() -> int:
    try:
        settings = ServiceSettings.from_env().check()
    except SettingsError as exc:
        print(f"model_service: configuration error: {exc}", file=sys.stderr)
        return 2
    if _served(settings.host, settings.port):
        print(
            f"model_service: port {settings.port} on {settings.host} is already served (another server, or "
            "workers left by one): stop it or set PORT",
            file=sys.stderr,
        )
        return 2
    own_dir = settings.prometheus_multiproc_dir is None
    metrics_dir = settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="model-service-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    _empty(metrics_dir)  # values of an earlier run would be summed in

    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    server = Granian(
        "model_service.server:worker_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        workers=settings.workers,
        blocking_threads=settings.threads,
        backlog=2048,
        http="1",
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_READ_TIMEOUT_MS, keep_alive=True, max_buffer_size=MAX_HEADER_BYTES
        ),
        log_level=LogLevels(settings.log_level.lower()),
        log_access=settings.access_log,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=settings.graceful_timeout,
    )
    print(
        f"model service: metrics in {metrics_dir}, {settings.workers} workers x {settings.threads} threads",
        file=sys.stderr,
    )
    writer = WriterSupervisor(metrics_dir, stop_timeout=settings.graceful_timeout + 10).start()
    try:
        server.serve(spawn_target=_worker)
    finally:
        writer.stop()  # after the workers: it moves the segments they retired on their way out
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
