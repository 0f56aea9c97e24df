"""Several speakers: labels from the script or a diarizer, a voice each, kept in the outputs.

The source is a short two-speaker video built here with espeak-ng and ffmpeg. Ana speaks
it in espeak-ng's high female variant and Ben in the low male one: the dub gives its
first speaker (Ana) the low male variant and Ben the high female one, so the source's
voices, still faintly under the dub, pull against what the pitch checks look for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydub.diarize import find_diarizer, label_segments
from polydub.errors import InputError
from polydub.segments import Segment, read_subtitles, speakers_of, write_subtitles
from polydub.tts.cast import VARIANTS, check_speakers, espeak_variant, load_voice_map
from tests import inprocess
from tests.pitch import PitchDiarizer, median_f0
from tests.test_tts import xtts_dir  # noqa: F401 - the tiny XTTS fixture

SR = 22_050  # espeak-ng's rate
DURATION = 11.5  # seconds
SCRIPT = [  # speaker, start, end, English, Spanish
    ("Ana", 0.3, 2.7, "Good morning, everyone.", "Buenos días a todos."),
    ("Ben", 3.0, 5.4, "Thanks, Ana. Today we test the camera.", "Gracias, Ana. Hoy probamos la cámara."),
    ("Ana", 5.8, 8.2, "It is light and easy to use.", "Es ligera y fácil de usar."),
    ("Ben", 8.6, 11.0, "And it costs very little.", "Y cuesta muy poco."),
]
SOURCE_VOICE = {"Ana": "en+f3", "Ben": "en+m3"}  # the opposite of what the dub gives them
# espeak-ng's m3 speaks near 110 Hz and f3 near 220 Hz (an octave). Intonation moves one
# voice's median by well under 20 %, so 1.5 (half an octave) separates two voices with room.
PITCH_RATIO = 1.5


def dub(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return inprocess.dub(*args, env=env)  # what is checked is what it makes and says


def segments(lang: int, labels: bool) -> list[Segment]:
    """The script in English (0) or Spanish (1), with or without its speakers."""
    return [Segment(a, b, lines[lang], who if labels else None) for who, a, b, *lines in SCRIPT]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """talk.mp4: a grey picture and the script spoken by two espeak-ng voices at its times."""
    folder = tmp_path_factory.mktemp("talk")
    track = np.zeros(round(DURATION * SR), np.float32)
    for i, (who, start, _, english, _) in enumerate(SCRIPT):
        clip = folder / f"line{i}.wav"
        subprocess.run(["espeak-ng", "-v", SOURCE_VOICE[who], "-w", str(clip), english], check=True, timeout=60)
        audio, sr = sf.read(clip, dtype="float32")
        assert sr == SR
        at = round(start * SR)
        audio = audio[:len(track) - at]
        track[at:at + len(audio)] += 0.5 * audio / np.abs(audio).max()
    sf.write(folder / "talk.wav", track, SR)
    video = folder / "talk.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=64x64:r=25:d={DURATION}",
                    "-i", str(folder / "talk.wav"), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", str(video)], check=True, timeout=120)
    return video


def job_folder(source: Path, tmp_path: Path, transcript: str, translation: str,
               labels: tuple[bool, bool]) -> Path:
    """A copy of the source with an English transcript and a Spanish approved translation."""
    shutil.copy(source, tmp_path / "talk.mp4")
    write_subtitles(segments(0, labels[0]), tmp_path / f"talk.en.{transcript}")
    write_subtitles(segments(1, labels[1]), tmp_path / f"talk.es.{translation}")
    return tmp_path / "talk.mp4"


def audio_of(media: Path, folder: Path) -> tuple[np.ndarray, int]:
    wav = folder / f"{media.stem}.check.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media), "-map", "0:a:0", "-ac", "1", "-ar", "16000",
                    str(wav)], check=True, timeout=60)
    return sf.read(wav, dtype="float32")


def pitch_by_speaker(report: dict, lang: str, media: Path, folder: Path) -> dict[str, float]:
    """Median pitch of each speaker's lines in the delivered audio, where the report says
    each line sounds (its start, for its clip's length at its speed, within its slot)."""
    audio, sr = audio_of(media, folder)
    spans: dict[str, list[tuple[float, float]]] = {}
    for line in report["languages"][lang]["lines"]:
        length = min(line["clip"] / line["speed"], line["slot"])
        spans.setdefault(line["speaker"], []).append((line["start"], line["start"] + length))
    return {who: median_f0(audio, sr, s) for who, s in spans.items()}


def test_a_source_at_another_rate_decodes_to_its_own_length(source, tmp_path):
    """The source's audio is at 22.05 kHz: the job's 48 kHz and 16 kHz copies must still be
    exactly as long as its audio stream (they were 2.2x too long and 0.7x too short)."""
    from polydub.media import extract_audio, probe

    seconds = probe(source).audio_duration
    assert abs(seconds - DURATION) < 0.05
    for rate in (48_000, 16_000):
        wav = extract_audio(source, tmp_path / f"{rate}.wav", sample_rate=rate, seconds=seconds)
        assert sf.info(str(wav)).frames == round(seconds * rate)
        assert np.abs(sf.read(wav)[0][round(9.0 * rate):round(9.5 * rate)]).max() > 0.01  # Ben's last line is there


# --- casting and diarization, without a job --------------------------------------------

def test_voice_maps_in_json_or_yaml_per_language(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"Ana": {"es": "espeak:es+f3", "*": "espeak"}, "Ben": "espeak:en+m3"}))
    (tmp_path / "v.yaml").write_text("Ana:\n  es: espeak:es+f3\n  '*': espeak\nBen: espeak:en+m3\n")
    for name in ("v.json", "v.yaml"):
        vm = load_voice_map(tmp_path / name)
        assert vm.spec_for("Ana", "es") == "espeak:es+f3" and vm.spec_for("Ana", "fr") == "espeak"
        assert vm.spec_for("Ben", "de") == "espeak:en+m3" and vm.spec_for("Cleo", "es") is None
    check_speakers(vm, ["Ana", "Ben", "Cleo"])
    check_speakers(vm, [], diarized=True)  # names given by a diarizer during the job: nothing to check yet
    with pytest.raises(InputError, match="the script names no speakers"):
        check_speakers(vm, [])
    with pytest.raises(InputError, match="no speaker 'Ben' in the script \\(its speakers: Ana, Cleo\\)"):
        check_speakers(vm, ["Ana", "Cleo"])


