"""CPU pipeline benchmark: how much time orchestration adds to the ffmpeg + espeak-ng work.

Dubs a clip built from the bundled example (looped to `--seconds`) into `--langs` with
espeak-ng and approved transcript/translations, through the real `dub` CLI against an
isolated local Prefect server, catalog and cache, and times the same ffmpeg + espeak-ng
work as a plain sequential script in this process (polydub's library functions, no
Prefect, catalog or cache). Prints one table; the ratios are the result. Nothing is
asserted: timings vary with the machine and its load.

    python bench/pipeline.py [--seconds 60] [--langs es,fr,de] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polydub import assemble, languages, media
from polydub.audio import fit, mix
from polydub.errors import InputError
from polydub.options import DEFAULT_LOUDNESS, DEFAULT_MAX_SPEED
from polydub.segments import Segment, read_subtitles, write_subtitles
from polydub.tts import EspeakVoice
from polydub.tts.espeak import voice_for
from polydub.tts.trim import trim_silence

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "talking_head.mp4"
NAME = "clip"
EXAMPLE_SECONDS = 10.0  # the bundled example's length; its lines repeat every 10 s
SOURCE_LANG = "en"
EXTRA_LANG = "it"  # the language added to a finished job
STAGES = ("probe", "transcribe", "translate", "synthesize", "mix", "lipsync", "assemble", "multitrack")
RUN_TIMEOUT = 1800  # seconds for one `dub` run; a 60 s clip takes well under a minute
QUICK_TIMEOUT = 300  # seconds for server start/stop, validation and import probes
STOP_WAIT = 15.0  # seconds to wait for the stopped server to exit before removing its folder

LINES = [  # start, end (s) of the example's three lines within each 10 s block
    (0.5, 2.8), (3.2, 5.6), (6.0, 9.2),
]
ITALIAN = [  # the approved translation of the added language
    "Ciao e benvenuti al nostro nuovo prodotto.",
    "Vi fa risparmiare tempo ogni giorno.",
    "Provatelo oggi e diteci cosa ne pensate.",
]


# --- the input -------------------------------------------------------------------------

def make_input(folder: Path, seconds: float) -> tuple[Path, Path, float]:
    """Loop the example to `seconds`; write its sidecars. Returns (video, approved folder
    holding the EXTRA_LANG translation, measured duration in seconds)."""
    video = folder / f"{NAME}.mp4"
    loops = max(0, math.ceil(seconds / EXAMPLE_SECONDS) - 1)
    media.ffmpeg("-stream_loop", str(loops), "-i", str(EXAMPLE), "-t", f"{seconds:.3f}", "-map", "0",
                 "-c", "copy", "-movflags", "+faststart", str(video), what="looping the example")
    duration = media.probe(video).duration

    texts = {lang: [s.text for s in read_subtitles(EXAMPLE.with_name(f"talking_head.{lang}.srt"))]
             for lang in (SOURCE_LANG, "es", "fr", "de")}
    texts[EXTRA_LANG] = ITALIAN
    blocks = int(seconds // EXAMPLE_SECONDS) + 1

    def repeated(lines: list[str]) -> list[Segment]:
        return [Segment(b * EXAMPLE_SECONDS + start, b * EXAMPLE_SECONDS + end, text)
                for b in range(blocks) for (start, end), text in zip(LINES, lines)
                if b * EXAMPLE_SECONDS + end <= duration]

    approved = folder / "approved"
    approved.mkdir()
    for lang, lines in texts.items():
        where = approved if lang == EXTRA_LANG else folder
        write_subtitles(repeated(lines), where / f"{NAME}.{lang}.srt")
    return video, approved, duration


# --- the CLI, isolated -----------------------------------------------------------------

def isolated_env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.pop("DUB_PREFECT_SERVER", None)
    home = folder / "home"
    env.update({
        "DUB_HOME": str(home),
        "DUB_CACHE_DIR": str(home / "cache"),
        "DUB_MODELS_DIR": str(home / "models"),
        "DUB_DATABASE_URL": f"sqlite:///{home / 'catalog.db'}",
        "PREFECT_HOME": str(folder / "prefect-client"),  # the client's profile and local files
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })
    return env


def timed(args: list[str], env: dict[str, str], timeout: float = QUICK_TIMEOUT,
          expect: int | None = 0) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command; its wall seconds and result. Fails loudly on an unexpected exit status."""
    started = time.perf_counter()
    proc = subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    seconds = time.perf_counter() - started
    if expect is not None and proc.returncode != expect:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"{' '.join(args[2:])}: exit {proc.returncode}, expected {expect}\n{tail}")
    return seconds, proc


