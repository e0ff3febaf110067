"""Exact Gaussian and Gaussian-mixture priors: denoisers, scores, sampling, exact posteriors.

For ``x0 ~ N(mu, Sigma)`` and ``x = x0 + sigma n``:

* denoiser ``E[x0 | x] = x - sigma^2 (Sigma + sigma^2 I)^{-1} (x - mu)``;
* score ``grad log p_sigma(x) = -(Sigma + sigma^2 I)^{-1} (x - mu)``.

For a mixture ``sum_k w_k N(mu_k, Sigma_k)`` the noised density is the mixture of
``N(mu_k, Sigma_k + sigma^2 I)``, the responsibilities ``r_k(x)`` are its normalised terms, and
``E[x0 | x] = sum_k r_k(x) E_k[x0 | x]``.

Exact posterior for ``y = A x0 + sigma_y e`` (A linear, e ~ N(0, I)), per component:
``S = A Sigma A^T + sigma_y^2 I``, ``K = Sigma A^T S^{-1}``, mean ``mu + K (y - A mu)``,
covariance ``Sigma - K A Sigma``, evidence ``N(y; A mu, S)`` (which reweights mixture
components). recon computes it densely (A as a matrix; small problems and tests), and, for a
single Gaussian, also matrix-free: the mean by conjugate gradient on ``S z = y - A mu`` in
measurement space, and exact samples by Matheron's rule
``x = x_p + Sigma A^T S^{-1} (y - A x_p - sigma_y e)`` with ``x_p`` a prior draw.

Reference:
    Bishop, "Pattern Recognition and Machine Learning", 2006, Sec. 2.3.3 (linear-Gaussian
    posteriors) and 12.2 (probabilistic PCA); Tipping & Bishop, "Mixtures of probabilistic
    principal component analysers", Neural Computation 1999; Wilson et al., "Efficiently
    sampling functions from Gaussian process posteriors", ICML 2020 (Matheron's rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import deepinv as dinv
import torch
from torch import Tensor

from recon.linalg import conjugate_gradient
from recon.operators import noise_sigma, operator_matrix

from .base import as_sigma
from .covariance import Covariance

_LOG2PI = math.log(2 * math.pi)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _gaussian_logpdf(x: Tensor, mean: Tensor, cov: Covariance, s2: Tensor) -> Tensor:
    """log N(x; mean, cov + s2 I) per sample; x (B, d) float64, mean (d,)."""
    diff = x - mean
    quad = (diff * cov.solve_shifted(diff, s2)).sum(dim=1)
    return -0.5 * (quad + cov.logdet_shifted(s2) + cov.dim * _LOG2PI)


def pca_covariance(centered: Tensor, rank: int | None, *, eps: float = 1e-6) -> Covariance:
    """Covariance of centred data (N, d): full (``rank`` None) or probabilistic PCA.

    PPCA keeps the top ``rank`` principal directions and sets the isotropic remainder to the
    mean of the discarded eigenvalues, the maximum-likelihood solution (Tipping & Bishop 1999).
    ``eps`` floors every eigenvalue so the covariance is positive definite.
    """
    n, d = centered.shape
    x = centered.double()
    if rank is None or rank >= min(n, d):
        cov = x.T @ x / max(n, 1)
        lam, v = torch.linalg.eigh(0.5 * (cov + cov.T))
        return Covariance(V=v, lam=lam.clamp_min(eps), iso=eps, dim=d)
    if n < d:  # eigenvectors of X^T X from the smaller Gram matrix X X^T
        gl, gu = torch.linalg.eigh(x @ x.T)
        gl, gu = gl.flip(0)[:rank].clamp_min(0), gu.flip(1)[:, :rank]
        keep = gl > gl[0] * 1e-12  # directions the data actually span
        rank = int(keep.sum())
        gl, gu = gl[:rank], gu[:, :rank]
        vh = (x.T @ gu / gl.clamp_min(1e-300).sqrt()).T
        ev = gl / max(n, 1)  # eigenvalues of the sample covariance, descending
    elif d > 256 and 4 * rank < d:
        # top-rank eigenpairs of X^T X by subspace iteration (Halko, Martinsson & Tropp 2011,
        # Alg. 4.4) with a fixed seed: O(N d rank) instead of an O(N d^2) decomposition
        q = rank + 10
        omega = torch.randn(d, q, dtype=x.dtype, generator=torch.Generator().manual_seed(0))
        basis = torch.linalg.qr(x.T @ (x @ omega.to(x.device)))[0]
        for _ in range(6):
            basis = torch.linalg.qr(x.T @ (x @ basis))[0]
        xb = x @ basis
        ev, w = torch.linalg.eigh(xb.T @ xb)
        ev, vh = ev.flip(0).clamp_min(0) / max(n, 1), (basis @ w.flip(1)).T
    else:  # eigenvectors of the (d, d) covariance: one GEMM and a symmetric eigensolve
        cov = x.T @ x
        ev, v = torch.linalg.eigh(0.5 * (cov + cov.T))
        ev, vh = ev.flip(0).clamp_min(0) / max(n, 1), v.flip(1).T
    total = float((x**2).sum()) / max(n, 1)
    rest = max(total - float(ev[:rank].sum()), 0.0) / (d - rank)
    iso = max(rest, eps)
    lam = ev[:rank].clamp_min(iso)
    return Covariance(V=vh[:rank].T.contiguous(), lam=lam, iso=iso, dim=d)


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
        xf = _flat(x).double()
        out = xf - (s**2)[:, None] * self.cov.solve_shifted(xf - self.mean, s**2)
        return out.to(x.dtype).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_sigma(x) = -(Sigma + sigma^2 I)^{-1} (x - mu)``, shaped like x."""
        s = as_sigma(sigma, x).double()
        xf = _flat(x).double()
        return (-self.cov.solve_shifted(xf - self.mean, s**2)).to(x.dtype).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log p_sigma(x)`` per sample, shape (B,), float64."""
        s = as_sigma(sigma, x).double()
        return _gaussian_logpdf(_flat(x).double(), self.mean, self.cov, s**2)

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
        """Maximum-likelihood fit: sample mean and full (``rank`` None) or PPCA covariance.

        Args:
            data: training samples, shape (N, *shape).
            rank: number of principal components kept (PCA truncation); full if None.
            eps: eigenvalue floor.
        """
        flat = _flat(data).double()
        mean = flat.mean(dim=0)
        cov = pca_covariance(flat - mean, rank, eps=eps)
        return cls(mean, cov, shape=tuple(data.shape[1:]))

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
                self.mean, self.cov.dense(), a, _flat(y).double(), s_y**2
            )
            return GaussianPosterior(self.shape, mean, cov=cov, log_evidence=log_ev)
        if method != "cg":
            raise ValueError(f"method must be 'auto', 'dense' or 'cg', got {method!r}")
        return GaussianPosterior(
            self.shape,
            None,
            matrix_free=_MatrixFree(self, physics, y.double(), s_y, cg_iters, cg_tol),
        )


@dataclass
class _MatrixFree:
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
            sig_at = pr.cov.matvec(_flat(ph.A_adjoint(z)).double())
            return ph.A(sig_at.reshape(-1, *shape).to(z.dtype)) + s2 * z

        z = conjugate_gradient(apply_s, r, n_iter=self.iters, tol=self.tol)
        return x_p + pr.cov.matvec(_flat(ph.A_adjoint(z)).double())


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
        matrix_free: _MatrixFree | None = None,
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
            sub = _MatrixFree(
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
    log_ev = -0.5 * (quad + logdet + n_eff * _LOG2PI)
    return post_mean, post_cov, log_ev


def kmeans_pp(x: Tensor, k: int, *, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): k rows of x (N, d), each drawn with
    probability proportional to its squared distance to the nearest row already chosen."""
    n = x.shape[0]
    first = int(torch.randint(0, n, (1,), generator=generator))
    chosen = [first]
    d2 = ((x - x[first]) ** 2).sum(dim=1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(dim=1))
    return x[chosen]


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
            lr = self.log_weights - 0.5 * (quad + logdet + self.dim * _LOG2PI)
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
        xf = _flat(x).double()
        out = xf - s2[:, None] * self._solve(xf, s2)
        return out.to(x.dtype).reshape(x.shape)

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``grad_x log p_sigma(x)``, shaped like x."""
        s = as_sigma(sigma, x).double()
        xf = _flat(x).double()
        return (-self._solve(xf, s**2)).to(x.dtype).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """``log p_sigma(x)`` per sample, (B,), float64."""
        s = as_sigma(sigma, x).double()
        return torch.logsumexp(self._log_resp(_flat(x).double(), s**2), dim=1)

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
        yf = _flat(y).double()
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
        cls,
        data: Tensor,
        n_components: int,
        *,
        rank: int = 8,
        n_iter: int = 50,
        eps: float = 1e-6,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> GaussianMixturePrior | tuple[GaussianMixturePrior, list[float]]:
        """EM fit of a mixture of probabilistic PCA components (low rank + isotropic diagonal).

        Each M-step is the exact maximiser given the responsibilities (weighted mean, then the
        PPCA solution of the weighted covariance), so the log-likelihood never decreases.

        Args:
            data: (N, *shape) training samples.
            n_components: K.
            rank: principal directions per component.
            n_iter: EM iterations.
            eps: variance floor.
            generator: random stream of the k-means++ initialisation of the means.
            return_history: also return the mean log-likelihood per iteration.

        Reference:
            Tipping & Bishop, "Mixtures of probabilistic principal component analysers",
            Neural Computation 11(2), 1999.
        """
        x = _flat(data).double()
        n, d = x.shape
        centres = kmeans_pp(x, n_components, generator=generator)
        resp = torch.softmax(-(torch.cdist(x, centres) ** 2) / (2 * x.var(dim=0).sum() / d), 1)
        history: list[float] = []
        model = None
        for _ in range(n_iter + 1):
            nk = resp.sum(dim=0) + 1e-10
            weights = nk / n
            means = (resp.T @ x) / nk[:, None]
            covs = []
            for k in range(n_components):
                c = (x - means[k]) * resp[:, k : k + 1].sqrt() / nk[k].sqrt()
                covs.append(pca_covariance(c * math.sqrt(n), min(rank, d - 1), eps=eps))
                # pca_covariance divides by n rows; the sqrt(n) scaling undoes it
            model = cls(weights, means, covs, shape=tuple(data.shape[1:]))
            log_r = model._log_resp(x, torch.zeros(n, dtype=torch.float64))
            ll = torch.logsumexp(log_r, dim=1)
            history.append(float(ll.mean()))
            resp = torch.softmax(log_r, dim=1)
        return (model, history) if return_history else model


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