@pytest.mark.parametrize("text, message", [
    ('{"Ana": "espeak:nosuchvoice"}', "speaker 'Ana': espeak-ng has no voice 'nosuchvoice'"),
    ('{"Ana": {"xx": "espeak"}}', "speaker 'Ana': unknown language code"),
    ('{"Ana": 3}', "a voice is a spec such as espeak:es\\+f3"),
    ('["Ana", "Ben"]', "give a mapping of speaker names to voices"),
    ('{"Ana": "espeak", ', "not JSON or YAML"),
    ('{"Ana": "robot"}', "unknown voice 'robot'"),
])
def test_bad_voice_maps_say_what_is_wrong(tmp_path, text, message):
    (tmp_path / "v.json").write_text(text)
    with pytest.raises(InputError, match=message):
        load_voice_map(tmp_path / "v.json")
    with pytest.raises(InputError, match="no such file"):
        load_voice_map(tmp_path / "missing.yaml")


def test_espeak_speakers_get_male_and_female_variants_in_order():
    assert [espeak_variant("es", i, 3) for i in range(3)] == ["es+m3", "es+f3", "es+m7"]
    assert espeak_variant("es", 0, 1) == "es"  # one speaker: the language's own voice, as before
    assert espeak_variant("es+f2", 1, 2) == "es+f2"  # a variant asked for is kept
    assert espeak_variant("es", len(VARIANTS), len(VARIANTS) + 1) == "es+m3"


def test_translations_keep_their_speakers(tmp_path):
    from polydub.translate.memory import TranslationMemory, translate_with_memory

    class Upper:
        name, version = "upper", "1"

        def translate_batch(self, texts, source, target):
            return [t.upper() for t in texts]

    out, _ = translate_with_memory(segments(0, True), "en", "es", Upper(), None,
                                   TranslationMemory(tmp_path / "tm.json"))
    assert [s.speaker for s in out] == ["Ana", "Ben", "Ana", "Ben"] and out[0].text == "GOOD MORNING, EVERYONE."


