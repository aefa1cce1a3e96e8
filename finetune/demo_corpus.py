"""The demo's training corpus: scikit-image's bundled photographs (no download) or a user's image folder, staged
flat into ``train/`` with an optional held-out part that never enters training."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["EMBEDDED_PHOTOS", "HELD_OUT", "HELD_OUT_FROM_DIR", "embedded_photo_dir", "stage_corpus"]

# Real photographs shipped inside scikit-image (skimage/data); synthetic images (chessboard, logo, text, phantom,
# color, horse, clock) are left out: they would teach the model edges that photographs do not have.
EMBEDDED_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png",
    "retina.jpg", "rocket.jpg",
)
# Scored instead of Set5 when the benchmarks are not on the machine; then they are kept out of training.
HELD_OUT = ("chelsea.png", "coffee.png", "motorcycle_right.png")
HELD_OUT_FROM_DIR = 3  # the last N images (by name) of a --data folder, under the same rule


def embedded_photo_dir() -> Path:
    """The folder of scikit-image's bundled images (installed with the package; nothing is downloaded)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    missing = [name for name in EMBEDDED_PHOTOS if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"scikit-image's bundled photographs {missing} are not in {folder}; reinstall scikit-image "
            f"(pip install --force-reinstall scikit-image) or pass --data DIR with your own images"
        )
    return folder


def _image_files(folder: Path) -> list[Path]:
    from pretrain.shards import IMAGE_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def stage_corpus(dest: Path, data: str | Path | None = None, hold_out: bool = False) -> dict[str, Any]:
    """Lay out ``dest/train`` (and ``dest/heldout`` when ``hold_out``) from the embedded photos or ``data``.

    The embedded photos are copied (a few MB); a user folder is linked, flattened to unique names, so a class tree
    works too. Held-out images never enter ``train``. Returns what was staged (names and counts).
    """
    train, held = dest / "train", dest / "heldout"
    if dest.exists():
        shutil.rmtree(dest)
    train.mkdir(parents=True)
    if data is None:
        src = embedded_photo_dir()
        files = [src / name for name in EMBEDDED_PHOTOS]
        held_names = set(HELD_OUT) if hold_out else set()
        source = f"scikit-image's bundled photographs ({src})"
        link = False
    else:
        src = Path(data).expanduser().resolve()
        if not src.is_dir():
            raise FileNotFoundError(f"--data {data}: no such folder; pass a folder of images (any depth)")
        files = _image_files(src)
        if len(files) < 2 + (HELD_OUT_FROM_DIR if hold_out else 0):
            raise ValueError(f"--data {data}: found {len(files)} images (.jpg/.png/...); the demo needs at least "
                             f"{2 + (HELD_OUT_FROM_DIR if hold_out else 0)}")
        held_names = {str(p.relative_to(src)) for p in files[-HELD_OUT_FROM_DIR:]} if hold_out else set()
        source = str(src)
        link = True
    staged: dict[str, list[str]] = {"train": [], "heldout": []}
    for f in files:
        rel = f.name if data is None else str(f.relative_to(src))
        part = "heldout" if rel in held_names else "train"
        flat = rel.replace(os.sep, "__")  # unique: relative paths are unique
        target = (held if part == "heldout" else train) / flat
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            target.symlink_to(f)
        else:
            shutil.copyfile(f, target)
        staged[part].append(flat)
    return {"source": source, "train": staged["train"], "heldout": staged["heldout"],
            "train_dir": str(train), "heldout_dir": str(held) if staged["heldout"] else None}
