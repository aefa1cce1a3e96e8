"""Model files of other projects in `restore run` / `restore eval` (`restore.thirdparty`): small randomly
initialised models of spandrel's own architecture classes (ESRGAN's RRDBNet, SwinIR, DnCNN), saved as a torch
state dict or as safetensors, give exactly spandrel's own output; unsafe pickles and x1 models without a task are
refused with one line. ``--compile`` (torch.compile, dynamic shapes) equals eager and falls back with a warning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

spandrel = pytest.importorskip("spandrel")
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from spandrel.architectures.DnCNN import DnCNN  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

from restore.cli import main  # noqa: E402
from restore.inference import FallbackWarning, restore_image, tiled_forward  # noqa: E402
from restore.thirdparty import ThirdPartyModel, load_model_file  # noqa: E402
from tasks.errors import InputError  # noqa: E402
from tasks.evaluate import evaluate  # noqa: E402


def _perturbed(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s state dict with every parameter moved off its initial value (biases start at 0)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


NETS = {
    "esrgan_x4.pth": lambda: ESRGAN(num_filters=8, num_blocks=1, scale=4),
    "swinir_x2.safetensors": lambda: SwinIR(upscale=2, img_size=16, embed_dim=12, depths=[2], num_heads=[2],
                                            window_size=4, mlp_ratio=2.0, upsampler="pixelshuffledirect"),
    "dncnn_x1.pth": lambda: DnCNN(in_nc=3, out_nc=3, nc=8, nb=5),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, build in NETS.items():
        state = _perturbed(build())
        path = d / name
        if name.endswith(".safetensors"):
            save_file(state, str(path))
        else:
            torch.save(state, path)
        out[name] = path
    return out


def _spandrel(path: Path):
    return spandrel.ModelLoader().load_from_file(path).eval()  # spandrel's own loading and call


def _png(path: Path, size: tuple[int, int] = (20, 18)) -> Path:
    rng = np.random.default_rng(len(path.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name, arch, task", [("esrgan_x4.pth", "ESRGAN", "sr_x4"),
                                               ("swinir_x2.safetensors", "SwinIR", "sr_x2")])
def test_loaded_model_is_spandrels_call_and_task_comes_from_scale(files, name, arch, task):
    model = load_model_file(files[name])
    assert isinstance(model, ThirdPartyModel) and model.architecture == arch and model.tasks == [task]
    x = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    net = _spandrel(files[name])
    assert torch.equal(restore_image(model, x, task), net(x))
    tiled = tiled_forward(net, x, model.scale(task), tile=8, overlap=4, multiple=model.pad_multiple(task))
    tiled_ours = restore_image(model, x, task, tile=8, overlap=4)  # spandrel's call, tile by tile
    torch.testing.assert_close(tiled_ours, tiled, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["esrgan_x4.pth", "swinir_x2.safetensors"])
def test_run_with_a_model_file(files, tmp_path, name):
    src = _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert main(["run", "--model", str(files[name]), str(src), "-o", str(out), "--no-progress"]) == 0
    x = torch.from_numpy(np.array(Image.open(src))).permute(2, 0, 1)[None].float() / 255
    expected = (_spandrel(files[name])(x)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), expected)


def test_eval_with_a_model_file_scores_spandrels_output(files, tmp_path):
    root = tmp_path / "bench"
    for n in ("a", "b"):
        _png(root / "Tiny" / "HR" / f"{n}.png", size=(32, 28))
    out = tmp_path / "r.json"
    args = ["eval", "--model", str(files["esrgan_x4.pth"]), "--task", "sr_x4", "--benchmark", "Tiny", "--root",
            str(root)]
    assert main([*args, "-o", str(out)]) == 0
    ours = json.loads(out.read_text())["results"][0]["per_image"]
    net = _spandrel(files["esrgan_x4.pth"])
    ref = evaluate(lambda lq: net(lq), "Tiny", "sr_x4", root=root).per_image
    assert [r["name"] for r in ours] == [r["name"] for r in ref]
    assert [r["psnr"] for r in ours] == pytest.approx([r["psnr"] for r in ref], abs=1e-9)
    args[args.index("sr_x4")] = "sr_x2"  # a x4 model cannot serve a x2 task
    assert main(args) == 2


class _Opaque:
    """Any Python object: only full unpickling can rebuild it, which would run the file's code."""


