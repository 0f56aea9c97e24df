"""Chatterbox Multilingual on chatterbox-tts's own model code, with a tiny random-weight model
laid out as `dub models pull chatterbox-multilingual` lays out the real one (built once here)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydub.tts import ChatterboxVoice, KokoroVoice, select_voice
from tests import inprocess
from tests.conftest import EXAMPLE, dub_two_speaker_ad, two_speaker_ad
from tests.probe import ffprobe
from tests.tiny_models import shared

pytestmark = pytest.mark.slow  # torch and chatterbox imported, models built and run


@pytest.fixture(scope="module")
def models() -> Path:
    """A models folder holding only the tiny Chatterbox (read-only for the tests)."""
    return shared("chatterbox-multilingual")


@pytest.fixture(scope="module")
def speakers(tmp_path_factory) -> tuple[Path, Path]:
    """Two reference clips of different voices (espeak-ng, a man's and a woman's variant)."""
    from polydub.tts import EspeakVoice

    root = tmp_path_factory.mktemp("references")
    text = "This is how I sound when I read the news in the morning."
    return (EspeakVoice("en+m3").synthesize(text, "en", root / "him.wav"),
            EspeakVoice("en+f4").synthesize(text, "en", root / "her.wav"))


def test_the_loader_builds_what_upstream_builds_at_the_published_size():
    """polydub sizes Chatterbox's modules from the checkpoints; at the published sizes that
    is exactly upstream's model: every key and shape, compared on the meta device."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder

    from polydub.tts import chatterbox_model as cm

    def shapes(module) -> dict:
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    with torch.device("meta"):
        published = [shapes(m) for m in (T3(T3Config.multilingual()), VoiceEncoder(), S3Gen())]
        size = cm.sizes(*published)
        ours = [shapes(m) for m in (cm.build_t3(size["t3"]), cm.build_voice_encoder(size["ve"]), cm.build_s3gen(size))]
    assert size["t3"]["hidden_size"] == 1024 and size["t3"]["num_hidden_layers"] == 30
    assert size["t3"]["num_attention_heads"] == 16 and size["encoder"]["attention_heads"] == 8
    for theirs, mine in zip(published, ours):
        assert theirs == mine


def test_chatterbox_clones_each_reference_and_watermarks_its_speech(models, speakers):
    import perth

    him, her = speakers
    line = "Hola, este es un anuncio de prueba para el doblaje de hoy."
    clips = []
    for i, reference in enumerate((him, her, him)):
        voice, reason = select_voice("chatterbox", "es", models, reference)
        assert isinstance(voice, ChatterboxVoice) and reason == "requested Chatterbox; cloning the source speaker"
        clips.append(voice.synthesize(line, "es", reference.parent / f"line{i}.wav"))
    first, second, again = (sf.read(c)[0] for c in clips)
    info = sf.info(clips[0])
    assert info.samplerate == 24_000 and info.channels == 1
    assert 0.5 < info.duration < 20.0  # the line's bound: 0.2 s a character
    assert np.array_equal(first, again)  # a line is repeatable: the same take for the same voice
    assert not np.array_equal(first, second)  # each speaker's own conditioning
    detector = perth.PerthImplicitWatermarker()
    assert detector.get_watermark(first, sample_rate=24_000) > 0.9  # Resemble's watermark is kept
    assert "watermark" in voice.watermark.lower()


def test_a_model_that_does_not_stop_is_bounded_by_the_length_of_its_line(models, tmp_path):
    """Upstream lets any line run to 40 s; a line of five characters gets at most 4 s here."""
    import torch

    from polydub.tts import chatterbox

    copy = shutil.copytree(models / "chatterbox-multilingual", tmp_path / "chatterbox-multilingual")
    with torch.no_grad():  # this copy's T3 never ends a line
        chatterbox.load(copy).tts.t3.speech_head.bias[6562] = -1e4
    voice, _ = select_voice("chatterbox", "de", tmp_path)
    voice.synthesize("Hallo.", "de", tmp_path / "long.wav")
    assert sf.info(tmp_path / "long.wav").duration == pytest.approx(4.0, abs=0.1)


