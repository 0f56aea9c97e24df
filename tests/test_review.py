"""A person approves the script before it is voiced: `--review script`, `dub review`,
`dub approve` (with edits), `dub reject`, and what the catalog records of each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from polydub import review
from polydub.errors import InputError
from polydub.segments import Segment, read_subtitles
from polydub.storage import Catalog, reviews, terms
from tests import inprocess
from tests.conftest import EXAMPLE
from tests.services import libre_echo

OFFERED = [
    {"start": 0.5, "end": 2.8, "speaker": "Ana", "source": "Hello there.", "text": "Hola.", "speed": 1.0},
    {"start": 3.2, "end": 5.6, "speaker": None, "source": "Bye.", "text": "Adiós.", "speed": 1.0},
]


def dub(*args, **kw):
    return inprocess.dub(*args, **kw)


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dub: error: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------- the script file


def edited(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edited.srt"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_review_file_reads_back_as_offered_with_its_speakers(tmp_path):
    path = edited(tmp_path, review.to_review_srt(OFFERED))
    assert read_subtitles(path) == [Segment(0.5, 2.8, "Hola.", "Ana"), Segment(3.2, 5.6, "Adiós.", None)]
    lines, changes = review.read_edited(path, OFFERED)
    assert lines == OFFERED and changes == []


def test_an_edited_text_is_approved_and_its_change_recorded(tmp_path):
    path = edited(tmp_path, review.to_review_srt(OFFERED).replace("Adiós.", "Hasta luego."))
    lines, changes = review.read_edited(path, OFFERED)
    assert [ln["text"] for ln in lines] == ["Hola.", "Hasta luego."]
    assert changes == [{"line": 2, "before": "Adiós.", "after": "Hasta luego."}]


@pytest.mark.parametrize("change, says", [
    (lambda t: t.replace("00:00:03,200", "00:00:03,400"), "line 2 (00:00:03,200) is timed 00:00:03,400 --> "
                                                         "00:00:05,600, the script's 00:00:03,200 --> 00:00:05,600"),
    (lambda t: t.replace("[Ana] ", "[Ben] "), "line 1 (00:00:00,500) is spoken by Ben, in the script by Ana"),
    (lambda t: t.replace("[Ana] ", ""), "line 1 (00:00:00,500) is spoken by no one named, in the script by Ana"),
    (lambda t: t.split("\n\n")[0] + "\n", "1 line, the script has 2: keep every line"),
    (lambda t: t.replace("Adiós.", "<i> </i>"), "1 line, the script has 2: keep every line, its time and some text"),
    (lambda t: "not a subtitle file at all --> nope", "not a readable SRT/VTT subtitle file"),
])
def test_an_edit_beyond_the_texts_is_refused_in_one_line(tmp_path, change, says):
    path = edited(tmp_path, change(review.to_review_srt(OFFERED)))
    with pytest.raises(InputError) as caught:
        review.read_edited(path, OFFERED)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_speed_a_line_will_need_is_estimated_from_its_length_and_slot():
    source = [Segment(0.0, 1.0, "Hi."), Segment(1.0, 3.0, "Two seconds.")]
    translated = [Segment(0.0, 1.0, "x" * 30), Segment(1.0, 3.0, "Dos.")]
    lines = review.offered_lines(source, translated)
    assert [ln["source"] for ln in lines] == ["Hi.", "Two seconds."]
    assert lines[0]["speed"] == pytest.approx(30 / review.CHARS_PER_SECOND, abs=0.01) and lines[1]["speed"] == 1.0


def test_a_review_is_decided_once(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    job = cat.create_job(None, ["es", "fr"], {"name": "ad"}, str(tmp_path))
    with pytest.raises(InputError, match=f"job {job} is not awaiting review"):
        reviews.awaiting(cat, job)
    reviews.offer(cat, job, "es", OFFERED)
    with pytest.raises(InputError, match=r"has no fr script awaiting review \(awaiting: es\)"):
        reviews.awaiting(cat, job, "fr")
    with pytest.raises(InputError, match="no job 99"):
        reviews.awaiting(cat, 99)
    [waiting] = reviews.awaiting(cat, job, "es")
    reviews.decide(cat, waiting.id, reviews.REJECTED, "ana", reason="tone")
    with pytest.raises(InputError, match="decided meanwhile"):
        reviews.decide(cat, waiting.id, reviews.APPROVED, "ben", approved=OFFERED)
    reviews.offer(cat, job, "es", [])  # a decided review is not offered again
    [decided] = reviews.of_job(cat, job)
    assert (decided.status, decided.decided_by, decided.reason, len(decided.lines)) == ("rejected", "ana", "tone", 2)


# -------------------------------------------------------------------- the whole cycle


@pytest.fixture()
def untranslated(tmp_path) -> Path:
    """The example with its English script only: every language needs a translator."""
    video = tmp_path / "ad.mp4"
    shutil.copy(EXAMPLE, video)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), tmp_path / "ad.en.srt")
    return video


@pytest.mark.slow
def test_a_script_is_reviewed_edited_approved_or_rejected_then_delivered(prefect_api, tmp_path, untranslated):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    out = tmp_path / "out"
    with libre_echo() as libre:
        env = {"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key", "DUB_TRANSLATE_RETRIES": "0",
               "DUB_REVIEWER": "ana@agency"}
        first = dub(untranslated, "--langs", "es,fr", "--review", "script", "--voice", "espeak", "--lipsync", "off",
                    "--translator", "libre", "--brand", "Acme", "--out", out, "--db", db, "--json", env=env)
        assert first.returncode == 0, first.stderr
        report = json.loads(first.stdout)
        job = report["job"]
        assert report["status"] == "awaiting review"
        asked = len(libre.texts)  # the translator's requests for es and fr
        assert {lang: e["status"] for lang, e in report["languages"].items()} == {"es": "awaiting review",
                                                                                 "fr": "awaiting review"}
        assert not list(out.glob("*.mp4")) and not list(out.glob("*.srt"))  # nothing voiced, nothing delivered
        assert f"dub review {job} --out DIR" in first.stderr
        [listed] = json.loads(dub("list", "--db", db, "--json").stdout)
        assert listed["status"] == "awaiting review"

        folder = tmp_path / "review"
        written = dub("review", str(job), "--out", folder, "--db", db)
        assert written.returncode == 0, written.stderr
        script = folder / "ad.es.srt"
        offered = read_subtitles(script)
        assert [s.text for s in offered] == [s.text for s in read_subtitles(EXAMPLE.with_suffix(".en.srt"))]
        assert "Hello, and welcome" in written.stdout  # the source beside its translation
        again = dub("review", str(job), "--out", folder, "--db", db)
        assert "exists: give another --out" in one_line_error(again)  # a file of the user's is never replaced

        # an edit that moves a line is refused, and nothing is recorded
        script.write_text(script.read_text(encoding="utf-8").replace("00:00:00,500", "00:00:00,700"), encoding="utf-8")
        moved = dub("approve", str(job), "--lang", "es", "--script", script, "--db", db, env=env)
        assert "is timed 00:00:00,700" in one_line_error(moved)
        assert [r["status"] for r in json.loads(dub("show", str(job), "--db", db, "--json").stdout)["reviews"]] \
            == ["awaiting", "awaiting"]
        script.write_text(script.read_text(encoding="utf-8").replace("00:00:00,700", "00:00:00,500")
                          .replace("Hello, and welcome", "Hola y bienvenidos"), encoding="utf-8")

        approved = dub("approve", str(job), "--lang", "es", "--script", script, "--db", db, env=env)
        assert approved.returncode == 0, approved.stderr
        assert "still awaiting review: fr" in approved.stderr and not list(out.glob("*.mp4"))
        rejected = dub("reject", str(job), "--lang", "fr", "--why", "tone is off", "--db", db, "--json", env=env)
        assert rejected.returncode == 1, rejected.stderr  # fr is not delivered: the job is partial
        assert asked and len(libre.texts) == asked  # the continued job asked the translator nothing more

    final = json.loads(rejected.stdout)
    assert final["job"] == job and final["status"] == "partial"
    assert final["languages"]["fr"]["error"] == "script rejected by ana@agency: tone is off"
    assert (out / "ad.es.mp4").exists() and not (out / "ad.fr.mp4").exists()
    assert read_subtitles(out / "ad.es.srt")[0].text.startswith("Hola y bienvenidos")

    shown = json.loads(dub("show", str(job), "--db", db, "--json").stdout)
    assert shown["status"] == "partial" and shown["error"] == "fr: script rejected by ana@agency: tone is off"
    decided = {r["lang"]: r for r in shown["reviews"]}
    assert decided["es"]["status"] == "approved" and decided["es"]["decided_by"] == "ana@agency"
    assert decided["es"]["changes"] == [{"line": 1, "before": "Hello, and welcome to our new product.",
                                         "after": "Hola y bienvenidos to our new product."}]
    assert decided["fr"]["status"] == "rejected" and decided["fr"]["reason"] == "tone is off"
    assert [o["path"] for o in shown["outputs"]].count(str(out / "ad.report.json")) == 1
    remembered = terms.recall(Catalog(db), "Acme", "en", "es", ["Hello, and welcome to our new product."])
    assert remembered == {"Hello, and welcome to our new product.": "Hola y bienvenidos to our new product."}

    assert "job {} is not awaiting review (es approved, fr rejected)".format(job) in one_line_error(
        dub("approve", str(job), "--db", db))

    # Another cut of the ad with the same script: every es line is in the brand's approved
    # memory, so there is nothing to review; it is voiced at once, as approved.
    other = tmp_path / "cut" / "ad.mp4"
    other.parent.mkdir()
    shutil.copy(untranslated, other)
    shutil.copy(EXAMPLE.with_suffix(".en.srt"), other.with_suffix(".en.srt"))
    with libre_echo() as libre:
        env = {"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key", "DUB_TRANSLATE_RETRIES": "0"}
        again = dub(other, "--langs", "es", "--review", "script", "--voice", "espeak", "--lipsync", "off",
                    "--translator", "libre", "--brand", "Acme", "--out", tmp_path / "cut-out", "--db", db, "--json",
                    env=env)
        assert libre.texts == []
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "done"
    assert read_subtitles(tmp_path / "cut-out" / "ad.es.srt")[0].text.startswith("Hola y bienvenidos")


@pytest.mark.slow
def test_a_catalog_item_awaits_review_then_is_delivered_once_approved(prefect_api, tmp_path, untranslated):
    """`review: script` in a manifest: the catalog run leaves the item's language awaiting
    review (its artifact and `dub status` say so, and the next run does not redo it);
    approved, the job goes on and the cell is done, up to date for the next run."""
    import yaml

    db = f"sqlite:///{tmp_path / 'c.db'}"
    manifest = tmp_path / "ads.yaml"
    manifest.write_text(yaml.safe_dump({
        "defaults": {"langs": ["es", "fr"], "voice": "espeak", "lipsync": "off", "translator": "libre",
                     "review": "script"},
        "items": [{"id": "ad", "input": "ad.mp4"}]}))
    with libre_echo() as libre:
        env = {"LIBRE_URL": libre.url, "LIBRE_API_KEY": "key", "DUB_TRANSLATE_RETRIES": "0"}
        first = dub("catalog", manifest, "--out", tmp_path / "out", "--db", db, "--json", env=env)
        assert first.returncode == 0, first.stderr
        rows = json.loads(first.stdout)["rows"]
        job = rows[0]["job"]
        assert {(r["status"], r["error"]) for r in rows} == {("awaiting review", f"job {job}: dub review {job}")}

        def cells() -> dict:
            status = dub("status", manifest, "--db", db, "--json", env=env)
            [listed] = json.loads(status.stdout).values()
            return {c["lang"]: c["state"] for c in listed}

        assert cells() == {"es": "awaiting review", "fr": "awaiting review"}
        again = dub("catalog", manifest, "--out", tmp_path / "out", "--db", db, "--json", env=env)
        assert {r["status"] for r in json.loads(again.stdout)["rows"]} == {"not due (awaiting review)"}
        assert len(json.loads(dub("list", "--db", db, "--json").stdout)) == 1  # no new job

        assert dub("reject", str(job), "--lang", "fr", "--why", "off brand", "--db", db, env=env).returncode == 0
        approved = dub("approve", str(job), "--db", db, env=env)
        assert approved.returncode == 1, approved.stderr  # fr is rejected: the job is partial
        assert (tmp_path / "out" / "ad" / "ad.es.mp4").exists()
        assert cells() == {"es": "done", "fr": "rejected"}
        last = dub("catalog", manifest, "--out", tmp_path / "out", "--db", db, "--json", env=env)
        assert {r["language"]: r["status"] for r in json.loads(last.stdout)["rows"]} == {
            "es": "up to date", "fr": "not due (rejected)"}  # a person's no stands until the script changes


@pytest.mark.slow
def test_a_final_review_ships_only_what_a_person_approved(prefect_api, tmp_path):
    """`--review final`: every language is delivered for the reviewer to watch and waits;
    approved, it is done; rejected, its files are withdrawn and it fails with why. `auto`
    waits only for a language the QA report flags."""
    video = tmp_path / "ad.mp4"
    for f in EXAMPLE.parent.glob(f"{EXAMPLE.stem}.*"):  # the example with approved es and fr scripts
        shutil.copy(f, tmp_path / f.name.replace(EXAMPLE.stem, "ad"))
    db = f"sqlite:///{tmp_path / 'c.db'}"
    out = tmp_path / "out"
    env = {"DUB_REVIEWER": "qa@agency"}
    first = dub(video, "--langs", "es,fr", "--review", "final", "--voice", "espeak", "--lipsync", "off",
                "--out", out, "--db", db, "--json", env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    job = report["job"]
    assert report["status"] == "awaiting review" and (out / "ad.fr.mp4").exists()
    assert not (out / "ad.dubbed.mkv").exists()  # nothing combined before every language is approved
    shown = dub("review", str(job), "--db", db)
    assert shown.returncode == 0 and f"job {job} es: the delivered result awaits approval" in shown.stderr
    assert str(out / "ad.es.mp4") in shown.stderr
    refused = dub("approve", str(job), "--lang", "es", "--script", tmp_path / "ad.es.srt", "--db", db)
    assert "--script edits a script" in one_line_error(refused)

    assert dub("approve", str(job), "--lang", "es", "--db", db, env=env).returncode == 0
    rejected = dub("reject", str(job), "--lang", "fr", "--why", "lip flap", "--db", db, "--json", env=env)
    assert rejected.returncode == 1, rejected.stderr
    final = json.loads(rejected.stdout)
    assert final["status"] == "partial" and final["languages"]["es"]["status"] == "done"
    assert final["languages"]["fr"]["error"] == "result rejected by qa@agency: lip flap"
    assert (out / "ad.es.mp4").exists() and not list(out.glob("ad.fr.*"))  # withdrawn, not shipped
    assert (out / "ad.dubbed.mkv").exists()
    outputs = json.loads(dub("show", str(job), "--db", db, "--json").stdout)["outputs"]
    assert not [o for o in outputs if o["lang"] == "fr"]

    strict = {"DUB_QA_THRESHOLDS": "max_loudness_delta_lu=0"}  # any loudness off its target is flagged
    auto = dub(video, "--langs", "es", "--review", "auto", "--voice", "espeak", "--lipsync", "off",
               "--out", tmp_path / "auto", "--db", db, "--json", env=strict)
    flagged = json.loads(auto.stdout)
    assert flagged["status"] == "awaiting review", flagged["languages"]["es"].get("qa")
    calm = dub(video, "--langs", "es", "--review", "auto", "--voice", "espeak", "--lipsync", "off",
               "--out", tmp_path / "calm", "--db", db, "--json")
    assert json.loads(calm.stdout)["status"] == "done"
