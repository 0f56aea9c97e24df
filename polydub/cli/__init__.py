"""`dub` (also `polydub`): dub videos from the command line and read the catalog.

    dub ad.mp4 --langs es,fr,de
    dub catalog ads.csv | dub status ads.csv | dub export ads.csv --out delivery.csv
    dub list | dub show JOB | dub models list|pull|verify | dub server start|stop|status
    dub cache gc|verify

Exit status: 0 every language delivered; 1 some language failed (the others are still
delivered); 2 bad usage or bad input, found before any work starts.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import UnionType
from typing import Annotated, Callable, List, Optional, Union, get_args, get_origin

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions
from rich.console import Console
from rich.table import Table

from polydub import config
from polydub.cli.terms import glossary_app, tm_app
from polydub.errors import DubError, InputError
from polydub.options import FLAGS, DubOptions, names_a_path
from polydub.report import AWAITING_REVIEW, REJECTED

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Dub talking-head videos into many languages, lip-synced, with a catalog.")
models_app = typer.Typer(help="Model weights: list, pull, verify.", no_args_is_help=True)
server_app = typer.Typer(help="The local Prefect server that dub keeps between runs.", no_args_is_help=True)
cache_app = typer.Typer(help="The stage cache: remove leftovers, check every entry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(server_app, name="server")
app.add_typer(cache_app, name="cache")
app.add_typer(tm_app, name="tm")
app.add_typer(glossary_app, name="glossary")
console = Console(stderr=True)
out = Console()

OWN_FLAGS = ("out",)  # `--out` is the command line's own: with several inputs, one subfolder each
NEGATED_FLAGS = {"commercial": "--non-commercial"}  # a yes/no option's "no" flag, where not --no-NAME
FLAG_METAVARS = {"loudness": "LUFS"}
STAGES = ("probe", "separate", "transcribe", "translate", "synthesize", "mix", "lipsync", "assemble", "qa")
ICONS = {"running": "[yellow]…[/]", "done": "[green]✓[/]", "cached": "[cyan]=[/]",
         "skipped": "[dim]-[/]", "failed": "[red]✗[/]"}


class LiveTable:
    """A live table: one row per language (and one for the video), one column per stage."""

    def __init__(self, langs: list[str]):
        self.cells: dict[tuple[str, str], str] = {}
        self.rows = ["video", *langs]

    def __call__(self, stage: str, lang: str | None, status: str, note: str) -> None:
        if stage in ("reference",):
            return
        if lang is None and stage in ("lipsync", "translate", "synthesize", "mix"):
            return
        self.cells[(lang or "video", stage)] = status

    def __rich__(self) -> Table:
        table = Table(box=None, pad_edge=False)
        table.add_column("")
        for stage in STAGES:
            table.add_column(stage)
        for row in self.rows:
            table.add_row(row, *(ICONS.get(self.cells.get((row, s), ""), "") for s in STAGES))
        return table


def _summary(report) -> tuple[Table, list[str]]:
    """The end-of-run table of a `JobReport`, and notes saying why each backend was chosen
    (an up-to-date report: an earlier job whose deliveries nothing has changed since)."""
    title = f"job {report.job}: {report.status} in {report.seconds:.1f} s"
    if report.up_to_date:
        title = f"up to date: job {report.job} delivered these from the same inputs and options (--force redoes it)"
    table = Table(title=title)
    # sped: lines sped up to fit; over: lines that still overflow their slot (see the report)
    # qa: the measured QA report's verdict (its flags are listed below the table; its
    # duration check stands for a length column)
    for col in ("lang", "output", "voice", "sped", "over", "lip-sync", "qa", "time"):
        table.add_column(col, no_wrap=True)
    notes: list[str] = []
    if report.background:
        notes.append(f"  background: {report.background.method}"
                     + (f": {report.background.reason}" if report.background.reason else ""))
    if report.source_loudness_lufs is not None:
        levels = ", ".join(f"{lang} {e.loudness_lufs}" for lang, e in report.languages.items()
                           if e.loudness_lufs is not None)
        notes.append(f"  loudness (LUFS): source {report.source_loudness_lufs:.1f}"
                     + (f"; {levels}" if levels else ""))
    for lang, entry in report.languages.items():
        if entry.status == AWAITING_REVIEW:
            table.add_row(lang, "[yellow]awaiting review[/]", "", "", "", "", "", "")
            continue
        if not entry.done or entry.backends is None:
            table.add_row(lang, f"[red]{'rejected' if entry.status == REJECTED else 'failed'}[/]", "", "", "", "", "", "")
            notes.append(f"{lang}: {'rejected' if entry.status == REJECTED else 'failed'}: {entry.error or '?'}")
            continue
        backends = entry.backends
        seconds = sum(s.seconds or 0 for s in entry.stages.values() if s.status == "done")
        flags = (entry.qa or {}).get("flags") or []
        verdict = "" if not entry.qa or "lang" not in entry.qa else \
            ("ok" if not flags else f"[yellow]{len(flags)} flag{'s' * (len(flags) != 1)}[/]")
        table.add_row(lang, Path(entry.media).name, backends.voice,
                      str(entry.sped_up), str(entry.overflowing), backends.lipsync, verdict, f"{seconds:.1f}s")
        for what, reason in (("voice", backends.voice_reason), ("lip-sync", backends.lipsync_reason)):
            if reason:
                notes.append(f"  {lang} {what}: {reason}")
        if flags:  # what the QA report says to look at
            notes.append(f"  {lang} QA: {'; '.join(flags)}")
    if report.awaiting_review:
        from polydub.review import waiting_line

        notes.append(f"job {report.job}: {waiting_line(report)}")
    for stage in report.stages:  # a damaged cache entry that this run rebuilt
        if (stage.get("detail") or {}).get("rebuilt"):
            notes.append(f"  {stage['lang'] or 'video'} {stage['stage']}: cached result was damaged "
                         f"({stage['detail']['rebuilt']}); rebuilt")
    return table, notes


def option_flags(command: Callable) -> Callable:
    """Give `command` a flag per `DubOptions` field, before `--db`: its name, type, default
    and help come from the model, so adding an option is one edit there. Choices and
    bounds are the model's to check (`make_options`), with its one-line errors."""
    own = [p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = next(i for i, p in enumerate(own) if p.name == "db")
    generated = []
    for name, field in DubOptions.model_fields.items():
        if name in OWN_FLAGS:
            continue
        kind = flag_type(field.annotation)
        decl = f"{FLAGS[name]}/{NEGATED_FLAGS.get(name, '--no-' + FLAGS[name][2:])}" if kind is bool else FLAGS[name]
        metavar = FLAG_METAVARS.get(name) or ("PATH" if names_a_path(field.annotation) else None)
        option = typer.Option(field.default, decl, help=field.description or "", metavar=metavar)
        generated.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option,
                                           annotation=kind if field.default is not None else Optional[kind]))
    command.__signature__ = inspect.Signature(own[:at] + generated + own[at:])  # typer reads the signature
    return command


