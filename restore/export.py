"""Export a `RestorationModel` for use elsewhere: ONNX graphs, and the official layouts that spandrel loads.

ONNX (`export_onnx`): one task per graph, input ``lq`` (B, 3, H, W) in [0, 1], output ``out`` (B, 3, sH, sW),
batch, height and width dynamic (any size from 1 pixel). Reflect padding to the window multiple and the crop back
happen *inside* the graph, with the numbers of `RestorationModel.forward`. The dynamo exporter
(``torch.onnx.export(dynamo=True)``, opset 18 by default) is used: the TorchScript one bakes the traced size into
the window ``view``s (wrong shapes at any other size). Our bodies cache their shift masks per Python ``(H, W)``
key, which symbolic sizes cannot be; while traced (export, ``torch.compile``) they build them with tensor ops from
the feature size instead (`restore.families.windows.traced_shift_window_mask`), the same numbers.
IPT's body takes exactly ``patch_size`` x ``patch_size`` (its learned position embedding fixes the token count;
larger images go through the Python tiling loop of `restore.tiling.tiled_forward`, which ONNX cannot
express), so its graph has a fixed height and width and a dynamic batch: the caller tiles.

Official layout (`export_official`): the inverse of `restore.convert.convert_checkpoint` for SwinIR, HAT and IPT
(spandrel has no EDT loader), one task per file, with the derived buffers the official code registers
(``relative_position_index``, ``attn_mask``, IPT's mean shifts) so that ``spandrel.ModelLoader`` loads it strictly.

    restore export --format onnx out/my-model my.onnx --task sr_x2
    restore export --format official out/my-model my_x2.safetensors --task sr_x2
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.errors import InputError
from tasks.io import atomic_path

__all__ = ["DEFAULT_OPSET", "export_onnx", "official_state_dict", "export_official", "export_main"]

DEFAULT_OPSET = 18  # the dynamo exporter's native opset; 17 is reached through ONNX's version converter
MIN_OPSET = 17
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------------- ONNX


class _OnnxTask(nn.Module):
    """One task of a model as a graph: reflect pad -> head -> body -> tail -> crop.

    `restore.layers.reflect_pad` pads in several reflect steps when the padding exceeds the size (a 9-pixel side
    padded to 24); here the same result is one gather per axis with an index computed from the size. Always
    padding and always cropping (by 0 where nothing is needed) keeps the graph free of size branches.
    """

    def __init__(self, model, task: str) -> None:
        super().__init__()
        self.head, self.body, self.tail = model.heads[task], model.body, model.tails[task]
        self.task, self.scale, self.multiple = task, model.scale(task), model.pad_multiple(task)

    def _reflect_index(self, n: Any) -> torch.Tensor:
        """Source index of each position of a side of ``n`` reflect-padded up to the multiple, as `reflect_pad`.

        Repeated reflect steps (each reflecting about the last pixel, which after a full step lies at a multiple
        of n - 1) give the triangle wave of period 2(n - 1); a side of one pixel is replicated (period 1).
        """
        j = torch.arange(n + (self.multiple - n % self.multiple) % self.multiple)
        n1 = torch.arange(n).max()  # n - 1 as a tensor: the ONNX translation takes no symbolic scalar operands
        return n1 - (j % (2 * n1).clamp_min(1) - n1).abs()

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2], lq.shape[-1]
        xp = lq.index_select(2, self._reflect_index(h)).index_select(3, self._reflect_index(w))
        feat, skips = self.head(xp)
        feat = self.body(feat, self.task)
        return self.tail(feat, skips, xp)[..., : h * self.scale, : w * self.scale]


def _check_task(model, task: str) -> None:
    """Both exports hold one fixed-scale task the model serves."""
    if task not in model.tasks:
        raise InputError(f"task {task!r} is not served by this model; pass --task with one of: "
                         f"{', '.join(model.tasks)}")
    if task == "sr_any":
        fixed = [t for t in model.tasks if t != "sr_any"]
        raise InputError("task 'sr_any' has no fixed output size (its implicit tail takes the size with each "
                         "call), which an exported graph or official layout needs; "
                         + (f"export one of {', '.join(fixed)}, or " if fixed else "")
                         + "use our format (config.json + model.safetensors)")


def _export_copy(model, task: str, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` reduced to ``task``, in ``dtype``."""
    _check_task(model, task)
    m = copy.deepcopy(model).eval().to("cpu")
    m.keep_tasks([task])
    return m.to(dtype)


