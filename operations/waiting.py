"""Helpers for commands and tests that start local servers: a free port, waiting for HTTP or for any
condition. One copy, used by the demo, the benchmarks, the screenshots, the native stack and the tests."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class NotReady(RuntimeError):
    """A server did not answer (or a condition did not hold) in time, or its process exited."""


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status code of GET `url` (None when nothing answered)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.3,
    process: subprocess.Popen | None = None,
) -> T:
    """Call `probe` until it returns something truthy (returned), or raise `NotReady` naming `what`
    after `timeout` seconds, or as soon as `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(f"{what}: the process exited with code {process.returncode}")
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise NotReady(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def wait_http(
    url: str,
    timeout: float = 60.0,
    process: subprocess.Popen | None = None,
    ok: Callable[[int], bool] | None = None,
) -> int:
    """Wait until GET `url` answers with an accepted status (default 200); returns that status."""
    accept = ok or (lambda status: status == 200)

    def probe() -> int | None:
        status = http_status(url)
        return status if status is not None and accept(status) else None

    return wait_until(probe, timeout, f"{url} answering", process=process)
