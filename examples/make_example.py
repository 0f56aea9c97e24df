"""Build the bundled example: a 10 s talking-head clip with its approved script.

A real face (scikit-image's `astronaut` photo) with gentle motion, English speech from
espeak-ng over a quiet music bed, and sidecar subtitles: the transcript
(`talking_head.en.srt`) and approved translations (`talking_head.{es,fr,de}.srt`), so
`dub examples/talking_head.mp4 --langs es,fr,de` runs offline with no model weights.

    python examples/make_example.py [OUT_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from skimage import data
from skimage.io import imsave

NAME = "talking_head"
DURATION = 10.0  # seconds
FPS = 25
SR = 48_000
SIZE = 448  # output frame size; the photo is 512x512, cropped with a slow drift
LINES = [  # start, end, English, Spanish, French, German
    (0.5, 2.8, "Hello, and welcome to our new product.", "Hola, y bienvenidos a nuestro nuevo producto.",
     "Bonjour et bienvenue dans notre nouveau produit.", "Hallo und willkommen bei unserem neuen Produkt."),
    (3.2, 5.6, "It saves you time every single day.", "Te ahorra tiempo todos los días.",
     "Il vous fait gagner du temps chaque jour.", "Es spart Ihnen jeden Tag Zeit."),
    (6.0, 9.2, "Try it today and tell us what you think.", "Pruébalo hoy y dinos qué piensas.",
     "Essayez-le aujourd'hui et dites-nous ce que vous en pensez.", "Probieren Sie es heute aus und sagen Sie uns Ihre Meinung."),
]
LANGS = ["en", "es", "fr", "de"]


def srt(lines: list[tuple[float, float, str]]) -> str:
    def ts(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "\n".join(f"{i}\n{ts(a)} --> {ts(b)}\n{text}\n" for i, (a, b, text) in enumerate(lines, 1))


def run(args: list[str]) -> None:
    subprocess.run(args, check=True, timeout=300, capture_output=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        imsave(tmp / "face.png", data.astronaut())
        # Speech: each line placed at its start time, so the transcript's times are true.
        n = int(DURATION * SR)
        t = np.arange(n) / SR
        bed = 0.04 * (np.sin(2 * np.pi * 110 * t) + 0.6 * np.sin(2 * np.pi * 164.8 * t))  # music bed
        speech = np.zeros(n)
        for i, (start, end, text, *_) in enumerate(LINES):
            wav = tmp / f"line{i}.wav"
            run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(wav), text])
            clip, rate = soundfile.read(wav)
            clip = np.interp(np.arange(int(len(clip) * SR / rate)) * rate / SR, np.arange(len(clip)), clip)
            a = int(start * SR)
            clip = clip[: int(end * SR) - a]
            speech[a:a + len(clip)] += clip
        soundfile.write(tmp / "audio.wav", np.stack([speech * 0.8 + bed, speech * 0.8 + bed * 0.9], 1), SR)
        # Gentle motion: a slow drift of the crop window over the photo.
        drift = f"crop={SIZE}:{SIZE}:32+24*sin(t*0.9):24+16*sin(t*1.3)"
        run(["ffmpeg", "-y", "-loglevel", "error", "-loop", "1", "-framerate", str(FPS), "-i", str(tmp / "face.png"),
             "-i", str(tmp / "audio.wav"), "-t", str(DURATION), "-vf", f"{drift},format=yuv420p",
             "-c:v", "libx264", "-preset", "slow", "-crf", "28", "-r", str(FPS),
             "-c:a", "aac", "-b:a", "96k", "-metadata:s:a:0", "language=eng",
             "-movflags", "+faststart", str(out / f"{NAME}.mp4")])
    for j, lang in enumerate(LANGS):
        (out / f"{NAME}.{lang}.srt").write_text(srt([(a, b, texts[j]) for a, b, *texts in LINES]), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
