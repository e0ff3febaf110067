"""Posterior summaries: several samples per measurement, their mean and standard deviation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import deepinv as dinv
import torch
from torch import Tensor

from recon.priors.base import Denoiser
from recon.samplers._steps import Generators, make_streams
from recon.samplers.baselines import _row_physics


@dataclass
class PosteriorSummary:
    """Per-measurement posterior summary.

    Attributes:
        mean: (B, *x_shape) sample mean.
        std: (B, *x_shape) sample standard deviation (unbiased; zeros when n_samples == 1).
        samples: (B, n_samples, *x_shape), or None when not kept.
    """

    mean: Tensor
    std: Tensor
    samples: Tensor | None


def posterior_summary(
    sampler: Callable[..., Tensor],
    denoiser: Denoiser,
    y: Tensor,
    physics: dinv.physics.Physics,
    sigmas: Tensor,
    *,
    n_samples: int,
    generator: Generators = None,
    max_batch: int = 16,
    keep_samples: bool = True,
    callback: Callable[[int, int], None] | None = None,
    **hyperparameters: Any,
) -> PosteriorSummary:
    """Run a sampler ``n_samples`` times per measurement as extra batch rows.

    Measurement j's samples come from ``n_samples`` streams seeded from its own stream
    (``generator`` as in :func:`make_streams`) and are drawn in chunks of at most ``max_batch``
    rows, one measurement at a time (so per-sample masks work, and neither the chunk size nor
    the other measurements change a result).

    Args:
        sampler: a ``sample_<name>`` function.
        denoiser, y, physics, sigmas: as for the sampler.
        n_samples: samples per measurement.
        generator: per-measurement streams.
        max_batch: rows per sampler call (the memory budget).
        keep_samples: return the samples too.
        callback: called as ``callback(0, total)`` when the work starts and
            ``callback(done, total)`` after each chunk (progress bars time from the first).
        hyperparameters: passed to the sampler.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    b = y.shape[0]
    streams = make_streams(generator, b, torch.device("cpu"))
    total = b * n_samples
    done = 0
    if callback is not None:
        callback(0, total)
    means, stds, kept = [], [], []
    for j in range(b):
        seeds = torch.randint(0, 2**62, (n_samples,), generator=streams[j]).tolist()
        row_physics = _row_physics(physics, j, b)
        draws = []
        for start in range(0, n_samples, max_batch):
            k = min(max_batch, n_samples - start)
            gens: Sequence[torch.Generator] = [
                torch.Generator(y.device).manual_seed(int(s)) for s in seeds[start : start + k]
            ]
            yk = y[j : j + 1].expand(k, *y.shape[1:]).clone()
            draws.append(
                sampler(denoiser, yk, row_physics, sigmas, generator=gens, **hyperparameters)
            )
            done += k
            if callback is not None:
                callback(done, total)
        s = torch.cat(draws)
        means.append(s.mean(0))
        stds.append(s.std(0) if n_samples > 1 else torch.zeros_like(s[0]))
        if keep_samples:
            kept.append(s)
    return PosteriorSummary(
        torch.stack(means), torch.stack(stds), torch.stack(kept) if keep_samples else None
    )
