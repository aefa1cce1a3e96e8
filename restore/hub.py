"""Hub I/O for `RestorationModel`: the export format, strict loading, model cards.

The format (as diffusers' ``ModelMixin``/``ConfigMixin`` and ``huggingface_hub.PyTorchModelHubMixin``):
``config.json`` (the constructor arguments: variant, tasks, arch, format_version), ``model.safetensors`` and a
``README.md`` model card rendered from ``cards/model_card.md.jinja``. Weights are read only from safetensors:
pickled ``.bin``/``.pt`` files are refused (unpickling runs arbitrary code), with a pointer to ``restore convert``.

Loading is strict: a missing or unexpected key raises, naming the keys (the mixin's default is ``strict=False``,
see ECOSYSTEM notes). Files are resolved with ``hf_hub_download``, so the Hub cache and ``HF_HUB_OFFLINE=1``
work as for any Hub library.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors.torch import load_file, save_model

from cards import model_card_template
from tasks.io import publish_mode

if TYPE_CHECKING:
    from restore.model import RestorationModel

__all__ = ["MODEL_CARD_TEMPLATE", "WEIGHTS_NAME", "CONFIG_NAME", "from_pretrained", "save_pretrained", "save_weights"]

MODEL_CARD_TEMPLATE = model_card_template()
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")
_CONFIG_KEYS = ("variant", "tasks", "arch", "format_version")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _refuse_pickle(what: str) -> ValueError:
    return ValueError(
        f"{what} holds pickled PyTorch weights, which restore never loads (unpickling can run arbitrary code). "
        "Convert an official checkpoint once, in an environment you trust, with "
        "`restore convert CHECKPOINT OUT_DIR --family edt|hat|swinir|ipt` (or restore.convert_checkpoint), "
        "then load OUT_DIR"
    )


# ------------------------------------------------------------------------------------------------ saving


def save_weights(model: torch.nn.Module, save_directory: str | Path) -> None:
    """Write ``model.safetensors`` (``save_model`` handles shared tensors)."""
    save_model(model, str(Path(save_directory) / WEIGHTS_NAME), metadata={"format": "pt"})


def save_pretrained(
    model: "RestorationModel",
    save_directory: str | Path,
    mixin_save: Callable[..., Any],
    *,
    config: dict | None = None,
    model_card_kwargs: dict | None = None,
    **kwargs: Any,
) -> Any:
    """Save into a temporary sibling folder with the mixin, then move each file into place with ``os.replace``.

    A crash mid-save therefore never leaves a half-written ``model.safetensors`` next to a valid config. The card
    is regenerated on every save (the mixin alone would keep a stale README.md describing older weights).
    """
    target = Path(save_directory)
    target.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else model.config_dict()
    tmp = Path(tempfile.mkdtemp(prefix=".restore-save-", dir=target))
    try:
        result = mixin_save(tmp, config=config, model_card_kwargs=model_card_kwargs, **kwargs)
        for item in sorted(tmp.iterdir()):
            publish_mode(item)  # safetensors writes its file 0600; a published model is world-readable
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def generate_model_card(model: "RestorationModel", mixin_generate: Callable[..., Any], *args: Any, **kwargs: Any):
    """Render the card; ``eval_results`` (list of ``huggingface_hub.EvalResult``) become ``model-index`` metadata."""
    eval_results = kwargs.pop("eval_results", None)
    meta = {k: kwargs.pop(k) for k in ("base_model", "datasets", "model_name") if kwargs.get(k) is not None}
    card = mixin_generate(
        *args,
        variant=model.variant,
        tasks=model.tasks,
        num_params=f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M",
        arch_json=json.dumps(model.config_dict(), indent=2, sort_keys=True),
        eval_results=eval_results,
        model_name=meta.get("model_name"),
        **kwargs,
    )
    if eval_results:
        # model-index needs a model name; the card's title is a good one
        card.data.model_name = meta.get("model_name") or f"restore-{model.variant}"
        card.data.eval_results = list(eval_results)
    elif meta.get("model_name"):
        card.data.model_name = meta["model_name"]
    if "base_model" in meta:
        card.data.base_model = meta["base_model"]
    if "datasets" in meta:
        card.data.datasets = list(meta["datasets"])
    return card


# ----------------------------------------------------------------------------------------------- loading


def _resolve_local(folder: Path) -> tuple[Path, Path]:
    config = folder / CONFIG_NAME
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise _refuse_pickle(f"folder {folder} has no {WEIGHTS_NAME}; it only " + ", ".join(pickles))
        raise FileNotFoundError(f"folder {folder} has no {WEIGHTS_NAME}; save a model there with save_pretrained")
    if not config.is_file():
        raise FileNotFoundError(
            f"folder {folder} has {WEIGHTS_NAME} but no {CONFIG_NAME}; it is not a restore model folder "
            "(official checkpoints go through `restore convert`)"
        )
    return config, weights


def _resolve_hub(repo_id: str, **download: Any) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    config = Path(hf_hub_download(repo_id, CONFIG_NAME, **download))
    try:
        weights = Path(hf_hub_download(repo_id, WEIGHTS_NAME, **download))
    except EntryNotFoundError as err:
        raise _refuse_pickle(
            f"Hub repo {repo_id!r} has no {WEIGHTS_NAME}; if it holds pytorch_model.bin or *.pt, it"
        ) from err
    return config, weights


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in ("variant", "tasks") if k not in config]
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if missing or unknown:
        raise ValueError(
            f"{path} is not a restore config: missing {missing}, unknown {unknown}; expected keys {list(_CONFIG_KEYS)}"
        )
    return config


def _name_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; raise ValueError naming missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_name_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_name_keys(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_name_keys(shapes)}")
        raise ValueError(f"weights in {source} do not match the model built from its config.json; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def from_pretrained(
    cls: type["RestorationModel"],
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    tasks: list[str] | None = None,
    cache_dir: str | None = None,
    force_download: bool = False,
    token: str | bool | None = None,
    local_files_only: bool = False,
    map_location: str | torch.device = "cpu",
) -> "RestorationModel":
    """See `RestorationModel.from_pretrained`."""
    path = Path(name_or_path)
    if path.suffix in _PICKLE_SUFFIXES and (path.is_file() or not _REPO_ID.fullmatch(str(name_or_path))):
        raise _refuse_pickle(str(path))
    if path.is_file():
        raise ValueError(f"{path} is a file; pass the folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    if path.is_dir():
        config_path, weights_path = _resolve_local(path)
        source = str(path)
    else:
        if not _REPO_ID.fullmatch(str(name_or_path)):
            raise FileNotFoundError(f"{name_or_path!r} is neither an existing folder nor a Hub repo id (org/name)")
        config_path, weights_path = _resolve_hub(
            str(name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
        source = f"{name_or_path}@{revision or 'main'}"
    config = _read_config(config_path)
    if tasks is not None:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        absent = [t for t in tasks if t not in config["tasks"]]
        if absent:
            raise ValueError(f"{source} does not serve task(s) {absent}; it has: {', '.join(config['tasks'])}")
    model = cls(**config)
    device = torch.device(map_location) if not isinstance(map_location, torch.device) else map_location
    state = load_file(str(weights_path), device=str(device))
    load_state_dict_strict(model, state, source)
    model.to(device)
    if tasks is not None:
        model.keep_tasks(tasks)
    return model.eval()
