"""`dub catalog`, `dub status`, `dub export`: localizing a catalog of ads from a manifest.

    dub catalog ads.csv --langs es,fr,de          dub what is missing, stale or failed
    dub catalog ads.csv --only-stale              redo only what changed since it was dubbed
    dub status ads.csv [--only stale] [--json]    the item x language matrix
    dub export ads.csv --out delivery.csv         what is delivered, for an ad server

Options given here apply to items that do not set them (a manifest's defaults and columns
win). Status and export judge what is stale with the options they are given, or, given
none, with those of the manifest's last catalog run.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from polydub import config, spreadsheet
from polydub.errors import DubError, InputError
from polydub.options import help_for

ONLY = ("done", "stale", "failed", "running", "queued", "missing", "awaiting review", "rejected")
EXPORT_COLUMNS = ("item", "language", "file", "duration", "sha256", "job", "date")

# One definition of the flags the three commands share.
LANGS = typer.Option(None, "--langs", "-l", help="Languages for items that do not name their own, e.g. es,fr,de.")
VOICE = typer.Option(None, "--voice", help=help_for("voice"))
LIPSYNC = typer.Option(None, "--lipsync", help=help_for("lipsync"))
TRANSLATOR = typer.Option(None, "--translator", help=help_for("translator"))
BRAND = typer.Option(None, "--brand", help=help_for("brand"))
SET = typer.Option(None, "--set", metavar="OPTION=VALUE",
                   help="Any other job option for items that do not set it, e.g. --set max_speed=1.2 "
                        "(the names of dub run's flags, with _ for -).")
DB = typer.Option(None, "--db", help="Catalog URL (default DUB_DATABASE_URL or ~/.polydub/catalog.db).")


def defaults(voice: str | None, lipsync: str | None, translator: str | None, brand: str | None,
             settings: list[str] | None, out: str | None = None):
    """The command line's options for items, checked by `DubOptions`."""
    from polydub.options import make_options

    values: dict = {}
    for setting in settings or []:
        key, sep, value = setting.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {setting!r}: give OPTION=VALUE, e.g. --set max_speed=1.2")
        values[key.strip().replace("-", "_")] = value.strip()
    if "out" in values:
        raise InputError("--set out=...: use --out")
    return make_options(values, voice=voice, lipsync=lipsync, translator=translator, brand=brand, out=out)


def given_or_remembered(cat, manifest: Path, langs: str | None, voice: str | None, lipsync: str | None,
                        translator: str | None, brand: str | None, settings: list[str] | None):
    """The languages and options to use for a manifest: those given on the command line,
    else, given none, those of its last catalog run (so `dub status ads.csv` after
    `dub catalog ads.csv --voice espeak` judges with espeak, and so does a plain re-run)."""
    from polydub.options import make_options
    from polydub.storage import deliveries

    if not any((langs, voice, lipsync, translator, brand, settings)):
        remembered = deliveries.defaults_of(cat, str(Path(manifest).expanduser().resolve()))
        if remembered is not None:
            return remembered[0], make_options(remembered[1])
    return _langs(langs), defaults(voice, lipsync, translator, brand, settings)


def judged(cat, manifest: Path, langs: str | None, voice: str | None, lipsync: str | None, translator: str | None,
           brand: str | None, settings: list[str] | None):
    """The manifest, loaded with the languages and options its staleness is judged by."""
    from polydub.batch.manifest import load_manifest

    return load_manifest(manifest, *given_or_remembered(cat, manifest, langs, voice, lipsync, translator, brand, settings))


def _langs(langs: str | None) -> list[str] | None:
    from polydub import languages

    return languages.parse_langs(langs) if langs else None


