"""Where monitoring HTML reports go: a local folder (default var/reports/monitoring) or S3/MinIO.

MONITOR_REPORTS_URI is a folder path, or `s3://bucket/prefix` with S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (the `minio` client; the bucket is created when missing). `save` returns the URI
stored in the `monitoring_runs` row: an absolute file path, or `s3://bucket/key`.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlparse

from monitoring.settings import MonitorSettings


def save(settings: MonitorSettings, name: str, content: bytes, content_type: str = "text/html") -> str:
    uri = settings.reports_uri
    if not uri.startswith("s3://"):
        folder = Path(uri)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(content)
        return str(path)
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    key = f"{prefix}/{name}" if prefix else name
    client = s3_client(settings)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    client.put_object(bucket, key, io.BytesIO(content), len(content), content_type=content_type)
    return f"s3://{bucket}/{key}"


def with_section(page: bytes, section: str) -> bytes:
    """`section` (HTML) at the top of the page's body: the drift policy's verdict above Evidently's report."""
    if not section:
        return page
    text = page.decode("utf-8")
    at = text.find("<body")
    at = text.find(">", at) + 1 if at >= 0 else 0
    return (text[:at] + section + text[at:]).encode("utf-8")


def load(settings: MonitorSettings, uri: str) -> bytes:
    if not uri.startswith("s3://"):
        return Path(uri).read_bytes()
    parsed = urlparse(uri)
    response = s3_client(settings).get_object(parsed.netloc, parsed.path.lstrip("/"))
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def s3_client(settings: MonitorSettings):
    from minio import Minio

    endpoint = urlparse(settings.s3_endpoint or "http://localhost:9000")
    return Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key or None,
        secret_key=settings.s3_secret_key or None,
        secure=endpoint.scheme == "https",
        region="us-east-1",
    )
