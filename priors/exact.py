"""Exact posteriors of Gaussian and Gaussian-mixture priors under a linear measurement.

For ``y = A x0 + sigma_y e`` (A linear, e ~ N(0, I)) and one Gaussian component
``N(mu, Sigma)``: ``S = A Sigma A^T + sigma_y^2 I``, ``K = Sigma A^T S^{-1}``, mean
``mu + K (y - A mu)``, covariance ``Sigma - K A Sigma``, evidence ``N(y; A mu, S)`` (which
reweights mixture components). Computed densely (A as a matrix; small problems and tests) and,
for a single Gaussian, also matrix-free: the mean by conjugate gradient on ``S z = y - A mu`` in
measurement space, and exact samples by Matheron's rule
``x = x_p + Sigma A^T S^{-1} (y - A x_p - sigma_y e)`` with ``x_p`` a prior draw.

These are the references every sampler is tested against.

Reference:
    Bishop, "Pattern Recognition and Machine Learning", 2006, Sec. 2.3.3; Wilson et al.,
    "Efficiently sampling functions from Gaussian process posteriors", ICML 2020 (Matheron's
    rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import deepinv as dinv
import torch
from torch import Tensor

from recon.linalg import conjugate_gradient

from .covariance import LOG2PI, flat

if TYPE_CHECKING:
    from .gaussian import GaussianPrior


@dataclass
class MatrixFree:
    prior: GaussianPrior
    physics: dinv.physics.LinearPhysics
    y: Tensor
    sigma_y: float
    iters: int
    tol: float

    def correct(self, x_p: Tensor, e: Tensor | None) -> Tensor:
        """``x_p + Sigma A^T S^{-1} (y - A x_p - sigma_y e)``; x_p (B, d)."""
        pr, ph = self.prior, self.physics
        shape = pr.shape
        x_img = x_p.reshape(-1, *shape)
        r = self.y - ph.A(x_img.to(self.y.dtype))
        if e is not None:
            r = r - self.sigma_y * e
        s2 = self.sigma_y**2

        def apply_s(z: Tensor) -> Tensor:
            sig_at = pr.cov.matvec(flat(ph.A_adjoint(z)).double())
            return ph.A(sig_at.reshape(-1, *shape).to(z.dtype)) + s2 * z

        z = conjugate_gradient(apply_s, r, n_iter=self.iters, tol=self.tol)
        return x_p + pr.cov.matvec(flat(ph.A_adjoint(z)).double())


class GaussianPosterior:
    """An exact Gaussian posterior per measurement (dense or matrix-free).

    Attributes:
        shape: event shape.
        log_evidence: ``log p(y)`` per measurement, shape (B,) (dense only).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        mean_flat: Tensor | None,
        *,
        cov: Tensor | None = None,
        log_evidence: Tensor | None = None,
        matrix_free: MatrixFree | None = None,
    ) -> None:
        self.shape = shape
        self._mean = mean_flat
        self.cov = cov
        self.log_evidence = log_evidence
        self._mf = matrix_free

    @property
    def mean(self) -> Tensor:
        """Posterior mean, shape (B, *shape), float64."""
        if self._mean is None:
            mf = self._mf
            b = mf.y.shape[0]
            self._mean = mf.correct(mf.prior.mean.expand(b, -1).clone(), None)
        return self._mean.reshape(-1, *self.shape)

    @property
    def std(self) -> Tensor:
        """Exact posterior standard deviation per pixel, shape (B, *shape) (dense only)."""
        if self.cov is None:
            raise ValueError(
                "the matrix-free posterior has no closed-form std: use method='dense' or "
                "estimate it from posterior.sample(n)"
            )
        sd = self.cov.diagonal().clamp_min(0).sqrt()
        return sd.expand(self._mean.shape[0], -1).reshape(-1, *self.shape)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact posterior draws per measurement, shape (n, B, *shape), float64."""
        if self.cov is not None:
            b = self._mean.shape[0]
            lam, v = torch.linalg.eigh(0.5 * (self.cov + self.cov.T))
            root = v * lam.clamp_min(0).sqrt()
            z = torch.randn(
                n,
                b,
                self.cov.shape[0],
                dtype=torch.float64,
                generator=generator,
                device=self.cov.device,
            )
            return (self._mean + z @ root.T).reshape(n, b, *self.shape)
        mf = self._mf
        b = mf.y.shape[0]
        # one CG solve per chunk of draws: stacked along the batch when there is one
        # measurement (an operator with per-sample parameters then still sees a valid batch)
        per_call = 256 if b == 1 else 1
        out = []
        for start in range(0, n, per_call):
            k = min(per_call, n - start)
            x_p = mf.prior.cov.sample_noise(k * b, generator) + mf.prior.mean
            e = torch.randn(
                (k * b, *mf.y.shape[1:]), dtype=mf.y.dtype, device=mf.y.device, generator=generator
            )
            sub = MatrixFree(
                mf.prior,
                mf.physics,
                mf.y.repeat(k, *([1] * (mf.y.ndim - 1))),
                mf.sigma_y,
                mf.iters,
                mf.tol,
            )
            out.append(sub.correct(x_p, e).reshape(k, b, *self.shape))
        return torch.cat(out)

    def sample_rows(self, streams: Sequence[torch.Generator]) -> Tensor:
        """One draw per measurement, row i from ``streams[i]`` alone: (B, *shape), float64."""
        if self.cov is not None:
            lam, v = torch.linalg.eigh(0.5 * (self.cov + self.cov.T))
            root = v * lam.clamp_min(0).sqrt()
            d = self.cov.shape[0]
            z = torch.stack(
                [
                    torch.randn(d, dtype=torch.float64, generator=g, device=self.cov.device)
                    for g in streams
                ]
            )
            return (self._mean + z @ root.T).reshape(-1, *self.shape)
        mf = self._mf
        x_p = torch.cat([mf.prior.cov.sample_noise(1, g) for g in streams]) + mf.prior.mean
        e = torch.stack(
            [
                torch.randn(mf.y.shape[1:], dtype=mf.y.dtype, device=mf.y.device, generator=g)
                for g in streams
            ]
        )
        return mf.correct(x_p, e).reshape(-1, *self.shape)


def dense_gaussian_posterior(
    mean: Tensor, cov: Tensor, a: Tensor, y: Tensor, s2: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Dense linear-Gaussian posterior.

    Args:
        mean: prior mean (d,); cov: prior covariance (d, d); a: operator matrix (m, d);
        y: measurements (B, m); s2: noise variance.

    Returns:
        posterior means (B, d), posterior covariance (d, d), log evidence ``log N(y; A mu, S)``
        (B,). All float64.
    """
    sig_at = cov @ a.T  # (d, m)
    s = a @ sig_at + s2 * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    s = 0.5 * (s + s.T)
    # S may be singular (e.g. masked-out entries of a noiseless inpainting measurement): use an
    # eigendecomposition and the pseudo-inverse on its range; those entries carry no information.
    lam, u = torch.linalg.eigh(s)
    tol = lam.max().clamp_min(1e-300) * a.shape[0] * torch.finfo(torch.float64).eps * 10
    keep = lam > tol
    inv = torch.where(keep, 1.0 / lam.clamp_min(tol), torch.zeros_like(lam))
    resid = y - mean @ a.T  # (B, m)
    proj = resid @ u  # (B, m)
    gain_t = (u * inv) @ u.T @ sig_at.T  # S^+ A Sigma, (m, d)
    post_mean = mean + resid @ gain_t
    post_cov = cov - sig_at @ gain_t
    post_cov = 0.5 * (post_cov + post_cov.T)
    quad = (proj**2 * inv).sum(dim=1)
    logdet = torch.log(lam[keep]).sum()
    n_eff = int(keep.sum())
    log_ev = -0.5 * (quad + logdet + n_eff * LOG2PI)
    return post_mean, post_cov, log_ev


