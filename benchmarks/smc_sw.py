"""SMC samplers on the grid mixture: sliced Wasserstein vs particle count, and wall time.

For each problem (recon.toy.mixture_problem), each particle count N and each SMC sampler, one
weighted cloud per measurement is resampled to ``n_ref`` draws and compared (SW1, 100
directions) with ``n_ref`` exact posterior draws; DPS (VP weighting, zeta 0.2) with ``n_ref``
independent draws is the reference line, and ``floor`` is the SW between two independent sets
of ``n_ref`` exact posterior draws (the best any sampler can score at this ``n_ref``). Mean over
``--problems`` problems.

Run: .venv/bin/python benchmarks/smc_sw.py [--dims 8 80 800] [--dys 1 2 4] [--particles 16 64 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from recon.metrics import sliced_wasserstein
from recon.samplers import sample_afdps, sample_dps, sample_fps, sample_mcgdiff, sample_tds
from recon.schedules import karras
from recon.toy import mixture_problem

SMC = {
    "tds": sample_tds,
    "mcgdiff": sample_mcgdiff,
    "fps": sample_fps,
    "afdps": sample_afdps,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 80])
    ap.add_argument("--dys", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--particles", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--n-ref", type=int, default=500)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--samplers", nargs="+", default=list(SMC), choices=list(SMC))
    args = ap.parse_args()
    sig = karras(args.steps, sigma_min=0.01, sigma_max=100.0).double()
    print(
        f"SW1 to exact posterior ({args.n_ref} draws), {args.steps} steps, mean over "
        f"{args.problems} problems; seconds per measurement"
    )
    print(f"{'d':>4s} {'d_y':>4s} {'sampler':8s} {'N':>5s} {'SW':>7s} {'s':>7s}")
    for d in args.dims:
        for dy in args.dys:
            rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for i in range(args.problems):
                prob = mixture_problem(d, dy, seed=7000 + 100 * d + 10 * dy + i)
                g = torch.Generator().manual_seed(i)
                ref = prob.posterior.sample(args.n_ref, generator=g)[:, 0]

                def sw(s, ref=ref):
                    return sliced_wasserstein(s, ref, generator=torch.Generator().manual_seed(0))

                floor = prob.posterior.sample(args.n_ref, generator=g)[:, 0]
                rows.setdefault(("floor", args.n_ref), []).append((sw(floor), 0.0))
                for name in args.samplers:
                    fn = SMC[name]
                    for n in args.particles:
                        t = time.perf_counter()
                        r = fn(
                            prob.prior,
                            prob.y,
                            prob.physics,
                            sig,
                            n_particles=n,
                            return_particles=True,
                            generator=torch.Generator().manual_seed(i),
                        )
                        dt = time.perf_counter() - t
                        idx = torch.multinomial(
                            torch.exp(r.log_weights[0]), args.n_ref, replacement=True, generator=g
                        )
                        rows.setdefault((name, n), []).append((sw(r.particles[0][idx]), dt))
                t = time.perf_counter()
                s = sample_dps(
                    prob.prior,
                    prob.y.expand(args.n_ref, -1).clone(),
                    prob.physics,
                    sig,
                    zeta=0.2,
                    vp_scale=1.0,
                    generator=torch.Generator().manual_seed(i),
                )
                dt = time.perf_counter() - t
                rows.setdefault(("dps", args.n_ref), []).append((sw(s), dt))
            for (name, n), vals in rows.items():
                m_sw = sum(v[0] for v in vals) / len(vals)
                m_t = sum(v[1] for v in vals) / len(vals)
                print(f"{d:4d} {dy:4d} {name:8s} {n:5d} {m_sw:7.3f} {m_t:7.2f}")


if __name__ == "__main__":
    main()
