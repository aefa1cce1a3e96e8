"""The self-supervised ``masked`` task: its mask (ratio, patch grid, seed), its loss, its data, its heads at export."""

from __future__ import annotations

import io
import math
import tarfile

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pretrain.data import DataStream, masked_l1
from tasks import degradations as D
from tasks.registry import MASK_PATCH, MASK_RATIO, TaskKind, get_task, masked_task


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cells(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """The mask rebuilt from the top-left pixel of each patch-grid cell: equal to ``mask`` iff it follows the grid."""
    h, w = mask.shape[-2:]
    corners = mask[:, :, ::patch, ::patch]
    return corners.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)[:, :, :h, :w]


# ------------------------------------------------------------------------------------------------ the task


def test_masked_is_a_scale_1_task_with_rams_defaults():
    task = get_task("masked")
    assert task.kind is TaskKind.MASKED and task.scale == 1 and task.name == "masked"
    assert (task.mask_ratio, task.mask_patch) == (MASK_RATIO, MASK_PATCH) == (0.5, 1)
    assert masked_task(0.75, 8).name == "masked" and masked_task(0.75, 8).mask_patch == 8
    hr = torch.rand(2, 3, 24, 24, generator=_gen(0))
    lq, mask = task.degrade_with_mask(hr, _gen(1))
    assert torch.equal(task.degrade(hr, _gen(1)), lq) and mask.shape == (2, 1, 24, 24)
    assert get_task("sr_x2").degrade_with_mask(hr, _gen(1))[1] is None


@pytest.mark.parametrize("ratio, patch, match", [(0.0, 1, "in \\(0, 1\\)"), (1.0, 1, "in \\(0, 1\\)"),
                                                 (0.5, 0, "integer side"), (0.5, 2.0, "integer side")])
def test_bad_mask_options_are_refused_by_name(ratio, patch, match):
    with pytest.raises(ValueError, match=match):
        masked_task(ratio, patch)


def test_unknown_task_error_names_masked():
    with pytest.raises(ValueError, match="masked"):
        get_task("maskd")


# ------------------------------------------------------------------------------------------------ the mask


