"""Coil-map estimators on the multi-coil benchmark sets: reconstruction quality and cost.

For each multi-coil set and each estimator of ``recon.operators.COIL_ESTIMATORS`` (``smooth``,
the default, and ``lowres``: recon's own; ``espirit``: sigpy's ``EspiritCalib``; with
``--oracle`` also ``oracle``: the simulated birdcage maps the set was made with, which no real
scan has, to show what the estimate costs), runs ``recon evaluate`` with ``pinv``, ``tv`` (the
set's tuned lam) and ``dds`` (defaults, the set's default prior) with the run's
``coil_estimator`` set, and times the estimator alone on each slice's undersampled k-space.
Prints a Markdown table: the estimator's seconds per slice, its model error (the norm of
``A_est x - A_true x`` over the norm of the measurement noise, mean over slices: below 1 the
maps are as good as the data can tell), and PSNR / SSIM (fastMRI convention) per sampler.

Run: .venv/bin/python benchmarks/coil_maps.py --out /tmp/coil_maps [--sets mri_x4_multicoil]
    [--oracle] [--estimators smooth lowres] [--samplers pinv tv dds]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from recon import io
from recon import operators as O
from recon.config import run_config
from recon.datasets import resolve_benchmark
from recon.errors import UserError
from recon.evaluate import evaluate
from recon.sources import _acs_width


def _measure(maps: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Noiseless k-space of the real image x (h, w) under the given maps (N, H, W) on the
    k-space grid (readout oversampling: (H, W) larger than (h, w)): the operator the sets were
    simulated with (``recon.simulate``), complex (N, H, W)."""
    enc = tuple(maps.shape[-2:])
    cfg = O.MultiCoilMRIConfig(
        img_size=tuple(x.shape),
        encoded_size=enc if enc != tuple(x.shape) else None,
        mask="given",
        coil_maps="given",
        n_coils=len(maps),
    )
    y = O.build(cfg, mask=mask, coil_maps=maps).A(torch.stack([x, torch.zeros_like(x)])[None])
    return torch.complex(y[0, 0], y[0, 1])


def _true_maps(scan: Path) -> torch.Tensor:
    """The birdcage maps a simulated set was made with, (N, H, W) complex."""
    info = io.fastmri_info(scan)
    op = json.loads(info.attrs["operator"])
    if op.get("coil_maps", "simulated") != "simulated":
        raise SystemExit(f"{scan}: not simulated with birdcage maps; no oracle")
    return O.birdcage_maps(int(op["n_coils"]), tuple(info.shape)).to(torch.complex64)


@contextlib.contextmanager
def _oracle(scan: Path) -> Iterator[None]:
    """Serve the true maps under the name ``lowres`` for the runs inside (benchmark only)."""
    maps = _true_maps(scan)
    saved = O.COIL_ESTIMATORS["lowres"]
    O.COIL_ESTIMATORS["lowres"] = lambda k, n_low: maps.to(k.device).expand(len(k), *maps.shape)
    try:
        yield
    finally:
        O.COIL_ESTIMATORS["lowres"] = saved


def _estimator_stats(scan: Path, estimator: str) -> tuple[float, float]:
    """(seconds per slice, model error / noise, mean over slices)."""
    info = io.fastmri_info(scan)
    mask = torch.as_tensor(info.mask, dtype=torch.float32)
    n_low = _acs_width(info.mask)
    truth_maps = _true_maps(scan)
    times, errs = [], []
    for i in range(info.n_slices):
        k, truth = io.read_fastmri_slice(info, i)
        m = mask.expand(k.shape[-2:])
        km = (k * m)[None]
        t = time.perf_counter()
        maps = O.COIL_ESTIMATORS[estimator](km, n_low)[0].to(torch.complex64)
        times.append(time.perf_counter() - t)
        x = torch.as_tensor(truth).float()
        clean = _measure(truth_maps, m, x)
        noise = float((k * m - clean).abs().pow(2).sum().sqrt())
        errs.append(float((_measure(maps, m, x) - clean).abs().pow(2).sum().sqrt()) / noise)
    return sum(times) / len(times), sum(errs) / len(errs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["mri_x4_multicoil", "mri_x8_multicoil"])
    ap.add_argument("--samplers", nargs="+", default=["pinv", "tv", "dds"])
    ap.add_argument("--oracle", action="store_true", help="add the true (simulated) maps' row")
    ap.add_argument(
        "--estimators", nargs="+", choices=list(O.COIL_ESTIMATORS), help="default: all of them"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(
        "| set | estimator | s / slice | model error / noise | " + " | ".join(args.samplers) + " |"
    )
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in args.samplers) + " |")
    for name in args.sets:
        bench = resolve_benchmark(name)
        for est in [*(args.estimators or O.COIL_ESTIMATORS), *(["oracle"] * args.oracle)]:
            ctx = _oracle(bench.scan) if est == "oracle" else contextlib.nullcontext()
            cells = []
            with ctx:
                try:
                    secs, err = _estimator_stats(bench.scan, "lowres" if est == "oracle" else est)
                except UserError as e:
                    print(f"| {name} | {est} | refused: {e} |", flush=True)
                    continue
                for sampler in args.samplers:
                    cfg = run_config(
                        None, sampler=sampler, coil_estimator="lowres" if est == "oracle" else est
                    )
                    s = evaluate(bench, cfg, args.out / name / f"{est}-{sampler}")
                    cells.append(f"{s['psnr']['mean']:.2f} / {s['ssim']['mean']:.3f}")
            print(
                f"| {name} | {est} | {secs:.3f} | {err:.2f} | " + " | ".join(cells) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
