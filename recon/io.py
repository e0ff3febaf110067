"""Results files: HDF5 writing, atomic and never overwriting without permission.

Written layout (fastMRI-compatible where it overlaps):

``reconstruction``  float32 (slices, H, W): the reconstruction (magnitude for MRI), the
                    posterior mean when several samples were drawn.
``std``             float32 (slices, H, W), optional: per-pixel posterior standard deviation.
``samples``         float32 (slices, n_samples, H, W), optional.
other datasets      optional extras (e.g. ``zero_filled``), float32.
attrs               ``recon_version``, ``deepinv_version``, ``torch_version``, ``config``
                    (JSON), ``seed``, ``device``, ``wall_time_s``, ``nfe`` and any others given.

The file is written under a temporary name in the same folder and renamed into place, so a
crash or a full disk never leaves a half-written result where the result should be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from recon.errors import UserError


class ReconIOError(UserError, ValueError):
    """A user-facing input/output problem (the message is one line)."""


def versions() -> dict[str, str]:
    """Versions recorded in every results file."""
    import deepinv

    import recon

    return {
        "recon_version": recon.__version__,
        "deepinv_version": getattr(deepinv, "__version__", "unknown"),
        "torch_version": torch.__version__,
    }


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _attr(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    if v is None:
        return "null"
    if isinstance(v, str):
        return str(v)  # numpy str_ has no HDF5 conversion; a plain str does
    return v


def check_writable(path: str | Path, *, force: bool) -> Path:
    """Refuse an existing output (unless ``force``) or a folder that cannot be written."""
    p = Path(path)
    if p.exists() and not force:
        raise ReconIOError(
            f"{p}: output exists; pass --force to overwrite it or choose another path"
        )
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ReconIOError(f"{p}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise ReconIOError(f"{p}: folder {parent} is not writable")
    return p


def write_result(
    path: str | Path,
    *,
    reconstruction: Any,
    std: Any | None = None,
    samples: Any | None = None,
    extras: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a results file atomically (see module docstring); returns its path."""
    p = check_writable(path, force=force)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=_np(reconstruction))
            if std is not None:
                f.create_dataset("std", data=_np(std))
            if samples is not None:
                f.create_dataset("samples", data=_np(samples))
            for k, v in (extras or {}).items():
                f.create_dataset(k, data=_np(v))
            for k, v in {**versions(), **(attrs or {})}.items():
                f.attrs[k] = _attr(v)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