def dub(*args: str) -> list[str]:
    return [sys.executable, "-m", "polydub.cli", *args]


def dub_run(video: Path, langs: list[str], out: Path, env: dict[str, str],
            translations: Path | None = None, *extra: str) -> tuple[float, dict]:
    """One `dub` run; its wall seconds and JSON report."""
    args = [str(video), "--langs", ",".join(langs), "--voice", "espeak", "--out", str(out), "--json", *extra]
    if translations:
        args += ["--translations", str(translations)]
    launched = time.time()
    seconds, proc = timed(dub(*args), env, timeout=RUN_TIMEOUT)
    report = json.loads(proc.stdout)
    report["bench_launched"] = launched  # wall clock, to place the catalog's stage times
    if report["status"] != "done":
        raise SystemExit(f"dub {' '.join(args)}: job {report['status']}: {report.get('error')}")
    return seconds, report


def stage_seconds(report: dict) -> dict[str, float]:
    """Catalog seconds per stage, summed over languages; the multi-track file is the
    per-video 'assemble' run. Every run counts, cached ones too (their lookup time)."""
    totals = {stage: 0.0 for stage in STAGES}
    if report.get("up_to_date"):  # an earlier job's report: no stage ran now
        return totals
    for run in report["stages"]:
        stage = "multitrack" if run["stage"] == "assemble" and run["lang"] is None else run["stage"]
        totals[stage] = totals.get(stage, 0.0) + (run["seconds"] or 0.0)
    return totals


def phases(seconds: float, report: dict) -> tuple[float, float, float]:
    """A run's wall split at its first stage's start and its last stage's finish (the
    catalog's clock): start-up, stages, closing."""
    from datetime import datetime

    times = [(datetime.fromisoformat(r["started_at"]).timestamp(), datetime.fromisoformat(r["finished_at"]).timestamp())
             for r in report["stages"] if r.get("started_at") and r.get("finished_at")]
    first, last = min(t[0] for t in times), max(t[1] for t in times)
    start_up = first - report["bench_launched"]
    return start_up, last - first, seconds - start_up - (last - first)


def statuses(report: dict) -> str:
    """'done 14' / 'cached 14' / 'cached 14, done 5': what the runs of a job did."""
    if report.get("up_to_date"):
        return "none: up to date, no flow run"
    counts: dict[str, int] = {}
    for run in report["stages"]:
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def best_of(n: int, args: list[str], env: dict[str, str], expect: int | None = 0) -> float:
    return min(timed(args, env, expect=expect)[0] for _ in range(n))


# --- the baseline: the same work, plain and sequential ---------------------------------

