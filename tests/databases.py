"""Catalog databases for tests: fresh SQLite files and fresh databases on the machine's
PostgreSQL (127.0.0.1:5432, trust auth). Every catalog test runs on both:

    from tests.databases import databases  # noqa: F401 - the fixture
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/{name}"
DROPS_AT_ONCE = 8


class Databases:
    """Fresh, empty catalog databases of one kind; all removed at the end."""

    def __init__(self, kind: str, folder):
        self.kind, self.folder, self.names = kind, folder, []

    def new_url(self) -> str:
        name = f"polydub_test_{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        if self.kind == "sqlite":
            return f"sqlite:///{self.folder / name / 'catalog.db'}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        return POSTGRES_URL.format(name=name)

    def drop_all(self) -> None:
        """Drop every database made here, all at once: each DROP DATABASE waits for a
        checkpoint, and PostgreSQL serves requests that arrive together with one (one by one,
        on a machine busy with the rest of the suite, they took 20 s for one module)."""
        if self.kind != "postgresql" or not self.names:
            return
        from concurrent.futures import ThreadPoolExecutor

        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=DROPS_AT_ONCE)

        def drop(name: str) -> None:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        with ThreadPoolExecutor(DROPS_AT_ONCE) as pool:
            list(pool.map(drop, self.names))
        admin.dispose()


def postgres_unreachable() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test on
        return str(exc).splitlines()[0]
    return None


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def databases(request, tmp_path_factory):
    if request.param == "postgresql":
        reason = postgres_unreachable()
        if reason:
            pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {reason}")
    dbs = Databases(request.param, tmp_path_factory.mktemp("catalogs"))
    yield dbs
    dbs.drop_all()
