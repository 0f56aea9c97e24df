"""Voices on the CPU: speed, peak memory, and how many lines still need a time-stretch
before and after fitting at the source.

Ten lines of an ad, in Spanish and German, each in the slot its English original takes
(espeak-ng's English at its own pace, a 0.3 s pause between lines; the tightest slots a
real transcript gives). Per backend and language, in a process of its own so that peak
memory is the backend's:

| column | what |
|---|---|
| load s | first line's extra seconds: imports and loading the model |
| speech s / s | seconds of speech made per second of compute after the load (real-time factor, higher is faster) |
| x espeak | that speed over espeak-ng's in the same run |
| peak MB | the process's peak resident memory |
| stretched before | lines longer than their slot at the voice's own pace: all would be time-stretched |
| stretched after | lines still stretched once the voice said the long ones faster (`faster`) |
| overflow after | lines that still do not fit under the 1.3 cap |

Rows: `espeak` (always); `kokoro` and `chatterbox` from `--models DIR` (a models folder, e.g.
after `dub models pull kokoro chatterbox-multilingual`), else tiny random-weight ones built
here. The tiny Kokoro has the real decoder's size (58 M of the real 82 M parameters), so its
speed is close to the real one's; its timing columns are the tiny model's (about 75 ms a
phoneme). The tiny Chatterbox (4 M of about 800 M parameters) shows the code path's cost
(conditioning, sampling loop, flow matching, vocoder, watermark), not the real model's speed;
it clones an espeak-ng English reference. Kokoro does not speak German; Chatterbox cannot set
its pace, so its lines are only time-stretched.

    python bench/voices.py [--models MODELS_DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GAP = 0.3
LINES = {
    "en": ["Meet the new Aurora headphones.", "Twenty hours of battery life.", "Noise cancelling that adapts to you.",
           "Crystal clear calls, even on the street.", "Fold them flat and take them anywhere.",
           "Pair once, switch between your devices.", "Made from recycled materials.",
           "Available in four colours.", "Order today and get free shipping.", "Aurora. Hear more."],
    "es": ["Conoce los nuevos auriculares Aurora.", "Veinte horas de batería.",
           "Cancelación de ruido que se adapta a ti.", "Llamadas nítidas, incluso en plena calle.",
           "Pliégalos y llévalos a cualquier parte.", "Vincúlalos una vez y cambia entre tus dispositivos.",
           "Fabricados con materiales reciclados.", "Disponibles en cuatro colores.",
           "Pide hoy y el envío es gratuito.", "Aurora. Escucha más."],
    "de": ["Entdecken Sie die neuen Aurora-Kopfhörer.", "Zwanzig Stunden Akkulaufzeit.",
           "Geräuschunterdrückung, die sich an Sie anpasst.", "Glasklare Anrufe, sogar auf der Straße.",
           "Flach zusammenklappen und überallhin mitnehmen.",
           "Einmal koppeln, zwischen Ihren Geräten wechseln.", "Aus recycelten Materialien hergestellt.",
           "Erhältlich in vier Farben.", "Bestellen Sie heute, der Versand ist kostenlos.",
           "Aurora. Mehr hören."],
}


def slots(work: Path) -> list:
    """The English lines' timeline: each line as long as espeak-ng says it, then a pause."""
    import soundfile as sf

    from polydub.segments import Segment
    from polydub.tts import EspeakVoice
    from polydub.tts.trim import trim_silence

    voice, start, segments = EspeakVoice("en"), 0.5, []
    for i, text in enumerate(LINES["en"]):
        out = voice.synthesize(text, "en", work / f"en{i}.wav")
        trim_silence(out)
        end = start + sf.info(out).duration
        segments.append(Segment(start, end, text))
        start = end + GAP
    return segments


def peak_mb() -> float:
    """This process's peak resident memory since it started (VmHWM: unlike getrusage's
    ru_maxrss, it does not carry over the parent's peak through fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(backend: str, lang: str, models: str | None) -> dict:
    """Run in a process of its own: synthesize the ten lines, then fit them at the source."""
    import soundfile as sf

    from polydub.audio import fit
    from polydub.tts import select_voice
    from polydub.tts.trim import trim_silence

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        segments = slots(work)
        total = segments[-1].end + 1.0
        reference = work / f"en{len(LINES['en']) - 1}.wav"  # the speaker to clone: the English voice
        voice, _ = select_voice(backend, lang, Path(models) if models else None, reference)

        def say(v, i: int, tag: str) -> float:
            out = v.synthesize(LINES[lang][i], lang, work / f"{tag}{i}.wav")
            trim_silence(out)
            return sf.info(out).duration

        first = time.perf_counter()
        durations = [say(voice, 0, "warm")]
        load = time.perf_counter() - first
        timed = time.perf_counter()
        durations = [say(voice, i, "line") for i in range(len(LINES[lang]))]
        compute = time.perf_counter() - timed
        before = fit.plan_fits(segments, durations, total)
        rates = [1.0] * len(durations)
        for f in before:
            if f.speed > 1.0 + fit.EPS and voice.sets_pace:
                faster = say(voice.faster(f.speed), f.index, "faster")
                if faster < durations[f.index]:
                    durations[f.index], rates[f.index] = faster, f.speed
        after = fit.plan_fits(segments, durations, total, spoken_faster=rates)
        return {"load": max(0.0, load - compute / len(LINES[lang])),  # the first line, less a line's share
                "rtf": sum(durations) / compute if compute else 0.0,
                "peak_mb": peak_mb(),
                "before": sum(f.speed > 1.0 + fit.EPS for f in before),
                "after": sum(f.speed > 1.0 + fit.EPS for f in after),
                "overflow": sum(f.overflow > 0 for f in after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="models folder holding kokoro/ and chatterbox-multilingual/ "
                        "(default: tiny random ones)")
    parser.add_argument("--one", nargs=2, metavar=("BACKEND", "LANG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.models)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models
        if not models:  # built in processes of their own: this one stays small and idle
            for name in ("kokoro", "chatterbox-multilingual"):
                subprocess.run([sys.executable, str(ROOT / "tests" / "tiny_models.py"), name, tmp],
                               check=True, capture_output=True, timeout=600)
            models = tmp
        rows = []
        for backend in ("espeak", "kokoro", "chatterbox"):
            for lang in ("es", "de"):
                if backend == "kokoro" and lang == "de":
                    rows.append((backend, lang, None))
                    continue
                proc = subprocess.run([sys.executable, __file__, "--one", backend, lang, "--models", models],
                                      capture_output=True, text=True, timeout=1800)
                if proc.returncode != 0:
                    raise SystemExit(f"{backend} {lang}: {proc.stderr.strip().splitlines()[-1]}")
                rows.append((backend, lang, json.loads(proc.stdout.strip().splitlines()[-1])))
    base = {lang: r["rtf"] for b, lang, r in rows if b == "espeak" and r}
    tiny = "" if args.models else " (tiny)"
    print("| voice | lang | load s | speech s / s | x espeak | peak MB | stretched before | stretched after "
          "| overflow after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, lang, r in rows:
        name = backend if backend == "espeak" else backend + tiny
        if r is None:
            print(f"| {name} | {lang} | not spoken | | | | | | |")
            continue
        print(f"| {name} | {lang} | {r['load']:.2f} | {r['rtf']:.1f} | {r['rtf'] / base[lang]:.2f} "
              f"| {r['peak_mb']:.0f} | {r['before']}/10 | {r['after']}/10 | {r['overflow']}/10 |")


if __name__ == "__main__":
    main()
