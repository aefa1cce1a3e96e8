"""Convert official HAT, SwinIR, IPT and EDT checkpoints into `RestorationModel`s (and our hub format).

References for the official key layouts: `XPixelGroup/HAT` (`hat/archs/hat_arch.py`), `JingyunLiang/SwinIR`
(`models/network_swinir.py`), `huawei-noah/Pretrained-IPT` (`model/ipt.py`), `fenglinglwb/EDT`
(`utils/modules/edt.py`); like timm's ``checkpoint_filter_fn``, each family has a small adapter that renames keys,
drops derived buffers (relative position indices, shift masks, mean shifts) and infers the architecture from
tensor shapes. Whatever the adapter cannot place is an error that lists the keys: weights are never dropped
silently.

    model = restore.convert_checkpoint("HAT_SRx4_ImageNet-pretrain.pth", family="hat")
    restore convert HAT_SRx4_ImageNet-pretrain.pth out/hat-x4 --family hat
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from restore.hub import load_state_dict_strict
from restore.registry import get_variant, list_variants
from tasks.errors import InputError

__all__ = ["load_official_state_dict", "convert_checkpoint", "convert_main", "FAMILIES"]

StateDict = dict[str, torch.Tensor]
_WRAPPERS = ("params_ema", "params", "state_dict", "model")  # BasicSR saves EMA weights under params_ema


# ----------------------------------------------------------------------------------------------- loading


def load_official_state_dict(src: str | Path | dict[str, Any]) -> StateDict:
    """Read a checkpoint (safetensors, or a pickle loaded with ``weights_only=True``) and unwrap it.

    Unwraps ``params_ema`` (preferred) / ``params`` / ``state_dict`` / ``model`` containers and a ``module.``
    prefix (DataParallel/DDP).
    """
    where = "the checkpoint"
    if isinstance(src, (str, Path)):
        path = Path(src)
        where = str(path)
        if path.is_dir():
            raise IsADirectoryError(f"checkpoint {where} is a folder; pass the checkpoint file (.pth/.pt/.safetensors)")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {where!r} does not exist")
        if path.stat().st_size == 0:
            raise InputError(f"checkpoint {where} is empty (0 bytes): an interrupted download or copy; fetch it again")
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                sd: Any = load_file(str(path))
            except SafetensorError as err:
                raise InputError(f"checkpoint {where} is not a complete safetensors file ({err}): truncated or "
                                 "corrupt (or not safetensors at all); fetch it again") from err
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - re-raised with the reason and the fix
                lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
                # torch's weights-only failure starts with a paragraph of boilerplate; its reason is further down
                detail = [ln for ln in lines if ln.startswith(("Unsupported", "Unsupported global", "WeightsUnpickler"))
                          and not ln.endswith(":")]
                reason = detail[0] if lines[0].startswith("Weights only load failed") and detail else lines[0]
                raise InputError(
                    f"could not read {where} as a weights-only checkpoint ({reason}): "
                    "a corrupt or non-PyTorch file, or a pickle holding code objects (refused for safety: re-save "
                    "only the state dict with torch.save(model.state_dict()))"
                ) from err
    else:
        sd = src
    while isinstance(sd, dict):
        wrapper = next((k for k in _WRAPPERS if k in sd and isinstance(sd[k], dict)), None)
        if wrapper is None:
            break
        sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise InputError(f"{where} holds a {type(sd).__name__}, not a state dict of tensors (nor one wrapped in "
                         f"{'/'.join(_WRAPPERS)})")
    odd = next(((k, v) for k, v in sd.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise InputError(f"{where} is not a state dict of tensors (nor wrapped in {'/'.join(_WRAPPERS)}): key "
                         f"{odd[0]!r} holds a {type(odd[1]).__name__} value")
    if not sd:
        raise InputError(f"{where} holds an empty state dict (no tensors)")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


# -------------------------------------------------------------------------------------- shape inference


def _count(sd: StateDict, pattern: str) -> int:
    """Number of distinct integers captured by ``pattern`` (a regex with one group) over the keys."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _ratio(num: int, den: int) -> int | float:
    r = num / den
    return int(r) if r == int(r) else r


