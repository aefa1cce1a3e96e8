"""Official-checkpoint conversion: file formats and wrappers, errors, the `restore convert` command, EDT keys."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from restore.convert import FAMILIES, convert_checkpoint, convert_main
from restore.model import RestorationModel

SwinIR = pytest.importorskip("spandrel.architectures.SwinIR").SwinIR


@pytest.fixture(scope="module")
def official() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    ref = SwinIR(embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0, upsampler="pixelshuffledirect",
                 upscale=2, img_size=16).eval()
    return ref, ref.state_dict()


def _same_output(model: RestorationModel, ref: torch.nn.Module) -> bool:
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        return (model(x, "sr_x2") - ref(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("wrap", ["plain", "params", "params_ema", "module"])
def test_wrappers(official, wrap: str) -> None:
    ref, sd = official
    broken = {k: torch.zeros_like(v) for k, v in sd.items()}
    src = {"plain": sd, "params": {"params": sd}, "params_ema": {"params": broken, "params_ema": sd},
           "module": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    assert _same_output(convert_checkpoint(src, "swinir"), ref)


def test_pth_and_safetensors_files(official, tmp_path) -> None:
    ref, sd = official
    torch.save({"params": sd}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        assert _same_output(convert_checkpoint(tmp_path / name, "swinir"), ref)


def test_pickled_code_is_refused(official, tmp_path) -> None:
    ref, _ = official
    torch.save({"params": ref}, tmp_path / "module.pth")  # a whole nn.Module: loading it would run code
    with pytest.raises(ValueError, match="weights-only"):
        convert_checkpoint(tmp_path / "module.pth", "swinir")


def test_unknown_and_mismatched_keys_are_listed(official) -> None:
    _, sd = official
    with pytest.raises(ValueError, match="extra_thing.weight"):
        convert_checkpoint({**sd, "extra_thing.weight": torch.zeros(1)}, "swinir")
    bad = dict(sd)
    bad["layers.0.residual_group.blocks.1.mlp.fc2.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="fc2.bias"):
        convert_checkpoint(bad, "swinir")
    with pytest.raises(ValueError, match="convertible families"):
        convert_checkpoint(sd, "rcan")


def test_convert_command_writes_hub_format(official, tmp_path) -> None:
    ref, sd = official
    torch.save(sd, tmp_path / "official.pth")
    out = tmp_path / "converted"
    assert convert_main([str(tmp_path / "official.pth"), str(out), "--family", "swinir", "--arch", "img_range=1.0"]) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert _same_output(RestorationModel.from_pretrained(str(out)), ref)
    assert convert_main([str(tmp_path / "missing.pth"), str(out), "--family", "swinir"]) == 2


# ------------------------------------------------------------------------------------------------- EDT
# Official EDT parameter names and shapes, written down from `fenglinglwb/EDT` utils/modules/edt.py (`Network`,
# `SwinBody`, `CSwinTransformerBlock`, `ResBlockDown`, `ResBlockSkip`, `UpResBlock`, `Upsample`,
# `UpsampleOneStep`) for MODEL.DEPTH = 2, plus the shifted blocks' attn_mask_h/v buffers (derived, dropped).

EDT_CONFIGS = {  # variant: (NUM_FEAT, EMBED_DIM, DEPTHS, UPSAMPLER) from configs/SRx2_EDT{T,S,B,L}_*.py
    "edt_t": (8, 60, [6] * 4, "pixelshuffledirect"),
    "edt_s": (16, 120, [6] * 5, "pixelshuffle"),
    "edt_b": (32, 180, [6] * 6, "pixelshuffle"),
    "edt_l": (64, 240, [6] * 12, "pixelshuffle"),
}


def _conv(out: int, inp: int, k: int, bias: bool = True) -> dict[str, tuple]:
    return {"weight": (out, inp, k, k), **({"bias": (out,)} if bias else {})}


def official_edt_shapes(nf: int, dim: int, depths: list[int], upsampler: str, scales=(2,), noise=(), rain=(),
                        depth: int = 2) -> dict[str, tuple]:
    keys: dict[str, tuple] = {}

    def add(prefix: str, params: dict[str, tuple]) -> None:
        keys.update({f"{prefix}.{k}": v for k, v in params.items()})

    heads = [(f"sr_x{s}", False) for s in scales] + [(f"dn_g{n}", True) for n in noise]
    heads += [(f"dr_{r}", True) for r in rain]
    for name, down in heads:
        add(f"head_{name}.0", _conv(nf, 3, 3))
        for i in range(depth):
            cin, cout = nf * 2**i, nf * 2 ** (i + 1)
            add(f"head_{name}.{i + 1}.conv_1", _conv(cin, cin, 3))
            add(f"head_{name}.{i + 1}.conv_2", _conv(cout, cin, 3))
            add(f"head_{name}.{i + 1}.shortcut", _conv(cout, cin, 1))
            if down:
                add(f"head_{name}.{i + 1}.conv_down", _conv(cout, cout, 4, bias=False))
        add(f"head_{name}.{depth + 1}", _conv(dim, nf * 2**depth, 3))
    add("body.patch_embed.norm", {"weight": (dim,), "bias": (dim,)})
    hidden = dim * 2
    for i, d in enumerate(depths):
        for k in range(d):
            p = f"body.layers.{i}.residual_group.blocks.{k}"
            add(f"{p}.norm1", {"weight": (dim,), "bias": (dim,)})
            add(f"{p}.attns.0.lepe", _conv(dim // 2, 1, 3))
            add(f"{p}.attns.1.lepe", _conv(dim // 2, 1, 3))
            add(f"{p}.norm2", {"weight": (dim,), "bias": (dim,)})
            add(f"{p}.mlp.fc1", {"weight": (hidden, dim), "bias": (hidden,)})
            add(f"{p}.mlp.dwconv", _conv(hidden, 1, 5))
            add(f"{p}.mlp.fc2", {"weight": (dim, hidden), "bias": (dim,)})
            add(f"{p}.qkv", {"weight": (3 * dim, dim), "bias": (3 * dim,)})
            add(f"{p}.proj", {"weight": (dim, dim), "bias": (dim,)})
            if k % 2:  # buffers of the shifted blocks, for the 48x48 training size: 16 windows of 6x24
                keys[f"{p}.attn_mask_h"] = keys[f"{p}.attn_mask_v"] = (16, 144, 144)
    add("body.norm", {"weight": (dim,), "bias": (dim,)})
    add("body.conv_after_body", _conv(dim, dim, 3))
    for name, down in heads:
        for j, i in enumerate(reversed(range(depth))):
            cin = dim if i == depth - 1 else nf * 2 ** (i + 2)
            cout = nf * 2 ** (i + 1)
            if down:
                keys[f"tail_{name}.{j}.up.weight"], keys[f"tail_{name}.{j}.up.bias"] = (cin, cout, 2, 2), (cout,)
            else:
                add(f"tail_{name}.{j}.conv", _conv(cout, cin, 3))
            add(f"tail_{name}.{j}.block.conv_1", _conv(cout, 2 * cout, 3))
            add(f"tail_{name}.{j}.block.conv_2", _conv(cout, cout, 3))
            add(f"tail_{name}.{j}.block.shortcut", _conv(cout, 2 * cout, 1))
        out = nf * 2
        if down:
            add(f"tail_{name}.{depth}", _conv(3, out, 3))
        elif upsampler == "pixelshuffledirect":
            s = int(name[len("sr_x"):])
            add(f"tail_{name}.{depth}.0", _conv(s * s * 3, out, 3))
        else:
            s = int(name[len("sr_x"):])
            convs = [(9 * out, 0)] if s == 3 else [(4 * out, 2 * j) for j in range(s.bit_length() - 1)]
            for ch, idx in convs:
                add(f"tail_{name}.{depth}.{idx}", _conv(ch, out, 3))
            add(f"tail_{name}.{depth + 1}", _conv(3, out, 3))
    return keys


@pytest.mark.parametrize("variant", list(EDT_CONFIGS))
def test_edt_official_keys_map_one_to_one(variant: str) -> None:
    nf, dim, depths, upsampler = EDT_CONFIGS[variant]
    multi = variant == "edt_b"  # the pretraining layout: x2/x3/x4, a noise level and both rain levels
    shapes = official_edt_shapes(nf, dim, depths, upsampler, scales=(2, 3, 4) if multi else (2,),
                                 noise=(15,) if multi else (), rain=("L", "H") if multi else ())
    sd = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    arch, tasks, ours, unknown = FAMILIES["edt"](sd, None)
    assert not unknown
    with torch.device("meta"):
        model = RestorationModel(variant, tasks=tasks, arch={k: v for k, v in arch.items()})
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected
    n_params = sum(1 for k in shapes if "attn_mask" not in k)
    assert len(ours) == n_params == len(expected)  # one-to-one: nothing merged, split or left over
    if multi:
        assert sorted(tasks) == ["denoise_g15", "derain_heavy", "derain_light", "sr_x2", "sr_x3", "sr_x4"]


def test_edt_official_checkpoint_converts_with_values(tmp_path) -> None:
    shapes = official_edt_shapes(4, 12, [2], "pixelshuffle", scales=(2,), noise=(25,))
    torch.manual_seed(0)
    sd = {k: torch.randn(v) for k, v in shapes.items()}
    model = convert_checkpoint({"module." + k: v for k, v in sd.items()}, "edt", num_heads=[2], window_size=[2, 4])
    assert sorted(model.tasks) == ["denoise_g25", "sr_x2"]
    ours = model.state_dict()
    assert torch.equal(ours["body.groups.0.blocks.1.attns.1.lepe.weight"],
                       sd["body.layers.0.residual_group.blocks.1.attns.1.lepe.weight"])
    assert torch.equal(ours["tails.denoise_g25.blocks.0.up.weight"], sd["tail_dn_g25.0.up.weight"])
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 8), "sr_x2").shape == (1, 3, 16, 16)
