"""`restore export`: ONNX graphs checked with onnxruntime against PyTorch, official layouts loaded by spandrel."""

from __future__ import annotations

import pytest
import torch

from restore.export import export_main, export_official, export_onnx, official_state_dict
from restore.model import RestorationModel
from tasks.errors import InputError

ort = pytest.importorskip("onnxruntime")
spandrel = pytest.importorskip("spandrel")

# tiny bodies of each family (one or two blocks: ONNX export time grows with the number of traced nodes)
TINY = {
    "swinir": dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, upsampler="pixelshuffledirect"),
    "hat": dict(embed_dim=12, depths=[2], num_heads=[2], window_size=4, squeeze_factor=6, compress_ratio=3,
                num_feat=8),
    "edt": dict(num_feat=4, embed_dim=12, depths=[2], num_heads=[2]),
    "ipt": dict(patch_size=6, patch_dim=3, n_feats=4, num_heads=12, num_layers=1),
}


def tiny(family: str, task: str = "sr_x2", **arch) -> RestorationModel:
    """A tiny model with random weights everywhere (zero biases would hide a mapping error)."""
    torch.manual_seed(0)
    model = RestorationModel(family, tasks=[task], arch={**TINY[family], **arch}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _onnx_vs_torch(model: RestorationModel, path, task: str, sizes: list[tuple[int, int, int]]) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b, h, w in sizes:
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))
        with torch.no_grad():
            ref = model(x, task).numpy()
        (out,) = session.run(None, {"lq": x.numpy()})
        assert out.shape == ref.shape
        worst = max(worst, float(abs(out - ref).max()))
    return worst


# ------------------------------------------------------------------------------------------------- ONNX
# The export size is 2 * multiple + 1 (9 for a window of 4); the checked sizes differ from it, need padding
# (odd, non-square) and several reflect steps (2 high padded to 4; for EDT 9 wide padded to 24).


def test_onnx_swinir_dynamic_sizes_equal_pytorch(tmp_path) -> None:
    model = tiny("swinir")
    path = export_onnx(model, tmp_path / "m.onnx", "sr_x2")
    assert _onnx_vs_torch(model, path, "sr_x2", [(1, 16, 16), (2, 13, 18), (1, 5, 11), (1, 2, 3)]) <= 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["restore.task"] == "sr_x2" and meta["restore.scale"] == "2"
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_onnx(model, path, "sr_x2")


@pytest.mark.slow
@pytest.mark.parametrize("family, task", [("edt", "sr_x2"), ("edt", "denoise_g25"), ("hat", "sr_x2")])
def test_onnx_other_families_equal_pytorch(tmp_path, family: str, task: str) -> None:
    model = tiny(family, task)
    path = export_onnx(model, tmp_path / "m.onnx", task)
    assert _onnx_vs_torch(model, path, task, [(1, 16, 16), (2, 13, 9)]) <= 1e-4


@pytest.mark.slow
def test_onnx_ipt_has_fixed_size_and_dynamic_batch(tmp_path) -> None:
    model = tiny("ipt")
    path = export_onnx(model, tmp_path / "m.onnx", "sr_x2")
    assert _onnx_vs_torch(model, path, "sr_x2", [(1, 6, 6), (3, 6, 6)]) <= 1e-4


@pytest.mark.slow
def test_onnx_fp16(tmp_path) -> None:
    model = tiny("swinir")
    path = export_onnx(model, tmp_path / "m16.onnx", "sr_x2", dtype="fp16")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 13, 10)
    (out,) = session.run(None, {"lq": x.numpy().astype("float16")})
    with torch.no_grad():
        ref = model(x, "sr_x2").numpy()
    assert out.dtype.name == "float16" and out.shape == ref.shape
    assert abs(out.astype("float32") - ref).max() <= 1e-2


