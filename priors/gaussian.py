"""Exact Gaussian and Gaussian-mixture priors as denoisers: ``E[x0 | x]``, scores, densities,
exact draws.

For ``x0 ~ N(mu, Sigma)`` and ``x = x0 + sigma n``:

* denoiser ``E[x0 | x] = x - sigma^2 (Sigma + sigma^2 I)^{-1} (x - mu)``;
* score ``grad log p_sigma(x) = -(Sigma + sigma^2 I)^{-1} (x - mu)``.

For a mixture ``sum_k w_k N(mu_k, Sigma_k)`` the noised density is the mixture of
``N(mu_k, Sigma_k + sigma^2 I)``, the responsibilities ``r_k(x)`` are its normalised terms, and
``E[x0 | x] = sum_k r_k(x) E_k[x0 | x]``.

Fitting (PPCA, k-means++, EM) is in :mod:`recon.priors.fitting`; exact posteriors given a
linear measurement are in :mod:`recon.priors.exact`.

Reference:
    Bishop, "Pattern Recognition and Machine Learning", 2006, Sec. 2.3.3 and 12.2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import deepinv as dinv
import torch
from torch import Tensor

from recon.operators import cast, noise_sigma, operator_matrix

from .base import as_sigma
from .covariance import LOG2PI, Covariance, flat
from .exact import (
    GaussianMixturePosterior,
    GaussianPosterior,
    MatrixFree,
    dense_gaussian_posterior,
)


def _gaussian_logpdf(x: Tensor, mean: Tensor, cov: Covariance, s2: Tensor) -> Tensor:
    """log N(x; mean, cov + s2 I) per sample; x (B, d) float64, mean (d,)."""
    diff = x - mean
    quad = (diff * cov.solve_shifted(diff, s2)).sum(dim=1)
    return -0.5 * (quad + cov.logdet_shifted(s2) + cov.dim * LOG2PI)


class GaussianPrior:
    """Exact Gaussian prior ``N(mean, cov)`` on tensors of shape ``shape``.

    Args:
        mean: tensor of shape ``shape`` (or (d,)).
        cov: (d,) diagonal, (d, d) full, or a (U, D) pair meaning ``U U^T + diag(D)`` with U of
            shape (d, r) and D a scalar or (d,) vector; or a :class:`Covariance`.
        shape: event shape, e.g. (1, 28, 28); ``mean.shape`` when None.
    """

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor | tuple[Tensor, Tensor | float] | Covariance,
        *,
        shape: Sequence[int] | None = None,
    ) -> None:
        mean = torch.as_tensor(mean)
        self.shape = tuple(shape) if shape is not None else tuple(mean.shape)
        self.dim = math.prod(self.shape)
        self.mean = mean.reshape(self.dim).double()
        self.cov = cov if isinstance(cov, Covariance) else Covariance.from_any(cov, self.dim)

    # -- the Denoiser protocol ---------------------------------------------------------------
    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact ``E[x0 | x0 + sigma n = x]``; x (B, *shape), sigma (B,)."""
        s = as_sigma(sigma, x).double()
        xf = flat(x).double()
        out = xf - (s**2)[:, None] * self.cov.solve_shifted(xf - self.mean, s**2)
        return out.to(x.dtype).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_sigma(x) = -(Sigma + sigma^2 I)^{-1} (x - mu)``, shaped like x."""
        s = as_sigma(sigma, x).double()
        xf = flat(x).double()
        return (-self.cov.solve_shifted(xf - self.mean, s**2)).to(x.dtype).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log p_sigma(x)`` per sample, shape (B,), float64."""
        s = as_sigma(sigma, x).double()
        return _gaussian_logpdf(flat(x).double(), self.mean, self.cov, s**2)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws, shape (n, *shape), float64."""
        return (self.mean + self.cov.sample_noise(n, generator)).reshape(n, *self.shape)

    def to(self, device: torch.device | str) -> GaussianPrior:
        self.mean = self.mean.to(device)
        self.cov.to(device)
        return self

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, data: Tensor, *, rank: int | None = None, eps: float = 1e-6) -> GaussianPrior:
        """Maximum-likelihood fit (see :func:`recon.priors.fitting.fit_gaussian`)."""
        from .fitting import fit_gaussian

        return fit_gaussian(data, rank=rank, eps=eps)

    # -- exact posterior -----------------------------------------------------------------------
    def posterior(
        self,
        physics: dinv.physics.LinearPhysics,
        y: Tensor,
        *,
        sigma_y: float | None = None,
        method: str = "auto",
        cg_iters: int = 200,
        cg_tol: float = 1e-10,
    ) -> GaussianPosterior:
        """The exact posterior ``p(x0 | y)`` for ``y = A x0 + sigma_y e``.

        Args:
            physics: linear operator (one measurement per row of y).
            y: measurements, shape (B, *meas_shape).
            sigma_y: noise std (from ``physics``' noise model when None).
            method: ``"dense"`` (A as a matrix: exact covariance, evidence; d up to a few
                thousand), ``"cg"`` (matrix-free mean and exact samples), or ``"auto"``
                (dense when d <= 4096).
            cg_iters, cg_tol: conjugate-gradient settings of the matrix-free method.
        """
        s_y = noise_sigma(physics) if sigma_y is None else float(sigma_y)
        if method == "auto":
            method = "dense" if self.dim <= 4096 else "cg"
        if method == "dense":
            a = operator_matrix(physics, self.shape, device=self.mean.device)
            mean, cov, log_ev = dense_gaussian_posterior(
                self.mean, self.cov.dense(), a, flat(y).double(), s_y**2
            )
            return GaussianPosterior(self.shape, mean, cov=cov, log_evidence=log_ev)
        if method != "cg":
            raise ValueError(f"method must be 'auto', 'dense' or 'cg', got {method!r}")
        return GaussianPosterior(
            self.shape,
            None,
            # the solve runs in float64: the operator too (CT's grid_sample refuses mixed dtypes)
            matrix_free=MatrixFree(
                self, cast(physics, torch.float64), y.double(), s_y, cg_iters, cg_tol
            ),
        )

    @property
    def data_std(self) -> float:
        """The prior's pixel std, ``sqrt(trace(cov) / d)`` (data units)."""
        return float(self.cov.diagonal().mean().sqrt())

    def to_complex(self) -> GaussianPrior:
        """The same prior on complex (2-channel: real, imaginary) MRI images, (2, H, W): this
        one in the real channel, a zero-mean imaginary channel with the isotropic (PPCA
        residual) variance, as objects that are real up to noise. Needs a 1-channel prior
        in spectral (PPCA) form."""
        if self.shape[0] != 1 or self.cov.kind != "spectral":
            raise ValueError("to_complex needs a 1-channel prior with a spectral covariance")
        d = self.dim
        v = torch.zeros(2 * d, self.cov.V.shape[1], dtype=torch.float64, device=self.mean.device)
        v[:d] = self.cov.V
        mean = torch.zeros(2 * d, dtype=torch.float64, device=self.mean.device)
        mean[:d] = self.mean
        cov = Covariance(V=v, lam=self.cov.lam, iso=self.cov.iso, dim=2 * d)
        return GaussianPrior(mean, cov, shape=(2, *self.shape[1:]))


class GaussianMixturePrior:
    """Exact Gaussian-mixture prior ``sum_k w_k N(mu_k, Sigma_k)``.

    Args:
        weights: (K,) mixture weights (normalised here).
        means: (K, *shape) or (K, d) component means.
        covs: one covariance spec per component (see :class:`GaussianPrior`), or a (K, d)
            tensor of diagonals, or a (K, d, d) tensor of full matrices.
        shape: event shape (``means.shape[1:]`` when None).
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covs: Sequence[Tensor | tuple[Tensor, Tensor | float] | Covariance] | Tensor,
        *,
        shape: Sequence[int] | None = None,
    ) -> None:
        means = torch.as_tensor(means)
        self.shape = tuple(shape) if shape is not None else tuple(means.shape[1:])
        self.dim = math.prod(self.shape)
        k = means.shape[0]
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be K non-negative numbers with a positive sum")
        self.log_weights = torch.log(w / w.sum())
        self.means = means.reshape(k, self.dim).double()
        if isinstance(covs, Tensor):
            covs = list(covs)
        if len(covs) != k:
            raise ValueError(f"{k} means but {len(covs)} covariances")
        self.covs = [
            c if isinstance(c, Covariance) else Covariance.from_any(c, self.dim) for c in covs
        ]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def data_std(self) -> float:
        """The prior's pixel std (data units): ``sqrt(E||x - E x||^2 / d)`` of the mixture."""
        w = self.weights.to(self.means.dtype)
        center = (w[:, None] * self.means).sum(0)
        within = torch.stack([c.diagonal().mean() for c in self.covs]).to(w)
        between = ((self.means - center) ** 2).mean(1)
        return float((w * (within + between)).sum().sqrt())

    def _diagonals(self) -> Tensor | None:
        """(K, d) covariance diagonals when every component is diagonal, else None."""
        if not hasattr(self, "_diag_cache"):
            diags = []
            for c in self.covs:
                if c.kind == "woodbury" and c.rank == 0:
                    diags.append(c.D.expand(self.dim))
                elif c.kind == "spectral" and c.rank == 0:
                    diags.append(torch.full((self.dim,), c.iso, dtype=torch.float64))
                else:
                    diags = None
                    break
            self._diag_cache = torch.stack(diags).to(self.means.device) if diags else None
        return self._diag_cache

    def _diag_parts(self, xf: Tensor, s2: Tensor) -> tuple[Tensor, Tensor]:
        """Diagonal mixtures: log responsibilities (B, K) and ``sum_k r_k (Sigma_k + s2)^-1
        (x - mu_k)`` (B, d) by four GEMMs per distinct noise level (no (B, K, d) tensor)."""
        diag = self._diagonals()

        def parts(x: Tensor, u: float) -> tuple[Tensor, Tensor]:
            inv = 1.0 / (diag + u)  # (K, d)
            mi = self.means * inv
            quad = (x * x) @ inv.T - 2 * x @ mi.T + (self.means * mi).sum(1)
            logdet = torch.log(diag + u).sum(1)
            lr = self.log_weights - 0.5 * (quad + logdet + self.dim * LOG2PI)
            r = torch.softmax(lr, dim=1)
            return lr, x * (r @ inv) - r @ mi

        levels = torch.unique(s2).tolist()
        if len(levels) == 1:
            return parts(xf, levels[0])
        log_r = xf.new_zeros(xf.shape[0], self.n_components)
        sol = torch.zeros_like(xf)
        for u in levels:
            rows = s2 == u
            lr, so = parts(xf[rows], u)
            log_r = log_r.index_put((rows,), lr)
            sol = sol.index_put((rows,), so)
        return log_r, sol

    def _log_resp(self, xf: Tensor, s2: Tensor) -> Tensor:
        """Unnormalised log responsibilities (B, K) of the noised mixture."""
        if self._diagonals() is not None:
            return self._diag_parts(xf, s2)[0]
        cols = [
            self.log_weights[k] + _gaussian_logpdf(xf, self.means[k], self.covs[k], s2)
            for k in range(self.n_components)
        ]
        return torch.stack(cols, dim=1)

    def _solve(self, xf: Tensor, s2: Tensor) -> Tensor:
        """``sum_k r_k(x) (Sigma_k + s2 I)^-1 (x - mu_k)`` (B, d): minus the noised score."""
        if self._diagonals() is not None:
            return self._diag_parts(xf, s2)[1]
        resp = torch.softmax(self._log_resp(xf, s2), dim=1)  # (B, K)
        out = torch.zeros_like(xf)
        for k in range(self.n_components):
            out = out + resp[:, k : k + 1] * self.covs[k].solve_shifted(xf - self.means[k], s2)
        return out

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Exact ``E[x0 | x] = x - sigma^2 grad log p_sigma(x)``; x (B, *shape), sigma (B,)."""
        s = as_sigma(sigma, x).double()
        s2 = s**2
        xf = flat(x).double()
        out = xf - s2[:, None] * self._solve(xf, s2)
        return out.to(x.dtype).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_sigma(x)``, shaped like x."""
        s = as_sigma(sigma, x).double()
        xf = flat(x).double()
        return (-self._solve(xf, s**2)).to(x.dtype).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log p_sigma(x)`` per sample, (B,), float64."""
        s = as_sigma(sigma, x).double()
        return torch.logsumexp(self._log_resp(flat(x).double(), s**2), dim=1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws, shape (n, *shape), float64."""
        dev = self.means.device
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        out = torch.empty(n, self.dim, dtype=torch.float64, device=dev)
        for k in range(self.n_components):
            idx = (comp == k).nonzero().reshape(-1)
            if idx.numel():
                out[idx] = self.means[k] + self.covs[k].sample_noise(idx.numel(), generator)
        return out.reshape(n, *self.shape)

    def to(self, device: torch.device | str) -> GaussianMixturePrior:
        self.log_weights = self.log_weights.to(device)
        self.means = self.means.to(device)
        for c in self.covs:
            c.to(device)
        self.__dict__.pop("_diag_cache", None)
        return self

    def posterior(
        self, physics: dinv.physics.LinearPhysics, y: Tensor, *, sigma_y: float | None = None
    ) -> GaussianMixturePosterior:
        """The exact posterior mixture for ``y = A x0 + sigma_y e`` (dense; small problems)."""
        s_y = noise_sigma(physics) if sigma_y is None else float(sigma_y)
        a = operator_matrix(physics, self.shape, device=self.means.device)
        yf = flat(y).double()
        means, covs, logw = [], [], []
        for k in range(self.n_components):
            m, c, ev = dense_gaussian_posterior(self.means[k], self.covs[k].dense(), a, yf, s_y**2)
            means.append(m)
            covs.append(c)
            logw.append(self.log_weights[k] + ev)
        log_w = torch.stack(logw, dim=1)
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
        return GaussianMixturePosterior(
            self.shape, log_w, torch.stack(means, 1), torch.stack(covs)
        )

    @classmethod
    def fit(
        cls, data: Tensor, n_components: int, **options: Any
    ) -> GaussianMixturePrior | tuple[GaussianMixturePrior, list[float]]:
        """EM fit of a mixture of PPCA components (see
        :func:`recon.priors.fitting.fit_mixture`, which takes the ``options``)."""
        from .fitting import fit_mixture

        return fit_mixture(data, n_components, **options)
