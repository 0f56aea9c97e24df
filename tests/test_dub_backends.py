"""The model-backed path of the flow, offline: an audio-only input with no transcript is
transcribed by whisper, translated by a local Marian model and voiced by a Coqui VITS
(all tiny random-weight models built here), with the catalog in PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests import inprocess
from tests.conftest import EXAMPLE
from tests.probe import ffprobe

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def pg_url():
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"polydub_flow_{uuid.uuid4().hex[:8]}"
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server here
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({type(exc).__name__})")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()



def test_audio_only_with_whisper_marian_and_coqui_into_postgres(prefect_api, pg_url, tmp_path, tiny_whisper_path,
                                                               tiny_marian, tiny_vits):
    audio = tmp_path / "podcast.m4a"  # no sidecars beside it: whisper must transcribe
    # 3 s: random whisper weights decode every 30 s window to its token limit, at every fallback temperature
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-t", "3", "-vn", "-c:a", "copy", str(audio)],
                   check=True, timeout=60)
    whisper_ckpt, marian, vits = tiny_whisper_path, tiny_marian, tiny_vits
    out = tmp_path / "out"
    result = inprocess.dub(
        audio, "--langs", "es,fr", "--source-lang", "en", "--asr-model", whisper_ckpt, "--translator",
        f"local:{marian}", "--voice", f"coqui:{vits}", "--out", out, "--db", pg_url, "--json",
        # random whisper weights put their lines anywhere, often over no speech, which VAD
        # would drop: keep them, so that Marian and Coqui have lines to work on
        env={"DUB_ASR_VAD": "off"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    src_duration = float(ffprobe(audio)["format"]["duration"])
    for lang, tag in (("es", "spa"), ("fr", "fra")):
        info = ffprobe(out / f"podcast.{lang}.m4a")
        assert [s["codec_type"] for s in info["streams"]][0] == "audio"
        assert info["streams"][0]["tags"]["language"] == tag
        assert abs(float(info["format"]["duration"]) - src_duration) <= 0.04
        assert (out / f"podcast.{lang}.srt").exists() and (out / f"podcast.{lang}.vtt").exists()
        entry = report["languages"][lang]
        assert entry["backends"]["voice"] == "coqui"
        assert entry["backends"]["translate"].startswith("local:")
        assert entry["backends"]["lipsync"] == "skipped"
    mka = ffprobe(out / "podcast.dubbed.mka")
    audio_tags = [s["tags"]["language"] for s in mka["streams"] if s["codec_type"] == "audio"]
    assert audio_tags == ["eng", "spa", "fre"]

    shown = inprocess.dub("show", report["job"], "--db", pg_url, "--json")
    job = json.loads(shown.stdout)
    transcribe = [s for s in job["stages"] if s["stage"] == "transcribe"][0]
    assert transcribe["backend"] == "whisper" and transcribe["status"] == "done"
    assert "tiny.pt" in transcribe["model_version"]
    assert transcribe["licence"] == "MIT"  # the model behind each output, in the catalog
    voices = {s["licence"] for s in job["stages"] if s["stage"] == "synthesize"}
    assert voices == {"not in polydub's licence table (licence unknown)"}  # a user's own Coqui model
    assert report["languages"]["es"]["licences"]["transcribe"] == "MIT"
    lipsync = [s for s in job["stages"] if s["stage"] == "lipsync"]
    assert {s["status"] for s in lipsync} == {"skipped"}
    assert job["source"]["has_video"] is False
