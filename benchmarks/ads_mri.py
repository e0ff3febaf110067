"""Active subsampling (ADS) vs fixed masks on the MRI benchmark phantoms, same sampler.

For each slice of ``data/benchmarks/mri_x4_singlecoil`` (its ground-truth phantoms; fully
sampled single-coil k-space is simulated from them, noiseless) and each acceleration, three
masks with the same number of k-space lines are compared:

* ``equispaced``: recon's fastMRI-style equispaced mask (ACS block + equispaced lines);
* ``random``: the same ACS block plus uniformly random lines, exactly as many as equispaced
  (fastMRI's random mask is Bernoulli, its line count varies: not a like-for-like comparison);
* ``ads``: the same ACS block, the same number of lines chosen actively during sampling.

Every mask is reconstructed by the same particle DPS sampler (``recon.active``, budget 0 for
the fixed masks), the particle mean is scored against the truth (fastMRI convention: per
volume, data range = volume max). One run prints the table.

Run: .venv/bin/python benchmarks/ads_mri.py [--prior phantom-64|phantom-gaussian]
     [--steps 100] [--particles 8] [--accelerations 4 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from recon import metrics
from recon import operators as O
from recon.active import acquire_fastmri_slice, active_subsampling
from recon.datasets import resolve_benchmark
from recon.io import fastmri_info, read_fastmri_slice
from recon.schedules import karras


def _prior(name: str, size: int):
    if name == "phantom-gaussian":
        from recon.phantoms import phantom_gaussian_prior

        return phantom_gaussian_prior(size, complex_valued=True)
    from recon.priors import load, to_complex

    return to_complex(load(name))


def _random_mask(h: int, w: int, n_lines: int, center_fraction: float, *, seed: int):
    """The ACS block plus ``n_lines - ACS`` other columns drawn uniformly without replacement:
    a random mask with exactly ``n_lines`` lines (fastMRI's random mask is Bernoulli, so its
    count varies)."""
    from recon.operators.masks import _center, num_low_frequencies

    mask = _center(w, num_low_frequencies(w, center_fraction))
    rest = torch.nonzero(~mask).flatten()
    g = torch.Generator().manual_seed(seed)
    pick = rest[torch.randperm(rest.numel(), generator=g)[: n_lines - int(mask.sum())]]
    mask[pick] = True
    return mask.float().expand(h, w).clone()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="phantom-64")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--accelerations", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--center-fraction", type=float, default=0.08)
    ap.add_argument("--zeta", type=float, default=0.5)
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument(
        "--hard-consistency",
        action="store_true",
        help="replace the measured k-space of every final particle by the data (all masks)",
    )
    args = ap.parse_args()
    info = fastmri_info(resolve_benchmark("mri_x4_singlecoil").scan)
    h, w = info.shape
    den = _prior(args.prior, h)
    sig = karras(args.steps)
    print(
        f"prior {args.prior}, {args.steps} steps, {args.particles} DPS particles, zeta "
        f"{args.zeta}, hard consistency {args.hard_consistency}; "
        f"metrics {metrics.CONVENTIONS['fastmri']}"
    )
    print(f"{'R':>4s} {'mask':11s} {'lines':>5s} {'PSNR':>7s} {'SSIM':>6s} {'s/slice':>8s}")
    for acc in args.accelerations:
        rows: dict[str, list] = {}
        for i in range(min(args.slices, info.n_slices)):
            _, truth = read_fastmri_slice(info, i)
            x = torch.zeros(1, 2, h, w)
            x[0, 0] = truth
            full = O.build(O.MRIConfig(img_size=(h, w), mask="given"), mask=torch.ones(h, w))
            ky = full.A(x)[0]
            kspace = torch.complex(ky[0], ky[1])[None]  # (1, H, W)
            masks = {}
            masks["equispaced"] = O.make_mask(
                "equispaced",
                (h, w),
                acceleration=acc,
                center_fraction=args.center_fraction,
                seed=100 + i,
            )
            n_lines = int(masks["equispaced"][0].sum())
            masks["random"] = _random_mask(h, w, n_lines, args.center_fraction, seed=100 + i)
            for kind, m in masks.items():
                phys = O.build(O.MRIConfig(img_size=(h, w), mask="given"), mask=m)
                t = time.perf_counter()
                res = active_subsampling(
                    den,
                    sig,
                    make_physics=lambda mm: O.build(
                        O.MRIConfig(img_size=(h, w), mask="given"), mask=mm.clone()
                    ),
                    measure=lambda mm, x=x: O.build(
                        O.MRIConfig(img_size=(h, w), mask="given"), mask=mm.clone()
                    ).A(x),
                    initial_mask=phys.mask.reshape(-1, h, w)[0],
                    x_shape=(2, h, w),
                    budget=0,
                    n_particles=args.particles,
                    zeta=args.zeta,
                    generator=torch.Generator().manual_seed(i),
                    hard_consistency=args.hard_consistency,
                )
                rec = res.reconstruction[0].pow(2).sum(0).sqrt()
                rows.setdefault(kind, []).append((rec, truth, n_lines, time.perf_counter() - t))
            t = time.perf_counter()
            res, scale = acquire_fastmri_slice(
                kspace,
                den,
                sig,
                acceleration=w / n_lines,
                center_fraction=args.center_fraction,
                generator=torch.Generator().manual_seed(i),
                scale=1.0,  # the fixed masks see the truth's units too
                n_particles=args.particles,
                zeta=args.zeta,
                hard_consistency=args.hard_consistency,
            )
            rec = res.reconstruction[0].pow(2).sum(0).sqrt() * scale
            lines = int(res.mask.reshape(-1, h, w)[0, 0].sum())
            rows.setdefault("ads", []).append((rec, truth, lines, time.perf_counter() - t))
        for kind, vals in rows.items():
            pred = torch.stack([v[0] for v in vals])
            gt = torch.stack([v[1] for v in vals])
            vm = metrics.fastmri_volume_metrics(pred, gt)
            lines = sum(v[2] for v in vals) / len(vals)
            sec = sum(v[3] for v in vals) / len(vals)
            print(
                f"{acc:4.0f} {kind:11s} {lines:5.1f} {vm['psnr']:7.2f} {vm['ssim']:6.3f} "
                f"{sec:8.1f}"
            )


if __name__ == "__main__":
    main()
