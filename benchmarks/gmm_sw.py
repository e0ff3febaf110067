"""Sliced-Wasserstein distance to the exact posterior on the 25-component grid mixture.

Problem: recon.toy.mixture_problem (the MCGdiff construction, arXiv 2308.07983, Sec. 5).
Metric: SW1 with 100 random directions between n sampler draws and n exact posterior draws
(mean +- 1.96 std / sqrt(n_problems) over random problems, the paper's table format). The
exact-vs-exact line is the Monte-Carlo floor; the prior line is the no-information ceiling.

Run: .venv/bin/python benchmarks/gmm_sw.py [--dims 8 80] [--dys 1 2] [--problems 10] [--n 1000]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from recon.metrics import sliced_wasserstein
from recon.samplers import SAMPLERS
from recon.schedules import karras
from recon.toy import mixture_problem

# (label, sampler, hyperparameters); DPS in network units with the paper's VP weighting and
# the benchmark's zeta' = 0.1 (zeta = 2 zeta' on the un-squared norm)
METHODS = [
    ("dps", "dps", dict(zeta=0.2, vp_scale=1.0, normalize=False)),
    ("dds", "dds", dict()),
    ("reddiff", "reddiff", dict(lr=0.5)),
    ("exact", "exact", dict()),
    ("daps", "daps", dict()),
    # STSL: DPS's step plus the Hessian-trace term (exact products, one probe)
    ("stsl-0.02", "stsl", dict(zeta=0.2, vp_scale=1.0, normalize=False, gamma=0.02)),
    ("stsl-0.2", "stsl", dict(zeta=0.2, vp_scale=1.0, normalize=False, gamma=0.2)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[8, 80])
    ap.add_argument("--dys", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--problems", type=int, default=10)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--only", nargs="+", default=None, help="run only these methods")
    args = ap.parse_args()
    methods = [m for m in METHODS if args.only is None or m[0] in args.only]
    sigmas = karras(args.steps, sigma_min=0.01, sigma_max=100.0).double()
    print(
        f"SW1 to exact posterior samples, n={args.n}, {args.steps} steps, "
        f"{args.problems} problems, mean +- 95% CI half-width"
    )
    print(f"{'d':>4s} {'d_y':>4s} {'method':8s} {'SW':>16s} {'s/run':>7s}")
    for d in args.dims:
        for dy in args.dys:
            rows: dict[str, list[float]] = {"exact-vs-exact": [], "prior": []}
            times: dict[str, float] = {}
            for i in range(args.problems):
                prob = mixture_problem(d, dy, seed=1000 * d + 10 * dy + i)
                g = torch.Generator().manual_seed(i)
                ref = prob.posterior.sample(args.n, generator=g)[:, 0]

                def sw(s, ref=ref):
                    return sliced_wasserstein(s, ref, generator=torch.Generator().manual_seed(0))

                rows["exact-vs-exact"].append(sw(prob.posterior.sample(args.n, generator=g)[:, 0]))
                rows["prior"].append(sw(prob.prior.sample(args.n, generator=g)))
                ys = prob.y.expand(args.n, -1).clone()
                for label, name, kw in methods:
                    t = time.perf_counter()
                    s = SAMPLERS[name].fn(
                        prob.prior,
                        ys,
                        prob.physics,
                        sigmas,
                        generator=torch.Generator().manual_seed(i),
                        **kw,
                    )
                    times[label] = times.get(label, 0.0) + time.perf_counter() - t
                    rows.setdefault(label, []).append(sw(s))
            for label, vals in rows.items():
                v = torch.tensor(vals)
                ci = 1.96 * float(v.std()) / math.sqrt(len(vals))
                tt = f"{times[label] / args.problems:7.2f}" if label in times else ""
                print(f"{d:4d} {dy:4d} {label:14s} {float(v.mean()):7.3f} +- {ci:5.3f} {tt}")


if __name__ == "__main__":
    main()
