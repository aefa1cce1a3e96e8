"""Hub I/O for `RestorationModel`: the export format, strict loading, model cards.

The format (as diffusers' ``ModelMixin``/``ConfigMixin`` and ``huggingface_hub.PyTorchModelHubMixin``):
``config.json`` (the constructor arguments: variant, tasks, arch, format_version), ``model.safetensors`` and a
``README.md`` model card rendered from ``cards/model_card.md.jinja``. Weights are read only from safetensors:
pickled ``.bin``/``.pt`` files are refused (unpickling runs arbitrary code), with a pointer to ``restore convert``.

Loading is strict: a missing or unexpected key raises, naming the keys (the mixin's default is ``strict=False``,
see ECOSYSTEM notes). Files are resolved with ``hf_hub_download``, so the Hub cache and ``HF_HUB_OFFLINE=1``
work as for any Hub library.

Bad input raises (all one-line messages naming the file and the fix; ``tasks.errors`` maps them to exit code 2):

- :class:`InvalidConfigError` (an ``InputError``, so a ``ValueError``): ``config.json`` is not JSON, not an object,
  lacks a key, or holds a value the architecture refuses (unknown variant or task, ``window_size: 0``, ...);
- :class:`CorruptCheckpointError` (an ``InputError``): ``model.safetensors`` is truncated, empty or not
  safetensors, holds non-float or non-finite (NaN/Inf) weights, or its keys/shapes do not match the config;
- ``InputError``: pickled weights only, an unknown Hub repo or revision, a ``map_location`` that is no usable device;
- ``FileNotFoundError``: no such folder or file, or (offline) the file is not in the Hub cache;
- ``IsADirectoryError``: ``config.json`` or ``model.safetensors`` is a folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from safetensors.torch import load_file, save_model

from cards import model_card_template
from restore.checkpoints import EMA_WEIGHTS, training_folder
from tasks.errors import InputError
from tasks.io import publish_mode

if TYPE_CHECKING:
    from restore.model import RestorationModel

__all__ = [
    "MODEL_CARD_TEMPLATE", "WEIGHTS_NAME", "CONFIG_NAME", "from_pretrained", "save_pretrained", "save_weights",
    "CorruptCheckpointError", "InvalidConfigError",
]

MODEL_CARD_TEMPLATE = model_card_template()
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar")
_CONFIG_KEYS = ("variant", "tasks", "arch", "format_version")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class InvalidConfigError(InputError):
    """``config.json`` of a model cannot rebuild a model: the message names the file, the key and the valid values."""


class CorruptCheckpointError(InputError):
    """``model.safetensors`` is unreadable (truncated, empty, not safetensors) or holds weights that cannot be used."""


_CONVERT_HINT = (
    "convert it once, in an environment you trust, with `restore convert CHECKPOINT OUT_DIR --family "
    "edt|hat|swinir|ipt` (or restore.convert_checkpoint), then load OUT_DIR"
)


def _refuse_pickle(what: str) -> InputError:
    return InputError(
        f"{what}: restore loads only {WEIGHTS_NAME}, never pickled weights (.bin/.pt/.pth: unpickling can run "
        f"arbitrary code); {_CONVERT_HINT}"
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
    ``push_to_hub=True`` pushes after the local save is in place, to ``repo_id`` or, as the mixin does, the folder's
    name (the mixin, saving into the temporary folder, would name the repo after that, and a failed push would
    then lose the local save too).
    """
    target = Path(save_directory)
    target.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else model.config_dict()
    push, repo_id = kwargs.pop("push_to_hub", False), kwargs.pop("repo_id", None)
    tmp = Path(tempfile.mkdtemp(prefix=".restore-save-", dir=target))
    try:
        mixin_save(tmp, config=config, model_card_kwargs=model_card_kwargs)
        for item in sorted(tmp.iterdir()):
            publish_mode(item)  # safetensors writes its file 0600; a published model is world-readable
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if push:
        return model.push_to_hub(repo_id or target.resolve().name, config=config,
                                 model_card_kwargs=model_card_kwargs, **kwargs)
    return None


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


