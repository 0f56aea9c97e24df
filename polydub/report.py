"""The job report: what a dub run made of each language, and how.

Built from the typed stage results as the job runs; the command line's table, the Prefect
artifacts, the catalog flow and crash handling read its attributes. `to_json` is
NAME.report.json (the structure the report has always had, so files written before these
types existed read the same); `from_json` reads one back, and the flow's result is that
JSON, which Prefect stores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Generic, TypeVar

Out = TypeVar("Out")


def speed_up(line: dict) -> float:
    """How much faster than its voice's own pace a line (a record of the mix's lines.json) is
    heard: spoken faster at the source (`source_speed`), then stretched (`speed`)."""
    return float(line["speed"]) * float(line.get("source_speed", 1.0))


@dataclass
class StageResult(Generic[Out]):
    """A stage as this job saw it: its folder in the cache, what it made (`output`, typed
    per stage: `SourceAudio`, `Translation`, ...; None when it did not run), and how.

    `status`: done | cached | skipped | failed (a best-effort stage that did not work)."""

    stage: str
    lang: str | None
    folder: str
    output: Out | None = None
    status: str = "done"
    backend: str | None = None
    model_version: str | None = None
    licence: str | None = None  # label of the licence of the model that made it
    seconds: float = 0.0  # spent in this job (0 when cached)
    reason: str | None = None  # why it was skipped or failed
    rebuilt: str | None = None  # the damage of the cache entry this run replaced

    def file(self, name: str) -> str:
        """The path of one of the stage's files. For an entry reused from a bucket
        (DUB_STORAGE_URL), the file is brought here when first asked for, and checked against
        its recorded sha256."""
        path = Path(self.folder) / name
        if not path.exists() and self.folder:
            from polydub.storage.bucket_cache import bring

            bring(Path(self.folder), name)
        return str(path)

    @property
    def note(self) -> str:
        """What the run says of itself (an output's `note`, where it has one), and a rebuild."""
        said = getattr(self.output, "note", "") or ""
        return "; ".join(filter(None, [said, f"rebuilt: {self.rebuilt}" if self.rebuilt else ""]))


def _known(kind: type, data: dict) -> dict:
    """The entries of `data` that `kind` has a field for (an older or trimmed file may lack
    some; those keep their defaults)."""
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class StageTime:
    """One language stage as this job saw it."""

    status: str  # done | cached | skipped | failed
    seconds: float | None = 0.0


@dataclass
class Backends:
    """What made a language's dub, and why (the reasons are the run's own words)."""

    translate: str | None = None
    voice: str | None = None
    voice_model: str | None = None
    voice_reason: str | None = None
    lipsync: str = "skipped"  # the lip-sync stage's status
    lipsync_reason: str | None = None
    background: str | None = None  # demucs | band-cut
    background_reason: str | None = None


AWAITING_REVIEW = "awaiting review"  # a language (and its job) waiting for a person's approval
REJECTED = "rejected"  # a language a person rejected (its script or its result): not delivered


@dataclass
class LanguageReport:
    """One target language: delivered (`status` done, with how), awaiting review (offered
    to a person), rejected (by that person, `error` says why) or failed (with `error`)."""

    status: str = "failed"
    error: str | None = None  # a delivered language has one when a later job-wide step failed
    outputs: dict[str, str] = field(default_factory=dict)  # mp4 | m4a | srt | vtt -> path
    backends: Backends | None = None  # None: not delivered
    speakers: dict[str, dict] = field(default_factory=dict)  # speaker -> voice, backend, reason
    licences: dict[str, str] = field(default_factory=dict)  # stage -> licence of the model that ran
    watermarks: list[str] = field(default_factory=list)  # what the voices marked their speech with
    segments: int = 0
    loudness_lufs: float | None = None  # measured on the mix
    true_peak_db: float | None = None
    loudness_target_lufs: float | None = None
    true_peak_target_db: float | None = None
    sped_up: int = 0
    overflowing: int = 0
    lines: list[dict] = field(default_factory=list)  # the fit's record of each line, with speaker and voice
    stages: dict[str, StageTime] = field(default_factory=dict)
    qa: dict | None = None  # the measured QA report (`qa.LanguageQA.to_json()`), or {"why": ...} not measured
    timeline: str | None = None  # NAME.<lang>.timeline.png: its lines on the source's timeline

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def media(self) -> str | None:
        """The delivered video (or audio) file."""
        return self.outputs.get("mp4") or self.outputs.get("m4a")

    @classmethod
    def delivered(cls, outputs: dict[str, str], translation: StageResult, speech: StageResult, mix: StageResult,
                  video: StageResult | None, shared: dict[str, str | None]) -> LanguageReport:
        """A delivered language from its stages; `shared`: licences of the per-video stages'
        models by stage."""
        lines = json.loads(Path(mix.file("lines.json")).read_text())
        for line, clip in zip(lines, speech.output.clips):  # who says each line, in which voice
            line.update(speaker=clip.speaker, voice=clip.voice)
            line.setdefault("source_speed", clip.rate)  # a mix made before lines said it
        made_by = {**shared, **{r.stage: r.licence for r in (translation, speech, video)
                                if r is not None and r.status in ("done", "cached")}}
        return cls(
            status="done",
            outputs=outputs,
            backends=Backends(
                translate=translation.backend,
                voice=speech.backend, voice_model=speech.model_version, voice_reason=speech.output.reason,
                lipsync=video.status if video else "skipped", lipsync_reason=video.reason if video else None,
                background=mix.output.background, background_reason=mix.output.background_reason),
            speakers=speech.output.speakers,
            licences={stage: licence for stage, licence in made_by.items() if licence},
            watermarks=list(speech.output.watermarks),
            segments=len(lines),
            loudness_lufs=mix.output.loudness,
            true_peak_db=mix.output.true_peak_db,
            loudness_target_lufs=mix.output.target_lufs,
            true_peak_target_db=mix.output.target_true_peak_db,
            sped_up=sum(speed_up(line) > 1.0 for line in lines),
            overflowing=sum(line["overflow"] > 0 for line in lines),
            lines=lines,
            stages={r.stage: StageTime(r.status, r.seconds) for r in (translation, speech, mix, video)
                    if r is not None},
        )

    def to_json(self) -> dict:
        stages = {stage: {"status": s.status, "seconds": s.seconds} for stage, s in self.stages.items()}
        if self.backends is None:  # not delivered: why, and how far it got
            return {"status": self.status, "stages": stages, **({"error": self.error} if self.error else {})}
        return {
            "status": self.status, "stages": stages,
            **({"error": self.error} if self.error else {}),
            "outputs": dict(self.outputs),
            "backends": {f.name: getattr(self.backends, f.name) for f in fields(Backends)},
            "speakers": self.speakers, "licences": dict(self.licences),
            **({"watermarks": list(self.watermarks)} if self.watermarks else {}), "segments": self.segments,
            "loudness_lufs": self.loudness_lufs, "true_peak_db": self.true_peak_db,
            "loudness_target_lufs": self.loudness_target_lufs, "true_peak_target_db": self.true_peak_target_db,
            "sped_up": self.sped_up, "overflowing": self.overflowing, "lines": self.lines,
            **({"qa": self.qa} if self.qa is not None else {}),
            **({"timeline": self.timeline} if self.timeline else {}),
        }

    @classmethod
    def from_json(cls, data: dict) -> LanguageReport:
        known = _known(cls, data)
        if known.get("backends") is not None:
            known["backends"] = Backends(**_known(Backends, known["backends"]))
        known["stages"] = {stage: StageTime(**_known(StageTime, s)) for stage, s in (data.get("stages") or {}).items()}
        return cls(**known)


@dataclass
class Background:
    """What the dubs are mixed over: the separated music and effects, or the band-cut source."""

    method: str  # demucs | band-cut
    status: str  # the separate stage's
    model: str | None = None
    licence: str | None = None
    reason: str | None = None

    @classmethod
    def of(cls, separation: StageResult) -> Background:
        return cls("demucs" if separation.status in ("done", "cached") else "band-cut", separation.status,
                   separation.model_version, separation.licence, separation.reason or separation.note or None)


@dataclass
class TranscriptReport:
    """How the source's lines were had."""

    backend: str | None
    status: str
    segments: int = 0
    diarizer: str | None = None
    licence: str | None = None

    @classmethod
    def of(cls, transcript: StageResult) -> TranscriptReport:
        return cls(transcript.backend, transcript.status, transcript.output.segments, transcript.output.diarizer,
                   transcript.licence)


@dataclass
class JobReport:
    """One job: its source, each language, and the job's end. Fields that a job which
    stopped early never reached stay None (and out of the JSON)."""

    job: int | None = None  # the catalog's job id
    input: str | None = None
    source_hash: str | None = None
    duration: float | None = None  # s, the source's
    out_dir: str | None = None
    flow_run: str | None = None  # the Prefect run's UI address
    languages: dict[str, LanguageReport] = field(default_factory=dict)
    source_loudness_lufs: float | None = None  # set (with the true peak) once the source is measured
    source_true_peak_db: float | None = None  # None: a silent source
    background: Background | None = None
    source_lang: str | None = None  # set with `transcript`
    transcript: TranscriptReport | None = None
    multitrack: str | None = None
    error: str | None = None  # what stopped the job, or failed after its languages
    status: str = "failed"  # done | partial | failed | cancelled | interrupted | awaiting review
    seconds: float = 0.0
    stages: list[dict] = field(default_factory=list)  # every stage run, as the catalog recorded it
    # Not in NAME.report.json itself: set after it is written.
    report: str | None = None  # where NAME.report.json is
    warnings: list[str] = field(default_factory=list)  # what could not be shown in Prefect
    not_recorded: str | None = None  # the run's end did not reach Prefect (outcome.finished_despite)
    up_to_date: bool = False  # an earlier job's report: nothing changed since, no flow ran

    @classmethod
    def failed(cls, error: str, **known) -> JobReport:
        """A job known only to have failed (its run broke, or it never started)."""
        return cls(status="failed", error=error, **known)

    @property
    def delivered(self) -> list[str]:
        return [lang for lang, entry in self.languages.items() if entry.done]

    def language(self, lang: str) -> LanguageReport:
        """The language's entry; a failed one with no detail when the job never got to it."""
        return self.languages.get(lang) or LanguageReport()

    @property
    def awaiting_review(self) -> list[str]:
        return [lang for lang, entry in self.languages.items() if entry.status == AWAITING_REVIEW]

    def languages_status(self) -> str:
        """awaiting review (a language waits for a person), else done (every language
        delivered), partial (some) or failed (none)."""
        if self.awaiting_review:
            return AWAITING_REVIEW
        done = len(self.delivered)
        return "done" if done == len(self.languages) else ("partial" if done else "failed")

    def failures(self) -> str:
        """`es: translate es: ...; fr: ...`: each failed language and why, one line."""
        return "; ".join(f"{lang}: {entry.error or 'failed'}" for lang, entry in self.languages.items()
                         if not entry.done and entry.status != AWAITING_REVIEW)

    def fail(self, error: str) -> None:
        """The job broke: say why, and on every language that has no reason of its own."""
        self.error = error
        for entry in self.languages.values():
            entry.error = entry.error or error

    def to_json(self) -> dict:
        """NAME.report.json's structure (and `dub --json`'s, with where the file is)."""
        data: dict = {"job": self.job, "input": self.input, "source_hash": self.source_hash,
                      "duration": self.duration, "out_dir": self.out_dir, "flow_run": self.flow_run,
                      "languages": {lang: entry.to_json() for lang, entry in self.languages.items()}}
        if self.source_loudness_lufs is not None:
            data.update(source_loudness_lufs=self.source_loudness_lufs, source_true_peak_db=self.source_true_peak_db)
        if self.background is not None:
            data["background"] = {f.name: getattr(self.background, f.name) for f in fields(Background)}
        if self.transcript is not None:
            data["source_lang"] = self.source_lang
            data["transcript"] = {f.name: getattr(self.transcript, f.name) for f in fields(TranscriptReport)}
        for name in ("multitrack", "error"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        data.update(status=self.status, seconds=self.seconds, stages=self.stages)
        if self.report is not None:
            data["report"] = self.report
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if self.not_recorded is not None:
            data["not_recorded"] = self.not_recorded
        if self.up_to_date:
            data["up_to_date"] = True
        return data

    @classmethod
    def from_json(cls, data: dict) -> JobReport:
        """A report as `to_json` (or any earlier version of polydub) wrote it."""
        known = _known(cls, data)
        known["languages"] = {lang: LanguageReport.from_json(entry or {})
                              for lang, entry in (data.get("languages") or {}).items()}
        if known.get("background") is not None:
            known["background"] = Background(**_known(Background, known["background"]))
        if known.get("transcript") is not None:
            known["transcript"] = TranscriptReport(**_known(TranscriptReport, known["transcript"]))
        known["stages"] = list(known.get("stages") or [])
        known["warnings"] = list(known.get("warnings") or [])
        return cls(**known)

    @classmethod
    def load(cls, path: str | Path) -> JobReport:
        """NAME.report.json as written (a path or an object store URL); `report` says where it is."""
        from polydub.storage import objects

        report = cls.from_json(json.loads(objects.read_text(str(path))))
        report.report = str(path)
        return report
