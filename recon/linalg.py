"""Per-sample batched linear algebra used by operators and samplers.

Every reduction here is taken over all dimensions except the first (batch) one, so the result
for one batch element never depends on its batch-mates. Complex tensors use conjugated inner
products; real 2-channel MRI tensors are the real representation of a complex image, for which
the plain real inner product equals ``Re <a, b>``, the correct one for a real-linear operator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product ``Re sum(conj(a) * b)``.

    Args:
        a: tensor of shape (B, *), real or complex.
        b: tensor of the same shape as ``a``.

    Returns:
        Real tensor of shape (B,).
    """
    prod = torch.conj(a) * b if a.is_complex() else a * b
    out = prod.reshape(a.shape[0], -1).sum(dim=1)
    return out.real if out.is_complex() else out


def batch_norm(a: Tensor) -> Tensor:
    """Per-sample Euclidean norm of a (B, *) tensor, shape (B,)."""
    return batch_dot(a, a).clamp_min(0).sqrt()


def bview(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) tensor so it broadcasts against ``like`` of shape (B, *)."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def conjugate_gradient(
    apply_m: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    n_iter: int = 50,
    tol: float = 0.0,
) -> Tensor:
    """Solve ``M x = b`` per sample by conjugate gradient (M Hermitian positive semi-definite).

    The step sizes and the stopping test are per sample: a sample whose relative residual
    ``||b - M x|| / ||b||`` falls below ``tol`` is frozen while the others continue, so each
    result is the one that sample would get alone.

    Args:
        apply_m: the operator M, mapping (B, *) to (B, *) and acting on each sample separately.
        b: right-hand side, shape (B, *), real or complex.
        x0: initial guess, shape of ``b`` (zeros if None).
        n_iter: maximum number of CG iterations.
        tol: relative residual tolerance for the per-sample early stop (0 runs all iterations).

    Returns:
        The approximate solution, shape of ``b``.

    Reference:
        Hestenes & Stiefel, "Methods of conjugate gradients for solving linear systems", 1952.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_m(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = batch_dot(r, r)
    b_norm = batch_norm(b)
    threshold = (tol * b_norm) ** 2
    active = rs > threshold
    tiny = torch.finfo(rs.dtype).tiny
    for _ in range(n_iter):
        if not bool(active.any()):
            break
        mp = apply_m(p)
        p_mp = batch_dot(p, mp)
        alpha = torch.where(
            active & (p_mp > tiny), rs / p_mp.clamp_min(tiny), torch.zeros_like(rs)
        )
        x = x + bview(alpha, x).to(x.dtype) * p
        r = r - bview(alpha, r).to(r.dtype) * mp
        rs_new = batch_dot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = torch.where(bview(active, p), r + bview(beta, p).to(p.dtype) * p, p)
        rs = torch.where(active, rs_new, rs)
        active = active & (rs > threshold)
    return x
