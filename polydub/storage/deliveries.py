"""Deliveries: one row per manifest item x language, and the claims runners hold on them.

A runner (a `dub catalog` process) claims an item's languages before dubbing them; a row
it holds is 'queued' until its job starts and 'running' while it runs. Two runners never
hold the same row: the claim is one transaction that locks the rows it reads (PostgreSQL:
`SELECT ... FOR UPDATE`; SQLite: the database's write lock, `BEGIN IMMEDIATE`). A claim is
released when the runner records the result, or taken over by another runner once the
holder is found dead (its process gone on this host, or silent past the heartbeat timeout).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from polydub import config
from polydub.redact import redact
from polydub.storage.catalog import Catalog, chunks, iso, owner_alive, process_owner, upsert_insert
from polydub.storage.tables import Delivery, FileDigest, ManifestDefaults, utcnow

HELD = ("queued", "running")
AWAITING_REVIEW = "awaiting review"  # its job waits for a person (report.AWAITING_REVIEW)
REJECTED = "rejected"  # a person rejected it (report.REJECTED)


@dataclass
class Record:
    """What the catalog says of one item x language."""

    item: str
    lang: str
    status: str  # queued | running | done | failed
    fingerprint: str | None  # of the last delivered file's recipe (`recipes_of` reads the recipe)
    job_id: int | None
    path: str | None
    duration: float | None
    sha256: str | None
    error: str | None
    owner: str | None
    heartbeat_at: datetime | None
    delivered_at: datetime | None

    @property
    def held(self) -> bool:
        """Claimed by a runner that still works on it."""
        return self.status in HELD and holder_alive(self.owner, self.heartbeat_at)

    def to_dict(self) -> dict:
        return {"item": self.item, "lang": self.lang, "status": self.status, "job": self.job_id,
                "path": self.path, "duration": self.duration, "sha256": self.sha256, "error": self.error,
                "delivered_at": iso(self.delivered_at)}


def holder_alive(owner: str | None, heartbeat_at: datetime | None, timeout: float | None = None) -> bool:
    """Whether the runner that holds a claim may still be at work: its process runs (this
    host) and it said so within the heartbeat timeout (any host)."""
    if not owner_alive(owner):
        return False
    timeout = config.heartbeat_timeout() if timeout is None else timeout
    return heartbeat_at is None or (utcnow() - heartbeat_at).total_seconds() <= timeout


# Plain columns, not ORM objects, and not the recipes: `dub status` reads 50,000 rows.
RECORD_COLUMNS = (Delivery.item, Delivery.lang, Delivery.status, Delivery.fingerprint, Delivery.job_id, Delivery.path, Delivery.duration, Delivery.sha256, Delivery.error, Delivery.owner,
                  Delivery.heartbeat_at, Delivery.delivered_at)


def records(cat: Catalog, manifest: str | None = None) -> list[Record]:
    """Every delivery of one manifest (by its key), or of all manifests."""
    statement = select(*RECORD_COLUMNS).order_by(Delivery.manifest, Delivery.item, Delivery.lang)
    if manifest is not None:
        statement = statement.where(Delivery.manifest == manifest)
    with cat.reading() as session:
        return [Record(*row) for row in session.execute(statement)]


def recipes_of(cat: Catalog, manifest: str, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict | None]:
    """The recorded recipes of some items x languages (the stale ones, to say what changed)."""
    found: dict[tuple[str, str], dict | None] = {}
    wanted = set(keys)
    with cat.reading() as session:
        for chunk in chunks(sorted({item for item, _ in keys})):
            rows = session.execute(select(Delivery.item, Delivery.lang, Delivery.recipe)
                                   .where(Delivery.manifest == manifest, Delivery.item.in_(chunk)))
            found.update({(item, lang): recipe for item, lang, recipe in rows if (item, lang) in wanted})
    return found


def manifests(cat: Catalog) -> list[str]:
    with cat.reading() as session:
        return list(session.scalars(select(Delivery.manifest).distinct().order_by(Delivery.manifest)))


def claim(cat: Catalog, manifest: str, item: str, langs: list[str], owner: str | None = None) -> bool:
    """Hold every one of `langs` of `item` for `owner` (default: this process), or none of
    them when another live runner holds any. True when held."""
    owner = owner or process_owner()
    now = utcnow()
    try:
        with cat.writing() as session:
            statement = select(Delivery).where(Delivery.manifest == manifest, Delivery.item == item,
                                               Delivery.lang.in_(langs))
            if cat.dialect == "postgresql":
                statement = statement.with_for_update()
            rows = {row.lang: row for row in session.scalars(statement)}
            if any(row.status in HELD and row.owner != owner and holder_alive(row.owner, row.heartbeat_at)
                   for row in rows.values()):
                return False
            for lang in langs:
                row = rows.get(lang)
                if row is None:
                    session.add(Delivery(manifest=manifest, item=item, lang=lang, status="queued", owner=owner,
                                         heartbeat_at=now, updated_at=now))
                else:
                    row.status, row.owner, row.heartbeat_at, row.updated_at = "queued", owner, now, now
            session.flush()
    except IntegrityError:  # another runner inserted one of the same new rows first
        return False
    return True


def start(cat: Catalog, manifest: str, item: str, langs: list[str], owner: str | None = None) -> None:
    """The held rows' job has started: 'running'."""
    _set(cat, manifest, item, langs, owner or process_owner(), status="running")


