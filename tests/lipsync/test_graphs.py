"""CUDA graphs replay the UNet as eager code runs it (needs a CUDA device; skipped without)."""

from __future__ import annotations

import pytest
import torch

from polydub.lipsync.graphs import GraphedCall
from polydub.lipsync.pipeline import LipSyncPipeline

from .test_pipeline import RES, aligned_faces, speech, tiny_vae, training_mask
from .test_unet import tiny_unet

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def synced(faces, audio, **options):
    torch.manual_seed(0)
    pipe = LipSyncPipeline(tiny_unet(), tiny_vae(), training_mask(), num_steps=4, device="cuda", **options)
    latents = pipe.prepare_faces(faces, generator=torch.Generator("cuda").manual_seed(0))
    return pipe, pipe.sync(latents, audio, pipe.initial_noise(RES, RES), faces)


@needs_cuda
def test_graphed_loop_matches_eager_and_captures_once_per_signature():
    faces = aligned_faces()
    audio = {"es": speech(1), "fr": speech(2)}
    _, eager = synced(faces, audio)
    pipe, graphed = synced(faces, audio, cuda_graphs=True)
    assert isinstance(pipe._unet_call, GraphedCall)
    assert len(pipe._unet_call.graphs) == 1  # four steps, one signature
    for lang in audio:
        torch.testing.assert_close(graphed[lang], eager[lang], atol=1e-3, rtol=0)
    # a shorter chunk and one language: a second graph, its own results
    latents = pipe.prepare_faces(faces[:2], generator=torch.Generator("cuda").manual_seed(0))
    short = pipe.sync(latents, {"es": speech(1)[:2]}, pipe.initial_noise(RES, RES), faces[:2])
    assert len(pipe._unet_call.graphs) == 2
    assert short["es"].shape == (2, 3, RES, RES)


@needs_cuda
def test_graphed_deep_cache_and_split_batches_match_eager():
    faces = aligned_faces()
    audio = {"es": speech(1), "fr": speech(2), "de": speech(3)}
    _, eager = synced(faces, audio, deep_cache=3, max_batch=2)
    pipe, graphed = synced(faces, audio, deep_cache=3, max_batch=2, cuda_graphs=True)
    # full and shallow passes are two signatures; three calls of 2 items per step reuse them,
    # so each call's output must be its own (a replay overwrites the graph's buffers)
    assert len(pipe._unet_call.graphs) == 2
    for lang in audio:
        torch.testing.assert_close(graphed[lang], eager[lang], atol=1e-3, rtol=0)
    assert (graphed["es"] - graphed["de"]).abs().max() > 1e-3


def test_graphs_are_not_used_on_the_cpu():
    pipe = LipSyncPipeline(tiny_unet(), tiny_vae(), training_mask(), num_steps=2, cuda_graphs=True)
    assert not isinstance(pipe._unet_call, GraphedCall)
    assert pipe._unet_call is pipe.unet
