"""Fitting exact priors to data: Gaussian (full or probabilistic PCA covariance), k-means++
seeding, and EM for mixtures of probabilistic PCA components.

Reference:
    Tipping & Bishop, "Mixtures of probabilistic principal component analysers", Neural
    Computation 11(2), 1999; Arthur & Vassilvitskii, "k-means++: the advantages of careful
    seeding", SODA 2007; Halko, Martinsson & Tropp, "Finding structure with randomness", SIAM
    Review 2011 (randomised subspace iteration).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .covariance import Covariance, flat
from .gaussian import GaussianMixturePrior, GaussianPrior


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


def fit_gaussian(data: Tensor, *, rank: int | None = None, eps: float = 1e-6) -> GaussianPrior:
    """Maximum-likelihood Gaussian: sample mean and full (``rank`` None) or PPCA covariance.

    Args:
        data: training samples, shape (N, *shape).
        rank: number of principal components kept (PCA truncation); full if None.
        eps: eigenvalue floor.
    """
    x = flat(data).double()
    mean = x.mean(dim=0)
    cov = pca_covariance(x - mean, rank, eps=eps)
    return GaussianPrior(mean, cov, shape=tuple(data.shape[1:]))


def fit_mixture(
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
    x = flat(data).double()
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
        model = GaussianMixturePrior(weights, means, covs, shape=tuple(data.shape[1:]))
        log_r = model._log_resp(x, torch.zeros(n, dtype=torch.float64))
        ll = torch.logsumexp(log_r, dim=1)
        history.append(float(ll.mean()))
        resp = torch.softmax(log_r, dim=1)
    return (model, history) if return_history else model