def heartbeat(cat: Catalog, manifest: str, owner: str | None = None) -> None:
    """Say that the runner holding rows of `manifest` is alive."""
    with cat.writing() as session:
        session.execute(update(Delivery).where(Delivery.manifest == manifest, Delivery.owner == (owner or process_owner()),
                                               Delivery.status.in_(HELD))
                        .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))


def release(cat: Catalog, manifest: str, item: str, langs: list[str], owner: str | None = None) -> None:
    """Give back held rows without a result (the run stopped before their item was
    dubbed): each returns to what it was before the claim, as the record tells: done if a
    file was delivered, failed (with its reason) if it failed before, else no row at all
    (never dubbed)."""
    owner = owner or process_owner()
    with cat.writing() as session:
        for row in session.scalars(select(Delivery).where(Delivery.manifest == manifest, Delivery.item == item,
                                                          Delivery.lang.in_(langs), Delivery.owner == owner)):
            if row.status in HELD and row.delivered_at is None and row.error is None:
                session.delete(row)  # the claim made it
                continue
            if row.status in HELD:
                row.status = "done" if row.delivered_at is not None else "failed"
            row.owner, row.updated_at = None, utcnow()


def finish(cat: Catalog, manifest: str, item: str, lang: str, status: str, *, fingerprint: str | None = None,
           recipe: dict | None = None, job_id: int | None = None, path: str | None = None,
           duration: float | None = None, sha256: str | None = None, error: str | None = None) -> None:
    """Record a result and release the row. 'done' records what the delivered file was
    made from; 'failed' keeps the last delivered file's record (it is still on disk), and
    so do 'awaiting review' (its job `job_id` waits for a person), with the recipe that
    job will deliver (`staleness.settle_reviewed` settles it once the job ends), and
    'rejected' (a person said no, `error` why), with the recipe that was rejected."""
    if status not in ("done", "failed", AWAITING_REVIEW, REJECTED):
        raise ValueError(f"a delivery finishes done, failed, awaiting review or rejected, not {status!r}")
    now = utcnow()
    with cat.writing() as session:
        row = session.scalars(select(Delivery).where(Delivery.manifest == manifest, Delivery.item == item,
                                                     Delivery.lang == lang)).first()
        if row is None:
            row = Delivery(manifest=manifest, item=item, lang=lang, status=status, updated_at=now)
            session.add(row)
        row.status, row.owner, row.updated_at, row.job_id = status, None, now, job_id
        if status == "done":
            row.fingerprint, row.recipe, row.path, row.duration, row.sha256 = fingerprint, recipe, path, duration, sha256
            row.error, row.delivered_at = None, now
        elif status in (AWAITING_REVIEW, REJECTED):  # judged against the recipe it was offered from
            row.fingerprint, row.recipe = fingerprint, recipe
            row.error = redact(error)[:2000] if error else None
        else:
            row.error = redact(error or "failed")[:2000]


