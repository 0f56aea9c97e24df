"""Tiny random-weight models, built by the tests and saved the way the real ones ship,
so the real loading code runs on them (nothing is downloaded)."""

from __future__ import annotations

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
