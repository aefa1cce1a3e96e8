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

import math
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


# ------------------------------------------------------------------------------------ arch value checks
# Shared by every family's arch validation, so a bad ``config.json`` value fails before any module is built with a
# message naming the key, the value and what is valid (rather than a ZeroDivisionError deep inside a layer).


def arch_error(family: str, key: str, value: Any, expected: str) -> ValueError:
    """The one error shape of an invalid architecture value."""
    return ValueError(f"{family} arch {key}={value!r} is invalid: expected {expected}")


def check_int(family: str, key: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats are refused: JSON ``6.5`` must not become 6)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise arch_error(family, key, value, f"an integer >= {minimum}")
    return value


def check_ints(family: str, key: str, value: Any, length: int | None = None, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (a list or tuple; JSON gives lists) as a non-empty tuple of ints >= ``minimum``."""
    expected = f"a list of {'' if length is None else f'{length} '}integers >= {minimum}"
    if not isinstance(value, (list, tuple)) or not value or (length is not None and len(value) != length):
        raise arch_error(family, key, value, expected)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value):
        raise arch_error(family, key, value, expected)
    return tuple(value)


def check_number(family: str, key: str, value: Any, low: float, high: float | None = None,
                 low_inclusive: bool = False, high_inclusive: bool = False) -> float:
    """``value`` as a finite number in the interval from ``low`` to ``high`` (open ends unless inclusive)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low)
    ok = ok and (high is None or (value <= high if high_inclusive else value < high))
    if not ok:
        lo = f"{'>=' if low_inclusive else '>'} {low}"
        hi = "" if high is None else f" and {'<=' if high_inclusive else '<'} {high}"
        raise arch_error(family, key, value, f"a number {lo}{hi}")
    return value
