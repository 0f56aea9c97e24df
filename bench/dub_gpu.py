"""End to end on one GPU machine: a 30 s ad dubbed into es, fr and de, against the
LatentSync reference's published cost of lip-sync alone.

    python bench/dub_gpu.py --prepare DIR                 # here (CPU, MediaPipe): the ad, its scripts, its face track
    python bench/dub_gpu.py --inputs DIR [--json OUT]     # the GPU machine: the measurement
    python bench/dub_gpu.py --smoke                       # CPU, tiny random models, 3 s clip: checks the script

The ad is the bundled example looped three times (30 s), with its approved transcript and
translations repeated every 10 s (DIR/ad.{en,es,fr,de}.srt), and its face track computed
beforehand with MediaPipe (DIR/ad.track.npz; the GPU machine has no MediaPipe).

The measurement is a plain sequential script in this process, like `baseline()` in
bench/pipeline.py: polydub's own stage functions, no Prefect, catalog or cache. Stages:
probe + extract audio; speech recognition (openai-whisper "small", random weights, greedy,
temperature 0 only; its text is discarded: the approved transcript is used, as a job with
a transcript sidecar would); translation (the approved scripts); voice (Coqui XTTS-v2 at
its full size with random weights, cloning the speaker from a reference cut from the
source); fit + mix; lip-sync (`stage.lipsync_video`, the full-size LatentSync 1.5 UNet and
SD VAE from bench/lipsync_gpu.py's `build_models`, random weights); assembly per language
(lip-synced video + mix + subtitles) and the multi-track file. Models are built (and XTTS
saved and loaded through polydub's own loader) before the clock starts: the wall time is a
warm worker's, with the models resident; building and loading are printed apart.

A random XTTS GPT never emits its stop token (it is also suppressed, so that no line stops
early by chance): each line's audio tokens are capped at what its time slot needs (21.5
tokens per second of slot x 1.2), about what the real model generates for a line that fits.
"""

from __future__ import annotations

import argparse
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import lipsync_gpu  # noqa: E402  (bench/lipsync_gpu.py: build_models)
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from polydub import assemble, config, languages, media  # noqa: E402
from polydub.audio import fit, mix
from polydub.lipsync import stage  # noqa: E402
from polydub.options import DEFAULT_LOUDNESS, DEFAULT_MAX_SPEED  # noqa: E402
from polydub.segments import clip_to, read_subtitles, write_subtitles  # noqa: E402
from polydub.tts.coqui import CoquiVoice  # noqa: E402
from polydub.tts.coqui import load as load_coqui  # noqa: E402
from polydub.tts.reference import cut_reference  # noqa: E402
from polydub.tts.trim import trim_silence  # noqa: E402

EXAMPLE = ROOT / "examples" / "talking_head.mp4"
EXAMPLE_SECONDS = 10.0  # the example's lines repeat every 10 s in the ad
NAME = "ad"
SOURCE_LANG = "en"
LANGS = ("es", "fr", "de")
AD_SECONDS = 30.0
SMOKE_SECONDS = 1.6  # the example's first line, cut short
TRACK_RES = 256  # LatentSync 1.5's face size; the track is rescaled to the models' own
SMOKE_TIMEOUT = 600  # seconds for the smoke run's measurement process
STAGES = ("probe", "transcribe", "translate", "voice", "mix", "lipsync", "assemble")
STAGE_NAMES = {"probe": "probe + extract audio", "transcribe": "transcribe", "translate": "translate",
               "voice": "voice", "mix": "fit + mix", "lipsync": "lip-sync", "assemble": "assemble + multitrack"}
# LatentSync's published cost of lip-sync alone: 28 s of compute per 10 s of video, per language
REFERENCE_S_PER_VIDEO_S = 2.8
GOAL_S = 60.0

# whisper "small" (openai-whisper's ModelDimensions), and the tests' tiny one (tests/tiny_models.py)
WHISPER_SMALL = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=768, n_audio_head=12, n_audio_layer=12,
                     n_vocab=51865, n_text_ctx=448, n_text_state=768, n_text_head=12, n_text_layer=12)
WHISPER_TINY_RANDOM = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=4,
                           n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
