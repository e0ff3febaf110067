"""The denoiser protocol every prior implements.

``D(x, sigma) = E[x0 | x]`` for ``x = x0 + sigma * n``, ``n ~ N(0, I)`` (variance-exploding
form), with x of shape (B, *) (images (B, C, H, W) or vectors (B, d)) in data units and sigma
of shape (B,) in the same units. Tweedie's formula links it to the score of the noised prior:
``grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2``.
"""

from __future__ import annotations

from collections.abc import Callable
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


CALL_VALUES = 1 << 12
"""Values per row times rows per call that size a network call (:func:`call_rows`): 4 rows of
32 x 32, 1 of 64 x 64. A row alone pays for the padding of its call (``benchmarks/README.md``,
"Batch invariance with a network prior: its cost"), so calls stay small."""
MAX_CALL_ROWS = 16
"""The most rows one network call takes."""


def call_rows(x: Tensor) -> int:
    """Rows per network call for inputs shaped like ``x`` (B, *): ``CALL_VALUES`` values per
    call, between 1 and ``MAX_CALL_ROWS`` rows, from the shape of one row only (never from B),
    so that a row meets the same call shape in any batch."""
    return max(1, min(MAX_CALL_ROWS, CALL_VALUES // max(1, x[0].numel())))


def fixed_calls(fn: Callable[..., Tensor], rows: int, *tensors: Tensor) -> Tensor:
    """``fn(*tensors)`` computed in calls of exactly ``rows`` rows each.

    A network's kernels choose their algorithm, blocking and summation order by the shape of
    the call: on a CPU, 4 rows through recon's UNet in one call and in 4 calls of one row
    differ by about 1e-7. Calls of one fixed shape make a row's bits independent of how many
    rows share its call, so results do not move with the batch size, the number of ranks or a
    resume (tests/test_invariance.py). The tensors are split along dim 0 (all of length B);
    the last chunk is padded by repeating its last row and the padding's outputs are dropped,
    which costs at most ``rows - 1`` rows per call of ``fixed_calls``. ``rows <= 0`` makes
    one call as given (training, where the batch is fixed anyway).
    """
    n = tensors[0].shape[0]
    if rows <= 0 or n == rows:
        return fn(*tensors)
    outs = []
    for lo in range(0, n, rows):
        part = [t[lo : lo + rows] for t in tensors]
        k = part[0].shape[0]
        if k < rows:
            part = [torch.cat([t, t[-1:].expand(rows - k, *t.shape[1:])]) for t in part]
        outs.append(fn(*part)[:k])
    return torch.cat(outs)
