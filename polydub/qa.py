"""A measured QA report for one dubbed language: is the dub understandable, on time, whole,
of the right length and level?

Everything here is measured on what the mix stage wrote (its lines.json and the voice-only
dub track) and on the delivered file, from plain inputs: no Prefect, no catalog.

- intelligibility: the dub track transcribed back in the target language and compared
  with the script (word and character error rate). An English-only model can only judge
  English; other languages then say why they were not measured.
- placement: how far each dubbed line starts from its source line, as planned (lines.json)
  and as heard (the onset of voice energy on the dub track, 10 ms frames).
- speed: how much lines were sped up, and which still do not fit their slot.
- duration, loudness and lip-sync: the delivered file against the source and the targets.

`measure_language` returns a `LanguageQA` whose `flags` say, one line each, what exceeds
its `QAThresholds`; `timeline_png` draws the lines on the source's timeline.
"""

from __future__ import annotations

import bisect
import os
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import soundfile as sf

from polydub.audio.fit import MAX_SPEED
from polydub.report import speed_up
from polydub.segments import Segment
from polydub.tts.trim import FRAME_SECONDS as TRIM_FRAME_S
from polydub.tts.trim import KEEP_SECONDS as TRIM_KEEP_S

LINES = "lines.json"  # the mix stage's record of each line's fit
THRESHOLDS_ENV = "DUB_QA_THRESHOLDS"  # the machine's thresholds over the defaults

# Voice onset detection on the dub track (the voice alone: silence between lines is zero).
FRAME_S = 0.010  # energy frame
ONSET_BELOW_PEAK_DB = 40.0  # a frame is voice when its RMS is within this of the line's loudest frame
ONSET_FLOOR_DBFS = -60.0  # ... and above this, so that resampling dither is never voice
SEARCH_BEFORE_S = 0.5  # an early line is looked for this far before its source start
# A correctly placed line is heard up to this much after its start: the synthesized clip
# keeps a margin of near-silence before its speech (tts.trim) and the trim works in frames.
ONSET_SLACK_MS = 1000 * (TRIM_KEEP_S + TRIM_FRAME_S)

HEARD_CHARS = 300  # of the recognized text kept in the report
SPEED_DECIMALS = 3


@dataclass(frozen=True)
class QAThresholds:
    """What a dub may be and still pass; each one exceeded is one flag."""

    max_wer: float = 0.35  # word error rate of the dub transcribed back
    max_placement_ms: float = 10.0  # lines start within this of their source line
    max_lines_over_limit: int = 0  # lines still too long for their slot at the speed cap
    max_duration_delta_ms: float = 40.0  # delivered vs source: one video frame at 25 fps
    max_loudness_delta_lu: float = 1.0  # integrated loudness vs its target
    max_true_peak_over_db: float = 0.5  # true peak above its target
    min_face_coverage: float = 0.5  # of video frames with a synced face, when lip-sync ran

    @classmethod
    def of(cls, values: dict | None) -> QAThresholds:
        """Defaults overridden by `values` (name -> number); ValueError (one line) on an
        unknown name or a value that is not a number."""
        names = [f.name for f in fields(cls)]
        chosen = {}
        for key, value in (values or {}).items():
            if key not in names:
                raise ValueError(f"unknown QA threshold {key!r} (one of: {', '.join(names)})")
            kind = int if key == "max_lines_over_limit" else float
            try:
                if isinstance(value, bool):
                    raise TypeError
                chosen[key] = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"QA threshold {key} must be a number, not {value!r}") from None
        return cls(**chosen)

    @classmethod
    def configured(cls) -> QAThresholds:
        """The defaults with the machine's DUB_QA_THRESHOLDS (`max_wer=0.5,max_placement_ms=20`)
        over them; an InputError naming the variable when it is malformed."""
        from polydub.errors import InputError

        text = os.environ.get(THRESHOLDS_ENV, "").strip()
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise InputError(f"{THRESHOLDS_ENV}: {part[:80]!r} is not NAME=NUMBER")
            values[name.strip()] = value.strip()
        try:
            return cls.of(values)
        except ValueError as exc:
            raise InputError(f"{THRESHOLDS_ENV}: {exc}") from None