# XTTS-v2's published config.json (coqui/XTTS-v2 v2.0.3): model_args and inference settings
XTTS_V2_ARGS = dict(
    gpt_batch_size=1, enable_redaction=False, kv_cache=True, num_chars=255, gpt_max_audio_tokens=605,
    gpt_max_text_tokens=402, gpt_max_prompt_tokens=70, gpt_layers=30, gpt_n_model_channels=1024, gpt_n_heads=16,
    gpt_num_audio_tokens=1026, gpt_start_audio_token=1024, gpt_stop_audio_token=1025, gpt_code_stride_len=1024,
    gpt_use_masking_gt_prompt_approach=True, gpt_use_perceiver_resampler=True, input_sample_rate=22050,
    output_sample_rate=24000, output_hop_length=256, decoder_input_dim=1024, d_vector_dim=512,
    cond_d_vector_in_each_upsampling_layer=True, duration_const=102400)
XTTS_V2_TEXT_TOKENS = 6681  # its vocab.json's size (gpt_number_text_tokens)
XTTS_V2_INFERENCE = dict(temperature=0.75, length_penalty=1.0, repetition_penalty=5.0, top_k=50, top_p=0.85,
                         num_gpt_outputs=1, gpt_cond_len=30, gpt_cond_chunk_len=4, max_ref_len=30,
                         sound_norm_refs=False)
# tests/test_tts.py's tiny XTTS: a one-layer GPT, XTTS's own decoder
XTTS_TINY_ARGS = dict(gpt_layers=1, gpt_n_model_channels=32, gpt_n_heads=2, gpt_max_audio_tokens=20,
                      decoder_input_dim=32)
XTTS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-áàâäãåçéèêëíìîïñóòôöõúùûüýÿœæß¿¡"
AUDIO_TOKENS_PER_S = 22050 / 1024  # XTTS's GPT: one audio token per 1024 samples at 22.05 kHz
TOKEN_MARGIN = 1.2


# --- the inputs --------------------------------------------------------------------------------

def prepare(folder: Path, seconds: float = AD_SECONDS) -> None:
    """The ad (the example looped, stream copy), its sidecar scripts, its face track."""
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"{NAME}.mp4"
    loops = max(0, math.ceil(seconds / EXAMPLE_SECONDS) - 1)
    media.ffmpeg("-stream_loop", str(loops), "-i", str(EXAMPLE), "-t", f"{seconds:.3f}", "-map", "0",
                 "-c", "copy", "-movflags", "+faststart", str(video), what="looping the example")
    duration = media.probe(video).duration
    blocks = math.ceil(duration / EXAMPLE_SECONDS)
    for lang in (SOURCE_LANG, *LANGS):
        lines = read_subtitles(EXAMPLE.with_name(f"talking_head.{lang}.srt"))
        shifted = clip_to([replace(s, start=b * EXAMPLE_SECONDS + s.start, end=b * EXAMPLE_SECONDS + s.end)
                           for b in range(blocks) for s in lines], duration - 0.05)
        write_subtitles(shifted, folder / f"{NAME}.{lang}.srt")
    track_file = folder / f"{NAME}.track.npz"
    track_file.unlink(missing_ok=True)
    started = time.perf_counter()
    track, _ = stage.load_or_track(video, track_file, TRACK_RES)
    print(f"prepared {folder}: {video.name} {duration:.2f} s, {len(shifted)} lines per language; face track "
          f"{len(track)} frames, {int(track.has_face.sum())} with a face, {time.perf_counter() - started:.1f} s "
          f"(MediaPipe); {sum(f.stat().st_size for f in folder.iterdir()) / 1e6:.2f} MB", flush=True)


# --- the models --------------------------------------------------------------------------------

