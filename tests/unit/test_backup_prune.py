"""`churnops backup` keeps the newest BACKUP_KEEP archives (operations.backup.prune), by their dated names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from operations import backup


def make_archives(folder: Path, n: int) -> list[Path]:
    start = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    paths = [folder / backup.archive_name(start + timedelta(days=i, seconds=i)) for i in range(n)]
    for path in reversed(paths):  # written out of order: the name decides, not the file's age
        path.write_bytes(b"x")
    return paths


def test_keeps_the_newest_n_and_deletes_the_older(tmp_path: Path):
    paths = make_archives(tmp_path, 5)
    (tmp_path / "notes.txt").write_text("not an archive")
    (tmp_path / ".churnops-backup-20261209T020000Z.tar.partial").write_bytes(b"in progress")
    deleted = backup.prune(tmp_path, 2)
    assert deleted == paths[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [paths[3].name, paths[4].name, "notes.txt", ".churnops-backup-20261209T020000Z.tar.partial"]
    )


def test_zero_keeps_all_and_fewer_than_n_deletes_nothing(tmp_path: Path):
    paths = make_archives(tmp_path, 3)
    assert backup.prune(tmp_path, 0) == []
    assert backup.prune(tmp_path, 7) == []
    assert all(p.exists() for p in paths)


def test_archive_names_sort_by_time():
    a = backup.archive_name(datetime(2026, 12, 7, 12, 15, tzinfo=UTC))
    assert a == "churnops-backup-20261207T121500Z.tar"
    assert a < backup.archive_name(datetime(2027, 1, 1, tzinfo=UTC))
