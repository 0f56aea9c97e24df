"""`dub` (also `polydub`): dub videos from the command line and read the catalog.

    dub ad.mp4 --langs es,fr,de
    dub list | dub show JOB | dub models list|pull|verify | dub server start|stop|status

Exit status: 0 every language delivered; 1 some language failed (the others are still
delivered); 2 bad usage or bad input, found before any work starts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions
from rich.console import Console
from rich.table import Table

from polydub.errors import DubError, InputError
from polydub.transcribe import DEFAULT_MODEL as DEFAULT_ASR_MODEL

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Dub talking-head videos into many languages, lip-synced, with a catalog.")
models_app = typer.Typer(help="Model weights: list, pull, verify.", no_args_is_help=True)
server_app = typer.Typer(help="The local Prefect server that dub keeps between runs.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(server_app, name="server")
console = Console(stderr=True)
out = Console()

STAGES = ("probe", "transcribe", "translate", "synthesize", "mix", "lipsync", "assemble")
ICONS = {"running": "[yellow]…[/]", "done": "[green]✓[/]", "cached": "[cyan]=[/]",
         "skipped": "[dim]-[/]", "failed": "[red]✗[/]"}


def _validate(plan) -> None:
    """Backends the plan needs must be usable: checked before any work starts."""
    from polydub.lipsync import lipsync_decision
    from polydub.tts import parse_voice_spec, select_voice

    parse_voice_spec(plan.voice)
    if not plan.voice.startswith("coqui"):
        for lang in plan.langs:  # every language needs a voice: espeak-ng may lack one
            select_voice(plan.voice, lang)
    if not plan.transcript:
        from polydub.transcribe import locate_model

        locate_model(plan.asr_model)
    if any(lang not in plan.translations for lang in plan.langs):
        from polydub.translate import make_translator

        make_translator(plan.translator)
    ok, reason = lipsync_decision(plan.lipsync, plan.has_video)  # also checks lip-sync settings
    if plan.lipsync == "on" and not ok:
        raise InputError(f"--lipsync on: lip-sync cannot run: {reason}")


class Progress:
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


def _summary(report: dict) -> tuple[Table, list[str]]:
    """The end-of-run table, and notes saying why each backend was chosen."""
    table = Table(title=f"job {report['job']}: {report['status']} in {report['seconds']:.1f} s")
    # sped: lines sped up to fit; over: lines that still overflow their slot (see the report)
    for col in ("lang", "output", "length", "voice", "sped", "over", "lip-sync", "time"):
        table.add_column(col, no_wrap=True)
    notes: list[str] = []
    for lang, entry in report["languages"].items():
        if entry["status"] != "done":
            table.add_row(lang, "[red]failed[/]", "", "", "", "", "", "")
            notes.append(f"{lang}: failed: {entry.get('error', '?')}")
            continue
        path = entry["outputs"].get("mp4") or entry["outputs"].get("m4a")
        backends = entry["backends"]
        seconds = sum(s["seconds"] or 0 for s in entry["stages"].values() if s["status"] == "done")
        table.add_row(lang, Path(path).name, f"{report['duration']:.1f}s", backends["voice"],
                      str(entry["sped_up"]), str(entry["overflowing"]), backends["lipsync"], f"{seconds:.1f}s")
        for what, key in (("voice", "voice_reason"), ("lip-sync", "lipsync_reason")):
            note = f"  {lang} {what}: {backends[key]}" if backends.get(key) else None
            if note:
                notes.append(note)
    return table, notes


@app.command("run")
def run_cmd(
    inputs: List[Path] = typer.Argument(..., metavar="INPUT...", help="Video or audio files to dub."),
    langs: str = typer.Option(..., "--langs", "-l", help="Target languages, e.g. es,fr,de (ISO 639-1)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default ./dubbed/NAME/)."),
    source_lang: Optional[str] = typer.Option(None, "--source-lang", help="Language spoken in the input."),
    transcript: Optional[Path] = typer.Option(None, "--transcript", help="Approved transcript (SRT/VTT)."),
    translations: Optional[Path] = typer.Option(None, "--translations", help="Folder of approved translations NAME.<lang>.srt."),
    voice: str = typer.Option("auto", "--voice", help="auto | espeak[:VOICE] | coqui:MODEL_OR_PATH"),
    lipsync: str = typer.Option("auto", "--lipsync", help="auto | on | off"),
    translator: str = typer.Option("google", "--translator", help="google | deepl | microsoft | ... | local:MODEL"),
    asr_model: str = typer.Option(DEFAULT_ASR_MODEL, "--asr-model", help="Whisper model name or checkpoint path."),
    glossary: Optional[Path] = typer.Option(None, "--glossary", help="Terms kept verbatim or forced (TSV/CSV/JSON)."),
    max_speed: float = typer.Option(1.3, "--max-speed", help="Cap on speeding up a line (pitch preserved)."),
    loudness: float = typer.Option(-23.0, "--loudness", help="Integrated loudness target, LUFS."),
    consent: Optional[str] = typer.Option(None, "--consent", help="Consent under which the voice/lips are changed (recorded)."),
    db: Optional[str] = typer.Option(None, "--db", help="Catalog URL (default DUB_DATABASE_URL or ~/.polydub/catalog.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print the job reports as JSON."),
) -> None:
    """Dub INPUT... into every language of --langs (the default command: `dub ad.mp4 --langs es,fr`)."""
    from polydub.job import plan_job

    if len(inputs) > 1 and out_dir:
        out_dirs = [out_dir / p.stem for p in inputs]
    else:
        out_dirs = [out_dir] * len(inputs)
    plans = [plan_job(p, langs, o, source_lang, transcript, translations, voice, lipsync, translator,
                      asr_model, glossary, max_speed, loudness, consent)
             for p, o in zip(inputs, out_dirs)]
    for plan in plans:
        _validate(plan)
    if db:
        os.environ["DUB_DATABASE_URL"] = db

    t0 = time.perf_counter()
    from polydub import server

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # our table says what happened
    mode = server.ensure_api()
    from rich.live import Live

    from polydub import crash, progress
    from polydub.flows.dub import dub_video

    crash.quiet_console()

    console.print(f"[dim]prefect: {mode} server; ready to run in {time.perf_counter() - t0:.1f} s "
                  f"(server check and imports)[/]")
    reports = []
    for plan in plans:
        view = Progress(plan.langs)
        remove = progress.listen(view)
        started = time.time()
        try:
            with Live(view, console=console, refresh_per_second=4, transient=not console.is_terminal):
                report = dub_video(plan.input, plan.langs, plan.out_dir, plan.source_lang, plan.transcript,
                                   str(translations) if translations else None, plan.voice, plan.lipsync,
                                   plan.translator, plan.asr_model, plan.glossary, plan.max_speed,
                                   plan.loudness, plan.consent)  # --db travels in the environment:
                # a flow parameter is stored (and shown) by Prefect, password and all
        except Exception as exc:  # e.g. the Prefect server died: the work may still be complete
            report = crash.finished_despite(exc, Path(plan.out_dir) / f"{plan.name}.report.json", started)
        finally:
            remove()
        reports.append(report)
        if not as_json:
            table, notes = _summary(report)
            console.print(table)
            for note in notes:
                print(note, file=sys.stderr)  # whole lines: paths must stay copyable
            console.print(f"outputs in {report['out_dir']}; report {Path(report.get('report', '')).name}")
        if report.get("not_recorded"):
            print(f"dub: warning: {report['not_recorded']}", file=sys.stderr)
    if as_json:
        out.print_json(json.dumps(reports if len(reports) > 1 else reports[0], default=str))
    failed = any(r["status"] != "done" for r in reports)
    if any(r.get("not_recorded") for r in reports):
        crash.exit_within(EXIT_GRACE_S, int(failed))
    if failed:
        raise typer.Exit(1)


def _catalog(db: str | None):
    from polydub.storage import Catalog

    return Catalog(db)


def _reaped(catalog):
    """The catalog, its jobs whose process is gone marked interrupted first."""
    from polydub.crash import reap

    for note in reap(catalog):
        print(f"dub: warning: {note}", file=sys.stderr)
    return catalog


@app.command("list")
def list_cmd(db: Optional[str] = typer.Option(None, "--db"), as_json: bool = typer.Option(False, "--json"),
             limit: int = typer.Option(50, "--limit")) -> None:
    """Jobs in the catalog, newest first."""
    jobs = _reaped(_catalog(db)).list_jobs(limit)
    if as_json:
        out.print_json(json.dumps(jobs, default=str))
        return
    table = Table()
    for col in ("job", "source", "languages", "status", "created", "outputs"):
        table.add_column(col)
    for j in jobs:
        table.add_row(str(j["id"]), Path(j["source"]).name, ",".join(j["langs"]), j["status"],
                      str(j["created_at"])[:19], str(j["n_outputs"]))
    out.print(table)


@app.command("show")
def show_cmd(job: int = typer.Argument(...), db: Optional[str] = typer.Option(None, "--db"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """One job: its source, every stage run and every output."""
    info = _reaped(_catalog(db)).show_job(job)
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    out.print(f"job {info['id']}: {info['status']}  source {info['source']['path']}  langs {','.join(info['langs'])}")
    table = Table(title="stages")
    for col in ("stage", "lang", "status", "backend", "seconds", "error"):
        table.add_column(col)
    for s in info["stages"]:
        table.add_row(s["stage"], s["lang"] or "", s["status"], s["backend"] or "",
                      f"{s['seconds']:.2f}" if s["seconds"] is not None else "", s["error"] or "")
    out.print(table)
    for o in info["outputs"]:
        out.print(f"{o['kind']:10} {o['lang'] or '':6} {o['path']}")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Known models and whether they are present in the models folder."""
    from polydub import models

    rows = models.list_models()
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table()
    for col in ("model", "present", "size", "path"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "yes" if r["present"] else "no", str(r.get("size") or ""), str(r["path"]))
    out.print(table)


