"""Kokoro voices on kokoro's own model code, with a tiny random-weight Kokoro laid out as
`dub models pull kokoro` lays out the real one (built once for this module)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from polydub.tts import EspeakVoice, KokoroVoice, select_voice
from polydub.weights import verify_all
from tests import inprocess
from tests.conftest import EXAMPLE
from tests.probe import ffprobe
from tests.tiny_models import shared


@pytest.fixture(scope="module")
def models() -> Path:
    """A models folder holding only the tiny Kokoro (read-only for the tests)."""
    return shared("kokoro")


def test_auto_prefers_kokoro_to_espeak_and_says_what_was_missing(models, tmp_path):
    voice, reason = select_voice("auto", "es", models, commercial=True)
    assert isinstance(voice, KokoroVoice) and voice.voice == "ef_dora"
    assert reason == (f"auto: no Chatterbox weights in {models / 'chatterbox-multilingual'} (dub models pull "
                      f"chatterbox-multilingual); no Coqui weights in {models / 'xtts-v2'}; Kokoro voice ef_dora")
    voice, reason = select_voice("auto", "de", models)  # Kokoro has no German
    assert isinstance(voice, EspeakVoice)
    assert reason.endswith("; Kokoro does not speak 'de'; espeak-ng voice de")
    voice, reason = select_voice("auto", "es", tmp_path, commercial=True)  # neither present
    assert isinstance(voice, EspeakVoice)
    assert reason.endswith(f"; no Coqui weights in {tmp_path / 'xtts-v2'}; no Kokoro weights in "
                           f"{tmp_path / 'kokoro'} (dub models pull kokoro); espeak-ng voice es")


@pytest.mark.slow  # loads the 58 M-parameter tiny model
def test_kokoro_speaks_at_24_khz_and_faster_at_the_source_when_asked(models, tmp_path):
    voice, _ = select_voice("kokoro", "fr", models)
    line = "Bonjour à tous, voici notre nouveau produit pour votre équipe."
    voice.synthesize(line, "fr", tmp_path / "line.wav")
    faster = voice.faster(1.5)
    faster.synthesize(line, "fr", tmp_path / "faster.wav")
    natural, quick = sf.info(tmp_path / "line.wav"), sf.info(tmp_path / "faster.wav")
    assert natural.samplerate == quick.samplerate == 24_000 and natural.channels == 1
    assert natural.duration > 1.0  # about 50 ms a phoneme from the tiny model's durations
    assert quick.duration < natural.duration * 0.8  # the model's own pace, not a stretch
    assert "voice ff_siwis" in voice.model and faster.model.endswith(" at 1.5x")
    audio, _ = sf.read(tmp_path / "line.wav")
    assert abs(audio).max() > 0.001  # it said something
    voice.synthesize("  ", "fr", tmp_path / "empty.wav")  # an empty line is a short silence
    assert sf.info(tmp_path / "empty.wav").duration == pytest.approx(0.1, abs=0.01)


@pytest.mark.slow
def test_models_verify_loads_kokoro_strictly(models, tmp_path):
    """A checkpoint that does not match its config is reported, not loaded loosely (KModel
    itself would fall back to a non-strict load and speak noise)."""
    shutil.copytree(models / "kokoro", tmp_path / "kokoro")
    rows = {r["name"]: r for r in verify_all(models)}
    assert rows["kokoro"]["ok"] and "all weights match; 23 voices" in rows["kokoro"]["message"], rows
    config = json.loads((tmp_path / "kokoro" / "config.json").read_text())
    config["plbert"]["hidden_size"] = 48
    (tmp_path / "kokoro" / "config.json").write_text(json.dumps(config))
    result = inprocess.dub("models", "verify", env={"DUB_MODELS_DIR": str(tmp_path)})
    assert result.returncode != 0
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("kokoro"))
    assert "could not load Kokoro model" in line and "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("args, error", [
    (("--voice", "kokoro", "--langs", "es"), "no Kokoro weights in {empty}/kokoro (dub models pull kokoro)"),
    (("--voice", "kokoro:em_alex", "--langs", "fr"), "Kokoro voice em_alex is not a 'fr' voice"),
    (("--voice", "kokoro:Alex", "--langs", "es"), "kokoro:VOICE such as kokoro:ef_dora"),
    (("--voice", "kokoro", "--langs", "de"), "Kokoro does not speak 'de'"),
    (("--voice", "kokoro", "--langs", "pt"), "Kokoro does not speak 'pt'"),
])
def test_a_kokoro_voice_that_cannot_speak_is_refused_before_any_work(models, tmp_path, args, error):
    empty = tmp_path / "empty"
    empty.mkdir()
    where = empty if "weights" in error else models
    out = tmp_path / "out"
    result = inprocess.dub(str(EXAMPLE), *args, "--out", str(out), "--db", f"sqlite:///{tmp_path / 'c.db'}",
                           env={"DUB_MODELS_DIR": str(where)})
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and error.format(empty=empty) in line, line
    assert not out.exists()


@pytest.mark.slow
def test_a_commercial_dub_with_kokoro_present_uses_it_a_voice_per_speaker(models, prefect_api, tmp_path):
    """`--commercial --voice auto` with only Kokoro present: each speaker gets a Kokoro voice
    of their own, the catalog records Apache-2.0, the long line is spoken faster by the model
    before any stretch, and the video keeps the source's length."""
    video = tmp_path / "ad.mp4"
    shutil.copy(EXAMPLE, video)
    (tmp_path / "ad.en.vtt").write_text(
        "WEBVTT\n\n00:00:00.500 --> 00:00:02.800\n<v Ana>Welcome to our product launch.\n\n"
        "00:00:03.200 --> 00:00:05.600\n<v Ben>Hello.\n\n00:00:06.000 --> 00:00:09.200\n<v Ana>Try it today.\n")
    long = "Este nuevo producto les ahorra muchísimo tiempo precioso a todos cada día de la semana."
    (tmp_path / "ad.es.vtt").write_text(
        f"WEBVTT\n\n00:00:00.500 --> 00:00:02.800\n<v Ana>{long}\n\n"
        "00:00:03.200 --> 00:00:05.600\n<v Ben>Hola.\n\n00:00:06.000 --> 00:00:09.200\n<v Ana>Pruébelo hoy.\n")
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = inprocess.dub(str(video), "--langs", "es", "--commercial", "--out", str(tmp_path / "out"),
                           "--db", db, "--json", env={"DUB_MODELS_DIR": str(models)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    es = report["languages"]["es"]
    assert es["speakers"]["Ana"]["voice"].split(" voice ")[1].startswith("ef_dora")
    assert es["speakers"]["Ben"]["voice"].split(" voice ")[1].startswith("em_alex")
    assert all(s["backend"] == "kokoro" for s in es["speakers"].values())
    assert es["licences"]["synthesize"] == "Apache-2.0"
    first, second, third = es["lines"]
    assert first["source_speed"] > 1.0 and first["voice"].endswith(f"at {first['source_speed']:g}x"), first
    assert first["source_speed"] * first["speed"] <= 1.3 + 1e-3  # --max-speed caps both steps together
    assert second["source_speed"] == third["source_speed"] == 1.0
    shown = inprocess.dub("show", str(report["job"]), "--db", db, "--json")
    synth = next(s for s in json.loads(shown.stdout)["stages"] if s["stage"] == "synthesize")
    assert synth["licence"] == "Apache-2.0" and synth["backend"] == "kokoro"
    source, dubbed = ffprobe(video), ffprobe(tmp_path / "out" / "ad.es.mp4")
    assert float(dubbed["format"]["duration"]) == pytest.approx(float(source["format"]["duration"]), abs=0.05)
