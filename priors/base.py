"""The denoiser protocol every prior implements.

``D(x, sigma) = E[x0 | x]`` for ``x = x0 + sigma * n``, ``n ~ N(0, I)`` (variance-exploding
form), with x of shape (B, *) (images (B, C, H, W) or vectors (B, d)) in data units and sigma
of shape (B,) in the same units. Tweedie's formula links it to the score of the noised prior:
``grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """``D(x, sigma) -> E[x0 | x]``; x (B, *), sigma (B,), output shaped like x."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


def as_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or (B,) noise level to a (B,) tensor on x's device and dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        return s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or shape ({x.shape[0]},), got {tuple(s.shape)}")
    return s


def score_from_denoiser(denoiser: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """Tweedie: the score of the noised prior, ``(D(x, sigma) - x) / sigma^2``."""
    s = as_sigma(sigma, x)
    s2 = (s**2).reshape(-1, *([1] * (x.ndim - 1)))
    return (denoiser(x, s) - x) / s2