def test_a_diarizer_labels_an_unlabeled_transcript_by_who_speaks(source, tmp_path):
    wav = tmp_path / "asr.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-ac", "1", "-ar", "16000", str(wav)], check=True,
                   timeout=60)
    turns = PitchDiarizer().diarize(wav)
    labeled = label_segments(segments(0, False), turns)
    assert [s.speaker for s in labeled] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"]
    assert [s.text for s in labeled] == [s.text for s in segments(0, False)]


def test_diarizer_setting():
    assert find_diarizer("off") is None
    assert find_diarizer("auto") is None  # no pyannote pipeline in the tests' models folder
    assert isinstance(find_diarizer("tests.pitch:PitchDiarizer"), PitchDiarizer)
    for spec, message in (("pyannote", "pyannote.audio is not installed|no pipeline config.yaml"),
                          ("nosuch.module:Thing", "cannot load"), ("tests.pitch:median_f0x", "cannot load"),
                          ("tests.pitch:Turn", "cannot load it \\(TypeError"), ("tests.pitch:Path", "not a diarizer"),
                          ("something", "use auto, off")):
        with pytest.raises(InputError, match=message):
            find_diarizer(spec)


@pytest.mark.slow
def test_a_cloning_voice_clones_each_speaker_from_their_own_lines(source, xtts_dir, tmp_path, monkeypatch):
    """With XTTS present, `--voice auto` casts a cloning voice per speaker, each from a
    reference clip cut from that speaker's lines only (and so keyed apart in the cache)."""
    from polydub.job import JobPlan
    from polydub.media import extract_audio
    from polydub.options import DubOptions
    from polydub.storage import Catalog
    from polydub.tasks.common import JobContext, StageResult
    from polydub.tasks.language import cast_voices
    from polydub.tasks.source import ASR_AUDIO, save_segments

    models = tmp_path / "models"
    models.mkdir()
    (models / "xtts-v2").symlink_to(xtts_dir, target_is_directory=True)
    monkeypatch.setenv("DUB_MODELS_DIR", str(models))
    stages = {}  # the folders the per-video stages and the translation leave
    for stage, lines in (("probe", None), ("transcribe", segments(0, True)), ("translate", segments(1, True))):
        stages[stage] = tmp_path / stage
        stages[stage].mkdir()
        if lines:
            save_segments(lines, stages[stage])
    extract_audio(source, stages["probe"] / ASR_AUDIO, sample_rate=16_000)
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    ctx = JobContext(Catalog(db).create_job(None, ["es"], {}, str(tmp_path)), db, str(tmp_path / "cache"))
    plan = JobPlan(input=str(source), name="talk", out_dir=str(tmp_path / "out"), langs=["es"],
                   options=DubOptions(voice="auto"))
    cast = cast_voices(ctx, plan, *(StageResult(stage, None, str(folder)) for stage, folder in stages.items()), "es")

    assert list(cast) == ["Ana", "Ben"]
    assert all(c.voice.backend == "coqui" and "cloning the source speaker" in c.reason for c in cast.values())
    assert cast["Ana"].key["reference"] != cast["Ben"].key["reference"]  # their lines are cached apart
    pitch = {who: median_f0(*sf.read(c.voice.reference_wav, dtype="float32")) for who, c in cast.items()}
    assert pitch["Ana"] / pitch["Ben"] >= PITCH_RATIO, pitch  # Ana's source voice is the high one
    reference_runs = [r for r in Catalog(db).show_job(ctx.job_id)["stages"] if r["stage"] == "reference"]
    assert len(reference_runs) == 2


# --- whole jobs through `dub` ----------------------------------------------------------

slow = pytest.mark.slow  # whole jobs


