"""Retrain trigger: cooldown and dedupe kept in the database, the Jenkins backend against a local HTTP
server (method, path, job token, crumb, basic auth, parameters), the local backend's log, and the
Alertmanager webhook."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import sqlalchemy as sa

from core import store
from monitoring.settings import MonitorSettings
from monitoring.trigger import RetrainTrigger, job_path
from monitoring.webhook import handle_alerts, make_server
from tests.conftest import LoopbackServer, QuietHandler


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MonitorSettings:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'loop.db'}")
    monkeypatch.setenv("RETRAIN_TRIGGER", "log")
    monkeypatch.setenv("TRIGGER_COOLDOWN_SECONDS", "3600")
    monkeypatch.setenv("TRIGGER_DEDUPE_SECONDS", "7200")
    monkeypatch.setenv("RETRAIN_LOG_DIR", str(tmp_path / "logs"))
    return MonitorSettings.from_env()


def statuses(settings: MonitorSettings) -> list[str]:
    with store.engine_for(settings.database_url).connect() as conn:
        return [
            r.status
            for r in conn.execute(sa.select(store.trigger_events).order_by(store.trigger_events.c.id))
        ]


def age_events(settings: MonitorSettings, seconds: float) -> None:
    """Move every recorded event `seconds` into the past."""
    t = store.trigger_events
    with store.engine_for(settings.database_url).begin() as conn:
        for row in conn.execute(sa.select(t.c.id, t.c.created_at)).all():
            conn.execute(
                t.update()
                .where(t.c.id == row.id)
                .values(
                    created_at=store.as_utc(row.created_at)
                    - __import__("datetime").timedelta(seconds=seconds)
                )
            )


def test_a_drifting_hour_fires_once(settings):
    trigger = RetrainTrigger(settings)
    events = [
        trigger.fire("drift share 0.3", dedupe_key="monitor:drift_share", monitoring_run_id=i)
        for i in range(20)
    ]
    assert [e.status for e in events] == ["fired"] + ["duplicate"] * 19
    # another reason inside the cooldown: held back by the cooldown, not by the dedupe
    other = trigger.fire("live recall 0.41 < floor 0.6", dedupe_key="monitor:quality:recall")
    assert other.status == "cooldown"
    assert "cooldown" in other.detail
    assert statuses(settings) == ["fired"] + ["duplicate"] * 19 + ["cooldown"]


def test_cooldown_over_but_same_key_still_deduped(settings):
    trigger = RetrainTrigger(settings)
    assert trigger.fire("drift", dedupe_key="k1").fired
    age_events(settings, 3601)  # past the cooldown (3600 s), inside the dedupe window (7200 s)
    assert trigger.fire("drift again", dedupe_key="k1").status == "duplicate"
    assert trigger.fire("something else", dedupe_key="k2").fired
    age_events(settings, 7201)
    assert trigger.fire("drift, later", dedupe_key="k1").fired


def test_a_failed_trigger_does_not_block_a_retry(settings, monkeypatch):
    monkeypatch.setenv("RETRAIN_TRIGGER", "jenkins")
    monkeypatch.setenv("JENKINS_URL", "http://127.0.0.1:9")  # nothing listens
    s = MonitorSettings.from_env()
    trigger = RetrainTrigger(s)
    first = trigger.fire("drift", dedupe_key="k")
    assert first.status == "failed"
    assert "ConnectionError" in first.detail
    second = RetrainTrigger(settings).fire("drift", dedupe_key="k")  # log backend now
    assert second.fired


class FakeJenkins(LoopbackServer):
    """Records requests; issues a crumb (tied to a session cookie) unless `crumb` is False."""

    def __init__(
        self,
        crumb: bool = True,
        user: str = "monitor",
        api_token: str = "api-tok",
        job_token: str = "job-tok",
    ):
        self.crumb, self.user, self.api_token, self.job_token = crumb, user, api_token, job_token
        self.requests: list[dict] = []
        outer = self

        class Handler(QuietHandler):
            def _auth_ok(self) -> bool:
                expected = "Basic " + base64.b64encode(f"{outer.user}:{outer.api_token}".encode()).decode()
                return self.headers.get("Authorization") == expected

            def do_GET(self):  # noqa: N802
                outer.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                if self.path == "/crumbIssuer/api/json" and outer.crumb:
                    if not self._auth_ok():
                        return self._reply(401, b"{}")
                    body = json.dumps({"crumb": "crumb-123", "crumbRequestField": "Jenkins-Crumb"}).encode()
                    return self._reply(200, body, cookie="JSESSIONID.x=session-1; Path=/; HttpOnly")
                return self._reply(404, b"not found")

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                outer.requests.append(
                    {
                        "method": "POST",
                        "path": self.path,
                        "headers": dict(self.headers),
                        "form": {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()},
                    }
                )
                url = urlparse(self.path)
                if not self._auth_ok():
                    return self._reply(401, b"bad credentials")
                if parse_qs(url.query).get("token") != [outer.job_token]:
                    return self._reply(403, b"bad job token")
                if outer.crumb and (
                    self.headers.get("Jenkins-Crumb") != "crumb-123"
                    or "session-1" not in (self.headers.get("Cookie") or "")
                ):
                    return self._reply(403, b"No valid crumb was included in the request")
                return self._reply(201, b"", location="http://jenkins/queue/item/7/")

            def _reply(self, code, body, cookie=None, location=None):
                self.send_response(code)
                if cookie:
                    self.send_header("Set-Cookie", cookie)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)

    def use_in(self, monkeypatch, job_token: str, **env: str) -> None:
        """Point the monitor's Jenkins backend at this fake, as user `monitor` with API token `api-tok`."""
        for key, value in {
            "RETRAIN_TRIGGER": "jenkins",
            "JENKINS_URL": self.url,
            "JENKINS_USER": "monitor",
            "JENKINS_API_TOKEN": "api-tok",
            "JENKINS_JOB_TOKEN": job_token,
            **env,
        }.items():
            monkeypatch.setenv(key, value)


