"""Write one section of docs/benchmarks.md, leaving the other sections as they are.

A section runs from its `## Heading` line to the next `## ` heading. Every benchmark script calls
`update_section` with its own heading and a Markdown body (table plus how it was measured).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Measured on this project's reference machine (2 cores, 24 GiB, no GPU) by the `make bench-*` targets;
each section below is rewritten by its own script. Figures are from one run each: the machines are
shared and noisy, so read them as orders of magnitude, not as a contract. No test asserts a time.

Steady state over time, rather than a burst, is `make bench-soak` (section "Soak"): 15 minutes of
open-loop mixed traffic at 70% of capacity against the service with PostgreSQL, minute by minute.
"""


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def update_section(heading: str, body: str, path: Path = BENCHMARKS) -> Path:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {heading}\n\n_Measured {stamp} on {machine()}._\n\n{body.strip()}\n"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")
    return path


def champion(bench: str, needs: tuple[str, ...] = ()):
    """(the service's settings, the registry's champion version) for a bench that serves the champion;
    None, with one line on stderr, when there is none (`make train gate` first) or a program in `needs`
    is not installed (Debian package of the same name)."""
    import shutil

    for program in needs:
        if not shutil.which(program):
            print(f"{bench}: {program} is not installed (apt-get install {program})", file=sys.stderr)
            return None
    from core import registry
    from model_service.settings import ServiceSettings

    settings = ServiceSettings.from_env()
    registry.connect(settings.tracking_uri)
    mv = registry.version_by_alias(settings.model_name, "champion")
    if mv is None:
        print(
            f"{bench}: model '{settings.model_name}' has no champion: run `make train gate` first",
            file=sys.stderr,
        )
        return None
    return settings, mv
