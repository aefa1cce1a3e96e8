"""The GPU script's sections that go through the platform's own paths (`bench_gpu.py` runs them on CUDA; the CPU
test `tests/pretrain/test_gpu_sections.py` runs each on tiny sizes, so a Python or device slip fails here first):

- `engine_train_row`: a recipe's training step through `pretrain.engine.Trainer` (DeepSpeed, the recipe's ZeRO
  stage and precision: ZeRO-2 bf16 for ``edt_b`` and ``hat``), one rank: images/s and MFU.
- `agreement_row`: fp32 against bf16-autocast outputs of the same random-init model (max diff, PSNR).
- `tiled_row`: a tiled 4K-output inference (`restore.restore_image`, 960x540 -> 3840x2160 at x4): time and peak
  device memory.
- `pipeline_rows`: the data pipeline with the degradation (``degrade_on=device``) and the JPEG decoding
  (``decode_on=device``) on the device: the device's samples/s per task against a CPU worker's rate, nvjpeg's
  pixels against libjpeg's, and the device's degradation statistics against the workers' (noise sigma, mask
  ratio). Shards come from the shared ImageNet sample, or, where it is absent (the GPU machine has no shared
  folder), from synthetic JPEGs of ImageNet's typical size.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch

from common import Row, machine

CORPUS = Path(os.environ.get("RESTORE_SHARED", "/work/shared")) / "corpus" / "imagenet-sample"
PIPELINE_TASKS = (("sr_x2,sr_x3,sr_x4 (LR 48)", ("sr_x2", "sr_x3", "sr_x4")), ("denoise_g25 (192)", ("denoise_g25",)),
                  ("derain (192)", ("derain",)), ("masked (192)", ("masked",)), ("sr_any (LR 48)", ("sr_any",)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def engine_train_row(recipe_name: str, steps: int, peak: float | None, budget_s: float, device: torch.device,
                     overrides: tuple[str, ...] = ()) -> Row:
    """Images/s and MFU of ``recipe_name``'s step through the platform's `Trainer` (one rank, its ZeRO stage and
    precision), on random batches already on the device (the data pipeline is `pipeline_rows`' business)."""
    from bench_gpu import forward_flops
    from pretrain.data import Batch, StepData
    from pretrain.engine import Trainer
    from pretrain.recipes import get_recipe
    from restore.model import RestorationModel
    from tasks.registry import get_task

    recipe = get_recipe(recipe_name, ["num_workers=0", *overrides])
    torch.manual_seed(0)
    model = RestorationModel(recipe.variant, tasks=list(recipe.tasks), arch=recipe.arch_dict())
    trainer = Trainer(model, recipe, recipe.batch_size * len(recipe.tasks), world_size=1)
    p, b = recipe.lr_patch, recipe.batch_size

    def data(step: int) -> StepData:
        batches = {t: Batch(torch.rand(b, 3, p, p, device=trainer.device),
                            torch.rand(b, 3, p * get_task(t).scale, p * get_task(t).scale, device=trainer.device), t)
                   for t in recipe.tasks}
        return StepData(step, batches)

    batches = [data(i) for i in range(2)]
    for d in batches:  # warm-up: kernels, cuDNN autotuning, DeepSpeed's first-step set-up
        trainer.step([d])
    _sync(trainer.device)
    t, done = time.perf_counter(), 0
    while done < steps and (done < 2 or time.perf_counter() - t < budget_s):
        trainer.step([batches[done % 2]])
        done += 1
    _sync(trainer.device)
    dt = (time.perf_counter() - t) / done
    images = b * len(recipe.tasks)
    flops = 3 * forward_flops(trainer.module, {k: v.lq for k, v in batches[0].batches.items()})
    note = f"ZeRO-{recipe.zero_stage}, {recipe.precision}, {dt * 1e3:.0f} ms/step, {flops / dt / 1e12:.2f} TFLOP/s"
    if peak:
        note += f", MFU {flops / dt / (peak * 1e12) * 100:.1f}% of {peak:g} TFLOP/s bf16 peak"
    if _peak_gib(trainer.device) is not None:
        note += f", peak {_peak_gib(trainer.device):.1f} GiB"
    what = (f"{recipe_name} training step through the platform's DeepSpeed engine, {'+'.join(recipe.tasks)}, "
            f"{b}/task x LR {p}x{p}")
    return Row("GPU training", what, images / dt, None, "images/s", None, note=note, machine=machine(device.type))


def agreement_row(variant: str, device: torch.device, size: int = 64, task: str = "sr_x4") -> Row:
    """fp32 against bf16-autocast outputs of one random-init model on one random image: max |diff| and PSNR."""
    from restore.model import RestorationModel

    torch.manual_seed(0)
    model = RestorationModel(variant, tasks=[task]).to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    with torch.inference_mode():
        fp32 = model(x, task).float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = model(x, task).float()
    diff = (fp32.clamp(0, 1) - bf16.clamp(0, 1))
    mse = float(diff.pow(2).mean())
    psnr = 10 * math.log10(1 / mse) if mse > 0 else float("inf")
    return Row("GPU inference", f"{variant} {task} {size}x{size}, bf16 autocast against fp32 (random init)", psnr,
               None, "dB", None, note=f"max |diff| {float(diff.abs().max()):.2e}; PSNR of bf16 against fp32",
               machine=machine(device.type))


def tiled_row(variant: str, device: torch.device, hw: tuple[int, int] = (540, 960), tile: int = 256,
              dtype: str = "bf16", task: str = "sr_x4") -> Row:
    """Time and peak device memory of a tiled inference of ``hw`` (4K output at x4 by default)."""
    from restore.inference import restore_image
    from restore.model import RestorationModel

    torch.manual_seed(0)
    model = RestorationModel(variant, tasks=[task]).to(device).eval()
    x = torch.rand(1, 3, *hw)
    # warm-up on the same input: the timed call then meets no tile shape for the first time (cuDNN autotuning, where
    # a trainer turned it on, and kernel loading would otherwise be timed)
    restore_image(model, x, task, tile=tile, device=device, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t = time.perf_counter()
    out = restore_image(model, x, task, tile=tile, device=device, dtype=dtype)
    _sync(device)
    dt = time.perf_counter() - t
    peak = _peak_gib(device)
    note = f"output {out.shape[-1]}x{out.shape[-2]}, tile {tile}, overlap 32, {dtype}"
    note += f", peak {peak:.2f} GiB of device memory" if peak is not None else ""
    return Row("GPU inference", f"{variant} tiled {hw[1]}x{hw[0]} -> x{model.scale(task)}", dt, None, "s", None,
               note=note, machine=machine(device.type))


def _synthetic_jpegs(folder: Path, n: int) -> None:
    """``n`` JPEGs of ImageNet's typical 500x375, smooth colour fields with texture (as compressible as photos)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    cls = folder / "n00000000"
    cls.mkdir(parents=True)
    for i in range(n):
        base = torch.rand(3, 12, 16, generator=g)
        img = torch.nn.functional.interpolate(base[None], size=(375, 500), mode="bicubic", align_corners=False)[0]
        img = (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1)
        Image.fromarray((img.permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(cls / f"{i:04d}.JPEG", quality=90)


def _shards(tmp: Path, images: int) -> tuple[list[str], str]:
    from pretrain.shards import build_shards

    src = tmp / "src"
    if CORPUS.is_dir() and any(CORPUS.glob("*.JPEG")):
        (src / "n0").mkdir(parents=True)
        for f in sorted(CORPUS.glob("*.JPEG"))[:images]:
            (src / "n0" / f.name).symlink_to(f)
        what = f"{images} images of {CORPUS}"
    else:
        _synthetic_jpegs(src, images)
        what = f"{images} synthetic 500x375 JPEGs (no shared corpus here)"
    s = build_shards(src, str(tmp / "shards" / "t-%04d.tar"), maxcount=64, workers=1, progress=False)
    return list(s.shards), what


def pipeline_rows(device: torch.device, images: int = 64, steps: int = 4, batch: int = 8, lr_patch: int = 48,
                  dn_patch: int = 192) -> list[Row]:
    """Per task set: the device's samples/s for degradation alone (``degrade_on=device``) and for decoding +
    degradation (``decode_on=device``), with a CPU worker's decode + crop rate as the reference; then nvjpeg's
    crops against libjpeg's and the device's noise sigma / mask ratio against the workers' (same crops)."""
    from bench_pretrain import degrade_rate
    from pretrain.data import ShardStream, degrade_pending, stream_tasks

    rows = []
    with tempfile.TemporaryDirectory() as d:
        urls, what = _shards(Path(d), images)
        for name, names in PIPELINE_TASKS:
            kw = dict(mode="edt", batch_size=batch, lr_patch=lr_patch, dn_patch=dn_patch, seed=0)
            tasks = stream_tasks(names)
            crops = iter(ShardStream(urls, names, degrade=False, **kw))
            next(crops)  # warm-up: imports, the first shard opened
            t = time.perf_counter()
            pending = [next(crops) for _ in range(steps)]
            n = sum(p.images for p in pending)
            worker = n / (time.perf_counter() - t)
            raw = iter(ShardStream(urls, names, degrade=False, decode=False, **kw))
            undecoded = [next(raw) for _ in range(steps)]
            for label, data in (("degradation (degrade_on=device)", pending),
                                ("JPEG decoding + degradation (decode_on=device)", undecoded)):
                rate = degrade_rate(data, tasks, lr_patch, device)
                rows.append(Row("GPU data pipeline", f"{name}: {label} on {device.type}", rate, worker,
                                "samples/s", rate / worker, reference_name="one CPU worker: decode + crop",
                                note=f"{what}; batch {batch} per task", machine=machine(device.type)))
        # a blind pipeline, which degrade_on=auto keeps in the workers (`pretrain.degrade.host_bound`): its rate on
        # the training device (image by image, host round trips) against one CPU worker's on the same crops
        names = ("realsr_x4",)
        tasks = stream_tasks(names)
        blind = iter(ShardStream(urls, names, degrade=False, mode="edt", batch_size=batch, lr_patch=lr_patch,
                                 dn_patch=dn_patch, seed=0))
        pending = [next(blind) for _ in range(steps)]
        on_cpu = degrade_rate(pending, tasks, lr_patch, torch.device("cpu"))
        on_dev = degrade_rate(pending, tasks, lr_patch, device)
        rows.append(Row("GPU data pipeline", f"realsr_x4 (LR 48): the blind degradation on {device.type} (the training "
                        "thread; degrade_on=device)", on_dev, on_cpu, "samples/s", on_dev / on_cpu,
                        reference_name="one CPU worker (where degrade_on=auto degrades it)",
                        note=f"batch {batch}; auto keeps it in the workers: worth moving only if this beats the "
                             "workers' cores per GPU times the reference", machine=machine(device.type)))
        # the device against the workers on the same crops: pixels of the decoder, statistics of the draws
        names = ("denoise_g25", "masked")
        tasks = stream_tasks(names)
        raw = next(iter(ShardStream(urls, names, degrade=False, decode=False, batch_size=batch, dn_patch=dn_patch)))
        cpu, dev = degrade_pending(raw, tasks, lr_patch, "cpu"), degrade_pending(raw, tasks, lr_patch, device)
        diff = (dev.batches["denoise_g25"].gt.cpu() - cpu.batches["denoise_g25"].gt).abs() * 255
        rows.append(Row("GPU data pipeline", f"decode_on=device crops on {device.type} against the workers' "
                        "libjpeg-turbo", float(diff.max()), None, "levels (max |diff|)", None,
                        note=f"mean |diff| {float(diff.mean()):.3f} levels over {diff.numel()} values",
                        machine=machine(device.type)))
        noise = {k: float((d.batches["denoise_g25"].lq - d.batches["denoise_g25"].gt).std()) * 255
                 for k, d in (("cpu", cpu), ("dev", dev))}
        ratio = {k: float(d.batches["masked"].mask.float().mean()) for k, d in (("cpu", cpu), ("dev", dev))}
        rows.append(Row("GPU data pipeline", f"degradation statistics on {device.type} against the workers: noise "
                        "sigma (denoise_g25)", noise["dev"], noise["cpu"], "sigma x 255", noise["dev"] / noise["cpu"],
                        reference_name="the workers (CPU generator)",
                        note=f"mask ratio {ratio['dev']:.3f} against {ratio['cpu']:.3f} (target "
                             f"{tasks['masked'].mask_ratio}); another generator on CUDA, the same distributions",
                        machine=machine(device.type)))
    return rows