@pytest.mark.parametrize("crumb", [True, False], ids=["with-crumb", "csrf-off"])
def test_jenkins_backend(settings, monkeypatch, crumb):
    jenkins = FakeJenkins(crumb=crumb)
    try:
        jenkins.use_in(monkeypatch, "job-tok", JENKINS_RETRAIN_JOB="ml/churn-retrain")
        s = MonitorSettings.from_env()
        figures = {
            "drift_share": 0.2105,
            "drifted_features": ["tenure", "monthly_charges"],
            "prediction_drift_score": 0.26,
            "roc_auc": 0.81,
            "recall": 0.77,
        }
        event = RetrainTrigger(s).fire(
            "drift share 0.21 >= 0.1", dedupe_key="k", monitoring_run_id=42, figures=figures
        )
        assert event.fired, event.detail
        assert "queue/item/7" in event.detail
        post = [r for r in jenkins.requests if r["method"] == "POST"]
        assert len(post) == 1
        req = post[0]
        assert urlparse(req["path"]).path == "/job/ml/job/churn-retrain/buildWithParameters"
        assert parse_qs(urlparse(req["path"]).query) == {"token": ["job-tok"]}
        assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(b"monitor:api-tok").decode()
        if crumb:
            assert req["headers"]["Jenkins-Crumb"] == "crumb-123"
        else:
            assert "Jenkins-Crumb" not in req["headers"]
        form = req["form"]
        assert form["REASON"] == "drift share 0.21 >= 0.1"
        assert form["MONITORING_RUN_ID"] == "42"
        assert form["DRIFT_SHARE"] == "0.2105"
        assert form["DRIFTED_FEATURES"] == "tenure,monthly_charges"
        assert form["PREDICTION_DRIFT_SCORE"] == "0.2600"
        assert form["TRIGGER_SOURCE"] == "monitor"
    finally:
        jenkins.close()


def test_jenkins_refusal_is_a_failed_event(settings, monkeypatch):
    jenkins = FakeJenkins()
    try:
        jenkins.use_in(monkeypatch, "wrong")
        event = RetrainTrigger(MonitorSettings.from_env()).fire("drift", dedupe_key="k")
        assert event.status == "failed"
        assert "403" in event.detail
    finally:
        jenkins.close()


def test_job_path_handles_folders():
    assert job_path("churn-retrain") == "/job/churn-retrain"
    assert job_path("/ml/churn retrain/") == "/job/ml/job/churn%20retrain"


def test_local_backend_runs_the_command_with_its_log(settings, monkeypatch, tmp_path):
    script = "import os; print('retraining because', os.environ['RETRAIN_REASON'])"
    monkeypatch.setenv("RETRAIN_TRIGGER", "local")
    monkeypatch.setenv("RETRAIN_COMMAND", f'{sys.executable} -c "{script}"')
    event = RetrainTrigger(MonitorSettings.from_env()).fire("drift share 0.3", dedupe_key="k")
    assert event.fired, event.detail
    detail = json.loads(event.detail)
    status = Path(detail["status_file"])
    deadline = time.time() + 30
    while not status.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert json.loads(status.read_text())["exit_code"] == 0
    log = Path(detail["log"]).read_text()
    assert "retraining because drift share 0.3" in log
    assert "exit code 0" in log


