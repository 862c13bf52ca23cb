"""Render or push the Jenkins jobs of jenkins/jobs with Jenkins Job Builder.

    python jenkins/render_jobs.py test [-o OUT]            # offline: XML into OUT (tests, make validate-stack)
    python jenkins/render_jobs.py update --url URL         # push to a running Jenkins (compose `jenkins-jobs`)

The job YAML keeps no secret and no site address: {repo_url} and {retrain_token} are supplied here as
JJB "global" defaults, from GIT_REPO_URL and JENKINS_JOB_TOKEN (placeholders in test mode).
`update` authenticates as JENKINS_ADMIN_USER / JENKINS_ADMIN_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

JOBS = Path(__file__).resolve().parent / "jobs"


def _jenkins_jobs() -> str:
    exe = Path(sys.executable).with_name("jenkins-jobs")
    return str(exe) if exe.exists() else "jenkins-jobs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["test", "update"])
    parser.add_argument("-o", "--output", help="test: folder for the rendered XML (default: a temp folder)")
    parser.add_argument("--url", default=os.environ.get("JENKINS_URL", "http://localhost:8080"))
    args = parser.parse_args(argv)

    testing = args.command == "test"
    defaults = {
        "repo_url": os.environ.get("GIT_REPO_URL")
        or ("https://git.example.invalid/churnops.git" if testing else ""),
        "retrain_token": os.environ.get("JENKINS_JOB_TOKEN")
        or ("offline-render-placeholder" if testing else ""),
    }
    missing = [k for k, v in defaults.items() if not v]
    if missing:
        print(f"render_jobs: set {', '.join(missing)} (GIT_REPO_URL, JENKINS_JOB_TOKEN)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        defaults_file = Path(tmp) / "defaults" / "site.yaml"
        defaults_file.parent.mkdir()
        defaults_file.write_text(yaml.safe_dump([{"defaults": {"name": "global", **defaults}}]))
        conf = Path(tmp) / "jenkins_jobs.ini"
        conf.write_text(
            "[job_builder]\nallow_duplicates=False\nkeep_descriptions=False\n\n[jenkins]\n"
            f"url={args.url}\nuser={os.environ.get('JENKINS_ADMIN_USER', 'admin')}\n"
            f"password={os.environ.get('JENKINS_ADMIN_PASSWORD', '')}\nquery_plugins_info=False\n"
        )
        paths = os.pathsep.join([str(JOBS), str(defaults_file.parent)])
        cmd = [_jenkins_jobs(), "--conf", str(conf)]
        if testing:
            out = args.output or str(Path(tmp) / "out")
            cmd += ["test", paths, "-o", out]
        else:
            cmd += ["update", paths]
        result = subprocess.run(cmd, check=False)
        if testing and result.returncode == 0:
            print(f"render_jobs: rendered {len(list(Path(out).iterdir()))} jobs into {out}")
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
