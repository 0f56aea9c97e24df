"""`dub review`, `dub approve`, `dub reject`: a person's decision on a job's script.

    dub ad.mp4 --langs es,fr --review script   # translates, then waits: nothing is voiced
    dub review 7 --out review/                 # review/ad.es.srt, review/ad.fr.srt to read and edit
    dub approve 7 --lang es --script review/ad.es.srt
    dub reject 7 --lang fr --why "tone is off"  # the job goes on once no language waits

Every check (the job waits, the language waits, the edited file keeps every line, time and
speaker, no line empty) runs before anything is recorded: a refusal changes nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from polydub import config
from polydub.errors import InputError

LANG = typer.Option(None, "--lang", "-l", help="Only this language (default: every language awaiting review).")
DB = typer.Option(None, "--db", help="Catalog URL (default DUB_DATABASE_URL or ~/.polydub/catalog.db).")
WHY_MAX = 2000  # characters of a rejection's reason


def review_cmd(
    job: int = typer.Argument(..., help="The job awaiting review (dub list)."),
    out_path: Optional[Path] = typer.Option(None, "--out", "-o", help="FILE.srt (one language) or a folder: "
                                            "NAME.<lang>.srt per language, to edit (scripts awaiting review)."),
    lang: Optional[str] = LANG, db: Optional[str] = DB,
    as_json: bool = typer.Option(False, "--json", help="Print what awaits review as JSON."),
) -> None:
    """What awaits review: a script's lines, written as SRT to edit (speakers as [Name]),
    with each line's source, translation and the speed its slot asks; a delivered
    language's files and QA flags."""
    from polydub.storage import Catalog, reviews

    config.use_database(db)
    cat = Catalog()
    waiting = reviews.awaiting(cat, job, _lang(lang))
    scripts = [r for r in waiting if r.kind == reviews.SCRIPT]
    params = cat.show_job(job)["params"]
    targets = _script_files(params.get("name") or f"job-{job}", scripts, out_path) if scripts else {}
    if as_json:
        print(json.dumps({r.lang: {"kind": r.kind, **({"file": str(targets[r.lang]), "lines": r.lines}
                                                      if r.kind == reviews.SCRIPT else r.detail or {})}
                          for r in waiting}, ensure_ascii=False))
        return
    from polydub.cli import _print_table

    speed_cap = params.get("max_speed")
    for r in scripts:
        _print_table(("#", "time", "speaker", "source", "translation", "speed"),
                     ((str(n), f"{ln['start']:.2f}-{ln['end']:.2f}", ln.get("speaker") or "", ln["source"], ln["text"],
                       f"{ln['speed']:.2f}x" + (" (over the cap)" if speed_cap and ln["speed"] > speed_cap else ""))
                      for n, ln in enumerate(r.lines, 1)),
                     title=f"job {job} {r.lang}: {len(r.lines)} lines")
        print(f"{r.lang}: {targets[r.lang]}", file=sys.stderr)
    for r in waiting:
        if r.kind == reviews.FINAL:  # the result: watch the files, read the flags
            detail = r.detail or {}
            print(f"job {job} {r.lang}: the delivered result awaits approval", file=sys.stderr)
            for kind, path in (detail.get("outputs") or {}).items():
                print(f"  {kind}: {path}", file=sys.stderr)
            for flag in detail.get("qa_flags") or []:
                print(f"  QA: {flag}", file=sys.stderr)
            if detail.get("timeline"):
                print(f"  timeline: {detail['timeline']}", file=sys.stderr)
    edit = "edit the text only, then: " if scripts else ""
    print(f"{edit}dub approve {job}" + (f" --lang {lang}" if lang else "") + (" [--script FILE.srt]" if scripts else "")
          + f"  or  dub reject {job} --why TEXT", file=sys.stderr)


