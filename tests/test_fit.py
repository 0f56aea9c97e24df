"""Fitting synthesized lines to their slots: planning the speed, and placing them sample-exactly."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydub.audio.fit import GAP, plan_fits, render_dub_track
from polydub.errors import StageError
from polydub.segments import Segment
from tests.probe import ffprobe_samples

SR = 48_000
CLIP_RATE = 22_050  # what TTS models typically write


def tone(path: Path, seconds: float, freq: float = 440.0, rate: int = CLIP_RATE) -> Path:
    """A clip that is loud from its very first sample, so its onset is easy to find."""
    t = np.arange(round(seconds * rate)) / rate
    sf.write(path, (0.5 * np.cos(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def onset(track: Path, near: float, window: float = 0.3) -> float:
    """Seconds of the first clearly non-silent sample within `window` of `near`."""
    first = round((near - window) * SR)
    x = sf.read(track, start=first, frames=round(2 * window * SR), dtype="float32")[0]
    return (first + int(np.flatnonzero(np.abs(x) > 0.01)[0])) / SR


def sounding(x: np.ndarray) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return loud[0] / SR, (loud[-1] + 1) / SR



def test_line_that_fits_is_untouched():
    fits = plan_fits([Segment(1.0, 2.0, "a"), Segment(5.0, 6.0, "b")], [0.8, 0.9], total=10.0)
    assert [f.speed for f in fits] == [1.0, 1.0]
    assert [f.overflow for f in fits] == [0.0, 0.0]
    assert fits[0].slot == pytest.approx(5.0 - GAP - 1.0)
    assert fits[1].slot == pytest.approx(10.0 - 5.0)  # the last line runs to the track's end


def test_longer_line_uses_the_silence_after_it_before_speeding_up():
    fits = plan_fits([Segment(1.0, 2.0, "a"), Segment(5.0, 6.0, "b")], [2.5, 0.5], total=10.0)
    assert fits[0].clip > 2.0 - 1.0  # longer than its own line
    assert fits[0].speed == 1.0 and fits[0].overflow == 0.0


def test_line_is_sped_up_only_as_much_as_needed():
    fits = plan_fits([Segment(0.0, 1.0, "a"), Segment(2.0 + GAP, 3.0, "b")], [2.4, 0.5], total=5.0)
    assert fits[0].speed == pytest.approx(1.2, rel=0.01)
    assert fits[0].overflow == 0.0
    assert fits[1].speed == 1.0


def test_speed_is_capped_and_what_does_not_fit_is_reported():
    fits = plan_fits([Segment(0.0, 1.0, "a"), Segment(1.0 + GAP, 2.0, "b")], [2.0, 0.5], total=5.0)
    assert fits[0].speed == pytest.approx(1.3)
    assert fits[0].overflow == pytest.approx(2.0 / 1.3 - 1.0, abs=1e-3)
    fits = plan_fits([Segment(0.0, 1.0, "a"), Segment(1.0 + GAP, 2.0, "b")], [2.0, 0.5], 5.0,
                     max_speed=1.1)
    assert fits[0].speed == pytest.approx(1.1)
    # a line already spoken 1.2x faster at the source is stretched at most 1.3 / 1.2 more
    fits = plan_fits([Segment(0.0, 1.0, "a"), Segment(1.0 + GAP, 2.0, "b")], [2.0, 0.5], 5.0,
                     spoken_faster=[1.2, 1.0])
    assert fits[0].speed == pytest.approx(1.3 / 1.2) and fits[1].speed == 1.0
    assert fits[0].overflow == pytest.approx(2.0 / (1.3 / 1.2) - 1.0, abs=1e-3)


def test_lines_given_out_of_order_keep_their_index_and_get_time_ordered_slots():
    fits = plan_fits([Segment(4.0, 5.0, "late"), Segment(1.0, 2.0, "early")], [0.5, 0.5], 6.0)
    assert [f.index for f in fits] == [0, 1]
    assert fits[1].slot == pytest.approx(4.0 - GAP - 1.0)
    assert fits[0].slot == pytest.approx(2.0)


def test_mismatched_clip_count_is_a_one_line_error():
    with pytest.raises(StageError, match="2 lines, 1 clips"):
        plan_fits([Segment(0, 1, "a"), Segment(2, 3, "b")], [1.0], 5.0)


def test_lines_start_on_their_sample_with_no_drift_on_a_long_track(tmp_path):
    total = 10 * 60 * SR  # ten minutes: lines near the end must still be on time
    starts = [0.5, 299.987, 598.5]
    clips = [tone(tmp_path / "a.wav", 1.0), tone(tmp_path / "b.wav", 1.0),
             tone(tmp_path / "c.wav", 2.0)]  # the last one runs past the end
    segments = [Segment(s, s + 1.0, "x") for s in starts]
    fits = plan_fits(segments, [1.0, 1.0, 2.0], total / SR)
    out = tmp_path / "dub.wav"
    report = render_dub_track(clips, fits, total, out)

    assert sf.info(out).frames == total
    assert ffprobe_samples(out) == total
    assert sf.info(out).samplerate == SR and sf.info(out).channels == 1
    for s in starts:
        assert abs(onset(out, s) - s) <= 0.010
    assert [r["truncated"] for r in report[:2]] == [0.0, 0.0]
    # sped up to the cap, the last line still runs past the end: only that part is cut
    assert report[2]["speed"] == pytest.approx(1.3)
    assert report[2]["truncated"] == pytest.approx(2.0 / 1.3 - (600.0 - 598.5), abs=0.005)
    assert report[2]["truncated"] == pytest.approx(report[2]["overflow"], abs=0.005)
    assert report[2]["sample"] == round(598.5 * SR)


def test_sped_up_line_is_shorter_with_its_pitch_kept(tmp_path):
    clip = tone(tmp_path / "line.wav", 2.0, freq=440.0)
    fits = plan_fits([Segment(0.5, 1.5, "a"), Segment(0.5 + 1.6 + GAP, 3.0, "b")], [2.0, 0.1], 4.0)
    assert fits[0].speed == pytest.approx(1.25, rel=0.01)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(CLIP_RATE // 10, np.float32), CLIP_RATE)
    out = tmp_path / "dub.wav"
    render_dub_track([clip, silent], fits, 4 * SR, out)

    x = sf.read(out, dtype="float32")[0]
    begin, end = sounding(x)
    assert begin == pytest.approx(0.5, abs=0.010)
    assert end - begin == pytest.approx(2.0 / 1.25, rel=0.02)
    line = x[round(begin * SR):round(end * SR)]
    spectrum = np.abs(np.fft.rfft(line * np.hanning(len(line)), n=8 * len(line)))
    peak = np.argmax(spectrum) * SR / (8 * len(line))
    assert peak == pytest.approx(440.0, rel=0.02)


def test_overflowing_line_runs_on_into_the_next_slot_rather_than_being_cut(tmp_path):
    clips = [tone(tmp_path / "a.wav", 2.0, freq=440.0), tone(tmp_path / "b.wav", 0.5, freq=880.0)]
    segments = [Segment(1.0, 1.5, "a"), Segment(2.0 + GAP, 2.5, "b")]
    fits = plan_fits(segments, [2.0, 0.5], 5.0)
    report = render_dub_track(clips, fits, 5 * SR, tmp_path / "dub.wav")
    assert report[0]["speed"] == pytest.approx(1.3)
    assert report[0]["overflow"] == pytest.approx(2.0 / 1.3 - 1.0, abs=1e-3)
    assert report[0]["truncated"] == 0.0

    x = sf.read(tmp_path / "dub.wav", dtype="float32")[0]
    late = x[round(2.1 * SR):round(2.4 * SR)]  # after the first slot's end, inside the second
    t = np.arange(len(late)) / SR
    first_line = 2 * abs(np.mean(late * np.exp(-2j * np.pi * 440.0 * t)))
    assert first_line > 0.2  # the first line still sounds there, at about its own level
    assert onset(tmp_path / "dub.wav", 1.0) == pytest.approx(1.0, abs=0.010)


def test_synthesized_speech_is_stretched_to_the_planned_length(tmp_path):
    clip = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(clip), "The quick brown fox jumps over it."],
                   check=True, timeout=60, capture_output=True)
    seconds = sf.info(clip).duration
    fits = plan_fits([Segment(0.2, 1.0, "a")], [seconds], total=0.2 + seconds / 1.2)
    assert fits[0].speed == pytest.approx(1.2, rel=0.01)
    total = round((0.2 + seconds) * SR)  # room for the whole stretched line
    report = render_dub_track([clip], fits, total, tmp_path / "dub.wav")
    assert report[0]["placed"] == pytest.approx(seconds / 1.2, rel=0.02)
    assert report[0]["truncated"] == 0.0


def test_missing_clip_is_a_one_line_error(tmp_path):
    fits = plan_fits([Segment(0.0, 1.0, "a")], [1.0], 2.0)
    with pytest.raises(StageError, match="missing"):
        render_dub_track([tmp_path / "nope.wav"], fits, 2 * SR, tmp_path / "dub.wav")
