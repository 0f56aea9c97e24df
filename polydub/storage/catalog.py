"""The catalog: what was dubbed, from what, by which stages, under which consent.

One `Catalog` per process is enough; it is thread-safe (languages run concurrently) and
every call is one short transaction. Everything it returns is plain JSON-ready data
(datetimes as ISO 8601 strings in UTC), so `dub list --json` can print it as is.

SQLite (the default) runs in WAL mode and every writing transaction starts with
`BEGIN IMMEDIATE`, so concurrent writers queue on the busy timeout instead of failing
halfway. The schema is brought to the newest Alembic revision when a catalog is opened,
under a lock (SQLite's write lock, a PostgreSQL advisory lock), so processes starting
together migrate once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, func, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import sessionmaker

from polydub.cache import file_hash, os_reason
from polydub.config import database_url
from polydub.errors import InputError
from polydub.redact import redact
from polydub.storage.tables import (
    JOB_STATUSES,
    OUTPUT_KINDS,
    STAGE_STATUSES,
    Job,
    Output,
    Source,
    StageRun,
    utcnow,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HEAD_REVISION = "0005"  # the newest migration in MIGRATIONS_DIR (a test checks they agree)
SQLITE_BUSY_TIMEOUT_S = 60.0  # a writer waits this long for another writer's transaction
CONNECT_TIMEOUT_S = 10  # a server that does not answer is a bad URL, not a hang
MIGRATION_LOCK_KEY = 0x706F6C7964756201  # PostgreSQL advisory lock id ("polydub" + 1)
DETAIL_MAX_BYTES = 64 * 1024  # stage details are small summaries, not data
INTERRUPTED = "interrupted"
READ_ONLY = "polydub_read_only"  # execution option: SQLite reads use a deferred BEGIN


# ---------------------------------------------------------------------------- engine


def normalize_url(url: str) -> URL:
    """Parse a catalog URL; plain `postgresql://` and `postgres://` use psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def open_engine(url: str | URL) -> Engine:
    """An engine set up for concurrent short transactions (SQLite: WAL, busy timeout)."""
    parsed = normalize_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)

    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    if in_memory:
        from sqlalchemy.pool import StaticPool

        # One shared connection, or each connection would see its own empty database;
        # for quick scripts only: threads writing at once need a file or a server.
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection):
        # Take the write lock up front: a deferred transaction that reads and then
        # writes fails at once when another writer got in between, instead of waiting.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def migration_lock(connection: Connection) -> None:
    """Serialize migrations between processes for the rest of this transaction."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE).


def alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def current_revision(connection: Connection) -> str | None:
    """The schema's revision, read without Alembic (importing it costs a third of a second
    on every `dub` command that opens the catalog)."""
    try:
        with connection.begin():
            return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except DBAPIError:  # no table yet: a new catalog
        return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is already there."""
    with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
        current = current_revision(connection)
    if current == HEAD_REVISION:
        return
    from alembic import command

    config = alembic_config()
    with engine.connect() as connection:
        # SQLite alters a table by rebuilding it: dropping the old `jobs` while outputs point
        # at it must not trip their keys. Off for the migration (it cannot change inside a
        # transaction), every key checked before it commits.
        rebuilds = connection.dialect.name == "sqlite"
        if rebuilds:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                migration_lock(connection)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if rebuilds and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the migration left rows whose keys point nowhere")
        finally:
            if rebuilds:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def schema_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a driver's error message."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    for line in str(cause).splitlines():
        if line.strip():
            return line.strip()
    return type(cause).__name__


# ------------------------------------------------------------------ process ownership


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it don't.
    return stat.rsplit(")", 1)[1].split()[19]


@functools.lru_cache(maxsize=1)
def this_machine() -> str:
    """Where this process runs, as owners name it: "hostname#key", the key a digest of the
    kernel's boot id and this process's pid namespace. Containers often share a hostname
    (and their pids overlap); only a process in the same boot and namespace can tell
    whether an owner's pid still runs."""
    parts = []
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        try:
            parts.append(read())
        except OSError:
            parts.append("")
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]
    return f"{socket.gethostname()}#{key}"


