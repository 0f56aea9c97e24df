"""The QA stage: each delivered language measured (`polydub.qa`), its timeline picture
published beside the report as NAME.<lang>.timeline.png."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from polydub import cache, qa
from polydub.errors import InputError
from polydub.job import JobPlan
from polydub.report import StageResult
from polydub.storage import objects
from polydub.tasks.common import JobContext, run_stage
from polydub.tasks.deliver import Assembly
from polydub.tasks.language import DUB_TRACK, Mixdown
from polydub.tasks.lipsync import LipSynced
from polydub.tasks.source import SourceAudio, Transcription, load_segments

TIMELINE = "timeline.png"


@dataclass
class Quality:
    """One language's measured QA report (`qa.LanguageQA.to_json()`) and its picture."""

    report: dict
    flags: list[str]
    timeline: str  # file in the folder
    verdict: str = ""  # "passed", or the flags in one line (what `dub show` prints)


def timeline_name(plan: JobPlan, lang: str) -> str:
    return f"{plan.name}.{lang}.timeline.png"


def asr_for_qa(plan: JobPlan):
    """The job's speech recognition model (`--asr-model`), to hear the dub back, or None
    and why not (it is not on this machine)."""
    from polydub.asr.locate import locate_model

    try:
        return locate_model(plan.options.asr_model), None
    except InputError:
        return None, f"no speech recognition model {plan.options.asr_model!r} on this machine to hear it back " \
                     "(--asr-model; dub models list)"


@task(name="qa", task_run_name="qa[{lang}]", cache_policy=NONE, persist_result=False)
def check_quality(ctx: JobContext, plan: JobPlan, source: StageResult[SourceAudio],
                  transcript: StageResult[Transcription], mixed: StageResult[Mixdown],
                  video: StageResult[LipSynced] | None, assembled: StageResult[Assembly],
                  lang: str) -> StageResult[Quality]:
    """Measure the delivered language against its source and targets; publish its timeline."""
    asr, no_asr = asr_for_qa(plan)
    thresholds = qa.QAThresholds.configured()
    lipsynced = video is not None and video.status in ("done", "cached")
    coverage = None
    if lipsynced and video.output.frames:
        coverage = (video.output.face_frames or 0) / video.output.frames

    def build(folder: Path) -> Quality:
        lines = json.loads(Path(mixed.file(qa.LINES)).read_text(encoding="utf-8"))
        source_lines = load_segments(transcript)
        out = mixed.output
        measured = qa.measure_language(
            lang, lines, source_lines, source.output.duration, dub_track=Path(mixed.file(DUB_TRACK)),
            target_lufs=out.target_lufs, target_true_peak_db=out.target_true_peak_db, lufs=out.loudness,
            true_peak_db=out.true_peak_db, delivered=Path(assembled.file(assembled.output.files[0])),
            lipsync_status=video.status if video is not None else "skipped", face_coverage=coverage,
            lipsync_reason=video.reason if video is not None else None, asr_model=asr, thresholds=thresholds)
        if no_asr:
            measured.intelligibility = qa.Intelligibility(why=no_asr)
        qa.timeline_png(folder / TIMELINE, source_lines, lines, f"{plan.name} {lang}", max_speed=plan.options.max_speed)
        return Quality(measured.to_json(), measured.flags, TIMELINE,
                       "passed" if not measured.flags else "; ".join(measured.flags))

    key = cache.stage_key("qa", mix=Path(mixed.folder).name, assembled=Path(assembled.folder).name,
                          video=Path(video.folder).name if lipsynced else None, lang=lang,
                          asr=asr.version if asr else None, thresholds=asdict(thresholds),
                          max_speed=plan.options.max_speed, version=1)
    result = run_stage(ctx, "qa", lang, key, build, Quality, backend="measure",
                       model_version=asr.version if asr else None)
    objects.place(result.file(TIMELINE), objects.join(plan.out_dir, timeline_name(plan, lang)))
    return result
