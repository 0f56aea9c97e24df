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
from tests.conftest import dub_two_speaker_ad
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


@pytest.mark.slow
def test_a_commercial_dub_with_kokoro_present_uses_it_a_voice_per_speaker(models, prefect_api, tmp_path):
    """`--commercial --voice auto` with only Kokoro present: each speaker gets a Kokoro voice
    of their own, the catalog records Apache-2.0, the long line is spoken faster by the model
    before any stretch, and the video keeps the source's length."""
    long = "Este nuevo producto les ahorra muchísimo tiempo precioso a todos cada día de la semana."
    video, report, synth = dub_two_speaker_ad(tmp_path, models, long)
    es = report["languages"]["es"]
    assert es["speakers"]["Ana"]["voice"].split(" voice ")[1].startswith("ef_dora")
    assert es["speakers"]["Ben"]["voice"].split(" voice ")[1].startswith("em_alex")
    assert all(s["backend"] == "kokoro" for s in es["speakers"].values())
    assert es["licences"]["synthesize"] == "Apache-2.0"
    first, second, third = es["lines"]
    assert first["source_speed"] > 1.0 and first["voice"].endswith(f"at {first['source_speed']:g}x"), first
    assert first["source_speed"] * first["speed"] <= 1.3 + 1e-3  # --max-speed caps both steps together
    assert second["source_speed"] == third["source_speed"] == 1.0
    assert synth["licence"] == "Apache-2.0" and synth["backend"] == "kokoro"
    source, dubbed = ffprobe(video), ffprobe(tmp_path / "out" / "ad.es.mp4")
    assert float(dubbed["format"]["duration"]) == pytest.approx(float(source["format"]["duration"]), abs=0.05)
