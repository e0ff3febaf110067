"""SMC samplers on the grid mixture: sliced Wasserstein vs particle count, and wall time.

For each problem (``recon.toy.mixture_problem``: the 25-component grid mixture in dimension d,
a random d_y x d operator, the MCGdiff benchmark's construction), each particle count N and each
SMC sampler, ``n_ref`` draws are compared (SW1, 100 directions) with ``n_ref`` exact posterior
draws. Two protocols:

* ``independent`` (default): the sampler's own output, one draw per measurement, for ``n_ref``
  copies of the measurement: ``n_ref`` independent clouds of N particles (run as one batch);
* ``cloud``: one cloud of N particles resampled ∝ weights to ``n_ref`` draws (its error also
  holds the one cloud's Monte-Carlo error on the mode weights).

Reference lines: ``floor`` = SW between two independent sets of ``n_ref`` exact draws (mean over
5 pairs: the best any sampler can score at this ``n_ref``); ``exact-score`` = the same diffusion
(ancestral steps on the same schedule) run with the exact score of the *posterior* mixture, i.e.
the discretisation error alone; DPS (VP weighting, zeta 0.2) with ``n_ref`` draws. Mean over
``--problems`` problems; seconds per run of ``n_ref`` draws.

Run: .venv/bin/python benchmarks/smc_sw.py [--dims 8 80] [--dys 1 2] [--particles 16 64 256]
     [--protocol independent|cloud] [--n-ref 500] [--problems 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from recon.metrics import sliced_wasserstein
from recon.priors import GaussianMixturePrior
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
    ap.add_argument("--protocol", choices=["independent", "cloud"], default="independent")
    ap.add_argument("--samplers", nargs="+", default=list(SMC), choices=list(SMC))
    args = ap.parse_args()
    sig = karras(args.steps, sigma_min=0.01, sigma_max=100.0).double()
    print(
        f"SW1 to exact posterior ({args.n_ref} draws), {args.steps} steps, protocol "
        f"{args.protocol}, mean over {args.problems} problems; seconds per {args.n_ref} draws"
    )
    print(f"{'d':>4s} {'d_y':>4s} {'sampler':11s} {'N':>5s} {'SW':>7s} {'/floor':>7s} {'s':>7s}")
    for d in args.dims:
        for dy in args.dys:
            rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for i in range(args.problems):
                prob = mixture_problem(d, dy, seed=7000 + 100 * d + 10 * dy + i)
                g = torch.Generator().manual_seed(i)
                ref = prob.posterior.sample(args.n_ref, generator=g)[:, 0]
                ys = prob.y.expand(args.n_ref, -1).clone()

                def sw(s, ref=ref):
                    return sliced_wasserstein(s, ref, generator=torch.Generator().manual_seed(0))

                floor = [
                    sw(prob.posterior.sample(args.n_ref, generator=g)[:, 0]) for _ in range(5)
                ]
                rows.setdefault(("floor", args.n_ref), []).append((sum(floor) / 5, 0.0))
                post = prob.posterior
                exact_score = GaussianMixturePrior(post.weights[0], post.means[0], post.covs)
                for label, den, zeta in (("exact-score", exact_score, 0.0), ("dps", None, 0.2)):
                    t = time.perf_counter()
                    s = sample_dps(
                        den or prob.prior,
                        ys,
                        prob.physics,
                        sig,
                        zeta=zeta,
                        normalize=False,
                        vp_scale=1.0,
                        generator=torch.Generator().manual_seed(i),
                    )
                    rows.setdefault((label, args.n_ref), []).append(
                        (sw(s), time.perf_counter() - t)
                    )
                for name in args.samplers:
                    fn = SMC[name]
                    for n in args.particles:
                        t = time.perf_counter()
                        if args.protocol == "independent":
                            s = fn(
                                prob.prior,
                                ys,
                                prob.physics,
                                sig,
                                n_particles=n,
                                generator=torch.Generator().manual_seed(i),
                            )
                        else:
                            r = fn(
                                prob.prior,
                                prob.y,
                                prob.physics,
                                sig,
                                n_particles=n,
                                return_particles=True,
                                generator=torch.Generator().manual_seed(i),
                            )
                            idx = torch.multinomial(
                                torch.exp(r.log_weights[0]), args.n_ref, True, generator=g
                            )
                            s = r.particles[0][idx]
                        rows.setdefault((name, n), []).append((sw(s), time.perf_counter() - t))
            fl = sum(v[0] for v in rows[("floor", args.n_ref)]) / args.problems
            for (name, n), vals in rows.items():
                m_sw = sum(v[0] for v in vals) / len(vals)
                m_t = sum(v[1] for v in vals) / len(vals)
                print(
                    f"{d:4d} {dy:4d} {name:11s} {n:5d} {m_sw:7.3f} {m_sw / fl:7.2f} {m_t:7.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