def process_owner() -> str:
    """Who is running a row: "machine:pid:start" (`this_machine`); the start time tells
    reused pids apart."""
    pid = os.getpid()
    return f"{this_machine()}:{pid}:{process_start(pid) or ''}"


def owned_here(owner: str | None) -> bool:
    """Whether `owner` names a process of this machine (same boot, same pid namespace)."""
    return bool(owner) and owner.count(":") >= 2 and owner.rsplit(":", 2)[0] == this_machine()


def owner_alive(owner: str | None) -> bool:
    """Whether the process that wrote `owner` still runs. Other machines' processes (other
    hosts, containers, boots) are assumed alive: there is no way to tell from here."""
    if not owner:
        return False
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != this_machine():
        return True
    if Path("/proc/self/stat").exists():
        current = process_start(pid)
        return current is not None and (not start or current == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


# ------------------------------------------------------------------------ row -> dict


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def source_dict(source: Source) -> dict[str, Any]:
    return {
        "id": source.id,
        "path": source.path,
        "content_hash": source.content_hash,
        "duration": source.duration,
        "fps": source.fps,
        "has_video": source.has_video,
        "created_at": iso(source.created_at),
    }


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "source_id": job.source_id,
        "input": job.input_path,
        "flow_run_id": job.flow_run_id,
        "deployment": job.deployment,
        "langs": list(job.langs),
        "params": dict(job.params),
        "out_dir": job.out_dir,
        "status": job.status,
        "consent": job.consent,
        "error": job.error,
        "owner": job.owner,
        "heartbeat_at": iso(job.heartbeat_at),
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
    }


def stage_dict(run: StageRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "stage": run.stage,
        "lang": run.lang,
        "status": run.status,
        "backend": run.backend,
        "model_version": run.model_version,
        "licence": run.licence,
        "seconds": run.seconds,
        "error": run.error,
        "cache_key": run.cache_key,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "detail": run.detail,
    }


def output_dict(output: Output) -> dict[str, Any]:
    return {
        "id": output.id,
        "lang": output.lang,
        "kind": output.kind,
        "path": output.path,
        "duration": output.duration,
        "size": output.size,
        "sha256": output.sha256,
        "created_at": iso(output.created_at),
    }


def delivered_digest(path: str | Path, just_delivered: bool = False) -> tuple[int | None, str | None]:
    """(bytes, sha256) of a delivered file (a path or an object store URL) as read now;
    (None, None) if it cannot be read. `just_delivered`: an object this process has just
    uploaded is recorded as uploaded, not downloaded again to be read."""
    from polydub.storage import objects

    if objects.is_remote(str(path)):
        return objects.digest_of(str(path), just_published=just_delivered)
    try:
        return os.stat(path).st_size, file_hash(path)
    except OSError:
        return None, None


