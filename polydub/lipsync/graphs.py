"""CUDA graphs for the UNet: each call of one input signature replays one captured graph.

A UNet pass at 256 px launches about two thousand small kernels; from eager Python the GPU
waits on their launches. A graph replays them all from one launch. One graph is captured per
signature (shapes, dtypes, which optional inputs are given): in a video that is the full
chunk batch, the last shorter chunk, and DeepCache's two kinds of pass. Graphs share one
memory pool, so capturing another signature costs only what it needs beyond the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

WARMUP_CALLS = 2  # eager calls on a side stream before capture: cuDNN and cuBLAS pick their kernels


def _signature(value: Any) -> Any:
    return (tuple(value.shape), value.dtype, value.device) if isinstance(value, Tensor) else value


class GraphedCall:
    """`fn(*args, **kwargs)` replayed from CUDA graphs. Tensor arguments are copied into the
    graph's static inputs; the outputs are returned as fresh tensors (the graph's own buffers
    are overwritten by the next replay). `fn` must be free of host synchronisation and of
    data-dependent control flow, as a UNet pass is."""

    def __init__(self, fn: Callable, warmup: int = WARMUP_CALLS):
        self.fn, self.warmup = fn, warmup
        self.graphs: dict[Any, tuple[torch.cuda.CUDAGraph, list, Any]] = {}
        self.pool = None

    def __call__(self, *args, **kwargs):
        leaves, spec = tree_flatten((args, kwargs))
        key = (spec, tuple(_signature(v) for v in leaves))
        if key not in self.graphs:
            self.graphs[key] = self._capture(leaves, spec)
        graph, static, out = self.graphs[key]
        for buffer, value in zip(static, leaves):
            if isinstance(buffer, Tensor):
                buffer.copy_(value)
        graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, out)

    def _capture(self, leaves: list, spec) -> tuple[torch.cuda.CUDAGraph, list, Any]:
        static = [v.clone() if isinstance(v, Tensor) else v for v in leaves]
        args, kwargs = tree_unflatten(static, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.fn(*args, **kwargs)
        return graph, static, out

    def reset(self) -> None:
        """Drop every captured graph (after running out of memory: free their buffers)."""
        self.graphs.clear()
        self.pool = None