@models_app.command("pull")
def models_pull(names: List[str] = typer.Argument(..., help="Model names (see dub models list).")) -> None:
    """Download models into the models folder (resumable, checksummed)."""
    from polydub import models

    for name in names:
        if name not in models.REGISTRY:
            raise InputError(f"unknown model {name!r}; known: {', '.join(models.REGISTRY)}")
    for name in names:
        path = models.pull(name, progress=lambda f, done, total: console.print(
            f"{name}: {f} {done / 1e6:.1f}/{(total or 0) / 1e6:.1f} MB", end="\r"))
        console.print(f"{name}: {path}")


@models_app.command("verify")
def models_verify() -> None:
    """Load every present model strictly and report."""
    from polydub import config, models

    failed = False
    rows = models.verify_all()
    if not rows:
        out.print(f"no models in {config.models_dir()} (dub models pull NAME)")
    for row in rows:
        mark = "ok" if row["ok"] else "FAILED"
        failed |= not row["ok"]
        out.print(f"{row['name']:16} {mark:7} {row['message']}")
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


@app.command("worker")
def worker_cmd(pool: str = typer.Option("polydub-cpu", "--pool", help="polydub-cpu or polydub-gpu (see prefect.yaml)."),
               limit: Optional[int] = typer.Option(None, "--limit", help="Flow runs at once on this worker.")) -> None:
    """Run a Prefect worker that picks up polydub's deployments (creates the pool if missing)."""
    from polydub import server

    server.ensure_api()
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if limit:
        args += ["--limit", str(limit)]
    os.execv(sys.executable, args)  # the worker replaces this process: signals reach it directly


# What dub writes (catalog, cache, Prefect's state, deliverables) holds job data and
# is readable by its owner only; the umask is inherited by the Prefect server and workers.
FILE_MODE_MASK = 0o077
EXIT_GRACE_S = 10.0  # after Ctrl-C or losing Prefect, how long threads get to wind down before exit
COMMANDS = {"run", "list", "show", "models", "server", "worker"}


def main(argv: list[str] | None = None) -> int:
    from polydub import crash, redact

    os.umask(FILE_MODE_MASK)
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
        _error(str(exc))
        return 2
    except DubError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        return _interrupted()
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


if __name__ == "__main__":
    sys.exit(main())
