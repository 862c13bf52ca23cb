"""Backup and restore of the loop's state: `churnops backup` / `churnops restore ARCHIVE [--force]`.

One dated archive (`churnops-backup-20261207T121500Z.tar` in BACKUP_DIR) holds

- the databases (`DATABASES`): the service's store (DATABASE_URL) and MLflow's backend store
  (MLFLOW_TRACKING_URI when it is a database URL; MLFLOW_BACKEND_STORE_URI when the tracking URI is an
  MLflow server): PostgreSQL as `pg_dump --format=custom`, SQLite as a consistent copy made with
  SQLite's online backup API (never a file copy of a live database);
- the object roots (`OBJECT_ROOTS`): MLflow's artifacts, the monitor's reports, the data snapshots,
  the training reports, the prediction-log archive (LOG_ARCHIVE_URI), each a folder or
  s3://bucket/prefix copied object by object through core.objects.ObjectStore;
- `manifest.json` (the last member): when, the code's version, per database its backend, server
  version, schema revision and row counts per table, per object root its count and bytes, and the
  sha256 of every other member.

`restore` checks everything before it changes anything: every member present with its checksum (a
corrupt or partial archive), the service schema revision known to the code's migrations (an archive
from newer code is refused), and an empty target (no row in the service's tables, no registered model,
no object) unless `--force`. Each refusal is one line and exit code 2. A restored service database is
at the archive's revision; the code's migrations (core.store.create_tables, run by the service when it
starts) upgrade an older one. MLflow artifact paths recorded in MLflow's database are moved to the
target's artifact folder when the archive came from another folder (the embedded default).

`backup` keeps the newest BACKUP_KEEP archives in BACKUP_DIR and deletes older ones (0: keep all).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import field_validator
from sqlalchemy import Connection, create_engine, func, inspect, select, table, text
from sqlalchemy.engine import make_url

from core import store
from core.objects import ObjectStore, S3Access
from core.settings import RepoPath, SettingsError, env_field, git_commit, load_or_exit, repo_path, sqlite_url
from monitoring.settings import MonitorSettings
from operations.rollback import with_env_args
from training.settings import TrainingSettings

ARCHIVE_PREFIX = "churnops-backup-"
MANIFEST = "manifest.json"
FORMAT = 1
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)  # Debian's postgresql-client-15; else pg_dump on PATH


class BackupSettings(TrainingSettings, MonitorSettings):
    """Backup and restore (`make backup`, `make restore`): reads the training and monitor settings too."""

    state_paths: ClassVar[dict[str, str]] = {
        **TrainingSettings.state_paths,
        **MonitorSettings.state_paths,
        "backup_dir": "backups",
    }
    derived_defaults: ClassVar[dict[str, str]] = {
        **TrainingSettings.derived_defaults,
        **MonitorSettings.derived_defaults,
    }

    backup_dir: RepoPath | None = env_field("BACKUP_DIR", None, "`make backup` writes its archives here")
    backup_keep: int = env_field(
        "BACKUP_KEEP", 7, "`make backup` keeps the newest N archives in BACKUP_DIR (0: keep all)", ge=0
    )
    mlflow_backend_store_uri: str | None = env_field(
        "MLFLOW_BACKEND_STORE_URI",
        None,
        "backup/restore only: the MLflow server's backend database, when MLFLOW_TRACKING_URI is a server",
    )
    mlflow_artifacts_destination: str | None = env_field(
        "MLFLOW_ARTIFACTS_DESTINATION",
        None,
        "backup/restore only: the MLflow server's artifact root (folder or s3://), when "
        "MLFLOW_TRACKING_URI is a server",
    )

    @field_validator("mlflow_artifacts_destination")
    @classmethod
    def _folder_from_repo(cls, value: str | None) -> str | None:
        """A folder taken from the repository root when relative (as MONITOR_REPORTS_URI); s3:// as given."""
        return value if value is None or value.startswith("s3://") else str(repo_path(value))

    @property
    def mlflow_database(self) -> str | None:
        uri = self.tracking_uri or ""
        return self.mlflow_backend_store_uri if uri.startswith(("http://", "https://")) else uri

    @property
    def mlflow_artifacts(self) -> str | None:
        if (self.tracking_uri or "").startswith(("http://", "https://")):
            return self.mlflow_artifacts_destination
        return str(self.artifact_root)