def baseline(video: Path, langs: list[str], folder: Path) -> dict[str, float]:
    """What the stages do, without Prefect, catalog or cache; seconds per stage."""
    t: dict[str, float] = {stage: 0.0 for stage in STAGES}
    folder.mkdir()
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        t[stage] += now - clock
        clock = now

    import soundfile

    info = media.probe(video)
    channels = max(1, min(2, info.audio_channels))
    source_wav = media.extract_audio(video, folder / "source.wav", channels=channels)
    media.extract_audio(video, folder / "asr.wav", sample_rate=16_000)
    samples = soundfile.info(str(source_wav)).frames
    lap("probe")
    transcript = read_subtitles(video.with_name(f"{NAME}.{SOURCE_LANG}.srt"))
    write_subtitles(transcript, folder / "transcript.srt")
    lap("transcribe")

    mixed: dict[str, tuple[Path, Path]] = {}
    for lang in langs:
        work = folder / lang
        work.mkdir()
        segments = read_subtitles(video.with_name(f"{NAME}.{lang}.srt"))
        lap("translate")
        voice = EspeakVoice(voice_for(lang))
        clips, durations = [], []
        for i, segment in enumerate(segments):
            clip = voice.synthesize(segment.text, lang, work / f"line{i:04d}.wav")
            clips.append(clip)
            durations.append(trim_silence(clip))
        lap("synthesize")
        fits = fit.plan_fits(segments, durations, samples / media.SAMPLE_RATE, max_speed=DEFAULT_MAX_SPEED)
        fit.render_dub_track(clips, fits, samples, work / "dub.wav")
        mix.mix(source_wav, work / "dub.wav", transcript, work / "mixed.wav", loudness=DEFAULT_LOUDNESS)
        lap("mix")
        srt = work / f"{NAME}.{lang}.srt"
        write_subtitles(segments, srt)
        write_subtitles(segments, work / f"{NAME}.{lang}.vtt")
        assemble.dubbed_file(str(video), str(work / "mixed.wav"), str(srt), lang, work / f"{NAME}.{lang}.mp4",
                             video_codec=info.video_codec)
        lap("assemble")
        mixed[lang] = (work / "mixed.wav", srt)

    audio = [assemble.AudioTrack(str(video), SOURCE_LANG, "Original")]
    subs = [assemble.SubtitleTrack(str(folder / "transcript.srt"), SOURCE_LANG, "Original")]
    for lang, (wav, srt) in mixed.items():
        audio.append(assemble.AudioTrack(str(wav), lang, f"{languages.name(lang)} (AI dub)"))
        subs.append(assemble.SubtitleTrack(str(srt), lang, languages.name(lang)))
    assemble.multitrack_file(str(video), audio, subs, folder / f"{NAME}.dubbed.mkv")
    lap("multitrack")
    return t


# --- the server ------------------------------------------------------------------------

def stop_server(env: dict[str, str]) -> None:
    """`dub server stop`, then wait for the process to be gone (its database lives in our folder)."""
    state = Path(env["DUB_HOME"]) / "prefect" / "server.json"
    pid = json.loads(state.read_text())["pid"] if state.exists() else None
    timed(dub("server", "stop"), env, expect=None)
    deadline = time.monotonic() + STOP_WAIT
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


# --- the table -------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    """Aligned plain text: names and notes left, numbers right; 1-tuples are headings."""
    header = ("measure", "polydub s", "baseline s", "note")
    widths = [max(len(r[i]) for r in [header, *rows] if len(r) == 4) for i in range(4)]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(title)
    print(rule)
    print(line(header))
    print(rule)
    for row in rows:
        print(row[0] if len(row) == 1 else line(row))
    print(rule)


