"""Checks made before any work: every folder a job writes to is usable, and no deliverable
would land on a file the user provided.

A problem found here is an `InputError` (exit status 2, one line), raised before a single
stage runs, instead of a traceback after all the work is done.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from polydub import cache, config, media
from polydub.errors import InputError
from polydub.job import JobPlan
from polydub.sidecars import subtitles
from polydub.storage import objects

NAME_MAX = 255  # bytes, when the file system does not say
PATH_MAX = 4096
TEMP_SUFFIX = len(".") + len(cache.PART_SUFFIX)  # the report is written as .NAME.part first
# Rough bytes per second of source, for the free-space estimate (measured on the example):
AAC_RATE = 24_000  # a delivered 192 kbit/s audio track
SOURCE_AUDIO_RATE = 250_000  # the probe stage: 48 kHz mix base and 16 kHz ASR copy
LANGUAGE_CACHE_RATE = 700_000  # per language: line clips, fitted track, mix and its temporaries
MARGIN = 1.2
CATALOG_NEED = 16 << 20  # a catalog write needs little; an almost-full disk still fails it
MB = 1 << 20


@dataclass
class Needs:
    """Rough bytes a job writes: deliverables into --out, stage results into the cache."""

    out: int
    cache: int


def deliverable_names(plan: JobPlan) -> list[str]:
    """Every file name a job publishes into its output folder."""
    media_ext = ".mp4" if plan.has_video else ".m4a"
    names = [f"{plan.name}.{lang}{ext}" for lang in plan.langs for ext in (media_ext, ".srt", ".vtt", ".timeline.png")]
    names.append(f"{plan.name}.dubbed{'.mkv' if plan.has_video else '.mka'}")
    names.append(f"{plan.name}.report.json")
    return names


def provided(plan: JobPlan) -> dict[Path, str]:
    """The user's files a job reads, by resolved path: none may ever be overwritten."""
    mine: dict[Path, str] = {}

    def add(path: str | Path | None, what: str) -> None:
        if path:
            mine.setdefault(Path(path).expanduser().resolve(), what)

    add(plan.input, "the input")
    add(plan.options.transcript, "the approved transcript")
    for lang, path in plan.translations.items():
        add(path, f"the approved {lang} translation")
    if plan.options.glossary and Path(plan.options.glossary).is_file():
        add(plan.options.glossary, "the glossary")
    for path in subtitles(str(Path(plan.input).parent), plan.name).values():
        add(path, "a subtitle file beside the input")
    return mine


def check_overwrites(plan: JobPlan, catalog) -> None:
    """Refuse a job whose deliverables would replace one of the user's files: one it reads,
    or any file already at a deliverable's name that no job recorded delivering there (the
    catalog knows what polydub delivered; those, changed or not, it may replace)."""
    mine = provided(plan)
    out = Path(plan.out_dir)
    dests = {name: (out / name).resolve() for name in deliverable_names(plan)}
    present = {name: dest for name, dest in dests.items() if dest.exists()}  # resolved: links followed
    ours = catalog.delivered_paths([str(p) for name, dest in present.items() for p in (dest, out / name)])
    for name, dest in dests.items():
        what = mine.get(dest)
        if what is None and name in present:
            what = next((w for p, w in mine.items() if p.exists() and os.path.samefile(p, dest)), None)
        if what:
            raise InputError(f"--out {plan.out_dir}: {name} would replace {what} ({dest}); "
                             f"choose another output folder")
        if dest.is_dir():
            raise InputError(f"--out {plan.out_dir}: {name} exists as a folder")
        if name in present and str(dest) not in ours and str(out / name) not in ours:
            raise InputError(f"--out {plan.out_dir}: {name} is already there and polydub did not deliver it; "
                             f"move it or choose another output folder")


def check_overwrites_in_store(plan: JobPlan, catalog) -> None:
    """`check_overwrites` for an output folder in a bucket: an object already at a
    deliverable's name that no job recorded delivering there (an input, a sidecar, someone's
    file) is never replaced."""
    names = deliverable_names(plan)
    there = objects.present(plan.out_dir, names)
    ours = catalog.delivered_paths([objects.join(plan.out_dir, name) for name in there])
    for name in there:
        url = objects.join(plan.out_dir, name)
        if url == plan.source:
            raise InputError(f"--out {plan.out_dir}: {name} would replace the input; choose another output folder")
        if url not in ours:
            raise InputError(f"--out {plan.out_dir}: {name} is already there and polydub did not deliver it; "
                             f"move it or choose another output folder")


def estimate(plan: JobPlan) -> Needs:
    """A rough upper estimate of what the job writes (no stage is assumed cached)."""
    size = Path(plan.input).stat().st_size
    seconds = media.probe(plan.input).duration
    n = len(plan.langs)
    picture = size * (2 if plan.has_video and plan.options.lipsync != "off" else 1)  # a lip-synced re-encode
    per_language = picture + AAC_RATE * seconds
    multitrack = size + n * AAC_RATE * seconds
    out = n * per_language + multitrack
    cache_bytes = SOURCE_AUDIO_RATE * seconds + n * (LANGUAGE_CACHE_RATE * seconds + per_language) + multitrack
    return Needs(int(out * MARGIN), int(cache_bytes * MARGIN))


