"""Chatterbox Multilingual's modules, sized from its checkpoints.

Upstream's `ChatterboxMultilingualTTS.from_local` builds every module at the published size
(a 520 M-parameter Llama, a 512-wide conformer, ...) and a few of its constructors hard-code
widths. Here every size is read from the tensors' shapes, and attention heads are the width
over 64 as in the published model, so the published checkpoints build exactly what upstream
builds (tests compare the two on the meta device) and smaller checkpoints laid out the same
way build smaller models. The result is upstream's own `ChatterboxMultilingualTTS`.

    MODEL_DIR/ve.pt                             voice encoder (speaker embedding)
    MODEL_DIR/t3_mtl23ls_v2.safetensors         T3: text -> speech tokens (Llama)
    MODEL_DIR/s3gen.pt                          S3Gen: speech tokens -> 24 kHz audio
    MODEL_DIR/grapheme_mtl_merged_expanded_v1.json   text tokenizer
    MODEL_DIR/conds.pt                          built-in voice (when no speaker to clone)
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import warnings
from pathlib import Path

VE = "ve.pt"
T3_WEIGHTS = "t3_mtl23ls_v2.safetensors"
S3GEN = "s3gen.pt"
TOKENIZER = "grapheme_mtl_merged_expanded_v1.json"
CONDS = "conds.pt"
FILES = (VE, T3_WEIGHTS, S3GEN, TOKENIZER, CONDS)
HEAD_DIM = 64  # every attention head of the published model is 64 wide
PERCEIVER_HEADS = 4
PERCEIVER_QUERIES = 32
MELS = 80  # S3Gen's mel bins: the flow's output, HiFT's input, CAMPPlus's features
S3_TOKENIZER_MELS = 128

Shapes = dict[str, tuple[int, ...]]


def _count(shapes: Shapes, prefix: str) -> int:
    """How many numbered blocks `prefix<N>.` the weights hold."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for key in shapes if (m := pattern.match(key))})


def sizes(t3: Shapes, ve: Shapes, s3gen: Shapes) -> dict:
    """Every module size from the checkpoints' {key: shape}."""
    hidden = t3["tfmr.layers.0.self_attn.q_proj.weight"][1]
    tokenizer_width = s3gen["tokenizer.encoder.conv1.weight"][0]
    encoder_width = s3gen["flow.encoder.embed.out.0.weight"][0]
    cam_local = s3gen["speaker_encoder.xvector.block1.tdnnd1.cam_layer.linear_local.weight"][0]
    return {
        "t3": dict(hidden_size=hidden, num_hidden_layers=_count(t3, "tfmr.layers."),
                   num_attention_heads=t3["tfmr.layers.0.self_attn.q_proj.weight"][0] // HEAD_DIM,
                   num_key_value_heads=t3["tfmr.layers.0.self_attn.k_proj.weight"][0] // HEAD_DIM,
                   head_dim=HEAD_DIM, intermediate_size=t3["tfmr.layers.0.mlp.gate_proj.weight"][0],
                   text_tokens=t3["text_emb.weight"][0], speech_tokens=t3["speech_emb.weight"][0],
                   max_text_tokens=t3["text_pos_emb.emb.weight"][0] - 2,
                   max_speech_tokens=t3["speech_pos_emb.emb.weight"][0] - 4,
                   speaker_embed_size=t3["cond_enc.spkr_enc.weight"][1],
                   head_bias="speech_head.bias" in t3),
        "ve": dict(ve_hidden_size=ve["lstm.weight_hh_l0"][1], speaker_embed_size=ve["proj.weight"][0],
                   num_mels=ve["lstm.weight_ih_l0"][1]),
        "tokenizer": dict(n_audio_state=tokenizer_width, n_audio_head=tokenizer_width // HEAD_DIM,
                          n_audio_layer=_count(s3gen, "tokenizer.encoder.blocks.")),
        "encoder": dict(output_size=encoder_width, attention_heads=encoder_width // HEAD_DIM,
                        linear_units=s3gen["flow.encoder.encoders.0.feed_forward.w_1.weight"][0],
                        num_blocks=_count(s3gen, "flow.encoder.encoders.")),
        "decoder": dict(channels=[s3gen["flow.decoder.estimator.down_blocks.0.0.block1.block.0.weight"][0]],
                        attention_head_dim=HEAD_DIM,
                        num_heads=s3gen["flow.decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight"][0] // HEAD_DIM,
                        n_blocks=_count(s3gen, "flow.decoder.estimator.down_blocks.0.1."),
                        num_mid_blocks=_count(s3gen, "flow.decoder.estimator.mid_blocks.")),
        "campplus": dict(init_channels=s3gen["speaker_encoder.xvector.tdnn.linear.weight"][0], growth_rate=cam_local,
                         bn_size=s3gen["speaker_encoder.xvector.block1.tdnnd1.linear1.weight"][0] // cam_local,
                         embedding_size=s3gen["flow.spk_embed_affine_layer.weight"][1]),
        "hift": dict(base_channels=s3gen["mel2wav.conv_pre.parametrizations.weight.original1"][0],
                     f0_channels=s3gen["mel2wav.f0_predictor.condnet.0.parametrizations.weight.original1"][0]),
    }


