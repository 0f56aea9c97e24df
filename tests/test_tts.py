"""Speech synthesis: real espeak-ng, a tiny random-weight Coqui VITS built here, ffprobe checks."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from polydub import loading
from polydub.errors import InputError
from polydub.segments import Segment
from polydub.tts import (
    CoquiVoice,
    EspeakVoice,
    cut_reference,
    parse_voice_spec,
    select_voice,
)
from tests.tiny_models import build_vits

SHORT = "Good morning."
LONG = "Good morning. This sentence is quite a lot longer than the first one, and it keeps going."


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=30)
    return float(out.stdout)


def stream(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)["streams"][0]


@pytest.fixture(scope="module")
def vits_dir(tmp_path_factory) -> Path:
    return build_vits(tmp_path_factory.mktemp("vits"))


@pytest.mark.parametrize("lang", ["en", "es", "fr", "de", "pt-br"])
def test_espeak_speaks_each_language(tmp_path, lang):
    voice, reason = select_voice("espeak", lang)
    assert voice.backend == "espeak" and "espeak-ng" in reason
    short = voice.synthesize(SHORT, lang, tmp_path / "short.wav")
    long = voice.synthesize(LONG, lang, tmp_path / "long.wav")
    assert duration(short) > 0.3
    assert duration(long) > duration(short) + 1.0
    s = stream(long)
    assert s["channels"] == 1 and int(s["sample_rate"]) == voice.sample_rate
    assert s["codec_name"].startswith("pcm_")


def test_espeak_model_names_voice_and_version():
    voice, _ = select_voice("espeak", "pt-br")
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True,
                             timeout=30).stdout.split()
    assert voice.model.startswith("espeak-ng ") and voice.model.endswith("voice pt-br")
    assert voice.model.split()[1] in version


def test_espeak_leading_dash_text_and_empty_text(tmp_path):
    voice = EspeakVoice("en")
    dashed = voice.synthesize("--version -v xx is not an option here", "en", tmp_path / "dash.wav")
    assert duration(dashed) > 1.0
    empty = voice.synthesize("   ", "en", tmp_path / "empty.wav")
    assert 0 < duration(empty) < 0.3


def test_espeak_rate_changes_duration(tmp_path):
    slow = EspeakVoice("en", rate=100).synthesize(LONG, "en", tmp_path / "slow.wav")
    fast = EspeakVoice("en", rate=300).synthesize(LONG, "en", tmp_path / "fast.wav")
    assert duration(slow) > 1.5 * duration(fast)


def test_espeak_named_voice_and_unknown_voices(tmp_path):
    voice, reason = select_voice("espeak:en-us", "en")
    assert voice.model.endswith("voice en-us") and "en-us" in reason
    with pytest.raises(InputError, match="espeak-ng has no voice 'nosuchvoice'"):
        select_voice("espeak:nosuchvoice", "en")
    # Tagalog is a language we know, but espeak-ng 1.51 ships no voice for it.
    with pytest.raises(InputError, match="espeak-ng has no voice for language 'tl'"):
        select_voice("espeak", "tl")


def test_auto_without_weights_picks_espeak_and_says_why(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    voice, reason = select_voice("auto", "es", models_dir=models)
    assert voice.backend == "espeak"
    assert reason.startswith("auto: no Chatterbox weights in ") and str(models / "xtts-v2") in reason
    assert reason.endswith("(dub models pull kokoro); espeak-ng voice es")  # each voice passed over, in order


def test_auto_with_non_xtts_weights_and_no_reference_falls_back(tmp_path, vits_dir):
    # A VITS where XTTS-v2 is expected: auto must not clone with it.
    models = tmp_path / "models"
    (models / "xtts-v2").mkdir(parents=True)
    for name in ("model.pth", "config.json"):
        (models / "xtts-v2" / name).symlink_to(vits_dir / name)
    voice, reason = select_voice("auto", "en", models_dir=models)
    assert voice.backend == "espeak" and "no reference clip" in reason
    ref = EspeakVoice("en").synthesize(LONG, "en", tmp_path / "ref.wav")
    voice, reason = select_voice("auto", "en", models_dir=models, reference_wav=ref)
    assert voice.backend == "espeak" and "not XTTS" in reason


def test_coqui_vits_directory_synthesizes(tmp_path, vits_dir):
    voice, reason = select_voice(f"coqui:{vits_dir}", "en")
    assert isinstance(voice, CoquiVoice) and voice.backend == "coqui"
    assert str(vits_dir) in voice.model and voice.model.startswith("coqui-tts ")
    assert str(vits_dir) in reason
    wav = voice.synthesize("Hello there, how are you today?", "en", tmp_path / "vits.wav")
    assert duration(wav) > 0
    # the synthesizer's trailing sentence pad (10000 zero samples) is not part of the line
    import soundfile as sf

    audio, _ = sf.read(wav)
    assert audio[-10000:].any()
    s = stream(wav)
    assert s["channels"] == 1 and int(s["sample_rate"]) == voice.sample_rate == 22050


def test_coqui_model_is_loaded_once_and_shared_by_threads(tmp_path, vits_dir):

    voice, _ = select_voice(f"coqui:{vits_dir}", "en")
    outs = [tmp_path / f"line{i}.wav" for i in range(4)]
    errors = []

    def speak(out):
        try:
            voice.synthesize("One line of the dub.", "en", out)
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=speak, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(duration(o) > 0 for o in outs)
    assert sum(key[:2] == ("coqui", str(vits_dir.resolve())) for key in loading._LOADED) == 1


def test_coqui_missing_model_tells_how_to_get_it(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(InputError, match="dub models pull xtts-v2"):
        select_voice("coqui:tts_models/multilingual/multi-dataset/xtts_v2", "es", models_dir=models)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(InputError, match="has no config.json and model.pth"):
        select_voice(f"coqui:{empty}", "es", models_dir=models)


@pytest.mark.parametrize("spec, message", [
    ("festival", "unknown voice 'festival'"),
    ("coqui:", "needs a model name or directory"),
    ("coqui:/no/such/dir", "no such model directory, and not a Coqui model name"),
    ("coqui:not/a/real/model", "no such model directory, and not a Coqui model name"),
    ("espeak:zz-nope", "espeak-ng has no voice 'zz-nope'"),
    ("espeak:en+f33", "espeak-ng has no voice 'en\\+f33'"),  # espeak-ng itself ignores it silently
    ("auto:es", "takes no argument"),
])
def test_parse_voice_spec_rejects(spec, message):
    with pytest.raises(InputError, match=message):
        parse_voice_spec(spec)


@pytest.mark.parametrize("spec", ["auto", "espeak", "espeak:es", "espeak:en+f3", "coqui:xtts-v2",
                                  "coqui:tts_models/multilingual/multi-dataset/xtts_v2"])
def test_parse_voice_spec_accepts(spec):
    parse_voice_spec(spec)


@pytest.fixture(scope="module")
def speech_source(tmp_path_factory) -> tuple[Path, list[Segment]]:
    """About 20 s of espeak-ng speech with silences between lines, and its segments."""
    d = tmp_path_factory.mktemp("source")
    voice = EspeakVoice("en")
    lines = ["This is the first line of our advertisement, spoken clearly and slowly.",
             "Short one.",
             "And here is a much longer third line, which goes on for quite some time indeed.",
             "The fourth line closes the advertisement with a friendly goodbye to everyone."]
    segments, start, inputs = [], 0.5, []
    for i, text in enumerate(lines):
        wav = voice.synthesize(text, "en", d / f"l{i}.wav")
        segments.append(Segment(start, start + duration(wav), text))
        inputs.append(wav)
        start += duration(wav) + 1.0
    # silence, line, silence, line...: built with ffmpeg's concat filter at 48 kHz like the pipeline
    args, filters = [], []
    for i, wav in enumerate(inputs):
        args += ["-f", "lavfi", "-t", "1.0" if i else "0.5", "-i", "anullsrc=r=22050:cl=mono",
                 "-i", str(wav)]
        filters += [f"[{2 * i}:a][{2 * i + 1}:a]"]
    graph = "".join(filters) + f"concat=n={2 * len(inputs)}:v=0:a=1,aresample=48000[a]"
    src = d / "source.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, "-filter_complex", graph,
                    "-map", "[a]", str(src)], check=True, timeout=60)
    return src, segments


def test_cut_reference_length_and_format(tmp_path, speech_source):
    src, segments = speech_source
    assert duration(src) > 15
    ref = cut_reference(src, segments, tmp_path / "ref.wav")
    assert 6.0 <= duration(ref) <= 15.0
    assert abs(duration(ref) - 12.0) < 0.1
    s = stream(ref)
    assert int(s["sample_rate"]) == 22050 and s["channels"] == 1
    # cut from the lines only: none of the source's 1 s pauses between lines made it in
    import numpy as np
    import soundfile as sf

    audio, sr = sf.read(ref)
    quiet = np.abs(audio) < 1e-3
    runs, run = [], 0
    for q in quiet:
        run = run + 1 if q else 0
        runs.append(run)
    assert max(runs) / sr < 0.8


def test_cut_reference_takes_speech_not_silence(tmp_path, speech_source):
    import numpy as np
    import soundfile as sf

    src, segments = speech_source
    ref = cut_reference(src, segments[1:2], tmp_path / "short.wav")
    # only one short line of speech: the clip is that line, not padded with silence
    assert abs(duration(ref) - segments[1].duration) < 0.05
    audio, _ = sf.read(ref)
    assert np.abs(audio).max() > 0.05


@pytest.fixture(scope="module")
def xtts_dir(tmp_path_factory) -> Path:
    """A tiny random-weight XTTS, saved as XTTS-v2 is shipped (tests/tiny_models.py)."""
    from tests.tiny_models import build_xtts

    return build_xtts(tmp_path_factory.mktemp("models") / "xtts-v2")


@pytest.mark.slow
def test_xtts_says_a_line_faster_itself_when_asked(tmp_path, xtts_dir, speech_source):
    """Fit at the source: XTTS takes a speed (its latents resampled before the vocoder), so
    the same take is shorter by that factor, not time-stretched afterwards."""
    import torch

    src, segments = speech_source
    voice = CoquiVoice(xtts_dir, cut_reference(src, segments, tmp_path / "ref.wav"))
    faster = voice.faster(1.5)
    assert voice.sets_pace and faster.model.endswith(" at 1.5x") and faster.model != voice.model
    lengths = []
    for v, name in ((voice, "own.wav"), (faster, "faster.wav")):
        torch.manual_seed(0)  # the same sampled take: only the pace differs
        lengths.append(duration(v.synthesize("Bom dia a todos, obrigado.", "pt", tmp_path / name)))
    own, quick = lengths
    assert quick == pytest.approx(own / 1.5, rel=0.1), lengths


@pytest.mark.slow
def test_auto_clones_with_xtts_from_a_reference_clip(tmp_path, xtts_dir, speech_source):
    models = tmp_path / "models"
    models.mkdir()
    (models / "xtts-v2").symlink_to(xtts_dir, target_is_directory=True)
    src, segments = speech_source
    ref = cut_reference(src, segments, tmp_path / "ref.wav")
    voice, reason = select_voice("auto", "pt-br", models_dir=models, reference_wav=ref)
    assert voice.backend == "coqui" and "cloning the source speaker" in reason
    wav = voice.synthesize("Bom dia a todos.", "pt-br", tmp_path / "pt.wav")
    assert duration(wav) > 0
    assert int(stream(wav)["sample_rate"]) == voice.sample_rate == 24000
    # XTTS has no Tagalog: auto falls back to espeak-ng and says so (which has none either)
    with pytest.raises(InputError, match="espeak-ng has no voice for language 'tl'"):
        select_voice("auto", "tl", models_dir=models, reference_wav=ref)
    voice, reason = select_voice("auto", "sv", models_dir=models, reference_wav=ref)
    assert voice.backend == "espeak" and "does not speak 'sv'" in reason
