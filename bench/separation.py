"""How much of the original voice is left in the dubbed track during speech: band-cut vs
source separation.

A source is built whose parts are known: a music-and-effects bed (chords, a hi-hat-like
noise, a 2.5 kHz effect tone) plus the original speaker (espeak-ng, English) on a few lines;
the dub is espeak-ng Spanish on the same lines. Each background method is mixed twice with
`mix.mix`, the same dub and the same loudness target: once over the source, once over the
bed alone (what a perfect separation would give). Their difference, after fitting the one
gain that matches them outside speech, is what the original voice put into the dubbed
track. Reported during speech, in dB relative to the original voice at the same gain
(lower is better; -inf: none left), and relative to the dub there. Also how much of the
bed's 2.5 kHz effect survives under the dub (band-cut removes the speech band with the
voice), and seconds per method as a ratio to the band-cut in the same process.

Rows: `band-cut` (no model); `demucs` with `--model DIR` (a folder holding a Demucs `.th`
checkpoint, e.g. `dub models pull htdemucs`), else a tiny random HT-Demucs built here: a
random model separates nothing, its row only shows the code path and its cost; `oracle`,
the bed itself given as the background (the floor of the measurement).

    python bench/separation.py [--model DIR] [--seconds 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from polydub.audio import mix, separate  # noqa: E402
from polydub.media import SAMPLE_RATE  # noqa: E402
from polydub.segments import Segment  # noqa: E402

LINE_EVERY = 8.0  # seconds between line starts
LINE_START = 1.0
EFFECT_HZ = 2500.0
TARGET = mix.Loudness(-18.0, -1.0)  # one target for every mix: gains comparable
ORIGINAL = "The original speaker tells you about our product."
DUBBED = "El locutor doblado presenta nuestro producto."


def speak(text: str, voice: str, out: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True, timeout=60, capture_output=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(out), "-ar", str(SAMPLE_RATE), "-ac", "1",
                    str(out.with_suffix(".48k.wav"))], check=True, timeout=60)
    return sf.read(out.with_suffix(".48k.wav"), dtype="float64")[0]


def bed(frames: int) -> np.ndarray:
    """Stereo music and effects: a chord that changes every 2 s, noise bursts, a 2.5 kHz tone."""
    rng = np.random.default_rng(0)
    t = np.arange(frames) / SAMPLE_RATE
    roots = np.array([110.0, 146.8, 130.8, 98.0])[(t // 2).astype(int) % 4]
    chord = sum(np.sin(2 * np.pi * roots * ratio * t) / (k + 1) for k, ratio in enumerate((1, 1.25, 1.5, 2)))
    hats = rng.normal(0, 1, frames) * (np.mod(t, 0.25) < 0.03)
    x = 0.05 * chord + 0.02 * hats + 0.02 * np.sin(2 * np.pi * EFFECT_HZ * t)
    return np.stack([x, np.roll(x, 240)], 1)


def place(clip: np.ndarray, frames: int, starts: list[float]) -> np.ndarray:
    y = np.zeros(frames)
    for s in starts:
        a = round(s * SAMPLE_RATE)
        n = min(len(clip), frames - a)
        y[a:a + n] += clip[:n]
    return y


def amplitude(x: np.ndarray, freq: float, mask: np.ndarray) -> float:
    t = np.arange(len(x)) / SAMPLE_RATE
    return 2 * abs(np.mean((x * np.exp(-2j * np.pi * freq * t))[mask]))


def run_method(name: str, work: Path, sources: dict[str, Path], dub: Path, speech: list[Segment],
               model) -> tuple[dict[str, np.ndarray], float]:
    """Mixes of the dub over each source ('with voice', 'bed only') by one method; seconds."""
    out, seconds = {}, 0.0
    level = mix.measure(sources["with voice"])
    for which, wav in sources.items():
        started = time.perf_counter()
        background = None
        if name == "oracle":
            background = sources["bed only"]
        elif name == "demucs":
            background = separate.separate(model, wav, work / f"bg-{which}.wav")
        # the dub at the same gain in both: matched to the source with its voice
        y = mix.mix(wav, dub, speech, work / f"{name}-{which}.wav", target=TARGET, background_wav=background,
                    source_level=level).path
        seconds += time.perf_counter() - started
        out[which] = sf.read(y, dtype="float64")[0][:, 0]  # left channel
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="folder with a Demucs .th checkpoint (default: a tiny random one)")
    parser.add_argument("--seconds", type=float, default=16.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-separation-") as tmp:
        work = Path(tmp)
        frames = round(args.seconds * SAMPLE_RATE)
        starts = list(np.arange(LINE_START, args.seconds - LINE_EVERY + 1, LINE_EVERY))
        voice_clip, dub_clip = speak(ORIGINAL, "en", work / "en.wav"), speak(DUBBED, "es", work / "es.wav")
        speech = [Segment(s, s + len(voice_clip) / SAMPLE_RATE, ORIGINAL) for s in starts]
        voice, music = place(voice_clip, frames, starts), bed(frames)
        sources = {"with voice": work / "source.wav", "bed only": work / "bed.wav"}
        sf.write(sources["with voice"], (music + voice[:, None]).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        sf.write(sources["bed only"], music.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
        sf.write(work / "dub.wav", place(dub_clip, frames, starts).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")

        if args.model:
            checkpoint = separate.locate(args.model.parent) if args.model.name == separate.MODEL_DIR else None
            checkpoint = checkpoint or next(iter(sorted(args.model.glob("*.th"))), None)
            if checkpoint is None:
                sys.exit(f"--model {args.model}: no Demucs .th checkpoint there")
            label = f"demucs ({checkpoint.name})"
        else:
            sys.path.insert(0, str(ROOT))
            from tests.tiny_models import build_demucs

            checkpoint = build_demucs(work / "tiny")
            label = "demucs (tiny RANDOM model: separates nothing)"
        model = separate.load(checkpoint)

        t = np.arange(frames) / SAMPLE_RATE
        inside = np.zeros(frames, bool)
        for s in speech:
            inside |= (t >= s.start + 0.1) & (t < s.end - 0.1)
        outside = np.zeros(frames, bool)
        for s in speech:
            outside |= (t >= s.end + 0.6) & (t < s.end + LINE_EVERY - len(voice_clip) / SAMPLE_RATE - 0.6)

        rows, baseline = [], None
        for name, shown in (("band-cut", "band-cut"), ("demucs", label), ("oracle", "oracle (the bed itself)")):
            mixes, seconds = run_method(name, work, sources, work / "dub.wav", speech, model)
            with_voice, clean = mixes["with voice"], mixes["bed only"]
            a = np.dot(with_voice[outside], clean[outside]) / np.dot(clean[outside], clean[outside])
            residual = with_voice - a * clean
            gain = np.sqrt(np.mean(clean[outside] ** 2) / np.mean(music[outside, 0] ** 2))
            left = 10 * np.log10(np.mean(residual[inside] ** 2) / np.mean((gain * voice[inside]) ** 2) + 1e-12)
            dub_level = np.mean(clean[inside] ** 2)  # the bed only mix during speech: dub + ducked bed
            vs_dub = 10 * np.log10(np.mean(residual[inside] ** 2) / dub_level + 1e-12)
            effect = amplitude(clean, EFFECT_HZ, inside) / amplitude(clean, EFFECT_HZ, outside)
            baseline = baseline or seconds
            rows.append((shown, left, vs_dub, 20 * np.log10(effect + 1e-12), seconds, seconds / baseline))

        print(f"{args.seconds:.0f} s source, {len(speech)} lines; mixes at {TARGET.lufs} LUFS\n")
        print("| background | original voice left (dB re voice) | (dB re dub) | 2.5 kHz effect under the dub (dB) "
              "| seconds (2 mixes) | x band-cut |")
        print("|---|---|---|---|---|---|")
        for shown, left, vs_dub, effect, seconds, ratio in rows:
            print(f"| {shown} | {left:.1f} | {vs_dub:.1f} | {effect:.1f} | {seconds:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
