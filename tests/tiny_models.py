"""Tiny random-weight models, built by the tests and saved the way the real ones ship,
so the real loading code runs on them (nothing is downloaded)."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

WHISPER_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=4,
                    n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)


def build_whisper(path: Path) -> Path:
    """A whisper checkpoint ({'dims', 'model_state_dict'}) that `whisper.load_model` loads."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(**WHISPER_DIMS)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": asdict(dims), "model_state_dict": Whisper(dims).state_dict()}, path)
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


def build_tiny_marian(root: Path) -> Path:
    """A MarianMT with d_model 16 and one layer each way, random weights, saved with its
    tokenizer files (source.spm, target.spm, vocab.json)."""
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
        forced_eos_token_id=vocab["</s>"],
    )
    torch.manual_seed(0)
    out = root / "tiny-marian"
    MarianMTModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