def build_whisper(dims: dict, device: str):
    """A random-weight openai-whisper model, initialised on `device` (fp32, as whisper.load_model gives)."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    with torch.device(device):
        model = Whisper(ModelDimensions(**dims))
        # torch.empty in whisper (checkpoints overwrite it): uninitialised memory can hold NaN
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    return model.eval()


def build_xtts(out: Path, full: bool, device: str) -> tuple[Path, int]:
    """A random-weight XTTS saved as XTTS-v2 ships (model.pth, config.json, vocab.json), so that
    CoquiVoice loads it as it would the real one. Full size: XTTS-v2's published config, a
    character vocabulary padded to its 6681 text tokens (the filler tokens are never produced).
    The stop token's logit is pushed down: a random GPT must not stop a line early by chance."""
    from tokenizers import Tokenizer, models
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    out.mkdir(parents=True, exist_ok=True)
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{c}]" for c in XttsConfig().languages]
    tokens = specials + list(dict.fromkeys(XTTS_CHARS))
    if full:
        tokens += [f"~{i}" for i in range(XTTS_V2_TEXT_TOKENS - len(tokens))]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(out / "vocab.json"))
    args = XttsArgs(**(XTTS_V2_ARGS if full else XTTS_TINY_ARGS), tokenizer_file=str(out / "vocab.json"))
    config = XttsConfig(model_args=args, **(XTTS_V2_INFERENCE if full else {}))
    torch.manual_seed(0)
    with torch.device(device):  # random init straight on the device: seconds, not minutes
        model = Xtts(config)
        model.tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
        model.init_models()
    if full:
        assert model.args.gpt_number_text_tokens == XTTS_V2_TEXT_TOKENS, model.args.gpt_number_text_tokens
    with torch.no_grad():
        model.gpt.mel_head.bias[model.gpt.stop_audio_token] = -1e4
    torch.save({"model": model.state_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))
    params = sum(p.numel() for p in model.parameters())
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out, params


class _TorchcodecCheck(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `find_spec("torchcodec")` where torchcodec is absent, so that coqui-tts's import
    check (torch >= 2.9 without torchcodec: ImportError) passes; importing it still fails."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "torchcodec" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("torchcodec is not installed (bench/dub_gpu.py only answered coqui-tts's check)")


def coqui_without_torchcodec() -> bool:
    """torchaudio >= 2.9 decodes audio through torchcodec, which needs FFmpeg's shared libraries
    (the GPU machine has neither; carrying them costs 10 MB more). Nothing in the dub decodes
    audio through torchaudio except XTTS's reference loader: where torchcodec cannot be
    imported, coqui-tts's import check is answered and that loader reads the (PCM WAV)
    reference with soundfile instead: same samples, same resampling. Returns whether it did."""
    try:
        import torchcodec  # noqa: F401
        return False
    except Exception:  # noqa: BLE001 - absent, or present without FFmpeg's libraries
        pass
    if importlib.util.find_spec("torchcodec") is None:
        sys.meta_path.append(_TorchcodecCheck())
    import torchaudio
    from TTS.tts.models import xtts

    def load_audio(audiopath, sampling_rate):
        data, rate = sf.read(str(audiopath), dtype="float32", always_2d=True)  # (samples, channels)
        audio = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))[None]
        if rate != sampling_rate:
            audio = torchaudio.functional.resample(audio, rate, sampling_rate)
        return audio.clip_(-1, 1)

    xtts.load_audio = load_audio
    return True


class DecodeCount:
    """Windows and tokens whisper decodes, the model's `decode` wrapped on the instance. A
    random model's timestamps are noise: with word timestamps whisper re-seeks to the last
    word's end, so it can decode window after window of 224 garbage tokens. `budget` bounds
    the tokens of a whole transcription to one dense window's worth (224) per 30 s of audio;
    windows past it decode one token (whisper then moves on by a whole window)."""

    def __init__(self, model):
        self.windows = self.tokens = self.budget = 0
        decode = model.decode

        def counted(mel, options):
            left = max(1, self.budget - self.tokens)
            if options.sample_len is None or options.sample_len > left:
                options = replace(options, sample_len=left)
            result = decode(mel, options)
            for r in result if isinstance(result, list) else [result]:
                self.windows += 1
                self.tokens += len(r.tokens)
            return result

        model.decode = counted

    def reset(self, audio_s: float, per_window: int) -> None:
        self.windows = self.tokens = 0
        self.budget = per_window * max(1, math.ceil(audio_s / 30.0))


# --- the measurement ---------------------------------------------------------------------------

