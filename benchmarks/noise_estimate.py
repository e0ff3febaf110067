"""Accuracy of the noise level recon estimates from fastMRI-layout k-space.

For each geometry, simulates scans of recon's phantoms with a known noise std (``recon
simulate``'s record removed, as in fastMRI's files, which record none), opens them as
``recon reconstruct`` does (:class:`recon.sources.FastMRISource`) and prints the estimate's
relative error over seeds: with 2x readout oversampling (the rule for fastMRI raw files) and
without (the k-space periphery, which holds signal: an upper bound).

Run: .venv/bin/python benchmarks/noise_estimate.py [--seeds 5] [--sigma 0.02]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from recon import io
from recon import operators as O
from recon.phantoms import random_phantoms
from recon.simulate import simulate
from recon.sources import FastMRISource

#: (label, image size, oversampling factor, coils, slices)
GEOMETRIES = [
    ("single-coil 64, oversampled", 64, 2, 1, 2),
    ("4 coils 32, oversampled", 32, 2, 4, 2),
    ("8 coils 48, oversampled", 48, 2, 8, 3),
    ("15 coils 320 (640 x 368), oversampled", 320, 2, 15, 2),
    ("single-coil 64, no oversampling", 64, 1, 1, 2),
    ("8 coils 64, no oversampling", 64, 1, 8, 2),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sigma", type=float, default=0.02)
    args = ap.parse_args()
    print("| geometry | rule | relative error per seed | mean abs | s per file |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as d:
        for label, size, over, coils, slices in GEOMETRIES:
            enc = (over * size, size if size < 320 else 368)
            kw = dict(
                img_size=(size, size),
                encoded_size=enc if enc != (size, size) else None,
                acceleration=4,
                center_fraction=0.08 if size >= 320 else 0.125,
                sigma_y=args.sigma,
            )
            cfg = O.MultiCoilMRIConfig(**kw, n_coils=coils) if coils > 1 else O.MRIConfig(**kw)
            errs, secs, rule = [], [], ""
            for seed in range(args.seeds):
                path = Path(d) / f"s{seed}.h5"
                simulate(
                    random_phantoms(slices, size, seed=seed), cfg, path, seed=seed, force=True
                )
                with h5py.File(path, "a") as f:
                    del f.attrs["operator"]
                t = time.perf_counter()
                with io.open_h5(path) as f:
                    src = FastMRISource(f, None)
                secs.append(time.perf_counter() - t)
                errs.append(src.noise.file_units / args.sigma - 1)
                rule = src.noise.origin
            cells = ", ".join(f"{e:+.3f}" for e in errs)
            print(
                f"| {label} | {rule} | {cells} | {np.mean(np.abs(errs)):.3f} | "
                f"{np.mean(secs):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