def _pixelshuffle_scale(sd: StateDict, prefix: str, num_feat: int) -> int:
    """Scale of an EDSR/SwinIR ``Upsample`` Sequential (convs at even indices) under ``prefix``."""
    scale, i = 1, 0
    while f"{prefix}{i}.weight" in sd:
        scale *= math.isqrt(sd[f"{prefix}{i}.weight"].shape[0] // num_feat)
        i += 2
    return scale


def _window_arch(sd: StateDict, block: str) -> dict[str, Any]:
    """Arguments shared by SwinIR and HAT, read from tensor shapes (``block``: the per-group block prefix)."""
    dim = sd["conv_first.weight"].shape[0]
    if sd["conv_first.weight"].shape[1] != 3:
        raise ValueError(f"only RGB checkpoints are supported; this one has {sd['conv_first.weight'].shape[1]} "
                         "input channels")
    n_layers = _count(sd, r"layers\.(\d+)\.")
    depths = tuple(_count(sd, rf"layers\.{i}\.{block}\.(\d+)\.") for i in range(n_layers))
    heads = tuple(sd[f"layers.{i}.{block}.0.attn.relative_position_bias_table"].shape[1] for i in range(n_layers))
    table = sd[f"layers.0.{block}.0.attn.relative_position_bias_table"].shape[0]
    return {
        "embed_dim": dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": (math.isqrt(table) + 1) // 2,
        "mlp_ratio": _ratio(sd[f"layers.0.{block}.0.mlp.fc1.weight"].shape[0], dim),
        "qkv_bias": f"layers.0.{block}.0.attn.qkv.bias" in sd,
        "patch_norm": "patch_embed.norm.weight" in sd,
    }


# ------------------------------------------------------------------------------------------ the adapters


def _rename(sd: StateDict, rules: list[tuple[str, str]], drop: re.Pattern) -> tuple[StateDict, list[str]]:
    """Apply the first matching (regex, replacement) rule to each key; return the renamed dict and leftovers."""
    out, unknown = {}, []
    for key, value in sd.items():
        if drop.search(key):
            continue
        for rx, repl in rules:
            new, n = re.subn(rx, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    return out, unknown


def _adapt_swinir(sd: StateDict, tasks: list[str] | None) -> tuple[dict, list[str], StateDict, list[str]]:
    if "absolute_pos_embed" in sd:
        raise ValueError("SwinIR checkpoints with an absolute position embedding (ape=True) are not supported")
    arch = _window_arch(sd, "residual_group.blocks")
    arch["resi_connection"] = "3conv" if "conv_after_body.0.weight" in sd else "1conv"
    if "conv_up1.weight" in sd:
        arch["upsampler"], scale = "nearest+conv", 2 ** (1 + ("conv_up2.weight" in sd) + ("conv_up3.weight" in sd))
        arch["num_feat"] = sd["conv_before_upsample.0.weight"].shape[0]
    elif "conv_before_upsample.0.weight" in sd:
        arch["upsampler"] = "pixelshuffle"
        arch["num_feat"] = sd["conv_before_upsample.0.weight"].shape[0]
        scale = _pixelshuffle_scale(sd, "upsample.", arch["num_feat"])
    elif "upsample.0.weight" in sd:
        arch["upsampler"], scale = "pixelshuffledirect", math.isqrt(sd["upsample.0.weight"].shape[0] // 3)
    else:
        scale = 1  # denoising / artefact removal: conv_last plus the image residual
    tasks = _default_tasks(tasks, scale, "swinir")
    t = tasks[0]
    rules = [
        (r"^conv_first\.", f"heads.{t}.conv_first."),
        (r"^patch_embed\.norm\.", "body.patch_norm."),
        (r"^layers\.(\d+)\.residual_group\.blocks\.", r"body.layers.\1.blocks."),
        (r"^layers\.(\d+)\.conv\.", r"body.layers.\1.conv."),
        (r"^(norm|conv_after_body)\.", r"body.\1."),
        (r"^conv_up(\d)\.", lambda m: f"tails.{t}.conv_up.{int(m.group(1)) - 1}."),
        (r"^(conv_before_upsample|upsample|conv_hr|conv_last)\.", rf"tails.{t}.\1."),
    ]
    out, unknown = _rename(sd, rules, re.compile(r"(attn_mask|relative_position_index)$"))
    return arch, tasks, out, unknown


def _adapt_hat(sd: StateDict, tasks: list[str] | None) -> tuple[dict, list[str], StateDict, list[str]]:
    blk = "layers.0.residual_group.blocks.0"
    arch = _window_arch(sd, "residual_group.blocks")
    dim, ws = arch["embed_dim"], arch["window_size"]
    oca = math.isqrt(sd["layers.0.residual_group.overlap_attn.relative_position_bias_table"].shape[0])
    arch.update(
        compress_ratio=_ratio(dim, sd[f"{blk}.conv_block.cab.0.weight"].shape[0]),
        squeeze_factor=_ratio(dim, sd[f"{blk}.conv_block.cab.3.attention.1.weight"].shape[0]),
        overlap_ratio=(oca + 1 - 2 * ws) / ws,  # table side = ws + overlap_win - 1
        resi_connection="1conv" if "conv_after_body.weight" in sd else "identity",
        upsampler="pixelshuffle",
        num_feat=sd["conv_before_upsample.0.weight"].shape[0],
    )
    tasks = _default_tasks(tasks, _pixelshuffle_scale(sd, "upsample.", arch["num_feat"]), "hat")
    t = tasks[0]
    cab = "residual_group.blocks.(\\d+).conv_block.cab"
    rules = [
        (r"^conv_first\.", f"heads.{t}.conv_first."),
        (r"^patch_embed\.norm\.", "body.patch_norm."),
        (rf"^layers\.(\d+)\.{cab}\.0\.", r"body.layers.\1.blocks.\2.conv_block.conv1."),
        (rf"^layers\.(\d+)\.{cab}\.2\.", r"body.layers.\1.blocks.\2.conv_block.conv2."),
        (rf"^layers\.(\d+)\.{cab}\.3\.attention\.1\.", r"body.layers.\1.blocks.\2.conv_block.ca_reduce."),
        (rf"^layers\.(\d+)\.{cab}\.3\.attention\.3\.", r"body.layers.\1.blocks.\2.conv_block.ca_expand."),
        (r"^layers\.(\d+)\.residual_group\.(blocks|overlap_attn)\.", r"body.layers.\1.\2."),
        (r"^layers\.(\d+)\.conv\.", r"body.layers.\1.conv."),
        (r"^(norm|conv_after_body)\.", r"body.\1."),
        (r"^(conv_before_upsample|upsample|conv_last)\.", rf"tails.{t}.\1."),
    ]
    drop = re.compile(r"(attn_mask|relative_position_index(_SA|_OCA)?)$")
    out, unknown = _rename(sd, rules, drop)
    return arch, tasks, out, unknown


def _adapt_ipt(sd: StateDict, tasks: list[str] | None) -> tuple[dict, list[str], StateDict, list[str]]:
    from restore.families.ipt import IPT_OFFICIAL_TASKS
    from restore.families.swinir import DIV2K_MEAN

    if "body.linear_encoding.weight" not in sd or "body.position_encoding.pe.weight" not in sd:
        raise ValueError("only IPT checkpoints with mlp=True and a learned position encoding (the published "
                         "configuration) are supported")
    n_feats = sd["head.0.0.weight"].shape[0]
    dim = sd["body.encoder.layers.0.self_attn.in_proj_weight"].shape[1]
    patch_dim = math.isqrt(dim // n_feats)
    seq = sd["body.position_encoding.pe.weight"].shape[0]
    rgb_range = float(round((-sd["sub_mean.bias"] / torch.tensor(DIV2K_MEAN)).mean().item()))
    arch = {
        "n_feats": n_feats,
        "patch_dim": patch_dim,
        "patch_size": math.isqrt(seq) * patch_dim,
        "num_layers": _count(sd, r"body\.encoder\.layers\.(\d+)\."),
        "rgb_range": rgb_range,
    }
    n_heads = _count(sd, r"head\.(\d+)\.")
    scales = [_pixelshuffle_scale(sd, f"tail.{i}.0.", n_feats) for i in range(n_heads)]
    if tasks is None:
        if tuple(scales) == (2, 3, 4, 1, 1, 1):
            tasks = list(IPT_OFFICIAL_TASKS)
        elif all(s > 1 for s in scales) and len(set(scales)) == len(scales):
            tasks = [f"sr_x{s}" for s in scales]
        else:
            raise ValueError(f"cannot tell the tasks of IPT heads with scales {scales}; pass tasks=[...] "
                             f"(one name per head, in head order, e.g. {list(IPT_OFFICIAL_TASKS)})")
    _check_task_scales(tasks, scales, "ipt")
    rules: list[tuple[str, Any]] = [
        (r"^head\.(\d+)\.0\.", lambda m: f"heads.{tasks[int(m.group(1))]}.conv_first."),
        (r"^head\.(\d+)\.([12])\.body\.([02])\.",
         lambda m: f"heads.{tasks[int(m.group(1))]}.blocks.{int(m.group(2)) - 1}.conv{int(m.group(3)) // 2 + 1}."),
        (r"^tail\.(\d+)\.0\.", lambda m: f"tails.{tasks[int(m.group(1))]}.upsample."),
        (r"^tail\.(\d+)\.1\.", lambda m: f"tails.{tasks[int(m.group(1))]}.conv_last."),
        (r"^body\.position_encoding\.pe\.weight$", "body.pos_embed"),
        (r"^body\.(encoder|decoder)\.layers\.(\d+)\.(linear[12])\.", r"body.\1.\2.ffn.\3."),
        (r"^body\.(encoder|decoder)\.layers\.(\d+)\.", r"body.\1.\2."),
        (r"^body\.(linear_encoding|mlp_head)\.", r"body.\1."),
    ]
    query = sd.get("body.query_embed.weight")
    rest = {k: v for k, v in sd.items() if k != "body.query_embed.weight"}
    drop = re.compile(r"^(sub_mean|add_mean)\.|position_ids$")
    out, unknown = _rename(rest, rules, drop)
    if query is None:
        unknown.append("body.query_embed.weight (missing)")
    else:
        if query.shape[0] != len(tasks):
            raise ValueError(f"IPT checkpoint has {query.shape[0]} query embeddings for {len(tasks)} heads")
        for i, t in enumerate(tasks):
            out[f"body.query_embed.{t}"] = query[i].view(seq, dim)
    return arch, tasks, out, unknown


def _edt_official_task(task: str) -> str:
    from tasks.registry import TaskKind, get_task

    t = get_task(task)
    if t.kind is TaskKind.SR:
        return f"sr_x{t.scale}"
    if t.kind is TaskKind.DENOISE:
        return f"dn_g{int(t.sigma)}"
    levels = {"derain_light": "L", "derain_heavy": "H"}
    if task not in levels:
        raise ValueError(f"EDT has no official name for {task!r}; official rain levels are derain_light (L) "
                         "and derain_heavy (H)")
    return f"dr_{levels[task]}"


def _edt_our_task(official: str) -> str:
    if m := re.fullmatch(r"sr_x(\d+)", official):
        return official
    if m := re.fullmatch(r"dn_g(\d+)", official):
        return f"denoise_g{m.group(1)}"
    if m := re.fullmatch(r"dr_([LH])", official):
        return {"L": "derain_light", "H": "derain_heavy"}[m.group(1)]
    raise ValueError(f"unknown EDT task branch {official!r}")


def _adapt_edt(sd: StateDict, tasks: list[str] | None) -> tuple[dict, list[str], StateDict, list[str]]:
    officials = sorted({m.group(1) for k in sd if (m := re.match(r"head_(\w+?)\.\d+\.", k))})
    if not officials:
        raise ValueError("no EDT heads (head_sr_x2., head_dn_g15., ...) found in the checkpoint")
    found = [_edt_our_task(o) for o in officials]
    tasks = found if tasks is None else tasks
    if sorted(tasks) != sorted(found):
        raise ValueError(f"EDT checkpoint holds tasks {found}, not {tasks}")
    o = officials[0]
    last = _count(sd, rf"head_{o}\.(\d+)\.") - 1
    blk = "body.layers.0.residual_group.blocks.0"
    n_layers = _count(sd, r"body\.layers\.(\d+)\.")
    dim = sd["body.conv_after_body.weight"].shape[0]
    arch = {
        "num_feat": sd[f"head_{o}.0.weight"].shape[0],
        "embed_dim": dim,
        "depths": tuple(_count(sd, rf"body\.layers\.{i}\.residual_group\.blocks\.(\d+)\.") for i in range(n_layers)),
        "mlp_ratio": _ratio(sd[f"{blk}.mlp.fc1.weight"].shape[0], dim),
        "qkv_bias": f"{blk}.qkv.bias" in sd,
        "head_depth": last - 1,
    }
    sr = [x for x in officials if x.startswith("sr_x")]
    if sr:
        depth = arch["head_depth"]
        direct = f"tail_{sr[0]}.{depth}.2.weight" not in sd and f"tail_{sr[0]}.{depth + 1}.weight" not in sd
        arch["upsampler"] = "pixelshuffledirect" if direct else "pixelshuffle"
    rules: list[tuple[str, Any]] = [
        (r"^(head|tail)_(\w+?)\.(\d+)\.",
         lambda m: f"{m.group(1)}s.{_edt_our_task(m.group(2))}.blocks.{m.group(3)}."),
        (r"^body\.patch_embed\.norm\.", "body.norm_in."),
        (r"^body\.layers\.(\d+)\.residual_group\.blocks\.", r"body.groups.\1.blocks."),
        (r"^body\.(norm|conv_after_body)\.", r"body.\1."),
    ]
    out, unknown = _rename(sd, rules, re.compile(r"attn_mask_[hv]$"))
    return arch, tasks, out, unknown


def _default_tasks(tasks: list[str] | None, scale: int, family: str) -> list[str]:
    if tasks is None:
        if scale == 1:
            raise ValueError(f"this {family} checkpoint has no upsampler (scale 1): it could be denoising at any "
                             "noise level or deraining; pass tasks=['denoise_g25'] (or --tasks) to name it")
        tasks = [f"sr_x{scale}"]
    if len(tasks) != 1:
        raise ValueError(f"a {family} checkpoint holds one task, got tasks={tasks}")
    _check_task_scales(tasks, [scale], family)
    return list(tasks)


def _check_task_scales(tasks: list[str], scales: list[int], family: str) -> None:
    from tasks.registry import get_task

    if len(tasks) != len(scales):
        raise ValueError(f"{family} checkpoint has {len(scales)} heads (scales {scales}), got tasks {tasks}")
    for t, s in zip(tasks, scales):
        if get_task(t).scale != s:
            raise ValueError(f"task {t!r} has scale {get_task(t).scale} but its {family} tail upsamples x{s}")


FAMILIES: dict[str, Callable] = {"hat": _adapt_hat, "swinir": _adapt_swinir, "ipt": _adapt_ipt, "edt": _adapt_edt}


def _guess_family(sd: StateDict) -> str | None:
    """The official family whose tell-tale keys ``sd`` has (cheap: key names only), ``"restore"`` for a state dict
    of our own format, or None."""
    keys = list(sd)
    if any(k.startswith(("heads.", "tails.")) for k in keys) and any(k.startswith("body.") for k in keys):
        return "restore"
    if any(".overlap_attn." in k or ".conv_block.cab." in k for k in keys):
        return "hat"
    if any(re.match(r"head_\w+?\.\d+\.", k) for k in keys) and any(".attns." in k for k in keys):
        return "edt"
    if any(k.startswith(("body.encoder.layers.", "body.query_embed")) for k in keys):
        return "ipt"
    if any(re.match(r"layers\.\d+\.residual_group\.blocks\.\d+\.attn\.", k) for k in keys):
        return "swinir"
    return None


def _wrong_family(where: str, family: str, guess: str | None, sd: StateDict, missing: str | None = None) -> InputError:
    if guess == "restore":
        return InputError(f"{where} is already in the restore format (heads./body./tails. keys), not an official "
                          f"{family} checkpoint: load it with RestorationModel and save_pretrained instead")
    lacks = f" has no key {missing!r} and" if missing else ""
    hint = (f"pass --family {guess} (family={guess!r})" if guess else
            f"its first keys are {sorted(sd)[:4]}; convertible families: {', '.join(sorted(FAMILIES))}")
    return InputError(f"{where}{lacks} does not look like an official {family} checkpoint: {hint}")


# ------------------------------------------------------------------------------------------------ public


def _variant_for(family: str, arch: dict[str, Any]) -> str:
    """The named variant that agrees with every inferred argument it fixes (e.g. "hat_s"), else the family name.

    Arguments that shapes do not reveal (EDT's ``num_heads``) then come from that variant.
    """
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    for name in list_variants():
        spec = get_variant(name)
        if spec.family != family or name == family or not spec.arch:
            continue
        shared = set(spec.arch) & set(arch)
        if shared and all(norm(spec.arch[k]) == norm(arch[k]) for k in shared):
            return name
    return family


def convert_checkpoint(
    state_dict_or_path: str | Path | dict[str, Any],
    family: str,
    *,
    tasks: list[str] | None = None,
    **official_arch_kwargs: Any,
):
    """Build our `RestorationModel` from an official checkpoint of ``family`` (hat, swinir, ipt, edt).

    Args:
        state_dict_or_path: a state dict or a checkpoint file (``.safetensors``; ``.pth``/``.pt`` are read with
            ``torch.load(weights_only=True)``), optionally wrapped in ``params``/``params_ema``/``module.``.
        family: the official architecture the weights come from.
        tasks: our task names for the checkpoint's heads, in head order; inferred from the upsampler when
            omitted (IPT's six heads -> sr_x2, sr_x3, sr_x4, denoise_g30, denoise_g50, derain).
        **official_arch_kwargs: official constructor arguments that shapes do not reveal (e.g. ``img_range``,
            ``qk_scale``, IPT ``num_heads``); they override what is inferred.

    Returns:
        The model in eval mode, its weights loaded strictly.

    Raises:
        tasks.errors.InputError (a ValueError): an unreadable, empty or corrupt file, a file that is not a state dict
            of tensors, keys of another family (the message names the family they look like), an unknown family,
            keys the adapter cannot place, or keys/shapes that do not match our model. Messages name the file.
        FileNotFoundError, IsADirectoryError: ``state_dict_or_path`` is missing or a folder.
    """
    from restore.model import RestorationModel

    if family not in FAMILIES:
        raise InputError(f"unknown family {family!r}; convertible families: {', '.join(sorted(FAMILIES))}")
    where = str(state_dict_or_path) if isinstance(state_dict_or_path, (str, Path)) else "the checkpoint"
    sd = load_official_state_dict(state_dict_or_path)
    guess = _guess_family(sd)
    if guess is not None and guess != family:  # before the adapter, whose errors would be about a foreign layout
        raise _wrong_family(where, family, guess, sd)
    try:
        arch, tasks, ours, unknown = FAMILIES[family](sd, None if tasks is None else list(tasks))
    except KeyError as err:  # the adapter reads a key every checkpoint of the family has
        raise _wrong_family(where, family, guess, sd, missing=err.args[0] if err.args else None) from err
    except ValueError as err:  # what the adapter cannot convert (ape=True, grayscale, task/scale mismatch, ...)
        raise InputError(f"{where}: {' '.join(str(err).split())}") from err
    if unknown:
        raise InputError(f"{where}: {len(unknown)} key(s) of the {family} checkpoint are not part of the official "
                         f"layout this converter knows: {unknown[:20]}{' ...' if len(unknown) > 20 else ''}")
    arch.update(official_arch_kwargs)
    try:
        model = RestorationModel(_variant_for(family, arch), tasks=tasks, arch=arch)
    except (ValueError, TypeError) as err:  # inferred or --arch values the architecture refuses
        raise InputError(f"{where}: {' '.join(str(err).split())} (architecture {arch})") from err
    load_state_dict_strict(model, ours, where, against=f"the {family} architecture {arch}",
                           fix="pass the official constructor arguments (e.g. --arch num_heads=8) if the inference "
                               "was wrong")
    return model.eval()


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings such as pixelshuffle


def build_parser() -> argparse.ArgumentParser:
    """The ``restore convert`` argument parser."""
    p = argparse.ArgumentParser(prog="restore convert", description="convert an official checkpoint to our format")
    p.add_argument("src", help="official checkpoint (.pth/.pt/.safetensors)")
    p.add_argument("out", help="output folder (config.json + model.safetensors + README.md)")
    p.add_argument("--family", required=True, choices=sorted(FAMILIES))
    p.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                   help="official constructor arguments, values in JSON (e.g. img_range=1.0 depths=[6,6])")
    p.add_argument("--tasks", nargs="*", default=None, help="our task names for the heads, in head order")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUT (default: refuse)")
    return p


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a folder already holding any file the save writes (a model, or a user's
    own README.md that the card would replace) unless ``overwrite``, before the work."""
    from restore.hub import CONFIG_NAME, WEIGHTS_NAME

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a folder; pass a folder path")
    held = [n for n in (CONFIG_NAME, WEIGHTS_NAME, "README.md") if (out / n).exists()]
    if held and not overwrite:
        raise FileExistsError(f"output folder {out} already holds {', '.join(held)}; pass --overwrite to "
                              "replace them, or choose another folder")
    for parent in (out, *out.parents):  # the first folder that exists is where the files will be created
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"output {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"output {out}: folder {parent} is not writable")
            break


def _save_atomic(model, out: Path) -> None:
    """Write the model so that OUT is either absent/untouched or complete: into a temporary sibling folder that is
    renamed onto OUT (``rename`` replaces an empty folder atomically); a folder already holding files gets each file
    replaced atomically by ``save_pretrained`` instead."""
    import shutil
    import uuid

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir() and any(out.iterdir()):
        model.save_pretrained(out)
        return
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # not mkdtemp: its 0700 mode would stay on the published folder
    try:
        model.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_main(argv: list[str] | None = None) -> int:
    """``restore convert SRC OUT --family hat [--arch key=value ...] [--tasks t ...] [--overwrite]``.

    Returns 0, or 2 with a one-line error naming the file for bad input (nothing is written then).
    """
    p = build_parser()
    args = p.parse_args(argv)
    kwargs = {}
    for item in args.arch:
        if "=" not in item:
            p.error(f"--arch takes key=value pairs, got {item!r}")
        key, value = item.split("=", 1)
        kwargs[key] = _parse_value(value)
    out = Path(args.out)
    try:
        if not Path(args.src).exists():  # the cheapest mistake first
            raise FileNotFoundError(f"checkpoint {args.src!r} does not exist")
        _check_out(out, args.overwrite)
        model = convert_checkpoint(args.src, args.family, tasks=args.tasks, **kwargs)
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError,
            PermissionError) as err:
        print(f"restore convert: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    _save_atomic(model, out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: variant {model.variant}, tasks {model.tasks}, {n / 1e6:.2f}M parameters")
    return 0
