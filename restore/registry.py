"""Registries of body families and named variants.

A *family* (``edt``, ``hat``, ``swinir``, ``ipt``) knows how to build a shared body and the per-task heads and
tails from architecture keyword arguments. A *variant* (``edt_b``, ``hat_s``, ...) is a family plus a fixed set of
those arguments, registered by name at import time of the family's module (as timm registers its models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restore.families.base import Family

__all__ = ["VariantSpec", "register_family", "get_family", "register_variant", "get_variant", "list_variants"]

_FAMILIES: dict[str, Family] = {}
_VARIANTS: dict[str, "VariantSpec"] = {}


@dataclass(frozen=True)
class VariantSpec:
    """A named architecture: the family that builds it and its keyword arguments."""

    name: str
    family: str
    arch: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    _import_builtin_families()
    if name not in _FAMILIES:
        raise ValueError(f"unknown body family {name!r}; available: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def register_variant(name: str, family: str, description: str = "", **arch: Any) -> VariantSpec:
    spec = VariantSpec(name=name, family=family, arch=dict(arch), description=description)
    _VARIANTS[name] = spec
    return spec


def get_variant(name: str) -> VariantSpec:
    _import_builtin_families()
    if name not in _VARIANTS:
        raise ValueError(f"unknown variant {name!r}; available: {', '.join(list_variants())}")
    return _VARIANTS[name]


def list_variants() -> list[str]:
    """Names of all registered variants, e.g. ``["edt_b", "edt_l", ...]``."""
    _import_builtin_families()
    return sorted(_VARIANTS)


def _import_builtin_families() -> None:
    # Families register themselves on import; importing here keeps `restore.registry` free of import cycles.
    import importlib

    for module in ("edt", "hat", "swinir", "ipt"):
        try:
            importlib.import_module(f"restore.families.{module}")
        except ModuleNotFoundError as err:  # a family not written yet must not break the others
            if err.name != f"restore.families.{module}":
                raise