def chunks(values: list, size: int = 500) -> Iterator[list]:
    """`values` in slices of `size`: bounded IN (...) lists and multi-row INSERTs."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def upsert_insert(dialect: str):
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE / NOTHING; None for a database
    without it (only SQLite and PostgreSQL are supported catalogs)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert


def check_one_of(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


def check_json(what: str, value: Any) -> int:
    """The size of `value` as JSON, in bytes; ValueError if it is not JSON."""
    try:
        return len(json.dumps(value).encode())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serializable: {exc}") from None


# --------------------------------------------------------------------------- catalog


class Catalog:
    """The SQL catalog of sources, jobs, outputs and stage runs."""

    def __init__(self, url: str | None = None):
        """Open (creating and migrating as needed) the catalog at `url`, by default
        `polydub.config.database_url()`. A URL that cannot be opened is an InputError."""
        self.url = url or database_url()
        try:
            self._shown_url = make_url(self.url).render_as_string(hide_password=True)
            parsed = normalize_url(self.url)
        except Exception:  # noqa: BLE001 - any unparseable URL is the user's input
            parsed, self._shown_url = None, self.url
        try:
            if parsed is None:
                raise ValueError("not a database URL (e.g. sqlite:///catalog.db, postgresql://user@host/db)")
            self._engine = open_engine(parsed)
        except Exception as exc:  # noqa: BLE001 - unknown dialect, missing driver, bad folder
            raise InputError(f"cannot open catalog {self._shown_url}: {one_line(exc)}") from None
        try:
            migrate(self._engine)
        except Exception as exc:  # noqa: BLE001 - refused connection, not a database, ...
            self._engine.dispose()
            raise InputError(f"cannot open catalog {self._shown_url}: {self._open_failure(exc)}") from None
        self._write = sessionmaker(self._engine, expire_on_commit=False)
        self._read = sessionmaker(self._engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)

    def _open_failure(self, exc: Exception) -> str:
        from alembic.util import CommandError

        if isinstance(exc, CommandError):
            try:
                revision = schema_revision(self._engine)
            except Exception:  # noqa: BLE001
                revision = None
            return f"its schema revision {revision} is newer than this polydub knows ({exc})"
        database = self._engine.url.database if self.dialect == "sqlite" else None
        if database:  # SQLite says only "unable to open database file": say why
            path = Path(database)
            try:
                if path.is_dir():
                    return "a folder, not a database file"
                tempfile.TemporaryFile(dir=path.parent).close()
            except OSError as err:  # a read-only disk, a name too long, ...
                return f"cannot write in {path.parent} ({os_reason(err)})"
        return one_line(exc)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._engine.dialect.name

    def writing(self):
        """A session in one short writing transaction (SQLite: BEGIN IMMEDIATE), for the
        catalog's other tables (`polydub.storage.deliveries`, `.terms`):
        `with catalog.writing() as session: ...`."""
        return self._write.begin()

    def reading(self):
        """A session in one read-only transaction."""
        return self._read.begin()

    def close(self) -> None:
        """Release the connections (the catalog can still be used; it reconnects)."""
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"Catalog({self._shown_url!r})"

    # ---------------------------------------------------------------- writing

    def upsert_source(self, path: str, content_hash: str, duration: float, fps: float | None, has_video: bool) -> int:
        """The id of the source with this sha256, adding it (or updating where it was
        seen last and what the probe said) as needed."""
        values = dict(path=str(path), duration=float(duration), fps=None if fps is None else float(fps), has_video=bool(has_video))
        insert = upsert_insert(self._engine.dialect.name)
        if insert is not None:
            statement = insert(Source).values(content_hash=content_hash, created_at=utcnow(), **values)
            statement = statement.on_conflict_do_update(
                index_elements=[Source.content_hash],  # a job keeps its own path; the source its first
                set_={key: getattr(statement.excluded, key) for key in values if key != "path"},
            ).returning(Source.id)
            with self._write.begin() as session:
                return int(session.execute(statement).scalar_one())
        # Other databases: look up, insert, and look up again if another writer won.
        for _ in range(2):
            try:
                with self._write.begin() as session:
                    source = session.scalars(select(Source).where(Source.content_hash == content_hash)).first()
                    if source is None:
                        source = Source(content_hash=content_hash, **values)
                        session.add(source)
                    else:
                        for key, value in values.items():
                            if key != "path":
                                setattr(source, key, value)
                    session.flush()
                    return source.id
            except IntegrityError:
                continue
        raise RuntimeError(f"could not record source {content_hash}")

    def create_job(self, source_id: int | None, langs: list[str], params: dict, out_dir: str,
                   consent: str | None = None, *, input_path: str | None = None, flow_run_id: str | None = None,
                   deployment: str | None = None, status: str = "running", error: str | None = None) -> int:
        """A new 'running' job; `consent` says under which consent voices are cloned and
        lips changed (who gave it, for what), as the user stated it. `input_path` is the
        path this job was given; `flow_run_id` and `deployment` the Prefect run behind it.
        A job refused before work is created with status 'rejected' and the reason. What the
        user typed (paths, URLs, parameters) is kept with any secret in it masked."""
        check_json("params", params)
        params = json.loads(redact(json.dumps(params)))
        input_path = None if input_path is None else redact(str(input_path))
        error = redact(error) if error else error
        check_one_of("job status", status, ("running", "rejected"))
        with self._write.begin() as session:
            if source_id is not None and session.get(Source, source_id) is None:
                raise InputError(f"no source {source_id} in the catalog")
            job = Job(
                source_id=source_id,
                input_path=None if input_path is None else str(input_path),
                flow_run_id=None if flow_run_id is None else str(flow_run_id),
                deployment=deployment,
                langs=[str(lang) for lang in langs],
                params=params,
                out_dir=str(out_dir),
                status=status,
                error=error,
                finished_at=utcnow() if status != "running" else None,
                consent=consent,
                owner=process_owner(),
            )
            session.add(job)
            session.flush()
            return job.id

    def start_stage(
        self,
        job_id: int,
        stage: str,
        lang: str | None,
        cache_key: str | None,
        backend: str | None = None,
        model_version: str | None = None,
        licence: str | None = None,
    ) -> int:
        """Record that `stage` (for `lang`, None for per-video stages) started; its run id.
        `licence`: that of the model making the output (`licences.Licence.label`)."""
        with self._write.begin() as session:
            run = StageRun(
                job_id=job_id,
                stage=stage,
                lang=lang,
                status="running",
                cache_key=cache_key,
                backend=backend,
                model_version=model_version,
                licence=licence,
                owner=process_owner(),
                started_at=utcnow(),
            )
            session.add(run)
            session.flush()
            return run.id

    def finish_stage(
        self,
        run_id: int,
        status: str,
        error: str | None = None,
        detail: dict | None = None,
        backend: str | None = None,
        model_version: str | None = None,
        licence: str | None = None,
    ) -> None:
        """Close a stage run as done, cached, skipped or failed; sets finished_at and
        seconds. `backend` / `model_version` / `licence` given here replace those from the start."""
        check_one_of("stage status", status, tuple(s for s in STAGE_STATUSES if s != "running"))
        if detail is not None and (size := check_json("stage detail", detail)) > DETAIL_MAX_BYTES:
            # Finishing a stage must not fail over its summary: keep a note instead.
            detail = {"omitted": f"detail of {size} bytes exceeds the catalog's {DETAIL_MAX_BYTES}"}
        with self._write.begin() as session:
            run = session.get(StageRun, run_id)
            if run is None:
                raise ValueError(f"no stage run {run_id} in the catalog")
            run.finished_at = utcnow()
            run.seconds = max(0.0, (run.finished_at - run.started_at).total_seconds())
            run.status, run.error, run.detail = status, redact(error) if error else error, detail
            if backend is not None:
                run.backend = backend
            if model_version is not None:
                run.model_version = model_version
            if licence is not None:
                run.licence = licence

    def delivered_paths(self, paths: list[str]) -> set[str]:
        """Those of `paths` that some job recorded as a deliverable."""
        found: set[str] = set()
        with self._read.begin() as session:
            for part in chunks(sorted(set(paths))):
                found.update(session.scalars(select(Output.path).where(Output.path.in_(part)).distinct()))
        return found

    def add_output(self, job_id: int, lang: str | None, kind: str, path: str, duration: float | None = None) -> int:
        """Record a deliverable (`lang` None for the multi-track file), with its size and
        sha256 as delivered (None if it cannot be read); its id. A job that goes on after
        review delivers a file again: its one record is brought up to date."""
        check_one_of("output kind", kind, OUTPUT_KINDS)
        size, digest = delivered_digest(path, just_delivered=True)
        with self._write.begin() as session:
            output = session.scalars(select(Output).where(Output.job_id == job_id, Output.kind == kind,
                                                          Output.path == str(path))).first()
            if output is not None:
                output.lang, output.size, output.sha256 = lang, size, digest
                output.duration = None if duration is None else float(duration)
                return output.id
            output = Output(
                job_id=job_id,
                lang=lang,
                kind=kind,
                path=str(path),
                duration=None if duration is None else float(duration),
                size=size,
                sha256=digest,
            )
            session.add(output)
            session.flush()
            return output.id

    def withdraw_outputs(self, job_id: int, lang: str) -> list[str]:
        """Forget a language's deliverables of a job (a person rejected them: removed, not
        shipped); their paths."""
        with self._write.begin() as session:
            rows = session.scalars(select(Output).where(Output.job_id == job_id, Output.lang == lang)).all()
            paths = [row.path for row in rows]
            for row in rows:
                session.delete(row)
            return paths

    def set_out_dir(self, job_id: int, out_dir: str) -> None:
        """Where the job delivers, once it is known (deployment runs: a folder per job)."""
        with self._write.begin() as session:
            session.get(Job, job_id).out_dir = str(out_dir)

    def finish_job(self, job_id: int, status: str, error: str | None = None) -> None:
        """Close a job as done, partial (some languages failed) or failed."""
        check_one_of("job status", status, tuple(s for s in JOB_STATUSES if s != "running"))
        with self._write.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise InputError(f"no job {job_id} in the catalog")
            job.status, job.error, job.finished_at = status, redact(error) if error else error, utcnow()

    def resume_job(self, job_id: int, flow_run_id: str | None = None) -> None:
        """A job that waited for review goes on: 'running' again, in this process (and, when
        given, under this Prefect flow run)."""
        with self._write.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise InputError(f"no job {job_id} in the catalog")
            if job.status != "awaiting review":
                raise InputError(f"job {job_id} is {job.status}, not awaiting review")
            job.status, job.error, job.finished_at, job.owner = "running", None, None, process_owner()
            job.heartbeat_at = utcnow()
            if flow_run_id is not None:
                job.flow_run_id = str(flow_run_id)

    def heartbeat(self, job_id: int) -> None:
        """Say that the job's process is still at work (jobs.heartbeat_at = now)."""
        with self._write.begin() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                            .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))

    def mark_interrupted(self, heartbeat_timeout: float | None = None) -> list[dict]:
        """Mark 'interrupted' the jobs left 'running' by processes that are gone: dead
        on this host, or (any host) silent for more than `heartbeat_timeout` seconds; with
        them their running stage runs, and stage runs of dead processes on this host.
        Returns the jobs it changed: [{'id', 'flow_run_id', 'error'}]."""
        now = utcnow()
        changed: list[dict] = []
        with self._write.begin() as session:
            for job in session.scalars(select(Job).where(Job.status == "running")).all():
                reason = self._gone(job.owner, job.heartbeat_at or job.created_at, now, heartbeat_timeout)
                if reason:
                    job.status, job.error, job.finished_at = INTERRUPTED, reason, now
                    changed.append({"id": job.id, "flow_run_id": job.flow_run_id, "error": reason})
            for run in session.scalars(select(StageRun).where(StageRun.status == "running")).all():
                reason = next((j["error"] for j in changed if j["id"] == run.job_id), None)
                if reason is None and owned_here(run.owner):
                    reason = self._gone(run.owner, None, now, None)
                if reason:
                    run.status, run.error, run.finished_at = INTERRUPTED, reason, now
                    run.seconds = max(0.0, (now - run.started_at).total_seconds())
        return changed

    @staticmethod
    def _gone(owner: str | None, last_seen: datetime | None, now: datetime, timeout: float | None) -> str | None:
        """Why the process behind `owner` no longer runs its rows, or None if it may."""
        host, pid = (owner.rsplit(":", 2)[:2] if owner and owner.count(":") >= 2 else ("?", "?"))
        if owned_here(owner):
            return None if owner_alive(owner) else f"interrupted: its process ({host} pid {pid}) is gone"
        if not owner:
            return "interrupted: no process owns it"
        if timeout is not None and last_seen is not None and (now - last_seen).total_seconds() > timeout:
            return f"interrupted: no heartbeat from {host} pid {pid} since {iso(last_seen)[:19]} UTC"
        return None

    def interrupt_job(self, job_id: int, reason: str, since: datetime | None = None) -> None:
        """Close a job stopped on purpose (Ctrl-C) as 'interrupted' with `reason`; its
        running stage runs too, and those that failed from `since` on (the signal
        reaches ffmpeg and the like as well, and they fail on it)."""
        now = utcnow()
        with self._write.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise InputError(f"no job {job_id} in the catalog")
            job.status, job.error, job.finished_at = INTERRUPTED, reason, now
            runs = session.scalars(select(StageRun).where(StageRun.job_id == job_id)).all()
            for run in runs:
                late_failure = run.status == "failed" and since is not None and run.finished_at is not None \
                    and run.finished_at >= since
                if run.status == "running" or late_failure:
                    run.status, run.error = INTERRUPTED, f"{reason}; {run.error}" if late_failure else reason
                    run.finished_at = run.finished_at or now
                    run.seconds = max(0.0, (run.finished_at - run.started_at).total_seconds())

    # ---------------------------------------------------------------- reading

    def ended_with_runs(self, since: datetime, before: datetime, limit: int) -> list[dict]:
        """Jobs with a flow run that ended between `since` and `before`, newest first:
        [{'id', 'flow_run_id', 'status', 'error'}] (for telling Prefect what it missed)."""
        with self._read.begin() as session:
            rows = session.execute(
                select(Job.id, Job.flow_run_id, Job.status, Job.error)
                .where(Job.flow_run_id.is_not(None), Job.finished_at >= since, Job.finished_at < before,
                       Job.status.not_in(("running", "awaiting review")))
                .order_by(Job.finished_at.desc()).limit(limit)).all()
        return [{"id": r.id, "flow_run_id": r.flow_run_id, "status": r.status, "error": r.error} for r in rows]

    def job_for_flow_run(self, flow_run_id: str) -> int | None:
        """The job a Prefect flow run made, if any."""
        with self._read.begin() as session:
            return session.scalars(select(Job.id).where(Job.flow_run_id == str(flow_run_id))
                                   .order_by(Job.id.desc())).first()

    def list_jobs(self, limit: int = 50, status: str | None = None, input: str | None = None,
                  since: datetime | None = None) -> list[dict]:
        """The newest `limit` jobs, newest first: id, source (the path the job was given),
        langs, status, out_dir, created_at, finished_at, n_outputs, flow_run_id. Filters:
        `status`, `input` (a part of the input path), `since` (created at or after)."""
        n_outputs = (
            select(func.count(Output.id)).where(Output.job_id == Job.id).correlate(Job).scalar_subquery()
        )
        path = func.coalesce(Job.input_path, Source.path)
        statement = (
            select(Job, path, n_outputs)
            .outerjoin(Source, Job.source_id == Source.id)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
        )
        if status:
            statement = statement.where(Job.status == status)
        if input:
            statement = statement.where(path.contains(input, autoescape=True))
        if since is not None:
            statement = statement.where(Job.created_at >= since)
        with self._read.begin() as session:
            return [
                {
                    "id": job.id,
                    "source": path,
                    "langs": list(job.langs),
                    "status": job.status,
                    "error": job.error,
                    "out_dir": job.out_dir,
                    "created_at": iso(job.created_at),
                    "finished_at": iso(job.finished_at),
                    "n_outputs": int(count),
                    "flow_run_id": job.flow_run_id,
                }
                for job, path, count in session.execute(statement)
            ]

    def show_job(self, job_id: int) -> dict:
        """One job: its fields, 'source', 'stages' (in start order) and 'outputs'."""
        with self._read.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise InputError(f"no job {job_id} in the catalog")
            runs = session.scalars(
                select(StageRun).where(StageRun.job_id == job_id).order_by(StageRun.started_at, StageRun.id)
            ).all()
            outputs = session.scalars(select(Output).where(Output.job_id == job_id).order_by(Output.id)).all()
            return {
                **job_dict(job),
                "source": source_dict(job.source) if job.source is not None else None,
                "stages": [stage_dict(run) for run in runs],
                "outputs": [output_dict(output) for output in outputs],
            }


_shared: dict[str, Catalog] = {}
_shared_lock = threading.Lock()


def shared_catalog(url: str) -> Catalog:
    """One Catalog (engine and connection pool) per database URL per process: a job's
    stages and languages, in threads, record through the same pool."""
    with _shared_lock:
        if url not in _shared:
            _shared[url] = Catalog(url)
        return _shared[url]
