"""Structured covariance matrices with the shifted solves exact Gaussian priors need.

A :class:`Covariance` is one of

* spectral: ``Sigma = V diag(lam) V^T + iso (I - V V^T)`` with orthonormal V (d, r); a full
  matrix (r = d, by ``eigh``), low-rank plus isotropic diagonal (probabilistic PCA), and a
  scaled identity are all of this form;
* Woodbury: ``Sigma = U U^T + diag(D)`` with U (d, r), r small, D a general positive diagonal
  (a plain diagonal covariance is r = 0).

Every operation takes per-sample shifts ``s2`` of shape (B,): ``(Sigma + s2 I)^{-1} v`` and
``log det(Sigma + s2 I)``, the two pieces of every Gaussian denoiser and density. Computations
run in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG2PI = math.log(2 * math.pi)


def flat(x: Tensor) -> Tensor:
    """(B, *shape) -> (B, d)."""
    return x.reshape(x.shape[0], -1)


class Covariance:
    """A d x d covariance in spectral or Woodbury form (see module docstring)."""

    def __init__(
        self,
        *,
        V: Tensor | None = None,
        lam: Tensor | None = None,
        iso: float = 0.0,
        U: Tensor | None = None,
        D: Tensor | None = None,
        dim: int,
    ) -> None:
        self.dim = dim
        if V is not None:
            self.kind = "spectral"
            self.V = V.double()
            self.lam = lam.double().clamp_min(0)
            self.iso = float(iso)
        else:
            self.kind = "woodbury"
            self.U = (U if U is not None else torch.zeros(dim, 0)).double()
            self.D = D.double()

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_any(cls, cov: Tensor | tuple[Tensor, Tensor | float], dim: int) -> Covariance:
        """From a (d,) diagonal, a (d, d) full matrix, or a (U, D) low-rank + diagonal pair."""
        if isinstance(cov, tuple):
            u, dg = cov
            u = torch.as_tensor(u).double()
            dg_t = torch.as_tensor(dg, dtype=torch.float64)
            if dg_t.ndim == 0 or bool((dg_t == dg_t.reshape(-1)[0]).all()):
                c = float(dg_t.reshape(-1)[0])
                return cls.low_rank_iso(u, c)
            return cls(U=u, D=dg_t.expand(dim).clone(), dim=dim)
        cov = torch.as_tensor(cov).double()
        if cov.ndim == 1:
            return cls(D=cov.clone(), dim=dim)
        if cov.ndim == 2 and cov.shape == (dim, dim):
            lam, v = torch.linalg.eigh(0.5 * (cov + cov.T))
            return cls(V=v, lam=lam, iso=0.0, dim=dim)
        raise ValueError(
            f"covariance must be (d,), (d, d) or (U, D); got shape {tuple(cov.shape)}"
        )

    @classmethod
    def low_rank_iso(cls, u: Tensor, c: float) -> Covariance:
        """``U U^T + c I`` in spectral form (SVD of U)."""
        u = u.double()
        if u.shape[1] == 0:
            return cls(V=u, lam=u.new_zeros(0), iso=c, dim=u.shape[0])
        v, s, _ = torch.linalg.svd(u, full_matrices=False)
        return cls(V=v, lam=s**2 + c, iso=c, dim=u.shape[0])

    def to(self, device: torch.device | str) -> Covariance:
        for name in ("V", "lam", "U", "D"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def rank(self) -> int:
        return self.V.shape[1] if self.kind == "spectral" else self.U.shape[1]

    # -- operations on (B, d) float64 ------------------------------------------------------------
    def matvec(self, v: Tensor) -> Tensor:
        """``Sigma v`` for v of shape (B, d)."""
        if self.kind == "spectral":
            c = v @ self.V
            out = (c * self.lam) @ self.V.T
            if self.rank < self.dim:
                out = out + self.iso * (v - c @ self.V.T)
            return out
        return v * self.D + (v @ self.U) @ self.U.T

    def solve_shifted(self, v: Tensor, s2: Tensor) -> Tensor:
        """``(Sigma + s2 I)^{-1} v`` per sample; v (B, d), s2 (B,)."""
        s2 = s2.double().reshape(-1, 1)
        if self.kind == "spectral":
            c = v @ self.V
            out = (c / (self.lam + s2)) @ self.V.T
            if self.rank < self.dim:
                out = out + (v - c @ self.V.T) / (self.iso + s2)
            return out
        k_inv = 1.0 / (self.D + s2)  # (B, d)
        kv = v * k_inv
        if self.rank == 0:
            return kv
        cap = torch.eye(self.rank, dtype=v.dtype, device=v.device) + torch.einsum(
            "dr,bd,ds->brs", self.U, k_inv, self.U
        )
        w = torch.linalg.solve(cap, (kv @ self.U).unsqueeze(-1)).squeeze(-1)
        return kv - (w @ self.U.T) * k_inv

    def logdet_shifted(self, s2: Tensor) -> Tensor:
        """``log det(Sigma + s2 I)`` per sample, shape (B,)."""
        s2 = s2.double().reshape(-1, 1)
        if self.kind == "spectral":
            out = torch.log(self.lam + s2).sum(dim=1)
            if self.rank < self.dim:
                out = out + (self.dim - self.rank) * torch.log(self.iso + s2[:, 0])
            return out
        k = self.D + s2
        out = torch.log(k).sum(dim=1)
        if self.rank == 0:
            return out
        cap = torch.eye(self.rank, dtype=k.dtype, device=k.device) + torch.einsum(
            "dr,bd,ds->brs", self.U, 1.0 / k, self.U
        )
        return out + torch.linalg.slogdet(cap)[1]

    def sample_noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """n draws of ``N(0, Sigma)``, shape (n, d), float64."""
        dev = self.V.device if self.kind == "spectral" else self.D.device
        z = torch.randn(n, self.dim, dtype=torch.float64, device=dev, generator=generator)
        if self.kind == "spectral":
            c = z @ self.V
            out = (c * self.lam.sqrt()) @ self.V.T
            if self.rank < self.dim:
                out = out + math.sqrt(self.iso) * (z - c @ self.V.T)
            return out
        out = z * self.D.sqrt()
        if self.rank:
            z2 = torch.randn(n, self.rank, dtype=torch.float64, device=dev, generator=generator)
            out = out + z2 @ self.U.T
        return out

    def dense(self) -> Tensor:
        """The full (d, d) matrix (float64)."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self._device())
        return self.matvec(eye)

    def diagonal(self) -> Tensor:
        """The diagonal of Sigma, shape (d,)."""
        if self.kind == "spectral":
            out = (self.V**2) @ self.lam
            if self.rank < self.dim:
                out = out + self.iso * (1 - (self.V**2).sum(dim=1))
            return out
        return self.D + (self.U**2).sum(dim=1)

    def _device(self) -> torch.device:
        return self.V.device if self.kind == "spectral" else self.D.device
