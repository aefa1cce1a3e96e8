"""One training path: ``step-N`` checkpoints that carry their model, one loader for every checkpoint kind, the
resume check against the checkpoint's own config, validation before the first step, and fine-tuning's mode.

The engines are real one-process gloo DeepSpeed engines on the tiny EDT (the fixtures of `test_gpu_paths`).
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from pretrain.checkpoint import save_checkpoint
from tasks.errors import InputError
from tests.pretrain.test_gpu_paths import (  # noqa: F401 - fixtures
    Synthetic, bf16_trainer, fp32_trainer, gloo, tiny_recipe,
)


def _save(trainer, run_dir, step=2):
    return save_checkpoint(trainer, run_dir / "checkpoints", step, rank=0, data_state={"step": step},
                           recipe=trainer.recipe.to_dict(), info={}, keep_last=0)


def _assert_state_equal(model, state):
    own = model.state_dict()
    assert sorted(own) == sorted(state)
    for k, v in state.items():
        assert torch.equal(own[k].float(), v.float()), k


def test_step_checkpoint_loads_as_a_model_folder(fp32_trainer, tmp_path):
    from restore.model import RestorationModel

    trainer = fp32_trainer
    trainer.step([next(Synthetic({"sr_x2": 8, "denoise_g25": 16}))])
    path = _save(trainer, tmp_path)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    live = {k: v.detach().float() for k, v in trainer.module.state_dict().items()}
    for where in (path, tmp_path):  # the step-N folder, and the run folder (its latest complete checkpoint)
        model = RestorationModel.from_pretrained(str(where))
        assert model.config_dict() == trainer.module.config_dict()
        _assert_state_equal(model, live)
    _assert_state_equal(RestorationModel.from_pretrained(str(path), ema=True), trainer.ema.shadow)

    exported = tmp_path / "exported"
    model.save_pretrained(exported)
    with pytest.raises(InputError, match="not a training run or step-N folder"):
        RestorationModel.from_pretrained(str(exported), ema=True)
    (path / "COMPLETE").unlink()
    with pytest.raises(InputError, match="COMPLETE marker"):
        RestorationModel.from_pretrained(str(path))


def test_bf16_checkpoint_holds_the_fp32_master_weights(bf16_trainer, tmp_path):
    from pretrain.engine import fp32_master_weights

    trainer = bf16_trainer
    trainer.step([next(Synthetic({"sr_x2": 8, "denoise_g25": 16}))])
    path = _save(trainer, tmp_path)
    saved = load_file(str(path / "model.safetensors"))
    masters = fp32_master_weights(trainer.module)
    assert masters, "a bf16 engine keeps fp32 masters"
    assert all(saved[k].dtype == torch.float32 for k in saved)
    assert all(torch.equal(saved[k], masters[k].cpu()) for k in masters)
    # the module's own bf16 copies are rounded: the file is not them (the export keeps fp32 precision)
    rounded = {k: v.float() for k, v in trainer.module.state_dict().items()}
    assert any(not torch.equal(saved[k], rounded[k]) for k in masters)


def test_legacy_checkpoint_without_config_is_rebuilt_from_its_recipe(fp32_trainer, tmp_path):
    from pretrain.export import checkpoint_model
    from restore.model import RestorationModel

    path = _save(fp32_trainer, tmp_path / "new")
    legacy = tmp_path / "old" / "checkpoints" / path.name
    shutil.copytree(path, legacy)
    (legacy / "config.json").unlink()
    (legacy / "model.safetensors").unlink()
    with pytest.raises(InputError, match="pretrain export"):
        RestorationModel.from_pretrained(str(legacy))
    new, old = checkpoint_model(path), checkpoint_model(legacy)
    assert new.config_dict() == old.config_dict()
    _assert_state_equal(old, new.state_dict())
    _assert_state_equal(checkpoint_model(legacy, ema=True), checkpoint_model(path, ema=True).state_dict())


def test_resume_is_checked_against_the_checkpoints_own_model(fp32_trainer, tmp_path):
    from pretrain.train import check_resume_fits
    from restore.model import RestorationModel

    path = _save(fp32_trainer, tmp_path)
    check_resume_fits(path, fp32_trainer.module)
    other = RestorationModel(fp32_trainer.module.variant, tasks=["sr_x2"], arch=fp32_trainer.module.arch)
    with pytest.raises(ValueError, match="cannot resume .* tasks="):
        check_resume_fits(path, other)


def test_validate_first_scores_a_fresh_run_before_its_first_step_only(fp32_trainer, tmp_path):
    from dataclasses import replace

    from pretrain.loop import train_loop

    trainer = fp32_trainer
    trainer.recipe = replace(trainer.recipe, val_every=100)
    seen = []

    def on_validate(step, model):
        seen.append((step, model.training, torch.backends.cudnn.benchmark))
        return {"score": float(step)}

    # as the Trainer sets it on CUDA for the fixed training shapes; validation's many image sizes run untuned
    autotune, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    try:
        fresh = train_loop(trainer, Synthetic({"sr_x2": 8, "denoise_g25": 16}), run_dir=tmp_path / "a", rank=0,
                           world_size=1, on_validate=on_validate, validate_first=True, stop_after=1)
        resumed = train_loop(trainer, Synthetic({"sr_x2": 8, "denoise_g25": 16}), run_dir=tmp_path / "b", rank=0,
                             world_size=1, start_step=1, on_validate=on_validate, validate_first=True, stop_after=1)
        assert torch.backends.cudnn.benchmark, "validation put the training's autotuning back"
    finally:
        trainer.recipe = replace(trainer.recipe, val_every=0)
        torch.backends.cudnn.benchmark = autotune
    # step 0 of the fresh run, then each run's last step: the model in eval mode, cuDNN autotuning off
    assert seen == [(0, False, False), (1, False, False), (2, False, False)]
    assert [v["step"] for v in fresh.validation] == [0, 1] and [v["step"] for v in resumed.validation] == [2]


def test_finetune_stream_follows_the_recipe_mode(tmp_path):
    from PIL import Image

    from finetune.data import PairStream, scan_training_data

    folder = tmp_path / "train"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        arr = (torch.rand(40, 40, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    data = scan_training_data([str(folder)], ["sr_x2", "denoise_g25"], lr_patch=8, dn_patch=16)
    kw = dict(batch_size=1, lr_patch=8, dn_patch=16, seed=0)
    edt = [sorted(next(PairStream(data.pairs, **kw, mode="edt", state={"step": s})).batches) for s in range(6)]
    ipt = [sorted(next(PairStream(data.pairs, **kw, mode="ipt", state={"step": s})).batches) for s in range(6)]
    assert all(tasks == ["denoise_g25", "sr_x2"] for tasks in edt)
    assert all(len(tasks) == 1 for tasks in ipt) and {t[0] for t in ipt} == {"sr_x2", "denoise_g25"}
