"""The SwinIR, HAT and IPT architecture dataclasses, and the padding the model derives from them once.

Every family turns the ``arch`` dict of ``config.json`` into a frozen dataclass before it builds a module; these
tests pin what that promises: unknown keys and bad values fail at construction naming the key, the dataclass cannot
be changed, saved models (today's and older hand-written configs) reload to the same outputs with the same
``config.json``, and ``RestorationModel.forward`` never asks the family for its padding again.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import restore
from restore import RestorationModel
from restore.families import hat, ipt, swinir
from restore.families.hat import HATArch
from restore.families.ipt import IPTArch
from restore.families.swinir import SwinIRArch
from restore.registry import get_family, get_variant

ARCHES = {"swinir": SwinIRArch, "hat": HATArch, "ipt": IPTArch}
# small overrides per family: the variant keeps what makes it that variant (window, upsampler, resi_connection,
# CAB ratios), only the widths and depths shrink
SMALL = {
    "swinir": dict(embed_dim=16, depths=[2], num_heads=[2], num_feat=8),
    "hat": dict(embed_dim=48, depths=[2], num_heads=[2], num_feat=8),
    "ipt": dict(patch_size=12, patch_dim=3, n_feats=8, num_heads=2, num_layers=1),
}
WINDOW_VARIANTS = [v for v in restore.list_variants() if get_variant(v).family in ARCHES]


def _json(value):
    return json.loads(json.dumps(value))


# ------------------------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize("family", list(ARCHES))
def test_unknown_key_names_the_key_and_every_valid_one(family):
    cls = ARCHES[family]
    with pytest.raises(ValueError) as err:
        cls.from_dict({"window_sise": 8})
    msg = str(err.value)
    assert "window_sise" in msg and "\n" not in msg
    for f in dataclasses.fields(cls):
        assert f.name in msg, (f.name, msg)


@pytest.mark.parametrize("family", list(ARCHES))
def test_unknown_key_fails_before_any_module_is_built(family, monkeypatch):
    built = []
    for module_class in (swinir.SwinIRBody, swinir.MeanShiftHead, hat.HATBody, ipt.IPTBody, ipt.IPTHead):
        monkeypatch.setattr(module_class, "__init__", lambda self, *a, **k: built.append(type(self)))
    variant = {"swinir": "swinir_s", "hat": "hat_s", "ipt": "ipt"}[family]
    with pytest.raises(ValueError, match="bogus_key.*valid: "):
        RestorationModel(variant, tasks=["sr_x2"], arch={**SMALL[family], "bogus_key": 1})
    assert built == []


def test_official_keys_without_effect_are_accepted_and_fixed_ones_checked():
    assert SwinIRArch.from_dict({"img_size": 64, "upscale": 4, "in_chans": 3, "ape": False}) == SwinIRArch()
    assert HATArch.from_dict({"img_size": 64, "use_checkpoint": False}) == HATArch()
    assert IPTArch.from_dict({"scale": [2], "mlp": True, "no_pos": False, "n_colors": 3}) == IPTArch()
    for cls, key, value in [(SwinIRArch, "ape", True), (SwinIRArch, "in_chans", 1), (HATArch, "start_unshuffle", 2),
                            (IPTArch, "pos_every", True), (IPTArch, "n_colors", 1)]:
        with pytest.raises(ValueError, match=f"{key}={value!r} is not supported"):
            cls.from_dict({key: value})


# ------------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize("cls, arch, words", [
    (SwinIRArch, {"window_size": 0}, ["window_size=0"]),
    (HATArch, {"window_size": 0}, ["window_size=0"]),
    (SwinIRArch, {"depths": [2, 2], "num_heads": [2, 2, 2]}, ["num_heads=[2, 2, 2]", "2 integers"]),
    (HATArch, {"depths": [2], "num_heads": [2, 2]}, ["num_heads=[2, 2]", "1 integers"]),
    (SwinIRArch, {"embed_dim": 12, "depths": [1], "num_heads": [5]}, ["num_heads", "embed_dim=12"]),
    (HATArch, {"embed_dim": 12, "depths": [1], "num_heads": [5]}, ["num_heads", "embed_dim=12"]),
    (SwinIRArch, {"depths": [2, 0]}, ["depths=[2, 0]"]),
    (SwinIRArch, {"mlp_ratio": 0}, ["mlp_ratio=0"]),
    (SwinIRArch, {"upsampler": "bilinear"}, ["upsampler='bilinear'", "'nearest+conv'"]),
    (SwinIRArch, {"resi_connection": "identity"}, ["resi_connection='identity'", "'3conv'"]),
    (SwinIRArch, {"qkv_bias": 1}, ["qkv_bias=1"]),
    (HATArch, {"upsampler": "pixelshuffledirect"}, ["upsampler='pixelshuffledirect'", "'pixelshuffle'"]),
    (HATArch, {"resi_connection": "3conv"}, ["resi_connection='3conv'", "'identity'"]),
    (HATArch, {"embed_dim": 12, "depths": [1], "num_heads": [2]}, ["squeeze_factor=30", "embed_dim=12"]),
    (HATArch, {"overlap_ratio": -0.5}, ["overlap_ratio=-0.5"]),
    (IPTArch, {"num_heads": 5}, ["num_heads=5", "n_feats * patch_dim**2 = 576"]),
    (IPTArch, {"patch_size": 50}, ["patch_size=50", "patch_dim=3"]),
    (IPTArch, {"num_layers": 0}, ["num_layers=0"]),
])
def test_bad_values_are_refused_naming_the_key(cls, arch, words):
    with pytest.raises(ValueError) as err:
        cls.from_dict(arch)
    msg = str(err.value)
    assert "\n" not in msg
    for word in words:
        assert word in msg, msg


def test_json_lists_become_tuples_and_the_dataclass_is_frozen():
    a = SwinIRArch.from_dict({"depths": [2, 2], "num_heads": 3, "embed_dim": 12})
    assert a.depths == (2, 2) and a.num_heads == (3, 3)
    assert a == SwinIRArch(depths=(2, 2), num_heads=(3, 3), embed_dim=12) and hash(a)
    for arch, key in [(a, "window_size"), (HATArch(), "conv_scale"), (IPTArch(), "patch_size")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(arch, key, 4)


def test_hat_arch_extends_swinir_arch_with_its_own_keys():
    swin = {f.name for f in dataclasses.fields(SwinIRArch)}
    hat_keys = {f.name for f in dataclasses.fields(HATArch)}
    assert hat_keys - swin == {"compress_ratio", "squeeze_factor", "conv_scale", "overlap_ratio"}
    assert swin <= hat_keys
    with pytest.raises(ValueError, match="compress_ratio"):
        SwinIRArch.from_dict({"compress_ratio": 3})  # a HAT key is not a SwinIR one


# --------------------------------------------------------------------------------------- config round trip


def _save_and_reload(model, directory):
    model.save_pretrained(directory)
    return RestorationModel.from_pretrained(directory).eval()


@pytest.mark.parametrize("variant", WINDOW_VARIANTS)
def test_every_variant_round_trips_with_the_same_config_and_outputs(variant, tmp_path):
    family = get_variant(variant).family
    torch.manual_seed(0)
    tasks = ["sr_x2", "denoise_g25"]
    model = RestorationModel(variant, tasks=tasks, arch=SMALL[family]).eval()
    loaded = _save_and_reload(model, tmp_path / variant)
    saved = json.loads((tmp_path / variant / "config.json").read_text())
    # config.json holds the variant's arch with the overrides, as given: no defaults filled in from the dataclass
    assert saved["arch"] == _json({**get_variant(variant).arch, **SMALL[family]})
    assert loaded.arch == model.arch == saved["arch"] and isinstance(loaded.arch, dict)
    x = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        for task in tasks:
            assert torch.equal(loaded(x, task), model(x, task)), task


@pytest.mark.parametrize("variant, old_arch", [
    ("swinir_s", {"embed_dim": 16, "depths": [2], "num_heads": [2], "window_size": 8, "mlp_ratio": 2.0,
                  "upsampler": "pixelshuffledirect", "img_size": 64, "patch_size": 1, "in_chans": 3,
                  "upscale": 2, "ape": False, "use_checkpoint": False}),
    ("hat_s", {"embed_dim": 48, "depths": [2], "num_heads": [2], "compress_ratio": 24, "squeeze_factor": 24,
               "window_size": 16, "conv_scale": 0.01, "overlap_ratio": 0.5, "mlp_ratio": 2.0,
               "upsampler": "pixelshuffle", "img_size": 64, "upscale": 2, "num_feat": 8}),
    ("ipt", {**SMALL["ipt"], "scale": [2], "n_colors": 3, "mlp": True, "pos_every": False, "no_pos": False,
             "no_norm": False, "num_queries": 1, "conv": "default_conv"}),
])
def test_hand_written_old_config_loads_and_is_written_back_unchanged(variant, old_arch, tmp_path):
    torch.manual_seed(0)
    known = {k: v for k, v in old_arch.items() if k in {f.name for f in dataclasses.fields(ARCHES[
        get_variant(variant).family])}}
    model = RestorationModel(variant, tasks=["sr_x2"], arch=known).eval()
    old, again = tmp_path / "old", tmp_path / "again"
    model.save_pretrained(old)
    config = {"variant": variant, "tasks": ["sr_x2"], "arch": old_arch, "format_version": 1}
    (old / "config.json").write_text(json.dumps(config, indent=2))
    loaded = RestorationModel.from_pretrained(old).eval()
    assert loaded.arch == _json({**get_variant(variant).arch, **old_arch})  # the ignored keys are kept
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        assert torch.equal(loaded(x, "sr_x2"), model(x, "sr_x2"))
    loaded.save_pretrained(again)
    assert json.loads((again / "config.json").read_text())["arch"] == loaded.arch


# -------------------------------------------------------------------------------- padding computed once


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls to every family's pad_multiple / fixed_input_size (the real methods still answer)."""
    calls = []
    for name in ("edt", "swinir", "hat", "ipt"):
        cls = type(get_family(name))
        for method in ("pad_multiple", "fixed_input_size"):
            original = getattr(cls, method)

            def wrapper(self, *args, _original=original, _method=method):
                calls.append(_method)
                return _original(self, *args)

            monkeypatch.setattr(cls, method, wrapper)
    return calls