def _resolve_local(folder: Path, weights_name: str = WEIGHTS_NAME) -> tuple[Path, Path]:
    config = folder / CONFIG_NAME
    weights = folder / weights_name
    for path in (weights, config):
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder, not a file; {folder} is not a restore model folder "
                                    "(save one with save_pretrained)")
    if weights_name == EMA_WEIGHTS and not weights.is_file():
        raise FileNotFoundError(f"checkpoint {folder} holds no {EMA_WEIGHTS} (its recipe had ema=0); load it "
                                "without ema=True")
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise _refuse_pickle(f"folder {folder} has no {WEIGHTS_NAME}, only {', '.join(pickles)}")
        raise FileNotFoundError(f"folder {folder} has no {WEIGHTS_NAME}; save a model there with save_pretrained")
    if not config.is_file():
        raise FileNotFoundError(
            f"folder {folder} has {WEIGHTS_NAME} but no {CONFIG_NAME}; it is not a restore model folder "
            "(official checkpoints go through `restore convert`)"
        )
    return config, weights


def _local_weights(path: Path, ema: bool) -> tuple[Path, str]:
    """The model folder and weights file name meant by a local ``path``: itself, or for a training run / ``step-N``
    folder (`restore.checkpoints`) that checkpoint, with its EMA weights when ``ema``."""
    step_dir = training_folder(path)
    if step_dir is None:
        if ema:
            raise InputError(f"ema=True: {path} is not a training run or step-N folder (an exported model holds one "
                             "set of weights); load it without ema=True")
        return path, WEIGHTS_NAME
    if not (step_dir / CONFIG_NAME).is_file():
        raise InputError(f"{step_dir} was written before training checkpoints carried their model (no "
                         f"{CONFIG_NAME}); export it once with `pretrain export {step_dir.parent.parent} OUT"
                         f"{' --ema' if ema else ''}` (or pass it to finetune --init), then load OUT")
    return step_dir, EMA_WEIGHTS if ema else WEIGHTS_NAME


def _repo_pickles(repo_id: str, revision: str | None, token: str | bool | None) -> list[str]:
    """Pickled weight files of a Hub repo (for the error message only: any failure gives [])."""
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(repo_id, revision=revision, token=token)
    except Exception:  # noqa: BLE001 - a hint, never a reason to fail differently
        return []
    return sorted(f for f in files if Path(f).suffix in _PICKLE_SUFFIXES)


def _hub_unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the Hub endpoint refuses a TCP connection (DNS failure, refused, no route), or None when it accepts one or
    no direct probe can tell (a proxy is configured, or the connection is merely slow).

    Without a network the Hub client can retry a request five times with backoff (about 25 s) before it gives up;
    one probe here sends the load to the cache at once, with a warning that says why, and an uncached model fails
    at once.
    """
    import socket
    import urllib.parse
    import urllib.request

    if any(scheme != "no" for scheme in urllib.request.getproxies()):  # only the client, through it, can tell
        return None
    url = urllib.parse.urlsplit(endpoint)
    if not url.hostname:
        return None
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except TimeoutError:  # slow is not absent: let the client wait with its own timeouts
        return None
    except OSError as err:  # socket.gaierror (no DNS), ConnectionRefusedError, no route to host, ...
        return " ".join(str(err.strerror or err).split())
    return None


def _hub_file(repo_id: str, filename: str, **download: Any) -> Path:
    """``hf_hub_download`` with the Hub client's errors turned into one-line messages that say what to do."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    where = f"Hub repo {repo_id!r} (revision {download.get('revision') or 'main'})"
    try:
        return Path(hf_hub_download(repo_id, filename, **download))
    except LocalEntryNotFoundError as err:  # before EntryNotFoundError: it is a subclass
        # offline (HF_HUB_OFFLINE=1 / local_files_only=True) or the Hub unreachable, and the file is not cached
        raise FileNotFoundError(
            f"{filename} of {where} is not in the local Hub cache and cannot be downloaded now (offline: "
            f"HF_HUB_OFFLINE=1 or local_files_only=True, or no network); download it once with network access "
            f"(`hf download {repo_id} {filename}` or from_pretrained without offline mode), then load again"
        ) from err
    except RevisionNotFoundError as err:  # before RepositoryNotFoundError: its sibling, checked first for clarity
        raise InputError(f"{where}: no such revision; pass an existing branch, tag or commit sha") from err
    except RepositoryNotFoundError as err:  # GatedRepoError is a subclass
        raise InputError(
            f"{where} does not exist or needs access (private or gated), and no local folder of that name "
            "exists: check the name, or log in (`hf auth login`) / pass token="
        ) from err
    except EntryNotFoundError as err:
        if filename == CONFIG_NAME:
            raise FileNotFoundError(f"{where} has no {CONFIG_NAME}; it is not a restore model repo") from err
        pickles = _repo_pickles(repo_id, download.get("revision"), download.get("token"))
        if pickles:
            raise _refuse_pickle(f"{where} has no {WEIGHTS_NAME}, only {', '.join(pickles)}") from err
        raise FileNotFoundError(f"{where} has no {WEIGHTS_NAME}; push one with save_pretrained/push_to_hub") from err


