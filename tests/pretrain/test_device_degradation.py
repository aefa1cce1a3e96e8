"""Degradation on the training device (issue 17, item 1): the workers decode, crop and augment only, and the trainer
degrades the batch inside the step (`pretrain.degrade.degrade_pending`), still a function of (seed, step, rank).

On a CPU device the batches are bit-identical to the worker-side ones, so a run trains to the same weights either
way, and a resumed run equals the uninterrupted one. The CUDA case (another generator, same distributions) is
checked where a GPU exists (`tests/benchmarks/gpu.sh` runs this file).
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pretrain.data import (ShardStream, expand_urls, worker_roles, degrade_on_device, degrade_pending, exact_kernels,
                           stream_tasks)
from pretrain.degrade import task_seed
from restore.model import ARBITRARY_SCALE_TASK
from tasks.registry import COMMON_TASKS
from tests.pretrain.helpers import TINY_OVERRIDES, paired_folder
from tests.pretrain.test_gpu_paths import gloo  # noqa: F401 - fixture

imresize_module = importlib.import_module("tasks.imresize")  # `tasks.imresize` is the function
# every kind of degradation: fixed-scale SR, arbitrary scale, noise, rain, masking, a blind pipeline
TASKS = ("sr_x2", "sr_any", "denoise_g25", "derain", "masked", "realsr_x2")
FIELDS = ("lq", "gt", "mask", "coord", "cell")


def _stream(urls, degrade: bool, tasks: tuple[str, ...] = TASKS, **kw) -> ShardStream:
    args = dict(mode="edt", batch_size=2, lr_patch=8, dn_patch=16, seed=3, rank=1, world_size=2) | kw
    return ShardStream(expand_urls(urls) if isinstance(urls, str) else urls, tasks, degrade=degrade, **args)


def _assert_batches_equal(a, b) -> None:
    assert a.step == b.step and a.keys == b.keys and list(a.batches) == list(b.batches)
    for task in a.batches:
        for name in FIELDS:
            x, y = getattr(a.batches[task], name), getattr(b.batches[task], name)
            assert (x is None) == (y is None), (task, name)
            if x is not None:
                assert x.shape == y.shape and torch.equal(x, y), (task, name)


def test_pending_batches_hold_only_the_augmented_crops(shard_set):
    pending = next(iter(_stream(shard_set[0], degrade=False)))
    assert pending.degrade_seed is not None
    for task, b in pending.batches.items():
        assert b.lq is None and b.mask is None and b.coord is None, task
        side = 32 if task == "sr_any" else 16  # sr_any crops lr_patch * 4, the top of its scale range
        assert b.gt.shape == (2, 3, side, side), task
    done = next(iter(_stream(shard_set[0], degrade=True)))
    assert done.degrade_seed is None and all(b.lq is not None for b in done.batches.values())
    assert degrade_pending(done, {}, 8, "cpu") is done  # nothing pending: the batch passes through untouched


def test_device_degradation_equals_the_workers(shard_set):
    """Same (seed, step, rank): the trainer's degradation on a CPU device gives the workers' batches bit for bit,
    for every kind of degradation, at several steps (and with the crops untouched by where the degradation runs)."""
    workers, device = iter(_stream(shard_set[0], degrade=True)), iter(_stream(shard_set[0], degrade=False))
    tasks = stream_tasks(TASKS)
    for _ in range(3):
        w, raw = next(workers), next(device)
        for task in TASKS:  # the crops do not depend on where the degradation runs
            want = w.batches[task].gt if task != "sr_any" else None
            if want is not None:
                assert torch.equal(raw.batches[task].gt, want), task
        _assert_batches_equal(w, degrade_pending(raw, tasks, 8, torch.device("cpu")))


def test_split_degradation_equals_the_workers(shard_set):
    """The workers degrade some tasks (the blind ones, under ``auto`` on CUDA) and the trainer the rest: each task
    draws from its own generator (`task_seed`), so the split gives the all-in-the-workers batches bit for bit."""
    here = ("derain", "realsr_x2")
    workers, split = iter(_stream(shard_set[0], degrade=True)), iter(_stream(shard_set[0], degrade=here))
    tasks = stream_tasks(TASKS)
    for _ in range(2):
        w, part = next(workers), next(split)
        assert part.degrade_seed is not None
        assert {t for t, b in part.batches.items() if b.lq is not None} == set(here)
        _assert_batches_equal(w, degrade_pending(part, tasks, 8, "cpu"))
    assert len({task_seed(part.degrade_seed, t) for t in TASKS}) == len(TASKS)  # and the tasks draw apart


def test_auto_keeps_the_blind_pipelines_in_the_workers_on_cuda(monkeypatch):
    """``degrade_on=auto`` on CUDA: the blind pipelines (per-image draws read back from the GPU, a libjpeg round
    trip) would stall the step there, so the workers degrade them beside it and the GPU the others; a CPU run keeps
    everything in the workers, ``device`` forces all onto the GPU, and decoding there takes every task along."""
    tasks = ("sr_x2", "realsr_x4", "masked", "bsrgan_x4")
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_roles("auto", "workers", tasks) == {"degrade": True, "decode": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert worker_roles("auto", "workers", tasks) == {"degrade": ("realsr_x4", "bsrgan_x4"), "decode": True}
    assert worker_roles("auto", "workers", ("sr_x2", "masked")) == {"degrade": False, "decode": True}
    assert worker_roles("device", "workers", tasks) == {"degrade": False, "decode": True}
    assert worker_roles("workers", "workers", tasks) == {"degrade": True, "decode": True}
    assert worker_roles("auto", "device", tasks) == {"degrade": False, "decode": False}


# ops whose CUDA kernels give another result from run to run (torch's `use_deterministic_algorithms` list): sums
# into a float tensor through atomics (their order varies), and writes where duplicate indices race. A degradation
# made of them would not replay after a resume (and `torch.equal` of two GPU draws would fail); the CPU kernels add
# and write in order and hide it
_FLOAT_ATOMICS = {"scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_", "index_add", "index_add_",
                  "index_reduce", "index_reduce_", "bincount", "histc", "embedding_dense_backward", "cumsum",
                  "cumsum_"}
_ACCUMULATE = {"index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put", "put", "put_"}
_RACES = {"scatter", "scatter_", "index_copy", "index_copy_"}  # when two indices hit one element, any dtype


def _races(name: str, args: tuple) -> bool:
    """Whether a `_RACES` op writes one element twice (its result then depends on which write lands last)."""
    target, dim, index = args[0], args[1], args[2]
    if name.startswith("index_copy"):
        return index.unique().numel() < index.numel()
    ones = torch.ones_like(index, dtype=torch.int32)
    hits = torch.zeros(target.shape, dtype=torch.int32).scatter_add_(dim, index, ones)
    return int(hits.max()) > 1


class _NondeterministicOnCuda(TorchDispatchMode):
    """Records every op of `_RACES` that writes an element twice, and of `_FLOAT_ATOMICS` and accumulating
    ``index_put``/``put`` that write a float tensor."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        accumulate = kwargs.get("accumulate", next((a for a in args[2:] if isinstance(a, bool)), False))
        result = out[0] if isinstance(out, (tuple, list)) else out
        floating = isinstance(result, torch.Tensor) and result.dtype.is_floating_point
        if (name in _RACES and _races(name, args)) or (
                floating and (name in _FLOAT_ATOMICS or (name in _ACCUMULATE and accumulate))):
            self.seen.add(name)
        return out