def worker_limit(pool: str) -> int:
    """Flow runs a worker takes at once by default: one per core (a dub keeps a core busy;
    more at once only queue for it), one per GPU on the GPU pool (one lip-sync per GPU)."""
    if "gpu" in pool:
        try:
            import torch

            return max(1, torch.cuda.device_count())
        except Exception:  # noqa: BLE001 - no CUDA build here: one at a time
            return 1
    return max(1, len(os.sched_getaffinity(0)))


def flag_type(annotation) -> type:
    """The command-line type of an option's annotation: bool, float or str (text, choices,
    and paths: a path option may be an object store URL, which `Path` would mangle)."""
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) in (Union, UnionType) \
        else [annotation]
    if names_a_path(annotation):
        return str
    if len(args) == 1 and get_origin(args[0]) is Annotated:
        return flag_type(get_args(args[0])[0])
    if len(args) == 1 and args[0] in (bool, float, int):
        return args[0]
    return str


@app.command("run")
@option_flags
def run_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Video or audio files to dub (paths, or "
                                       "URLs in an object store: s3://BUCKET/in/ad.mp4)."),
    langs: str = typer.Option(..., "--langs", "-l", help="Target languages, e.g. es,fr,de (ISO 639-1)."),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="Output folder (default ./dubbed/NAME/; "
                                          "with several inputs, one subfolder each), or a folder URL in an "
                                          "object store (s3://BUCKET/out/ad/).", metavar="PATH"),
    db: Optional[str] = typer.Option(None, "--db", help="Catalog URL (default DUB_DATABASE_URL or ~/.polydub/catalog.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print the job reports as JSON."),
    force: bool = typer.Option(False, "--force", help="Run the job even when every language is already "
                               "delivered from the same inputs and options, its files intact."),
    **flags,  # one per DubOptions field: see option_flags
) -> None:
    """Dub INPUT... into every language of --langs (the default command: `dub ad.mp4 --langs es,fr`)."""
    from polydub.job import check_backends, plan_job
    from polydub.options import make_options
    from polydub.storage import objects

    config.use_database(db)
    plans = []
    try:
        options = make_options(**flags)
        for path in inputs:
            folder = (objects.join(out_dir, Path(objects.name_of(path)).stem) if len(inputs) > 1 else out_dir) \
                if out_dir else None
            plans.append(plan_job(path, langs, options, out=folder))
        _refuse_shared_folders(plans)
        for plan in plans:
            check_backends(plan)
        from polydub.preflight import check_job

        check_job(plans, db)  # --out, cache and catalog usable, nothing of the user's overwritten
    except InputError as exc:
        _record_refusal([str(p) for p in inputs], langs, str(exc))
        raise

    # Asked of the catalog before Prefect is imported: an unchanged job costs no flow run.
    judged = {plan.input: _judge(plan) for plan in plans}
    reports = []
    for plan in plans:
        delivered = None if force else judged[plan.input].delivered
        if delivered is not None:
            delivered.up_to_date = True
            reports.append(delivered)
            if not as_json:
                _print_summary(delivered)
    plans = [plan for plan in plans if force or judged[plan.input].delivered is None]
    if plans:
        reports += _run_flows(plans, options, judged, as_json)
    if as_json:
        printed = [r.to_json() for r in reports]
        out.print_json(json.dumps(printed if len(printed) > 1 else printed[0], default=str))
    failed = any(r.status not in ("done", AWAITING_REVIEW) for r in reports)  # awaiting review: this part is done
    if any(r.not_recorded for r in reports):
        from polydub import crash

        crash.exit_within(crash.LOST_SERVER_EXIT_S, int(failed))
    if failed:
        raise typer.Exit(1)