def awaiting_job(cat: Catalog, job_id: int) -> list[tuple[str, str, str, dict | None]]:
    """(manifest, item, lang, recipe) of the rows, of any manifest, awaiting review in job `job_id`."""
    with cat.reading() as session:
        rows = session.scalars(select(Delivery).where(Delivery.job_id == job_id, Delivery.status == AWAITING_REVIEW))
        return [(row.manifest, row.item, row.lang, row.recipe) for row in rows]


def _set(cat: Catalog, manifest: str, item: str, langs: list[str], owner: str, **values) -> None:
    with cat.writing() as session:
        session.execute(update(Delivery).where(Delivery.manifest == manifest, Delivery.item == item,
                                               Delivery.lang.in_(langs), Delivery.owner == owner)
                        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))


def remember_defaults(cat: Catalog, manifest: str, langs: list[str] | None, options: dict) -> None:
    """What a catalog run of `manifest` was given (languages, options set), for `dub status`.
    Runners starting together: one inserts the row, the others update it (PostgreSQL does
    not serialize the read and the insert as SQLite's write lock does)."""
    for attempt in range(2):
        try:
            with cat.writing() as session:
                row = session.get(ManifestDefaults, manifest)
                if row is None:
                    session.add(ManifestDefaults(manifest=manifest, langs=langs, options=options, updated_at=utcnow()))
                else:
                    row.langs, row.options, row.updated_at = langs, options, utcnow()
            return
        except IntegrityError:  # another runner inserted it between our read and insert: update it
            if attempt:
                raise


def defaults_of(cat: Catalog, manifest: str) -> tuple[list[str] | None, dict] | None:
    """The languages and options the last catalog run of `manifest` was given, if any."""
    with cat.reading() as session:
        row = session.get(ManifestDefaults, manifest)
        return (list(row.langs) if row.langs else None, dict(row.options)) if row is not None else None


# ------------------------------------------------------------------------ file digests


def digests(cat: Catalog, paths: Iterable[str | Path]) -> dict[str, str | None]:
    """sha256 of each file (None if missing), hashing only files whose size or mtime
    changed since the catalog last saw them."""
    from polydub.cache import file_hash

    stats: dict[str, tuple[int, int] | None] = {}
    for path in dict.fromkeys(str(p) for p in paths):
        try:
            st = os.stat(path)
            # a FIFO or device is no file to hash (reading one blocks or never ends): as if missing
            stats[path] = (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
        except OSError:
            stats[path] = None
    present = [p for p, st in stats.items() if st is not None]
    known: dict[str, tuple[int, int, str]] = {}
    with cat.reading() as session:
        for chunk in chunks(present):
            for row in session.execute(select(FileDigest.path, FileDigest.size, FileDigest.mtime_ns, FileDigest.sha256)
                                       .where(FileDigest.path.in_(chunk))):
                known[row[0]] = (row[1], row[2], row[3])
    result: dict[str, str | None] = {p: None for p, st in stats.items() if st is None}
    fresh: dict[str, tuple[int, int, str]] = {}
    for path in present:
        size, mtime = stats[path]
        hit = known.get(path)
        if hit and hit[:2] == (size, mtime):
            result[path] = hit[2]
        else:
            try:
                fresh[path] = (size, mtime, file_hash(path))
                result[path] = fresh[path][2]
            except OSError:
                result[path] = None
    if fresh:
        _remember_digests(cat, fresh)
    return result


def _remember_digests(cat: Catalog, fresh: dict[str, tuple[int, int, str]]) -> None:
    insert = upsert_insert(cat.dialect)
    if insert is None:  # other databases: the digests are a cache; skip remembering them
        return
    rows = [{"path": p, "size": s, "mtime_ns": m, "sha256": h} for p, (s, m, h) in fresh.items()]
    with cat.writing() as session:
        for chunk in chunks(rows):
            statement = insert(FileDigest).values(chunk)
            session.execute(statement.on_conflict_do_update(
                index_elements=[FileDigest.path],
                set_={"size": statement.excluded.size, "mtime_ns": statement.excluded.mtime_ns,
                      "sha256": statement.excluded.sha256}))
