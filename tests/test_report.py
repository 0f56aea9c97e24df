"""The typed job report reads and writes NAME.report.json as earlier versions wrote it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from polydub.errors import DubError
from polydub.report import JobReport, LanguageReport

# Written by `dub examples/talking_head.mp4 --langs es` before the report was typed
# (trimmed to one line and two stage rows; paths made neutral).
OLD_REPORT = Path(__file__).parent / "data" / "talking_head.report.json"


def test_a_report_written_before_the_types_loads_and_writes_back_unchanged():
    data = json.loads(OLD_REPORT.read_text())
    report = JobReport.from_json(data)

    assert report.job == 1 and report.status == "done" and report.delivered == ["es"]
    es = report.languages["es"]
    assert es.media == "/data/out/talking_head.es.mp4"
    assert es.backends.voice == "espeak" and es.backends.lipsync == "skipped" and es.backends.lipsync_reason
    assert es.stages["translate"].status == "done" and es.lines[0]["speed"] == 1.0
    assert report.background.method == "band-cut" and report.transcript.backend == "approved transcript"
    assert report.source_loudness_lufs == pytest.approx(-20.3)
    assert report.to_json() == data  # the same keys and values: readers of the file see no change


def test_a_failed_language_keeps_only_why():
    report = JobReport(job=7, input="a.mp4", duration=2.0, out_dir="/o",
                       languages={"es": LanguageReport(), "fr": LanguageReport()})
    report.fail("disk full")
    report.status = report.languages_status()
    data = report.to_json()

    assert data["status"] == "failed" and data["error"] == "disk full"
    assert data["languages"]["es"] == {"status": "failed", "stages": {}, "error": "disk full"}
    assert "background" not in data and "transcript" not in data and "source_loudness_lufs" not in data
    assert JobReport.from_json(json.loads(json.dumps(data))).to_json() == data


def test_a_finished_run_whose_end_lost_prefect_is_what_it_made():
    """A run's Prefect end failed (the server went away) after the job finished: the caller
    gets what the run made in its thread, saying Prefect did not record the end; a run
    that had not finished is one line."""
    import threading

    from polydub.flows import outcome

    since = time.time()
    report = outcome.made(JobReport.from_json(json.loads(OLD_REPORT.read_text())))
    found = outcome.finished_despite(RuntimeError("server gone\nsecond line"), since)
    assert found is report and found.status == "done"
    assert found.not_recorded == "the flow run's final state is not in Prefect (RuntimeError: server gone)"
    assert found.to_json()["not_recorded"] == found.not_recorded

    outcome.made({"rows": []})  # a catalog run's table
    assert outcome.finished_despite(ConnectionError("refused"), since)["not_recorded"].endswith("(ConnectionError: refused)")

    with pytest.raises(DubError, match="^the run stopped: RuntimeError: server gone$"):
        outcome.finished_despite(RuntimeError("server gone"), time.time() + 1)  # made before this run began
    caught = []

    def in_another_thread():
        try:
            outcome.finished_despite(RuntimeError("x"), since)
        except DubError as exc:
            caught.append(str(exc))

    thread = threading.Thread(target=in_another_thread)
    thread.start()
    thread.join()
    assert caught == ["the run stopped: RuntimeError: x"]  # another thread's run made nothing