def build_t3(size: dict):
    """Upstream's T3 at `size`; its perceiver as wide as the model (upstream fixes 1024, the
    published width) and its speech head with a bias where the checkpoint has one."""
    from chatterbox.models.t3 import t3 as t3_module
    from chatterbox.models.t3.llama_configs import LLAMA_520M_CONFIG_DICT
    from chatterbox.models.t3.modules.perceiver import Perceiver
    from chatterbox.models.t3.modules.t3_config import T3Config
    from torch import nn
    from tqdm import tqdm

    llama = {**LLAMA_520M_CONFIG_DICT, **{k: size[k] for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "intermediate_size")}}
    name = next((n for n, c in t3_module.LLAMA_CONFIGS.items() if c == llama), None)
    if name is None:  # T3 looks its Llama up by name
        name = f"polydub_{size['hidden_size']}x{size['num_hidden_layers']}"
        t3_module.LLAMA_CONFIGS[name] = llama
    hp = T3Config(text_tokens_dict_size=size["text_tokens"])
    hp.llama_config_name = name
    hp.speech_tokens_dict_size = size["speech_tokens"]
    hp.max_text_tokens, hp.max_speech_tokens = size["max_text_tokens"], size["max_speech_tokens"]
    hp.speaker_embed_size = size["speaker_embed_size"]
    model = t3_module.T3(hp)
    # its sampling loop draws a progress bar per line on the console: not in dub's output
    t3_module.tqdm = functools.partial(tqdm, disable=True)
    width = size["hidden_size"]
    model.cond_enc.perceiver = Perceiver(PERCEIVER_QUERIES, width, width, PERCEIVER_HEADS)
    if size["head_bias"]:
        model.speech_head = nn.Linear(width, size["speech_tokens"], bias=True)
    return model


def build_voice_encoder(size: dict):
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.models.voice_encoder.config import VoiceEncConfig

    hp = VoiceEncConfig()
    hp.ve_hidden_size, hp.speaker_embed_size, hp.num_mels = (
        size["ve_hidden_size"], size["speaker_embed_size"], size["num_mels"])
    return VoiceEncoder(hp)


def build_s3gen(size: dict):
    """Upstream's S3Token2Wav module tree (the same state-dict keys) at `size`."""
    import torch
    from chatterbox.models.s3gen.configs import CFM_PARAMS
    from chatterbox.models.s3gen.const import S3GEN_SR
    from chatterbox.models.s3gen.decoder import ConditionalDecoder
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.flow import CausalMaskedDiffWithXvec
    from chatterbox.models.s3gen.flow_matching import CausalConditionalCFM
    from chatterbox.models.s3gen.hifigan import HiFTGenerator
    from chatterbox.models.s3gen.s3gen import S3Token2Wav
    from chatterbox.models.s3gen.transformer.upsample_encoder import (
        PreLookaheadLayer,
        Upsample1D,
        UpsampleConformerEncoder,
    )
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram
    from chatterbox.models.s3gen.xvector import CAMPPlus
    from torch import nn

    model = S3Token2Wav.__new__(S3Token2Wav)
    nn.Module.__init__(model)
    model.tokenizer = _s3_tokenizer(size["tokenizer"])
    model.mel_extractor = mel_spectrogram
    model.speaker_encoder = CAMPPlus(feat_dim=MELS, memory_efficient=False, **size["campplus"])
    model.meanflow = False
    width = size["encoder"]["output_size"]
    encoder = UpsampleConformerEncoder(
        **size["encoder"], input_size=width, dropout_rate=0.1, positional_dropout_rate=0.1,
        attention_dropout_rate=0.1, normalize_before=True, input_layer="linear",
        pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn", use_cnn_module=False,
        macaron_style=False)
    # upstream's encoder builds these two at 512 whatever its width
    encoder.pre_lookahead_layer = PreLookaheadLayer(channels=width, pre_lookahead_len=3)
    encoder.up_layer = Upsample1D(channels=width, out_channels=width, stride=2)
    estimator = ConditionalDecoder(in_channels=4 * MELS, out_channels=MELS, causal=True, dropout=0.0, act_fn="gelu",
                                   meanflow=False, **size["decoder"])
    model.flow = CausalMaskedDiffWithXvec(
        input_size=width, spk_embed_dim=size["campplus"]["embedding_size"], encoder=encoder,
        decoder=CausalConditionalCFM(spk_emb_dim=MELS, cfm_params=CFM_PARAMS, estimator=estimator))
    model.resamplers = {}
    model.mel2wav = HiFTGenerator(
        sampling_rate=S3GEN_SR, base_channels=size["hift"]["base_channels"], upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7], source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        f0_predictor=ConvRNNF0Predictor(cond_channels=size["hift"]["f0_channels"]))
    n_trim = S3GEN_SR // 50  # as upstream: the first 20 ms faded in
    trim_fade = torch.zeros(2 * n_trim)
    trim_fade[n_trim:] = (torch.cos(torch.linspace(torch.pi, 0, n_trim)) + 1) / 2
    model.register_buffer("trim_fade", trim_fade, persistent=False)
    model.estimator_dtype = "fp32"
    return model