def test_onnx_bad_options_are_input_errors(tmp_path) -> None:
    model = tiny("swinir")
    with pytest.raises(InputError, match="sr_x4"):
        export_onnx(model, tmp_path / "m.onnx", "sr_x4")
    with pytest.raises(InputError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", "sr_x2", opset=11)
    with pytest.raises(InputError, match=".onnx"):
        export_onnx(model, tmp_path / "m.pt", "sr_x2")
    any_scale = RestorationModel("swinir", tasks=["sr_x2", "sr_any"], arch=TINY["swinir"]).eval()
    with pytest.raises(InputError, match="'sr_any' has no fixed output size.*export one of sr_x2"):
        export_onnx(any_scale, tmp_path / "m.onnx", "sr_any")
    with pytest.raises(InputError, match="'sr_any' has no fixed output size"):
        official_state_dict(any_scale, "sr_any")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------- official layout


def _spandrel_output(descriptor, family: str, x: torch.Tensor) -> torch.Tensor:
    """The loaded official module's raw output (the descriptor's call clamps to [0, 1], which would hide errors)."""
    net = descriptor.model
    if family == "ipt":
        return net(x * net.rgb_range) / net.rgb_range
    return net(x)


@pytest.mark.parametrize(
    "family, task, arch, arch_id",
    [
        ("swinir", "sr_x2", {}, "SwinIR"),
        ("swinir", "sr_x3", dict(upsampler="pixelshuffle", num_feat=64), "SwinIR"),
        ("swinir", "sr_x4", dict(upsampler="nearest+conv", num_feat=64, resi_connection="3conv"), "SwinIR"),
        ("swinir", "denoise_g25", {}, "SwinIR"),
        ("hat", "sr_x2", {}, "HAT"),
        ("ipt", "sr_x2", {}, "IPT"),
    ],
)
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_official_layout_loads_in_spandrel(tmp_path, family, task, arch, arch_id, suffix) -> None:
    model = tiny(family, task, **arch)
    path = export_official(model, tmp_path / f"official{suffix}", task)
    descriptor = spandrel.ModelLoader().load_from_file(str(path)).eval()
    assert descriptor.architecture.id == arch_id
    assert descriptor.scale == model.scale(task)
    size = 6 if family == "ipt" else 16  # spandrel's SwinIR/HAT minimum; IPT's body size
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        diff = (_spandrel_output(descriptor, family, x) - model(x, task)).abs().max().item()
    assert diff <= 1e-5


def test_official_layout_refusals(tmp_path) -> None:
    with pytest.raises(InputError, match="spandrel has no EDT"):
        official_state_dict(tiny("edt"), "sr_x2")
    with pytest.raises(InputError, match="num_feat=8"):
        official_state_dict(tiny("swinir", "sr_x2", upsampler="pixelshuffle", num_feat=8), "sr_x2")
    with pytest.raises(InputError, match="num_heads=2"):
        official_state_dict(tiny("ipt", num_heads=2), "sr_x2")
    with pytest.raises(InputError, match="qk_scale"):
        official_state_dict(tiny("swinir", qk_scale=0.5), "sr_x2")
    model = tiny("swinir")
    model.heads["sr_x2"].extra = torch.nn.Conv2d(3, 3, 1)  # a changed head: its weights have no official place
    with pytest.raises(InputError, match=r"heads\.sr_x2\.extra"):
        official_state_dict(model, "sr_x2")
    assert not list(tmp_path.iterdir())


def test_export_command(tmp_path) -> None:
    torch.manual_seed(0)
    model = RestorationModel("swinir", tasks=["sr_x2", "denoise_g15"], arch=TINY["swinir"]).eval()
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "x2.safetensors"
    with pytest.raises(InputError, match="--task"):  # two tasks, one per file
        export_main(["--format", "official", str(tmp_path / "model"), str(out)])
    assert export_main(["--format", "official", str(tmp_path / "model"), str(out), "--task", "sr_x2"]) == 0
    descriptor = spandrel.ModelLoader().load_from_file(str(out))
    assert descriptor.architecture.id == "SwinIR" and descriptor.scale == 2
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_main(["--format", "official", str(tmp_path / "model"), str(out), "--task", "sr_x2"])
    assert export_main(["--format", "official", str(tmp_path / "model"), str(out), "--task", "denoise_g15",
                        "--overwrite"]) == 0
    assert spandrel.ModelLoader().load_from_file(str(out)).scale == 1
