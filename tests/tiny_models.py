"""Tiny random-weight models, built by the tests and saved the way the real ones ship,
so the real loading code runs on them (nothing is downloaded)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

WHISPER_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=4,
                    n_vocab=51865, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=2)


def build_whisper(path: Path) -> Path:
    """A whisper checkpoint ({'dims', 'model_state_dict'}) that `whisper.load_model` loads."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(**WHISPER_DIMS)
    model = Whisper(dims)
    # whisper leaves the text decoder's positional embedding as torch.empty (real
    # checkpoints overwrite it): uninitialised memory can hold NaN, so give it values.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def build_vits(out: Path) -> Path:
    """A tiny Coqui VITS on plain characters (no phonemizer): model.pth + config.json."""
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(0)
    chars = CharactersConfig(
        characters_class="TTS.tts.models.vits.VitsCharacters", pad="_", eos="", bos="", blank=None,
        characters="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789' ",
        punctuations="!,.?-;:", phonemes=None)
    args = VitsArgs(
        hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_layers_text_encoder=1,
        num_layers_flow=1, num_layers_posterior_encoder=1, resblock_type_decoder="2",
        upsample_rates_decoder=[8, 8, 4], upsample_initial_channel_decoder=32,
        upsample_kernel_sizes_decoder=[16, 16, 8], resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3]], init_discriminator=False)
    config = VitsConfig(model_args=args, use_phonemes=False, characters=chars,
                        text_cleaner="multilingual_cleaners")
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Vits(config).state_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))
    return out


def build_xtts(out: Path) -> Path:
    """An XTTS with a one-layer random GPT, a character vocabulary and XTTS's own decoder,
    saved as XTTS-v2 is shipped: model.pth + config.json + vocab.json (no studio voices: it
    clones from a reference clip)."""
    import torch
    from tokenizers import Tokenizer, models
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts, XttsArgs

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{c}]" for c in XttsConfig().languages]
    vocab = {t: i for i, t in enumerate(specials + list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(out / "vocab.json"))
    config = XttsConfig(model_args=XttsArgs(
        gpt_layers=1, gpt_n_model_channels=32, gpt_n_heads=2, gpt_max_audio_tokens=20,
        decoder_input_dim=32, tokenizer_file=str(out / "vocab.json")))
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))
    return out


WORDS = ("welcome to our product launch today we show the new features of the cloud platform "
         "every team can use it to plan work share files and talk with customers in real time "
         "the quick brown fox jumps over the lazy dog while music plays in the background").split()


def build_tiny_marian(root: Path, init_std: float = 0.02) -> Path:
    """A MarianMT with d_model 16 and one layer each way, random weights, saved with its
    tokenizer files (source.spm, target.spm, vocab.json). With the usual `init_std` its
    output depends on little but the input's length; with 1.0 lines of equal length get
    different translations."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    work = root / "spm"
    work.mkdir(parents=True)
    rng = random.Random(0)
    corpus = "\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(300))
    (work / "corpus.txt").write_text(corpus)
    spm.SentencePieceTrainer.train(
        input=str(work / "corpus.txt"), model_prefix=str(work / "sp"), vocab_size=64,
        model_type="unigram", character_coverage=1.0, unk_id=0, eos_id=1, bos_id=-1, pad_id=-1,
        minloglevel=2,
    )
    for name in ("source.spm", "target.spm"):
        shutil.copy(work / "sp.model", work / name)
    sp = spm.SentencePieceProcessor(model_file=str(work / "sp.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    (work / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(source_spm=str(work / "source.spm"),
                                target_spm=str(work / "target.spm"), vocab=str(work / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=128, pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"], decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=vocab["</s>"], init_std=init_std,
    )
    torch.manual_seed(0)
    out = root / "tiny-marian"
    MarianMTModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


TINY_UNET = {
    "in_channels": 13, "out_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "attention_head_dim": 2, "cross_attention_dim": 384, "norm_num_groups": 8, "norm_eps": 1e-5,
    "use_motion_module": True, "motion_module_resolutions": [1, 2],
    "motion_module_kwargs": {"num_attention_heads": 2, "num_transformer_block": 1,
                             "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                             "temporal_position_encoding": True, "temporal_position_encoding_max_len": 24,
                             "temporal_attention_dim_div": 1, "zero_initialize": False},
}
# whisper tiny's audio width (384) and depth (4 blocks -> 5 states -> 10 x 5 = 50 rows per frame),
# which the UNet's cross-attention expects; everything else as small as possible
STAGE_WHISPER_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                          n_vocab=51865, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=1)


def build_lipsync_models(root: Path, resolution: int = 64) -> Path:
    """A models directory laid out as `dub models pull` writes it, holding tiny random
    LatentSync weights; `polydub.json` beside the UNet names its config and resolution."""
    import torch
    from diffusers import AutoencoderKL
    from whisper.model import ModelDimensions, Whisper

    from polydub.lipsync.unet import LipSyncUNet

    stage_whisper = ModelDimensions(**STAGE_WHISPER_DIMS)
    version = root / "latentsync-1.5"
    (version / "whisper").mkdir(parents=True)
    torch.manual_seed(0)
    unet = LipSyncUNet.from_config(TINY_UNET)
    torch.save({"global_step": 0, "state_dict": unet.state_dict()}, version / "latentsync_unet.pt")
    audio = Whisper(stage_whisper)
    torch.nn.init.normal_(audio.decoder.positional_embedding, std=0.02)  # torch.empty in whisper
    torch.save({"dims": asdict(stage_whisper), "model_state_dict": audio.state_dict()},
               version / "whisper" / "tiny.pt")
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 16, 16), norm_num_groups=4)
    vae.save_pretrained(root / "sd-vae-ft-mse")
    (version / "polydub.json").write_text(json.dumps({"unet": TINY_UNET, "resolution": resolution}))
    return root


DEMUCS_STEMS = ("drums", "bass", "other", "vocals")  # HT-Demucs' own


def build_demucs(folder: Path, sources=DEMUCS_STEMS, name: str = "tiny-htdemucs.th") -> Path:
    """A tiny random HTDemucs saved as Demucs publishes checkpoints (`demucs.states`:
    class, init arguments and state), `name` in `folder`. 44.1 kHz stereo like the real one;
    a few thousand parameters: it runs in seconds and separates nothing."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=list(sources), audio_channels=2, samplerate=44100, segment=2, channels=4, depth=2,
                     nfft=1024, t_layers=1, t_heads=1, dconv_depth=1, dconv_comp=2)
    args, kwargs = model._init_args_kwargs
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": model.state_dict(),
                "training_args": {}}, path)
    return path


