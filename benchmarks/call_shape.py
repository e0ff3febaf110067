"""What batch invariance with a network prior costs: calls of a fixed shape vs calls as given.

recon's network denoisers call the network in calls whose shape is fixed by one row's size
(``recon.priors.base.fixed_calls``, ``recon.priors.patches.tile_rows``), so a row's bits never
depend on its batch-mates. This prints, for the bundled networks at the sizes users run, the
seconds per row of one denoiser evaluation with fixed-shape calls and with one call of the
whole batch as given (what recon did before: fast, but a row's result moved by ~1e-7 with the
batch), their ratio, and whether a row alone and among batch-mates gives the same bits.

Run: .venv/bin/python benchmarks/call_shape.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

import torch

from recon.priors import load
from recon.priors import patches as patches_mod

CASES = [  # (prior, image side, rows in the batch)
    ("digits-32", 32, 1),
    ("digits-32", 32, 4),
    ("digits-32", 32, 64),
    ("generic-patch", 64, 1),
    ("generic-patch", 64, 4),
    ("generic-patch", 64, 16),
    ("generic-patch", 128, 1),
    ("generic-patch", 128, 4),
    ("generic-patch", 320, 1),
    ("generic-patch", 320, 2),
]


@contextlib.contextmanager
def as_given(den):
    """The same denoiser with one call of the whole batch (no fixed shape)."""
    if hasattr(den, "call_rows"):
        old, den.call_rows = den.call_rows, 0
        try:
            yield
        finally:
            den.call_rows = old
    else:
        with mock.patch.object(patches_mod, "tile_rows", lambda per_row, cap: 0):
            yield


def _time(den, x, s, repeats: int) -> float:
    with torch.no_grad():
        den(x, s)
        t0 = time.perf_counter()
        for _ in range(repeats):
            den(x, s)
    return (time.perf_counter() - t0) / repeats / x.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} repeats")
    print("| prior | image | rows | fixed s/row | as given s/row | ratio | row alone = in batch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, side, rows in CASES:
        den = load(name)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(rows, 1, side, side, generator=g)
        s = torch.full((rows,), 0.2)
        fixed = _time(den, x, s, args.repeats)
        with as_given(den):
            given = _time(den, x, s, args.repeats)
        with torch.no_grad():
            same = torch.equal(den(x, s)[-1:], den(x[-1:], s[-1:]))
        print(
            f"| {name} | {side} | {rows} | {fixed:.4f} | {given:.4f} | {fixed / given:.2f} "
            f"| {'yes' if same else 'no'} |"
        )


if __name__ == "__main__":
    main()
