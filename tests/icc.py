"""A CMYK ICC profile written from the specification, and the CIE colour math to check what it converts to.

No CMYK profile ships with Pillow or on these machines, and littlecms cannot create one, so `cmyk_profile` writes a
minimal ICC v2 output profile (ICC.1:2001-04): header, tag table, ``desc``/``wtpt``/``cprt`` and an ``A2B0``
lut8Type (identity curves, a 2-point CLUT over C, M, Y, K whose 16 corners are given Lab values). `lab_to_srgb` is
the reference for the expected colours: CIE Lab (D50, the ICC connection space) -> XYZ -> Bradford to D65 -> sRGB
(IEC 61966-2-1 matrix and transfer curve), transcribed from the standards, not from littlecms.
"""

from __future__ import annotations

import struct
from typing import Callable

import numpy as np

D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _lab8(lab: tuple[float, float, float]) -> bytes:
    """ICC v2 8-bit Lab: L 0..100 -> 0..255, a and b -128..127 -> 0..255."""
    L, a, b = lab
    return bytes([round(L * 255 / 100), round(a + 128), round(b + 128)])


def encoded_lab(lab: tuple[float, float, float]) -> tuple[float, float, float]:
    """The Lab value an 8-bit CLUT entry actually holds (what the profile converts to)."""
    L, a, b = _lab8(lab)
    return L * 100 / 255, a - 128.0, b - 128.0


def cmyk_profile(corner_lab: Callable[[int, int, int, int], tuple[float, float, float]]) -> bytes:
    """An ICC v2 CMYK -> Lab profile whose ink corners (c, m, y, k in {0, 1}) map to ``corner_lab(c, m, y, k)``."""
    text = b"test CMYK\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0)
            + b"\0" * 67)
    wtpt = b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in D50)
    cprt = b"text\0\0\0\0public domain\0"
    curve = bytes(range(256))  # identity input and output tables
    clut = b"".join(_lab8(corner_lab(c, m, y, k)) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1))
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 = b"mft1\0\0\0\0" + bytes([4, 3, 2, 0]) + identity + curve * 4 + clut + curve * 3
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        table += sig + struct.pack(">II", start + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    header = (struct.pack(">I", start + len(body)) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"prtrCMYKLab "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50))
    return header + b"\0" * (128 - len(header)) + struct.pack(">I", len(tags)) + table + body


def lab_to_srgb(lab: tuple[float, float, float]) -> np.ndarray:
    """8-bit sRGB (float, unrounded) of a D50 Lab colour."""
    L, a, b = lab
    fy = (L + 16) / 116
    f = np.array([fy + a / 500, fy, fy - b / 200])
    eps = 6 / 29
    xyz = np.where(f > eps, f**3, 3 * eps**2 * (f - 4 / 29)) * np.array(D50)
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    d65 = np.array([0.9505, 1.0, 1.0890])
    adapt = np.linalg.inv(bradford) @ np.diag((bradford @ d65) / (bradford @ np.array(D50))) @ bradford
    to_rgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = np.clip(to_rgb @ adapt @ xyz, 0, 1)
    return 255 * np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)