@pytest.mark.parametrize("variant, arch, tasks", [
    ("edt_tiny", {}, ["sr_x2", "denoise_g25"]),
    ("swinir_s", SMALL["swinir"], ["sr_x2", "denoise_g25"]),
    ("hat_s", SMALL["hat"], ["sr_x2"]),
    ("ipt", SMALL["ipt"], ["sr_x2", "denoise_g30"]),
])
def test_forward_never_asks_the_family_for_its_padding(variant, arch, tasks, counted):
    model = RestorationModel(variant, tasks=tasks, arch=arch).eval()
    assert "pad_multiple" in counted  # computed at construction, from the family
    counted.clear()
    with torch.no_grad():
        for size in [(7, 9), (16, 20), (25, 13)]:
            for task in tasks:
                model(torch.rand(1, 3, *size), task)
        model.forward_multi({t: torch.rand(2, 3, 12, 12) for t in tasks})
    assert counted == []


def test_add_task_and_keep_tasks_keep_the_padding_right():
    model = RestorationModel("edt_tiny", tasks=["sr_x2"]).eval()
    family, arch = get_family("edt"), model.arch
    model.add_task("denoise_g25")
    for task in ("sr_x2", "denoise_g25"):
        assert model.pad_multiple(task) == family.pad_multiple(arch, task)
    assert model.pad_multiple("denoise_g25") != model.pad_multiple("sr_x2")  # the denoise head downsamples
    with torch.no_grad():
        assert model(torch.rand(1, 3, 30, 17), "denoise_g25").shape == (1, 3, 30, 17)
    model.keep_tasks(["denoise_g25"])
    assert model.pad_multiple("denoise_g25") == family.pad_multiple(arch, "denoise_g25")
    with pytest.raises(ValueError, match="denoise_g25"):
        model.pad_multiple("sr_x2")  # a dropped task has no padding any more
    model.add_task("sr_x2")
    assert model.pad_multiple("sr_x2") == family.pad_multiple(arch, "sr_x2")


