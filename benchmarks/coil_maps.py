"""Coil-map estimators on the multi-coil benchmark sets: reconstruction quality and cost.

For each multi-coil set and each estimator (``lowres``: windowed low-resolution images over
their root-sum-of-squares, recon's own; ``espirit``: sigpy's ``EspiritCalib``), runs ``recon
evaluate`` with ``pinv``, ``tv`` (the set's tuned lam) and ``dds`` (defaults, the set's default
prior) with the run's ``coil_estimator`` set, and times the estimator alone on each slice's
undersampled k-space. Prints a Markdown table: PSNR / SSIM (fastMRI convention) per sampler
and the estimator's seconds per slice.

Run: .venv/bin/python benchmarks/coil_maps.py --out /tmp/coil_maps [--sets mri_x4_multicoil]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from recon import io
from recon import operators as O
from recon.config import run_config
from recon.datasets import resolve_benchmark
from recon.evaluate import evaluate
from recon.sources import _acs_width


def _estimator_seconds(scan: Path, estimator: str) -> float:
    info = io.fastmri_info(scan)
    mask = torch.as_tensor(info.mask, dtype=torch.float32)
    n_low = _acs_width(info.mask)
    times = []
    for i in range(info.n_slices):
        k, _ = io.read_fastmri_slice(info, i)
        km = (k * mask)[None]
        t = time.perf_counter()
        O.COIL_ESTIMATORS[estimator](km, n_low)
        times.append(time.perf_counter() - t)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["mri_x4_multicoil", "mri_x8_multicoil"])
    ap.add_argument("--samplers", nargs="+", default=["pinv", "tv", "dds"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print("| set | estimator | s / slice (estimator) | " + " | ".join(args.samplers) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.samplers) + " |")
    for name in args.sets:
        bench = resolve_benchmark(name)
        for est in O.COIL_ESTIMATORS:
            cells = []
            for sampler in args.samplers:
                cfg = run_config(None, sampler=sampler, coil_estimator=est)
                s = evaluate(bench, cfg, args.out / name / f"{est}-{sampler}")
                cells.append(f"{s['psnr']['mean']:.2f} / {s['ssim']['mean']:.3f}")
            secs = _estimator_seconds(bench.scan, est)
            print(f"| {name} | {est} | {secs:.3f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
