"""Priors: the :class:`Denoiser` protocol, exact Gaussian/mixture priors, network adapters."""

from __future__ import annotations

from .adapters import DeepinvDenoiser, EDMDenoiser, EpsilonDenoiser, load_diffunet
from .base import Denoiser, as_sigma, score_from_denoiser
from .covariance import Covariance
from .exact import GaussianMixturePosterior, GaussianPosterior, dense_gaussian_posterior
from .fitting import fit_gaussian, fit_mixture, kmeans_pp, pca_covariance
from .gaussian import GaussianMixturePrior, GaussianPrior
from .io import load_exact_prior, save_exact_prior
from .registry import (
    ComplexFromReal,
    ModuleDenoiser,
    PriorError,
    load,
    load_checkpoint,
    manifest,
    to_complex,
)
from .unet import UNet, UNetConfig

__all__ = [
    "ComplexFromReal",
    "Covariance",
    "DeepinvDenoiser",
    "Denoiser",
    "EDMDenoiser",
    "EpsilonDenoiser",
    "GaussianMixturePosterior",
    "GaussianMixturePrior",
    "GaussianPosterior",
    "GaussianPrior",
    "ModuleDenoiser",
    "PriorError",
    "UNet",
    "UNetConfig",
    "as_sigma",
    "dense_gaussian_posterior",
    "fit_gaussian",
    "fit_mixture",
    "kmeans_pp",
    "load",
    "load_checkpoint",
    "load_diffunet",
    "load_exact_prior",
    "manifest",
    "pca_covariance",
    "save_exact_prior",
    "score_from_denoiser",
    "to_complex",
]
