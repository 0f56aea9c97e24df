"""The dub's audio through the real `dub` command: a loud source (-17.8 LUFS, a typical
ad) and a tiny random HT-Demucs in the models folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from polydub.audio.mix import measure_loudness
from tests import inprocess
from tests.conftest import EXAMPLE
from tests.tiny_models import build_demucs

pytestmark = pytest.mark.slow
SOURCE_LUFS = -17.8


def dub(*args: str, models: Path) -> subprocess.CompletedProcess:
    """`dub` with its own models folder, and a stage cache of this module's own (the other
    whole-job tests count stages run on an empty cache)."""
    return inprocess.dub(*args, env={"DUB_MODELS_DIR": str(models), "DUB_CACHE_DIR": str(models.parent / "cache")})


@pytest.fixture(scope="module")
def loud_ad(tmp_path_factory) -> Path:
    """The example at -17.8 LUFS (picture copied), with its transcript and translations."""
    folder = tmp_path_factory.mktemp("loud")
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*.srt"):
        shutil.copy(f, folder / f.name)
    wav = folder / "audio.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-vn", str(wav)], check=True, timeout=60)
    gain = SOURCE_LUFS - measure_loudness(wav)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-c:v", "copy", "-af", f"volume={gain:.2f}dB",
                    "-c:a", "aac", "-b:a", "192k", str(folder / EXAMPLE.name)], check=True, timeout=60)
    return folder / EXAMPLE.name


def test_separated_background_at_the_source_loudness_then_a_target_commercial_and_a_broken_model(
        prefect_api, loud_ad, tmp_path):
    models, db = tmp_path / "models", f"sqlite:///{tmp_path / 'catalog.db'}"
    build_demucs(models / "htdemucs")
    common = ("--langs", "es", "--lipsync", "off", "--db", db, "--json")

    result = dub(str(loud_ad), *common, "--out", str(tmp_path / "matched"), models=models)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source_loudness_lufs"] == pytest.approx(SOURCE_LUFS, abs=0.5)
    assert report["source_true_peak_db"] < 0
    assert report["background"]["method"] == "demucs" and report["background"]["status"] == "done"
    es = report["languages"]["es"]
    assert es["backends"]["background"] == "demucs"
    assert abs(es["loudness_lufs"] - report["source_loudness_lufs"]) <= 1.0  # measured on the mix
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", es["outputs"]["mp4"], "-vn", str(tmp_path / "es.wav")],
                   check=True, timeout=60)
    assert measure_loudness(tmp_path / "es.wav") == pytest.approx(SOURCE_LUFS, abs=1.0)  # the delivered track
    assert es["licences"]["synthesize"] == "GPL-3.0-or-later (program)"
    assert es["licences"]["separate"] == "not in polydub's licence table (licence unknown)"
    stages = {(s["stage"], s["lang"]): s for s in report["stages"]}
    assert stages[("separate", None)]["backend"] == "demucs"
    assert stages[("separate", None)]["licence"] == es["licences"]["separate"]
    assert stages[("synthesize", "es")]["licence"] == "GPL-3.0-or-later (program)"

    result = dub(str(loud_ad), *common, "--loudness", "-23", "--out", str(tmp_path / "broadcast"), models=models)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert abs(report["languages"]["es"]["loudness_lufs"] - (-23.0)) <= 1.0
    assert report["background"]["status"] == "cached"  # separated once per video

    # The published HT-Demucs weights are research-only: a commercial job band-cuts instead.
    (models / "htdemucs" / "tiny-htdemucs.th").rename(models / "htdemucs" / "955717e8-8726e21a.th")
    result = dub(str(loud_ad), *common, "--commercial", "--out", str(tmp_path / "commercial"), models=models)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["background"]["method"] == "band-cut" and report["background"]["status"] == "skipped"
    assert "research use only, not used with --commercial" in report["background"]["reason"]
    assert report["languages"]["es"]["backends"]["background"] == "band-cut"
    assert "separate" not in report["languages"]["es"]["licences"]

    # A checkpoint that does not load: the dub is still made, with the band-cut, and says why.
    broken = tmp_path / "broken" / "models"
    (broken / "htdemucs").mkdir(parents=True)
    (broken / "htdemucs" / "mine.th").write_bytes(b"not a checkpoint")
    result = dub(str(loud_ad), *common, "--out", str(tmp_path / "broken" / "out"), models=broken)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["languages"]["es"]["status"] == "done"
    assert report["background"]["method"] == "band-cut" and report["background"]["status"] == "failed"
    assert report["background"]["reason"].startswith("separation failed: ")
    assert "mine.th: not a Demucs checkpoint" in report["background"]["reason"]
    assert report["languages"]["es"]["backends"]["background"] == "band-cut"
