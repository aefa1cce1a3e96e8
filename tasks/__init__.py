"""Restoration tasks: MATLAB-exact degradations, the task registry, the field's metrics and benchmark evaluation.

    import tasks
    task = tasks.get_task("sr_x4")                  # .scale, .degrade(hr, generator), .protocol
    lr = tasks.imresize(hr, 1 / 4)                  # MATLAB imresize bicubic, batched torch
    lq = tasks.get_task("realsr_x4").degrade(hr, g) # Real-ESRGAN / BSRGAN blind pipelines (tasks.blind)
    tasks.psnr(sr, hr, crop_border=4, y_channel=True)
    result = tasks.evaluate(model_or_callable, "Set5", "sr_x4")   # .psnr .ssim .per_image
    name, lq, gt = next(tasks.benchmark_pairs("Set5", "sr_x4"))  # the pairs evaluate scores, read its way
    tasks.evaluate(model, "Set5", "sr_any", scale=2.5, lpips=True)  # arbitrary scale; LPIPS beside PSNR/SSIM
"""

from tasks import blind, degradations
from tasks.evaluate import EvalResult, benchmark_pairs, benchmark_root, evaluate, list_benchmarks
from tasks.imresize import imresize
from tasks.io import read_image, save_image
from tasks.metrics import psnr, ssim
from tasks.perceptual import LPIPSMetric
from tasks.registry import COMMON_TASKS, Task, get_task, list_tasks

__all__ = [
    "COMMON_TASKS",
    "EvalResult",
    "LPIPSMetric",
    "Task",
    "benchmark_pairs",
    "benchmark_root",
    "blind",
    "degradations",
    "evaluate",
    "get_task",
    "imresize",
    "list_benchmarks",
    "list_tasks",
    "psnr",
    "read_image",
    "save_image",
    "ssim",
]