def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(inputs: Path, tiny: bool, track_file: Path, langs: list[str], steps: int, deep_cache: int,
        runs: int, work: Path) -> dict:
    """Build the models, then dub the ad `runs` times; the report of it all."""
    from whisper.transcribe import transcribe as whisper_transcribe

    from polydub import asr

    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float16 if device == "cuda" else torch.float32
    if not track_file.is_file() and importlib.util.find_spec("mediapipe") is None:
        raise SystemExit(f"{track_file}: no face track, and no MediaPipe here to make one "
                         "(run --prepare on a machine that has it, or give --track FILE)")
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                    "torch": torch.__version__, "dtype": str(dtype).split(".")[-1],
                    "models": "tiny" if tiny else "full-size", "langs": langs, "steps": steps,
                    "deep_cache": deep_cache, "setup": {}, "runs": []}
    setup = report["setup"]

    def timed(name: str, fn):
        synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(device)
        setup[name] = time.perf_counter() - t0
        return out

    # --- models, before the clock ---
    dims = WHISPER_TINY_RANDOM if tiny else WHISPER_SMALL
    whisper_model = timed("whisper", lambda: build_whisper(dims, device))
    decoded = DecodeCount(whisper_model)
    # greedy at temperature 0 only: no fallback to sampling (a random model fails every check)
    whisper_model.transcribe = functools.partial(whisper_transcribe, whisper_model, temperature=0.0)
    marker = work / "whisper-random.json"  # what the AsrModel names (its version: the file's size and time)
    marker.write_text(json.dumps(dims))
    asr_model = asr.AsrModel(asr.OPENAI_WHISPER, marker, "tiny (random)" if tiny else "small (random)")
    vad = asr.VadSettings() if config.asr_vad() and importlib.util.find_spec("silero_vad") else None

    shim = coqui_without_torchcodec()
    xtts_dir, xtts_params = timed("xtts build + save", lambda: build_xtts(work / "xtts-v2", not tiny, device))
    loaded = timed("xtts load", lambda: load_coqui(xtts_dir))  # polydub's loader (Synthesizer), kept per process
    gpt = loaded.synthesizer.tts_model.gpt
    models = timed("lip-sync models", lambda: lipsync_gpu.build_models(tiny, 64 if tiny else 256, device, dtype))
    report.update({"xtts_params_m": xtts_params / 1e6, "wav_loader_shim": shim, "vad": vad is not None,
                   "xtts_device": str(next(loaded.synthesizer.tts_model.parameters()).device), "res": models.res})
    for k in range(runs):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        folder = work / f"run{k + 1}"
        folder.mkdir()
        print(f"run {k + 1} of {runs} ...", file=sys.stderr, flush=True)
        one = dub_once(inputs, folder, track_file, langs, steps, deep_cache, device, models, xtts_dir, gpt,
                       whisper_model, decoded, asr_model, vad, dims["n_text_ctx"] // 2)
        one["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        report["runs"].append(one)
    return report


def dub_once(inputs: Path, work: Path, track_file: Path, langs: list[str], steps: int, deep_cache: int,
             device: str, models, xtts_dir: Path, gpt, whisper_model, decoded: DecodeCount, asr_model, vad,
             tokens_per_window: int) -> dict:
    """The dub, plain and sequential: seconds per stage, and what each stage did."""
    from polydub import asr

    video = inputs / f"{NAME}.mp4"
    gpt_max = gpt.max_gen_mel_tokens
    t = {s: 0.0 for s in STAGES}
    synchronize(device)
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        synchronize(device)
        now = time.perf_counter()
        t[name] += now - clock
        clock = now

    info = media.probe(video)
    channels = max(1, min(2, info.audio_channels))
    source_wav = media.extract_audio(video, work / "source.wav", channels=channels)
    asr_wav = media.extract_audio(video, work / "asr.wav", sample_rate=16_000)
    samples = sf.info(str(source_wav)).frames
    lap("probe")

    audio, _ = sf.read(str(asr_wav), dtype="float32")
    decoded.reset(len(audio) / 16_000, tokens_per_window)
    recognised = asr.transcribe(asr_model, audio, SOURCE_LANG, vad, loaded=whisper_model)
    transcript = read_subtitles(inputs / f"{NAME}.{SOURCE_LANG}.srt")  # the approved one is used
    write_subtitles(transcript, work / "transcript.srt")
    lap("transcribe")

    scripts = {lang: read_subtitles(inputs / f"{NAME}.{lang}.srt") for lang in langs}
    lap("translate")

    reference = cut_reference(asr_wav, transcript, work / "reference.wav")
    clips: dict[str, list[Path]] = {}
    durations: dict[str, list[float]] = {}
    audio_tokens = 0
    try:
        for lang in langs:
            (work / lang).mkdir()
            voice = CoquiVoice(xtts_dir, reference)
            clips[lang], durations[lang] = [], []
            for i, segment in enumerate(scripts[lang]):
                cap = min(gpt_max, max(1, round(segment.duration * AUDIO_TOKENS_PER_S * TOKEN_MARGIN)))
                gpt.max_gen_mel_tokens = cap  # a random GPT never stops: the line's slot sets its length
                audio_tokens += cap
                clip = voice.synthesize(segment.text, lang, work / lang / f"line{i:04d}.wav")
                clips[lang].append(clip)
                durations[lang].append(trim_silence(clip))
    finally:
        gpt.max_gen_mel_tokens = gpt_max
    lap("voice")

    mixed: dict[str, Path] = {}
    for lang in langs:
        fits = fit.plan_fits(scripts[lang], durations[lang], samples / media.SAMPLE_RATE, max_speed=DEFAULT_MAX_SPEED)
        fit.render_dub_track(clips[lang], fits, samples, work / lang / "dub.wav")
        mixed[lang] = mix.mix(source_wav, work / lang / "dub.wav", transcript, work / lang / "mixed.wav",
                              loudness=DEFAULT_LOUDNESS).path
    lap("mix")

    synced = {lang: work / lang / "lipsync.mp4" for lang in langs}
    lip = stage.lipsync_video(video, mixed, synced, models, track_file, models.res, num_steps=steps,
                              deep_cache=deep_cache, prefer_face=stage.face_choice())
    lap("lipsync")

    # as polydub/tasks/deliver.py does: each language's MP4 (lip-synced picture), then the
    # multi-track file from the original picture and each deliverable's audio
    audio_tracks = [assemble.AudioTrack(str(video), SOURCE_LANG, "Original")]
    write_subtitles(clip_to(transcript, info.duration), work / "transcript.srt")
    subs = [assemble.SubtitleTrack(str(work / "transcript.srt"), SOURCE_LANG, "Original")]
    delivered = {}
    for lang in langs:
        lines = clip_to(scripts[lang], info.duration)
        srt = write_subtitles(lines, work / lang / f"{NAME}.{lang}.srt")
        write_subtitles(lines, work / lang / f"{NAME}.{lang}.vtt")
        delivered[lang] = assemble.dubbed_file(str(synced[lang]), str(mixed[lang]), str(srt), lang,
                                               work / lang / f"{NAME}.{lang}.mp4", video_codec="h264")
        audio_tracks.append(assemble.AudioTrack(str(delivered[lang]), lang, f"{languages.name(lang)} (AI dub)"))
        subs.append(assemble.SubtitleTrack(str(srt), lang, languages.name(lang)))
    multitrack = assemble.multitrack_file(str(video), audio_tracks, subs, work / f"{NAME}.dubbed.mkv")
    lap("assemble")
    wall = time.perf_counter() - started

    # --- what came out (not timed) ---
    for lang, path in delivered.items():
        got = media.probe(path)
        if not got.has_video or abs(got.duration - info.duration) > 0.5:
            raise SystemExit(f"{path}: {got.duration:.2f} s, video {got.has_video}; expected {info.duration:.2f} s")
    streams = json.loads(media.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                    media.file_arg(multitrack)], what="probing the multi-track file"))["streams"]
    kinds = [s["codec_type"] for s in streams]
    if kinds.count("audio") != len(langs) + 1 or kinds.count("video") != 1:
        raise SystemExit(f"{multitrack}: streams {kinds}")
    return {"video_s": info.duration, "frames": lip["frames"], "face_frames": lip["face_frames"],
            "track": f"{lip['track']} ({track_file.name})", "wall_s": wall, "stages_s": t,
            "whisper": {"windows": decoded.windows, "tokens": decoded.tokens,
                        "lines_recognised": len(recognised.segments)},
            "xtts": {"lines": sum(len(s) for s in scripts.values()), "audio_tokens": audio_tokens,
                     "reference_s": sf.info(str(reference)).duration},
            "reference_lipsync_s": REFERENCE_S_PER_VIDEO_S * info.duration * len(langs),
            "outputs": {"multitrack": str(multitrack), **{lang: str(p) for lang, p in delivered.items()}}}