def _read_config(path: Path) -> dict[str, Any]:
    """Parse ``config.json`` and check every key's type and value before any module is built."""
    from restore.registry import list_variants
    from tasks.registry import get_task

    fix = "re-export the model with save_pretrained (or restore convert)"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidConfigError(f"{path} is not valid JSON ({err}); {fix}") from err
    if not isinstance(config, dict):
        raise InvalidConfigError(
            f"{path} holds a JSON {type(config).__name__}, not an object with keys {list(_CONFIG_KEYS)}; {fix}"
        )
    missing = [k for k in ("variant", "tasks") if k not in config]
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if missing or unknown:
        raise InvalidConfigError(
            f"{path} is not a restore config: missing keys {missing}, unknown keys {unknown}; expected keys "
            f"{list(_CONFIG_KEYS)}; {fix}"
        )
    variant, tasks = config["variant"], config["tasks"]
    if not isinstance(variant, str) or variant not in list_variants():
        raise InvalidConfigError(f"{path}: 'variant' is {variant!r}; valid variants: {', '.join(list_variants())}")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise InvalidConfigError(f"{path}: 'tasks' must be a non-empty list of task names (e.g. [\"sr_x2\"]), "
                                 f"got {tasks!r}")
    for task in tasks:
        try:
            get_task(task)
        except ValueError as err:
            raise InvalidConfigError(f"{path}: 'tasks' holds {task!r}: {err}") from err
    if not isinstance(config.get("arch", {}), dict):
        raise InvalidConfigError(f"{path}: 'arch' must be an object of architecture arguments, got "
                                 f"{config['arch']!r}")
    version = config.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidConfigError(f"{path}: 'format_version' must be a positive integer, got {version!r}")
    return config


def _name_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, *,
                           against: str = "the model built from its config.json", fix: str | None = None) -> None:
    """Load ``state`` into ``model``; raise `CorruptCheckpointError` naming the keys that cannot be used.

    Missing, unexpected and mis-shaped keys are refused; so are integer/bool tensors where the model has float
    ones (a float of another precision, e.g. fp16 weights, is cast to the model's dtype as ``load_state_dict``
    does) and non-finite values (NaN/Inf: every output would be NaN, usually a diverged training run).
    The one strict loader of the project (hub, ``restore convert``, training exports); ``against`` names what
    the model was built from and ``fix`` is appended to a mismatch message.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    common = sorted(set(own) & set(state))
    shapes = [f"{k} (checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
              for k in common if state[k].shape != own[k].shape]
    dtypes = [f"{k} ({state[k].dtype} vs model {own[k].dtype})" for k in common
              if own[k].is_floating_point() and not state[k].is_floating_point()]
    parts = []
    if missing:
        parts.append(f"missing keys: {_name_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_name_keys(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {_name_keys(shapes)}")
    if dtypes:
        parts.append(f"non-float tensors: {_name_keys(dtypes)}")
    if parts:
        raise CorruptCheckpointError(
            f"weights in {source} do not match {against}; " + "; ".join(parts) + (f"; {fix}" if fix else "")
        )
    non_finite = [k for k in common if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if non_finite:
        raise CorruptCheckpointError(
            f"weights in {source} hold NaN/Inf values in {len(non_finite)} tensor(s): {_name_keys(non_finite)}; "
            "the model would output NaN (often a diverged training run): export an earlier checkpoint"
        )
    model.load_state_dict(state, strict=True)


def _load_weights(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` onto the CPU, with its header errors turned into `CorruptCheckpointError`
    naming ``path``."""
    from safetensors import SafetensorError

    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"{path} is empty (0 bytes), an interrupted download or save; {fix}")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise CorruptCheckpointError(
            f"{path} ({size} bytes) is not a complete safetensors file ({err}): truncated or corrupt; {fix}"
        ) from err