# Kokoro's phoneme vocabulary (hexgrad/Kokoro-82M config.json): the tiny model reads the same
# symbols as the real one, so the same phonemes reach it.
KOKORO_VOCAB = {s: i for i, s in [
    (1, ";"), (2, ":"), (3, ","), (4, "."), (5, "!"), (6, "?"), (9, "\u2014"), (10, "\u2026"), (11, '"'),
    (12, "("), (13, ")"), (14, "\u201c"), (15, "\u201d"), (16, " "), (17, "\u0303"), (18, "ʣ"), (19, "ʥ"),
    (20, "ʦ"), (21, "ʨ"), (22, "ᵝ"), (23, "\uab67"), (24, "A"), (25, "I"), (31, "O"), (33, "Q"), (35, "S"),
    (36, "T"), (39, "W"), (41, "Y"), (42, "ᵊ"), *((43 + i, c) for i, c in enumerate("abcdef")), (50, "h"),
    *((51 + i, c) for i, c in enumerate("ijklmnopqrstuvwxyz")), (69, "ɑ"), (70, "ɐ"), (71, "ɒ"), (72, "æ"),
    (75, "β"), (76, "ɔ"), (77, "ɕ"), (78, "ç"), (80, "ɖ"), (81, "ð"), (82, "ʤ"), (83, "ə"), (85, "ɚ"),
    (86, "ɛ"), (87, "ɜ"), (90, "ɟ"), (92, "ɡ"), (99, "ɥ"), (101, "ɨ"), (102, "ɪ"), (103, "ʝ"), (110, "ɯ"),
    (111, "ɰ"), (112, "ŋ"), (113, "ɳ"), (114, "ɲ"), (115, "ɴ"), (116, "ø"), (118, "ɸ"), (119, "θ"),
    (120, "œ"), (123, "ɹ"), (125, "ɾ"), (126, "ɻ"), (128, "ʁ"), (129, "ɽ"), (130, "ʂ"), (131, "ʃ"),
    (132, "ʈ"), (133, "ʧ"), (135, "ʊ"), (136, "ʋ"), (138, "ʌ"), (139, "ɣ"), (140, "ɤ"), (142, "χ"),
    (143, "ʎ"), (147, "ʒ"), (148, "ʔ"), (156, "ˈ"), (157, "ˌ"), (158, "ː"), (162, "ʰ"), (164, "ʲ"),
    (169, "↓"), (171, "→"), (172, "↗"), (173, "↘"), (177, "ᵻ")]}


