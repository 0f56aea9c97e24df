"""Recipes and what makes a delivery stale, without dubbing (files are not probed)."""

from __future__ import annotations

import pytest

from polydub.batch import staleness
from polydub.batch.manifest import load_manifest
from polydub.storage import Catalog
from tests.databases import databases  # noqa: F401 - the fixture


@pytest.fixture()
def catalog_of(tmp_path, databases):
    folder = tmp_path / "ads"
    folder.mkdir()
    for name in ("spot-a", "spot-b"):
        (folder / f"{name}.mp4").write_bytes(name.encode() * 100)  # recipes hash bytes; nothing probes them
        (folder / f"{name}.en.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHello.\n")
    (folder / "spot-a.es.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHola.\n")
    (folder / "terms.tsv").write_text("Acme\t\n")
    (folder / "ads.csv").write_text('id,input,langs,glossary,brand\n'
                                    'spot-a,spot-a.mp4,"es,fr",terms.tsv,Acme\n'
                                    'spot-b,spot-b.mp4,"es,fr",,\n')
    cat = Catalog(databases.new_url())
    yield folder, cat
    cat.close()


def test_the_fast_fingerprints_are_the_recipes_own(catalog_of):
    folder, cat = catalog_of
    judge = staleness.Recipes(cat)
    recipes = judge.for_items(load_manifest(folder / "ads.csv", options={"voice": "espeak"}).items)
    assert set(recipes) == {(item, lang) for item in ("spot-a", "spot-b") for lang in ("es", "fr")}
    assert recipes[("spot-a", "es")]["translation"] and recipes[("spot-a", "fr")]["translation"] is None
    assert recipes[("spot-a", "es")]["glossary"] and recipes[("spot-b", "es")]["glossary"] is None
    assert "translator" in recipes[("spot-a", "fr")]["models"]  # machine translated: its version counts
    assert "translator" not in recipes[("spot-a", "es")]["models"]
    for key, recipe in recipes.items():
        assert judge.fingerprints[key] == staleness.fingerprint(recipe), key
    assert len(set(judge.fingerprints.values())) == 4


def test_what_changed_names_each_part(catalog_of):
    folder, cat = catalog_of
    items = load_manifest(folder / "ads.csv", options={"voice": "espeak"}).items
    before = staleness.Recipes(cat).for_items(items)
    (folder / "spot-a.es.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHola, hola.\n")
    (folder / "terms.tsv").write_text("Acme\tACME\n")
    after = staleness.Recipes(cat).for_items(load_manifest(folder / "ads.csv", options={"voice": "espeak:es+f3"}).items)
    assert staleness.what_changed(before[("spot-a", "es")], after[("spot-a", "es")]) == \
        "approved translation changed, glossary changed, options changed (voice), model versions changed (voice)"
    assert staleness.what_changed(before[("spot-b", "fr")], after[("spot-b", "fr")]).startswith("options changed")


def test_an_edit_in_the_brands_translation_memory_makes_translated_deliveries_stale(catalog_of):
    from polydub.storage import terms

    folder, cat = catalog_of
    items = load_manifest(folder / "ads.csv", options={"voice": "espeak"}).items
    before = staleness.Recipes(cat).for_items(items)
    terms.remember(cat, "Acme", "en", "fr", {"Hello.": "Bonjour."}, "edited")
    judge = staleness.Recipes(cat)
    after = judge.for_items(items)
    assert staleness.what_changed(before[("spot-a", "fr")], after[("spot-a", "fr")]) == "translation memory changed"
    assert after[("spot-a", "es")] == before[("spot-a", "es")]  # approved: spoken as written
    assert after[("spot-b", "fr")] == before[("spot-b", "fr")]  # another brand's memory
    for key, recipe in after.items():
        assert judge.fingerprints[key] == staleness.fingerprint(recipe), key


def test_planning_and_staleness_find_the_same_sidecars(tmp_path):
    """A job is made from the sidecars `plan_job` finds; staleness must hash those same
    files, or a changed script would not make its delivery stale."""
    import shutil

    from polydub.batch.manifest import ManifestItem
    from polydub.job import plan_job
    from polydub.options import DubOptions
    from tests.conftest import EXAMPLE

    line = "1\n00:00:00,500 --> 00:00:02,000\n{}\n"
    folder, approved = tmp_path / "clips", tmp_path / "approved"
    folder.mkdir()
    approved.mkdir()
    video = folder / "spot.mp4"
    shutil.copy(EXAMPLE, video)
    (folder / "spot.en.srt").write_text(line.format("Hello."))
    (folder / "spot.vtt").write_text("WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nHello.\n")  # not the transcript
    (folder / "spot.forced.srt").write_text(line.format("Hello."))  # not a language tag
    (folder / "spot.es.srt").write_text(line.format("Hola."))  # beside: loses to the folder's
    (folder / "spot.fr.vtt").write_text("WEBVTT\n\n00:00:00.500 --> 00:00:02.000\nBonjour.\n")
    (approved / "spot.ES.srt").write_text(line.format("¡Hola!"))  # a tag as people write it
    (approved / "it.srt").write_text(line.format("Ciao."))  # <lang>.srt in a translations folder

    langs = ["es", "fr", "de", "it"]
    options = DubOptions(source_lang="en", translations=str(approved))
    plan = plan_job(video, langs, options, check_decode=False, out=str(tmp_path / "out"))
    item = ManifestItem("spot", "test", str(video), None, langs, options)
    scripts, translations = staleness.script_files(item, staleness.Folders())

    assert plan.translations == translations == {"es": str(approved / "spot.ES.srt"), "fr": str(folder / "spot.fr.vtt"),
                                                 "it": str(approved / "it.srt")}
    assert plan.options.transcript == str(folder / "spot.en.srt") and plan.options.transcript in scripts


def test_a_delivered_file_gone_before_it_is_recorded_is_not_called_done(catalog_of, tmp_path):
    from polydub.report import JobReport, LanguageReport
    from polydub.storage import deliveries

    folder, cat = catalog_of
    items = load_manifest(folder / "ads.csv", options={"voice": "espeak"}).items
    judge = staleness.Recipes(cat)
    recipes = judge.for_items(items)
    present = tmp_path / "spot-a.es.mp4"
    present.write_bytes(b"a delivered video")
    report = JobReport(job=None, languages={"es": LanguageReport(status="done", outputs={"mp4": str(present)}),
                                            "fr": LanguageReport(status="done", outputs={"mp4": str(tmp_path / "gone.mp4")})})
    staleness.record_deliveries(cat, "key", "spot-a", ["es", "fr"], recipes, judge.fingerprints, report)
    rows = {r.lang: r for r in deliveries.records(cat, "key")}
    assert rows["es"].status == "done" and rows["es"].fingerprint == judge.fingerprints[("spot-a", "es")]
    assert rows["fr"].status == "failed" and "could not be read" in rows["fr"].error