def _script_files(name: str, scripts: list, out_path: Path | None) -> dict:
    """Write each script awaiting review to `out_path` (FILE.srt for one, else a folder of
    NAME.<lang>.srt, NAME the job's); never over a file that is there. {lang: path}."""
    from polydub.review import to_review_srt

    if out_path is None:
        raise InputError(f"--out FILE.srt|DIR: where to write the script{'s' * (len(scripts) > 1)} awaiting review "
                         f"({', '.join(r.lang for r in scripts)})")
    if out_path.suffix.lower() == ".srt":
        if len(scripts) > 1:
            raise InputError(f"--out {out_path} holds one language; {len(scripts)} scripts await review "
                             f"({', '.join(r.lang for r in scripts)}): give --lang or a folder")
        targets = {scripts[0].lang: out_path}
    else:
        targets = {r.lang: out_path / f"{name}.{r.lang}.srt" for r in scripts}
    for path in targets.values():
        if path.exists() or path.is_symlink():
            raise InputError(f"{path} exists: give another --out (dub review never replaces a file)")
    if out_path.suffix.lower() != ".srt":
        out_path.mkdir(parents=True, exist_ok=True)
    for r in scripts:
        targets[r.lang].write_text(to_review_srt(r.lines), encoding="utf-8")
    return targets


def approve_cmd(
    job: int = typer.Argument(..., help="The job awaiting review."),
    lang: Optional[str] = LANG,
    script: Optional[Path] = typer.Option(None, "--script", help="The edited SRT of --lang (as `dub review` "
                                          "wrote it, texts changed): approved with these texts."),
    db: Optional[str] = DB,
    as_json: bool = typer.Option(False, "--json", help="Print the continued job's report as JSON."),
) -> None:
    """Approve the script (as offered, or as edited in --script) and, once no language
    awaits review, continue the job here: voice, fit, mix and deliver."""
    from polydub.review import read_edited, reviewer
    from polydub.storage import Catalog, reviews

    config.use_database(db)
    cat = Catalog()
    waiting, in_prefect = _waiting(cat, job, _lang(lang))
    if script is not None and len(waiting) > 1:
        raise InputError(f"--script is one language's script; {len(waiting)} await review "
                         f"({', '.join(r.lang for r in waiting)}): give --lang")
    if script is not None and waiting[0].kind != reviews.SCRIPT:
        raise InputError(f"--script edits a script; job {job}'s {waiting[0].lang} review is of its delivered result")
    decisions = [(r, *(read_edited(script, r.lines) if script is not None else (r.lines, []))) for r in waiting]
    by = reviewer()
    for r, lines, changes in decisions:  # every check passed: now record
        if r.kind == reviews.SCRIPT:
            reviews.decide(cat, r.id, reviews.APPROVED, by, approved=lines, changes=changes)
        else:
            reviews.decide(cat, r.id, reviews.APPROVED, by)
        edited = f", {len(changes)} line{'s' * (len(changes) != 1)} edited" if changes else ""
        print(f"job {job} {r.lang}: {r.kind} approved by {by}{edited}", file=sys.stderr)
        if in_prefect:
            _resume(cat, job, {"approve": True, "reviewer": by, **({"lines": lines} if r.kind == reviews.SCRIPT else {})})
    if not in_prefect:
        _go_on(cat, job, as_json)


def reject_cmd(
    job: int = typer.Argument(..., help="The job awaiting review."),
    why: str = typer.Option(..., "--why", help="Why the script is rejected (recorded, and the language's error)."),
    lang: Optional[str] = LANG, db: Optional[str] = DB,
    as_json: bool = typer.Option(False, "--json", help="Print the continued job's report as JSON."),
) -> None:
    """Reject the script: the language is not voiced (failed, with why); once no language
    awaits review the job goes on with the others."""
    from polydub.review import reviewer
    from polydub.storage import Catalog, reviews

    reason = " ".join(why.split())
    if not reason or "\0" in why:
        raise InputError("--why: say why the script is rejected (text, no NUL byte)")
    if len(reason) > WHY_MAX:
        raise InputError(f"--why: at most {WHY_MAX} characters, not {len(reason)}")
    config.use_database(db)
    cat = Catalog()
    waiting, in_prefect = _waiting(cat, job, _lang(lang))
    by = reviewer()
    for r in waiting:
        reviews.decide(cat, r.id, reviews.REJECTED, by, reason=reason)
        print(f"job {job} {r.lang}: {r.kind} rejected by {by}", file=sys.stderr)
        if in_prefect:
            _resume(cat, job, {"approve": False, "reason": reason, "reviewer": by})
    if not in_prefect:
        _go_on(cat, job, as_json)