@dataclass
class Intelligibility:
    """The dub transcribed back against its script; `why` when it could not be measured."""

    wer: float | None = None  # word error rate, 0 = word for word
    cer: float | None = None  # character error rate
    asr_model: str | None = None
    heard: str | None = None  # the start of what the model heard
    why: str | None = None


@dataclass
class Placement:
    """Start of each dubbed line minus its source line's start, in ms.

    `planned_*`: lines.json's starts; `mean_ms`/`max_ms`: the onset heard on the dub track
    (absolute values), over the `measured` lines whose onset could be heard; `offsets_ms`:
    the heard offset of each line (signed; None: not heard, e.g. under an overflowing line).
    """

    planned_mean_ms: float
    planned_max_ms: float
    mean_ms: float | None
    max_ms: float | None
    measured: int
    worst_line: int | None  # index of the line with `max_ms`
    offsets_ms: list[float | None] = field(default_factory=list)


@dataclass
class Speed:
    """Speed-up factors of the lines (1.0 = as synthesized) and what still did not fit."""

    min: float | None
    median: float | None
    max: float | None
    lines_sped_up: int
    lines_over_limit: int  # overflow > 0: longer than their slot even at the cap
    max_overflow_s: float
    lines_truncated: int  # cut by the end of the video


@dataclass
class Duration:
    """The dub's length against the source's (s; delta in ms, dub - source)."""

    source_s: float
    dub_s: float
    delta_ms: float
    measured_on: str  # "delivered file" (ffprobe) | "dub track"


@dataclass
class LoudnessQA:
    """Integrated loudness (LUFS) and true peak (dBTP) of the mix, and their targets."""

    lufs: float
    target_lufs: float
    true_peak_db: float | None  # None: silent
    target_true_peak_db: float


@dataclass
class LipSyncQA:
    """The lip-sync stage's status and the fraction of frames with a synced face."""

    status: str  # done | cached | skipped | failed
    face_coverage: float | None = None
    reason: str | None = None


