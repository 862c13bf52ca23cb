"""`make test` installs the Debian packages its tests run as root; without root it names what is
missing and stops (tools/system_packages.sh)."""

from __future__ import annotations

import os
import subprocess

from core.settings import REPO_ROOT

SCRIPT = REPO_ROOT / "tools" / "system_packages.sh"


def test_without_root_the_missing_packages_are_named_and_it_stops():
    # no command on PATH: every package counts as missing
    command = ["env", "PATH=/nonexistent", "/bin/bash", str(SCRIPT)]
    if os.geteuid() == 0:  # run it as an unprivileged user
        command = ["su", "nobody", "-s", "/bin/bash", "-c", " ".join(command)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    for package in ("postgresql", "prometheus", "prometheus-alertmanager", "groovy", "default-jre-headless"):
        assert package in lines[0]
    assert "apt-get install" in lines[0]