def _existing(folder: Path, what: str) -> Path:
    """The folder, or its nearest existing parent (where it will be created); refuse a file
    in the way."""
    folder = folder.expanduser().absolute()
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        detail = "exists as a file" if probe == folder else f"{probe} is a file, not a folder"
        raise InputError(f"{what} {folder}: {detail}")
    return probe


def _lengths_fit(folder: Path, what: str) -> None:
    """Refuse a folder path that no file system takes (a name over NAME_MAX bytes, a path over
    PATH_MAX), before anything looks at it: `Path.exists` itself raises on such a name."""
    folder = folder.expanduser().absolute()
    for part in folder.parts:
        if len(part.encode()) > NAME_MAX:
            raise InputError(f"{what} {str(folder)[:60]}...: the folder name {part[:30]}... is too long "
                             f"({len(part.encode())} bytes, at most {NAME_MAX})")
    if len(str(folder).encode()) >= PATH_MAX:
        raise InputError(f"{what} {str(folder)[:60]}...: the path is too long ({len(str(folder).encode())} bytes)")


def _writable(folder: Path, shown: Path, what: str, shared: bool = True) -> None:
    cache.check_writable(folder, what, shown, shared)


def check_out_file(path: Path, what: str = "--out") -> None:
    """A file about to be written (`dub export --out`): its folder exists, or can be made,
    and can be written; checked before any work."""
    found = path.expanduser().absolute().parent
    while not found.exists() and found.parent != found:  # the folder it will be made in
        found = found.parent
    if not found.is_dir():
        raise InputError(f"{what} {path}: {found} is a file, not a folder")
    _writable(found, path, what)


def _names_fit(folder: Path, names: list[str], shown: Path, what: str) -> None:
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = NAME_MAX
    for name in names:
        if len(name.encode()) + TEMP_SUFFIX > name_max:
            raise InputError(f"{what} {shown}: file name {name[:40]}... is too long for this file system "
                             f"({len(name.encode())} bytes, at most {name_max - TEMP_SUFFIX}); rename the input")
        if len(str(shown / name).encode()) + TEMP_SUFFIX >= PATH_MAX:
            raise InputError(f"{what} {shown}: path of {name[:40]}... is too long")


def check_job(plans: list[JobPlan], db_url: str | None = None, cache_root: Path | None = None) -> None:
    """Everything about where the jobs write, before any work: --out, the cache and the
    catalog folder each exist as folders (or can be made), can be written, hold the names,
    and have room for a rough estimate of the jobs. Also removes what killed runs left
    (old temporary files), which may free the room needed."""
    from polydub.storage import shared_catalog

    cache_root = Path(cache_root or config.cache_dir())
    db_url = db_url or config.database_url()
    objects.retries_allowed()  # a malformed DUB_STORAGE_RETRIES is bad usage, found now
    store = objects.shared_store()  # a malformed DUB_STORAGE_URL is refused here
    if store is not None:
        store.check()  # reachable, and ours to write: one line before any work, not a failure later
    in_store = [plan for plan in plans if objects.is_remote(plan.out_dir)]
    plans = [plan for plan in plans if plan not in in_store]
    for plan in plans:
        _lengths_fit(Path(plan.out_dir), "--out")
    _lengths_fit(cache_root, "cache folder (DUB_CACHE_DIR)")
    catalog = shared_catalog(db_url)  # opens (or makes) it: the one refusal of a catalog every command gives
    needs: dict[int, tuple[Path, int]] = {}  # device -> (first folder, bytes), for shared disks

    def need(folder: Path, shown: Path, what: str, bytes_: int, shared: bool = True) -> None:
        _writable(folder, shown, what, shared)
        dev = os.stat(folder).st_dev
        first, total = needs.get(dev, (folder, 0))
        needs[dev] = (first, total + bytes_)

    for plan in in_store:
        objects.check_writable(plan.out_dir)
        check_overwrites_in_store(plan, catalog)
    root = _existing(cache_root, "cache folder (DUB_CACHE_DIR)")
    cache.sweep(cache_root, extra=tuple(Path(p.out_dir) for p in plans if Path(p.out_dir).is_dir()))
    total_cache = 0
    for plan in plans:
        check_overwrites(plan, catalog)
        out = Path(plan.out_dir)
        found = _existing(out, "--out")
        _names_fit(found, deliverable_names(plan), out, "--out")
        job = estimate(plan)
        need(found, out, "--out", job.out)
        total_cache += job.cache
    need(root, cache_root, "cache folder (DUB_CACHE_DIR)", total_cache, shared=False)
    if db_url.startswith("sqlite:///"):
        db_file = Path(db_url.removeprefix("sqlite:///"))
        need(db_file.parent, db_file.parent, "catalog", CATALOG_NEED, shared=False)  # it opened above: it exists
    for folder, bytes_ in needs.values():
        free = shutil.disk_usage(folder).free
        if free < bytes_:
            raise InputError(f"not enough free space in {folder}: this job needs about {bytes_ / MB:.0f} MB, "
                             f"{free / MB:.0f} MB free")
