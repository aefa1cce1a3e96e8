"""The contract between `RestorationModel` and a body family.

`RestorationModel.forward(x, task)` runs, for an input image batch ``x`` (B, 3, H, W) in [0, 1] already padded
to ``family.pad_multiple(arch, task)``:

    feat, skips = heads[task](x)          # feat: (B, C, h, w); skips: tuple of tensors the tail needs (may be ())
    feat = body(feat, task)               # shared body; `task` is only used by bodies with task embeddings (IPT)
    y = tails[task](feat, skips, x)       # (B, 3, scale*H, scale*W); x is passed for image-level residuals

Everything that differs between families (mean shift, value range, global residuals, upsamplers) lives inside
the head, body and tail modules, chosen in ``__init__``, never by branching on strings in ``forward``.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn


class Family(Protocol):
    """A body family: builds the modules of a `RestorationModel` from architecture kwargs."""

    name: str

    def build_body(self, arch: dict[str, Any], tasks: list[str]) -> nn.Module:
        """The shared body; ``forward(feat, task) -> feat``. ``tasks`` is for bodies holding per-task state."""

    def build_head(self, arch: dict[str, Any], task: str) -> nn.Module:
        """The task's head; ``forward(x) -> (feat, skips)``."""

    def build_tail(self, arch: dict[str, Any], task: str) -> nn.Module:
        """The task's tail; ``forward(feat, skips, x) -> image``."""

    def pad_multiple(self, arch: dict[str, Any], task: str) -> int:
        """Input height and width must be a multiple of this for ``task`` (reflect padding makes them so)."""

    def fixed_input_size(self, arch: dict[str, Any]) -> int | None:
        """A fixed square input size the body needs (IPT: 48), or None for any size.

        Models of such families run larger inputs through `restore.inference.tiled_forward` windows.
        """
