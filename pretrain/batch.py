"""What one training step carries from the data-loader workers to the trainer: a `Batch` per task in a `StepData`.

Both streams make them (`pretrain.data.ShardStream`, `finetune.data.PairStream`); `pretrain.degrade` fills in a
batch whose degradation is pending; `pretrain.engine.Trainer` consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Batch", "StepData"]


@dataclass
class Batch:
    """One task's part of a step: ``lq`` (B, 3, h, w) model input, ``gt`` (B, 3, s*h, s*w) target, in [0, 1].

    ``mask`` (B, 1, h, w), 1 on the pixels hidden from the input, comes with the masked task only: its loss scores
    those pixels alone (`masked_l1`). None for every other task, whose loss scores the whole output.

    ``coord`` and ``cell`` (B, Q, 2) come with ``sr_any`` only (`tasks.degradations.sr_any_batch`): the HR pixels the
    loss scores, as the model's ``query_points`` takes them; its ``gt`` is then their values (B, Q, 3).

    ``lq`` is None while the degradation is pending: ``gt`` then holds the augmented HR crops (B, 3, S, S) that
    `degrade_pending` turns into the task's batch on the training device. With ``decode_on=device`` ``gt`` is None
    too and ``crops`` holds the batch's images: a `PendingCrop` per RGB JPEG (decoded on the device), a ready
    (3, S, S) uint8 patch per other file (decoded by the worker).
    """

    lq: torch.Tensor | None
    gt: torch.Tensor | None
    task: str
    mask: torch.Tensor | None = None
    coord: torch.Tensor | None = None
    cell: torch.Tensor | None = None
    crops: list | None = None

    @property
    def images(self) -> int:
        return len(self.crops) if self.gt is None else self.gt.shape[0]


@dataclass
class StepData:
    """What one training step consumes: one `Batch` per task in this step, and the stream bookkeeping."""

    step: int
    batches: dict[str, Batch]
    stream: int = 0
    position: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # the samples' webdataset keys, for provenance and tests
    degrade_seed: int | None = None  # set while some batch's degradation is pending (`degrade_pending`)

    @property
    def images(self) -> int:
        return sum(b.images for b in self.batches.values())

    def pin_memory(self) -> "StepData":
        """Page-locked batches (``DataLoader(pin_memory=True)`` calls this in its pinning thread), so that the
        trainer's ``non_blocking`` copies to the GPU overlap with compute. Needs CUDA."""
        def pin(v: torch.Tensor | None) -> torch.Tensor | None:
            return None if v is None else v.pin_memory()

        self.batches = {t: Batch(pin(b.lq), pin(b.gt), b.task, pin(b.mask), pin(b.coord), pin(b.cell), b.crops)
                        for t, b in self.batches.items()}
        return self