@slow
def test_two_labeled_speakers_are_dubbed_in_two_voices(prefect_api, source, tmp_path):
    """SRT `NAME:` transcript, unlabeled approved translation: speakers carried by time."""
    video = job_folder(source, tmp_path, "srt", "srt", labels=(True, False))
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--voice", "espeak", "--out", str(out),
                 "--db", f"sqlite:///{tmp_path / 'c.db'}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    entry = report["languages"]["es"]
    assert [line["speaker"] for line in entry["lines"]] == ["Ana", "Ben", "Ana", "Ben"]
    assert entry["speakers"]["Ana"]["voice"].endswith("voice es+m3")
    assert entry["speakers"]["Ben"]["voice"].endswith("voice es+f3")
    assert [line["voice"] for line in entry["lines"]] == [entry["speakers"][w]["voice"] for w in
                                                          ("Ana", "Ben", "Ana", "Ben")]
    pitch = pitch_by_speaker(report, "es", out / "talk.es.mp4", tmp_path)
    assert pitch["Ben"] / pitch["Ana"] >= PITCH_RATIO, pitch
    for ext in ("srt", "vtt"):  # the delivered subtitles say who speaks
        got = read_subtitles(out / f"talk.es.{ext}")
        assert [(s.speaker, s.text) for s in got] == [(w, es) for w, _, _, _, es in SCRIPT]
    assert "<v Ben>Gracias, Ana." in (out / "talk.es.vtt").read_text()
    assert "Ben: Gracias, Ana." in (out / "talk.es.srt").read_text()


@slow
def test_voices_file_gives_a_speaker_the_voice_it_names(prefect_api, source, tmp_path):
    """VTT `<v Name>` transcript and translation; `--voices` casts Ben, Ana keeps the default."""
    video = job_folder(source, tmp_path, "vtt", "vtt", labels=(True, True))
    voices = tmp_path / "voices.yaml"
    voices.write_text("Ben:\n  es: espeak:es+f4\n  '*': espeak:en\n")
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--voice", "espeak", "--voices", str(voices), "--out", str(out),
                 "--db", f"sqlite:///{tmp_path / 'c.db'}", "--json")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["languages"]["es"]
    assert entry["speakers"]["Ben"]["voice"].endswith("voice es+f4")
    assert entry["speakers"]["Ben"]["reason"].startswith("--voices voices.yaml: ")
    assert entry["speakers"]["Ana"]["voice"].endswith("voice es+m3")
    assert [line["voice"].rsplit(" ", 1)[-1] for line in entry["lines"]] == ["es+m3", "es+f4", "es+m3", "es+f4"]
    assert speakers_of(read_subtitles(out / "talk.es.vtt")) == ["Ana", "Ben"]


@slow
def test_a_diarizer_names_the_speakers_of_an_unlabeled_script(prefect_api, source, tmp_path):
    video = job_folder(source, tmp_path, "srt", "srt", labels=(False, False))
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--voice", "espeak", "--out", str(out),
                 "--db", f"sqlite:///{tmp_path / 'c.db'}", "--json", env={"DUB_DIARIZER": "tests.pitch:PitchDiarizer"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["transcript"]["diarizer"] == "pitch"
    entry = report["languages"]["es"]
    assert [line["speaker"] for line in entry["lines"]] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"]
    pitch = pitch_by_speaker(report, "es", out / "talk.es.mp4", tmp_path)
    assert pitch["Speaker 2"] / pitch["Speaker 1"] >= PITCH_RATIO, pitch
    assert speakers_of(read_subtitles(out / "talk.es.srt")) == ["Speaker 1", "Speaker 2"]


@pytest.mark.parametrize("labels, voices, message", [
    (True, '{"Benn": "espeak:es+f4"}', "no speaker 'Benn' in the script (its speakers: Ana, Ben)"),
    (True, '{"Ben": "espeak:es+nosuch"}', "speaker 'Ben': espeak-ng has no voice"),
    (False, '{"Ben": "espeak:es+f4"}', "the script names no speakers"),  # and no diarizer here
])
def test_a_bad_voices_file_is_refused_before_work(source, tmp_path, labels, voices, message):
    video = job_folder(source, tmp_path, "srt", "srt", labels=(labels, False))
    (tmp_path / "voices.json").write_text(voices)
    out = tmp_path / "out"
    result = dub(str(video), "--langs", "es", "--voice", "espeak", "--voices", str(tmp_path / "voices.json"),
                 "--out", str(out), "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()
