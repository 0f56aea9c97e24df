"""Where deployments created before the batch flow moved to `flows/batch.py` find it
(their entrypoint is polydub/flows/catalog.py:dub_catalog). New code imports flows.batch."""

from polydub.flows.batch import dub_catalog

__all__ = ["dub_catalog"]