@pytest.mark.parametrize("ratio, patch, size", [(0.5, 1, 32), (0.3, 4, 32), (0.75, 8, 48)])
def test_each_image_hides_ceil_ratio_of_its_cells(ratio, patch, size):
    mask = D.random_mask(torch.zeros(6, 3, size, size), ratio, patch, _gen(0))
    cells = (size // patch) ** 2
    hidden = math.ceil(round(ratio * cells, 6))
    assert mask.shape == (6, 1, size, size) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask.mean(dim=(1, 2, 3)).tolist() == pytest.approx([hidden / cells] * 6, abs=1e-9)
    assert abs(hidden / cells - ratio) < 1 / cells


def test_every_pixel_is_hidden_with_probability_ratio():
    # 400 images: each pixel's hide frequency is 0.5 +- 0.025 (one sd); a fixed or biased choice would be far off
    freq = D.random_mask(torch.zeros(400, 3, 16, 16), 0.5, 1, _gen(3)).mean(dim=0)
    assert float((freq - 0.5).abs().max()) < 0.15
    per_image = D.random_mask(torch.zeros(2, 3, 16, 16), 0.5, 1, _gen(3))
    assert not torch.equal(per_image[0], per_image[1])  # each image draws its own mask


@pytest.mark.parametrize("h, w, patch", [(32, 40, 4), (30, 27, 4), (16, 16, 8)])
def test_patch_masks_follow_the_patch_grid(h, w, patch):
    mask = D.random_mask(torch.zeros(3, 3, h, w), 0.5, patch, _gen(1))
    assert mask.shape == (3, 1, h, w)
    assert torch.equal(mask, _cells(mask, patch))
    assert not torch.equal(mask, _cells(mask, 2 * patch))  # cells of the patch size, not larger blocks


def test_masks_are_deterministic_per_seed():
    hr = torch.rand(2, 3, 32, 32, generator=_gen(0))
    a, b, c = (D.random_mask(hr, 0.5, 2, _gen(s)) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_masked_pixels_are_zero_and_the_others_untouched():
    hr = torch.rand(2, 3, 20, 20, generator=_gen(0)) * 0.9 + 0.1  # no pixel is 0 before masking
    lq, mask = D.mask_images(hr, 0.4, 2, _gen(5))
    hidden = mask.bool().expand_as(hr)
    assert bool((lq[hidden] == 0).all()) and torch.equal(lq[~hidden], hr[~hidden])
    assert torch.equal(lq == 0, hidden)


# ------------------------------------------------------------------------------------------------ the loss


def test_masked_l1_is_l1_on_masked_pixels_only():
    g = _gen(0)
    out, gt = torch.rand(2, 3, 12, 12, generator=g), torch.rand(2, 3, 12, 12, generator=g)
    mask = D.random_mask(gt, 0.5, 1, _gen(1))
    hidden = mask.bool().expand_as(gt)
    assert torch.allclose(masked_l1(out, gt, mask), (out - gt).abs()[hidden].mean())
    moved = torch.where(hidden, out, out + 5.0)  # change only what the mask leaves visible
    assert torch.allclose(masked_l1(moved, gt, mask), masked_l1(out, gt, mask))
    assert not torch.allclose(masked_l1(torch.where(hidden, out + 0.5, out), gt, mask), masked_l1(out, gt, mask))
    assert torch.equal(masked_l1(out, gt, None), F.l1_loss(out, gt))
    leaf = out.clone().requires_grad_()
    masked_l1(leaf, gt, mask).backward()
    assert bool((leaf.grad[~hidden] == 0).all()) and bool((leaf.grad[hidden] != 0).all())


def test_masked_l1_refuses_a_mask_of_the_wrong_shape():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"mask \(B, 1, H, W\)"):
        masked_l1(x, x, torch.ones(2, 3, 8, 8))


# ------------------------------------------------------------------------------------------------ the data


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> str:
    """One webdataset shard of 8 random 40x40 PNGs (a masked task needs no labels: images are all it reads)."""
    path = tmp_path_factory.mktemp("masked") / "train-0000.tar"
    g = _gen(0)
    with tarfile.open(path, "w") as tar:
        for i in range(8):
            buf = io.BytesIO()
            pixels = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(buf, format="PNG")
            info = tarfile.TarInfo(f"{i:06d}.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    return str(path)


def _stream(shard: str, tasks=("sr_x2", "masked"), **kw) -> DataStream:
    args = dict(mode="edt", batch_size=2, lr_patch=8, dn_patch=16, seed=3, rank=0, world_size=1, num_workers=0)
    return DataStream([shard], tasks, **{**args, **kw})


def test_a_masked_batch_carries_its_mask_and_its_input_is_zero_exactly_there(shard):
    data = next(_stream(shard, mask_ratio=0.25, mask_patch=4))
    sr, masked = data.batches["sr_x2"], data.batches["masked"]
    assert sr.mask is None
    assert masked.mask.shape == (2, 1, 16, 16) and masked.lq.shape == masked.gt.shape == (2, 3, 16, 16)
    hidden = masked.mask.bool().expand_as(masked.gt)
    assert torch.equal(masked.lq == 0, hidden | (masked.gt == 0))
    assert torch.equal(masked.lq[~hidden], masked.gt[~hidden])
    assert masked.mask.mean().item() == pytest.approx(0.25)  # the stream's mask options reach the mask
    assert torch.equal(masked.mask, _cells(masked.mask, 4))


def test_stream_masks_are_a_function_of_seed_and_step(shard):
    a, b, c = _stream(shard), _stream(shard), _stream(shard, seed=4)
    first, again, other = [next(a) for _ in range(2)], [next(b) for _ in range(2)], next(c)
    assert all(torch.equal(x.batches["masked"].mask, y.batches["masked"].mask) for x, y in zip(first, again))
    assert not torch.equal(first[0].batches["masked"].mask, first[1].batches["masked"].mask)  # a new step
    assert not torch.equal(first[0].batches["masked"].mask, other.batches["masked"].mask)  # a new seed


def test_ipt_mode_serves_masked_steps_with_their_mask(shard):
    stream = _stream(shard, mode="ipt")
    steps = [next(stream) for _ in range(8)]
    masked = [d.batches["masked"] for d in steps if "masked" in d.batches]
    assert masked and all(b.mask is not None for b in masked)


def test_finetune_pair_stream_fills_the_mask_too(tmp_path):
    from finetune.data import Pair, PairStream

    g = _gen(0)
    for i in range(3):
        pixels = (torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    pairs = {"masked": [Pair(gt=str(p)) for p in sorted(tmp_path.glob("*.png"))]}
    batch = next(PairStream(pairs, batch_size=2, lr_patch=8, dn_patch=16, seed=0, cache_mb=64)).batches["masked"]
    hidden = batch.mask.bool().expand_as(batch.lq)
    assert batch.mask.shape == (2, 1, 16, 16) and bool(hidden.any()) and bool((batch.lq[hidden] == 0).all())
    assert torch.equal(batch.lq[~hidden], batch.gt[~hidden])


# ------------------------------------------------------------------------------------------------ the models


def test_a_model_with_sr_and_masked_runs_edt_and_ipt_modes():
    from restore.model import RestorationModel

    model = RestorationModel("edt_tiny", tasks=["sr_x2", "masked"])
    assert model.scale("masked") == 1
    lq = {"sr_x2": torch.rand(2, 3, 8, 8, generator=_gen(0)), "masked": torch.rand(2, 3, 16, 16, generator=_gen(1))}
    out = model.forward_multi(lq)  # EDT mode: both tasks through one body pass
    assert out["sr_x2"].shape == (2, 3, 16, 16) and out["masked"].shape == (2, 3, 16, 16)
    for task, x in lq.items():  # IPT mode: one task per step
        assert model(x, task).shape == out[task].shape
    gt = torch.rand(2, 3, 16, 16, generator=_gen(2))
    masked_l1(out["masked"], gt, D.random_mask(gt, 0.5, 1, _gen(3))).backward()
    assert next(model.heads["masked"].parameters()).grad is not None


def test_the_ipt_family_serves_masked_like_a_restoration_task():
    from restore.model import RestorationModel

    small = dict(patch_size=12, patch_dim=3, n_feats=8, num_heads=2, num_layers=2)
    model = RestorationModel("ipt", tasks=["sr_x2", "masked"], arch=small).eval()
    with torch.no_grad():
        out = model.forward_multi({"sr_x2": torch.rand(1, 3, 12, 12), "masked": torch.rand(1, 3, 12, 12)})
        assert out["sr_x2"].shape == (1, 3, 24, 24) and out["masked"].shape == (1, 3, 12, 12)
        assert model(torch.rand(1, 3, 12, 12), "masked").shape == (1, 3, 12, 12)


def test_fine_tuning_drops_the_masked_head_and_tail(tmp_path):
    from finetune.init import InitResult, fit_tasks
    from restore.model import RestorationModel

    pretrained = RestorationModel("edt_tiny", tasks=["sr_x2", "denoise_g25", "masked"])
    result = fit_tasks(InitResult(pretrained, "folder", "pretrained"), ["sr_x2", "denoise_g25"])
    assert result.dropped_tasks == ["masked"] and result.model.tasks == ["sr_x2", "denoise_g25"]
    assert not [k for k in result.model.state_dict() if "masked" in k]
    result.model.save_pretrained(tmp_path / "export")
    reloaded = RestorationModel.from_pretrained(str(tmp_path / "export"))
    assert reloaded.tasks == ["sr_x2", "denoise_g25"] and not [k for k in reloaded.state_dict() if "masked" in k]