def _judge(plan):
    """The catalog's view of a planned job (`staleness.SingleDub`)."""
    from polydub.batch import staleness
    from polydub.storage import shared_catalog

    return staleness.judge_single(shared_catalog(config.database_url()), plan)


def _print_table(columns: tuple[str, ...], rows, title: str | None = None) -> None:
    """A table of text cells on stdout (`dub list`, `dub show`, `dub models list`)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _print_summary(report) -> None:
    table, notes = _summary(report)
    console.print(table)
    for note in notes:
        print(note, file=sys.stderr)  # whole lines: paths must stay copyable
    console.print(f"outputs in {report.out_dir}; report {Path(report.report or '').name}")


def _run_flows(plans, options, judged, as_json: bool) -> list:
    """Run each plan's dub_video flow; record its deliveries; their reports."""
    from polydub.batch import staleness
    from polydub.storage import shared_catalog

    t0 = time.perf_counter()
    from polydub import server

    # INFO: each stage's line reaches the run's log in the UI; the console shows only our own
    # table (one_line_errors below)
    ui_level = os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    server.run_settings()
    mode = server.ensure_api()
    from rich.live import Live

    from polydub import crash, progress
    from polydub.errors import JobRefused
    from polydub.flows.dub import dub_video
    from polydub.flows.logs import one_line_errors, run_logs_at
    from polydub.flows.outcome import finished_despite, report_of

    one_line_errors(logging.CRITICAL)  # the summary below says what failed, in one line each
    run_logs_at(ui_level)
    console.print(f"[dim]prefect: {mode} server; ready to run in {time.perf_counter() - t0:.1f} s "
                  f"(server check and imports)[/]")
    reports = []
    for plan in plans:
        view = LiveTable(plan.langs)
        remove = progress.listen(view)
        started = time.time()
        try:
            with Live(view, console=console, refresh_per_second=4, transient=not console.is_terminal):
                # What planning settled (the folder, the transcript and its language, found by
                # listening when sidecars were ambiguous) goes along, so the flow's own checks
                # do not settle it again.
                settled = {"out": plan.out_dir, "source_lang": plan.options.source_lang, "transcript": plan.options.transcript}
                state = dub_video(plan.source, plan.langs, options.model_copy(update=settled), return_state=True)
            result = state.result(raise_on_failure=False)
            if isinstance(result, JobRefused):  # refused by the flow's own checks
                raise InputError(str(result))
            report = report_of(result)
            if report is None:
                raise DubError(f"the run ended without a job report: {state.name}: {state.message or result}")
        except DubError:
            raise
        except Exception as exc:  # e.g. the Prefect server died: the work may still be complete
            report = finished_despite(exc, started)
        finally:
            remove()
        reports.append(report)
        if report.job is not None:  # what the next unchanged run compares itself with
            judge, cat = judged[plan.input], shared_catalog(config.database_url())
            staleness.record_deliveries(cat, judge.key, judge.item, plan.langs, judge.recipes, judge.fingerprints,
                                        report)
            if not report.not_recorded and state.is_final() and state.state_details.flow_run_id:
                crash.note_settled(cat, state.state_details.flow_run_id)  # `dub list` need not ask
        if not as_json:
            _print_summary(report)
        elif report.awaiting_review:  # the JSON says what waits; how to go on is for the person
            from polydub.review import waiting_line

            print(f"job {report.job}: {waiting_line(report)}", file=sys.stderr)
        if report.not_recorded:
            print(f"dub: warning: {report.not_recorded}", file=sys.stderr)
    return reports