# --- the table ---------------------------------------------------------------------------------

def print_table(r: dict) -> None:
    runs = r["runs"]
    first = runs[0]
    tiny = r["models"] == "tiny"
    n = len(r["langs"])
    ref = first["reference_lipsync_s"]
    blank = ("",) * (len(runs) - 1)

    def secs(key) -> tuple[str, ...]:
        return tuple(f"{key(run):.2f}" for run in runs)

    rows: list[tuple[str, ...]] = [
        ("models, built or loaded before the clock (random weights)",),
        ("  whisper build", f"{r['setup']['whisper']:.2f}", *blank,
         "on the device; " + ("tiny" if tiny else "small (244 M), fp32 as whisper.load_model gives")),
        ("  XTTS-v2 build + save", f"{r['setup']['xtts build + save']:.2f}", *blank,
         f"{r['xtts_params_m']:.0f} M parameters: model.pth + config.json + vocab.json"),
        ("  XTTS-v2 load", f"{r['setup']['xtts load']:.2f}", *blank,
         f"polydub.tts.coqui.load (Coqui's Synthesizer) onto {r['xtts_device']}, fp32 as the product loads it"),
        ("  lip-sync models build", f"{r['setup']['lip-sync models']:.2f}", *blank,
         "bench/lipsync_gpu.py build_models: " + ("tiny" if tiny else "LatentSync 1.5 UNet + SD VAE + whisper tiny")),
        (f"the dub: {first['video_s']:.1f} s ad into {','.join(r['langs'])}, models resident",),
        ("  wall", *secs(lambda run: run["wall_s"]),
         "tiny models on the CPU: checks the script, measures nothing" if tiny else
         f"goal < {GOAL_S:.0f} s: " + " / ".join("met" if run["wall_s"] < GOAL_S else "not met" for run in runs)),
    ]
    x = first["xtts"]
    notes = {
        "probe": "ffprobe; source WAV (48 kHz) and 16 kHz mono for ASR",
        "transcribe": (f"openai-whisper {'tiny' if tiny else 'small'}, greedy, temperature 0 only"
                       f"{', fp16' if r['dtype'] == 'float16' else ''}, word times: "
                       + " / ".join(f"{run['whisper']['windows']} windows {run['whisper']['tokens']} tokens"
                                    for run in runs)
                       + "; Silero VAD " + ("on" if r["vad"] else "not run (not installed)") + "; text discarded"),
        "translate": "the approved scripts (sidecars)",
        "voice": (f"XTTS-v2 cloning: a {x['reference_s']:.1f} s reference cut and conditioned once; {x['lines']} "
                  f"lines, {x['audio_tokens']} audio tokens (capped: slot x 21.5/s x 1.2)"),
        "mix": "fit lines to their slots, ducked band-cut background, loudness",
        "lipsync": (f"{first['frames']} frames ({first['face_frames']} with a face) x {n} languages, {r['res']} px, "
                    f"{r['dtype']}, {r['steps']} steps, DeepCache {r['deep_cache'] or 'off'}; face track "
                    + " / ".join(run["track"] for run in runs)),
        "assemble": "per language: lip-synced video + mix + subtitles (MP4); the multi-track MKV",
    }
    for s in STAGES:
        rows.append((f"  {STAGE_NAMES[s]}", *secs(lambda run, s=s: run["stages_s"][s]), notes[s]))
    rows += [
        ("against the LatentSync reference (published: 28 s per 10 s of video per language)",),
        ("  reference, lip-sync alone", f"{ref:.2f}", *blank,
         f"2.8 s per video second x {first['video_s']:.1f} s x {n} languages"),
        ("  reference lip-sync / our whole dub", *(f"{ref / run['wall_s']:.2f}x" for run in runs),
         "every stage of ours included"),
        ("  reference lip-sync / our lip-sync", *(f"{ref / run['stages_s']['lipsync']:.2f}x" for run in runs),
         "the lip-sync stage alone"),
    ]
    header = ("measure", *(f"run {k + 1} s" for k in range(len(runs))), "note")
    cols = len(header)
    widths = [max(len(row[i]) for row in [header, *rows] if len(row) == cols) for i in range(cols)]
    rule = "  ".join("-" * w for w in widths)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in (0, cols - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    peaks = [run["peak_gib"] for run in runs if run["peak_gib"] is not None]
    peak = f", peak {max(peaks):.1f} GiB allocated" if peaks else ""
    print(f"\npolydub end to end on {r['device']} (torch {r['torch']}{peak}): {r['models']} random-weight models; "
          f"run 1 is a fresh process's first dub, later runs reuse its warm kernels")
    print(rule)
    print(line(header))
    print(rule)
    for row in rows:
        print(row[0] if len(row) == 1 else line(row))
    print(rule)
    print("notes: random weights throughout (a pass costs the same whatever the values). A random XTTS GPT never\n"
          "emits its stop token (it is suppressed too): each line's audio tokens are capped at its slot x 21.5\n"
          "tokens/s x 1.2, about what the real model generates for a line that fits. XTTS's text is tokenised by\n"
          "characters (same 6681-token embedding as the real BPE vocabulary): a few more text tokens per line.\n"
          "Whisper's text is discarded and its garbage decoding bounded to 224 tokens (one dense window) per 30 s;\n"
          "the dub uses the approved transcript and scripts (a job with a transcript sidecar skips recognition).\n"
          "Setup rows are not in the wall time: a worker keeps its models loaded."
          + ("\nNo torchcodec here: XTTS's reference WAV was read with soundfile (torchaudio's loader needs it)."
             if r["wav_loader_shim"] else ""))


# --- main --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prepare", type=Path, metavar="DIR", help="make the ad, its scripts and face track in DIR")
    mode.add_argument("--inputs", type=Path, metavar="DIR", help="measure on DIR (made by --prepare)")
    mode.add_argument("--smoke", action="store_true", help="CPU, tiny models, 3 s clip: checks the script")
    ap.add_argument("--tiny", action="store_true", help="with --inputs: tiny models on the CPU (what --smoke runs)")
    ap.add_argument("--track", type=Path, help="face track (.npz) of the ad; default DIR/ad.track.npz")
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--steps", type=int, default=20, help="lip-sync denoising steps (the stage's default)")
    ap.add_argument("--deep-cache", type=int, default=int(config.lipsync_deep_cache()),
                    help="lip-sync DeepCache interval (default: DUB_LIPSYNC_DEEP_CACHE, the product's)")
    ap.add_argument("--runs", type=int, default=2, help="dubs in the process: the first pays one-time kernel "
                    "compilation, the next show a warm worker")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    langs = languages.parse_langs(args.langs)

    if args.prepare:
        prepare(args.prepare)
        return 0
    if args.smoke:
        folder = Path(tempfile.mkdtemp(prefix="dub-gpu-smoke-"))
        try:
            prepare(folder / "inputs", SMOKE_SECONDS)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--inputs", str(folder / "inputs"), "--tiny",
                   "--steps", "1", "--runs", "1", "--langs", ",".join(langs)]
            if args.json:
                cmd += ["--json", str(args.json)]
            proc = subprocess.run(cmd, timeout=SMOKE_TIMEOUT, check=False)
            return proc.returncode
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    track = args.track or args.inputs / f"{NAME}.track.npz"
    work = Path(tempfile.mkdtemp(prefix="dub-gpu-"))
    try:
        report = run(args.inputs, args.tiny, track, langs, args.steps, args.deep_cache, args.runs, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    # the GPU machine has neither: nothing on this path may import them
    assert "prefect" not in sys.modules, "prefect was imported"
    if all(run["track"].startswith("reused") for run in report["runs"]):
        assert "mediapipe" not in sys.modules, "mediapipe was imported with a face track given"
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