@pytest.mark.parametrize("scipy", [True, False], ids=["cpu-imresize", "gpu-imresize"])
def test_degradations_use_nothing_nondeterministic_on_cuda(shard_set, monkeypatch, scipy):
    """Every task's degradation, run where a CPU test can watch its ops, uses no op whose CUDA kernel varies from
    run to run (float atomics, racing writes): ``degrade_on=device`` (the CUDA default) must give the same batch
    twice. Rain scatters its streaks in fixed point for this reason. ``imresize`` is watched on both of its paths:
    scipy's sparse product (CPU) and the torch ops a GPU runs. The watch itself is checked on a float
    ``scatter_add_``."""
    if not scipy:
        monkeypatch.setattr(imresize_module, "_scipy_csr_matrix", lambda: None)
    names = COMMON_TASKS + (ARBITRARY_SCALE_TASK, "masked")
    raw = next(iter(_stream(shard_set[0], degrade=False, tasks=names, lr_patch=4)))  # sr_x8: 32 px crops
    tasks = stream_tasks(names)
    with _NondeterministicOnCuda() as watch:
        for step in range(3):  # several draws: the blind pipelines' random branches
            degraded = degrade_pending(dataclasses.replace(raw, degrade_seed=raw.degrade_seed + step), tasks, 4,
                                       "cpu")
    assert all(b.lq is not None for b in degraded.batches.values()) and set(degraded.batches) == set(names)
    assert not watch.seen, f"nondeterministic on CUDA: {sorted(watch.seen)}"
    with _NondeterministicOnCuda() as watch:
        torch.zeros(4).scatter_add_(0, torch.tensor([0, 0, 1]), torch.ones(3))
        torch.zeros(4, dtype=torch.int32).scatter_add_(0, torch.tensor([0, 0]), torch.ones(2, dtype=torch.int32))
        torch.arange(4.0).cumsum(0)
        torch.zeros(2, 3).scatter_(1, torch.tensor([[0, 2], [1, 0]]), 1.0)  # distinct targets: deterministic
    assert watch.seen == {"scatter_add_", "cumsum"}
    with _NondeterministicOnCuda() as watch:
        torch.zeros(2, 3).scatter_(1, torch.tensor([[0, 0], [1, 2]]), 1.0)
    assert watch.seen == {"scatter_"}