def _s3_tokenizer(size: dict):
    """Upstream's S3Tokenizer at `size` (its constructor never passes a size on: always 1280)."""
    import librosa
    import torch
    from chatterbox.models.s3tokenizer import S3_SR, S3Tokenizer
    from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

    tokenizer = S3Tokenizer.__new__(S3Tokenizer)
    S3TokenizerV2.__init__(tokenizer, "speech_tokenizer_v2_25hz", ModelConfig(n_mels=S3_TOKENIZER_MELS, **size))
    tokenizer.n_fft = 400
    tokenizer.register_buffer("_mel_filters", torch.FloatTensor(
        librosa.filters.mel(sr=S3_SR, n_fft=tokenizer.n_fft, n_mels=S3_TOKENIZER_MELS)))
    tokenizer.register_buffer("window", torch.hann_window(tokenizer.n_fft))
    return tokenizer


def text_tokenizer(path: Path):
    """Upstream's MTLTokenizer without its constructor's download of a Chinese mapping
    (Chinese is not offered, so it is never used)."""
    from chatterbox.models.tokenizers.tokenizer import MTLTokenizer
    from tokenizers import Tokenizer

    tokenizer = MTLTokenizer.__new__(MTLTokenizer)
    tokenizer.tokenizer = Tokenizer.from_file(str(path))
    tokenizer.cangjie_converter = None
    tokenizer.check_vocabset_sot_eot()
    return tokenizer


def load(model_dir: Path, device: str = "cpu"):
    """`ChatterboxMultilingualTTS` from `model_dir`, every module loaded strictly."""
    import torch
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS, Conditionals
    from safetensors.torch import load_file

    t3_state = load_file(str(model_dir / T3_WEIGHTS))
    if "model" in t3_state:  # as upstream: some exports nest the state
        t3_state = t3_state["model"][0]
    ve_state = torch.load(model_dir / VE, map_location="cpu", weights_only=True)
    s3_state = torch.load(model_dir / S3GEN, map_location="cpu", weights_only=True)
    size = sizes(*({k: tuple(v.shape) for k, v in state.items()} for state in (t3_state, ve_state, s3_state)))
    parts = []
    with warnings.catch_warnings():  # deprecations inside upstream's modules, not the user's to act on
        warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
        modules = [build(part_size) for build, part_size in
                   ((build_t3, size["t3"]), (build_voice_encoder, size["ve"]), (build_s3gen, size))]
    for module, state in zip(modules, (t3_state, ve_state, s3_state)):
        missing, unexpected = module.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in getattr(module, "ignore_state_dict_missing", ())]
        if missing or unexpected:
            odd = (missing or unexpected)[0]
            raise ValueError(f"{type(module).__name__}: {len(missing)} weights missing, {len(unexpected)} "
                             f"unexpected (e.g. {odd})")
        parts.append(module.to(device).eval())
    t3, ve, s3gen = parts
    conds = None
    if (model_dir / CONDS).is_file():
        conds = Conditionals.load(model_dir / CONDS, map_location="cpu").to(device)
    with contextlib.redirect_stdout(io.StringIO()):  # its watermarker prints as it loads: not on dub's stdout
        return ChatterboxMultilingualTTS(t3, s3gen, ve, text_tokenizer(model_dir / TOKENIZER), device, conds=conds)
