"""Background separation with a real Demucs model (tiny, random weights, built here)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from polydub import licences
from polydub.audio import separate
from polydub.errors import StageError
from tests.tiny_models import build_demucs


def write_source(path, seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    x = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t)
    audio = np.stack([x * (1 + 0.1 * c) for c in range(channels)], 1).astype(np.float32)
    sf.write(path, audio, rate, subtype="FLOAT")
    return audio


@pytest.mark.slow
def test_tiny_htdemucs_from_the_models_folder_gives_a_background_in_the_source_format(tmp_path):
    checkpoint = build_demucs(tmp_path / "models" / separate.MODEL_DIR)
    assert separate.locate(tmp_path / "models") == checkpoint
    model = separate.load(checkpoint)
    assert model.sources == ["drums", "bass", "other", "vocals"]

    source = write_source(tmp_path / "source.wav", 3.3, 48_000, channels=2)  # 48 kHz; the model runs at 44.1
    out = separate.separate(model, tmp_path / "source.wav", tmp_path / "background.wav", tmp_path / "voice.wav")
    for path in (out, tmp_path / "voice.wav"):
        info = sf.info(path)
        assert (info.frames, info.samplerate, info.channels) == (len(source), 48_000, 2)
    background = sf.read(out, dtype="float32")[0]
    assert np.isfinite(background).all() and np.abs(background).max() > 1e-4
    assert np.abs(background - source).max() > 1e-3  # the model ran: not a copy of the source


@pytest.mark.slow
def test_a_two_stem_model_on_a_mono_source(tmp_path):
    checkpoint = build_demucs(tmp_path, sources=("vocals", "other"))
    source = write_source(tmp_path / "source.wav", 2.0, 44_100, channels=1)
    out = separate.separate(separate.load(checkpoint), tmp_path / "source.wav", tmp_path / "bg.wav")
    info = sf.info(out)
    assert (info.frames, info.samplerate, info.channels) == (len(source), 44_100, 1)


def test_unusable_checkpoints_are_one_line_errors(tmp_path):
    no_voice = build_demucs(tmp_path, sources=("drums", "bass"), name="novoice.th")
    with pytest.raises(StageError, match="has no 'vocals' stem \\(it has drums, bass\\)"):
        separate.load(no_voice)
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match="not a Demucs checkpoint") as caught:
        separate.load(tmp_path / "junk.th")
    assert "\n" not in str(caught.value)
    assert separate.locate(tmp_path / "empty") is None


def test_published_demucs_weights_are_research_only_and_own_ones_unknown():
    assert licences.of_separator("955717e8-8726e21a.th").commercial is False
    assert licences.of_separator("tiny-htdemucs.th").commercial is None
    assert licences.of_stage("separate", "demucs", "demucs:955717e8-8726e21a.th:84:1").commercial is False
