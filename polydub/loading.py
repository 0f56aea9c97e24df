"""Loading model weights: one load at a time per process, each model loaded once.

torch and transformers build models under process-global state (meta-device
initialisation, default dtype), so two threads loading at once can corrupt each other
("Cannot copy out of meta tensor"). Languages run in threads, so every loader goes
through `load_once`.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")

_LOCK = threading.RLock()
_LOADED: dict[Hashable, object] = {}


def load_once(key: Hashable, load: Callable[[], T]) -> T:
    """Return the object loaded for `key`, calling `load()` only the first time."""
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = load()
        return _LOADED[key]  # type: ignore[return-value]
