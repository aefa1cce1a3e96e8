"""The blind tasks join multi-task pretraining like any other: a shard stream with realsr_x4 and bsrgan_x4 next to
bicubic SR gives LR/HR batches of the task's scale, blind-degraded (not bicubic), the same for the same
(seed, step, rank) in a fresh stream and after a resume. (Another ``num_workers`` is another data order by design:
`pretrain.data` splits the shards into one sub-stream per worker.)"""

from __future__ import annotations

import torch

from pretrain.data import DataStream, expand_urls
from tasks.degradations import bicubic_downscale

TASKS = ("sr_x4", "realsr_x4", "bsrgan_x4")


def _stream(urls, **kw) -> DataStream:
    args = dict(mode="edt", batch_size=2, lr_patch=8, dn_patch=16, seed=5, rank=0, world_size=1, num_workers=0)
    return DataStream(expand_urls(urls), TASKS, **{**args, **kw})


def test_blind_tasks_in_a_pretraining_stream(shard_set):
    first = next(_stream(shard_set[0]))
    again = next(_stream(shard_set[0]))
    for task in TASKS:
        b = first.batches[task]
        assert b.lq.shape == (2, 3, 8, 8) and b.gt.shape == (2, 3, 32, 32), task
        assert torch.equal(b.lq, again.batches[task].lq) and torch.equal(b.gt, again.batches[task].gt), task
    for task in ("realsr_x4", "bsrgan_x4"):
        b = first.batches[task]
        assert (b.lq - bicubic_downscale(b.gt, 4)).abs().mean() > 1e-3, f"{task} LR is plain bicubic"
    resumed = _stream(shard_set[0], state=_stream(shard_set[0]).state_dict())
    assert torch.equal(next(resumed).batches["realsr_x4"].lq, first.batches["realsr_x4"].lq)