def build_kokoro(folder: Path) -> Path:
    """A Kokoro model laid out as hexgrad/Kokoro-82M (config.json, kokoro-v1_0.pth, voices/*.pt)
    with random weights, its parts as small as KModel allows: the decoder's 512 channels and
    the 128+128 style vector are fixed in kokoro's code, so it has about 58 M parameters, kept
    in float16 (117 MB). `max_dur` 6 gives each phoneme about 3 frames of 25 ms, the pace of real
    speech."""
    import torch
    from kokoro.istftnet import Decoder
    from kokoro.modules import CustomAlbert, ProsodyPredictor, TextEncoder
    from transformers import AlbertConfig

    from polydub.tts import kokoro

    config = {"vocab": KOKORO_VOCAB, "n_token": 178, "hidden_dim": 512, "n_layer": 1, "max_dur": 6,
              "style_dim": 128, "n_mels": 80, "dim_in": 64, "max_conv_dim": 512, "dropout": 0.0,
              "text_encoder_kernel_size": 5, "multispeaker": True,
              "plbert": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                         "max_position_embeddings": 512, "num_hidden_layers": 1, "embedding_size": 16},
              "istftnet": {"upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6], "gen_istft_hop_size": 5,
                           "gen_istft_n_fft": 20, "resblock_dilation_sizes": [[1, 3, 5]],
                           "resblock_kernel_sizes": [3], "upsample_initial_channel": 512}}
    torch.manual_seed(0)
    parts = {
        "bert": CustomAlbert(AlbertConfig(vocab_size=config["n_token"], **config["plbert"])),
        "bert_encoder": torch.nn.Linear(config["plbert"]["hidden_size"], config["hidden_dim"]),
        "predictor": ProsodyPredictor(style_dim=128, d_hid=512, nlayers=1, max_dur=config["max_dur"], dropout=0.0),
        "text_encoder": TextEncoder(channels=512, kernel_size=5, depth=1, n_symbols=config["n_token"]),
        "decoder": Decoder(dim_in=512, style_dim=128, dim_out=80, **config["istftnet"]),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / kokoro.CONFIG).write_text(json.dumps(config, ensure_ascii=False))
    torch.save({name: {k: v.half() if v.is_floating_point() else v for k, v in part.state_dict().items()}
                for name, part in parts.items()}, folder / kokoro.WEIGHTS)
    (folder / kokoro.VOICES).mkdir(exist_ok=True)
    for name in kokoro.ALL_VOICES:
        torch.save(torch.randn(510, 1, 256) * 0.1, folder / kokoro.VOICES / f"{name}.pt")
    return folder


CHATTERBOX_SIZE = {  # every attention head 64 wide, as in the published model; one head each here
    "t3": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1, head_dim=64,
               intermediate_size=128, text_tokens=2454, speech_tokens=8194, max_text_tokens=2048,
               max_speech_tokens=4096, speaker_embed_size=256, head_bias=True),
    "ve": dict(ve_hidden_size=32, speaker_embed_size=256, num_mels=40),
    "tokenizer": dict(n_audio_state=64, n_audio_head=1, n_audio_layer=1),
    "encoder": dict(output_size=64, attention_heads=1, linear_units=128, num_blocks=1),
    "decoder": dict(channels=[64], attention_head_dim=64, num_heads=1, n_blocks=1, num_mid_blocks=1),
    "campplus": dict(init_channels=16, growth_rate=8, bn_size=2, embedding_size=192),
    "hift": dict(base_channels=32, f0_channels=16),
}


def _chatterbox_tokenizer(path: Path) -> None:
    """A character-level text tokenizer with the ids T3's code fixes ([STOP] 0, [START] 255)
    and a tag per language, as the published grapheme tokenizer has."""
    from chatterbox.models.tokenizers.tokenizer import EOT, SOT, SPACE, UNK
    from chatterbox.mtl_tts import SUPPORTED_LANGUAGES
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE

    chars = [chr(i) for i in range(0x21, 0x7F)] + list("¡¿ñçßæøåœ") + [chr(i) for i in range(0x300, 0x370)]
    vocab = {EOT: 0, UNK: 1, SPACE: 2}
    for ch in chars[:252]:
        vocab[ch] = len(vocab)
    vocab[SOT] = 255
    specials = [EOT, UNK, SPACE, SOT] + [f"[{code}]" for code in SUPPORTED_LANGUAGES]
    for token in chars[252:] + specials[4:]:
        vocab[token] = len(vocab)  # 256 on: ids 0-255 are taken
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.save(str(path))