def catalog_cmd(
    manifest: Path = typer.Argument(..., help="A CSV, JSON or YAML manifest, or a folder of videos with their sidecars."),
    langs: Optional[str] = LANGS,
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder of the catalog (default "
                                          "./dubbed/MANIFEST/), or a folder URL in an object store; each item "
                                          "in a subfolder named by its id.", metavar="PATH"),
    voice: Optional[str] = VOICE, lipsync: Optional[str] = LIPSYNC, translator: Optional[str] = TRANSLATOR,
    brand: Optional[str] = BRAND, settings: Optional[List[str]] = SET,
    only_stale: bool = typer.Option(False, "--only-stale", help="Redo only what is stale; skip missing and failed."),
    via_deployment: Optional[str] = typer.Option(None, "--via-deployment", metavar="NAME",
                                                 help="Hand each item to workers as a run of this dub_video "
                                                      "deployment (e.g. dub-video) and wait for them."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, max=16, help="Items dubbed at once in this process."),
    db: Optional[str] = DB,
    as_json: bool = typer.Option(False, "--json", help="Print the catalog table as JSON."),
) -> None:
    """Dub every item x language of MANIFEST that is missing, stale or failed; exit 1 if any fails."""
    from polydub.batch.manifest import load_manifest

    config.use_database(db)
    from polydub.storage import Catalog

    targets, options = given_or_remembered(Catalog(), manifest, langs, voice, lipsync, translator, brand, settings)
    if out_dir:
        options = options.model_copy(update={"out": str(out_dir)})
    load_manifest(manifest, targets, options)  # every row's problems now, before Prefect starts

    from polydub import server

    # INFO: each stage's line reaches the run's log in the UI; the console shows only our own
    # table (one_line_errors below)
    ui_level = os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    server.run_settings()
    server.ensure_api()
    import logging

    from polydub.errors import JobFailed, JobRefused
    from polydub.flows.batch import UNFINISHED, dub_catalog
    from polydub.flows.logs import one_line_errors, run_logs_at
    from polydub.flows.outcome import finished_despite

    one_line_errors(logging.CRITICAL)
    run_logs_at(ui_level)
    started, since = time.perf_counter(), time.time()
    try:
        state = dub_catalog(str(manifest), targets, options, only_stale, via_deployment, concurrency, return_state=True)
        report = state.result(raise_on_failure=False)
    except Exception as exc:  # e.g. the Prefect server died: the items that ran are recorded
        report = finished_despite(exc, since)
    if isinstance(report, JobRefused):
        raise report
    if isinstance(report, JobFailed):
        report = report.report
    if not isinstance(report, dict):
        raise DubError(f"the catalog run ended {state.name}: {state.message}")
    if as_json:
        print(json.dumps(report, default=str))
    else:
        _print_report(report, time.perf_counter() - started)
    unfinished = any(row["status"] in UNFINISHED for row in report["rows"])
    if report.get("not_recorded"):
        print(f"dub: warning: {report['not_recorded']}", file=sys.stderr)
        from polydub import crash

        crash.exit_within(crash.LOST_SERVER_EXIT_S, int(unfinished))  # Prefect retries the gone server at exit
    if unfinished:
        raise typer.Exit(1)


def _print_report(report: dict, seconds: float) -> None:
    worked = [r for r in report["rows"] if r["status"] != "up to date"]
    if worked:
        width = max(len(r["item"]) for r in worked)
        for r in worked:
            detail = r["error"] if r["status"] != "dubbed" else r["output"]
            print(f"{r['item']:<{width}}  {r['language']:<6} {r['status']:<18} {detail}")
    from polydub.flows.batch import plural_items, summary

    counts = summary(report)

    print(f"{Path(report['manifest']).name}: {plural_items(report['items'])}: {counts} in {seconds:.1f} s; "
          f"outputs in {report['out_dir']}", file=sys.stderr)


def status_cmd(
    manifest: Optional[Path] = typer.Argument(None, help="The manifest (without it: what the catalog recorded, "
                                              "for every manifest, without checking what is stale)."),
    only: Optional[str] = typer.Option(None, "--only", help=f"Only cells in this state: {', '.join(ONLY)}."),
    langs: Optional[str] = LANGS,
    voice: Optional[str] = VOICE, lipsync: Optional[str] = LIPSYNC, translator: Optional[str] = TRANSLATOR,
    brand: Optional[str] = BRAND, settings: Optional[List[str]] = SET,
    db: Optional[str] = DB,
    as_json: bool = typer.Option(False, "--json", help="Print every cell as JSON."),
) -> None:
    """The item x language matrix: done, stale, failed, running, queued or missing."""
    from polydub.batch import staleness
    from polydub.storage import Catalog

    if only and only not in ONLY:
        raise InputError(f"--only must be one of {', '.join(ONLY)}, not {only!r}")
    config.use_database(db)
    cat = Catalog()
    if manifest is not None:
        loaded = judged(cat, manifest, langs, voice, lipsync, translator, brand, settings)
        by_manifest = {loaded.key: staleness.matrix(cat, loaded)}
    else:
        by_manifest = staleness.recorded_matrix(cat)
    if as_json:
        print(json.dumps({key: [c.to_dict() for c in cells if not only or c.state == only]
                          for key, cells in by_manifest.items()}))
        return
    if not by_manifest:
        print("no catalog runs recorded yet (dub catalog MANIFEST)", file=sys.stderr)
    lines = []
    for key, cells in by_manifest.items():
        counts: dict[str, int] = {}
        for c in cells:
            counts[c.state] = counts.get(c.state, 0) + 1
        summary = ", ".join(f"{counts[s]} {s}" for s in ONLY if s in counts) or "empty"
        lines.append(f"{key}: {summary}" + ("" if manifest else " (as recorded; give the manifest to see what is stale)"))
        lines += _matrix_lines(cells, only)
    sys.stdout.write("\n".join(lines) + "\n")


