"""Tiny random-weight models, built by the tests and saved the way the real ones ship,
so the real loading code runs on them (nothing is downloaded)."""

from __future__ import annotations

import json
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
