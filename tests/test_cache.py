"""The stage cache: one builder per key, no half-written result, nobody's result removed
from under a reader."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from polydub import cache


def test_concurrent_builders_of_one_key_build_once(tmp_path):
    built, seen, errors = [], [], []

    def worker():
        try:
            with cache.exclusive("stage", "k", tmp_path):
                if cache.lookup("stage", "k", tmp_path) is None:
                    with cache.building("stage", "k", tmp_path) as work:
                        time.sleep(0.2)  # slow enough for the others to pile up
                        (work / "out.txt").write_text("result")
                        cache.finish(work, {"file": "out.txt"})
                    built.append(1)
            seen.append((cache.stage_dir("stage", "k", tmp_path) / "out.txt").read_text())
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(built) == 1 and seen == ["result"] * 4


def test_a_failed_build_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with cache.building("stage", "k", tmp_path) as work:
            (work / "half.txt").write_text("half")
            raise RuntimeError("crash")
    assert cache.lookup("stage", "k", tmp_path) is None
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "stage").iterdir())


def test_a_finished_result_is_never_replaced(tmp_path):
    with cache.building("stage", "k", tmp_path) as work:
        (work / "out.txt").write_text("first")
        cache.finish(work, {})
    with cache.building("stage", "k", tmp_path) as work:  # a second builder that did not look
        (work / "out.txt").write_text("second")
        cache.finish(work, {})
    assert (Path(cache.stage_dir("stage", "k", tmp_path)) / "out.txt").read_text() == "first"
