"""The catalog: SQL records of sources, jobs, outputs and stage runs (SQLite or PostgreSQL)."""

from polydub.storage.catalog import Catalog, shared_catalog

__all__ = ["Catalog", "shared_catalog"]
