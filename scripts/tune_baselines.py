"""Tune TV's lam and DDS's gamma once per benchmark set, on separate tuning phantoms.

For each set in data/benchmarks, two phantoms from seed 778 (not the evaluation seed 777), or
two held-out test digits not in the evaluated ones, are simulated with the set's operator;
TV ``lam`` and DDS ``gamma`` are swept (DDS with the phantom or digits Gaussian prior) and the
best by mean PSNR is recorded in the set's ``info.json`` under
``tuned`` (``recon evaluate`` applies it unless a config or ``--set`` sets it).

Run: .venv/bin/python scripts/tune_baselines.py [--only tv|dds] [--sets NAME ...]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from recon import operators as O
from recon.config import RunConfig, validate
from recon.datasets import benchmark_sets
from recon.phantoms import random_phantoms
from recon.pipeline import run
from recon.simulate import simulate

SWEEPS = {
    "tv": ("lam", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]),
    "dds": ("gamma", [1.0, 10.0, 100.0, 1000.0]),
}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=sorted(SWEEPS), help="tune one sampler, keep the others")
    ap.add_argument("--sets", nargs="*", help="only these sets")
    args = ap.parse_args()
    from recon.digits import load_digits

    phantoms = random_phantoms(2, 64, seed=778)
    digits = load_digits("test")[0][6:8]  # held out from the evaluated digits (rows 0-5)
    for name, bench in benchmark_sets().items():
        if args.sets and name not in args.sets:
            continue
        is_digits = name.startswith("digits")
        images = digits if is_digits else phantoms
        prior = (
            {"kind": "digits_gaussian"} if is_digits else {"kind": "phantom_gaussian", "size": 64}
        )
        info_path = bench.path / "info.json"
        info = json.loads(info_path.read_text())
        op = validate(O.OPERATORS[info["kind"]][0], info["operator"], source=str(info_path))
        complex_ = info["kind"].startswith("mri")
        tuned = dict(info.get("tuned", {}))
        with tempfile.TemporaryDirectory() as tmp:
            scan = simulate(images, op, Path(tmp) / "tune.h5", seed=778)
            for sampler, (param, values) in SWEEPS.items():
                if args.only and sampler != args.only:
                    continue
                scores = {}
                for v in values:
                    cfg = validate(
                        RunConfig,
                        {
                            "input": str(scan),
                            "sampler": {"name": sampler, param: v},
                            "prior": prior if is_digits else {**prior, "complex": complex_},
                            "schedule": {"name": "karras", "n_steps": 50, "sigma_max": 10.0},
                        },
                    )
                    res = run(cfg)
                    scores[v] = sum(res.metrics["psnr"]) / len(res.metrics["psnr"])
                best = max(scores, key=scores.get)
                tuned[sampler] = {
                    param: best,
                    "tuning_psnr": round(scores[best], 2),
                    "swept": {str(k): round(s, 2) for k, s in scores.items()},
                }
                print(
                    f"{name:20s} {sampler:4s} {param}={best:<8g} PSNR {scores[best]:.2f} "
                    f"(swept {', '.join(f'{k:g}: {s:.2f}' for k, s in scores.items())})"
                )
        info["tuned"] = tuned
        info_path.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