class GaussianMixturePosterior:
    """Exact posterior mixture: log-weights (B, K), means (B, K, d), covariances (K, d, d)."""

    def __init__(
        self, shape: tuple[int, ...], log_weights: Tensor, means: Tensor, covs: Tensor
    ) -> None:
        self.shape = shape
        self.log_weights = log_weights
        self.means = means
        self.covs = covs

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def mean(self) -> Tensor:
        """Posterior mean, (B, *shape), float64."""
        m = (self.weights[..., None] * self.means).sum(dim=1)
        return m.reshape(-1, *self.shape)

    @property
    def std(self) -> Tensor:
        """Posterior std per coordinate (law of total variance), (B, *shape)."""
        w = self.weights[..., None]
        m = (w * self.means).sum(dim=1, keepdim=True)
        var_within = w[..., 0] @ torch.diagonal(self.covs, dim1=1, dim2=2)
        var_between = (w * (self.means - m) ** 2).sum(dim=1)
        return (var_within + var_between).clamp_min(0).sqrt().reshape(-1, *self.shape)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws per measurement, shape (n, B, *shape), float64."""
        b, k, d = self.means.shape
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator).T
        z = torch.randn(
            n, b, d, dtype=torch.float64, generator=generator, device=self.means.device
        )
        out = self.means[torch.arange(b)[None, :], comp].clone()  # (n, B, d)
        for j in range(k):
            lam, v = torch.linalg.eigh(0.5 * (self.covs[j] + self.covs[j].T))
            root = v * lam.clamp_min(0).sqrt()
            sel = comp == j
            if bool(sel.any()):
                out[sel] = out[sel] + z[sel] @ root.T
        return out.reshape(n, b, *self.shape)

    def sample_rows(self, streams: Sequence[torch.Generator]) -> Tensor:
        """One draw per measurement, row i from ``streams[i]`` alone: (B, *shape), float64."""
        b, _, d = self.means.shape
        roots = {}
        out = []
        for i, g in enumerate(streams):
            comp = int(torch.multinomial(self.weights[i], 1, generator=g))
            if comp not in roots:
                c = self.covs[comp]
                lam, v = torch.linalg.eigh(0.5 * (c + c.T))
                roots[comp] = v * lam.clamp_min(0).sqrt()
            z = torch.randn(d, dtype=torch.float64, generator=g, device=self.means.device)
            out.append(self.means[i, comp] + roots[comp] @ z)
        return torch.stack(out).reshape(b, *self.shape)
