"""The docs keep working: runnable commands run, relative links resolve, api.md covers the OpenAPI spec.

Convention (docs/walkthrough.md, "Conventions of these docs"): a fenced code block whose info string is
`bash runnable` holds quick, side-effect-free commands; each non-comment line runs from the repository
root with `bash -c` and must exit 0 within COMMAND_TIMEOUT seconds. Other blocks are examples and are
not run. Links: every `[text](target)` and `![alt](target)` in README.md and docs/*.md outside code
that is not a URL must name an existing file, and its `#anchor` (if any) a heading of that file
(GitHub's anchor rules). Endpoints: the app built in-process by the service's factory publishes its
OpenAPI spec; every `METHOD /path` in it must appear in docs/api.md (with the session's trained
champion, tests/model/test_openapi_with_model.py checks the routes are the same). The diagram:
docs/images/architecture.png must be rendered from the Mermaid block of docs/architecture.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_TIMEOUT = 30
FENCE = re.compile(r"^([ \t]*)(```+|~~~+)([^\n]*)\n(.*?)^\1\2[ \t]*$", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def runnable_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for match in FENCE.finditer(doc.read_text()):
            info = match.group(3).split()
            if info[:2] != ["bash", "runnable"]:
                continue
            for line in match.group(4).splitlines():
                command = line.strip()
                if command and not command.startswith("#"):
                    found.append((_rel(doc), command))
    return found


def strip_fences(text: str) -> str:
    """Markdown without its fenced blocks (line count kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def strip_code(text: str) -> str:
    """Markdown without fenced blocks and inline code (links there are examples, not links)."""
    return INLINE_CODE.sub("", strip_fences(text))


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits, underscore (unicode too)
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in strip_fences(doc.read_text()).splitlines():  # inline code in a heading counts
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_anchor(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    out |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", doc.read_text()))
    return out


def relative_links() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for target in LINK.findall(strip_code(doc.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
                continue
            found.append((_rel(doc), target))
    return found


def test_the_convention_is_used():
    """Some blocks are marked, so the runner has something to run (a typo in the marker shows here)."""
    assert len(runnable_commands()) >= 3


@pytest.mark.parametrize(("doc", "command"), runnable_commands())
def test_runnable_command(doc: str, command: str):
    try:
        out = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{doc}: `{command}` took more than {COMMAND_TIMEOUT} s")
    assert out.returncode == 0, (
        f"{doc}: `{command}` exited {out.returncode}:\n{out.stdout[-800:]}{out.stderr[-800:]}"
    )


def test_every_relative_link_resolves():
    broken = []
    for doc, target in relative_links():
        base = (REPO / doc).parent
        path_part, _, anchor = target.partition("#")
        path = (base / path_part).resolve() if path_part else REPO / doc
        if not path.exists():
            broken.append(f"{doc}: {target} (no such file {path_part})")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{doc}: {target} (no heading #{anchor} in {_rel(path)})")
    assert not broken, "broken links:\n  " + "\n  ".join(broken)


def test_link_checker_catches_breakage(tmp_path: Path):
    """The anchor rules match GitHub's on the kinds of headings these docs use."""
    assert github_anchor("Training on another data set") == "training-on-another-data-set"
    assert github_anchor("GET /health, GET /ready, GET /metrics") == "get-health-get-ready-get-metrics"
    assert github_anchor("The pipeline (`Jenkinsfile`, job `churn-pipeline`)") == (
        "the-pipeline-jenkinsfile-job-churn-pipeline"
    )
    assert github_anchor("POST /v1/predict") == "post-v1predict"
    doc = tmp_path / "x.md"
    doc.write_text("# A\n```\n# not a heading\n```\n## A\n## `make demo` (measured)\n")
    assert anchors(doc) == {"a", "a-1", "make-demo-measured"}


def test_architecture_png_is_rendered_from_its_mermaid_source():
    """docs/images/architecture.png carries the hash of the Mermaid block it was rendered from."""
    from PIL import Image

    from tools.screenshots import mermaid_sha256, mermaid_source

    with Image.open(REPO / "docs" / "images" / "architecture.png") as image:
        stamped = image.text.get("mermaid-sha256")
    assert stamped == mermaid_sha256(mermaid_source()), (
        "the Mermaid diagram in docs/architecture.md changed: run `make diagram` and commit the picture"
    )


def openapi_endpoints(spec: dict) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, ops in spec["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }


def service_openapi(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """/openapi.json of the app built in-process by the service's factory with these settings."""
    from model_service.app import create_app, shutdown_all

    for key, value in {"AUTH_ENABLED": "false", **env}.items():
        monkeypatch.setenv(key, value)
    app = create_app(start_background=False)
    try:
        return app.test_client().get("/openapi.json").get_json()
    finally:
        shutdown_all()


def test_api_md_covers_every_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Routes come from the blueprints, not from the model, so the app is built without one here (the
    registry is unreachable: a few seconds instead of a training run);
    tests/model/test_openapi_with_model.py checks that a trained champion adds no route."""
    spec = service_openapi(
        {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # nothing listens: no model, no wait
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
            "SPOOL_DIR": str(tmp_path / "spool"),
        },
        monkeypatch,
    )
    endpoints = openapi_endpoints(spec)
    assert "POST /v1/predict" in endpoints
    api_md = (REPO / "docs" / "api.md").read_text()
    missing = sorted(e for e in endpoints if e not in api_md)
    assert not missing, f"docs/api.md does not document: {', '.join(missing)}"


def test_readme_layout_table_matches_the_tree():
    """Every folder the repository tracks has a row in the README's Layout table, and every folder a row
    names exists: the table is where a newcomer looks first."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folders = {line.split("/", 1)[0] for line in tracked.splitlines() if "/" in line} - {".ci"}
    section = (REPO / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([\w.-]+)/`", cell)}
    assert folders - named == set(), "folders without a row in the README's Layout table"
    assert named - folders == set(), "rows of the README's Layout table naming no tracked folder"