def test_auto_prefers_chatterbox_then_kokoro_then_espeak(models, speakers, tmp_path):
    him, _ = speakers
    both = tmp_path / "both"
    shutil.copytree(models, both)
    (both / "kokoro").symlink_to(shared("kokoro") / "kokoro")
    voice, reason = select_voice("auto", "es", both, him, commercial=True)
    assert isinstance(voice, ChatterboxVoice) and voice.reference_wav == him
    assert reason == f"auto: Chatterbox found in {both / 'chatterbox-multilingual'}; cloning the source speaker"
    voice, reason = select_voice("auto", "es", both, None, commercial=True)  # no line of the speaker to clone
    assert isinstance(voice, ChatterboxVoice) and reason.endswith("its built-in voice (no reference clip of the speaker)")
    voice, reason = select_voice("auto", "ja", both, him)  # not offered: Kokoro's Japanese is not either
    assert voice.backend == "espeak" and reason.startswith("auto: Chatterbox does not speak 'ja'; ")
    shutil.rmtree(both / "chatterbox-multilingual")
    voice, reason = select_voice("auto", "es", both, him, commercial=True)
    assert isinstance(voice, KokoroVoice)
    assert reason.startswith(f"auto: no Chatterbox weights in {both / 'chatterbox-multilingual'} "
                             "(dub models pull chatterbox-multilingual); no Coqui weights in ")


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    """A models folder holding the tiny Chatterbox and the tiny Kokoro."""
    root = tmp_path_factory.mktemp("voices")
    for name in ("chatterbox-multilingual", "kokoro"):
        (root / name).symlink_to(shared(name) / name)
    return root


@pytest.mark.parametrize("args, error", [
    (("--voice", "chatterbox", "--langs", "es"), "no Chatterbox weights in {empty}/chatterbox-multilingual"),
    (("--voice", "chatterbox", "--langs", "ja"), "Chatterbox does not speak 'ja' here (it speaks ar, da, de,"),
    (("--voice", "chatterbox:big", "--langs", "es"), "unknown voice 'chatterbox:big' (auto, chatterbox, espeak,"),
    (("--voice", "kokoro", "--langs", "es"), "no Kokoro weights in {empty}/kokoro (dub models pull kokoro)"),
    (("--voice", "kokoro:em_alex", "--langs", "fr"), "Kokoro voice em_alex is not a 'fr' voice"),
    (("--voice", "kokoro:Alex", "--langs", "es"), "kokoro:VOICE such as kokoro:ef_dora"),
    (("--voice", "kokoro", "--langs", "de"), "Kokoro does not speak 'de'"),
    (("--voice", "kokoro", "--langs", "pt"), "Kokoro does not speak 'pt'"),
])
def test_a_voice_that_cannot_speak_is_refused_before_any_work(voices, tmp_path, args, error):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = inprocess.refused(EXAMPLE, *args, "--db", f"sqlite:///{tmp_path / 'c.db'}", out=tmp_path / "out",
                             env={"DUB_MODELS_DIR": str(empty if "weights" in error else voices)})
    assert error.format(empty=empty) in line, line


def test_models_verify_loads_chatterbox_strictly(models, tmp_path):
    import torch

    from polydub.weights import verify_all

    rows = {r["name"]: r for r in verify_all(models)}
    assert rows["chatterbox-multilingual"]["ok"], rows
    assert "all weights match" in rows["chatterbox-multilingual"]["message"]
    broken = shutil.copytree(models / "chatterbox-multilingual", tmp_path / "chatterbox-multilingual")
    state = torch.load(broken / "s3gen.pt", weights_only=True)
    state.pop(next(k for k in state if k.startswith("mel2wav.")))
    torch.save(state, broken / "s3gen.pt")
    result = inprocess.dub("models", "verify", env={"DUB_MODELS_DIR": str(tmp_path)})
    assert result.returncode != 0
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("chatterbox-multilingual"))
    assert "could not load Chatterbox model" in line and "1 weights missing" in line, line