def _matrix_lines(cells: list, only: str | None) -> list[str]:
    if only:
        chosen = [c for c in cells if c.state == only]
        width = max((len(c.item) for c in chosen), default=4)
        return [f"  {c.item:<{width}}  {c.lang:<6} {c.state:<8} {c.why}".rstrip() for c in chosen]
    langs = list(dict.fromkeys(c.lang for c in cells))
    rows: dict[str, dict[str, str]] = {}
    for c in cells:
        rows.setdefault(c.item, {})[c.lang] = c.state
    width = max((len(item) for item in rows), default=4)
    lines = ["  " + " " * width + "  " + " ".join(f"{lang:<8}" for lang in langs)]
    lines += ["  " + f"{item:<{width}}  " + " ".join(f"{states.get(lang, ''):<8}" for lang in langs)
              for item, states in rows.items()]
    return [line.rstrip() for line in lines]


def export_cmd(
    manifest: Path = typer.Argument(..., help="The manifest whose deliveries to list."),
    out_file: Path = typer.Option(..., "--out", "-o", help="FILE.csv or FILE.json to write."),
    include_stale: bool = typer.Option(False, "--include-stale", help="Also list delivered files that are stale "
                                       "(column state says which)."),
    langs: Optional[str] = LANGS,
    voice: Optional[str] = VOICE, lipsync: Optional[str] = LIPSYNC, translator: Optional[str] = TRANSLATOR,
    brand: Optional[str] = BRAND, settings: Optional[List[str]] = SET,
    db: Optional[str] = DB,
) -> None:
    """A delivery manifest: item, language, file, duration, sha256, job, date of each delivered file."""
    from polydub import cache
    from polydub.batch import staleness
    from polydub.storage import Catalog
    from polydub.storage.catalog import iso

    suffix = out_file.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"--out {out_file}: give a .csv or .json file")
    from polydub.preflight import check_out_file

    check_out_file(out_file)  # an unwritable --out is refused now, not after the work
    config.use_database(db)
    cat = Catalog()
    loaded = judged(cat, manifest, langs, voice, lipsync, translator, brand, settings)
    _refuse_overwriting(out_file, loaded)
    judged_cells = staleness.assess(cat, loaded)
    wanted = ("done", "stale") if include_stale else ("done",)
    rows = []
    for key, cell in judged_cells.cells.items():
        if cell.state not in wanted:
            continue
        record = judged_cells.records[key]
        row = {"item": cell.item, "language": cell.lang, "file": record.path, "duration": record.duration,
               "sha256": record.sha256, "job": record.job_id, "date": iso(cell.delivered_at)}
        if include_stale:
            row["state"] = cell.state
        rows.append(row)
    if suffix == ".json":
        text = json.dumps(rows, indent=1)
    else:
        buffer = io.StringIO()
        columns = list(EXPORT_COLUMNS) + (["state"] if include_stale else [])
        writer = spreadsheet.writer(buffer)  # no cell a spreadsheet runs as a formula
        writer.writerow(columns)
        writer.writerows([row.get(c) for c in columns] for row in rows)
        text = buffer.getvalue()
    cache.write_text(out_file.expanduser().resolve(), text, shared=True)
    total = sum(1 for item in loaded.items for _ in item.langs)
    print(f"{out_file}: {len(rows)} of {total} item x language deliveries", file=sys.stderr)


def _refuse_overwriting(out_file: Path, loaded) -> None:
    """The delivery list never replaces the manifest, an input or a delivered file."""
    dest = out_file.expanduser().resolve()
    mine = {Path(loaded.path).resolve(): "the manifest"}
    for item in loaded.items:
        mine[Path(item.input).resolve()] = f"the input of item {item.id}"
    if dest in mine:
        raise InputError(f"--out {out_file} would replace {mine[dest]}")
    if dest.suffix.lower() in (".csv", ".json") and dest.exists() and dest.is_dir():
        raise InputError(f"--out {out_file} is a folder")
