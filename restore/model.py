"""`RestorationModel`: per-task heads and tails around one shared body, with Hub I/O.

The composition follows EDT's multi-task ``Network`` (Li et al., IJCAI 2023; ``fenglinglwb/EDT``,
``utils/modules/edt.py``): each task has its own head and tail, the body is shared, and in multi-task training the
head outputs of all tasks go through the body in one batched pass (`RestorationModel.forward_multi`). Unlike the
official code, heads and tails are ``nn.ModuleDict`` entries keyed by task name (``"sr_x4"``), never chosen by
list position, and inputs of any size are reflect-padded to the body's multiple and cropped back.

Saving and loading go through ``huggingface_hub.PyTorchModelHubMixin``; ``config.json`` holds exactly the
constructor arguments (variant, tasks, arch, format_version), so the file alone rebuilds the model.

The arbitrary-scale task ``sr_any`` has an implicit tail (`restore.implicit`: LTE by default, LIIF with
``arch={"implicit_tail": "liif"}``) that reads the body's features at continuous coordinates instead of
upsampling them: ``model(x, task="sr_any", scale=2.7)`` or ``size=(out_h, out_w)``. The ``implicit_*`` arch keys
are the model's, not the body family's, and are recorded in ``config.json`` once the model serves ``sr_any``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from restore import hub
from restore.implicit import DEFAULT_CHUNK, IMPLICIT_TAILS, build_implicit_tail, make_cell, make_coord
from restore.layers import crop_to, pad_to_multiple
from restore.registry import get_family, get_variant, list_variants

__all__ = ["RestorationModel", "create_model", "list_variants", "FORMAT_VERSION"]

FORMAT_VERSION = 1

ARBITRARY_SCALE_TASK = "sr_any"
# arch keys of the implicit tail (RestorationModel's own; the body families never see them)
_IMPLICIT_KEYS = ("implicit_tail", "implicit_hidden", "implicit_dim")


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
        self.body = self.family.build_body(self._family_arch, list(tasks))
        # computed once here (and per task in `_build_task`), never per forward call
        self._fixed_input_size = self.family.fixed_input_size(self._family_arch)
        self._scales: dict[str, int] = {}
        self._pad_multiples: dict[str, int] = {}
        for task in tasks:
            self._build_task(task)

    # ------------------------------------------------------------------------------------------- tasks

    @property
    def tasks(self) -> list[str]:
        """The task names this model serves, in construction order."""
        return list(self.heads.keys())

    def scale(self, task: str) -> int:
        """Output size over input size for ``task`` (1 for denoising/deraining); ``sr_any`` has none (an error)."""
        self._check_task(task)
        if task == ARBITRARY_SCALE_TASK:
            raise ValueError(f"task {task!r} has no fixed scale: pass scale= or size= with each call")
        return self._scales[task]

    @property
    def _family_arch(self) -> dict[str, Any]:
        """The arch without the implicit tail's keys: what the body family builds from."""
        return {k: v for k, v in self.arch.items() if k not in _IMPLICIT_KEYS}

    def _build_task(self, task: str) -> None:
        from tasks.registry import get_task  # validates the name with a message listing the valid forms

        try:  # all or nothing: a tail the architecture refuses must not leave its head behind
            self._scales[task] = get_task(task).scale
            self._pad_multiples[task] = self.family.pad_multiple(self._family_arch, task)
            self.heads[task] = self.family.build_head(self._family_arch, task)
            if task == ARBITRARY_SCALE_TASK:
                self.tails[task] = self._build_implicit_tail(self.heads[task], task)
            else:
                self.tails[task] = self.family.build_tail(self._family_arch, task)
        except BaseException:
            for store in (self._scales, self._pad_multiples, self.heads, self.tails):
                if task in store:
                    del store[task]
            raise

    def _build_implicit_tail(self, head: nn.Module, task: str) -> nn.Module:
        """The ``sr_any`` tail on the body's features; records its choices in ``arch`` (so in ``config.json``)."""
        if self.fixed_input_size() is not None:
            raise ValueError(
                f"task {task!r} needs a body that takes inputs of any size, but {self.variant!r} ({self.family.name}) "
                f"runs fixed {self.fixed_input_size()}x{self.fixed_input_size()} windows; use an EDT, SwinIR or HAT "
                f"variant for arbitrary-scale SR"
            )
        kind = self.arch.get("implicit_tail", "lte")
        if kind not in IMPLICIT_TAILS:
            raise ValueError(f"arch implicit_tail={kind!r} is invalid: expected one of {', '.join(IMPLICIT_TAILS)}")
        hidden = self.arch.get("implicit_hidden")
        if hidden is not None and (not isinstance(hidden, (list, tuple)) or not hidden
                                   or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in hidden)):
            raise ValueError(f"arch implicit_hidden={hidden!r} is invalid: expected a list of integers >= 1")
        dim = self.arch.get("implicit_dim")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2):
            raise ValueError(f"arch implicit_dim={dim!r} is invalid: expected an even integer >= 2 (LTE only)")
        # the body keeps its input's channels (a residual stack), so the head's output tells the feature width
        multiple = self.pad_multiple(task)
        with torch.no_grad():
            probe, _ = head(torch.zeros(1, 3, multiple, multiple))
        if probe.shape[-2:] != (multiple, multiple):
            raise ValueError(f"task {task!r} needs features at the input resolution; the {self.family.name} head "
                             f"gives {tuple(probe.shape[-2:])} for a {multiple}x{multiple} input")
        tail = build_implicit_tail(kind, probe.shape[1], hidden=hidden, dim=dim)
        self.arch["implicit_tail"] = kind
        self.arch["implicit_hidden"] = [m.out_features for m in tail.imnet.layers[:-1] if isinstance(m, nn.Linear)]
        if kind == "lte":
            self.arch["implicit_dim"] = tail.coef.out_channels
        return tail

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
            self._pad_multiples.pop(t)
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
        self._check_task(task)
        return self._pad_multiples[task]

    def fixed_input_size(self) -> int | None:
        """The square input size the body needs (IPT: 48), or None if it takes any size."""
        return self._fixed_input_size

    def _forward_padded(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Pad to the task's multiple, run head -> body -> tail, crop to ``scale`` x the input size."""
        h, w = x.shape[-2:]
        s = self._scales[task]
        xp = pad_to_multiple(x, self.pad_multiple(task))
        feat, skips = self.heads[task](xp)
        feat = self.body(feat, task)
        return crop_to(self.tails[task](feat, skips, xp), h * s, w * s)

    def forward(
        self,
        x: torch.Tensor,
        task: str,
        scale: float | tuple[float, float] | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Restore ``x`` (B, 3, H, W) in [0, 1] of any size for ``task``; returns (B, 3, scale*H, scale*W).

        For ``sr_any`` give exactly one of ``scale`` (a float, or (sh, sw)) or ``size`` (out_h, out_w); the output
        is ``size``, or MATLAB's ``ceil(scale * H)`` x ``ceil(scale * W)`` (`tasks.imresize.output_size`).
        """
        self._check_task(task)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        if task == ARBITRARY_SCALE_TASK:
            out_h, out_w = self.output_size(task, x.shape[-2:], scale=scale, size=size)
            coord = make_coord((out_h, out_w), x.device, x.dtype).reshape(1, -1, 2).expand(x.shape[0], -1, -1)
            cell = make_cell((out_h, out_w), coord.shape[1], x.shape[0], x.device, x.dtype)
            y = self.query_points(x, task, coord, cell)  # (B, out_h*out_w, 3)
            return y.transpose(1, 2).reshape(x.shape[0], 3, out_h, out_w)
        if scale is not None or size is not None:
            raise ValueError(f"scale= and size= are for {ARBITRARY_SCALE_TASK!r}; task {task!r} has a fixed scale "
                             f"(x{self._scales[task]})")
        size = self.fixed_input_size()
        if size is None:
            return self._forward_padded(x, task)
        from restore.tiling import tiled_forward  # fixed-size bodies see larger images window by window

        h, w = x.shape[-2:]
        s = self._scales[task]
        xp = pad_to_multiple(x, size) if (h < size or w < size) else x  # at least one full window
        y = tiled_forward(lambda t: self._forward_padded(t, task), xp, s, tile=size, overlap=size // 4)
        return crop_to(y, h * s, w * s)

    def output_size(self, task: str, in_size: tuple[int, int], scale: float | tuple[float, float] | None = None,
                    size: tuple[int, int] | None = None) -> tuple[int, int]:
        """The (out_h, out_w) of ``task`` for an input of ``in_size``; ``sr_any`` needs ``scale`` or ``size``."""
        self._check_task(task)
        h, w = int(in_size[0]), int(in_size[1])
        if task != ARBITRARY_SCALE_TASK:
            return h * self._scales[task], w * self._scales[task]
        if (scale is None) == (size is None):
            raise ValueError(f"task {task!r} needs exactly one of scale= (e.g. 2.7 or (2.0, 3.5)) or "
                             f"size=(out_h, out_w), got scale={scale!r}, size={size!r}")
        if size is not None:
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)):
                raise ValueError(f"size must be (out_h, out_w), two integers >= 1, got {size!r}")
            return int(size[0]), int(size[1])
        from tasks.imresize import output_size  # the one output size rule, shared with the bicubic baseline

        pair = (scale, scale) if isinstance(scale, (int, float)) else scale
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0
                       for v in pair)):
            raise ValueError(f"scale must be a positive number or a (sh, sw) pair of them, got {scale!r}")
        return output_size((h, w), (float(pair[0]), float(pair[1])))

    def _implicit_features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Head -> body on the padded input, cropped back to the input's (h, w): the implicit tail's features."""
        h, w = x.shape[-2:]
        feat, _skips = self.heads[task](pad_to_multiple(x, self.pad_multiple(task)))
        return crop_to(self.body(feat, task), h, w)

    def _implicit_decode(self, feat: torch.Tensor, x: torch.Tensor, task: str, coord: torch.Tensor,
                         cell: torch.Tensor, chunk: int | None) -> torch.Tensor:
        # LIIF/LTE work on images normalised to [-1, 1] ((x - 0.5) / 0.5, their data_norm); back to [0, 1] here
        return self.tails[task](feat, (x - 0.5) / 0.5, coord, cell, chunk=chunk) * 0.5 + 0.5

    def query_points(self, x: torch.Tensor, task: str, coord: torch.Tensor, cell: torch.Tensor,
                     chunk: int | None = DEFAULT_CHUNK) -> torch.Tensor:
        """The ``sr_any`` output at arbitrary points: (B, Q, 3) RGB in [0, 1] units.

        Args:
            x: the LR input (B, 3, h, w) in [0, 1].
            coord: (B, Q, 2) (row, col) points in [-1, 1] over ``x``'s extent (`restore.implicit.make_coord`).
            cell: (B, Q, 2) the output pixel size at each point in the same units, (2 / out_h, 2 / out_w).
            chunk: queries decoded at once (memory bound); None decodes all at once.
        """
        self._check_task(task)
        if task != ARBITRARY_SCALE_TASK:
            raise ValueError(f"query_points is for {ARBITRARY_SCALE_TASK!r}, not {task!r}")
        if coord.ndim != 3 or coord.shape[-1] != 2 or cell.shape != coord.shape or coord.shape[0] != x.shape[0]:
            raise ValueError(f"coord and cell must both be (B, Q, 2) with B = {x.shape[0]}, got "
                             f"{tuple(coord.shape)} and {tuple(cell.shape)}")
        return self._implicit_decode(self._implicit_features(x, task), x, task, coord, cell, chunk)

    def forward_multi(self, batches: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Run several tasks at once, EDT style: heads per task, one body pass over the concatenated features.

        Args:
            batches: ``{task: lq}``, each lq (B_t, 3, H_t, W_t) in [0, 1]; for ``sr_any`` a tuple
                ``(lq, coord, cell)`` of query points (as `query_points` takes them; training samples a few per
                patch, `tasks.degradations.sr_any_batch`).

        Returns:
            ``{task: output}`` (``sr_any``: (B, Q, 3) at the query points). Features of different spatial sizes (or
            bodies that use the task, like IPT's) go through the body in one pass per group of equal shape (per task
            for task-conditioned bodies); ``sr_any``'s LR features join the group of the other SR tasks' of their size.
        """
        queries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        batches = dict(batches)
        for task in batches:
            self._check_task(task)
            if task == ARBITRARY_SCALE_TASK:
                if not isinstance(batches[task], (tuple, list)) or len(batches[task]) != 3:
                    raise ValueError(f"forward_multi takes {task!r} as a tuple (lq, coord, cell), got "
                                     f"{type(batches[task]).__name__}")
                batches[task], *pts = batches[task]
                queries[task] = (pts[0], pts[1])
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
            if task in queries:
                coord, cell = queries[task]
                feat = crop_to(bodies[task], h, w)
                results[task] = self._implicit_decode(feat, batches[task], task, coord, cell, DEFAULT_CHUNK)
                continue
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
        ``eval_results`` as ``huggingface_hub.EvalResult`` list, ``training`` text). ``push_to_hub=True`` (with
        ``repo_id``, else the folder's name) pushes the saved files once they are in place locally.
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

    def restorer(self, task: str, *, tile: int | None = None, overlap: int = 32, ensemble: bool = False,
                 device: torch.device | str | None = None, scale: float | None = None) -> Any:
        """This model as a callable lq -> restored for ``task`` (`restore.inference.restorer`): what
        ``tasks.evaluate`` scores, so that ``tasks`` never imports this library."""
        from restore.inference import restorer  # late: restore.inference imports this module

        return restorer(self, task, tile=tile, overlap=overlap, ensemble=ensemble, device=device, scale=scale)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, tasks={self.tasks}"


def create_model(name: str, tasks: list[str] | str = ("sr_x2",), **arch_overrides: Any) -> RestorationModel:
    """Build a model of the registered variant ``name`` for ``tasks`` (weights freshly initialised).

    Example: ``restore.create_model("edt_b", tasks=["sr_x2", "sr_x4"], drop_path_rate=0.0)``.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    return RestorationModel(name, tasks=list(tasks), arch=arch_overrides or None)
