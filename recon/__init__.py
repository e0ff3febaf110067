"""recon: image reconstruction from incomplete, noisy measurements with diffusion priors."""

from __future__ import annotations

__version__ = "0.1.0"
