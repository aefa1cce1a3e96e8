"""Fine-tuning data: layouts, pair checks before training, crops in register, a resumable deterministic stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.data import DataError, PairStream, scan_training_data
from tests.finetune.helpers import BENCHMARKS, CORPUS, need


def _set5_copy(tmp_path: Path) -> Path:
    """A Set5-layout folder (HR/ + LR_bicubic/X2/) of symlinks, free to break."""
    src = need(BENCHMARKS / "Set5")
    root = tmp_path / "set5"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X2").mkdir(parents=True)
    for p in sorted((src / "HR").glob("*.png")):
        (root / "HR" / p.name).symlink_to(p)
    for p in sorted((src / "LR_bicubic" / "X2").glob("*.png")):
        (root / "LR_bicubic" / "X2" / p.name).symlink_to(p)
    return root


def test_benchmark_layout_pairs_and_crops_in_register(tmp_path):
    import tasks

    root = _set5_copy(tmp_path)
    data = scan_training_data([str(root)], ["sr_x2"], lr_patch=24, dn_patch=32)
    pairs = data.pairs["sr_x2"]
    assert len(pairs) == 5 and all(p.lq and p.lq.endswith(Path(p.gt).stem + "x2.png") for p in pairs)
    stream = PairStream(data.pairs, batch_size=3, lr_patch=24, dn_patch=32, seed=1)
    for _ in range(2):
        b = next(stream).batches["sr_x2"]
        assert b.lq.shape == (3, 3, 24, 24) and b.gt.shape == (3, 3, 48, 48)
        # the stored LR patch is the bicubic downscale of the HR patch (up to the patch border)
        down = tasks.imresize(b.gt, 0.5)
        score = tasks.psnr(down[..., 3:-3, 3:-3].clamp(0, 1), b.lq[..., 3:-3, 3:-3], crop_border=0, y_channel=True)
        assert float(score.min()) > 38, f"LQ and GT crops are out of register: {score.tolist()}"


def test_other_tasks_degrade_the_hr_images_of_a_paired_folder(tmp_path):
    root = _set5_copy(tmp_path)
    data = scan_training_data([str(root)], ["sr_x2", "sr_x3", "denoise_g25"], lr_patch=16, dn_patch=32)
    assert all(p.lq is None for p in data.pairs["sr_x3"] + data.pairs["denoise_g25"])
    step = next(PairStream(data.pairs, batch_size=2, lr_patch=16, dn_patch=32, seed=0))
    assert step.batches["sr_x3"].lq.shape == (2, 3, 16, 16) and step.batches["sr_x3"].gt.shape == (2, 3, 48, 48)
    assert step.batches["denoise_g25"].lq.shape == step.batches["denoise_g25"].gt.shape == (2, 3, 32, 32)


def test_unpaired_and_missized_files_are_all_named(tmp_path):
    root = _set5_copy(tmp_path)
    lr = root / "LR_bicubic" / "X2"
    (lr / "birdx2.png").rename(lr / "sparrowx2.png")  # bird loses its partner; sparrow has no HR
    (lr / "headx2.png").unlink()
    (lr / "headx2.png").symlink_to(BENCHMARKS / "Set5" / "LR_bicubic" / "X2" / "womanx2.png")  # wrong size
    with pytest.raises(DataError) as err:
        scan_training_data([str(root)], ["sr_x2"], lr_patch=16, dn_patch=32)
    msg = str(err.value)
    assert "HR/bird.png has no LR partner" in msg
    assert "sparrowx2.png has no HR partner" in msg
    assert "headx2.png is 114x172" in msg and "must be 140x140" in msg
    assert "butterfly" not in msg and "baby" not in msg


def test_rain_pairs_are_checked(tmp_path):
    src = need(BENCHMARKS / "Rain100H")
    root = tmp_path / "rain"
    for sub in ("rainy", "norain"):
        (root / sub).mkdir(parents=True)
        for name in ("1.png", "2.png", "3.png"):
            (root / sub / name).symlink_to(src / sub / name)
    data = scan_training_data([str(root)], ["derain"], lr_patch=16, dn_patch=32)
    assert [Path(p.lq).parent.name for p in data.pairs["derain"]] == ["rainy"] * 3
    (root / "rainy" / "3.png").unlink()
    (root / "rainy" / "3.png").symlink_to(src / "rainy" / "10.png")  # 320x480 next to a 480x320 norain image
    (root / "norain" / "2.png").unlink()
    with pytest.raises(DataError) as err:
        scan_training_data([str(root)], ["derain"], lr_patch=16, dn_patch=32)
    assert "rainy/2.png has no partner norain/2.png" in str(err.value)
    assert "rainy/3.png is 320x480 but norain/3.png is 480x320" in str(err.value)


def test_missing_folder_and_small_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_training_data([str(tmp_path / "nope")], ["sr_x2"], lr_patch=16, dn_patch=32)
    from PIL import Image

    (tmp_path / "small").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "small" / "a.png")
    with pytest.raises(DataError, match="at least 32 px"):
        scan_training_data([str(tmp_path / "small")], ["sr_x2"], lr_patch=16, dn_patch=32)


def test_stream_is_deterministic_and_resumes_exactly():
    corpus = need(CORPUS)
    data = scan_training_data([str(corpus)], ["sr_x2"], lr_patch=8, dn_patch=16)
    assert len(data.pairs["sr_x2"]) == len(list(corpus.glob("*.JPEG")))
    kw = dict(batch_size=2, lr_patch=8, dn_patch=16, seed=3)
    first = PairStream(data.pairs, **kw)
    steps = [next(first) for _ in range(4)]
    resumed = PairStream(data.pairs, **kw, state={"step": 2})
    again = [next(resumed) for _ in range(2)]
    assert first.state_dict() == resumed.state_dict() == {"step": 4}
    for a, b in zip(steps[2:], again):
        assert a.keys == b.keys and torch.equal(a.batches["sr_x2"].gt, b.batches["sr_x2"].gt)
        assert torch.equal(a.batches["sr_x2"].lq, b.batches["sr_x2"].lq)
    other = PairStream(data.pairs, **{**kw, "seed": 4})
    assert next(other).keys != steps[0].keys


def test_workers_serve_the_same_stream():
    data = scan_training_data([str(need(CORPUS))], ["sr_x2"], lr_patch=8, dn_patch=16)
    kw = dict(batch_size=2, lr_patch=8, dn_patch=16, seed=0)
    plain = [next(s) for s in [PairStream(data.pairs, **kw)] for _ in range(3)]
    stream = PairStream(data.pairs, **kw, num_workers=2)
    pooled = [next(stream) for _ in range(3)]
    for a, b in zip(plain, pooled):
        assert a.keys == b.keys and torch.equal(a.batches["sr_x2"].gt, b.batches["sr_x2"].gt)


def test_shards_go_through_pretrains_stream(tmp_path):
    from PIL import Image

    from finetune.data import build_stream
    from pretrain.data import DataStream
    from pretrain.shards import build_shards

    (tmp_path / "img").mkdir()
    for f in sorted(need(CORPUS).glob("*.JPEG"))[:4]:
        with Image.open(f) as im:
            im.convert("RGB").resize((48, 48)).save(tmp_path / "img" / f"{f.stem}.png")
    urls = build_shards(tmp_path / "img", str(tmp_path / "sh" / "train-%04d.tar"), maxcount=2, workers=1,
                        progress=False).urls
    kw = dict(batch_size=2, lr_patch=8, dn_patch=16, seed=0, rank=0, world_size=1, num_workers=0)
    stream = build_stream([urls], ["sr_x2", "denoise_g25"], **kw)
    assert isinstance(stream, DataStream)
    step = next(stream)
    assert step.batches["sr_x2"].gt.shape == (2, 3, 16, 16) and step.batches["denoise_g25"].lq.shape == (2, 3, 16, 16)
    with pytest.raises(DataError, match="mixes shards"):
        build_stream([urls, str(tmp_path / "img")], ["sr_x2"], **kw)