# What a backup holds: name in the archive -> the settings property giving its URL or URI (None: not
# configured here, skipped). A new store is a new line here.
DATABASES: dict[str, str] = {"service": "database_url", "mlflow": "mlflow_database"}
OBJECT_ROOTS: dict[str, str] = {
    "mlflow-artifacts": "mlflow_artifacts",
    "monitor-reports": "reports_uri",
    "data": "data_dir",
    "training-reports": "reports_dir",
    "log-archive": "log_archive_uri",
}
REQUIRED = {"service", "mlflow"}  # a backup without these is refused (a missing setting)


class Refused(Exception):
    """Why a backup or restore stops before changing anything: one line for the operator."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_name(now: datetime) -> str:
    return f"{ARCHIVE_PREFIX}{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar"


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` archives in `folder` (by their dated names); 0 keeps all."""
    archives = sorted(folder.glob(f"{ARCHIVE_PREFIX}*.tar"))
    old = archives[:-keep] if keep else []
    for path in old:
        path.unlink()
    return old


# ------------------------------------------------------------------------------------------ databases


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy URL as libpq's (no driver suffix), the password in PGPASSWORD, not on a command line."""
    parsed = make_url(url)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def pg_tool(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (Path(folder) / name).exists():
            return str(Path(folder) / name)
    found = shutil.which(name)
    if not found:
        raise Refused(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return found


def run_pg(cmd: list[str], env: dict[str, str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        detail = " ".join((out.stderr or out.stdout).split())[:300]
        raise Refused(f"{Path(cmd[0]).name} failed: {detail}")


def describe(conn: Connection, service: bool) -> dict[str, Any]:
    """Backend, server version, schema revision and row counts of the database `conn` reads."""
    tables = sorted(inspect(conn).get_table_names())
    sqlite = conn.dialect.name == "sqlite"
    version_table = store.VERSION_TABLE if service else "alembic_version"
    return {
        "backend": "sqlite" if sqlite else "postgresql",
        "server_version": sqlite3.sqlite_version
        if sqlite
        else conn.execute(text("SHOW server_version")).scalar(),
        "schema_revision": conn.execute(text(f"SELECT version_num FROM {version_table}")).scalar()
        if version_table in tables
        else None,
        "row_counts": {t: conn.execute(select(func.count()).select_from(table(t))).scalar() for t in tables},
    }


def describe_database(url: str, service: bool) -> dict[str, Any]:
    """`describe` of the database at `url`, as it is now."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return describe(conn, service)
    finally:
        engine.dispose()


def sqlite_copy(source: str, target: Path) -> None:
    """SQLite's online backup API from `source` (a file: URI) into the database file `target`: a
    consistent copy while writers run, and a whole replacement of what `target` held."""
    src, dst = sqlite3.connect(source, uri=True), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def dump_database(url: str, into: Path, service: bool) -> dict[str, Any]:
    """A consistent copy of the database at `url` in the file `into`; `describe` of exactly that copy.

    SQLite: the online backup API, then the copy described. PostgreSQL: one REPEATABLE READ transaction
    exports its snapshot, `pg_dump --snapshot` dumps that snapshot while the transaction counts the rows
    in it: the manifest's counts are the dump's even while the service writes."""
    if backend(url) == "sqlite":
        if not sqlite_path(url).is_file():
            raise Refused(f"no database at {sqlite_path(url)} (nothing trained or served yet?)")
        sqlite_copy(f"file:{sqlite_path(url)}?mode=ro", into)
        return describe_database(sqlite_url(into), service)
    dsn, env = libpq(url)
    engine = create_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar()
            run_pg(
                [
                    pg_tool("pg_dump"),
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    "-f",
                    str(into),
                    dsn,
                ],
                env,
            )
            return describe(conn, service)
    finally:
        engine.dispose()


def load_database(url: str, dump: Path) -> None:
    """Replace the database at `url` with the dump (the tables the dump holds)."""
    if backend(url) == "sqlite":
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        sqlite_copy(f"file:{dump}", path)
        return
    dsn, env = libpq(url)
    run_pg(
        [
            pg_tool("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--dbname",
            dsn,
            str(dump),
        ],
        env,
    )


def dump_suffix(url: str) -> str:
    return ".sqlite" if backend(url) == "sqlite" else ".pgdump"


# MLflow's columns holding artifact locations (absolute for a local artifact folder; `mlflow-artifacts:/`
# or s3:// ones need no move). Missing tables or columns (another MLflow version) are skipped.
MLFLOW_LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def move_artifact_paths(url: str, old: str, new: str) -> int:
    """Point MLflow's recorded artifact locations under folder `old` at folder `new`; rows changed."""
    engine = create_engine(url)
    changed = 0
    try:
        with engine.begin() as conn:
            columns = {
                t: {c["name"] for c in inspect(conn).get_columns(t)} for t in inspect(conn).get_table_names()
            }
            for tbl, col in MLFLOW_LOCATIONS:
                if col not in columns.get(tbl, ()):
                    continue
                for prefix in ("", "file://"):
                    was, now = prefix + old.rstrip("/"), prefix + new.rstrip("/")
                    changed += conn.execute(
                        text(
                            f"UPDATE {tbl} SET {col} = :now || substr({col}, :n) "
                            f"WHERE {col} = :was OR {col} LIKE :under"
                        ),
                        {"now": now, "n": len(was) + 1, "was": was, "under": was + "/%"},
                    ).rowcount
    finally:
        engine.dispose()
    return changed


# ------------------------------------------------------------------------------------------ the archive


def stores_of(settings: BackupSettings) -> tuple[dict[str, str], dict[str, str]]:
    """(databases, object roots) configured here: name -> URL or URI."""
    databases = {name: getattr(settings, attr) for name, attr in DATABASES.items()}
    missing = sorted(n for n in REQUIRED if not databases.get(n))
    if missing:
        raise Refused(
            "MLflow's backend database is unknown: MLFLOW_TRACKING_URI is a server, set "
            "MLFLOW_BACKEND_STORE_URI (and MLFLOW_ARTIFACTS_DESTINATION)"
        )
    roots = {name: getattr(settings, attr) for name, attr in OBJECT_ROOTS.items()}
    return databases, {n: str(u) for n, u in roots.items() if u}


def object_store(uri: str, settings: BackupSettings) -> ObjectStore:
    return ObjectStore(uri, S3Access.of(settings))


CHUNK = 1 << 20


def add_member(tar: tarfile.TarFile, name: str, data: bytes, sums: dict[str, str]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))
    sums[name] = sha256(data)


def add_file(tar: tarfile.TarFile, name: str, path: Path, sums: dict[str, str]) -> None:
    """A file (a database dump: possibly gigabytes) into the tar and its sha256, never whole in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = path.stat().st_size, int(time.time()), 0o600
    with path.open("rb") as handle:
        tar.addfile(info, handle)
    sums[name] = digest.hexdigest()


def backup(settings: BackupSettings, folder: Path, now: datetime | None = None) -> tuple[Path, dict]:
    """Write one archive into `folder`; returns its path and manifest."""
    now = now or datetime.now(UTC)
    databases, roots = stores_of(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / archive_name(now)
    if path.exists():
        raise Refused(f"{path} exists already (one backup a second)")
    partial = path.with_name(f".{path.name}.partial")
    sums: dict[str, str] = {}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": now.astimezone(UTC).isoformat(),
        "code_version": git_commit(settings.git_commit_env),
        "model_name": settings.model_name,
        "databases": {},
        "object_roots": {},
        "members": sums,
    }
    try:
        with tarfile.open(partial, "w") as tar, tempfile.TemporaryDirectory() as tmp:
            for name, url in databases.items():
                member = f"databases/{name}{dump_suffix(url)}"
                dump = Path(tmp) / Path(member).name
                described = dump_database(url, dump, service=name == "service")
                add_file(tar, member, dump, sums)
                dump.unlink()
                manifest["databases"][name] = {"member": member, "source": redact(url), **described}
            for name, uri in roots.items():
                objects = object_store(uri, settings)
                count = size = 0
                for key in objects.names():
                    data = objects.get(key)
                    add_member(tar, f"objects/{name}/{key}", data, sums)
                    count, size = count + 1, size + len(data)
                manifest["object_roots"][name] = {"uri": uri, "objects": count, "bytes": size}
            add_member(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(), {})
        partial.chmod(0o600)  # customers' records: the owner's only
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path, manifest


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True) if "://" in url else url


@dataclass
class Archive:
    """A checked archive: its manifest, the objects' bytes and the database dumps (every sha256 verified)."""

    manifest: dict[str, Any]
    members: dict[str, bytes]  # objects (and dumps when read without a spill folder)
    files: dict[str, Path]  # database dumps written to the spill folder

    def objects(self, root: str) -> Iterator[tuple[str, bytes]]:
        prefix = f"objects/{root}/"
        for name, data in self.members.items():
            if name.startswith(prefix):
                yield name[len(prefix) :], data

    def dump(self, member: str, folder: Path) -> Path:
        """The database dump `member` as a file (in `folder` unless it was spilled already)."""
        if member in self.files:
            return self.files[member]
        path = folder / Path(member).name
        path.write_bytes(self.members[member])
        return path


def read_archive(path: Path, spill: Path | None = None) -> Archive:
    """Every member read and checked against the manifest's sha256; Refused when anything is off.
    With `spill`, the database dumps are streamed to files there instead of memory."""
    if not path.is_file():
        raise Refused(f"{path}: no such archive")
    members: dict[str, bytes] = {}
    files: dict[str, Path] = {}
    sums: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                handle = tar.extractfile(info) if info.isfile() else None
                if handle is None:
                    continue
                digest = hashlib.sha256()
                if spill is not None and info.name.startswith("databases/"):
                    files[info.name] = spill / Path(info.name).name
                    with files[info.name].open("wb") as out:
                        for chunk in iter(lambda h=handle: h.read(CHUNK), b""):
                            digest.update(chunk)
                            out.write(chunk)
                else:
                    members[info.name] = handle.read()
                    digest.update(members[info.name])
                sums[info.name] = digest.hexdigest()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Refused(f"{path.name}: not a complete archive ({exc}); nothing was restored") from None
    if MANIFEST not in members:
        raise Refused(f"{path.name}: no {MANIFEST} (a partial archive?); nothing was restored")
    try:
        manifest = json.loads(members.pop(MANIFEST))
        expected: dict[str, str] = manifest["members"]
    except (ValueError, KeyError, TypeError):
        raise Refused(f"{path.name}: {MANIFEST} is unreadable; nothing was restored") from None
    sums.pop(MANIFEST)
    missing = sorted(set(expected) - set(sums))
    if missing:
        raise Refused(
            f"{path.name}: {len(missing)} member(s) missing, e.g. {missing[0]}; nothing was restored"
        )
    bad = sorted(n for n, s in expected.items() if sums[n] != s)
    if bad:
        raise Refused(
            f"{path.name}: checksum mismatch in {len(bad)} member(s), e.g. {bad[0]}; nothing was restored"
        )
    extra = sorted(set(sums) - set(expected))
    if extra:
        raise Refused(
            f"{path.name}: {len(extra)} member(s) not in the manifest, e.g. {extra[0]}; nothing was restored"
        )
    return Archive(manifest, members, files)


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(store.alembic_config())
    return {rev.revision for rev in scripts.walk_revisions()}


def check_revision(manifest: dict[str, Any]) -> None:
    revision = manifest.get("databases", {}).get("service", {}).get("schema_revision")
    if revision is not None and revision not in known_revisions():
        raise Refused(
            f"the archive's service schema revision {revision} is unknown to this code's migrations "
            "(made by newer code?): restore it with that code; nothing was restored"
        )


# Rows a freshly started target writes by itself, which do not make it "not empty": the monitor's first
# runs find no champion or no data yet (skipped, error), an alias lock is a move in progress. Table ->
# the SQL condition of such rows (None: every row).
NOT_STATE: dict[str, str | None] = {"monitoring_runs": "status IN ('skipped', 'error')", "alias_locks": None}


def occupied(databases: dict[str, str], roots: dict[str, str], settings: BackupSettings) -> list[str]:
    """What the target already holds: rows in the service's tables (but NOT_STATE), registered models,
    objects."""
    found = []
    service = databases["service"]
    if backend(service) != "sqlite" or sqlite_path(service).exists():
        tables = [t.name for t in store.metadata.sorted_tables if NOT_STATE.get(t.name, "") is not None]
        counts = existing_counts(service, tables, NOT_STATE)
        found += [f"{n} rows in {t}" for t, n in counts.items() if n]
    mlflow = databases["mlflow"]
    if backend(mlflow) != "sqlite" or sqlite_path(mlflow).exists():
        models = existing_counts(mlflow, ["registered_models"]).get("registered_models", 0)
        if models:
            found.append(f"{models} registered model(s)")
    for name, uri in roots.items():
        if next(iter(object_store(uri, settings).names()), None) is not None:
            found.append(f"objects in {name} ({uri})")
    return found


def existing_counts(
    url: str, tables: list[str], unless: dict[str, str | None] | None = None
) -> dict[str, int]:
    """Rows of each table that exists (not counting those matching `unless[table]`)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            counts = {}
            for t in (t for t in tables if t in present):
                query = select(func.count()).select_from(table(t))
                if (unless or {}).get(t):
                    query = query.where(text(f"NOT ({unless[t]})"))
                counts[t] = conn.execute(query).scalar()
            return counts
    finally:
        engine.dispose()


def restore(settings: BackupSettings, path: Path, force: bool = False) -> dict[str, Any]:
    """Put the archive's state into the stores configured here; refuses (nothing changed) first."""
    with tempfile.TemporaryDirectory() as spill:
        archive = read_archive(path, Path(spill))
        databases, roots = stores_of(settings)
        check_target(archive.manifest, databases, roots, settings, force)
        for name, entry in archive.manifest["databases"].items():
            load_database(databases[name], archive.dump(entry["member"], Path(spill)))
        moved = 0
        old_artifacts = archive.manifest["object_roots"].get("mlflow-artifacts", {}).get("uri", "")
        new_artifacts = roots.get("mlflow-artifacts", "")
        if (
            old_artifacts
            and new_artifacts not in ("", old_artifacts)
            and not new_artifacts.startswith("s3://")
        ):
            moved = move_artifact_paths(databases["mlflow"], old_artifacts, new_artifacts)
        restored = {}
        for name in archive.manifest["object_roots"]:
            if name in roots:
                target = object_store(roots[name], settings)
                restored[name] = sum(1 for key, data in archive.objects(name) if target.put(key, data))
    return {"objects": restored, "artifact_paths_moved": moved}


def check_target(
    manifest: dict[str, Any],
    databases: dict[str, str],
    roots: dict[str, str],
    settings: BackupSettings,
    force: bool,
) -> None:
    """Every refusal that depends on the target, before anything is written."""
    check_revision(manifest)
    for name, entry in manifest["databases"].items():
        if entry["backend"] != backend(databases[name]):
            raise Refused(
                f"{name}: the archive holds {entry['backend']}, the target is {backend(databases[name])}; "
                "nothing was restored"
            )
    unknown = sorted(
        n for n, r in manifest.get("object_roots", {}).items() if r.get("objects") and n not in roots
    )
    if unknown:
        raise Refused(
            f"the archive holds objects of {', '.join(unknown)}, not configured here; nothing was restored"
        )
    if not force and (found := occupied(databases, roots, settings)):
        raise Refused(
            f"the target is not empty ({'; '.join(found[:3])}): restore --force replaces it; nothing was restored"
        )


# ------------------------------------------------------------------------------------------ commands


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"error: {message} ({self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def guarded(command):
    """An entry point: `--args-env` expanded; a refusal or a bad setting is one line and exit code 2."""

    def run(argv: list[str] | None = None) -> int:
        try:
            return command(with_env_args(list(sys.argv[1:] if argv is None else argv)))
        except (Refused, SettingsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except SystemExit as exc:
            return int(exc.code or 0)

    return run


@guarded
def main(argv: list[str]) -> int:
    """`churnops backup [--dir D] [--keep N]`."""
    parser = _Parser(
        prog="churnops backup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, help="write the archive here (default BACKUP_DIR)")
    parser.add_argument("--keep", type=int, help="keep the newest N archives (default BACKUP_KEEP; 0: all)")
    args = parser.parse_args(argv)
    settings = load_or_exit(BackupSettings)
    folder = args.dir or settings.backup_dir
    keep = settings.backup_keep if args.keep is None else args.keep
    started = time.perf_counter()
    path, manifest = backup(settings, folder)
    seconds = time.perf_counter() - started
    rows = {n: sum(d["row_counts"].values()) for n, d in manifest["databases"].items()}
    objects = sum(r["objects"] for r in manifest["object_roots"].values())
    print(
        f"backup {path} ({path.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s): "
        + ", ".join(f"{n} {r} rows" for n, r in rows.items())
        + f", {objects} objects"
    )
    for old in prune(folder, keep):
        print(f"deleted {old.name} (BACKUP_KEEP={keep})")
    return 0


@guarded
def main_restore(argv: list[str]) -> int:
    """`churnops restore ARCHIVE [--force]`."""
    parser = _Parser(
        prog="churnops restore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path, help="a churnops-backup-*.tar")
    parser.add_argument("--force", action="store_true", help="replace what the target already holds")
    args = parser.parse_args(argv)
    settings = load_or_exit(BackupSettings)
    started = time.perf_counter()
    result = restore(settings, args.archive, args.force)
    seconds = time.perf_counter() - started
    objects = ", ".join(f"{n} {c}" for n, c in result["objects"].items())
    print(f"restored {args.archive.name} in {seconds:.1f} s: databases, objects ({objects})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
