"""Swin's window machinery, shared by the SwinIR and HAT bodies (and their ONNX export): windows cut and pasted
back, the relative position index of window attention (HAT's overlapping windows too), and the shifted-window
attention mask with its per-size cache (EDT's rectangular windows use the same mask)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

__all__ = ["window_partition", "window_reverse", "relative_position_index", "shift_window_mask",
           "traced_shift_window_mask", "ShiftMaskCache"]


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, ws*ws, C), windows in row-major order (as the reference `window_partition`)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B, nW, ws*ws, C) -> (B, H, W, C); inverse of `window_partition`."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


@lru_cache(maxsize=None)
def relative_position_index(ws_q: int, ws_k: int | None = None) -> torch.Tensor:
    """Index into a relative position bias table, (ws_q², ws_k²) int64.

    With ``ws_k == ws_q`` (or None) this is Swin's index over a (2ws-1)² table; with a larger key window it is
    HAT's overlapping cross-attention index over a (ws_q+ws_k-1)² table (HAT `calculate_rpi_oca`), where the key
    window is centred on the query window.
    """
    ws_k = ws_q if ws_k is None else ws_k
    # the result is cached for the whole process: explicit CPU, so that it does not inherit a `with
    # torch.device("meta")` context, and never an inference tensor (a model built under `torch.inference_mode()`
    # first would leave every later one of this window size unable to train: "Inference tensors cannot be saved
    # for backward")
    with torch.inference_mode(False):
        grid = lambda n: torch.stack(torch.meshgrid(*[torch.arange(n, device="cpu")] * 2, indexing="ij")).flatten(1)  # noqa: E731
        q, k = grid(ws_q), grid(ws_k)  # (2, Nq), (2, Nk)
        if ws_k == ws_q:
            rel = q[:, :, None] - k[:, None, :] + (ws_q - 1)  # (2, Nq, Nk), query minus key, in [0, 2ws-2]
        else:
            rel = k[:, None, :] - q[:, :, None] + (ws_q - ws_k + 1)  # key minus query, shifted to start at 0
        return rel[0] * (ws_q + ws_k - 1) + rel[1]


def shift_window_mask(h: int, w: int, ws: int | tuple[int, int], shift: int | tuple[int, int]) -> torch.Tensor:
    """The shifted-window attention mask, (nW, N, N) float with 0 inside a region and -100 across regions.

    After a cyclic shift a window can hold pixels from up to four image regions that were not adjacent; the mask
    keeps them from attending to each other. -100 (not -inf) as in the reference, so results match it exactly.
    ``ws`` and ``shift`` are one side (Swin's square windows, N = ws²) or (rows, cols) (EDT's rectangular
    windows, N = rows * cols); windows and their pixels are in row-major order, as `window_partition` cuts them.
    """
    wh, ww = (ws, ws) if isinstance(ws, int) else ws
    sh, sw = (shift, shift) if isinstance(shift, int) else shift
    region = torch.zeros(h, w, device="cpu")
    for i, rows in enumerate((slice(0, -wh), slice(-wh, -sh), slice(-sh, None))):
        for j, cols in enumerate((slice(0, -ww), slice(-ww, -sw), slice(-sw, None))):
            region[rows, cols] = i * 3 + j
    win = region.view(h // wh, wh, w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)  # (nW, N)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def _region(n: Any, window: int, shift: int) -> torch.Tensor:
    """Region number 0/1/2 of each of ``n`` positions: the slices (0, -window), (-window, -shift), (-shift, None)
    of `shift_window_mask`, written as comparisons so that ``n`` may be a symbolic size."""
    i = torch.arange(n)
    return (i >= n - window).to(torch.int64) + (i >= n - shift).to(torch.int64)


def traced_shift_window_mask(h: Any, w: Any, window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """`shift_window_mask` from tensor ops, the same numbers, for sizes that are symbolic: an ONNX export's or
    ``torch.compile(dynamic=True)``'s (a cache keyed by the size would fix it as a constant there, and compile the
    model again for every image size). (nW, N, N) on the CPU."""
    wh, ww = window
    region = _region(h, wh, shift[0])[:, None] * 3 + _region(w, ww, shift[1])[None, :]  # (H, W)
    win = region.reshape(h // wh, wh, w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww).to(torch.float32)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class ShiftMaskCache:
    """Shift masks per (H, W, device), built once per input size and reused by every shifted block."""

    def __init__(self, window_size: int, shift_size: int, max_entries: int = 8) -> None:
        self.window_size, self.shift_size, self.max_entries = window_size, shift_size, max_entries
        self._masks: dict[tuple, torch.Tensor] = {}

    def __call__(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():  # symbolic sizes: built in the graph, which then serves every size
            return traced_shift_window_mask(h, w, (self.window_size,) * 2, (self.shift_size,) * 2).to(device)
        key = (h, w, str(device))
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= self.max_entries:  # tiled inference sees few sizes; bound memory anyway
                self._masks.pop(next(iter(self._masks)))
            with torch.inference_mode(False):  # a mask first built for inference also serves training
                mask = shift_window_mask(h, w, self.window_size, self.shift_size).to(device)
            self._masks[key] = mask
        return mask
