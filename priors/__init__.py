"""Priors: the :class:`Denoiser` protocol, exact Gaussian/mixture priors, network adapters."""

from __future__ import annotations

from .adapters import DeepinvDenoiser, EDMDenoiser, EpsilonDenoiser, load_diffunet
from .base import Denoiser, as_sigma, score_from_denoiser
from .covariance import Covariance
from .gaussian import (
    GaussianMixturePosterior,
    GaussianMixturePrior,
    GaussianPosterior,
    GaussianPrior,
    dense_gaussian_posterior,
)
from .io import load_exact_prior, save_exact_prior

__all__ = [
    "Covariance",
    "DeepinvDenoiser",
    "Denoiser",
    "EDMDenoiser",
    "EpsilonDenoiser",
    "GaussianMixturePosterior",
    "GaussianMixturePrior",
    "GaussianPosterior",
    "GaussianPrior",
    "as_sigma",
    "dense_gaussian_posterior",
    "load_diffunet",
    "load_exact_prior",
    "save_exact_prior",
    "score_from_denoiser",
]
