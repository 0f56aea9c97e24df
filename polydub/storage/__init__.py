"""The catalog: SQL records of sources, jobs, outputs and stage runs (SQLite or PostgreSQL)."""

from polydub.storage.catalog import Catalog

__all__ = ["Catalog"]
