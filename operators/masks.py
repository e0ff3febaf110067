"""MRI sampling masks, with fastMRI semantics, drawn from an explicit ``torch.Generator``.

Cartesian 1-D masks select phase-encode columns (the last, width, dimension), as fastMRI does:

``random`` (fastMRI ``RandomMaskFunc``)
    ``num_low = round(W * center_fraction)`` central columns always kept (from
    ``(W - num_low + 1) // 2``); every other column kept with probability
    ``(W / acceleration - num_low) / (W - num_low)``.
``equispaced`` (fastMRI ``EquispacedMaskFractionFunc``)
    the same centre, plus columns ``round(offset + k * a)``, where
    ``a = acceleration * (num_low - W) / (num_low * acceleration - W)`` is chosen so that the
    total sampled fraction is ``1 / acceleration``, and ``offset`` is uniform in ``[0, round(a))``.
``vd2d``
    a 2-D variable-density random mask: a fully sampled central disc of radius
    ``center_fraction * min(H, W) / 2`` and Bernoulli sampling elsewhere with density
    ``(1 - r)^power`` (``r`` the normalised radius), scaled by bisection so that the expected
    sampled fraction is ``1 / acceleration``.

Reference:
    Zbontar et al., "fastMRI: An Open Dataset and Benchmarks for Accelerated MRI",
    arXiv 1811.08839 (``fastmri/data/subsample.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def num_low_frequencies(width: int, center_fraction: float) -> int:
    """Number of always-sampled central columns, ``round(W * center_fraction)``."""
    return round(width * center_fraction)


def _center(width: int, num_low: int) -> Tensor:
    m = torch.zeros(width, dtype=torch.bool)
    pad = (width - num_low + 1) // 2
    m[pad : pad + num_low] = True
    return m


def cartesian_mask(
    kind: str,
    shape: tuple[int, int],
    *,
    acceleration: float,
    center_fraction: float,
    generator: torch.Generator,
) -> Tensor:
    """A 1-D Cartesian mask broadcast over rows.

    Args:
        kind: ``"random"`` or ``"equispaced"``.
        shape: (H, W) of k-space.
        acceleration: nominal acceleration R (sampled fraction 1/R).
        center_fraction: fraction of central columns always sampled (ACS).
        generator: random stream (CPU).

    Returns:
        Float 0/1 tensor of shape (H, W), constant along H.
    """
    h, w = shape
    num_low = num_low_frequencies(w, center_fraction)
    if num_low * acceleration > w:
        raise ValueError(
            f"center_fraction {center_fraction} keeps {num_low} of {w} columns, more than "
            f"1/acceleration = 1/{acceleration} of them: lower center_fraction or acceleration"
        )
    mask = _center(w, num_low)
    if kind == "random":
        prob = (w / acceleration - num_low) / max(w - num_low, 1)
        mask |= torch.rand(w, generator=generator) < prob
    elif kind == "equispaced":
        if num_low * acceleration == w:
            pass  # the centre alone already has the requested fraction
        else:
            adjusted = (acceleration * (num_low - w)) / (num_low * acceleration - w)
            hi = max(round(adjusted), 1)
            offset = int(torch.randint(0, hi, (1,), generator=generator))
            cols = torch.arange(offset, w - 1, adjusted)
            mask[torch.round(cols).long().clamp(max=w - 1)] = True
    else:
        raise ValueError(f"unknown Cartesian mask kind {kind!r}; use 'random' or 'equispaced'")
    return mask.float().expand(h, w).clone()


def variable_density_mask(
    shape: tuple[int, int],
    *,
    acceleration: float,
    center_fraction: float,
    generator: torch.Generator,
    power: float = 3.0,
) -> Tensor:
    """2-D variable-density random mask (see module docstring), shape (H, W), float 0/1."""
    h, w = shape
    yy = (torch.arange(h, dtype=torch.float64) - h / 2 + 0.5) / (h / 2)
    xx = (torch.arange(w, dtype=torch.float64) - w / 2 + 0.5) / (w / 2)
    r = torch.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2) / math.sqrt(2)
    center = r * math.sqrt(2) <= center_fraction
    density = (1 - r).clamp_min(0) ** power
    target = h * w / acceleration - float(center.sum())
    if target < 0:
        raise ValueError("center_fraction too large for the requested acceleration")
    lo, hi = 0.0, 1e6
    outside = ~center
    for _ in range(100):  # bisection on the density scale c: sum(min(1, c d)) = target
        c = 0.5 * (lo + hi)
        if float((c * density[outside]).clamp(max=1).sum()) > target:
            hi = c
        else:
            lo = c
    prob = (lo * density).clamp(max=1.0)
    u = torch.rand(h, w, generator=generator, dtype=torch.float64)
    return ((u < prob) | center).float()


def make_mask(
    kind: str,
    shape: tuple[int, int],
    *,
    acceleration: float,
    center_fraction: float,
    seed: int,
    n_masks: int | None = None,
) -> Tensor:
    """One mask (H, W), or ``n_masks`` independent ones (n_masks, 1, H, W), from ``seed``.

    Mask ``i`` of a batch is drawn from its own stream ``seed + i``, so it does not depend on
    how many masks are drawn with it.
    """

    def one(s: int) -> Tensor:
        g = torch.Generator("cpu").manual_seed(s)
        if kind == "vd2d":
            return variable_density_mask(
                shape, acceleration=acceleration, center_fraction=center_fraction, generator=g
            )
        return cartesian_mask(
            kind, shape, acceleration=acceleration, center_fraction=center_fraction, generator=g
        )

    if n_masks is None:
        return one(seed)
    return torch.stack([one(seed + i)[None] for i in range(n_masks)])
