"""Multiply-adds of every registered variant at x4 on a 64x64 input, against the published figures.

    .venv/bin/python tests/benchmarks/bench_flops.py [--variants hat hat_s ...]

Counted with `torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device (no memory, no compute): FLOPs of
the matmuls, convolutions and attention of one forward, divided by two for multiply-adds (MACs). Element-wise
ops (norms, activations, softmax, adds) are not counted, as in the papers' counters (fvcore / thop style).
Published: HAT README (SwinIR 53.6G, HAT-S 54.9G, HAT 102.4G) and the EDT paper (EDT-T 5.4G, EDT-S 22.0G,
EDT-B 56.8G, EDT-L 193G; HAT-L 203G); ANCHORS.md section 6. Fixed-input IPT runs its 48x48 tiles
(`RestorationModel` tiles a 64x64 input), so its count includes the tiling overlap.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import Row, command, emit, parser, setup

PUBLISHED = {"swinir_m": 53.6, "hat_s": 54.9, "hat": 102.4, "hat_l": 203.0, "edt_t": 5.4, "edt_s": 22.0,
             "edt_b": 56.8, "edt_l": 193.0}
SOURCE = {"swinir_m": "HAT README", "hat_s": "HAT README", "hat": "HAT README", "hat_l": "EDT paper"}


def count_macs(variant: str, size: int = 64, task: str = "sr_x4") -> float:
    """Multiply-adds (G) of one forward of ``variant`` on a (1, 3, size, size) input."""
    from restore.model import RestorationModel

    with torch.device("meta"):
        model = RestorationModel(variant, tasks=[task]).eval()
        x = torch.rand(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x, task)
    return counter.get_total_flops() / 2 / 1e9


def main(argv: list[str] | None = None) -> None:
    import restore

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="*", help="default: every registered variant with a published figure, "
                                                   "then the others")
    args = p.parse_args(argv)
    setup(args)
    names = args.variants or ([v for v in PUBLISHED if v in restore.list_variants()]
                              + [v for v in restore.list_variants() if v not in PUBLISHED])
    rows = []
    for v in names:
        try:
            macs = count_macs(v)
        except Exception as err:  # noqa: BLE001 - a variant that cannot run at x4 on 64x64 is reported, not fatal
            print(f"{v}: skipped ({type(err).__name__}: {err})")
            continue
        pub = PUBLISHED.get(v)
        ratio = macs / pub if pub else None
        note = f"{(ratio - 1) * 100:+.1f}% vs published" if pub else "no published figure"
        rows.append(Row("FLOPs", f"{v} x4, 64x64 input, multiply-adds", macs, pub, "GMAC", ratio,
                        reference_name=SOURCE.get(v, "EDT paper") if pub else "", note=note,
                        command=command(), machine=f"meta device, torch {torch.__version__}"))
    emit(rows, args, "Multiply-adds at x4 on 64x64 (ours / published)")


if __name__ == "__main__":
    main()