def _record_refusal(inputs: list[str], langs: str, message: str) -> None:
    """A job refused before work still reaches the catalog, with why (best effort: the
    catalog itself may be what is wrong)."""
    try:
        from polydub.storage import Catalog

        Catalog().create_job(None, [c.strip() for c in langs.split(",") if c.strip()], {"inputs": inputs}, "",
                             input_path=inputs[0] if len(inputs) == 1 else ", ".join(inputs)[:4000],
                             status="rejected", error=message)
    except Exception:  # noqa: BLE001 - the one-line error below is what matters
        pass


def _refuse_shared_folders(plans) -> None:
    """Two inputs delivering into one folder would overwrite each other's files."""
    seen: dict[tuple[str, str], str] = {}
    for plan in plans:
        key = (plan.out_dir, plan.name)
        if key in seen and seen[key] != plan.input:
            raise InputError(f"{seen[key]} and {plan.input} would both deliver {plan.name}.* into {plan.out_dir}; "
                             f"dub them in separate runs, each with its own --out")
        seen[key] = plan.input


def _catalog(db: str | None):
    from polydub.storage import Catalog

    return Catalog(db)


def _reaped(catalog):
    """The catalog, its jobs whose process is gone marked interrupted first, and Prefect told
    how runs ended that it missed."""
    from polydub.crash import reap, settle_flow_runs

    for note in reap(catalog) + settle_flow_runs(catalog):
        print(f"dub: warning: {note}", file=sys.stderr)
    return catalog


@app.command("list")
def list_cmd(db: Optional[str] = typer.Option(None, "--db"), as_json: bool = typer.Option(False, "--json"),
             limit: int = typer.Option(50, "--limit", min=1, max=10000),
             status: Optional[str] = typer.Option(None, "--status", help="Only jobs in this state (done, partial, "
                                                  "failed, running, interrupted, cancelled, crashed, rejected)."),
             input: Optional[str] = typer.Option(None, "--input", help="Only jobs whose input path contains this."),
             since: Optional[str] = typer.Option(None, "--since", help="Only jobs created since: 30m, 6h, 2d or an "
                                                 "ISO date/time (UTC).")) -> None:
    """Jobs in the catalog, newest first."""
    from polydub.storage.tables import JOB_STATUSES

    if status and status not in JOB_STATUSES:
        raise InputError(f"--status must be one of {', '.join(JOB_STATUSES)}, not {status!r}")
    jobs = _reaped(_catalog(db)).list_jobs(limit, status=status, input=input, since=_since(since) if since else None)
    if as_json:
        out.print_json(json.dumps(jobs, default=str))
        return
    _print_table(("job", "source", "languages", "status", "created", "outputs"),
                 ((str(j["id"]), Path(j["source"] or "?").name, ",".join(j["langs"]), j["status"],
                   str(j["created_at"])[:19], str(j["n_outputs"])) for j in jobs))


