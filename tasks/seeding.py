"""Seeded construction in the middle of a run: `cpu_seeded`, for networks built on the CPU from a fixed seed (the
LPIPS models of `tasks.perceptual`, the GAN discriminator of `pretrain.gan`) without moving the run's random
streams. The streams of the data and the ranks are elsewhere: `pretrain.data.step_generator`,
`pretrain.train.rank_seed`."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["cpu_seeded"]


@contextlib.contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """The CPU random stream seeded with ``seed`` inside the block and put back after it; the CUDA streams untouched.

    Not ``torch.manual_seed`` inside ``fork_rng(devices=[])``: ``manual_seed`` also reseeds every CUDA device, which
    that fork does not restore, so every rank would leave with the same GPU stream (the same dropout and
    stochastic-depth masks on each rank).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
