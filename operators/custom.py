"""User-defined linear operators (plain callables, dense matrices) as deepinv ``LinearPhysics``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import deepinv as dinv
import torch
from torch import Tensor

from ._common import AdjointError, adjointness_error, gaussian_noise


class FunctionalPhysics(dinv.physics.LinearPhysics):
    """A ``LinearPhysics`` from a forward callable and an optional adjoint callable.

    Without an adjoint, ``A_adjoint(y)`` is the vector-Jacobian product of ``A`` at 0 (exact for
    a linear ``A``), computed with ``torch.func.vjp`` so it also works inside ``no_grad``.
    """

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        adjoint: Callable[[Tensor], Tensor] | None,
        img_size: Sequence[int],
        *,
        sigma_y: float = 0.0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(
            img_size=tuple(img_size), noise_model=gaussian_noise(sigma_y), device=device
        )
        self._forward = forward
        self._adjoint = adjoint

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return self._forward(x)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        if self._adjoint is not None:
            return self._adjoint(y)
        x0 = torch.zeros((y.shape[0], *self.img_size), dtype=y.dtype, device=y.device)
        _, pullback = torch.func.vjp(self._forward, x0)
        return pullback(y)[0]


def from_functions(
    A: Callable[[Tensor], Tensor],
    A_adjoint: Callable[[Tensor], Tensor] | None = None,
    *,
    img_size: Sequence[int],
    sigma_y: float = 0.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    adjoint_tol: float | None = None,
) -> FunctionalPhysics:
    """Wrap plain callables as a linear operator.

    Args:
        A: forward map, (B, *img_size) -> (B, *meas_shape); must be linear and act per sample.
        A_adjoint: its adjoint; computed by autograd when None.
        img_size: shape of one input, without the batch dimension.
        sigma_y: std of the Gaussian measurement noise.
        device: device of the probe used for the check.
        dtype: dtype of the probe used for the check.
        adjoint_tol: largest accepted relative adjointness error of a supplied adjoint
            (default 1e-4 for float32, 1e-10 for float64).

    Raises:
        AdjointError: the supplied adjoint fails the check; the message names the error.
    """
    physics = FunctionalPhysics(A, A_adjoint, img_size, sigma_y=sigma_y, device=device)
    if A_adjoint is not None:
        tol = (
            adjoint_tol if adjoint_tol is not None else (1e-10 if dtype == torch.float64 else 1e-4)
        )
        err = adjointness_error(physics, (2, *img_size), dtype=dtype, device=device)
        if not err <= tol:
            raise AdjointError(
                f"A_adjoint is not the adjoint of A: relative error |<Ax,y> - <x,A_adjoint y>| / "
                f"(||Ax|| ||y||) = {err:.3e} > {tol:.0e} on a random probe; check A_adjoint, "
                "or pass A_adjoint=None to use the autograd adjoint"
            )
    return physics


class MatrixPhysics(dinv.physics.LinearPhysics):
    """A dense matrix ``M`` (m, d) acting on vectors: ``A(x) = x M^T`` for x of shape (B, d)."""

    def __init__(
        self, matrix: Tensor, *, sigma_y: float = 0.0, device: torch.device | str | None = None
    ) -> None:
        m = torch.as_tensor(matrix)
        if m.ndim != 2:
            raise ValueError(f"from_matrix needs a 2-D matrix, got shape {tuple(m.shape)}")
        dev = device if device is not None else m.device
        super().__init__(img_size=(m.shape[1],), noise_model=gaussian_noise(sigma_y), device=dev)
        self.register_buffer("matrix", m.to(dev))
        self.register_buffer("pinv", torch.linalg.pinv(m.double()).to(m.dtype).to(dev))

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return x @ self.matrix.to(x.dtype).T

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        return y @ self.matrix.to(y.dtype)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        return y @ self.pinv.to(y.dtype).T


def from_matrix(
    M: Tensor,
    sigma_y: float = 0.0,
    *,
    device: torch.device | str | None = None,
) -> MatrixPhysics:
    """A dense linear operator on vectors of shape (B, d): ``y = M x + sigma_y n``.

    Args:
        M: matrix of shape (m, d).
        sigma_y: std of the Gaussian measurement noise.
        device: device of the operator (that of ``M`` when None).
    """
    return MatrixPhysics(M, sigma_y=sigma_y, device=device)


def operator_matrix(
    physics: dinv.physics.LinearPhysics,
    img_size: Sequence[int],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    chunk: int = 256,
) -> Tensor:
    """The dense matrix (m, d) of a linear operator, by applying it to the standard basis.

    ``d = prod(img_size)`` forward calls in chunks; meant for small problems and tests.
    A ``MatrixPhysics`` returns its matrix directly.
    """
    if isinstance(physics, MatrixPhysics):
        return physics.matrix.to(dtype=dtype, device=device)
    if dtype in (torch.float32, torch.float64):
        from ._common import cast

        physics = cast(physics, dtype)  # buffers in the basis' dtype (CT's grid_sample)
    d = 1
    for s in img_size:
        d *= int(s)
    cols = []
    for start in range(0, d, chunk):
        n = min(chunk, d - start)
        e = torch.zeros(n, d, dtype=dtype, device=device)
        e[torch.arange(n), torch.arange(start, start + n)] = 1.0
        cols.append(physics.A(e.reshape(n, *img_size)).reshape(n, -1))
    return torch.cat(cols, dim=0).T.contiguous()
