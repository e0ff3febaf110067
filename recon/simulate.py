"""Simulated scans from clean images: measurements written in the layouts :mod:`recon.io` reads.

Item i's noise (and, for inpainting, its mask) comes from its own stream seeded by
``(seed, i)``, so a file's item does not depend on how many items it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon import io
from recon import operators as O
from recon.errors import UserError


def _noise_gen(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, index, 2**31 - 1]).generate_state(1, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]))


def simulate(
    images: Tensor,
    operator: O.OperatorConfigBase,
    output: str | Path,
    *,
    seed: int = 0,
    force: bool = False,
    fully_sampled: bool = False,
    source: dict[str, Any] | None = None,
) -> Path:
    """Simulate measurements of ``images`` (N, C, H, W) in [0, 1] and write a scan file.

    With ``fully_sampled`` (MRI only) the whole k-space is written without a ``mask``, as in
    fastMRI's training files: the input of ``recon acquire`` (active subsampling) and of
    ``recon reconstruct --acceleration R``.

    MRI: the image (channel 0) is the real part of a complex image; the file is in fastMRI
    layout with the undersampled k-space, the ``mask`` (one for the volume, as fastMRI's test
    files) and ``reconstruction_rss`` (the magnitude image) as ground truth. An operator with
    an ``encoded_size`` (readout oversampling) writes k-space on that grid and an
    ``ismrmrd_header`` whose reconstruction space is the image size, as fastMRI's raw files.
    CT: recon's sinogram layout with ``ground_truth``. Inpainting / super-resolution:
    ``measurements``, per-image ``mask`` (inpainting) and ``ground_truth``.

    ``source`` (e.g. the normalisation of a DICOM series, :mod:`recon.volumes`) is recorded as
    the attr ``source``.
    """
    n, _, h, w = images.shape
    name = operator.name  # type: ignore[attr-defined]
    if tuple(O.input_shape(operator)[-2:]) != (h, w):
        raise UserError(
            f"images are {h}x{w} but the operator is for "
            f"{tuple(O.input_shape(operator)[-2:])}; set its img_size"
        )
    s_y = operator.sigma_y
    attrs: dict[str, Any] = {
        "operator": operator.model_dump(mode="json"),
        "seed": seed,
        "simulated": True,
    }
    if source:
        attrs["source"] = dict(source)
    if fully_sampled and name not in ("mri", "mri_multicoil"):
        raise UserError("fully sampled output is for MRI operators only")
    if name in ("mri", "mri_multicoil"):
        kh, kw = operator.kspace_size
        if fully_sampled:
            operator = operator.model_copy(update={"mask": "given"})
            physics = O.build(operator, mask=torch.ones(kh, kw))
        else:
            physics = O.build(operator)
        mask2d = physics.mask.reshape(-1, kh, kw)[0]  # (H, W) on the k-space grid
        if not bool((mask2d == mask2d[:1]).all()):
            raise UserError(
                f"mask {operator.mask!r} samples k-space points, not whole phase-encode "
                "columns; fastMRI's layout stores one mask entry per column, so it cannot hold "
                "this mask (use equispaced or random)"
            )
        x = torch.zeros(n, 2, h, w)
        x[:, 0] = images[:, 0]
        ys = []
        for i in range(n):
            y = physics.A(x[i : i + 1])
            if s_y > 0:  # noise on the measured k-space entries only
                y = y + s_y * mask2d * torch.randn(y.shape, generator=_noise_gen(seed, i))
            ys.append(torch.complex(y[0, 0], y[0, 1]))
        k = torch.stack(ys).numpy()
        truth = images[:, 0].numpy()
        attrs.update(
            acceleration=1.0 if fully_sampled else float(operator.acceleration),
            num_low_frequency=O.masks.num_low_frequencies(kw, operator.center_fraction),
            max=float(truth.max()),
        )
        if name == "mri_multicoil":
            attrs["n_coils"] = operator.n_coils
        return io.write_fastmri(
            output,
            kspace=k,
            mask=None if fully_sampled else mask2d[0].numpy(),
            truth=truth,
            attrs=attrs,
            force=force,
            recon_size=(h, w) if (kh, kw) != (h, w) else None,
        )
    if name == "ct":
        physics = O.build(operator)
        sino = []
        for i in range(n):
            y = physics.A(images[i : i + 1, :1])
            if s_y > 0:
                y = y + s_y * torch.randn(y.shape, generator=_noise_gen(seed, i))
            sino.append(y[0, 0])
        attrs.update(
            geometry=operator.geometry,
            angle_range=operator.angle_range,
            img_size=list(operator.img_size),
            sigma_y=s_y,
        )
        return io.write_ct(
            output,
            sinogram=torch.stack(sino).numpy(),
            truth=images[:, 0].numpy(),
            attrs=attrs,
            force=force,
        )
    if name in ("inpainting", "super_resolution"):
        meas, masks = [], []
        for i in range(n):
            cfg_i = operator
            if name == "inpainting":
                cfg_i = operator.model_copy(update={"seed": operator.seed + i, "n_masks": None})
            physics = O.build(cfg_i)
            y = physics.A(images[i : i + 1])
            if s_y > 0:
                noise = s_y * torch.randn(y.shape, generator=_noise_gen(seed, i))
                y = y + (noise * physics.mask if name == "inpainting" else noise)
            meas.append(y[0])
            if name == "inpainting":
                masks.append(physics.mask[0, 0])
        op = operator.model_dump(mode="json")
        path = io.write_measurements(
            output,
            measurements=torch.stack(meas).numpy(),
            truth=images.numpy(),
            operator=op,
            attrs=attrs,
            force=force,
        )
        if masks:
            import h5py

            with h5py.File(path, "a") as f:
                f.create_dataset("mask", data=torch.stack(masks).numpy())
        return path
    raise UserError(f"cannot simulate operator {name!r}")