def build_chatterbox(folder: Path) -> Path:
    """Chatterbox Multilingual laid out as ResembleAI/chatterbox (ve.pt, t3_mtl23ls_v2.safetensors,
    s3gen.pt, the grapheme tokenizer, conds.pt), built by polydub's loader at a tiny size (about
    4 M parameters; the published one has about 800 M). Its speech head's bias keeps T3 to the
    speech tokens S3Gen can voice and makes it stop after a few dozen, as a trained one does."""
    import numpy as np
    import soundfile as sf
    import torch
    from safetensors.torch import save_file

    from polydub.tts import chatterbox_model as cm

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    t3 = cm.build_t3(CHATTERBOX_SIZE["t3"])
    with torch.no_grad():
        bias = torch.full_like(t3.speech_head.bias, -1e4)
        bias[:t3.hp.start_speech_token] = 0.0  # the 6561 speech codes
        bias[t3.hp.stop_speech_token] = 6.0
        t3.speech_head.bias.copy_(bias)
    save_file({k: v.contiguous() for k, v in t3.state_dict().items()}, str(folder / cm.T3_WEIGHTS))
    torch.save(cm.build_voice_encoder(CHATTERBOX_SIZE["ve"]).state_dict(), folder / cm.VE)
    torch.save(cm.build_s3gen(CHATTERBOX_SIZE).state_dict(), folder / cm.S3GEN)
    _chatterbox_tokenizer(folder / cm.TOKENIZER)
    # the built-in voice: conditioning on a voiced tone
    t = np.arange(4 * 24000) / 24000
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 3 * t)) / 24000
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    sf.write(folder / "reference.wav", (0.3 * tone / np.abs(tone).max()).astype(np.float32), 24000)
    tts = cm.load(folder)
    tts.prepare_conditionals(str(folder / "reference.wav"))
    tts.conds.save(folder / cm.CONDS)
    (folder / "reference.wav").unlink()
    return folder


def shared(name: str) -> Path:
    """A models folder holding the tiny model `name` (a key of BUILDERS), built once per
    machine for this file's builders and the installed packages, and shared by every test
    process (read-only: a test that damages a model works on a copy)."""
    import fcntl
    import hashlib
    import tempfile
    from importlib import metadata

    versions = [metadata.version(p) for p in ("torch", "kokoro", "chatterbox-tts", "transformers")]
    digest = hashlib.sha256((Path(__file__).read_text() + repr(versions)).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"polydub-tests-{name}-{digest}"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first test process builds, the others wait
        if not root.exists():
            work = Path(tempfile.mkdtemp(prefix=f"polydub-tests-{name}-", dir=root.parent))
            BUILDERS[name][0](work)
            os.replace(work, root)  # whole or absent
    return root


# --- from the command line ----------------------------------------------------------------
# `python tests/tiny_models.py NAME DIR`: the tiny model NAME written into DIR where polydub
# finds the real one: a registered model (`dub models list`) in DIR/NAME, as `dub models pull`
# lays it out (so DUB_MODELS_DIR=DIR finds it); the others in the folder their option takes.

def _htdemucs(root: Path) -> Path:
    from polydub import weights

    (file,) = weights.REGISTRY["htdemucs"].files
    return build_demucs(root / "htdemucs", name=file.path)


def _marian(root: Path, name: str) -> Path:
    import tempfile

    with tempfile.TemporaryDirectory(dir=root) as work:  # its tokenizer's training files stay behind
        return Path(shutil.move(build_tiny_marian(Path(work)), root / name))


BUILDERS = {  # name: (build into DIR, how to use it)
    "whisper-tiny": (lambda root: build_whisper(root / "whisper-tiny" / "tiny.pt"),
                     "DUB_MODELS_DIR=DIR dub ... --asr-model tiny"),
    "latentsync-1.5": (build_lipsync_models,
                       "DUB_MODELS_DIR=DIR dub ... --lipsync on (with sd-vae-ft-mse beside it)"),
    "htdemucs": (_htdemucs, "DUB_MODELS_DIR=DIR dub ... (the background is separated)"),
    "chatterbox-multilingual": (lambda root: build_chatterbox(root / "chatterbox-multilingual"),
                                "DUB_MODELS_DIR=DIR dub ... --voice chatterbox"),
    "kokoro": (lambda root: build_kokoro(root / "kokoro"), "DUB_MODELS_DIR=DIR dub ... --voice kokoro"),
    "xtts-v2": (lambda root: build_xtts(root / "xtts-v2"),
                "DUB_MODELS_DIR=DIR dub ... (auto clones with XTTS-v2, not under --commercial)"),
    "coqui-vits": (lambda root: build_vits(root / "coqui-vits"), "dub ... --voice coqui:DIR/coqui-vits"),
    "opus-mt-en-es": (lambda root: _marian(root, "opus-mt-en-es"), "dub ... --translator local:DIR/opus-mt-en-es"),
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in BUILDERS:
        print(f"usage: python tests/tiny_models.py NAME DIR  (NAME: {', '.join(BUILDERS)})", file=sys.stderr)
        return 2
    name, root = argv[0], Path(argv[1])
    build, use = BUILDERS[name]
    if (root / name).exists():
        print(f"tiny_models: {root / name} exists; choose an empty folder", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    build(root)
    print(f"{name}: tiny random weights in {root / name}; use: {use}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # polydub, from this checkout
    raise SystemExit(main(sys.argv[1:]))
