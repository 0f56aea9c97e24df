"""What a delivery is made from (its recipe), and whether it is still up to date.

An item x language is stale when anything its file was made from changed: the source's
bytes, the transcript or its approved translation, the glossary (file or the brand's terms
in the catalog), the brand's translation memory (where no approved translation is given),
the voice map, any other option, or the version of a model that makes it. The recipe is computed without probing media (a catalog of 10,000 items is checked in
well under a second): files are known by their sha256, rehashed only when their size or
mtime changed (`deliveries.digests`), and sidecars are found from one listing per folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from polydub import config
from polydub.errors import DubError
from polydub.options import PATH_OPTIONS  # their content counts (as a part of its own), not their path
from polydub.report import AWAITING_REVIEW, REJECTED
from polydub.sidecars import Folders, approved_translations, subtitles
from polydub.storage import deliveries, objects
from polydub.storage.catalog import Catalog, iso

RECIPE_VERSION = 2  # bump when the recipe's parts change meaning: every delivery turns stale (2: + memory)
STATES = ("done", "stale", "failed", "running", "queued", "missing", AWAITING_REVIEW, REJECTED)
AUDIO_SUFFIXES = {".wav", ".m4a", ".mp3", ".aac", ".flac", ".ogg", ".opus", ".mka"}
NOT_IN_RECIPE = ("consent",)  # recorded with the job; it does not change the file


@dataclass
class Cell:
    """One item x language as `dub status` shows it."""

    item: str
    lang: str
    state: str  # one of STATES
    why: str = ""  # stale: what changed; failed: the error; missing: never delivered / file gone
    path: str | None = None
    job: int | None = None
    delivered_at: datetime | None = None

    def to_dict(self) -> dict:
        return {"item": self.item, "lang": self.lang, "state": self.state, "why": self.why, "path": self.path,
                "job": self.job, "delivered_at": iso(self.delivered_at)}


# ------------------------------------------------------------------------------ sidecars


def script_files(item, folders: Folders) -> tuple[list[str], dict[str, str]]:
    """The files that may be the item's transcript, and its approved translations by
    language, found as `plan_job` finds them (without probing the media)."""
    options = item.options
    folder, name = os.path.split(item.input)
    stem = os.path.splitext(name)[0]
    beside = subtitles(folder, stem, folders)
    translations = approved_translations(stem, item.langs, beside, options.translations, folders)
    if options.transcript:
        return [options.transcript], translations
    scripts = [path for tag, path in beside.items() if tag is None or tag not in item.langs]
    return sorted(scripts), translations


# ------------------------------------------------------------------------------- models


@lru_cache(maxsize=256)
def _voice_identity(spec: str, lang: str, commercial: bool) -> str:
    from polydub.tts import auto_cloner, select_voice
    from polydub.tts.coqui import XTTS_DIR, checkpoint_in

    cloner = auto_cloner(lang, config.models_dir(), commercial) if spec == "auto" else None
    if cloner is not None and cloner.name == XTTS_DIR:  # cloning needs the job's reference clip; the model is this one
        return f"xtts-v2 {_file_identity(checkpoint_in(cloner))}"
    try:
        return select_voice(spec, lang, commercial=commercial)[0].model
    except DubError as exc:
        return f"unavailable: {exc}"


def _file_identity(path) -> str:
    paths = path if isinstance(path, (list, tuple)) else [path]
    stats = []
    for p in paths:
        try:
            st = Path(p).stat()
            stats.append(f"{Path(p).name}:{st.st_size}:{st.st_mtime_ns}")
        except (OSError, TypeError):
            stats.append(str(p))
    return ",".join(stats)


@lru_cache(maxsize=64)
def _translator_identity(spec: str) -> str:
    from polydub.translate import make_translator

    try:
        translator = make_translator(spec)
        return f"{translator.name} {translator.version}"
    except DubError as exc:
        return f"unavailable: {exc}"


@lru_cache(maxsize=8)
def _lipsync_identity(mode: str, has_video: bool) -> str:
    if mode == "off" or not has_video:
        return "off"
    from polydub.lipsync import lipsync_decision

    try:
        ok, _ = lipsync_decision(mode, has_video)
    except DubError as exc:
        return f"unavailable: {exc}"
    return f"latentsync {config.lipsync_version()}" if ok else "not run"


@lru_cache(maxsize=1024)
def _models(voice: str, lipsync: str, asr_model: str, translator: str, lang: str, commercial: bool, has_video: bool,
            has_script: bool, approved: bool) -> tuple[tuple[str, str], ...]:
    """The models that make an item x language, each with its version, as (name,
    identity) pairs; cached: a catalog's items share a few combinations."""
    models = {"voice": _voice_identity(voice, lang, commercial), "lipsync": _lipsync_identity(lipsync, has_video)}
    if not has_script:
        models["asr"] = asr_model
    if not approved:
        models["translator"] = _translator_identity(translator)
    return tuple(models.items())


