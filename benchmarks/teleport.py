"""Network calls saved by analytical teleportation (``--teleport auto``) at equal PSNR.

For each benchmark set, its network prior (digit sets: digits-32, phantom sets: phantom-64,
real-image sets: generic-patch) and each sampler, three ``recon evaluate`` runs with seed 0 and
1 sample per item:

* ``full``: the default 50-step schedule from pure noise;
* ``teleport``: ``--teleport auto``, the same schedule started at the level where the network's
  Gaussian partner denoises as well as the network (:mod:`recon.teleport`), from an exact draw
  of the Gaussian posterior;
* ``short``: no teleportation, a schedule with as many levels as the teleported run keeps
  (the control: is it the Gaussian start, or just fewer steps?).

Prints one Markdown table: NFE per sample and PSNR (of the mean of ``--samples`` draws; mean
over the set, image convention per item) of each run, the NFE saved, and the per-item PSNR
change against ``full`` with its standard error (single posterior draws vary by 1-2 dB per
item, so the change is resolved only to that error). Runs are cached per folder under
``--out`` (``recon evaluate`` is resumable).

Usage::

    .venv/bin/python benchmarks/teleport.py --out /tmp/teleport [--samplers dps dds tds] \
        [--sets digits_inpaint_70 mri_x4_singlecoil real_ct_sparse_30] \
        [--set sampler.tds.n_particles=16] [--items 0 1 2]

``--set KEY=VALUE`` applies to every run (``sampler.NAME.KEY`` only to sampler NAME's runs);
``--items`` evaluates those items of each set only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from untuned import overrides_for  # benchmarks/ is the script's folder

from recon.config import run_config
from recon.datasets import resolve_benchmark
from recon.evaluate import evaluate

#: set -> its network prior (each has a Gaussian partner for teleportation)
SETS = {
    "digits_inpaint_70": "digits-32",
    "digits_sr_x4": "digits-32",
    "mri_x4_singlecoil": "phantom-64",
    "ct_sparse_30": "phantom-64",
    "real_mri_x4_singlecoil": "generic-patch",
    "real_ct_sparse_30": "generic-patch",
    "real_inpaint_70": "generic-patch",
}


def _run(
    set_name: str,
    prior: str,
    sampler: str,
    out: Path,
    samples: int,
    overrides: list[str],
    items: list[int] | None,
    **values,
) -> dict:
    tag = "-".join(f"{k}{v}" for k, v in values.items()) or "full"
    mine = overrides_for(sampler, overrides)
    if items is not None:
        values["items"] = items
    cfg = run_config(
        None, sampler=sampler, prior=prior, n_samples=samples, overrides=mine, **values
    )
    t = time.perf_counter()
    extra = "-".join(mine + ([f"items{'_'.join(map(str, items))}"] if items else []))
    folder = out / set_name / f"{sampler}-{tag}-s{samples}{'-' + extra if extra else ''}"
    res = evaluate(resolve_benchmark(set_name), cfg, folder)
    res["wall_s"] = time.perf_counter() - t
    return res


def _psnr(res: dict) -> float:
    return float(res["psnr"]["mean"])


def _nfe(res: dict) -> int:
    return round(res["nfe"]["mean"])


def _paired(a: dict, b: dict) -> str:
    """Mean and standard error of the per-item PSNR difference b - a."""
    d = [rb["psnr"] - ra["psnr"] for ra, rb in zip(a["items"], b["items"], strict=True)]
    mean = sum(d) / len(d)
    se = (sum((v - mean) ** 2 for v in d) / max(len(d) - 1, 1) / len(d)) ** 0.5
    return f"{mean:+.2f} ± {se:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=["dds", "dps"])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=2, help="per item; PSNR of their mean")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--items", type=int, nargs="+", default=None)
    args = ap.parse_args()
    steps = run_config(None).schedule.n_steps
    print(
        "| set | prior | sampler | full NFE / PSNR | teleport NFE / PSNR | short NFE / PSNR "
        "| NFE saved | teleport - full (± s.e.) | short - full |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for set_name in args.sets:
        prior = SETS[set_name]
        for sampler in args.samplers:
            run = (set_name, prior, sampler, args.out, args.samples, args.overrides, args.items)
            full = _run(*run)
            tele = _run(*run, teleport="auto")
            kept = round(steps * _nfe(tele) / max(_nfe(full), 1))
            short = _run(*run, **{"schedule.n_steps": kept})
            saved = 1 - _nfe(tele) / _nfe(full)
            cells = [f"{_nfe(r)} / {_psnr(r):.2f}" for r in (full, tele, short)]
            print(
                f"| {set_name} | {prior} | {sampler} | {' | '.join(cells)} | {saved:.0%} | "
                f"{_paired(full, tele)} | {_paired(full, short)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
