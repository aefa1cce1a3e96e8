"""CPU forward time of EDT variants on a 64x64 sr_x4 input (median of a few runs). Not collected by pytest.

    .venv/bin/python tests/benchmarks/edt_forward_cpu.py [variant ...]
"""

import statistics
import sys
import time

import torch

import restore

for name in sys.argv[1:] or ["edt_b"]:
    model = restore.create_model(name, tasks=["sr_x4"]).eval()
    x = torch.rand(1, 3, 64, 64)
    times = []
    with torch.inference_mode():
        model(x, "sr_x4")  # warm-up
        for _ in range(5):
            t = time.perf_counter()
            model(x, "sr_x4")
            times.append(time.perf_counter() - t)
    print(f"{name}: {statistics.median(times) * 1000:.0f} ms median of 5 (threads={torch.get_num_threads()})")