def test_pickle_with_python_objects_is_refused_in_one_line(files, tmp_path, capsys):
    bad = tmp_path / "trojan.pth"
    torch.save({"params": torch.load(files["esrgan_x4.pth"], weights_only=True), "extra": _Opaque()}, bad)
    with pytest.raises(InputError, match="Python objects besides tensors"):
        load_model_file(bad)
    src = _png(tmp_path / "x.png")
    assert main(["run", "--model", str(bad), str(src), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trojan.pth" in err and "Python objects" in err


def test_x1_model_needs_task(files, tmp_path, capsys):
    src = _png(tmp_path / "x.png")
    base = ["run", "--model", str(files["dncnn_x1.pth"]), str(src), "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--task" in err and "\n" not in err
    assert main([*base, "-o", str(tmp_path / "o2"), "--task", "sr_x2"]) == 2  # a x2 task for a x1 model
    assert main([*base, "-o", str(tmp_path / "o3"), "--task", "denoise_g25"]) == 0
    x = torch.from_numpy(np.array(Image.open(src))).permute(2, 0, 1)[None].float() / 255
    expected = (_spandrel(files["dncnn_x1.pth"])(x)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o3" / "x.png")), expected)


# ------------------------------------------------------------------------------------------- --compile


def test_compiled_output_equals_eager(files):
    model = load_model_file(files["dncnn_x1.pth"], tasks=["denoise_g25"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for size in ((12, 14), (17, 9)):  # dynamic shapes: a second size reuses the compiled graph
            x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
            eager = restore_image(model, x, "denoise_g25")
            compiled = restore_image(model, x, "denoise_g25", compile=True)
            assert (compiled - eager).abs().max() <= 1e-5
    assert not [w for w in caught if issubclass(w.category, FallbackWarning)]  # it really compiled


def test_compile_falls_back_to_eager_with_one_warning(files):
    from torch._dynamo import register_backend

    @register_backend
    def restore_test_broken_backend(gm, example_inputs):  # a backend whose compilation fails
        raise RuntimeError("no compiler here")

    model = load_model_file(files["dncnn_x1.pth"], tasks=["denoise_g25"])
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    eager = restore_image(model, x, "denoise_g25")
    for backend in ("restore_test_broken_backend", "no_such_backend"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outs = [restore_image(model, x, "denoise_g25", compile=backend) for _ in range(2)]
        messages = [str(w.message) for w in caught if issubclass(w.category, FallbackWarning)]
        assert len(messages) == 1 and backend in messages[0] and "\n" not in messages[0]
        assert all(torch.equal(o, eager) for o in outs)
        model = load_model_file(files["dncnn_x1.pth"], tasks=["denoise_g25"])  # a fresh model for the next backend


def test_running_out_of_memory_in_the_compiled_call_is_not_a_compile_failure(files):
    """A cuBLAS allocation failure (a plain RuntimeError on CUDA, here wrapped by dynamo as a backend failure) is
    raised for the caller (fit_memory retries in smaller tiles), not taken as "compilation is unavailable": the
    model stays compiled, with no warning."""
    from torch._dynamo import register_backend

    from restore import inference

    @register_backend
    def restore_test_oom_backend(gm, example_inputs):
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    model = load_model_file(files["dncnn_x1.pth"], tasks=["denoise_g25"])
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception, match="CUBLAS_STATUS_ALLOC_FAILED"):
            restore_image(model, x, "denoise_g25", compile="restore_test_oom_backend")
    assert not [w for w in caught if issubclass(w.category, FallbackWarning)]
    assert model not in inference._EAGER


def test_run_compile(files, tmp_path):
    src = _png(tmp_path / "x.png")
    base = ["run", "--model", str(files["dncnn_x1.pth"]), "--task", "denoise_g25", str(src), "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "eager")]) == 0
    assert main([*base, "-o", str(tmp_path / "compiled"), "--compile"]) == 0
    a = np.asarray(Image.open(tmp_path / "eager" / "x.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "compiled" / "x.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # 1e-5 in float can flip a rounding to 8 bits


def test_run_infers_the_task_of_a_one_task_model_and_asks_otherwise(tiny_model, tmp_path, capsys):
    import restore

    src = _png(tmp_path / "x.png")
    two = tmp_path / "two"
    tiny_model.save_pretrained(two)  # sr_x2 and denoise_g25
    assert main(["run", "--model", str(two), str(src), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--task" in err and "sr_x2" in err and "denoise_g25" in err
    one = tmp_path / "one"
    restore.create_model("edt_tiny", tasks=["sr_x2"]).save_pretrained(one)
    assert main(["run", "--model", str(one), str(src), "-o", str(tmp_path / "o1"), "--no-progress"]) == 0
    assert Image.open(tmp_path / "o1" / "x.png").size == (40, 36)