def _since(text: str):
    """'30m', '6h', '2d' ago, or an ISO date/time (UTC when it has no offset)."""
    import re
    from datetime import datetime, timedelta, timezone

    match = re.fullmatch(r"(\d+)\s*([mhd])", text.strip())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        try:
            return datetime.now(timezone.utc) - timedelta(**{unit: int(match.group(1))})
        except OverflowError:  # before the year 1
            raise InputError(f"--since {text!r}: too long ago; give 30m, 6h, 2d or an ISO date such as "
                             f"2026-11-28") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"--since {text!r}: give 30m, 6h, 2d or an ISO date such as 2026-11-28") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@app.command("show")
def show_cmd(job: int = typer.Argument(...), db: Optional[str] = typer.Option(None, "--db"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """One job: its input, its Prefect run, every stage run, every output and every review."""
    from polydub.server import flow_run_url

    from polydub.storage import reviews

    catalog = _reaped(_catalog(db))
    info = catalog.show_job(job)
    info["flow_run_url"] = flow_run_url(info["flow_run_id"]) if info.get("flow_run_id") else None
    info["reviews"] = [r.to_dict() for r in reviews.of_job(catalog, job)]
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    source = info.get("input") or (info["source"] or {}).get("path", "?")
    out.print(f"job {info['id']}: {info['status']}  input {source}  langs {','.join(info['langs'])}")
    if info.get("error"):
        out.print(f"error: {info['error']}", soft_wrap=True)
    if info.get("flow_run_url") or info.get("flow_run_id"):
        via = f" (deployment {info['deployment']})" if info.get("deployment") else ""
        out.print(f"prefect run: {info['flow_run_url'] or info['flow_run_id']}{via}", soft_wrap=True)
    def stage_row(s: dict) -> tuple[str, ...]:
        rebuilt = (s.get("detail") or {}).get("rebuilt")  # a damaged cached result this run replaced
        return (s["stage"], s["lang"] or "", s["status"], s["backend"] or "",
                f"{s['seconds']:.2f}" if s["seconds"] is not None else "",
                s["error"] or (f"rebuilt: {rebuilt}" if rebuilt else ""))

    _print_table(("stage", "lang", "status", "backend", "seconds", "error"), map(stage_row, info["stages"]),
                 title="stages")
    for o in info["outputs"]:
        out.print(f"{o['kind']:10} {o['lang'] or '':6} {o['path']}", soft_wrap=True)
    for s in info["stages"]:  # the measured QA report's verdict per language (the report has the numbers)
        if s["stage"] == "qa" and (s.get("detail") or {}).get("verdict"):
            out.print(f"qa {s['lang']}: {s['detail']['verdict']}", soft_wrap=True)
    for r in info["reviews"]:  # who decided what, and what they changed
        decided = f" by {r['decided_by']} at {r['decided_at']}" if r["decided_by"] else ""
        out.print(f"review {r['kind']} {r['lang']}: {r['status']}{decided}"
                  + (f": {r['reason']}" if r["reason"] else "")
                  + (f"; {len(r['changes'])} of {r['lines']} lines edited" if r["changes"] else ""), soft_wrap=True)
        for change in r["changes"]:
            out.print(f"  line {change['line']}: {change['before']!r} -> {change['after']!r}", soft_wrap=True)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Known models, their licence (and whether it allows commercial use), and whether they
    are present in the models folder."""
    from polydub import weights

    rows = weights.list_models()
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    commercial = {True: "yes", False: "no", None: "unknown"}
    _print_table(("model", "licence", "commercial", "present", "size", "path"),
                 ((r["name"], r["licence"], commercial[r["commercial"]], "yes" if r["present"] else "no",
                   str(r.get("size") or ""), str(r["path"])) for r in rows))


@models_app.command("pull")
def models_pull(names: List[str] = typer.Argument(..., help="Model names (see dub models list).")) -> None:
    """Download models into the models folder (resumable, checksummed)."""
    from polydub import weights

    for name in names:
        if name not in weights.REGISTRY:
            raise InputError(f"unknown model {name!r}; known: {', '.join(weights.REGISTRY)}")
    for name in names:
        path = weights.pull(name, progress=lambda f, done, total: console.print(
            f"{name}: {f} {done / 1e6:.1f}/{(total or 0) / 1e6:.1f} MB", end="\r"))
        console.print(f"{name}: {path}")


@models_app.command("verify")
def models_verify() -> None:
    """Load every present model strictly and report."""
    from polydub import weights

    failed = False
    rows = weights.verify_all()
    if not rows:
        out.print(f"no models in {config.models_dir()} (dub models pull NAME)")
    for row in rows:
        mark = "ok" if row["ok"] else "FAILED"
        failed |= not row["ok"]
        out.print(f"{row['name']:16} {mark:7} {row['message']}", soft_wrap=True, markup=False)  # one line a model
    if failed:
        raise typer.Exit(1)


@server_app.command("start")
def server_start() -> None:
    """Start the kept local Prefect server (dub starts it on demand anyway)."""
    from polydub import server

    info = server.start()
    out.print(f"{'started' if info['started'] else 'already running'}: {info['url']} (pid {info['pid']})")


@server_app.command("stop")
def server_stop() -> None:
    from polydub import server

    out.print("stopped" if server.stop() else "no server was running")


@server_app.command("status")
def server_status() -> None:
    from polydub import server

    info = server.status()
    out.print(f"running: {info['url']} (pid {info['pid']})" if info else "not running")


@cache_app.command("gc")
def cache_gc(older_than: float = typer.Option(60.0, "--older-than",
                                              help="Minutes untouched before a leftover goes.")) -> None:
    """Remove what killed runs left in the cache: temporary folders and partial files here,
    and in a bucket (DUB_STORAGE_URL) temporary keys and files no entry's record names."""
    from polydub import cache
    from polydub.storage import bucket_cache, objects

    swept = cache.sweep(config.cache_dir(), older_than=older_than * 60)
    store = objects.shared_store()
    removed, freed = list(swept.removed), swept.bytes
    if store is not None:
        store.check()
        in_store = bucket_cache.sweep(store, older_than=older_than * 60)
        removed, freed = removed + in_store.removed, freed + in_store.bytes
    for path in removed:
        out.print(f"removed {path}", soft_wrap=True, markup=False)
    out.print(f"{len(removed)} leftovers removed, {freed / 1e6:.1f} MB freed")


@cache_app.command("verify")
def cache_verify(fix: bool = typer.Option(False, "--fix",
                                           help="Remove damaged entries (rebuilt when next needed).")) -> None:
    """Check the size and digest of every cached file (in the bucket too, when DUB_STORAGE_URL
    names one); exit 1 on damage unless --fix."""
    from polydub import cache
    from polydub.storage import bucket_cache, objects

    store = objects.shared_store()
    if store is not None:
        store.check()
        checked, problems = bucket_cache.verify(store, fix=fix)
    else:
        checked, problems = cache.verify_all(config.cache_dir(), fix=fix)
    for problem in problems:
        print(f"{'removed' if fix else 'damaged'}: {problem.path}: {problem.reason}")
    out.print(f"{checked} entries checked, {len(problems)} damaged{' and removed' if fix and problems else ''}")
    if problems and not fix:
        raise typer.Exit(1)


@app.command("worker")
def worker_cmd(pool: str = typer.Option("polydub-cpu", "--pool", help="polydub-cpu or polydub-gpu (see prefect.yaml)."),
               limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Flow runs at once on this worker "
                                                   "(default: the machine's cores; its GPUs for polydub-gpu; 0: no limit).")
               ) -> None:
    """Run a Prefect worker that picks up polydub's deployments (creates the pool if missing).
    SIGTERM or Ctrl-C lets its runs finish (DUB_WORKER_DRAIN seconds), then cancels them."""
    from polydub import config, server

    limit = worker_limit(pool) if limit is None else limit
    config.worker_drain_s(), config.run_silent_s()  # a bad setting is one line, before the API
    server.ensure_api()  # an API that does not answer is the one line a refused worker prints
    print(f"dub worker: pool {pool}, " + (f"at most {limit} runs at once" if limit else "no limit on runs at once"),
          file=sys.stderr, flush=True)
    server.run_settings()  # inherited by the flow runs the worker starts
    # Prefect's default polls for new runs every 10 s: half of a short dub's start-up.
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", str(WORKER_POLL_S))
    from polydub.cli import worker

    raise typer.Exit(worker.serve(pool, limit))


from polydub.cli import batch  # noqa: E402 - a manifest's commands, in a module of their own

app.command("catalog")(batch.catalog_cmd)
app.command("status")(batch.status_cmd)
app.command("export")(batch.export_cmd)

from polydub.cli import review  # noqa: E402 - a person's decision on a job's script

app.command("review")(review.review_cmd)
app.command("approve")(review.approve_cmd)
app.command("reject")(review.reject_cmd)

# What dub keeps (catalog, cache, Prefect's state) holds job data and is readable by its
# owner only; the umask is inherited by the Prefect server and workers. What it delivers
# (the output folder, exports) follows the user's own umask (`cache.place(shared=True)`).
FILE_MODE_MASK = 0o077
EXIT_GRACE_S = 10.0  # after Ctrl-C, how long threads get to wind down before exit
WORKER_POLL_S = 2  # seconds between a worker's checks for new runs
PROBLEMS_SHOWN = 100  # a manifest's problems printed, one line each
COMMANDS = {"run", "list", "show", "models", "server", "worker", "cache", "catalog", "status", "export", "tm",
            "glossary", "review", "approve", "reject"}


def main(argv: list[str] | None = None) -> int:
    from polydub import crash, redact

    os.environ.setdefault(config.USER_UMASK_ENV, f"{os.umask(FILE_MODE_MASK):03o}")  # deliverables follow it
    redact.install()
    crash.install_interrupt_handler()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("--help", "-h"):
        args.insert(0, "run")  # `dub ad.mp4 --langs es` is `dub run ad.mp4 --langs es`
    command = typer.main.get_command(app)
    try:
        rc = command.main(args, prog_name="dub", standalone_mode=False)
        if rc == 130:  # typer's form of KeyboardInterrupt
            return _interrupted()
    except click_exceptions.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help(), file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _interrupted()
    except click_exceptions.ClickException as exc:  # bad usage
        _error(exc.format_message())
        return 2
    except InputError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]  # a manifest: every row's problem
        for problem in problems[:PROBLEMS_SHOWN]:
            _error(problem)
        if len(problems) > PROBLEMS_SHOWN:
            _error(f"... and {len(problems) - PROBLEMS_SHOWN} more problems")
        return 2
    except DubError as exc:
        _error(str(exc))
        return 1
    except OSError as exc:  # a folder the environment refuses that no check foresaw: still one line
        from polydub.cache import os_reason

        _error(f"{exc.filename}: {os_reason(exc)}" if exc.filename else f"{type(exc).__name__}: {os_reason(exc)}")
        return 1
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:  # the catalog failing in a way no check foresaw (a lost connection): one line
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        from polydub.errors import one_line

        _error(f"the catalog: {one_line(getattr(exc, 'orig', None) or exc)}")
        return 1
    return rc if isinstance(rc, int) else 0


def _interrupted() -> int:
    """Ctrl-C: say so and leave with 130, even if a stage thread is still winding down."""
    from polydub.crash import exit_within, say_interrupted

    say_interrupted()
    exit_within(EXIT_GRACE_S, 130)
    return 130


def _error(message: str) -> None:
    """One line on stderr, whatever the terminal width; secrets masked."""
    from polydub.redact import redact

    print(f"dub: error: {' '.join(redact(message).split())}", file=sys.stderr)
