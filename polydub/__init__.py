"""polydub: dub one video into many languages, lip-synced, recorded in a catalog."""

__version__ = "0.1.0"