# ------------------------------------------------------------------------------- recipes


def _brand_terms(cat: Catalog, brand: str | None, lang: str) -> tuple[str | None, str | None]:
    """(digest of the brand's glossary for `lang`, of its translation memory into `lang`)."""
    from polydub.storage.terms import glossary_digest, memory_digest

    return glossary_digest(cat, brand or "", lang), memory_digest(cat, brand or "", lang)


class RecipeBook(Mapping):
    """(item id, lang) -> recipe, each dict built when asked for: `dub status` needs the
    parts only of stale cells, and a catalog has tens of thousands of cells."""

    def __init__(self):
        self._parts: dict[tuple[str, str], tuple] = {}

    def add(self, key: tuple[str, str], shared: dict, lang_parts: tuple) -> None:
        self._parts[key] = (shared, lang_parts)

    def __getitem__(self, key: tuple[str, str]) -> dict:
        shared, (translation, glossary, brand_glossary, memory, models) = self._parts[key]
        return {**shared, "translation": translation, "glossary": glossary, "brand_glossary": brand_glossary,
                "memory": memory, "models": dict(models)}

    def __iter__(self):
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)


class Recipes:
    """Recipes of many items x languages, sharing folder listings, digests and model
    identities."""

    def __init__(self, cat: Catalog):
        self.cat = cat
        self.folders = Folders()
        self._terms: dict[tuple[str | None, str], tuple[str | None, str | None]] = {}
        self.fingerprints: dict[tuple[str, str], str] = {}  # of the last `for_items`, as `fingerprint` gives

    def for_items(self, items: list) -> RecipeBook:
        """(item id, lang) -> recipe (a dict of parts) for every item of a manifest; each
        one's `fingerprint` in `self.fingerprints`."""
        from polydub.translate.glossary import glossary_for

        found = {}
        paths: list[str] = []
        for item in items:
            scripts, translations = script_files(item, self.folders)
            glossaries = {lang: glossary_for(item.options.glossary, lang) for lang in item.langs} \
                if item.options.glossary else {}
            voices = item.options.voices or None
            found[item.id] = (scripts, translations, glossaries, voices)
            paths += [item.input, *scripts, *translations.values(), *(str(g) for g in glossaries.values() if g)]
            paths += [voices] if voices else []
        sha = deliveries.digests(self.cat, paths)
        book = RecipeBook()
        encoded: dict[object, str] = {}  # options and model sets, shared by many items
        machine_commercial = config.commercial()
        version = _encode(RECIPE_VERSION)
        for item in items:
            scripts, translations, glossaries, voices = found[item.id]
            options = item.options.model_dump(exclude=set(PATH_OPTIONS) | set(NOT_IN_RECIPE))
            if options.get("commercial") is None:
                options["commercial"] = machine_commercial
            has_video = os.path.splitext(item.input)[1].lower() not in AUDIO_SUFFIXES
            script = [sha[str(p)] for p in scripts]
            options_key = tuple(options.items())
            if options_key not in encoded:
                encoded[options_key] = _encode(options)
            source, voices_sha = sha[item.input], sha[voices] if voices else None
            shared = {"version": RECIPE_VERSION, "source": source, "script": script, "voices": voices_sha,
                      "options": options}
            # The fingerprint from parts encoded once per item, in `fingerprint`'s order
            # (parts sorted by name): the same digest without 50,000 json.dumps.
            head = (f"options={encoded[options_key]}\nscript=[{', '.join(_hex(x) for x in script)}]\n"
                    f"source={_hex(source)}\n")
            tail = f"\nversion={version}\nvoices={_hex(voices_sha)}"
            for lang in item.langs:
                glossary = glossaries.get(lang)
                glossary_sha = sha[str(glossary)] if glossary else None
                terms_key = (item.options.brand, lang)
                if terms_key not in self._terms:
                    self._terms[terms_key] = _brand_terms(self.cat, item.options.brand, lang)
                brand_glossary, memory = self._terms[terms_key]
                approved = lang in translations
                memory = None if approved else memory  # an approved script is spoken as it is
                models = _models(item.options.voice, item.options.lipsync, item.options.asr_model,
                                 item.options.translator, lang, options["commercial"], has_video, bool(scripts),
                                 approved)
                if models not in encoded:
                    encoded[models] = _encode(dict(models))
                translation = sha[translations[lang]] if approved else None
                book.add((item.id, lang), shared, (translation, glossary_sha, brand_glossary, memory, models))
                text = (f"brand_glossary={_hex(brand_glossary)}\nglossary={_hex(glossary_sha)}\n"
                        f"memory={_hex(memory)}\nmodels={encoded[models]}\n{head}translation={_hex(translation)}{tail}")
                self.fingerprints[(item.id, lang)] = hashlib.sha256(text.encode()).hexdigest()
        return book


