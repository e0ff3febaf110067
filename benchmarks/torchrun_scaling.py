"""Throughput of ``recon reconstruct`` on 1 and N processes under torchrun (figures, no asserts).

Simulates a multi-coil MRI scan of recon's phantoms, reconstructs it with DDS and the
phantom Gaussian prior (sized to the scan) in one process and under ``torchrun
--nproc-per-node N`` (gloo on CPU, one thread per rank; ``--device cuda``: NCCL, one GPU per
rank), checks the outputs are bit-identical, and prints rows per second of the sampling phase
(``rows_s`` in the results file: every rank, to the last round), the merge (rank 0's reduction,
``merge_s``) and the whole command's wall time (imports and process start included).

Run: .venv/bin/python benchmarks/torchrun_scaling.py [--ranks 2] [--items 8] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def _run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr[-2000:])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    recon = [sys.executable, "-m", "recon.cli"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        scan = tmp / "scan.h5"
        _run(
            [
                *(*recon, "simulate", f"phantoms:{args.items}:{args.size}"),
                *("-o", str(scan), "--operator", "mri_multicoil"),
            ],
            1,
        )
        common = ["reconstruct", str(scan), "--sampler", "dds", "--steps", str(args.steps)]
        common += ["--samples", str(args.samples), "--batch-size", str(args.batch_size)]
        common += ["--device", args.device]
        runs = {
            "1 process, 1 thread": ([*recon], 1),
            f"1 process, {args.ranks} threads": ([*recon], args.ranks),
            f"torchrun {args.ranks} ranks x 1 thread": (
                [
                    *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
                    *(f"--nproc-per-node={args.ranks}", "-m", "recon.cli"),
                ],
                1,
            ),
        }
        rows = args.items * args.samples
        print(
            f"reconstruct: MRI 8-coil {args.size}x{args.size}, {args.items} slices x "
            f"{args.samples} samples = {rows} rows, DDS {args.steps} steps, batch "
            f"{args.batch_size}, {args.device}"
        )
        print(f"{'run':34s} {'rows/s':>8s} {'items/s':>8s} {'merge s':>8s} {'command s':>10s}")
        outs = {}
        for name, (launch, threads) in runs.items():
            out = tmp / f"{len(outs)}.h5"
            wall = _run([*launch, *common, "-o", str(out)], threads)
            with h5py.File(out) as f:
                rows_s, merge_s = float(f.attrs["rows_s"]), float(f.attrs["merge_s"])
                outs[name] = f["reconstruction"][()]
            print(
                f"{name:34s} {rows / rows_s:8.2f} {args.items / rows_s:8.2f} "
                f"{merge_s:8.3f} {wall:10.1f}"
            )
        ref = next(iter(outs.values()))
        same = {name: bool(np.array_equal(ref, o)) for name, o in outs.items()}
        print("bit-identical to the first run:", same)


if __name__ == "__main__":
    main()
