"""Where monitoring HTML reports go: a local folder (default var/reports/monitoring) or S3/MinIO.

MONITOR_REPORTS_URI is a folder path, or `s3://bucket/prefix` with S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (the `minio` client; the bucket is created when missing). `save` returns the URI
stored in the `monitoring_runs` row: an absolute file path, or `s3://bucket/key`.
"""

from __future__ import annotations

from core import objects
from core.objects import ObjectStore, S3Access, read_uri
from monitoring.settings import MonitorSettings


def save(settings: MonitorSettings, name: str, content: bytes, content_type: str = "text/html") -> str:
    return ObjectStore(settings.reports_uri, S3Access.of(settings)).put(name, content, content_type)


def with_section(page: bytes, section: str) -> bytes:
    """`section` (HTML) at the top of the page's body: the drift policy's verdict above Evidently's report."""
    if not section:
        return page
    text = page.decode("utf-8")
    at = text.find("<body")
    at = text.find(">", at) + 1 if at >= 0 else 0
    return (text[:at] + section + text[at:]).encode("utf-8")


def load(settings: MonitorSettings, uri: str) -> bytes:
    return read_uri(uri, S3Access.of(settings))


def s3_client(settings: MonitorSettings):
    return objects.s3_client(S3Access.of(settings))