def _kernel_settings() -> tuple:
    cudnn = torch.backends.cudnn
    return (cudnn.enabled, cudnn.benchmark, cudnn.benchmark_limit, cudnn.deterministic, cudnn.fp32_precision,
            cudnn.conv.fp32_precision, getattr(cudnn, "depthwise_kernel", None),  # torch >= 2.12
            torch.backends.cuda.matmul.fp32_precision,
            torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision,
            cudnn.rnn.fp32_precision)


def test_degradation_runs_on_exact_kernels(shard_set, monkeypatch):
    """Inside `degrade_pending` cuDNN neither autotunes nor uses TF32 or nondeterministic algorithms, and matmuls
    and convolutions are full fp32 (cuBLAS and oneDNN), whatever the trainer set for its model (it sets
    ``cudnn.benchmark`` on CUDA; TF32 here through torch's fp32_precision knobs); afterwards every setting is back."""
    raw, tasks = next(iter(_stream(shard_set[0], degrade=False))), stream_tasks(TASKS)
    seen = []
    task = tasks["denoise_g25"]
    degrade = task.degrade_with_mask

    def watched(hr, generator=None):
        seen.append(_kernel_settings())
        return degrade(hr, generator=generator)

    object.__setattr__(task, "degrade_with_mask", watched)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    knobs = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.mkldnn.matmul)
    trainer_set, saved = _kernel_settings(), [knob.fp32_precision for knob in knobs]
    try:
        for knob, value in zip(knobs, ("tf32", "tf32", "bf16")):
            knob.fp32_precision = value
        before = _kernel_settings()
        degrade_pending(raw, tasks, 8, "cpu")
        after = _kernel_settings()
    finally:
        for knob, value in zip(knobs, saved):
            knob.fp32_precision = value
    assert after == before
    # cuDNN on/off, its benchmark limit and depthwise kernel as the trainer set them; the rest exact
    assert seen == [(before[0], False, before[2], True, "ieee", "ieee", before[6], "ieee", "ieee", "ieee", "ieee")]
    with exact_kernels():  # usable on its own, and it restores on the way out
        assert not torch.backends.cudnn.benchmark
    assert _kernel_settings() == trainer_set


