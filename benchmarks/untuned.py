"""Untuned defaults against the classical baseline on every bundled benchmark set.

For each set and each sampler, ``recon evaluate`` with the sampler's library defaults (no tuned
value from the set's ``info.json`` is applied: ``--set sampler.KEY=VALUE`` overrides only what
the command line gives), the set's default prior, 50 Karras steps, 1 sample per item, seed 0;
beside it the baseline (``pinv``; ``fbp`` on CT). Prints one Markdown table, PSNR mean ± std
over the set's items, in the set's metric convention (fastMRI for MRI, image otherwise), and
marks a sampler below its baseline with ``<``.

Usage::

    .venv/bin/python benchmarks/untuned.py --samplers dps --out /tmp/untuned \
        [--set sampler.dps.zeta=0.25] [--sets mri_x4_singlecoil ct_sparse_30] [--samples 8] \
        [--items 0 1]

``--set sampler.NAME.KEY=VALUE`` overrides a hyperparameter of sampler NAME only; any other
``--set KEY=VALUE`` (e.g. ``prior=phantom-64``) applies to every sampler's run. With
``--samples 8`` each cell adds the per-pixel coverage of the 50 % and 90 % credible intervals
(``recon evaluate``'s ``coverage``; at most (S - 1) / (S + 1) = 0.78 with S = 8 samples).
``--items`` evaluates those items of each set only, the baseline too (for the costly SMC
samplers; the table then says so). A sampler that refuses a set's operator (MCGdiff without
an SVD) gets its one-line reason in the cell.

Results are cached per (set, sampler, overrides) folder under ``--out`` (``recon evaluate`` is
resumable), so a rerun with one more sampler only runs that sampler.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from recon.config import run_config
from recon.datasets import benchmark_sets, resolve_benchmark
from recon.errors import SamplerInputError
from recon.evaluate import evaluate


def overrides_for(sampler: str, overrides: list[str]) -> list[str]:
    """The ``--set`` items that apply to ``sampler``'s runs: every item not under ``sampler.``,
    then ``sampler.NAME.KEY=VALUE`` of this sampler as ``sampler.KEY=VALUE``."""
    common = [o for o in overrides if not o.startswith("sampler.")]
    prefix = f"sampler.{sampler}."
    return common + [o.replace(prefix, "sampler.", 1) for o in overrides if o.startswith(prefix)]


def _one(
    set_name: str,
    sampler: str,
    overrides: list[str],
    out: Path,
    samples: int = 1,
    items: list[int] | None = None,
) -> dict:
    bench = resolve_benchmark(set_name)
    tag = hashlib.sha1(" ".join(overrides).encode()).hexdigest()[:8] if overrides else "defaults"
    part = f"-items{'_'.join(map(str, items))}" if items else ""
    folder = out / set_name / f"{sampler}-{tag}-s{samples}{part}"
    cfg = run_config(None, sampler=sampler, overrides=overrides, n_samples=samples, items=items)
    # the library's defaults: the set's tuned values are applied only to fields left unset, so
    # mark every hyperparameter as set to its default
    fields = type(cfg.sampler).model_fields
    cfg = cfg.model_copy(
        update={"sampler": type(cfg.sampler)(**{k: getattr(cfg.sampler, k) for k in fields})}
    )
    t = time.perf_counter()
    res = evaluate(bench, cfg, folder)
    res["wall_s"] = time.perf_counter() - t
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=["dps"])
    ap.add_argument("--sets", nargs="+", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--samples", type=int, default=1, help="per item; 2+ adds the 50 %% / 90 %% coverage"
    )
    ap.add_argument("--items", type=int, nargs="+", default=None, help="only these items")
    args = ap.parse_args()
    sets = args.sets or sorted(benchmark_sets())
    head = " | ".join(args.samplers)
    if args.items:
        print(f"items {' '.join(map(str, args.items))} of each set only\n")
    print(f"| set | baseline | {head} |")
    print("| --- | --- | " + " | ".join("---" for _ in args.samplers) + " |")
    for name in sets:
        base = resolve_benchmark(name).baseline
        b = _one(name, base, [], args.out, items=args.items)
        cells = []
        for s in args.samplers:
            try:
                r = _one(
                    name, s, overrides_for(s, args.overrides), args.out, args.samples, args.items
                )
            except SamplerInputError as err:  # e.g. MCGdiff on an operator without an SVD
                cells.append(f"(refuses: {str(err).split(';')[0]})")
                continue
            flag = " <" if r["psnr"]["mean"] < b["psnr"]["mean"] else ""
            cell = f"{r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f}{flag} ({r['wall_s']:.0f} s)"
            if "coverage" in r:
                cell += f", cov {r['coverage']['0.5']:.2f} / {r['coverage']['0.9']:.2f}"
            cells.append(cell)
        print(
            f"| {name} | {b['psnr']['mean']:.2f} ± {b['psnr']['std']:.2f} ({base}) | "
            + " | ".join(cells)
            + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
