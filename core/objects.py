"""Object storage: a local folder or an S3 bucket (`s3://bucket/prefix`), one small API for both.

Monitoring reports, the prediction-log archive and backups go through `ObjectStore`; S3 is reached with
the `minio` client at S3_ENDPOINT_URL with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (`S3Access`, read by
every settings class that stores objects). A bucket is created on the first write when missing. Names
are relative to the store's root (`/`-separated); `uri(name)` is what a database row keeps: an absolute
file path, or `s3://bucket/key`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


@dataclass(frozen=True)
class S3Access:
    """Where the S3 API answers and with which keys (empty: anonymous, e.g. a test server)."""

    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""

    @classmethod
    def of(cls, settings: Any) -> S3Access:
        """From a settings object with `s3_endpoint`, `s3_access_key`, `s3_secret_key` fields."""
        return cls(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)


def s3_client(access: S3Access):
    from minio import Minio

    endpoint = urlparse(access.endpoint or "http://localhost:9000")
    return Minio(
        endpoint.netloc,
        access_key=access.access_key or None,
        secret_key=access.secret_key or None,
        secure=endpoint.scheme == "https",
        region="us-east-1",
    )


class ObjectStore:
    """A folder (any path) or `s3://bucket/prefix`."""

    def __init__(self, uri: str, access: S3Access | None = None):
        self.root = uri
        self.is_s3 = uri.startswith("s3://")
        if self.is_s3:
            parsed = urlparse(uri)
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
            self._client = s3_client(access or S3Access())
            self._bucket_checked = False
        else:
            self.folder = Path(uri)

    def _key(self, name: str) -> str:
        name = name.strip("/")
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}" if self.is_s3 else str(self.folder / name)

    def put(self, name: str, content: bytes, content_type: str = "application/octet-stream") -> str:
        """Write `content` as `name` (whole: a file is written beside and renamed); returns its URI."""
        if not self.is_s3:
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
            partial.write_bytes(content)
            partial.replace(path)
            return str(path)
        if not self._bucket_checked:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
            self._bucket_checked = True
        self._client.put_object(
            self.bucket, self._key(name), io.BytesIO(content), len(content), content_type=content_type
        )
        return self.uri(name)

    def get(self, name: str) -> bytes:
        if not self.is_s3:
            return (self.folder / name).read_bytes()
        return read_uri(f"s3://{self.bucket}/{self._key(name)}", client=self._client)

    def names(self, prefix: str = "") -> Iterator[str]:
        """Every object under `prefix` (relative names, sorted for a folder; S3's own order)."""
        if not self.is_s3:
            base = self.folder / prefix if prefix else self.folder
            if not base.exists():
                return
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    yield path.relative_to(self.folder).as_posix()
            return
        if not self._client.bucket_exists(self.bucket):
            return
        skip = len(self.prefix) + 1 if self.prefix else 0
        for obj in self._client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True):
            yield obj.object_name[skip:]

    def delete(self, name: str) -> None:
        if not self.is_s3:
            (self.folder / name).unlink(missing_ok=True)
            return
        self._client.remove_object(self.bucket, self._key(name))


def read_uri(uri: str, access: S3Access | None = None, client: Any = None) -> bytes:
    """The bytes at a URI `ObjectStore.put` returned (a file path or `s3://bucket/key`)."""
    if not uri.startswith("s3://"):
        return Path(uri).read_bytes()
    parsed = urlparse(uri)
    response = (client or s3_client(access or S3Access())).get_object(parsed.netloc, parsed.path.lstrip("/"))
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
