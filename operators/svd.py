"""Singular value decompositions of linear operators, for samplers that work coordinate-wise
in the right-singular basis (MCGdiff).

``A = U diag(s) V^T`` with ``V`` orthogonal on the image space and ``U`` with orthonormal
columns. Coordinates: ``x_bar = V^T x`` (same number of entries as x), ``y_bar = U^T y`` laid out
like ``x_bar`` (entries with ``s = 0`` unobserved), so ``y_bar = s * x_bar + sigma_y e`` on the
observed entries.

Available for deepinv's ``DecomposablePhysics`` (inpainting: U = V = I, s = mask; single-coil
Cartesian MRI: V = orthonormal 2-D FFT on the 2-channel real layout, s = mask) and for dense
matrices (:func:`recon.operators.from_matrix`, SVD by LAPACK).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import deepinv as dinv
import torch
from torch import Tensor

from .custom import MatrixPhysics


@dataclass(frozen=True)
class SVD:
    """Coordinate maps of ``A = U diag(s) V^T`` (see module docstring).

    Attributes:
        v_adjoint: ``x (N, *x_shape) -> x_bar (N, *bar_shape)``.
        v: ``x_bar -> x`` (inverse of ``v_adjoint``).
        u_adjoint: ``y (N, *y_shape) -> y_bar (N, *bar_shape)``.
        s: singular values (1, *bar_shape), real, >= 0 (0 on unobserved entries).
    """

    v_adjoint: Callable[[Tensor], Tensor]
    v: Callable[[Tensor], Tensor]
    u_adjoint: Callable[[Tensor], Tensor]
    s: Tensor


def svd(physics: dinv.physics.Physics, x_like: Tensor) -> SVD:
    """The SVD maps of ``physics`` for images shaped like ``x_like`` (1, *x_shape).

    Raises:
        TypeError: the operator has no SVD recon knows (it is neither a deepinv
            ``DecomposablePhysics`` nor a dense matrix).
    """
    if isinstance(physics, MatrixPhysics):
        m = physics.matrix.to(x_like.dtype)
        u, s, vh = torch.linalg.svd(m, full_matrices=True)
        d = m.shape[1]
        s_full = torch.zeros(1, d, dtype=x_like.dtype, device=x_like.device)
        s_full[0, : s.numel()] = s
        k = s.numel()

        def u_adjoint(y: Tensor) -> Tensor:
            out = torch.zeros(y.shape[0], d, dtype=y.dtype, device=y.device)
            out[:, :k] = y @ u[:, :k]
            return out

        return SVD(lambda x: x @ vh.T, lambda xb: xb @ vh, u_adjoint, s_full)
    if isinstance(physics, dinv.physics.DecomposablePhysics):
        s = torch.as_tensor(physics.mask, dtype=x_like.dtype, device=x_like.device)
        if torch.is_complex(s) or bool((s < 0).any()):
            raise TypeError("this decomposable operator's mask is not a non-negative real")
        bar = physics.V_adjoint(x_like)
        s = torch.broadcast_to(s, bar.shape).clone()
        return SVD(physics.V_adjoint, physics.V, physics.U_adjoint, s)
    raise TypeError(
        f"{type(physics).__name__} has no SVD recon knows; MCGdiff needs inpainting, "
        "single-coil Cartesian MRI or a dense matrix (from_matrix)"
    )
