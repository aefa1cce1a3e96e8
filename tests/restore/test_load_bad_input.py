"""Bad input to model loading and `restore convert`: one-line errors naming the file and the fix, exit code 2,
inputs never modified, no partial output. Every bad input is built here, in tmp_path, from a tiny saved model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import restore
from restore import RestorationModel
from restore.cli import main
from restore.hub import CorruptCheckpointError, InvalidConfigError
from tasks.errors import InputError


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny edt model saved with save_pretrained (one task keeps it small)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("saved") / "model"
    restore.create_model("edt_tiny", tasks=["sr_x2"]).eval().save_pretrained(d)
    return d


def _copy(saved: Path, tmp_path: Path, name: str = "m") -> Path:
    d = tmp_path / name
    shutil.copytree(saved, d)
    return d


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rewrite_config(d: Path, **changes) -> Path:
    cfg = json.loads((d / "config.json").read_text())
    arch = changes.pop("arch", None)
    cfg.update(changes)
    if isinstance(arch, dict):
        cfg["arch"] = {**cfg["arch"], **arch}
    elif arch is not None:
        cfg["arch"] = arch
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------------- corrupt model.safetensors


@pytest.mark.parametrize("damage", ["zero", "head", "tail", "random"])
def test_corrupt_weights_name_the_file(saved, tmp_path, capsys, damage):
    d = _copy(saved, tmp_path)
    w = d / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes({"zero": b"", "head": data[:1000], "tail": data[:-100], "random": os.urandom(5000)}[damage])
    before = _digest(d)
    with pytest.raises(CorruptCheckpointError) as err:
        RestorationModel.from_pretrained(d)
    msg = str(err.value)
    assert str(w) in msg and ("re-save" in msg or "copy it again" in msg)
    assert "SafetensorError" not in msg and "\n" not in msg
    assert isinstance(err.value, InputError) and isinstance(err.value, ValueError)
    if damage != "head":
        return
    # the CLI: one line, exit 2, for both commands that load models
    img = tmp_path / "x.png"
    from tasks.io import save_image

    save_image(torch.rand(3, 16, 16), img)
    assert main(["run", "--model", str(d), "--task", "sr_x2", str(img), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    assert "model.safetensors" in _one_line_error(capsys)
    assert main(["eval", "--model", str(d), "--task", "sr_x2", "--benchmark", str(tmp_path)]) == 2
    assert "model.safetensors" in _one_line_error(capsys)
    assert _digest(d) == before and not [f for f in (tmp_path / "out").rglob("*") if f.is_file()]


def test_weights_values_are_checked(saved, tmp_path):
    state = load_file(saved / "model.safetensors")
    key = "body.conv_after_body.bias"
    cases = {
        "nan": {**state, key: torch.full_like(state[key], float("nan"))},
        "int": {**state, key: state[key].long()},
        "shape": {**state, key: torch.zeros(3)},
    }
    for name, bad in cases.items():
        d = _copy(saved, tmp_path, name)
        save_file(bad, d / "model.safetensors")
        with pytest.raises(CorruptCheckpointError, match=key) as err:
            RestorationModel.from_pretrained(d)
        assert str(d / "model.safetensors") in str(err.value)
    # floats of another precision and extra metadata are fine: fp16 weights load into the float32 model
    d = _copy(saved, tmp_path, "fp16")
    save_file({k: v.half() for k, v in state.items()}, d / "model.safetensors",
              metadata={"format": "pt", "note": "x" * 5000})
    m = RestorationModel.from_pretrained(d)
    assert m.body.conv_after_body.bias.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ config.json


CONFIG_CASES = {
    # name: (config text or changes, words the message must hold)
    "list": ("[1, 2]", ["JSON list", "variant"]),
    "not_json": ("{oops", ["not valid JSON"]),
    "empty": ("", ["not valid JSON"]),
    "missing_variant": ('{"tasks": ["sr_x2"]}', ["missing keys ['variant']"]),
    "unknown_variant": ({"variant": "edt_huge"}, ["'variant'", "edt_huge", "edt_tiny"]),
    "tasks_str": ({"tasks": "sr_x2"}, ["'tasks'", "list"]),
    "tasks_unknown": ({"tasks": ["deblur"]}, ["'tasks'", "deblur", "sr_x<scale>"]),
    "arch_list": ({"arch": [1]}, ["'arch'"]),
    "format_str": ({"format_version": "1"}, ["'format_version'"]),
    "window_0": ({"arch": {"window_size": [0, 0]}}, ["window_size", "integers >= 1"]),
    "window_int": ({"arch": {"window_size": 0}}, ["window_size", "list of 2"]),
    "depth_negative": ({"arch": {"depths": [-1, 2]}}, ["depths", ">= 1"]),
    "heads_not_dividing": ({"arch": {"num_heads": [5, 5]}}, ["num_heads", "divisible"]),
    "heads_zero": ({"arch": {"num_heads": [0, 0]}}, ["num_heads", ">= 1"]),
    "embed_negative": ({"arch": {"embed_dim": -24}}, ["embed_dim", ">= 1"]),
    "mlp_nan": ({"arch": {"mlp_ratio": float("nan")}}, ["mlp_ratio", "> 0"]),
    "drop_path_2": ({"arch": {"drop_path_rate": 2.0}}, ["drop_path_rate", "< 1"]),
    "arch_unknown_key": ({"arch": {"bogus": 1}}, ["bogus", "valid:"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_one_line_naming_the_key(saved, tmp_path, case):
    change, words = CONFIG_CASES[case]
    d = _copy(saved, tmp_path)
    if isinstance(change, str):
        (d / "config.json").write_text(change)
    else:
        _rewrite_config(d, **change)
    before = _digest(d)
    with pytest.raises(InvalidConfigError) as err:
        RestorationModel.from_pretrained(d)
    msg = str(err.value)
    assert str(d / "config.json") in msg and "\n" not in msg
    for word in words:
        assert word in msg, msg
    assert _digest(d) == before


def test_arch_is_checked_before_any_module_is_built(saved, tmp_path, monkeypatch):
    from restore.families import edt

    built = []
    monkeypatch.setattr(edt.EDTBody, "__init__", lambda self, *a, **k: built.append(1) or None)
    d = _rewrite_config(_copy(saved, tmp_path), arch={"window_size": [0, 0]})
    with pytest.raises(InvalidConfigError, match="window_size"):
        RestorationModel.from_pretrained(d)
    assert built == []


def test_window_family_arch_values(tmp_path):
    for variant, arch, word in [("swinir", {"window_size": 0}, "window_size"),
                                ("swinir", {"embed_dim": 12, "num_heads": [5] * 4}, "divide embed_dim=12"),
                                ("hat", {"depths": []}, "depths"),
                                ("hat", {"overlap_ratio": -1}, "overlap_ratio"),
                                ("ipt", {"num_heads": 5}, "n_feats * patch_dim**2")]:
        with pytest.raises(ValueError, match=re.escape(word)):
            RestorationModel(variant, tasks=["sr_x2"], arch=arch)


# ----------------------------------------------------------------------------------- odd folders and devices


def test_odd_paths(saved, tmp_path):
    d = _copy(saved, tmp_path, "cfg_dir")
    (d / "config.json").unlink()
    (d / "config.json").mkdir()
    with pytest.raises(IsADirectoryError, match="config.json is a folder"):
        RestorationModel.from_pretrained(d)
    d = _copy(saved, tmp_path, "weights_dir")
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()
    with pytest.raises(IsADirectoryError, match="model.safetensors is a folder"):
        RestorationModel.from_pretrained(d)
    with pytest.raises(InputError, match="is a file; pass the folder"):
        RestorationModel.from_pretrained(saved / "config.json")
    (tmp_path / "broken").symlink_to(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="broken symbolic link"):
        RestorationModel.from_pretrained(tmp_path / "broken")
    # a symlinked folder and a unicode path are ordinary folders
    (tmp_path / "link").symlink_to(saved)
    uni = _copy(saved, tmp_path, "mödel 模型")
    for folder in (tmp_path / "link", uni):
        assert RestorationModel.from_pretrained(folder).tasks == ["sr_x2"]


def test_typo_in_a_local_path_is_not_taken_for_a_hub_id(saved, tmp_path, monkeypatch, capsys):
    """``demo-out/modl`` where ``demo-out`` is a folder here: named as a missing folder with the close names, at
    once (as a Hub id it waited through the client's retries and then reported a repo)."""
    _copy(saved, tmp_path / "demo-out", "model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"holds no 'modl'; did you mean demo-out/model\?"):
        RestorationModel.from_pretrained("demo-out/modl")
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    code = main(["run", "--model", "demo-out/modl", "--task", "sr_x2", "x.png", "-o", "o"])
    assert code == 2 and "did you mean demo-out/model" in _one_line_error(capsys)
    assert RestorationModel.from_pretrained("demo-out/model").tasks == ["sr_x2"]


def test_bad_map_location_fails_before_reading(saved, tmp_path):
    for device, word in [("tpu9", "not a torch device"), ("cuda:7", "(?i)cuda.*(usable|device)")]:
        if device.startswith("cuda") and torch.cuda.device_count() > 7:
            continue
        with pytest.raises(InputError, match=word):
            RestorationModel.from_pretrained(tmp_path / "does-not-matter", map_location=device)


def test_pickle_only_folder_is_one_clear_line(saved, tmp_path):
    d = tmp_path / "pickles"
    d.mkdir()
    shutil.copy(saved / "config.json", d)
    torch.save(load_file(saved / "model.safetensors"), d / "pytorch_model.bin")
    with pytest.raises(InputError) as err:
        RestorationModel.from_pretrained(d)
    msg = str(err.value)
    assert "pytorch_model.bin" in msg and "restore convert" in msg and "\n" not in msg
    assert "it holds" not in msg  # the old message spliced two sentences into one


# --------------------------------------------------------------------------------------------- Hub, offline

HUB_SETUP = textwrap.dedent(
    """
    import json, sys, torch, restore
    from huggingface_hub import HfApi, hf_hub_download
    from restore.hub import CONFIG_NAME
    torch.manual_seed(0)
    model = restore.create_model("edt_tiny", tasks=["sr_x2"]).eval()
    model.push_to_hub("acme/tiny")
    hf_hub_download("acme/tiny", CONFIG_NAME)  # only the config reaches the cache
    api = HfApi()
    api.create_repo("acme/pickled")
    api.upload_file(path_or_fileobj=json.dumps(model.config_dict()).encode(), path_in_repo="config.json",
                    repo_id="acme/pickled")
    api.upload_file(path_or_fileobj=b"not really a pickle", path_in_repo="pytorch_model.bin", repo_id="acme/pickled")
    out = {}
    for repo, kw in (("acme/pickled", {}), ("acme/nope", {})):
        try:
            restore.RestorationModel.from_pretrained(repo, **kw)
        except Exception as err:
            out[repo] = [type(err).__name__, str(err)]
    print(json.dumps(out))
    """
)

HUB_OFFLINE = textwrap.dedent(
    """
    import json, restore
    try:
        restore.RestorationModel.from_pretrained("acme/tiny")
    except Exception as err:
        print(json.dumps([type(err).__name__, str(err)]))
    """
)


@pytest.mark.slow  # two fresh interpreters importing torch: ~20 s alone, over a minute on a busy machine
def test_hub_errors_and_offline_without_weights(fake_hub, hub_env):
    r = subprocess.run([sys.executable, "-c", HUB_SETUP], env=hub_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    online = json.loads(r.stdout.strip().splitlines()[-1])
    kind, msg = online["acme/pickled"]
    assert kind == "InputError" and "pytorch_model.bin" in msg and "restore convert" in msg and "\n" not in msg
    kind, msg = online["acme/nope"]
    assert kind == "InputError" and "does not exist" in msg
    fake_hub.stop()
    r = subprocess.run([sys.executable, "-c", HUB_OFFLINE], env=dict(hub_env, HF_HUB_OFFLINE="1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    kind, msg = json.loads(r.stdout.strip().splitlines()[-1])
    assert kind == "FileNotFoundError", msg
    assert "model.safetensors" in msg and "not in the local Hub cache" in msg and "hf download acme/tiny" in msg
    assert "pickle" not in msg


# ------------------------------------------------------------------------------------------- restore convert


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """An official-layout SwinIR checkpoint (spandrel's copy of the architecture), saved as .pth."""
    SwinIR = pytest.importorskip("spandrel.architectures.SwinIR").SwinIR
    torch.manual_seed(0)
    ref = SwinIR(embed_dim=12, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0,
                 upsampler="pixelshuffledirect", upscale=2, img_size=16).eval()
    path = tmp_path_factory.mktemp("official") / "swinir.pth"
    torch.save(ref.state_dict(), path)
    return path


def _convert(capsys, *args) -> tuple[int, str]:
    code = main(["convert", *map(str, args)])
    return code, _one_line_error(capsys)


def test_convert_bad_files(tmp_path, capsys, saved):
    bad = {
        "random.safetensors": os.urandom(3000),
        "zero.safetensors": b"",
        "zero.pth": b"",
        "random.pth": os.urandom(3000),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"step": 3}, tmp_path / "not_tensors.pth")
    torch.save({}, tmp_path / "empty.pth")
    torch.save(load_file(saved / "model.safetensors"), tmp_path / "ours.pth")
    expect = {"random.safetensors": "not a complete safetensors file", "zero.safetensors": "empty (0 bytes)",
              "zero.pth": "empty (0 bytes)", "random.pth": "weights-only", "list.pth": "holds a list",
              "not_tensors.pth": "'step' holds a int", "empty.pth": "empty state dict",
              "ours.pth": "already in the restore format"}
    for name, words in expect.items():
        src = tmp_path / name
        before = hashlib.sha256(src.read_bytes()).hexdigest()
        code, err = _convert(capsys, src, tmp_path / f"out-{name}", "--family", "swinir")
        assert code == 2 and str(src) in err and words in err, err
        assert "\n" not in err and "Weights only load failed" not in err
        assert hashlib.sha256(src.read_bytes()).hexdigest() == before
        assert not (tmp_path / f"out-{name}").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


@pytest.mark.parametrize("family", ["hat", "ipt", "edt"])
def test_convert_wrong_family_names_the_right_one(official, tmp_path, capsys, family):
    code, err = _convert(capsys, official, tmp_path / "out", "--family", family)
    assert code == 2 and str(official) in err and "--family swinir" in err
    assert "KeyError" not in err and not (tmp_path / "out").exists()


def test_convert_output_is_atomic_and_never_overwritten_silently(official, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", str(official), str(out), "--family", "swinir"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not a temporary folder's private mode
    before = _digest(out)
    code, err = _convert(capsys, official, out, "--family", "swinir", "--arch", "img_range=2.0")
    assert code == 2 and "--overwrite" in err and _digest(out) == before
    assert main(["convert", str(official), str(out), "--family", "swinir", "--arch", "img_range=2.0",
                 "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["arch"]["img_range"] == 2.0
    (tmp_path / "a_file").write_text("x")
    for target in (tmp_path / "a_file", tmp_path / "a_file" / "sub"):
        code, err = _convert(capsys, official, target, "--family", "swinir")
        assert code == 2 and "a_file" in err
    assert (tmp_path / "a_file").read_text() == "x"
    code, err = _convert(capsys, official, tmp_path / "o2", "--family", "swinir", "--arch", "window_size=0")
    assert code == 2 and "window_size=0" in err and not (tmp_path / "o2").exists()
    notes = tmp_path / "notes"  # a folder of the user's own with a README.md the model card would replace
    notes.mkdir()
    (notes / "README.md").write_text("my notes")
    code, err = _convert(capsys, official, notes, "--family", "swinir")
    assert code == 2 and "README.md" in err and "--overwrite" in err, err
    assert [p.name for p in notes.iterdir()] == ["README.md"] and (notes / "README.md").read_text() == "my notes"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
