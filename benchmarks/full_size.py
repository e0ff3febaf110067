"""Full-size multi-coil MRI in a memory budget: seconds per slice and peak resident memory.

For each image size S, simulates a fastMRI-raw-layout scan of recon's phantoms (15 coils, 2x
readout oversampling, k-space 2S x 1.15 S, 640 x 368 at S = 320 as fastMRI knees; equispaced x4,
8 % ACS) with ``recon simulate`` (never committed: made here in a temporary folder), then runs
``recon reconstruct`` with each sampler at its defaults (``--batch-size auto``, the default
4 GiB budget or ``--max-memory``) under ``/usr/bin/time -v``, and prints seconds per slice, peak
resident memory, the rows per call ``auto`` chose and PSNR/SSIM (fastMRI convention).

Run: .venv/bin/python benchmarks/full_size.py [--sizes 64 128 320] [--slices 4]
     [--samplers tv dds] [--steps 5] [--max-memory 4GB]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GB) of ``cmd`` (``/usr/bin/time -v``)."""
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return wall, peak_kb / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 320])
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--samplers", nargs="+", default=["tv", "dds"])
    ap.add_argument("--steps", type=int, default=5, help="diffusion steps (tv ignores them)")
    ap.add_argument("--max-memory", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    recon = [sys.executable, "-m", "recon.cli"]
    print(
        f"{'size':>5s} {'k-space':>10s} {'sampler':>8s} {'s/slice':>8s} {'peak GB':>8s} "
        f"{'rows/call':>9s} {'PSNR':>6s} {'SSIM':>6s}"
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for size in args.sizes:
            width = 2 * round(size * 1.15 / 2)  # 368 at 320, as fastMRI knee data
            scan = tmp / f"scan{size}.h5"
            sim = [*recon, "simulate", f"phantoms:{args.slices}:{size}", "-o", str(scan)]
            sim += ["--operator", "mri_multicoil", "--coils", "15", "--acceleration", "4"]
            sim += ["--center-fraction", "0.08", "--readout-oversampling", "2"]
            sim += ["--encoded-width", str(width)]
            wall, peak = _timed(sim)
            print(
                f"{size:5d} {f'{2 * size}x{width}':>10s} {'simulate':>8s} "
                f"{wall / args.slices:8.1f} {peak:8.2f}"
            )
            for sampler in args.samplers:
                out = tmp / f"{sampler}{size}.h5"
                cmd = [*recon, "reconstruct", str(scan), "-o", str(out), "--sampler", sampler]
                cmd += ["--device", args.device]
                if sampler != "tv":
                    cmd += ["--steps", str(args.steps)]
                if args.max_memory:
                    cmd += ["--max-memory", args.max_memory]
                wall, peak = _timed(cmd)
                with h5py.File(out) as f:
                    m = json.loads(f.attrs["metrics"]) if "metrics" in f.attrs else {}
                    per_call = int(f.attrs["rows_per_call"])
                psnr, ssim = m.get("psnr", [float("nan")])[0], m.get("ssim", [float("nan")])[0]
                print(
                    f"{size:5d} {f'{2 * size}x{width}':>10s} {sampler:>8s} "
                    f"{wall / args.slices:8.1f} {peak:8.2f} {per_call:9d} {psnr:6.2f} {ssim:6.3f}"
                )
                out.unlink()


if __name__ == "__main__":
    main()
