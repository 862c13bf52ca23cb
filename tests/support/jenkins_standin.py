"""A stand-in for the Jenkins controller in the stack test (`make stack-test`): Jenkins itself cannot run
on the build machine (no package and no registry), so this answers the part of Jenkins' remote API the
monitor's retrain trigger uses, and checks each request the way Jenkins would:

- `GET /crumbIssuer/api/json` needs HTTP basic auth (JENKINS_USER + JENKINS_API_TOKEN); it answers a
  crumb bound to a session cookie;
- `POST /job/{JENKINS_RETRAIN_JOB}/buildWithParameters?token={JENKINS_JOB_TOKEN}` needs the same auth,
  the crumb header with the same session cookie, the job's token, and the parameters the job declares
  (jenkins/jobs: REASON, TRIGGER_SOURCE, ...); it answers 201 with a queue item in `Location`;
- a build runs the retrain job's stages as jenkins/retrain.Jenkinsfile defines them (one `make` target
  per stage, read from that file), in this container: the training image, as the real job's agent;
- `GET /job/{job}/api/json`, `/job/{job}/{n}/api/json`, `/job/{job}/lastBuild/api/json` report builds
  (auth needed), `/job/{job}/{n}/consoleText` the log; `GET /login` is the health probe;
- every refused request is counted and listed in `GET /standin/api/json` (no auth; the test reads it).

    python -m tests.support.jenkins_standin        # port 8080 (JENKINS_STANDIN_PORT)
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import yaml

from tools import validate_stack

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jenkins" / "jobs" / "churnops.yaml"


def declared_parameters(job: str = "churn-retrain") -> tuple[str, ...]:
    """The parameters the job declares in jenkins/jobs (what a real Jenkins accepts), read, not copied."""
    for entry in yaml.safe_load(JOBS.read_text()):
        spec = entry.get("job-template") or entry.get("job") or {}
        if spec.get("name") == job:
            return tuple(next(iter(p.values()))["name"] for p in spec.get("parameters", []))
    raise SystemExit(f"jenkins stand-in: {JOBS} declares no job {job!r}")


PARAMETERS = declared_parameters()


def retrain_stages() -> list[tuple[str, str]]:
    """(stage, sh command) of jenkins/retrain.Jenkinsfile, parsed as `make validate-stack` does."""
    stages = validate_stack.jenkinsfile_stages(REPO / "jenkins" / "retrain.Jenkinsfile")
    return [(name, calls[0]) for name, calls in stages.items() if calls]


class Controller:
    def __init__(self) -> None:
        self.user = os.environ.get("JENKINS_USER", "monitor")
        self.api_token = os.environ["JENKINS_API_TOKEN"]
        self.job = os.environ.get("JENKINS_RETRAIN_JOB", "churn-retrain")
        self.job_token = os.environ["JENKINS_JOB_TOKEN"]
        self.sessions: dict[str, str] = {}  # session cookie -> crumb
        self.builds: list[dict] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.queue_lock = threading.Lock()  # disableConcurrentBuilds: one build at a time

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.user) and hmac.compare_digest(token, self.api_token)

    def refuse(self, why: str) -> None:
        with self.lock:
            self.refused.append(why)
        print(f"jenkins-standin: refused: {why}", flush=True)

    def start_build(self, parameters: dict[str, str]) -> dict:
        with self.lock:
            build = {
                "number": len(self.builds) + 1,
                "queueId": len(self.builds) + 1,
                "building": False,
                "result": None,
                "parameters": parameters,
                "queued_at": time.time(),
                "started_at": None,
                "finished_at": None,
                "stages": [],
                "log": "",
            }
            self.builds.append(build)
        threading.Thread(target=self.run_build, args=(build,), daemon=True).start()
        return build

    def run_build(self, build: dict) -> None:
        with self.queue_lock:
            build["building"], build["started_at"] = True, time.time()
            env = {**os.environ, **build["parameters"], "BUILD_NUMBER": str(build["number"])}
            env.pop("JENKINS_API_TOKEN", None)
            result = "SUCCESS"
            for stage, command in retrain_stages():
                started = time.time()
                print(f"jenkins-standin: build {build['number']} stage {stage}: {command}", flush=True)
                out = subprocess.run(
                    command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, check=False
                )
                build["log"] += f"[{stage}] $ {command}\n{out.stdout}{out.stderr}\n"
                build["stages"].append(
                    {
                        "name": stage,
                        "command": command,
                        "exit_code": out.returncode,
                        "seconds": time.time() - started,
                    }
                )
                print(out.stdout[-3000:] + out.stderr[-3000:], flush=True)
                if out.returncode != 0:
                    result = "FAILURE"
                    break
            build["building"], build["result"], build["finished_at"] = False, result, time.time()
            print(f"jenkins-standin: build {build['number']} finished: {result}", flush=True)


def public(build: dict) -> dict:
    return {k: v for k, v in build.items() if k != "log"}


def make_handler(ctl: Controller):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request on stdout
            print(f"jenkins-standin: {self.command} {self.path.split('?')[0]} -> {args[1]}", flush=True)

        def send(self, code: int, body: object = "", headers: dict[str, str] | None = None) -> None:
            data = (json.dumps(body) if not isinstance(body, str) else body).encode()
            self.send_response(code)
            self.send_header(
                "Content-Type", "application/json" if not isinstance(body, str) else "text/plain"
            )
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def cookie(self) -> str:
            for part in (self.headers.get("Cookie") or "").split(";"):
                key, _, value = part.strip().partition("=")
                if key == "JSESSIONID":
                    return value
            return ""

        def job_route(self, path: str) -> list[str] | None:
            prefix = f"/job/{ctl.job}/"
            return path[len(prefix) :].strip("/").split("/") if path.startswith(prefix) else None

        def do_GET(self):
            path = unquote(urlparse(self.path).path)
            if path in ("/login", "/"):
                return self.send(200, "Jenkins stand-in\n")
            if path == "/standin/api/json":
                with ctl.lock:
                    return self.send(200, {"builds": [public(b) for b in ctl.builds], "refused": ctl.refused})
            if not ctl.authorised(self.headers.get("Authorization")):
                ctl.refuse(f"GET {path}: no or wrong credentials")
                return self.send(401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="Jenkins"'})
            if path == "/crumbIssuer/api/json":
                session, crumb = secrets.token_hex(16), secrets.token_hex(32)
                with ctl.lock:
                    ctl.sessions[session] = crumb
                return self.send(
                    200,
                    {
                        "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                        "crumb": crumb,
                        "crumbRequestField": "Jenkins-Crumb",
                    },
                    {"Set-Cookie": f"JSESSIONID={session}; Path=/; HttpOnly"},
                )
            route = self.job_route(path + "/")
            if route is None:
                return self.send(404, "Not Found\n")
            with ctl.lock:
                builds = list(ctl.builds)
            if route in ([""], ["api", "json"]):
                return self.send(200, {"name": ctl.job, "builds": [public(b) for b in builds]})
            if route[0] == "lastBuild":
                route = [str(builds[-1]["number"]) if builds else "0", *route[1:]]
            if route[0].isdigit() and 0 < int(route[0]) <= len(builds):
                build = builds[int(route[0]) - 1]
                if route[1:] == ["consoleText"]:
                    return self.send(200, build["log"])
                return self.send(200, public(build))
            return self.send(404, "Not Found\n")

        def do_POST(self):
            url = urlparse(self.path)
            path = unquote(url.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            if not ctl.authorised(self.headers.get("Authorization")):
                ctl.refuse(f"POST {path}: no or wrong credentials")
                return self.send(401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="Jenkins"'})
            with ctl.lock:
                crumb = ctl.sessions.get(self.cookie())
            if crumb is None or not hmac.compare_digest(crumb, self.headers.get("Jenkins-Crumb") or ""):
                ctl.refuse(f"POST {path}: no valid crumb for this session")
                return self.send(403, "No valid crumb was included in the request\n")
            if path.rstrip("/") != f"/job/{ctl.job}/buildWithParameters":
                ctl.refuse(f"POST {path}: not the retrain job's buildWithParameters")
                return self.send(404, "Not Found\n")
            token = (parse_qs(url.query).get("token") or [""])[0]
            if not hmac.compare_digest(token, ctl.job_token):
                ctl.refuse(f"POST {path}: wrong or missing job token")
                return self.send(403, "Invalid token\n")
            form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            unknown = sorted(set(form) - set(PARAMETERS))
            if unknown or not form.get("REASON"):
                ctl.refuse(f"POST {path}: parameters {unknown or 'REASON missing'}")
                return self.send(400, f"Bad parameters: {unknown or 'REASON missing'}\n")
            build = ctl.start_build({k: form.get(k, "") for k in PARAMETERS})
            host = self.headers.get("Host") or "jenkins:8080"
            return self.send(201, "", {"Location": f"http://{host}/queue/item/{build['queueId']}/"})

    return Handler


def main() -> int:
    ctl = Controller()
    port = int(os.environ.get("JENKINS_STANDIN_PORT", "8080"))
    stages = ", ".join(f"{name}: {cmd}" for name, cmd in retrain_stages())
    print(f"jenkins-standin: job {ctl.job} on port {port}; a build runs {stages}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), make_handler(ctl)).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
