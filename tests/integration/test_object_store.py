"""core.objects.ObjectStore behaves the same on a folder and on an S3 server (moto)."""

from __future__ import annotations

import pytest

from core.objects import read_uri

pytestmark = pytest.mark.integration


def test_put_get_list_delete(object_store):
    assert list(object_store.names()) == []  # an empty (or missing) root lists nothing
    uri = object_store.put("day=2026-12-01/part-0.parquet", b"first")
    object_store.put("day=2026-12-02/part-0.parquet", b"second")
    object_store.put("readme.txt", b"third")
    assert object_store.get("day=2026-12-01/part-0.parquet") == b"first"
    assert read_uri(uri, client=getattr(object_store, "_client", None)) == b"first"
    assert sorted(object_store.names()) == [
        "day=2026-12-01/part-0.parquet",
        "day=2026-12-02/part-0.parquet",
        "readme.txt",
    ]
    assert sorted(object_store.names("day=2026-12-02")) == ["day=2026-12-02/part-0.parquet"]
    object_store.put("readme.txt", b"replaced")  # a second put replaces whole
    assert object_store.get("readme.txt") == b"replaced"
    object_store.delete("readme.txt")
    assert "readme.txt" not in set(object_store.names())
    with pytest.raises(Exception):  # noqa: B017 - a folder raises OSError, S3 a minio S3Error
        object_store.get("readme.txt")