def table_rows(langs: list[str], duration: float, fixed: dict[str, float], base: dict[str, float],
               base_wall: float, cold: tuple[float, dict], warm: tuple[float, dict],
               off: tuple[float, dict], add: tuple[float, dict]) -> list[tuple[str, ...]]:
    """The table: (measure, polydub s, baseline s, note) rows; 1-tuples are section headings.
    `cold`, `warm`, `off` (warm, --lipsync off) and `add` are (wall seconds, report)."""
    (cold_s, cold_r), (warm_s, warm_r), (off_s, off_r), (add_s, add_r) = cold, warm, off, add
    cold_st, warm_st, add_st = stage_seconds(cold_r), stage_seconds(warm_r), stage_seconds(add_r)
    cold_sum, warm_sum, add_sum, base_sum = (sum(t.values()) for t in (cold_st, warm_st, add_st, base))
    reasons = sorted({(r.get("detail") or {}).get("reason", "?").split(" (")[0]
                      for r in cold_r["stages"] if r["stage"] == "lipsync"})
    rows: list[tuple[str, ...]] = [
        ("server and fixed overhead",),
        ("  prefect server cold start", fmt(fixed["server"]), "", "`dub server start`, new database"),
        ("  python -c pass", fmt(fixed["python"]), "", "interpreter start-up, best of 2"),
        ("  dub, bad --langs (exit 2)", fmt(fixed["bad"]), "", "CLI import + validation, best of 2"),
        ("  import polydub.flows.dub", fmt(fixed["import"]), "", "prefect and the flow, best of 2"),
        ("  import polydub.lipsync.stage", fmt(fixed["torch"]), "", "torch: how --lipsync auto decides"),
        ("  dub list --json", fmt(fixed["list"]), "", "a catalog read from the CLI, median of 3"),
        ("  warm re-run: wall - stages", fmt(warm_s - warm_sum), "", "fixed cost of a run"),
        (f"cold run: {duration:.0f} s clip into {','.join(langs)} (server already up), median",),
        ("  wall", fmt(cold_s), fmt(base_wall), f"stage runs: {statuses(cold_r)}"),
    ]
    for stage in STAGES:
        if stage == "lipsync":
            rows.append((f"  {stage}", fmt(cold_st[stage]), "", "skipped: " + ", ".join(reasons)))
            continue
        per = "per video" if stage in ("probe", "transcribe", "multitrack") else f"{len(langs)} languages"
        rows.append((f"  {stage}", fmt(cold_st[stage]), fmt(base[stage]), per))
    start_up, staged, closing = phases(cold_s, cold_r)
    rows += [
        ("  sum of stages", fmt(cold_sum), fmt(base_sum), "the flow runs languages concurrently"),
        ("  wall - sum of stages", fmt(cold_s - cold_sum), "",
         "negative: stages overlapped" if cold_s < cold_sum else ""),
        ("where the cold run's wall goes",),
        ("  start-up", fmt(start_up), "", "interpreter, imports, server check, flow run, job opened (input probed, digested)"),
        ("  first stage start to last finish", fmt(staged), fmt(base_wall), "the work, languages concurrent"),
        ("  closing", fmt(closing), "", "report, catalog, artifacts, deliveries recorded, final state, exit"),
        ("warm re-run (nothing changed), median of 3",),
        ("  wall", fmt(warm_s), "", f"stage runs: {statuses(warm_r)}"),
        ("  sum of stages", fmt(warm_sum), "", "cache lookups + catalog rows"),
        ("  wall, --lipsync off", fmt(off_s), "", f"no lip-sync decision; stage runs: {statuses(off_r)}"),
        (f"adding a language: {','.join([*langs, EXTRA_LANG])}",),
        ("  wall", fmt(add_s), "", f"stage runs: {statuses(add_r)}"),
        ("  sum of stages", fmt(add_sum), "", f"{EXTRA_LANG}'s stages + the multi-track file"),
        ("  of which multitrack", fmt(add_st["multitrack"]), "", "redone: it holds every language"),
        ("ratios",),
        ("  cold run / baseline", f"{cold_s / base_wall:.2f}", "", "orchestration, net of concurrency"),
        ("  cold stages / baseline", f"{cold_sum / base_sum:.2f}", "", "stage work in the flow vs. plain"),
        ("  warm re-run / cold run", f"{warm_s / cold_s:.2f}", "", ""),
        ("  warm re-run / dub list --json", f"{warm_s / fixed['list']:.2f}", "", "an unchanged job against a catalog read"),
        (f"  adding {EXTRA_LANG} / cold run", f"{add_s / cold_s:.2f}", "", ""),
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser, "languages of the cold run (of es, fr, de)")
    parser.add_argument("--repeat", type=int, default=3, help="cold runs and baselines (the medians are shown)")
    opts = parser.parse_args()
    langs = clip_langs(parser, opts)
    if opts.repeat < 1:
        parser.error("--repeat takes 1 or more")
    more = [*langs, EXTRA_LANG]

    folder = Path(tempfile.mkdtemp(prefix="polydub-bench-"))
    env = isolated_env(folder)
    server_up = False
    load_before = os.getloadavg()[0]  # other work on the machine shows in every number
    try:
        video, approved, duration = make_input(folder, opts.seconds)
        print(f"input: {duration:.2f} s ({video}); languages {','.join(langs)} then +{EXTRA_LANG}; "
              f"{os.cpu_count()} CPUs", file=sys.stderr)

        print("prefect server cold start ...", file=sys.stderr)
        server_up = True
        server_s, _ = timed(dub("server", "start"), env, timeout=QUICK_TIMEOUT)
        bad_s = best_of(2, dub(str(video), "--langs", "xx", "--out", str(folder / "x")), env, expect=2)
        import_s = best_of(2, [sys.executable, "-c", "import polydub.flows.dub"], env)
        torch_s = best_of(2, [sys.executable, "-c", "import polydub.lipsync.stage"], env)
        python_s = best_of(2, [sys.executable, "-c", "pass"], env)

        # Baseline and cold run alternate, so that both see the machine in the same states;
        # each cold run has an empty cache and output folder of its own (the last: the
        # ones the warm re-runs below use).
        out, bases, colds = folder / "out", [], []
        for i in range(opts.repeat):
            last = i == opts.repeat - 1
            print(f"baseline: plain sequential script ({i + 1}/{opts.repeat}) ...", file=sys.stderr)
            started = time.perf_counter()
            base = baseline(video, langs, folder / f"baseline{i}")
            bases.append((time.perf_counter() - started, base))
            print(f"cold run: {','.join(langs)} ({i + 1}/{opts.repeat}) ...", file=sys.stderr)
            run_env = env if last else {**env, "DUB_CACHE_DIR": str(folder / f"cache{i}")}
            colds.append(dub_run(video, langs, out if last else folder / f"out{i}", run_env))
        base_wall, base = sorted(bases, key=lambda run: run[0])[len(bases) // 2]  # the medians
        cold_s, cold = sorted(colds, key=lambda run: run[0])[len(colds) // 2]
        print("cold runs: " + ", ".join(f"{s:.2f}" for s, _ in colds) + " s; baselines: "
              + ", ".join(f"{s:.2f}" for s, _ in bases) + " s", file=sys.stderr)
        print("warm re-run x3, dub list --json x3 ...", file=sys.stderr)
        warms = sorted((dub_run(video, langs, out, env) for _ in range(3)), key=lambda run: run[0])
        warm_s, warm = warms[1]  # the median of three
        list_s = statistics.median(timed(dub("list", "--json"), env)[0] for _ in range(3))
        off_s, off = dub_run(video, langs, out, env, None, "--lipsync", "off")
        print(f"adding {EXTRA_LANG} ...", file=sys.stderr)
        add_s, add = dub_run(video, more, out, env, translations=approved)

        fixed = {"server": server_s, "python": python_s, "bad": bad_s, "import": import_s, "torch": torch_s,
                 "list": list_s}
        rows = table_rows(langs, duration, fixed, base, base_wall, (cold_s, cold), (warm_s, warm),
                          (off_s, off), (add_s, add))
        print_table(f"polydub CPU pipeline: {duration:.1f} s clip, espeak-ng, approved script, "
                    f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, "
                    f"{os.getloadavg()[0]:.1f} after", rows)
    finally:
        if server_up:
            stop_server(env)
        keep_or_remove(folder, opts.keep)
    return 0


def add_clip_arguments(parser: argparse.ArgumentParser, langs_help: str) -> None:
    """--seconds, --langs and --keep: the looped clip's length and languages, and the folder."""
    parser.add_argument("--seconds", type=float, default=60.0, help="clip length (the example, looped)")
    parser.add_argument("--langs", default="es,fr,de", help=langs_help)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")


def clip_langs(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> list[str]:
    """The checked languages of `add_clip_arguments` (the clip has scripts in es, fr and de)."""
    try:
        langs = languages.parse_langs(opts.langs)
    except InputError as exc:
        parser.error(str(exc))
    if not langs or any(lang not in ("es", "fr", "de") for lang in langs) or opts.seconds < EXAMPLE_SECONDS:
        parser.error("--langs takes es, fr and/or de; --seconds at least 10")
    return langs


def keep_or_remove(folder: Path, keep: bool) -> None:
    """A benchmark's temporary folder at its end: kept (and said where) with --keep, else removed."""
    if keep:
        print(f"kept {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