@pytest.mark.parametrize("trainer_sets", ["conv through the new API", "the legacy flag"])
def test_degradation_takes_tf32_set_either_way(shard_set, trainer_sets):
    """A trainer that turned TF32 off for cuDNN's convolutions alone, as PyTorch now recommends
    (``torch.backends.cudnn.conv.fp32_precision = "ieee"``), or through the legacy ``allow_tf32``: the degradation
    still runs on exact kernels (``cudnn.flags()``, which reads the legacy flag, raised "a mix of the legacy and new
    APIs" for the first, so every batch of a CUDA run failed) and the trainer's settings come back."""
    raw, tasks = next(iter(_stream(shard_set[0], degrade=False))), stream_tasks(TASKS)
    cudnn = torch.backends.cudnn
    knobs = (cudnn, cudnn.conv, cudnn.rnn)
    saved, legacy = [k.fp32_precision for k in knobs], cudnn.allow_tf32
    try:
        if trainer_sets == "the legacy flag":
            cudnn.allow_tf32 = False
        else:
            cudnn.conv.fp32_precision = "ieee"
        before = _kernel_settings()
        degrade_pending(raw, tasks, 8, "cpu")
        assert _kernel_settings() == before
    finally:
        # the legacy setter leaves state of its own that only it resets (the new knobs put back over it make the
        # legacy getter, which torch.export calls, raise for the rest of the session)
        cudnn.allow_tf32 = legacy
        for k, value in zip(knobs, saved):
            k.fp32_precision = value
    assert cudnn.allow_tf32 == legacy  # readable again