def _encode(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _hex(value: str | None) -> str:
    """`_encode` of a hex digest or None, without json (digests need no escaping)."""
    return "null" if value is None else f'"{value}"'


def _digest(encoded: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{part}={encoded[part]}" for part in sorted(encoded)).encode()).hexdigest()


def fingerprint(recipe: dict) -> str:
    """The digest of a recipe: a delivery is stale when this differs from the recorded one."""
    return _digest({part: _encode(value) for part, value in recipe.items()})


NAMES = {"source": "source changed", "script": "transcript changed", "translation": "approved translation changed",
         "glossary": "glossary changed", "brand_glossary": "brand glossary changed",
         "memory": "translation memory changed", "voices": "voice map changed",
         "options": "options changed", "models": "model versions changed", "version": "recipe format changed"}


def what_changed(old: dict | None, new: dict) -> str:
    """`transcript changed, options changed (voice)`: why a delivery is stale."""
    if not old:
        return "made before recipes were recorded"
    said = []
    for part, name in NAMES.items():
        if old.get(part) == new.get(part):
            continue
        if part in ("options", "models") and isinstance(old.get(part), dict) and isinstance(new.get(part), dict):
            keys = sorted(k for k in set(old[part]) | set(new[part]) if old[part].get(k) != new[part].get(k))
            name += f" ({', '.join(keys)})"
        said.append(name)
    return ", ".join(said)


# ------------------------------------------------------------------------------- matrix


def _is_delivered_file(path: str) -> bool:
    """Whether a delivered file is still there: a local file (os.path, not Path(): 50,000 of
    them), or an object in a bucket (one request each)."""
    if objects.is_remote(path):
        return objects.exists(path)
    return os.path.isfile(path)


def cell(item: str, lang: str, record: deliveries.Record | None, current: str | None = None) -> Cell:
    """The state of one item x language: what the catalog holds against the fingerprint
    of its current recipe (`current`; None: judge by the record alone). A stale cell's
    `why` is filled by `assess`, which reads the recorded recipes of stale cells only."""
    if record is None:
        return Cell(item, lang, "missing", "never dubbed")
    shown = dict(path=record.path, job=record.job_id, delivered_at=record.delivered_at)
    if record.held:
        return Cell(item, lang, record.status, f"held by {record.owner}", **shown)
    if record.status == AWAITING_REVIEW:
        return Cell(item, lang, AWAITING_REVIEW, f"job {record.job_id}: dub review {record.job_id}", **shown)
    if record.status == REJECTED:  # stays rejected until what it is made from changes
        if current is not None and record.fingerprint != current:
            return Cell(item, lang, "stale", "", **shown)
        return Cell(item, lang, REJECTED, record.error or "rejected", **shown)
    if record.status == "failed":
        return Cell(item, lang, "failed", record.error or "failed", **shown)
    if record.delivered_at is None:
        return Cell(item, lang, "missing", "never delivered", **shown)
    if not record.path or not _is_delivered_file(record.path):
        return Cell(item, lang, "missing", f"delivered file is gone ({record.path})", **shown)
    if current is not None and record.fingerprint != current:
        return Cell(item, lang, "stale", "", **shown)
    return Cell(item, lang, "done", "", **shown)


@dataclass
class Assessment:
    """A manifest judged against the catalog: each cell, and the recipes it was judged by."""

    cells: dict[tuple[str, str], Cell]
    recipes: RecipeBook
    fingerprints: dict[tuple[str, str], str]
    records: dict[tuple[str, str], deliveries.Record]  # what the catalog holds, by cell


def assess(cat: Catalog, manifest) -> Assessment:
    """Every item x language of a manifest, in manifest order, with why stale ones are."""
    judge = Recipes(cat)
    recipes = judge.for_items(manifest.items)
    recorded = {(r.item, r.lang): r for r in deliveries.records(cat, manifest.key)}
    cells = {(item.id, lang): cell(item.id, lang, recorded.get((item.id, lang)), judge.fingerprints[(item.id, lang)])
             for item in manifest.items for lang in item.langs}
    stale = [key for key, c in cells.items() if c.state == "stale"]
    for key, old in deliveries.recipes_of(cat, manifest.key, stale).items():
        cells[key].why = what_changed(old, recipes[key])
    return Assessment(cells, recipes, judge.fingerprints, recorded)


def matrix(cat: Catalog, manifest) -> list[Cell]:
    """Every item x language of a manifest, in manifest order."""
    return list(assess(cat, manifest).cells.values())


def recorded_matrix(cat: Catalog, manifest_key: str | None = None) -> dict[str, list[Cell]]:
    """Without a manifest: what the catalog recorded, by manifest key (no staleness)."""
    found: dict[str, list[Cell]] = {}
    for key in ([manifest_key] if manifest_key else deliveries.manifests(cat)):
        found[key] = [cell(r.item, r.lang, r) for r in deliveries.records(cat, key)]
    return found


# ------------------------------------------------------------------------------ one dub

SINGLE_PREFIX = "out:"  # `dub INPUT` records its deliveries under this + its output folder


@dataclass
class SingleDub:
    """A `dub INPUT` job judged before any work: each language's recipe and fingerprint,
    and, when every language is delivered from these very inputs and options and every
    file the job delivered is in place as delivered, that job's report."""

    key: str  # the deliveries' manifest key: SINGLE_PREFIX + the output folder
    item: str  # the deliveries' item: the input's name
    recipes: RecipeBook
    fingerprints: dict[tuple[str, str], str]
    delivered: object | None = None  # a report.JobReport when nothing is due
    why: str = ""  # why not, when it is not


def judge_single(cat: Catalog, plan) -> SingleDub:
    """What the catalog says of a planned `dub INPUT` job (a `job.JobPlan`): the same
    recipes and staleness as `dub status`, and the delivered files checked byte for byte."""
    from polydub.batch.manifest import ManifestItem

    item = ManifestItem(id=plan.name, where=plan.input, input=plan.input, url=None, langs=list(plan.langs),
                        options=plan.options)
    judge = Recipes(cat)
    book = judge.for_items([item])
    found = SingleDub(SINGLE_PREFIX + str(plan.out_dir), item.id, book, judge.fingerprints)
    recorded = {r.lang: r for r in deliveries.records(cat, found.key) if r.item == item.id}
    for lang in plan.langs:
        state = cell(item.id, lang, recorded.get(lang), judge.fingerprints[(item.id, lang)])
        if state.state != "done":
            found.why = f"{lang}: {state.state}" + (f" ({state.why})" if state.why else "")
            return found
    jobs = {recorded[lang].job_id for lang in plan.langs}
    if len(jobs) != 1 or None in jobs:
        found.why = "the languages were delivered by different jobs"
        return found
    found.delivered, found.why = _intact_job(cat, jobs.pop(), plan.langs)
    return found


def _intact_job(cat: Catalog, job_id: int, langs: list[str]) -> tuple[object | None, str]:
    """(the job's report, "") when the job delivered exactly `langs` and every file it
    delivered has the size and sha256 it was delivered with; else (None, why not)."""
    from polydub.report import JobReport
    from polydub.storage.catalog import delivered_digest

    job = cat.show_job(job_id)
    if job["status"] != "done" or sorted(job["langs"]) != sorted(langs):
        return None, f"job {job_id} delivered {','.join(job['langs'])} ({job['status']})"
    report_path = None
    for output in job["outputs"]:
        if output["sha256"] is None:
            return None, f"{output['path']}: delivered before files were recorded with their digests"
        if delivered_digest(output["path"]) != (output["size"], output["sha256"]):
            return None, f"{output['path']}: missing or changed since it was delivered"
        if output["kind"] == "report":
            report_path = output["path"]
    if report_path is None:
        return None, f"job {job_id} recorded no report"
    return JobReport.load(report_path), ""


def settle_reviewed(cat: Catalog, job_id: int, report) -> None:
    """The catalog items (of any manifest) whose review job `job_id` waited for, once the job
    ends (a `report.JobReport`): done with the file it delivered, rejected or failed with
    why, or still awaiting when the job waits again. A delivered one is recorded with its
    recipe as it is now: the approved lines are in the brand's translation memory since the
    approval."""
    digest_of = _delivered_digests(cat, job_id)
    for manifest, item, lang, recipe in deliveries.awaiting_job(cat, job_id):
        entry = report.language(lang)
        if entry.status == AWAITING_REVIEW:
            continue
        if recipe is not None and entry.done and recipe.get("translation") is None:  # translated: the memory it matches
            recipe = {**recipe, "memory": _brand_terms(cat, (recipe.get("options") or {}).get("brand"), lang)[1]}
        _record_one(cat, manifest, item, lang, report, fingerprint(recipe) if recipe else None, recipe, digest_of)


def record_deliveries(cat: Catalog, key: str, item: str, langs: list[str], recipes: Mapping, fingerprints: dict,
                      report) -> None:
    """Each of `langs` of a finished job (a `report.JobReport`) as a delivery of `item`
    under `key`: the file, its sha256 and the recipe it was made from, awaiting a person's
    review or rejected by them, or why it failed (a file gone by the time it is recorded is
    not called delivered)."""
    digest_of = _delivered_digests(cat, report.job)
    for lang in langs:
        _record_one(cat, key, item, lang, report, fingerprints[(item, lang)], recipes[(item, lang)], digest_of)


def _delivered_digests(cat: Catalog, job_id: int | None):
    """sha256 of a file the job delivered: as the job recorded it (size unchanged), else hashed."""
    from polydub.storage.catalog import delivered_digest

    # the job recorded each output's size and sha256 as it delivered it: not hashed again
    recorded = {o["path"]: (o["size"], o["sha256"]) for o in cat.show_job(job_id)["outputs"]} if job_id else {}

    def digest_of(path: str) -> str | None:
        size, digest = recorded.get(path, (None, None))
        if digest is not None and os.path.isfile(path) and os.path.getsize(path) == size:
            return digest
        return delivered_digest(path)[1]

    return digest_of


def _record_one(cat: Catalog, key: str, item: str, lang: str, report, fingerprint_: str | None, recipe: dict | None,
                digest_of) -> None:
    """One item x language of a finished job, as `record_deliveries` says."""
    entry = report.language(lang)
    if entry.status in (AWAITING_REVIEW, REJECTED):  # a person decides, or decided no
        deliveries.finish(cat, key, item, lang, entry.status, fingerprint=fingerprint_, recipe=recipe,
                          job_id=report.job, error=entry.error)
        return
    digest = digest_of(entry.media) if entry.done and entry.media else None
    if digest is not None and recipe is not None:
        deliveries.finish(cat, key, item, lang, "done", fingerprint=fingerprint_, recipe=recipe, job_id=report.job,
                          path=entry.media, duration=report.duration, sha256=digest)
    elif entry.done:
        deliveries.finish(cat, key, item, lang, "failed", job_id=report.job,
                          error=f"{entry.media}: the delivered file could not be read after the job")
    else:
        deliveries.finish(cat, key, item, lang, "failed", job_id=report.job,
                          error=entry.error or report.error or "failed")
