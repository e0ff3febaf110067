"""Network speed options (``--dtype``, ``--channels-last``, ``--compile``): time per denoiser
call relative to float32, and the change of the output (figures, no asserts).

For each bundled network prior (``digits-32``, ``phantom-64``), one batch of noisy images at a
mid noise level: the median of ``--repeat`` timed calls after warm-up, per option, the ratio
to float32 (< 1 is faster), and the largest absolute change of the denoised output (data
units). ``--compile`` includes nothing of its compile time in the ratio (it is printed apart).

Run: .venv/bin/python benchmarks/speed_options.py [--device cuda] [--batch 16] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recon.priors import load
from recon.priors.speed import accelerate


def _time(fn, device: torch.device, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    options = {
        "float32": {},
        "bfloat16": {"dtype": "bfloat16"},
        "float16": {"dtype": "float16"},
        "channels-last": {"channels_last": True},
    }
    if not args.no_compile:
        options["compile"] = {"compile": True}
    print(f"device {device}, batch {args.batch}, median of {args.repeat} calls")
    print(f"{'prior':12s} {'option':14s} {'ms/call':>9s} {'ratio':>7s} {'max |diff|':>11s}")
    for name in ("digits-32", "phantom-64"):
        den = load(name, device=device)
        shape = (args.batch, *den.shape)
        g = torch.Generator(device).manual_seed(0)
        x = torch.rand(shape, generator=g, device=device) + 0.3 * torch.randn(
            shape, generator=g, device=device
        )
        s = torch.full((args.batch,), 0.3, device=device)
        ref, base = None, None
        for opt, kw in options.items():
            fast = accelerate(den, **kw)
            with torch.no_grad():
                t0 = time.perf_counter()
                out = fast(x, s)  # warm-up (and compilation)
                first = time.perf_counter() - t0
                ms = 1e3 * _time(lambda f=fast, x=x, s=s: f(x, s), device, args.repeat)
            if ref is None:
                ref, base = out, ms
            diff = float((out - ref).abs().max())
            extra = f"  (first call {first:.1f} s)" if opt == "compile" else ""
            print(f"{name:12s} {opt:14s} {ms:9.2f} {ms / base:7.2f} {diff:11.2e}{extra}")


if __name__ == "__main__":
    main()
