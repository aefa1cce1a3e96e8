"""`RestorationModel`: per-task heads and tails around one shared body, with Hub I/O.

The composition follows EDT's multi-task ``Network`` (Li et al., IJCAI 2023; ``fenglinglwb/EDT``,
``utils/modules/edt.py``): each task has its own head and tail, the body is shared, and in multi-task training the
head outputs of all tasks go through the body in one batched pass (`RestorationModel.forward_multi`). Unlike the
official code, heads and tails are ``nn.ModuleDict`` entries keyed by task name (``"sr_x4"``), never chosen by
list position, and inputs of any size are reflect-padded to the body's multiple and cropped back.

Saving and loading go through ``huggingface_hub.PyTorchModelHubMixin``; ``config.json`` holds exactly the
constructor arguments (variant, tasks, arch, format_version), so the file alone rebuilds the model.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from restore import hub
from restore.layers import crop_to, pad_to_multiple
from restore.registry import get_family, get_variant, list_variants

__all__ = ["RestorationModel", "create_model", "list_variants", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _json_normal(value: Any) -> Any:
    """The value as it comes back from JSON (tuples become lists), so saved and rebuilt configs compare equal."""
    return json.loads(json.dumps(value))


class RestorationModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="restore",
    license="apache-2.0",
    pipeline_tag="image-to-image",
    tags=["image-restoration", "super-resolution", "denoising", "deraining"],
    model_card_template=hub.MODEL_CARD_TEMPLATE,
):
    """A multi-task image restoration model: ``heads[task] -> body -> tails[task]``.

    Args:
        variant: a registered variant name (``restore.list_variants()``), e.g. ``"edt_b"``.
        tasks: the task names this model serves, e.g. ``["sr_x2", "denoise_g25"]``.
        arch: overrides of the variant's architecture arguments.
        format_version: version of the saved format (``config.json`` + ``model.safetensors``).

    Example:
        >>> model = RestorationModel("edt_tiny", tasks=["sr_x2"])
        >>> model(torch.rand(1, 3, 37, 53), task="sr_x2").shape
        torch.Size([1, 3, 74, 106])
    """

    def __init__(
        self,
        variant: str,
        tasks: list[str],
        arch: dict[str, Any] | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> None:
        super().__init__()
        if format_version > FORMAT_VERSION:
            raise ValueError(
                f"this checkpoint uses format version {format_version}, newer than this library's "
                f"{FORMAT_VERSION}; upgrade the `restore` package"
            )
        if isinstance(tasks, str) or not tasks:
            raise ValueError(f"tasks must be a non-empty list of task names, got {tasks!r}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"duplicate task names in {list(tasks)}")
        spec = get_variant(variant)
        self.variant = variant
        self.arch: dict[str, Any] = _json_normal({**spec.arch, **(arch or {})})
        self.family = get_family(spec.family)
        self.format_version = format_version
        self.heads = nn.ModuleDict()
        self.tails = nn.ModuleDict()
        self.body = self.family.build_body(self.arch, list(tasks))
        self._scales: dict[str, int] = {}
        for task in tasks:
            self._build_task(task)

    # ------------------------------------------------------------------------------------------- tasks

    @property
    def tasks(self) -> list[str]:
        """The task names this model serves, in construction order."""
        return list(self.heads.keys())

    def scale(self, task: str) -> int:
        """Output size over input size for ``task`` (1 for denoising/deraining)."""
        self._check_task(task)
        return self._scales[task]

    def _build_task(self, task: str) -> None:
        from tasks.registry import get_task  # validates the name with a message listing the valid forms

        self._scales[task] = get_task(task).scale
        self.heads[task] = self.family.build_head(self.arch, task)
        self.tails[task] = self.family.build_tail(self.arch, task)

    def _check_task(self, task: str) -> None:
        if task not in self.heads:
            raise ValueError(f"task {task!r} is not served by this model; its tasks are: {', '.join(self.tasks)}")

    def keep_tasks(self, tasks: list[str]) -> "RestorationModel":
        """Drop every task not in ``tasks`` (heads, tails and per-task body state). Returns ``self``."""
        if isinstance(tasks, str):
            tasks = [tasks]
        for t in tasks:
            self._check_task(t)
        for t in [t for t in self.tasks if t not in tasks]:
            del self.heads[t]
            del self.tails[t]
            self._scales.pop(t)
        if hasattr(self.body, "keep_tasks"):
            self.body.keep_tasks(list(tasks))
        return self

    def add_task(self, task: str) -> "RestorationModel":
        """Add a fresh head and tail for ``task`` on the same body (e.g. before fine-tuning). Returns ``self``."""
        if task in self.heads:
            raise ValueError(f"task {task!r} already exists in this model ({', '.join(self.tasks)})")
        device = next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        self._build_task(task)
        self.heads[task].to(device=device, dtype=dtype)
        self.tails[task].to(device=device, dtype=dtype)
        if hasattr(self.body, "add_task"):
            self.body.add_task(task)
        return self

    # ------------------------------------------------------------------------------------------ forward

    def pad_multiple(self, task: str) -> int:
        """Input height and width are reflect-padded to a multiple of this for ``task``."""
        return self.family.pad_multiple(self.arch, task)

    def fixed_input_size(self) -> int | None:
        """The square input size the body needs (IPT: 48), or None if it takes any size."""
        return self.family.fixed_input_size(self.arch)

    def _forward_padded(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Pad to the task's multiple, run head -> body -> tail, crop to ``scale`` x the input size."""
        h, w = x.shape[-2:]
        s = self._scales[task]
        xp = pad_to_multiple(x, self.pad_multiple(task))
        feat, skips = self.heads[task](xp)
        feat = self.body(feat, task)
        return crop_to(self.tails[task](feat, skips, xp), h * s, w * s)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Restore ``x`` (B, 3, H, W) in [0, 1] of any size for ``task``; returns (B, 3, scale*H, scale*W)."""
        self._check_task(task)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        size = self.fixed_input_size()
        if size is None:
            return self._forward_padded(x, task)
        from restore.inference import tiled_forward  # fixed-size bodies see larger images window by window

        h, w = x.shape[-2:]
        s = self._scales[task]
        xp = pad_to_multiple(x, size) if (h < size or w < size) else x  # at least one full window
        y = tiled_forward(lambda t: self._forward_padded(t, task), xp, s, tile=size, overlap=size // 4)
        return crop_to(y, h * s, w * s)

    def forward_multi(self, batches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run several tasks at once, EDT style: heads per task, one body pass over the concatenated features.

        Args:
            batches: ``{task: lq}``, each lq (B_t, 3, H_t, W_t) in [0, 1].

        Returns:
            ``{task: output}``. Features of different spatial sizes (or bodies that use the task, like IPT's) go
            through the body in one pass per group of equal shape (per task for task-conditioned bodies).
        """
        for task in batches:
            self._check_task(task)
        if self.fixed_input_size() is not None:
            return {task: self(x, task) for task, x in batches.items()}
        heads_out: dict[str, tuple] = {}
        for task, x in batches.items():
            h, w = x.shape[-2:]
            xp = pad_to_multiple(x, self.pad_multiple(task))
            feat, skips = self.heads[task](xp)
            heads_out[task] = (feat, skips, xp, (h, w))
        # group tasks whose features can share one body pass
        groups: dict[tuple, list[str]] = {}
        task_conditioned = getattr(self.body, "task_conditioned", False)
        for task, (feat, *_rest) in heads_out.items():
            key = (tuple(feat.shape[1:]), task if task_conditioned else None)
            groups.setdefault(key, []).append(task)
        bodies: dict[str, torch.Tensor] = {}
        for members in groups.values():
            feats = [heads_out[t][0] for t in members]
            out = self.body(torch.cat(feats, dim=0), members[0] if task_conditioned else None)
            for t, chunk in zip(members, out.split([f.shape[0] for f in feats], dim=0)):
                bodies[t] = chunk
        results = {}
        for task, (_feat, skips, xp, (h, w)) in heads_out.items():
            s = self._scales[task]
            results[task] = crop_to(self.tails[task](bodies[task], skips, xp), h * s, w * s)
        return results

    # ---------------------------------------------------------------------------------------------- I/O

    def config_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: the constructor arguments rebuilding this model (current tasks)."""
        return {
            "variant": self.variant,
            "tasks": self.tasks,
            "arch": self.arch,
            "format_version": self.format_version,
        }

    def _save_pretrained(self, save_directory) -> None:
        hub.save_weights(self, save_directory)

    def save_pretrained(self, save_directory, *, config=None, model_card_kwargs=None, **kwargs):
        """Write ``model.safetensors``, ``config.json`` and a ``README.md`` card to ``save_directory`` (atomic).

        ``model_card_kwargs`` fill the card template (e.g. ``model_name``, ``base_model``, ``datasets``,
        ``eval_results`` as ``huggingface_hub.EvalResult`` list, ``training`` text).
        """
        return hub.save_pretrained(
            self, save_directory, super().save_pretrained, config=config, model_card_kwargs=model_card_kwargs, **kwargs
        )

    def generate_model_card(self, *args, **kwargs):
        return hub.generate_model_card(self, super().generate_model_card, *args, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str,
        *,
        revision: str | None = None,
        tasks: list[str] | None = None,
        cache_dir: str | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> "RestorationModel":
        """Load from a local folder or a Hub repo id (also offline from the Hub cache), with strict key checks.

        Args:
            pretrained_model_name_or_path: a folder holding ``config.json`` + ``model.safetensors``, or ``org/name``.
            revision: a branch, tag or commit sha on the Hub.
            tasks: keep only these tasks (the others are dropped after loading).
            map_location: device for the weights.

        Raises:
            restore.hub.InvalidConfigError: ``config.json`` is not JSON, not an object, lacks a key, or holds a value
                the architecture refuses (unknown variant or task, ``window_size: 0``, ...); names file and key.
            restore.hub.CorruptCheckpointError: ``model.safetensors`` is truncated, empty or not safetensors, or its
                weights do not fit the config (missing/unexpected keys, shapes, non-float or NaN/Inf values).
            tasks.errors.InputError: only pickled weights (.bin/.pt), which are refused; an unknown Hub repo or
                revision; a ``map_location`` that is not a usable device; ``tasks`` the model does not serve.
            FileNotFoundError: no such folder, no weights in it, or (offline) a file missing from the Hub cache.
            IsADirectoryError: ``config.json`` or ``model.safetensors`` is a folder.

            All but the last two are ``ValueError``s; every message is one line naming the file and the fix.
        """
        return hub.from_pretrained(
            cls,
            pretrained_model_name_or_path,
            revision=revision,
            tasks=tasks,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
            map_location=map_location,
            **kwargs,
        )

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, tasks={self.tasks}"


def create_model(name: str, tasks: list[str] | str = ("sr_x2",), **arch_overrides: Any) -> RestorationModel:
    """Build a model of the registered variant ``name`` for ``tasks`` (weights freshly initialised).

    Example: ``restore.create_model("edt_b", tasks=["sr_x2", "sr_x4"], drop_path_rate=0.0)``.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    return RestorationModel(name, tasks=list(tasks), arch=arch_overrides or None)
