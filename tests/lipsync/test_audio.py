"""Whisper features at 50 Hz and the per-frame audio windows the UNet is conditioned on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import whisper

from polydub.errors import InputError
from polydub.lipsync.audio import frame_windows, whisper_features, window_shape

SR = 16_000


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts under a wandering tone: enough structure that every position differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = np.sin(2 * np.pi * (200 + 50 * np.sin(2 * np.pi * 0.3 * t)) * t)
    return (0.3 * tone * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def audio35():
    return speechlike(35.0)


@pytest.fixture(scope="module")
def features35(tiny_whisper, audio35):
    return whisper_features(tiny_whisper, audio35)


def hooked_states(model, mel_window: torch.Tensor) -> torch.Tensor:
    """(1500, 5, width) for one 3000-frame mel window, read off the encoder with forward hooks."""
    states = []
    hooks = [model.encoder.blocks[0].register_forward_pre_hook(lambda m, args: states.append(args[0]))]
    hooks += [b.register_forward_hook(lambda m, args, out: states.append(out)) for b in model.encoder.blocks]
    with torch.no_grad():
        model.encoder(mel_window[None])
    for h in hooks:
        h.remove()
    return torch.stack(states, dim=2)[0]


def test_shapes_10s_and_35s(tiny_whisper, features35):
    f10 = whisper_features(tiny_whisper, speechlike(10.0))
    assert f10.shape == (500, 5, 64)
    assert features35.shape == (1750, 5, 64)  # 1500 from the first window + 250 from the second
    assert frame_windows(f10).shape == (500 // 2 + 2, 50, 64)
    assert frame_windows(features35).shape == (1750 // 2 + 2, 50, 64)
    assert frame_windows(f10).shape[1:] == window_shape(tiny_whisper.dims)  # (50, 64): from the encoder


def test_windows_clamp_at_both_ends(features35):
    windows = frame_windows(features35).reshape(-1, 10, 5, 64)
    t = len(features35)
    # frame 0 is centred on position 0: positions -4..0 all clamp to 0, then 1..5
    for k in range(5):
        assert torch.equal(windows[0, k], features35[0])
    for k in range(5, 10):
        assert torch.equal(windows[0, k], features35[k - 4])
    # the last frame (876) is centred past the end (1752 > 1749): positions 1748, 1749, then T-1
    assert len(windows) == 877
    assert torch.equal(windows[-1, 0], features35[1748])
    for k in range(1, 10):
        assert torch.equal(windows[-1, k], features35[t - 1])


@pytest.mark.slow
def test_values_match_a_direct_encoder_run(tiny_whisper, audio35, features35):
    mel = whisper.log_mel_spectrogram(torch.from_numpy(audio35))  # max - 8 floor over the whole file
    first = hooked_states(tiny_whisper, whisper.pad_or_trim(mel[:, :3000], 3000))
    second = hooked_states(tiny_whisper, whisper.pad_or_trim(mel[:, 3000:], 3000))
    direct = torch.cat([first[:1500], second[:250]])
    windows = frame_windows(features35)
    for frame in (400, 750, 800):  # inside window 1, straddling the 30 s seam, inside window 2
        c = frame * 2
        expected = torch.stack([direct[min(max(p, 0), 1749)] for p in range(c - 4, c + 6)]).reshape(50, 64)
        torch.testing.assert_close(windows[frame], expected, rtol=1e-4, atol=1e-5)
    # no ln_post: the last state is the last block's output, not the encoder's output
    with torch.no_grad():
        encoded = tiny_whisper.encoder(whisper.pad_or_trim(mel[:, :3000], 3000)[None])[0]
    assert not torch.allclose(features35[:1500, -1], encoded, atol=1e-3)


def test_frame_windows_for_a_given_frame_count(features35):
    windows = frame_windows(features35, frames=900)  # video longer than the audio: clamps
    assert windows.shape == (900, 50, 64)
    assert torch.equal(windows[:877], frame_windows(features35))
    assert torch.equal(frame_windows(features35, frames=10, first=300), windows[300:310])


def test_overlapping_windows_option(tiny_whisper, audio35, features35):
    smooth = whisper_features(tiny_whisper, audio35, overlap_s=4.0)
    assert smooth.shape == features35.shape
    # far from the seam the first window is the same; around the 30 s seam it has context now
    torch.testing.assert_close(smooth[:1300], features35[:1300])
    assert not torch.allclose(smooth[1450:1550], features35[1450:1550], atol=1e-3)


def test_empty_audio_is_an_input_error(tiny_whisper):
    with pytest.raises(InputError, match="empty"):
        whisper_features(tiny_whisper, np.zeros(0, np.float32))


def test_stereo_audio_is_an_input_error(tiny_whisper):
    with pytest.raises(InputError, match="mono"):
        whisper_features(tiny_whisper, np.zeros((2, SR), np.float32))
