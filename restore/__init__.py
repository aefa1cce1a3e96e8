"""restore: multi-task image restoration models (EDT-, HAT-, SwinIR-, IPT-style) with Hub I/O and tiled inference.

    import restore
    model = restore.create_model("edt_b", tasks=["sr_x2", "sr_x4"])
    model = restore.RestorationModel.from_pretrained("org/name")
    out = restore.restore_image(model, image, task="sr_x4", tile=256)
"""

from __future__ import annotations

from typing import Any

from restore.inference import restore_image
from restore.tiling import tiled_forward
from restore.model import RestorationModel, create_model
from restore.registry import list_variants

__all__ = [
    "RestorationModel",
    "create_model",
    "list_variants",
    "restore_image",
    "tiled_forward",
    "convert_checkpoint",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # restore.convert pulls in the official-checkpoint adapters of every family; load it only when asked for
    if name == "convert_checkpoint":
        from restore.convert import convert_checkpoint

        return convert_checkpoint
    raise AttributeError(f"module 'restore' has no attribute {name!r}")