def test_fixed_input_size_is_stored_for_ipt_and_none_for_window_bodies():
    assert RestorationModel("ipt", tasks=["sr_x2"], arch=SMALL["ipt"]).fixed_input_size() == 12
    assert RestorationModel("swinir_s", tasks=["sr_x2"], arch=SMALL["swinir"]).fixed_input_size() is None


def test_official_empty_upsampler_serves_scale_one_tasks_only():
    arch = {**SMALL["swinir"], "upsampler": ""}  # the official setting of SwinIR denoising models
    model = RestorationModel("swinir_s", tasks=["denoise_g25"], arch=arch).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 9, 9), "denoise_g25").shape == (1, 3, 9, 9)
    with pytest.raises(ValueError, match="upsampler='' .*sr_x2.*'pixelshuffle'"):
        RestorationModel("swinir_s", tasks=["sr_x2"], arch=arch)


def test_add_task_that_the_architecture_refuses_leaves_the_model_as_it_was():
    from restore.model import RestorationModel

    model = RestorationModel("swinir_s", tasks=["denoise_g25"], arch={"upsampler": "", "depths": [2], "num_heads": [2],
                                                                      "embed_dim": 16})
    before = sorted(model.state_dict())
    with pytest.raises(ValueError, match="upsampler"):
        model.add_task("sr_x2")
    assert model.tasks == ["denoise_g25"] and sorted(model.state_dict()) == before
    assert "sr_x2" not in model._pad_multiples
