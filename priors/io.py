"""Saving and loading exact priors as safetensors (no pickle), with a JSON header.

A file holds the tensors of a :class:`GaussianPrior` (``mean`` and its covariance factors) or of
a :class:`GaussianMixturePrior` (``log_weights``, ``means`` and per-component factors
``cov{k}.*``), and in its metadata ``recon_prior`` (``gaussian`` or ``mixture``), ``shape``
(JSON), and each covariance's kind and ``iso`` value.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from recon.errors import UserError

from .covariance import Covariance
from .gaussian import GaussianMixturePrior, GaussianPrior
from .patches import PatchMixturePrior


def _cov_tensors(prefix: str, cov: Covariance) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if cov.kind == "spectral":
        t = {f"{prefix}.V": cov.V, f"{prefix}.lam": cov.lam}
        meta = {f"{prefix}.kind": "spectral", f"{prefix}.iso": repr(cov.iso)}
    else:
        t = {f"{prefix}.U": cov.U, f"{prefix}.D": cov.D}
        meta = {f"{prefix}.kind": "woodbury"}
    return {k: v.contiguous().cpu() for k, v in t.items()}, meta


def _cov_from(
    prefix: str, t: dict[str, torch.Tensor], meta: dict[str, str], dim: int
) -> Covariance:
    if meta[f"{prefix}.kind"] == "spectral":
        return Covariance(
            V=t[f"{prefix}.V"], lam=t[f"{prefix}.lam"], iso=float(meta[f"{prefix}.iso"]), dim=dim
        )
    return Covariance(U=t[f"{prefix}.U"], D=t[f"{prefix}.D"], dim=dim)


def save_exact_prior(prior: GaussianPrior | GaussianMixturePrior, path: str | Path) -> Path:
    """Write an exact prior to a ``.safetensors`` file."""
    p = Path(path)
    meta = {"shape": json.dumps(list(prior.shape))}
    if isinstance(prior, GaussianPrior):
        tensors = {"mean": prior.mean.contiguous().cpu()}
        ct, cm = _cov_tensors("cov", prior.cov)
        meta["recon_prior"] = "gaussian"
    else:
        tensors = {"log_weights": prior.log_weights.cpu(), "means": prior.means.contiguous().cpu()}
        ct, cm = {}, {}
        for k, c in enumerate(prior.covs):
            t_k, m_k = _cov_tensors(f"cov{k}", c)
            ct.update(t_k)
            cm.update(m_k)
        meta["recon_prior"] = "mixture"
    tensors.update(ct)
    meta.update(cm)
    save_file(tensors, str(p), metadata=meta)
    return p


def load_exact_prior(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> GaussianPrior | GaussianMixturePrior | PatchMixturePrior:
    """Read a prior written by :func:`save_exact_prior` or :meth:`PatchMixturePrior.save`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: prior file not found")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{p}: not a readable safetensors file ({exc})") from None
    kind = meta.get("recon_prior")
    if kind == "patch-mixture":
        return PatchMixturePrior.from_file(tensors, meta).to(device)
    if kind not in ("gaussian", "mixture"):
        raise UserError(f"{p}: not a recon exact-prior file (metadata recon_prior={kind!r})")
    shape = tuple(json.loads(meta["shape"]))
    dim = 1
    for s in shape:
        dim *= s
    if kind == "gaussian":
        prior = GaussianPrior(tensors["mean"], _cov_from("cov", tensors, meta, dim), shape=shape)
    else:
        k = tensors["means"].shape[0]
        covs = [_cov_from(f"cov{i}", tensors, meta, dim) for i in range(k)]
        prior = GaussianMixturePrior(
            tensors["log_weights"].exp(), tensors["means"], covs, shape=shape
        )
    return prior.to(device)