def _check_out(out: Path, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    if out.suffix.lower() not in suffixes:
        raise InputError(f"output {out} must end in {' or '.join(suffixes)}")
    if out.is_dir():
        raise IsADirectoryError(f"output {out} is a folder; pass a file path ending in {' or '.join(suffixes)}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {out} already exists; pass --overwrite to replace it, or choose another name")


def export_onnx(model, out: str | Path, task: str, *, opset: int = DEFAULT_OPSET, dtype: str = "fp32",
                overwrite: bool = False) -> Path:
    """Write ``task`` of ``model`` as an ONNX graph to ``out`` (atomically) and return the path.

    Args:
        model: a `RestorationModel`.
        out: the ``.onnx`` file to write.
        task: the one task the graph runs (its input name is ``lq``, its output ``out``).
        opset: ONNX opset, >= 17 (default 18).
        dtype: ``"fp32"`` or ``"fp16"`` (weights, input and output in that precision).
        overwrite: replace an existing ``out`` (default: refuse with FileExistsError).

    Batch, height and width are dynamic (IPT: batch only, H = W = its ``patch_size``, the caller tiles); the graph's
    metadata holds the task, scale, variant, dtype and ``fixed_size`` (IPT's, else empty).

    Raises:
        tasks.errors.InputError: an unknown task, opset or dtype, a bad output name, or a model the exporter fails
            on (the message names the op the exporter reported).
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    out = Path(out)
    _check_out(out, overwrite, (".onnx",))
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r} is not an ONNX export precision; choose one of {', '.join(DTYPES)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise InputError(f"--opset {opset!r} is not supported; pass an opset >= {MIN_OPSET} (default {DEFAULT_OPSET})")
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter's translator; absent, it fails deep inside the export
    except ImportError as err:
        raise InputError("ONNX export needs the onnx and onnxscript packages: pip install 'restore[export]'") from err
    m = _export_copy(model, task, DTYPES[dtype])
    graph = _OnnxTask(m, task).eval()
    fixed = m.fixed_input_size()
    size = fixed if fixed is not None else 2 * graph.multiple + 1  # odd: the example must not hide the padding
    example = torch.rand(2, 3, size, size).to(DTYPES[dtype])
    dyn = torch.export.Dim.DYNAMIC
    shapes = {"lq": {0: dyn} if fixed is not None else {0: dyn, 2: dyn, 3: dyn}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and fallback chatter; failures raise
            program = torch.onnx.export(graph, (example,), dynamo=True, input_names=["lq"], output_names=["out"],
                                        dynamic_shapes=shapes, opset_version=opset, verbose=False,
                                        report=False, optimize=False)
    except Exception as err:  # noqa: BLE001 - re-raised as the one-line bad-input error naming the failing op
        raise InputError(f"the {m.family.name} model cannot be exported to ONNX (task {task}): {_exporter_reason(err)}"
                         ) from err
    meta = {"restore.task": task, "restore.variant": model.variant, "restore.scale": str(graph.scale),
            "fixed_size": "" if fixed is None else str(fixed), "dtype": dtype, "value_range": "0..1 RGB"}
    program.model.metadata_props.update(meta)
    with atomic_path(out) as tmp:
        program.save(str(tmp))
    return out


def _exporter_reason(err: BaseException) -> str:
    """The line of an exporter error that names the unsupported op or failing step (not its boilerplate)."""
    text = " ".join(str(err).split())
    m = re.search(r"(Unsupported[^.]*\.|aten::?\w+[^.]*\.|<class '[^']+'>: [^(]*)", text)
    return (m.group(1) if m else text[:300]).strip()


# ------------------------------------------------------------------------------------- official layout
# Each table is the inverse of the matching adapter's rename rules in `restore.convert` (ours -> official), with
# ``{t}`` the exported task's name; like the adapters, a key no rule places is an error, never dropped.

_SWIN_COMMON = [
    (r"^heads\.{t}\.conv_first\.", "conv_first."),
    (r"^body\.patch_norm\.", "patch_embed.norm."),
    (r"^body\.layers\.(\d+)\.conv\.", r"layers.\1.conv."),
    (r"^body\.(norm|conv_after_body)\.", r"\1."),
]
_SWINIR_RULES = _SWIN_COMMON + [
    (r"^body\.layers\.(\d+)\.blocks\.", r"layers.\1.residual_group.blocks."),
    (r"^tails\.{t}\.conv_up\.(\d)\.", lambda m: f"conv_up{int(m.group(1)) + 1}."),
    (r"^tails\.{t}\.(conv_before_upsample|upsample|conv_hr|conv_last)\.", r"\1."),
]
_CAB = r"^body\.layers\.(\d+)\.blocks\.(\d+)\.conv_block\."
_HAT_RULES = _SWIN_COMMON + [
    (_CAB + r"conv1\.", r"layers.\1.residual_group.blocks.\2.conv_block.cab.0."),
    (_CAB + r"conv2\.", r"layers.\1.residual_group.blocks.\2.conv_block.cab.2."),
    (_CAB + r"ca_reduce\.", r"layers.\1.residual_group.blocks.\2.conv_block.cab.3.attention.1."),
    (_CAB + r"ca_expand\.", r"layers.\1.residual_group.blocks.\2.conv_block.cab.3.attention.3."),
    (r"^body\.layers\.(\d+)\.(blocks|overlap_attn)\.", r"layers.\1.residual_group.\2."),
    (r"^tails\.{t}\.(conv_before_upsample|upsample|conv_last)\.", r"\1."),
]
_IPT_RULES = [
    (r"^heads\.{t}\.conv_first\.", "head.0.0."),
    (r"^heads\.{t}\.blocks\.(\d)\.conv([12])\.",
     lambda m: f"head.0.{int(m.group(1)) + 1}.body.{2 * (int(m.group(2)) - 1)}."),
    (r"^tails\.{t}\.upsample\.", "tail.0.0."),
    (r"^tails\.{t}\.conv_last\.", "tail.0.1."),
    (r"^body\.pos_embed$", "body.position_encoding.pe.weight"),
    (r"^body\.(encoder|decoder)\.(\d+)\.ffn\.(linear[12])\.", r"body.\1.layers.\2.\3."),
    (r"^body\.(encoder|decoder)\.(\d+)\.", r"body.\1.layers.\2."),
    (r"^body\.(linear_encoding|mlp_head)\.", r"body.\1."),
]
OFFICIAL_IMG_SIZE = 64  # the training patch the shift masks are saved for (spandrel reads img_size from them)


def _rename_keys(sd: dict[str, torch.Tensor], rules: list, task: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    out, unknown = {}, []
    compiled = [(re.compile(rx.replace("{t}", re.escape(task))), repl) for rx, repl in rules]
    for key, value in sd.items():
        for rx, repl in compiled:
            new, n = rx.subn(repl, key)
            if n:
                out[new] = value.detach().to("cpu", copy=True).contiguous()  # a file's tensors: CPU ones
                break
        else:
            unknown.append(key)
    return out, unknown


def _refuse(model, task: str, why: str) -> InputError:
    return InputError(f"{model.variant} task {task} cannot be written in the official {model.family.name} layout: "
                      f"{why}")


def _check_swin_arch(model, task: str, family: str):
    """The arch options the official layout (as spandrel reads it back) cannot express, refused by name."""
    a = model.family.config(model.arch)  # SwinIRArch / HATArch
    if a.qk_scale is not None:
        raise _refuse(model, task, f"qk_scale={a.qk_scale} is not stored in the weights (spandrel assumes the "
                      "default head_dim**-0.5); retrain or keep our format")
    if family == "swinir":
        expected = 255.0 if a.window_size == 7 else 1.0  # spandrel's rule: only the window-7 JPEG models use 255
        if float(a.img_range) != expected or not a.qkv_bias or not a.patch_norm:
            raise _refuse(model, task, f"img_range={a.img_range}, qkv_bias={a.qkv_bias}, patch_norm="
                          f"{a.patch_norm}: the loaders assume img_range={expected} for window_size="
                          f"{a.window_size}, qkv_bias=True and patch_norm=True")
        if a.upsampler in ("pixelshuffle", "nearest+conv") and model.scale(task) > 1 and a.num_feat != 64:
            raise _refuse(model, task, f"num_feat={a.num_feat}: spandrel builds SwinIR's {a.upsampler} "
                          "upsampler with the official default num_feat=64 whatever the weights hold")
    else:
        if float(a.img_range) != 1.0 or float(a.conv_scale) != 0.01:
            raise _refuse(model, task, f"img_range={a.img_range}, conv_scale={a.conv_scale}: not stored in "
                          "the weights; the loaders assume img_range=1.0 and conv_scale=0.01")
        if model.scale(task) == 1:
            raise _refuse(model, task, "the official HAT has no scale-1 (denoising) tail")
    return a


def _swin_buffers(a, prefix_blocks: list[tuple[int, int]], hat: bool) -> dict[str, torch.Tensor]:
    """The derived buffers the official SwinIR/HAT modules register, as they compute them."""
    from restore.families.windows import relative_position_index, shift_window_mask

    ws = a.window_size
    rpi = relative_position_index(ws)
    if hat:
        ow = int(ws * a.overlap_ratio) + ws
        return {"relative_position_index_SA": rpi.clone(),
                "relative_position_index_OCA": relative_position_index(ws, ow).clone()}
    size = ws * math.ceil(OFFICIAL_IMG_SIZE / ws)
    out = {}
    mask = shift_window_mask(size, size, ws, ws // 2)
    for i, k in prefix_blocks:
        out[f"layers.{i}.residual_group.blocks.{k}.attn.relative_position_index"] = rpi.clone()
        if k % 2:
            out[f"layers.{i}.residual_group.blocks.{k}.attn_mask"] = mask.clone()
    return out


def official_state_dict(model, task: str) -> dict[str, torch.Tensor]:
    """The state dict of ``task`` of ``model`` in the official SwinIR / HAT / IPT layout (the inverse of
    `restore.convert.convert_checkpoint`), derived buffers included, loadable strictly by spandrel; CPU tensors,
    wherever the model runs.

    Raises:
        tasks.errors.InputError: an unknown task, a family without an official layout spandrel loads (EDT), an
            arch option that layout cannot express (named), or a key no rule places (a changed head or tail).
    """
    from restore.convert import FAMILIES as CONVERTIBLE

    family = model.family.name
    _check_task(model, task)
    if family == "edt":
        raise InputError("EDT models have no official layout that the ecosystem loads (spandrel has no EDT "
                         "architecture); use --format onnx, or our format (config.json + model.safetensors)")
    if family not in CONVERTIBLE:
        raise InputError(f"family {family!r} has no official layout; supported: hat, ipt, swinir")
    sd = model.state_dict()
    others = [t for t in model.tasks if t != task]
    sd = {k: v for k, v in sd.items() if not any(k.startswith((f"heads.{o}.", f"tails.{o}.")) or
                                                   k == f"body.query_embed.{o}" for o in others)}
    if family == "ipt":
        from restore.families.ipt import IPTArch
        from restore.families.swinir import DIV2K_MEAN

        a = IPTArch.from_dict(model.arch)
        if a.num_heads != 12 or float(a.rgb_range) != round(a.rgb_range):
            raise _refuse(model, task, f"num_heads={a.num_heads}, rgb_range={a.rgb_range}: the head count is "
                          "not stored in the weights and the loaders assume 12 heads and an integer rgb_range")
        query = sd.pop(f"body.query_embed.{task}")
        out, unknown = _rename_keys(sd, _IPT_RULES, task)
        out["body.query_embed.weight"] = query.detach().reshape(1, -1).to("cpu", copy=True)
        seq = query.shape[0]
        out["body.position_encoding.position_ids"] = torch.arange(seq).expand(1, -1).clone()
        mean = torch.tensor(DIV2K_MEAN) * a.rgb_range
        eye = torch.eye(3).view(3, 3, 1, 1)
        out.update({"sub_mean.weight": eye.clone(), "sub_mean.bias": -mean, "add_mean.weight": eye.clone(),
                    "add_mean.bias": mean.clone()})
    else:
        a = _check_swin_arch(model, task, family)
        out, unknown = _rename_keys(sd, _HAT_RULES if family == "hat" else _SWINIR_RULES, task)
        blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in out
                         if (m := re.match(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.", k))})
        out.update(_swin_buffers(a, blocks, hat=family == "hat"))
    if unknown:
        raise _refuse(model, task, f"{len(unknown)} weight(s) have no place in it (a changed head, tail or body?): "
                      f"{unknown[:10]}")
    return out


def export_official(model, out: str | Path, task: str, *, overwrite: bool = False) -> Path:
    """Write ``task`` of ``model`` in the official layout to ``out`` (``.safetensors``, or ``.pth`` saved as
    ``{"params": state_dict}`` as the official repositories do), atomically, and return the path.

    The file loads in spandrel (chaiNNer, ComfyUI, ...) as the family's architecture at the task's scale.
    Raises what `official_state_dict` raises, and FileExistsError for an existing ``out`` without ``overwrite``.
    """
    out = Path(out)
    _check_out(out, overwrite, (".safetensors", ".pth"))
    sd = official_state_dict(model, task)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={"restore.task": task, "restore.variant": model.variant})
        else:
            torch.save({"params": sd}, tmp)
    return out


# -------------------------------------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``restore export`` argument parser."""
    p = argparse.ArgumentParser(prog="restore export",
                                description="export one task of a model to ONNX or to the official layout")
    p.add_argument("model", help="model folder (config.json + model.safetensors) or Hub repo id")
    p.add_argument("out", help="output file: .onnx (--format onnx), .safetensors or .pth (--format official)")
    p.add_argument("--format", required=True, choices=["onnx", "official"])
    p.add_argument("--task", default=None, help="the task to export (required when the model serves several)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET}; default "
                   f"{DEFAULT_OPSET})")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="ONNX weights and I/O precision")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)")
    return p


def export_main(argv: list[str] | None = None) -> int:
    """``restore export --format onnx|official MODEL_DIR OUT --task T [--opset N] [--dtype fp32|fp16]
    [--overwrite]``. Returns 0; bad input raises (``run_command`` maps it to exit code 2)."""
    from restore.model import RestorationModel

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.format == "onnx":
        _check_out(out, args.overwrite, (".onnx",))
    else:
        _check_out(out, args.overwrite, (".safetensors", ".pth"))
    model = RestorationModel.from_pretrained(args.model)
    task = args.task
    if task is None:
        if len(model.tasks) != 1:
            raise InputError(f"{args.model} serves {len(model.tasks)} tasks ({', '.join(model.tasks)}); "
                             "pass --task with the one to export (a file holds one task)")
        task = model.tasks[0]
    if args.format == "onnx":
        export_onnx(model, out, task, opset=args.opset, dtype=args.dtype, overwrite=args.overwrite)
    else:
        export_official(model, out, task, overwrite=args.overwrite)
    print(f"wrote {out}: {model.variant} task {task} ({args.format})")
    return 0