def test_alertmanager_webhook(settings):
    trigger = RetrainTrigger(settings)
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ChurnDataDrift", "severity": "warning"},
                "annotations": {"summary": "drift share above 0.1 for 10 minutes"},
            },
            {"status": "resolved", "labels": {"alertname": "ChurnLatencyHigh"}},
        ],
    }
    events = handle_alerts(payload, trigger, "telco-churn")
    assert [e.status for e in events] == ["fired"]
    assert events[0].parameters["REASON"] == "alert ChurnDataDrift: drift share above 0.1 for 10 minutes"
    assert events[0].parameters["TRIGGER_SOURCE"] == "alertmanager"
    # Alertmanager re-sends the same alert every repeat_interval: deduplicated
    assert [e.status for e in handle_alerts(payload, trigger, "telco-churn")] == ["duplicate"]


def test_an_alert_without_labels_waits_and_holds_no_cooldown(settings):
    trigger = RetrainTrigger(settings)
    payload = {"alerts": [{"status": "firing", "labels": {"alertname": "ChurnDataDrift"}}]}
    why = "waiting for labels: 12 of the 300 checked records have their label, retrain.min_labels 100"
    [held] = handle_alerts(payload, trigger, "telco-churn", lambda: why)
    assert held.status == "waiting_labels" and held.parameters == {}
    assert statuses(settings) == ["waiting_labels"]
    # the labels are in: the same alert fires (the held row is neither a duplicate nor a cooldown)
    [event] = handle_alerts(payload, trigger, "telco-churn", lambda: None)
    assert event.status == "fired"


def test_webhook_and_metrics_over_http(settings, monkeypatch):
    monkeypatch.setenv("MONITOR_METRICS_PORT", "0")
    monkeypatch.setenv("MONITOR_WEBHOOK_TOKEN", "hook-secret")
    s = MonitorSettings.from_env()
    server = make_server(s, RetrainTrigger(s), host="127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        payload = {"alerts": [{"status": "firing", "labels": {"alertname": "ChurnLiveRecallLow"}}]}
        assert requests.post(f"{base}/alerts", json=payload, timeout=5).status_code == 401
        for wrong in ("Bearer hook-secreT", "Bearer hook-secret2", "hook-secret", "Basic aG9vaw=="):
            refused = requests.post(
                f"{base}/alerts", json=payload, headers={"Authorization": wrong}, timeout=5
            )
            assert refused.status_code == 401, wrong
        assert statuses(s) == []  # nothing refused reached the trigger
        r = requests.post(
            f"{base}/alerts", json=payload, headers={"Authorization": "Bearer hook-secret"}, timeout=5
        )
        assert r.status_code == 200
        assert r.json()["events"][0]["status"] == "fired"
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert "monitor_alert_webhooks_total" in text
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_without_a_token_is_closed(settings, monkeypatch, caplog):
    monkeypatch.setenv("MONITOR_METRICS_PORT", "0")
    monkeypatch.delenv("MONITOR_WEBHOOK_TOKEN", raising=False)
    monkeypatch.delenv("MONITOR_HOST", raising=False)
    s = MonitorSettings.from_env()
    assert s.metrics_host == "127.0.0.1"  # loopback unless the deployment says otherwise
    server = make_server(s, RetrainTrigger(s))
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        payload = {"alerts": [{"status": "firing", "labels": {"alertname": "ChurnLiveRecallLow"}}]}
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
            r = requests.post(f"{base}/alerts", json=payload, headers=headers, timeout=5)
            assert r.status_code == 503
            assert "MONITOR_WEBHOOK_TOKEN" in r.json()["error"]
        assert statuses(s) == []
        assert "MONITOR_WEBHOOK_TOKEN is not set" in caplog.text
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_settings_reject_an_unknown_backend(monkeypatch):
    monkeypatch.setenv("RETRAIN_TRIGGER", "carrier-pigeon")
    with pytest.raises(ValueError, match="RETRAIN_TRIGGER"):
        MonitorSettings.from_env()
    assert os.environ["RETRAIN_TRIGGER"] == "carrier-pigeon"