def _check_device(map_location: str | torch.device) -> torch.device:
    """``map_location`` as a device that exists here, checked before anything is read or built."""
    from tasks.errors import check_device  # the one device check of every command

    return check_device(map_location, "map_location")


def _missing_local(path: Path) -> str:
    """The message for ``org/name`` whose ``org`` is a folder here: the folder ``name`` is missing from it."""
    import difflib

    names = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
    close = difflib.get_close_matches(path.name, names, n=3)
    hint = f"did you mean {', '.join(str(path.parent / c) for c in close)}? " if close else ""
    return (f"{path}: folder {path.parent} exists here but holds no {path.name!r}; {hint}(for the Hub repo "
            f"{path.as_posix()!r}, run from a folder without a {str(path.parent)!r} subfolder)")


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
    ema: bool = False,
) -> "RestorationModel":
    """See `RestorationModel.from_pretrained`."""
    device = _check_device(map_location)
    path = Path(name_or_path)
    if path.suffix in _PICKLE_SUFFIXES and (path.is_file() or not _REPO_ID.fullmatch(str(name_or_path))):
        raise _refuse_pickle(str(path))
    if path.is_file():
        raise InputError(f"{path} is a file; pass the folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"{path} is a broken symbolic link (to {os.readlink(path)!r})")
    if path.is_dir():
        config_path, weights_path = _resolve_local(*_local_weights(path, ema))
        config = _read_config(config_path)
        source = str(path)
        fix = "re-save it with save_pretrained (or re-run restore convert), or copy it again"
    else:
        if not _REPO_ID.fullmatch(str(name_or_path)):
            raise FileNotFoundError(f"{name_or_path!r} is neither an existing folder nor a Hub repo id (org/name)")
        if not path.is_absolute() and path.parent.is_dir() and path.parent != Path("."):
            raise FileNotFoundError(_missing_local(path))  # a typo in a local path, not a Hub id to retry for
        if ema:
            raise InputError(f"ema=True reads a training checkpoint folder; {name_or_path!r} is a Hub repo id, "
                             "whose weights are the ones it was published with")
        from huggingface_hub import constants

        offline = local_files_only or force_download or constants.HF_HUB_OFFLINE  # force: the client's own errors
        why = None if offline else _hub_unreachable(constants.ENDPOINT)
        if why is not None:
            from restore.inference import FallbackWarning

            warnings.warn(f"the Hub at {constants.ENDPOINT} is unreachable ({why}): loading {name_or_path} from the "
                          f"local Hub cache (HF_HUB_OFFLINE=1 skips this check)", FallbackWarning, stacklevel=3)
            local_files_only = True
        download = dict(revision=revision, cache_dir=cache_dir, force_download=force_download, token=token,
                        local_files_only=local_files_only)
        config_path = _hub_file(str(name_or_path), CONFIG_NAME, **download)
        config = _read_config(config_path)  # a bad config fails before the large download
        weights_path = _hub_file(str(name_or_path), WEIGHTS_NAME, **download)
        source = f"{name_or_path}@{revision or 'main'}"
        fix = f"download it again: from_pretrained({str(name_or_path)!r}, force_download=True)"
    if tasks is not None:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        absent = [t for t in tasks if t not in config["tasks"]]
        if absent:
            raise InputError(f"{source} does not serve task(s) {absent}; it has: {', '.join(config['tasks'])}")
    # onto the CPU, before building (a corrupt file fails fast); the model then moves once: loading onto the
    # device first held the weights there twice and copied them back and forth
    state = _load_weights(weights_path, fix)
    try:
        model = cls(**config)
    except (ValueError, TypeError) as err:  # the config's values are the only input here (types checked above)
        raise InvalidConfigError(f"{config_path}: {' '.join(str(err).split())}") from err
    load_state_dict_strict(model, state, str(weights_path) if path.is_dir() else f"{source} ({weights_path})")
    model.to(device)
    if tasks is not None:
        model.keep_tasks(tasks)
    return model.eval()
