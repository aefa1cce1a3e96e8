"""The masked task in the training path: its loss counts the hidden pixels only, the recipe carries the mask
options, and ``pretrain export`` drops its head and tail unless asked to keep them.

A real one-process gloo DeepSpeed engine on the tiny EDT (the fixtures of `test_gpu_paths`).
"""

from __future__ import annotations

import pytest
import torch

from pretrain.data import Batch, StepData, masked_l1
from tasks.registry import get_task
from tests.pretrain.test_gpu_paths import gloo, make_trainer, tiny_recipe  # noqa: F401 - fixtures

TASKS = ("sr_x2", "masked")


@pytest.fixture(scope="module")
def masked_trainer(gloo):  # noqa: F811 - the imported fixture
    return make_trainer(tiny_recipe(tasks=TASKS, ema=0.0, mask_ratio=0.25, mask_patch=2))


def _step_data(recipe) -> StepData:
    g = torch.Generator().manual_seed(0)
    sr = Batch(torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 16, 16, generator=g), "sr_x2")
    hr = torch.rand(2, 3, 16, 16, generator=g)
    from tasks.registry import masked_task

    lq, mask = masked_task(recipe.mask_ratio, recipe.mask_patch).degrade_with_mask(hr, g)
    return StepData(0, {"sr_x2": sr, "masked": Batch(lq, hr, "masked", mask=mask)})


def test_the_masked_loss_counts_only_the_hidden_pixels(masked_trainer):
    trainer = masked_trainer
    data = _step_data(trainer.recipe)
    assert 0 < float(data.batches["masked"].mask.mean()) < 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        _total, per_task = trainer.losses(data)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)  # the same DropPath draws: the same outputs
        out = trainer.engine({t: b.lq for t, b in data.batches.items()})
    b = data.batches["masked"]
    expected = masked_l1(out["masked"].float(), b.gt, b.mask)
    plain = torch.nn.functional.l1_loss(out["masked"].float(), b.gt)
    assert torch.allclose(per_task["masked"].detach(), expected, atol=1e-6)
    assert not torch.allclose(expected, plain, atol=1e-4)  # the mask changes the number: it is really used
    assert torch.allclose(per_task["sr_x2"].detach(), torch.nn.functional.l1_loss(out["sr_x2"].float(),
                                                                                  data.batches["sr_x2"].gt), atol=1e-6)


def test_recipe_mask_options_are_checked():
    from pretrain.recipes import get_recipe

    assert get_recipe("smoke", ["mask_ratio=0.75", "mask_patch=8"]).mask_patch == 8
    for bad in (["mask_ratio=1.5"], ["mask_patch=0"]):
        with pytest.raises(ValueError, match="mask"):
            get_recipe("smoke", bad)


def test_export_drops_the_masked_head_unless_kept(masked_trainer, tmp_path):
    from pretrain.checkpoint import save_checkpoint
    from pretrain.export import export_checkpoint
    from restore.model import RestorationModel

    trainer = masked_trainer
    save_checkpoint(trainer, tmp_path / "run" / "checkpoints", 1, rank=0, data_state={"step": 1},
                    recipe=trainer.recipe.to_dict(), info={}, keep_last=0)
    dropped = RestorationModel.from_pretrained(str(export_checkpoint(tmp_path / "run", tmp_path / "a")))
    kept = RestorationModel.from_pretrained(str(export_checkpoint(tmp_path / "run", tmp_path / "b",
                                                                  keep_masked=True)))
    assert dropped.tasks == ["sr_x2"] and sorted(kept.tasks) == sorted(TASKS)
    assert get_task("masked").kind.value == "masked"
