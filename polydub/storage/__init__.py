"""What polydub keeps: the catalog (SQL records of sources, jobs, outputs and stage runs, in
SQLite or PostgreSQL) and object storage (the stage cache and deliverables in a bucket).

`Catalog` and `shared_catalog` are imported when first used, so that a module needing only
object storage does not pay for SQLAlchemy."""

__all__ = ["Catalog", "shared_catalog"]


def __getattr__(name: str):
    if name in __all__:
        from polydub.storage import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module 'polydub.storage' has no attribute {name!r}")