def test_a_commercial_dub_with_only_chatterbox_present_clones_each_speaker(models, prefect_api, tmp_path):
    """`--commercial --voice auto` with only Chatterbox present: each speaker cloned from their
    own lines, MIT recorded in the report and the catalog, the watermark declared in the report
    and the file's metadata and still in its audio, and the video as long as the source."""
    import perth

    from polydub.flows import outcome
    from polydub.report import JobReport

    video, report, synth = dub_two_speaker_ad(tmp_path, models, "Bienvenidos al lanzamiento.")
    es = report["languages"]["es"]
    assert set(es["speakers"]) == {"Ana", "Ben"}
    for speaker in es["speakers"].values():
        assert speaker["backend"] == "chatterbox" and speaker["reason"].endswith("cloning the source speaker")
    assert es["licences"]["synthesize"] == "MIT"
    assert es["watermarks"] == ["Perth (Resemble AI): an inaudible watermark in every Chatterbox clip"]
    page = outcome.markdown(JobReport.from_json(report))  # the report's page in the Prefect UI
    assert "- es licences: synthesize MIT" in page and "- es audio watermark: Perth (Resemble AI)" in page
    assert synth["licence"] == "MIT" and synth["backend"] == "chatterbox"
    delivered = tmp_path / "out" / "ad.es.mp4"
    tags = ffprobe(delivered)["format"]["tags"]
    assert "Perth (Resemble AI)" in tags["comment"] and "Perth" in tags["audio_watermark"]
    assert float(ffprobe(delivered)["format"]["duration"]) == pytest.approx(
        float(ffprobe(video)["format"]["duration"]), abs=0.05)
    speech = tmp_path / "speech.wav"  # the first line, as delivered (mixed, AAC)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(delivered), "-ss", "0.5", "-t", "2.3", "-ac", "1",
                    "-ar", "24000", str(speech)], check=True, timeout=60)
    assert perth.PerthImplicitWatermarker().get_watermark(sf.read(speech)[0], sample_rate=24_000) > 0.5


def test_pulling_chatterbox_makes_auto_deliveries_stale(models, tmp_path, monkeypatch):
    """A catalog's recipe names the voice auto would pick: Chatterbox once it is pulled
    (Chatterbox before XTTS-v2, also where XTTS-v2 is present and the job is not commercial)."""
    from polydub.batch import staleness

    both = shutil.copytree(models, tmp_path / "models")
    (both / "xtts-v2").mkdir()
    (both / "xtts-v2" / "config.json").write_text(json.dumps({"model": "xtts"}))
    (both / "xtts-v2" / "model.pth").write_bytes(b"never loaded")
    for where, lang, expected in ((both, "es", "chatterbox-tts "), (both, "ja", "xtts-v2 "),
                                  (tmp_path, "es", "espeak-ng ")):
        monkeypatch.setenv("DUB_MODELS_DIR", str(where))
        staleness._voice_identity.cache_clear()
        assert staleness._voice_identity("auto", lang, False).startswith(expected), (where, lang)
    staleness._voice_identity.cache_clear()


def test_a_manifest_row_whose_voice_cannot_speak_is_refused_before_any_work(voices, tmp_path):
    """The same refusals reach a catalog's rows, each named by row, before any item is dubbed."""
    video = two_speaker_ad(tmp_path, "Bienvenidos.")
    (tmp_path / "voices.yaml").write_text('Ana: "coqui:xtts-v2"\nBen: kokoro\n')
    (tmp_path / "ads.csv").write_text("id,input,langs,voice,voices,commercial\n"
                                      f"one,{video},fr,kokoro:em_alex,,\n"
                                      f"two,{video},ja,chatterbox,,\n"
                                      f"three,{video},es,espeak,{tmp_path / 'voices.yaml'},true\n")
    result = inprocess.dub("catalog", tmp_path / "ads.csv", "--out", tmp_path / "out",
                           "--db", f"sqlite:///{tmp_path / 'c.db'}", env={"DUB_MODELS_DIR": str(voices)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert "row 2" in lines[0] and "Kokoro voice em_alex is not a 'fr' voice" in lines[0]
    assert "row 3" in lines[1] and "Chatterbox does not speak 'ja' here" in lines[1]
    assert "row 4" in lines[2] and "--commercial: voice XTTS-v2 (speaker 'Ana' in --voices voices.yaml)" in lines[2]
    assert not (tmp_path / "out").exists()
