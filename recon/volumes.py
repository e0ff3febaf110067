"""Clinical image volumes as recon image stacks: DICOM series and NIfTI files.

Both are read into (N, 1, H, W) float32 in [0, 1], one slice per item, with the normalisation
recorded so the original values can be recovered:

* DICOM (pydicom): a folder of files (any name; files without the DICOM preamble are skipped,
  a ``DICOMDIR`` is read for the files it lists), or one file. The stored values are mapped to
  modality units by ``RescaleSlope`` and ``RescaleIntercept`` (Hounsfield units for CT), slices
  are ordered by ``ImagePositionPatient`` along the slice normal, else ``InstanceNumber``;
  multi-frame files give one slice per frame.
* NIfTI (nibabel): ``.nii`` / ``.nii.gz``, the 3-D volume's last axis as the slice axis (4-D:
  the first volume), scaled by the header's ``scl_slope`` / ``scl_inter`` (nibabel applies
  them).

Normalisation (one rule for both, per volume): ``x = (v - v_min) / (v_max - v_min)`` with
``v_min``, ``v_max`` the volume's range in modality units; both are returned in the info dict
(``recon simulate`` writes it to the scan's attrs as ``source``).

Bad input gets one line naming the file: no pixel data, slices of different sizes, compressed
pixel data without a decoder, a constant volume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.errors import UserError

RULE = "per volume: (v - v_min) / (v_max - v_min), v in modality units (rescale applied)"


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def is_dicom_file(path: Path) -> bool:
    """A file with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _normalise(vol: np.ndarray, path: Path, fmt: str, **extra: Any) -> tuple[torch.Tensor, dict]:
    if not np.isfinite(vol).all():
        raise UserError(f"{path}: the {fmt} volume has NaN/Inf values")
    lo, hi = float(vol.min()), float(vol.max())
    if hi <= lo:
        raise UserError(f"{path}: the {fmt} volume is constant ({lo:g}); nothing to reconstruct")
    x = ((vol - lo) / (hi - lo)).astype(np.float32)
    info = {"format": fmt, "rule": RULE, "v_min": lo, "v_max": hi, "n_slices": x.shape[0]}
    return torch.from_numpy(x[:, None]), info | extra


def read_nifti(path: str | Path) -> tuple[torch.Tensor, dict]:
    """A NIfTI volume as (N, 1, H, W) in [0, 1] and its normalisation info."""
    import nibabel as nib

    p = Path(path)
    try:
        img = nib.load(str(p))
        vol = np.asarray(img.get_fdata(dtype=np.float64))
    except Exception as exc:  # nibabel raises many kinds for a broken file
        raise UserError(f"{p}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if vol.ndim == 4:
        vol = vol[..., 0]
    if vol.ndim == 2:
        vol = vol[..., None]
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise UserError(f"{p}: NIfTI data of shape {vol.shape}; expected a 2-D or 3-D volume")
    return _normalise(np.moveaxis(vol, -1, 0), p, "nifti")


def dicom_files(p: Path) -> list[Path]:
    """The DICOM files of a folder (by DICOMDIR or by preamble), or ``[p]`` for a file."""
    import pydicom

    if p.is_file():
        return [p]
    dicomdir = next((c for c in p.iterdir() if c.name.upper() == "DICOMDIR"), None)
    if dicomdir is not None:
        ds = pydicom.dcmread(str(dicomdir))
        files = []
        for rec in ds.DirectoryRecordSequence:
            if getattr(rec, "DirectoryRecordType", "") == "IMAGE":
                files.append(p.joinpath(*rec.ReferencedFileID))
        return files
    return sorted(c for c in p.rglob("*") if c.is_file() and is_dicom_file(c))


def read_dicom(path: str | Path) -> tuple[torch.Tensor, dict]:
    """A DICOM series (folder, DICOMDIR or one file) as (N, 1, H, W) in [0, 1] and its info."""
    import pydicom

    p = Path(path)
    files = dicom_files(p)
    if not files:
        raise UserError(f"{p}: no DICOM files (none has the DICM preamble)")
    slices = []
    for fp in files:
        try:
            ds = pydicom.dcmread(str(fp))
        except Exception as exc:
            raise UserError(f"{fp}: not a readable DICOM file ({exc})") from None
        if "PixelData" not in ds:
            raise UserError(f"{fp}: DICOM file without pixel data (not an image)")
        try:
            a = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as exc:  # compressed transfer syntax without a decoder, and others
            ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
            raise UserError(
                f"{fp}: cannot decode the pixel data (transfer syntax {ts}: {exc}); install "
                "a decoder (e.g. pip install pylibjpeg pylibjpeg-libjpeg) or export uncompressed"
            ) from None
        if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") not in (
            "MONOCHROME1",
            "MONOCHROME2",
        ):
            raise UserError(
                f"{fp}: photometric interpretation {ds.PhotometricInterpretation}; recon reads "
                "greyscale (MONOCHROME) images"
            )
        a = a * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0
        )
        frames = a if a.ndim == 3 else a[None]
        pos = getattr(ds, "ImagePositionPatient", None)
        ori = getattr(ds, "ImageOrientationPatient", None)
        if pos is not None and ori is not None:
            normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
            key = float(np.dot(normal, np.asarray(pos, float)))
        else:
            key = float(getattr(ds, "InstanceNumber", len(slices)) or 0)
        for j, frame in enumerate(frames):
            slices.append((key, j, str(fp), frame))
    shapes = sorted({s[3].shape for s in slices})
    if len(shapes) != 1:
        raise UserError(f"{p}: DICOM slices of different sizes {shapes}; give one series")
    slices.sort(key=lambda s: (s[0], s[1], s[2]))
    vol = np.stack([s[3] for s in slices])
    return _normalise(vol, p, "dicom", files=len(files))