@dataclass
class LanguageQA:
    """The QA report of one dubbed language; `flags`: one line per threshold exceeded."""

    lang: str
    lines: int
    intelligibility: Intelligibility
    placement: Placement
    speed: Speed
    duration: Duration
    loudness: LoudnessQA
    lipsync: LipSyncQA
    flags: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.flags

    def to_json(self) -> dict:
        """A plain dict (JSON-ready), fields that are None left out."""
        return _without_none(asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> LanguageQA:
        """The report as `to_json` wrote it (a job report read back)."""
        sections = {name: kind(**data.get(name, {})) for name, kind in
                    (("intelligibility", Intelligibility), ("placement", Placement), ("speed", Speed),
                     ("duration", Duration), ("loudness", LoudnessQA), ("lipsync", LipSyncQA))}
        return cls(data["lang"], data["lines"], **sections, flags=list(data.get("flags", [])))

    def to_markdown(self) -> str:
        """A short Markdown section (for a Prefect artifact or a review)."""
        i, p, s, d, lo, ls = (self.intelligibility, self.placement, self.speed, self.duration,
                              self.loudness, self.lipsync)
        heard = (f"WER {i.wer:.2f}, CER {i.cer:.2f} ({i.asr_model})" if i.wer is not None
                 else f"not measured: {i.why}")
        on_audio = (f"heard mean {p.mean_ms:.0f} ms, max {p.max_ms:.0f} ms ({p.measured}/{self.lines} lines)"
                    if p.max_ms is not None else "not heard on the dub track")
        speeds = (f"{s.min:.2f}x .. {s.max:.2f}x (median {s.median:.2f}x), {s.lines_sped_up} sped up, "
                  f"{s.lines_over_limit} over the limit" if s.max is not None else "no lines")
        peak = "silent" if lo.true_peak_db is None else f"{lo.true_peak_db:.1f} dBTP"
        face = f", face in {ls.face_coverage:.0%} of frames" if ls.face_coverage is not None else ""
        rows = [
            ("Intelligibility", heard),
            ("Placement", f"planned max {p.planned_max_ms:.0f} ms; {on_audio}"),
            ("Speed", speeds),
            ("Duration", f"{d.dub_s:.3f} s vs source {d.source_s:.3f} s ({d.delta_ms:+.0f} ms, {d.measured_on})"),
            ("Loudness", f"{lo.lufs:.1f} LUFS (target {lo.target_lufs:.1f}), {peak} "
                         f"(target {lo.target_true_peak_db:.1f})"),
            ("Lip-sync", ls.status + face),
        ]
        verdict = "passed" if self.passed else f"{len(self.flags)} flag{'s' if len(self.flags) != 1 else ''}"
        out = [f"### QA {self.lang}: {verdict}", "", "| check | measured |", "| --- | --- |"]
        out += [f"| {name} | {_cell(value)} |" for name, value in rows]
        if self.flags:
            out += [""] + [f"- {flag}" for flag in self.flags]
        return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _as_segment(line: Segment | dict) -> Segment:
    if isinstance(line, Segment):
        return line
    return Segment(float(line["start"]), float(line["end"]), str(line.get("text", "")), line.get("speaker"))


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# --- placement -----------------------------------------------------------------------

def source_starts_of(lines: list[dict], source: list[Segment]) -> list[float | None]:
    """For each dubbed line, the start (s) of the source line it dubs: the source line
    starting nearest to it (a translation keeps its source line's start; an approved
    script's own cues may differ). None when there are no source lines."""
    starts = sorted(s.start for s in source)
    paired: list[float | None] = []
    for line in lines:
        if not starts:
            paired.append(None)
            continue
        k = bisect.bisect_left(starts, line["start"])
        near = [starts[j] for j in (k - 1, k) if 0 <= j < len(starts)]
        paired.append(min(near, key=lambda s: abs(s - line["start"])))
    return paired


def voice_onset(samples: np.ndarray, rate: int) -> float | None:
    """Seconds from the start of `samples` (mono float [n]) to where voice starts.

    Voice is a FRAME_S frame whose RMS is within ONSET_BELOW_PEAK_DB of the loudest frame
    and above ONSET_FLOOR_DBFS. The onset is the first such frame after a quiet one (voice
    already sounding at the start belongs to something earlier), refined to the first
    sample there that reaches the threshold. None: no onset in `samples`.
    """
    frame = max(1, round(rate * FRAME_S))
    n = len(samples) // frame
    if n < 2:
        return None
    rms = np.sqrt(np.mean(samples[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    threshold = max(rms.max() * 10 ** (-ONSET_BELOW_PEAK_DB / 20), 10 ** (ONSET_FLOOR_DBFS / 20))
    loud = rms >= threshold
    rising = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    if rising.size == 0:
        return None
    first = int(rising[0])
    # the quiet frame before may hold the first cycles of the voice: look from there
    span = np.abs(samples[(first - 1) * frame:(first + 1) * frame])
    above = np.flatnonzero(span >= threshold)
    at = (first - 1) * frame + (int(above[0]) if above.size else frame)
    return at / rate


def heard_starts(dub_track: Path, lines: list[dict]) -> list[float | None]:
    """The onset (s) of each line's voice on the voice-only `dub_track`, in the lines' order.

    Each line is looked for from SEARCH_BEFORE_S before its start (not before the end of
    the line before it) up to the next line's start. A line that starts while the one
    before still speaks (an overflow) cannot be heard apart from it: None. Reads only
    those stretches, so a feature-length track costs no more memory than one line.
    """
    order = sorted(range(len(lines)), key=lambda i: lines[i]["start"])
    onsets: list[float | None] = [None] * len(lines)
    with sf.SoundFile(str(dub_track)) as track:
        rate, total = track.samplerate, track.frames
        for k, i in enumerate(order):
            line = lines[i]
            start = float(line["start"])
            prev = lines[order[k - 1]] if k else None
            prev_end = prev["start"] + prev["clip"] / max(prev["speed"], 1.0) if prev else 0.0
            if prev_end > start:
                continue  # still under the previous line's voice
            lo = max(0.0, start - SEARCH_BEFORE_S, prev_end)
            hi = lines[order[k + 1]]["start"] if k + 1 < len(order) else total / rate
            first, last = round(lo * rate), min(total, round(hi * rate))
            if last - first <= 0:
                continue
            track.seek(first)
            window = track.read(last - first, dtype="float32", always_2d=True).mean(axis=1)
            onset = voice_onset(window, rate)
            if onset is not None:
                onsets[i] = first / rate + onset
    return onsets


def measure_placement(lines: list[dict], source: list[Segment], dub_track: Path | None) -> Placement:
    """Planned and heard start offsets of the lines from their source lines (see `Placement`)."""
    paired = source_starts_of(lines, source)
    planned = [abs(line["start"] - s) * 1000 for line, s in zip(lines, paired) if s is not None]
    heard = heard_starts(dub_track, lines) if dub_track is not None else [None] * len(lines)
    offsets = [round((h - s) * 1000, 1) if h is not None and s is not None else None
               for h, s in zip(heard, paired)]
    known = [(abs(o), i) for i, o in enumerate(offsets) if o is not None]
    worst = max(known) if known else None
    return Placement(
        planned_mean_ms=round(statistics.fmean(planned), 1) if planned else 0.0,
        planned_max_ms=round(max(planned), 1) if planned else 0.0,
        mean_ms=round(statistics.fmean(a for a, _ in known), 1) if known else None,
        max_ms=worst[0] if worst else None,
        measured=len(known),
        worst_line=worst[1] if worst else None,
        offsets_ms=offsets,
    )


# --- speed, duration, intelligibility ---------------------------------------------------

def measure_speed(lines: list[dict]) -> Speed:
    speeds = [speed_up(line) for line in lines]
    overflows = [float(line.get("overflow", 0.0)) for line in lines]
    return Speed(
        min=round(min(speeds), SPEED_DECIMALS) if speeds else None,
        median=round(statistics.median(speeds), SPEED_DECIMALS) if speeds else None,
        max=round(max(speeds), SPEED_DECIMALS) if speeds else None,
        lines_sped_up=sum(s > 1.0 for s in speeds),
        lines_over_limit=sum(o > 0 for o in overflows),
        max_overflow_s=round(max(overflows, default=0.0), 3),
        lines_truncated=sum(float(line.get("truncated", 0.0)) > 0 for line in lines),
    )


def measure_duration(source_s: float, dub_track: Path | None, delivered: Path | None) -> Duration:
    """The delivered file's duration as ffprobe reports it (what players show), else the
    dub track's."""
    from polydub import media

    if delivered is not None:
        dub_s, where = media.probe(delivered).duration, "delivered file"
    elif dub_track is not None:
        dub_s, where = sf.info(str(dub_track)).duration, "dub track"
    else:
        raise ValueError("the duration needs the delivered file or the dub track")
    return Duration(round(source_s, 3), round(dub_s, 3), round((dub_s - source_s) * 1000, 1), where)


def measure_intelligibility(lines: list[dict], lang: str, dub_track: Path | None,
                            asr_model=None, asr_loaded=None) -> Intelligibility:
    """Transcribe the voice-only dub track in `lang` and compare it with the script (the
    lines' text, joined). `asr_model` is a located `polydub.asr.AsrModel`; `asr_loaded`
    the backend's loaded model when the caller has it."""
    from polydub import asr
    from polydub.asr.transcribe import backend_module
    from polydub.asr.wer import character_error_rate, word_error_rate

    if asr_model is None:
        return Intelligibility(why="no speech recognition model was given")
    name = f"{asr_model.backend}:{asr_model.name}"
    script = " ".join(str(line.get("text", "")) for line in lines).strip()
    if not script:
        return Intelligibility(asr_model=name, why="the dub has no lines to hear")
    if dub_track is None:
        return Intelligibility(asr_model=name, why="no dub track to hear")
    base = lang.split("-")[0].lower()
    try:
        loaded = asr_loaded or asr.load(asr_model)
        if base != "en" and not backend_module(asr_model).is_multilingual(loaded):
            return Intelligibility(asr_model=name, why=f"{asr_model.name} is an English-only model: "
                                                       f"it cannot judge {lang}")
        audio = asr.load_audio(dub_track)
        # The track is the voice alone, and only the words are compared: no VAD needed.
        heard = asr.transcribe(asr_model, audio, base, vad=None, loaded=loaded)
    except Exception as exc:  # noqa: BLE001 - a model that cannot hear this language is no failed dub
        text = str(exc).strip().splitlines()
        return Intelligibility(asr_model=name, why=f"speech recognition failed: "
                                                   f"{text[0] if text else type(exc).__name__}")
    said = " ".join(s.text for s in heard.segments).strip()
    return Intelligibility(round(word_error_rate(script, said), 3), round(character_error_rate(script, said), 3),
                           name, said[:HEARD_CHARS])


# --- the report ----------------------------------------------------------------------

def flags_for(qa: LanguageQA, limits: QAThresholds) -> list[str]:
    """One short line per threshold that `qa` exceeds."""
    flags = []
    i, p, s, d, lo, ls = qa.intelligibility, qa.placement, qa.speed, qa.duration, qa.loudness, qa.lipsync
    if i.wer is not None and i.wer > limits.max_wer:
        flags.append(f"word error rate {i.wer:.2f} is over {limits.max_wer:.2f}: the dub may be hard to follow")
    if p.planned_max_ms > limits.max_placement_ms:
        flags.append(f"lines are placed up to {p.planned_max_ms:.0f} ms from their source line "
                     f"(limit {limits.max_placement_ms:g} ms)")
    heard_limit = limits.max_placement_ms + ONSET_SLACK_MS
    off = [o for o in p.offsets_ms if o is not None and abs(o) > heard_limit]
    if off:
        flags.append(f"{_plural(len(off), 'line is', 'lines are')} heard more than {heard_limit:.0f} ms off "
                     f"the source line (worst {p.max_ms:.0f} ms, line {p.worst_line + 1})")
    if s.lines_over_limit > limits.max_lines_over_limit:
        flags.append(f"{_plural(s.lines_over_limit, 'line does', 'lines do')} not fit "
                     f"{'its slot' if s.lines_over_limit == 1 else 'their slot'} "
                     f"(max overflow {s.max_overflow_s:.1f} s)")
    if abs(d.delta_ms) > limits.max_duration_delta_ms:
        flags.append(f"the {d.measured_on} is {d.delta_ms:+.0f} ms off the source's duration "
                     f"(limit {limits.max_duration_delta_ms:g} ms)")
    if abs(lo.lufs - lo.target_lufs) > limits.max_loudness_delta_lu:
        flags.append(f"loudness {lo.lufs:.1f} LUFS is {abs(lo.lufs - lo.target_lufs):.1f} LU from its target "
                     f"{lo.target_lufs:.1f}")
    if lo.true_peak_db is not None and lo.true_peak_db > lo.target_true_peak_db + limits.max_true_peak_over_db:
        flags.append(f"true peak {lo.true_peak_db:.1f} dBTP is over its target {lo.target_true_peak_db:.1f}")
    if ls.status == "failed":
        flags.append("lip-sync failed" + (f": {ls.reason}" if ls.reason else ""))
    elif ls.status in ("done", "cached") and ls.face_coverage is not None \
            and ls.face_coverage < limits.min_face_coverage:
        flags.append(f"a face was synced in only {ls.face_coverage:.0%} of frames "
                     f"(minimum {limits.min_face_coverage:.0%})")
    return flags


def measure_language(lang: str, lines: list[dict], source_segments: list[Segment | dict], source_s: float, *,
                     dub_track: Path | None, target_lufs: float, target_true_peak_db: float,
                     lufs: float, true_peak_db: float | None, delivered: Path | None = None,
                     lipsync_status: str = "skipped", face_coverage: float | None = None,
                     lipsync_reason: str | None = None, asr_model=None, asr_loaded=None,
                     thresholds: QAThresholds = QAThresholds()) -> LanguageQA:
    """The QA report of one language, its flags filled.

    `lines`: the mix stage's lines.json records (start, end, text, clip, slot, speed,
    overflow, truncated; s); `source_segments`: the source's lines; `source_s`: the
    source's duration; `dub_track`: the voice-only track (dub.wav); `delivered`: the
    delivered media file; loudness in LUFS, peaks in dBTP (`true_peak_db` None: silent);
    `face_coverage`: fraction of video frames with a synced face; `asr_model`/`asr_loaded`:
    see `measure_intelligibility` (None: intelligibility not measured).
    """
    source = [_as_segment(s) for s in source_segments]
    dub_track = Path(dub_track) if dub_track is not None else None
    qa = LanguageQA(
        lang=lang,
        lines=len(lines),
        intelligibility=measure_intelligibility(lines, lang, dub_track, asr_model, asr_loaded),
        placement=measure_placement(lines, source, dub_track),
        speed=measure_speed(lines),
        duration=measure_duration(source_s, dub_track, Path(delivered) if delivered is not None else None),
        loudness=LoudnessQA(round(lufs, 2), target_lufs,
                            round(true_peak_db, 2) if true_peak_db is not None else None, target_true_peak_db),
        lipsync=LipSyncQA(lipsync_status, round(face_coverage, 3) if face_coverage is not None else None,
                          lipsync_reason),
    )
    qa.flags = flags_for(qa, thresholds)
    return qa


# --- the timeline picture ----------------------------------------------------------------

PNG_SIZE = (12.0, 3.0)  # inches at PNG_DPI: 1200 x 300 px
PNG_DPI = 100
COLORMAP = "viridis"
OVERFLOW_COLOR = "#d62728"
SOURCE_COLOR = "#9e9e9e"


def timeline_png(path: Path, source_segments: list[Segment | dict], lines: list[dict], title: str,
                 max_speed: float = MAX_SPEED) -> Path:
    """Draw the source lines (top row) and the dubbed lines (bottom row, start .. start +
    clip/speed) on one time axis; each dubbed line coloured by its speed factor (colour bar
    1.0 .. `max_speed`), the part past its slot in red, hatched. A PNG of 1200 x 300 px."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the picture is only written
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    source = [_as_segment(s) for s in source_segments]
    cap = max([max_speed, 1.0 + 1e-3] + [speed_up(line) for line in lines])
    norm, cmap = Normalize(1.0, cap), colormaps[COLORMAP]

    # A Figure outside pyplot: no global state, nothing left open between calls.
    fig = Figure(figsize=PNG_SIZE, dpi=PNG_DPI)
    ax = fig.add_axes((0.07, 0.2, 0.8, 0.65))
    ax.broken_barh([(s.start, max(s.duration, 0.0)) for s in source], (1.1, 0.8), facecolors=SOURCE_COLOR)
    for line in lines:
        start, speed = float(line["start"]), max(float(line["speed"]), 1.0)
        placed = float(line["clip"]) / speed  # the clip is already as fast as it was spoken
        fitting = min(placed, float(line["slot"])) if line.get("overflow", 0) > 0 else placed
        ax.broken_barh([(start, fitting)], (0.1, 0.8), facecolors=cmap(norm(max(speed_up(line), 1.0))))
        if placed > fitting:
            ax.broken_barh([(start + fitting, placed - fitting)], (0.1, 0.8), facecolors=OVERFLOW_COLOR,
                           hatch="//", edgecolor="black", linewidth=0.5)
    end = max([s.end for s in source] + [line["start"] + line["clip"] / max(line["speed"], 1.0) for line in lines]
              + [1.0])
    ax.set_xlim(0.0, end * 1.01)
    ax.set_ylim(0.0, 2.0)
    ax.set_yticks([0.5, 1.5], ["dub", "source"])
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=10)
    fig.legend(handles=[Patch(facecolor=OVERFLOW_COLOR, hatch="//", edgecolor="black", label="overflow")],
               loc="upper right", fontsize=8, frameon=False)
    bar = fig.colorbar(ScalarMappable(norm, cmap), cax=fig.add_axes((0.9, 0.2, 0.015, 0.65)))
    bar.set_label("speed-up factor", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=PNG_DPI, metadata={"Software": None})  # no version: same bytes
    return path