def _lang(lang: str | None) -> str | None:
    from polydub import languages

    return None if lang is None else languages.normalize(lang)


def _waiting(cat, job: int, lang: str | None) -> tuple[list, bool]:
    """The reviews this command decides: those awaiting (of `lang`), and whether the job's
    run waits for them suspended in Prefect (a deployment run: then only the language it
    asks for now; it asks for the others one by one, as it goes on)."""
    from polydub.storage import reviews

    waiting = reviews.awaiting(cat, job, lang)
    asked = _suspended_for(cat.show_job(job))
    if asked is None:  # it goes on in this process
        return waiting, False
    chosen = [r for r in waiting if r.lang == asked]
    if not chosen:
        raise InputError(f"job {job}'s flow run waits for the {asked} review first")
    return chosen, True


def _suspended_for(info: dict) -> str | None:
    """The language a job's deployment run waits for, suspended in Prefect; None when it
    does not wait there (a command-line job, or a run no longer suspended: it goes on here)."""
    from polydub.errors import DubError, one_line
    from polydub.review import REVIEW_KEYS

    if not info.get("deployment") or not info.get("flow_run_id"):
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(info["flow_run_id"]).state
    except Exception as exc:  # noqa: BLE001 - an unreachable server, a run that is gone: one line
        raise DubError(f"job {info['id']}'s flow run cannot be read from Prefect: {type(exc).__name__}: "
                       f"{one_line(exc)}") from None
    key = (state.state_details.pause_key or "") if state is not None else ""
    if state is None or state.type.value != "PAUSED" or not key.startswith(REVIEW_KEYS):
        return None
    return key.split("-")[1]


def _resume(cat, job: int, answer: dict) -> None:
    """Resume a job's suspended run with `answer`, as its form would send it; the run goes
    on on a worker (and finds the decision recorded)."""
    from prefect.flow_runs import resume_flow_run

    run_id = cat.show_job(job)["flow_run_id"]
    resume_flow_run(run_id, run_input=answer)
    print(f"job {job}: its flow run goes on on a worker ({run_id})", file=sys.stderr)


def _go_on(cat, job: int, as_json: bool) -> None:
    """Once no language of the job awaits review: run the job on, in this process, with
    the approved scripts as approved translations and the rejected languages failed."""
    from polydub import review
    from polydub.storage import reviews

    decided = reviews.of_job(cat, job)
    still = [r.lang for r in decided if r.status == reviews.AWAITING]
    if still:
        print(f"job {job}: still awaiting review: {', '.join(still)}", file=sys.stderr)
        return
    info = cat.show_job(job)
    params = info["params"]
    approved, rejected = review.decided_scripts(cat, job, params["name"])
    continuation = review.Continuation(job, {**params.get("translations", {}), **approved}, rejected)
    token = review.continuing.set(continuation)
    try:
        _run_on(info, as_json)
    finally:
        review.continuing.reset(token)


def _run_on(info: dict, as_json: bool) -> None:
    """Plan the recorded job again (its input, languages and options as recorded) and run it."""
    from polydub.cli import _judge, _run_flows, out
    from polydub.job import plan_job
    from polydub.options import DubOptions, make_options

    params = info["params"]
    recorded = {k: v for k, v in params.items() if k in DubOptions.model_fields and k not in ("out", "translations")}
    options = make_options(recorded)
    plan = plan_job(info["input"], ",".join(info["langs"]), options, out=info["out_dir"])
    [report] = _run_flows([plan], options, {plan.input: _judge(plan)}, as_json)
    if as_json:
        out.print_json(json.dumps(report.to_json(), default=str))
    if report.status != "done":
        raise typer.Exit(1)