def test_degradation_ignores_the_callers_autocast(shard_set):
    """Called under bf16 autocast (a training step's), the degradation still computes in fp32: the same batches as
    without it (a bf16 matmul in ``imresize`` moved the LR by whole levels)."""
    raw, tasks = next(iter(_stream(shard_set[0], degrade=False))), stream_tasks(TASKS)
    want = degrade_pending(raw, tasks, 8, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = degrade_pending(raw, tasks, 8, "cpu")
    _assert_batches_equal(want, got)


def test_device_decoding_equals_the_workers(shard_set):
    """``decode_on=device``: the workers pass RGB JPEGs on undecoded with their drawn crop and flips, decode the
    other files (grayscale, CMYK, PNG) themselves; decoded and degraded on a CPU device, the batches are the
    workers' bit for bit."""
    workers, device = iter(_stream(shard_set[0], degrade=True)), iter(_stream(shard_set[0], False, decode=False))
    tasks, kinds = stream_tasks(TASKS), set()
    for _ in range(8):
        w, raw = next(workers), next(device)
        for b in raw.batches.values():
            assert b.gt is None and b.lq is None and len(b.crops) == 2
            kinds |= {type(c).__name__ for c in b.crops}
        assert raw.images == w.images
        _assert_batches_equal(w, degrade_pending(raw, tasks, 8, "cpu"))
    assert kinds == {"PendingCrop", "Tensor"}  # both kinds of file met: JPEGs for the device, the rest decoded
    with pytest.raises(ValueError, match="degrade=False"):
        _stream(shard_set[0], degrade=True, decode=False)


def _tar(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_a_jpeg_only_the_device_finds_corrupt_is_replaced_not_fatal(tmp_path, caplog):
    """A JPEG with a good header and broken data passes the worker (which no longer decodes it); the device's
    decode fails on it, and the batch repeats a neighbouring image with a warning naming the file."""
    import io

    from PIL import Image

    def jpeg(seed):
        g = torch.Generator().manual_seed(seed)
        arr = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    good, bad = jpeg(0), jpeg(1)
    broken = bad[:len(bad) // 2]  # the header (size, mode) reads; the scan data ends early
    url = _tar(tmp_path / "t.tar", [("a.jpg", good), ("b.jpg", broken), ("c.jpg", jpeg(2)), ("d.jpg", jpeg(3))])
    stream = ShardStream([url], ("denoise_g25",), batch_size=4, dn_patch=16, degrade=False, decode=False)
    raw = next(iter(stream))
    assert len(raw.batches["denoise_g25"].crops) == 4
    with caplog.at_level("WARNING", logger="pretrain.data"):
        out = degrade_pending(raw, stream_tasks(("denoise_g25",)), 8, "cpu").batches["denoise_g25"]
    assert out.gt.shape == (4, 3, 16, 16) and out.lq.shape == (4, 3, 16, 16)
    assert torch.equal(out.gt[1], out.gt[0])  # b.jpg repeats a.jpg's patch
    assert any("b" in r.getMessage() and "on the device" in r.getMessage() for r in caplog.records)
    # in the workers the same file is a counted skip, as before
    worker = next(iter(ShardStream([url], ("denoise_g25",), batch_size=3, dn_patch=16)))
    assert worker.position["skips"]["corrupt"] == 1


def test_finetune_stream_defers_only_the_on_the_fly_pairs(tmp_path):
    """Fine-tuning's `PairStream` leaves its on-the-fly degradation to the trainer too; stored LQ pairs stay."""
    from finetune.data import PairStream, scan_training_data

    paired_folder(tmp_path, 3, 40, 2)
    names = ("sr_x2", "denoise_g25", "sr_any")
    data = scan_training_data([str(tmp_path)], list(names), lr_patch=8, dn_patch=16)
    kw = dict(batch_size=2, lr_patch=8, dn_patch=16, seed=1)
    done, pending = PairStream(data.pairs, **kw), PairStream(data.pairs, degrade=False, **kw)
    for _ in range(2):
        raw = next(pending)
        assert raw.degrade_seed is not None
        assert raw.batches["sr_x2"].lq is not None  # a stored pair: nothing to degrade
        assert raw.batches["denoise_g25"].lq is None and raw.batches["sr_any"].lq is None
        _assert_batches_equal(next(done), degrade_pending(raw, stream_tasks(names), 8, "cpu"))


def test_degrade_on_resolves_and_refuses_unknown_places(monkeypatch):
    from pretrain.recipes import get_recipe

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert degrade_on_device("device") and not degrade_on_device("workers")
    assert not degrade_on_device("auto")  # a CPU run: the workers, beside the main process
    if torch.cuda.is_available():
        monkeypatch.setenv("DS_ACCELERATOR", "cuda")
        assert degrade_on_device("auto")
    with pytest.raises(ValueError, match="degrade_on='gpu'.*auto, workers, device"):
        degrade_on_device("gpu")
    with pytest.raises(ValueError, match="degrade_on='gpu'"):
        get_recipe("smoke", ["degrade_on=gpu"])
    assert get_recipe("smoke", []).degrade_on == "auto" and get_recipe("smoke", []).decode_on == "workers"
    with pytest.raises(ValueError, match="decode_on=device.*degrade_on=device"):
        get_recipe("smoke", ["decode_on=device", "degrade_on=workers"])
    with pytest.raises(ValueError, match="decode_on='cuda'"):
        get_recipe("smoke", ["decode_on=cuda"])
    assert worker_roles("auto", "device") == {"degrade": False, "decode": False}  # on a CPU run too
    assert worker_roles("auto") == {"degrade": True, "decode": True}


def _weights(run_dir, step):
    from safetensors.torch import load_file

    folder = run_dir / "checkpoints" / f"step-{step}"
    return load_file(str(folder / "model.safetensors")), load_file(str(folder / "ema.safetensors"))


def _run(urls, run_dir, degrade_on, resume=None, stop_after=None, decode_on="workers"):
    from pretrain.recipes import get_recipe
    from pretrain.train import run_pretraining

    recipe = get_recipe("smoke", [*TINY_OVERRIDES, "tasks=sr_x2,sr_any,denoise_g25,masked", "num_workers=1",
                                  "steps=6", "ckpt_every=3", "log_every=1", f"degrade_on={degrade_on}",
                                  f"decode_on={decode_on}"])
    return run_pretraining(recipe, run_dir=run_dir, data=urls, resume=resume, stop_after=stop_after)


def test_on_device_degradation_trains_the_same_run_and_resumes_exactly(gloo, shard_set, tmp_path):  # noqa: F811
    """A run with ``degrade_on=device`` (a data-loader worker that only crops, the trainer degrading on the CPU
    device) ends on the same weights as the worker-side run, and a run stopped at step 3 and resumed from its
    checkpoint ends bit-identical to the uninterrupted one."""
    urls = shard_set[0]
    straight = _run(urls, tmp_path / "device", "device")
    assert straight.step == 6
    workers = _run(urls, tmp_path / "workers", "workers")
    for a, b in zip(_weights(tmp_path / "device", 6), _weights(tmp_path / "workers", 6)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.losses == workers.losses
    decoded = _run(urls, tmp_path / "decode", "device", decode_on="device")  # the JPEGs decoded by the trainer too
    for a, b in zip(_weights(tmp_path / "decode", 6), _weights(tmp_path / "workers", 6)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert decoded.losses == workers.losses

    stopped = _run(urls, tmp_path / "resumed", "device", stop_after=3)
    assert stopped.step == 3
    resumed = _run(urls, tmp_path / "resumed", "device", resume="auto")
    assert resumed.step == 6
    for a, b in zip(_weights(tmp_path / "device", 6), _weights(tmp_path / "resumed", 6)):
        assert a.keys() == b.keys()
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert worst == 0.0, f"the resumed run differs by {worst}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the GPU's generator draws another stream")
def test_cuda_degradation_draws_the_same_distributions(shard_set):
    """On CUDA the degradation runs on the GPU from a Philox generator: other numbers than the workers' MT19937,
    the same distributions (noise sigma, mask ratio, sr_any's query layout), deterministic per (seed, step, rank)."""
    raw = next(iter(_stream(shard_set[0], degrade=False, batch_size=8)))
    tasks = stream_tasks(TASKS)
    cpu = degrade_pending(raw, tasks, 8, "cpu")
    gpu = degrade_pending(raw, tasks, 8, "cuda")
    again = degrade_pending(raw, tasks, 8, "cuda")
    for task in TASKS:
        for name in FIELDS:
            x, y, z = (getattr(d.batches[task], name) for d in (cpu, gpu, again))
            assert (x is None) == (y is None), (task, name)
            if y is not None:
                assert y.device.type == "cuda" and y.shape == x.shape and y.dtype == x.dtype, (task, name)
                assert torch.equal(y, z), (task, name)  # deterministic on the device too
    noise = (gpu.batches["denoise_g25"].lq - gpu.batches["denoise_g25"].gt).float().std().item()
    assert abs(noise * 255 - 25) < 1.5, noise * 255
    assert abs(gpu.batches["masked"].mask.float().mean().item() - tasks["masked"].mask_ratio) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: nvjpeg decodes on the GPU")
def test_cuda_decoding_is_close_to_libjpeg(shard_set):
    """``decode_on=device`` on CUDA: nvjpeg's pixels against the workers' libjpeg-turbo ones, same crops."""
    raw = next(iter(_stream(shard_set[0], degrade=False, decode=False, batch_size=8)))
    tasks = stream_tasks(TASKS)
    cpu, gpu = degrade_pending(raw, tasks, 8, "cpu"), degrade_pending(raw, tasks, 8, "cuda")
    for task in TASKS:
        if task == "sr_any":  # its gt is a draw of query points, not the crop
            continue
        diff = (gpu.batches[task].gt.cpu() - cpu.batches[task].gt).abs()
        print(f"{task}: nvjpeg vs libjpeg crops, max {float(diff.max()) * 255:.0f}/255, mean {float(diff.mean()) * 255:.3f}/255")
        assert float(diff.mean()) < 1 / 255 and float(diff.max()) <= 16 / 255, task


def test_folder_fine_tuning_keeps_the_blind_pipelines_in_the_workers_under_device_decoding(monkeypatch):
    """Fine-tuning from image folders decodes in the workers whatever ``decode_on`` says (only shards decode on the
    device), so ``decode_on=device`` must not drag the blind pipelines onto the GPU there; from shards it does."""
    from dataclasses import replace

    from finetune.train import stream_roles
    from pretrain.recipes import smoke

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    recipe = replace(smoke(), tasks=("sr_x2", "realsr_x4"), degrade_on="auto", decode_on="device")
    assert stream_roles(recipe, folders=True) == {"degrade": ("realsr_x4",), "decode": True}
    assert stream_roles(recipe, folders=False) == {"degrade": False, "decode": False}
