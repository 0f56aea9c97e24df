"""Licences: `dub models list` shows them, `--commercial` refuses non-commercial models
before any work, and `auto` choices pass over them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from polydub.job import plan_job
from polydub.tts import select_voice
from tests import inprocess
from tests.conftest import EXAMPLE, two_speaker_ad


def dub(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return inprocess.dub(*args, env=env)  # the process is not tested here


def test_models_list_shows_each_licence_and_whether_it_allows_commercial_use(tmp_path):
    result = dub("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["xtts-v2"]["licence"] == "Coqui Public Model License 1.0.0" and rows["xtts-v2"]["commercial"] is False
    assert rows["htdemucs"]["commercial"] is False and "research" in rows["htdemucs"]["licence"]
    assert rows["whisper-tiny"]["licence"] == "MIT" and rows["whisper-tiny"]["commercial"] is True
    assert rows["sd-vae-ft-mse"]["commercial"] is True and "use restrictions" in rows["sd-vae-ft-mse"]["licence_note"]
    assert rows["faster-whisper-small"]["licence"] == "MIT" and rows["faster-whisper-small"]["commercial"] is True
    # a definite answer for every model, and what each is for (scripts and forms offer what fits)
    assert [name for name, r in rows.items() if r["commercial"] not in (True, False)] == []
    assert {r["stage"] for r in rows.values()} <= {"transcribe", "separate", "translate", "voice", "lipsync"}
    assert rows["whisper-base"]["stage"] == "transcribe" and rows["latentsync-1.5"]["stage"] == "lipsync"
    assert rows["htdemucs"]["stage"] == "separate" and rows["xtts-v2"]["stage"] == "voice"
    assert rows["xtts-v2"]["clones"] is True and "clones" not in rows["whisper-base"]
    table = dub("models", "list", env={"COLUMNS": "250"}).stdout
    assert "commercial" in table and "Coqui Public Model" in table


def test_commercial_refuses_xtts_before_any_work(tmp_path):
    out, db = tmp_path / "out", f"sqlite:///{tmp_path / 'catalog.db'}"
    args = (str(EXAMPLE), "--langs", "es", "--voice", "coqui:xtts-v2", "--out", str(out), "--db", db)
    result = dub(*args, "--commercial")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "--commercial: voice XTTS-v2 (Coqui Public Model License 1.0.0, non-commercial use only)" in line
    assert "use --voice chatterbox, --voice kokoro, --voice espeak or a commercially licensed coqui:MODEL" in line
    assert not out.exists()  # nothing started
    listing = json.loads(dub("list", "--db", db, "--json").stdout)
    assert listing[0]["status"] == "rejected"

    # The machine's setting applies when the job does not say.
    assert "--commercial: voice XTTS-v2" in dub(*args, env={"DUB_COMMERCIAL": "1"}).stderr


def test_commercial_refuses_xtts_cast_for_one_speaker(tmp_path):
    """A speaker's voice in --voices is the job's choice as much as --voice: refused alike."""
    (tmp_path / "voices.yaml").write_text('Ana: {es: "coqui:xtts-v2", "*": espeak}\nBen: kokoro\n')
    video = two_speaker_ad(tmp_path, "Bienvenidos.")  # Ana and Ben speak
    line = inprocess.refused(video, "--langs", "es", "--voices", tmp_path / "voices.yaml", "--commercial",
                             "--db", f"sqlite:///{tmp_path / 'c.db'}", out=tmp_path / "out")
    assert "--commercial: voice XTTS-v2 (speaker 'Ana' in --voices voices.yaml) (Coqui Public Model" in line, line


def test_the_jobs_own_choice_wins_over_the_machine_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("DUB_COMMERCIAL", "1")
    assert plan_job(EXAMPLE, "es", out=str(tmp_path)).options.commercial is True
    assert plan_job(EXAMPLE, "es", {"commercial": False}, out=str(tmp_path)).options.commercial is False
    monkeypatch.delenv("DUB_COMMERCIAL")
    assert plan_job(EXAMPLE, "es", out=str(tmp_path)).options.commercial is False
    assert plan_job(EXAMPLE, "es", commercial=True, out=str(tmp_path)).options.commercial is True


def test_commercial_refuses_a_non_commercial_translation_model(tmp_path):
    result = dub(str(EXAMPLE), "--langs", "it", "--translator", "local:facebook/nllb-200-distilled-600M",
                 "--commercial", "--out", str(tmp_path / "out"), "--db", f"sqlite:///{tmp_path / 'c.db'}")
    assert result.returncode == 2
    assert "--commercial: translator local:facebook/nllb-200-distilled-600M (CC-BY-NC-4.0" in result.stderr
    assert "opus-mt" in result.stderr


def test_auto_voice_passes_over_xtts_for_commercial_use(tmp_path):
    xtts = tmp_path / "xtts-v2"
    xtts.mkdir()
    (xtts / "config.json").write_text(json.dumps({"model": "xtts"}))
    (xtts / "model.pth").write_bytes(b"weights that must not even be loaded")
    reference = tmp_path / "reference.wav"
    reference.write_bytes(b"")
    voice, reason = select_voice("auto", "es", tmp_path, reference, commercial=True)
    assert voice.backend == "espeak"
    assert reason.startswith("auto: no Chatterbox weights in ")
    assert "; XTTS-v2 is licensed for non-commercial use only (--commercial); " in reason
    assert Path(reference).exists()
