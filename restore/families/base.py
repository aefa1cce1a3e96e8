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
from dataclasses import fields
from typing import Any, Protocol

from torch import nn


class Family(Protocol):
    """A body family: builds the modules of a `RestorationModel` from architecture kwargs.

    Each method takes the model's ``arch`` dict (its ``config.json`` entry) and turns it into the family's frozen
    arch dataclass (`EDTArch`, `SwinIRArch`, `HATArch`, `IPTArch`) at this boundary; the modules only see that.
    `RestorationModel` asks for ``pad_multiple`` and ``fixed_input_size`` once per task at construction.
    """

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

        Models of such families run larger inputs through `restore.tiling.tiled_forward` windows.
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


def arch_from_dict(cls: type, family: str, arch: dict[str, Any], ignored: frozenset[str] = frozenset(),
                   fixed: dict[str, Any] | None = None) -> Any:
    """Build the frozen arch dataclass ``cls`` from a ``config.json`` arch dict, refusing what it cannot honour.

    Official configs carry keys our bodies do not need (``img_size``: any size runs here): ``ignored`` keys are
    accepted and dropped. ``fixed`` keys are accepted only at the one value we implement (IPT's published flags).
    Any other key is refused, naming the valid ones, so a typo never silently becomes a default.
    """
    fixed = fixed or {}
    valid = sorted(f.name for f in fields(cls))
    unknown = sorted(set(arch) - set(valid) - ignored - set(fixed))
    if unknown:
        accepted = ", ".join(sorted(ignored | set(fixed)))
        raise ValueError(f"unknown {family} arch argument(s) {unknown}; valid: {', '.join(valid)}"
                         + (f" (also accepted from official configs, without effect: {accepted})" if accepted else ""))
    for key, only in fixed.items():
        if key in arch and arch[key] != only:
            raise ValueError(f"{family} arch {key}={arch[key]!r} is not supported: only {key}={only!r} "
                             f"is implemented; drop the key or set it to {only!r}")
    return cls(**{k: v for k, v in arch.items() if k in valid})
