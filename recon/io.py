"""Scan input/output: the HDF5 layouts recon reads and writes.

Read
----
fastMRI (as the files ship; Zbontar et al., arXiv 1811.08839):
    ``kspace``  complex64, (slices, coils, H, W) multi-coil or (slices, H, W) single-coil,
                centred, orthonormal FFT convention (``fft2c``), phase encodes along W;
    ``mask``    optional (W,) 0/1 sampled columns (the test/challenge files);
    ``ismrmrd_header``  optional XML; its ``reconSpace/matrixSize`` gives the reconstruction
                size (e.g. 320 x 320) that images are centre-cropped to;
    attrs       ``acceleration``, ``num_low_frequency``, ``max``, ``norm``, ``patient_id``;
    ``reconstruction_rss`` / ``reconstruction_esc``  optional ground truth (slices, h, w).
    Without a ``mask``, the k-space is fully sampled and recon simulates a mask (retrospective
    undersampling); with one, the zero columns are taken as unmeasured.
CT sinograms:
    recon's layout: ``sinogram`` float32 (slices, n_detectors, n_angles), post-log line
    integrals in field-of-view units (see ``recon.operators.ct``), attrs ``geometry``,
    ``n_angles``, ``angle_range``, ``img_size``, ``sigma_y``; optional ``ground_truth``
    (slices, W, W).
    LoDoPaB-style: ``data`` (slices, n_angles, n_detectors), geometry from attrs or the command
    line (recon does not model LoDoPaB's physical scaling; check FBP against ground truth).
Image-domain measurements (written by ``recon simulate`` for inpainting/super-resolution):
    ``measurements`` (N, C, h, w), optional ``ground_truth`` (N, C, H, W), the operator config
    as the JSON attr ``operator`` (masks are re-drawn from its seed, per item).
Image stacks:
    ``images`` (N, H, W) or (N, C, H, W) in [0, 1] (HDF5), or a folder of PNG files; with an
    operator config, recon simulates the measurements.

Written
-------
``reconstruction``  float32 (slices, H, W): the reconstruction (magnitude for MRI), the
                    posterior mean when several samples were drawn.
``std``             float32 (slices, H, W), optional: per-pixel posterior standard deviation.
``samples``         float32 (slices, n_samples, H, W), optional.
other datasets      optional extras (e.g. ``zero_filled``), float32.
attrs               ``recon_version``, ``deepinv_version``, ``torch_version``, ``config``
                    (JSON), ``seed``, ``device``, ``wall_time_s``, ``nfe`` and any others given.

A run opens a scan once to read its header and validate the selected items, then once per
item (nothing is held open between items). Results are written under a
temporary name in the same folder and renamed into place, so a crash or a full disk never
leaves a half-written result where the result should be; an existing output is never
overwritten without ``force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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


def write_attrs(f: h5py.File, attrs: Mapping[str, Any]) -> None:
    """The versions and the given attrs (dicts and lists as JSON)."""
    for k, v in {**versions(), **attrs}.items():
        f.attrs[k] = _attr(v)


def check_writable(path: str | Path, *, force: bool) -> Path:
    """Refuse an existing output (unless ``force``) or a folder that cannot be written."""
    p = Path(path)
    if p.is_symlink() and not p.exists() and not force:  # exists() follows the link
        raise ReconIOError(
            f"{p}: output is a link to nothing; pass --force to replace the link or choose "
            "another path"
        )
    if p.exists() and not force:
        raise ReconIOError(
            f"{p}: output exists; pass --force to overwrite it or choose another path"
        )
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ReconIOError(f"{p}: {parent} is a file, not a folder; choose another path")
    if not parent.is_dir():
        raise ReconIOError(f"{p}: folder {parent} does not exist; create it first")
    _probe(parent, p)
    return p


def _probe(folder: Path, what: Path) -> None:
    """Refuse a folder in which a file cannot be created (permissions, a read-only or
    virtual file system), by creating and removing one: ``os.access`` says yes for root."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ReconIOError(
            f"{what}: folder {folder} is not writable ({exc.strerror or exc})"
        ) from None


def check_folder(path: str | Path) -> Path:
    """Refuse an output folder that cannot be made or written: a file on its path, or a
    first existing ancestor in which nothing can be created."""
    p = Path(path)
    for up in [p, *p.parents]:
        if up.exists() or up.is_symlink():
            if not up.is_dir():
                what = "a link to nothing" if not up.exists() else "a file, not a folder"
                raise ReconIOError(f"{p}: {up} is {what}; choose another folder")
            _probe(up, p)
            return p
    return p


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def atomic(path: str | Path, force: bool, write: Callable[[Path], Any]) -> Path:
    """Write a file by ``write(tmp)`` under a temporary name in the target folder (same
    suffix), then rename it over ``path``: a killed write leaves no partial output, and the
    temporary file a killed writer left is removed by the next write to the same path."""
    p = check_writable(path, force=force)
    for stale in p.parent.glob(f".{p.stem}.tmp-*{p.suffix}"):
        pid = stale.name[len(p.stem) + 6 : len(stale.name) - len(p.suffix)]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")
    try:
        write(tmp)
        os.replace(tmp, p)
    except OSError as exc:  # a full disk, a file-size limit, a quota: nothing is left
        reason = exc.strerror or str(exc).splitlines()[0]
        raise ReconIOError(
            f"{p}: could not be written ({reason}); free space (or raise the file-size "
            "limit) or choose another folder"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def atomic_h5(path: Path, force: bool, fill: Callable[[h5py.File], Any]) -> Path:
    """Write an HDF5 file by ``fill(f)`` atomically (see :func:`atomic`)."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            fill(f)

    return atomic(path, force, write)


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

    def fill(f: h5py.File) -> None:
        f.create_dataset("reconstruction", data=_np(reconstruction))
        if std is not None:
            f.create_dataset("std", data=_np(std))
        if samples is not None:
            f.create_dataset("samples", data=_np(samples))
        for k, v in (extras or {}).items():
            f.create_dataset(k, data=_np(v))
        write_attrs(f, attrs or {})

    return atomic_h5(Path(path), force, fill)


# ------------------------------------------------------------------------------------------------
# Reading


def open_h5(path: str | Path) -> h5py.File:
    """``path`` opened read-only, its top-level links checked (:func:`_check_links`)."""
    p = Path(path)
    if not p.exists():
        raise ReconIOError(f"{p}: file not found")
    if not p.is_file():
        what = "a folder" if p.is_dir() else "not a regular file (a pipe or a device)"
        raise ReconIOError(f"{p}: {what}; give an HDF5 file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise ReconIOError(
            f"{p}: not a readable HDF5 file ({str(exc).splitlines()[0]}); is it truncated?"
        ) from None
    try:
        _check_links(f, p)
    except BaseException:
        f.close()
        raise
    return f


def _check_links(f: h5py.File, path: Path) -> None:
    """Refuse, in one line, a top-level soft or external link that resolves to nothing (HDF5
    raises a bare KeyError on access; every dataset recon reads is top-level)."""
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.SoftLink | h5py.ExternalLink):
            continue
        try:
            f[name]
        except (KeyError, OSError):
            target = (
                f"{link.path!r} in {link.filename}"
                if isinstance(link, h5py.ExternalLink)
                else repr(link.path)
            )
            kind = "an external" if isinstance(link, h5py.ExternalLink) else "a soft"
            raise ReconIOError(
                f"{path}: {name!r} is {kind} link to {target}, which does not exist; restore "
                "its target or copy the data into the file"
            ) from None


@contextlib.contextmanager
def _opened(src: str | Path | h5py.File) -> Iterator[tuple[h5py.File, Path]]:
    """``src`` as an open file and its path: an open file is used as it is (not closed)."""
    if isinstance(src, h5py.File):
        yield src, Path(src.filename)
        return
    with open_h5(src) as f:
        yield f, Path(src)


def _dataset(f: h5py.File, name: str, path: Path, expected: str) -> h5py.Dataset:
    if name not in f:
        have = ", ".join(sorted(f.keys())) or "none"
        raise ReconIOError(f"{path}: no dataset {name!r} ({expected}); datasets present: {have}")
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise ReconIOError(f"{path}: {name!r} is a group, not a dataset ({expected})")
    if obj.shape is None or 0 in obj.shape:
        raise ReconIOError(f"{path}: dataset {name!r} is empty, shape {obj.shape} ({expected})")
    return obj


def _real_dataset(f: h5py.File, name: str, path: Path, expected: str) -> h5py.Dataset:
    """Dataset ``name``, refused unless it holds real numbers (not complex, not strings)."""
    ds = _dataset(f, name, path, expected)
    if ds.dtype.kind not in "fiub":
        raise ReconIOError(
            f"{path}: dataset {name!r} has dtype {ds.dtype}; expected real numbers ({expected})"
        )
    return ds


def real_array(f: h5py.File, name: str, expected: str) -> np.ndarray:
    """Dataset ``name`` as float32: real numbers and finite, or a one-line error."""
    path = Path(f.filename)
    a = np.asarray(_real_dataset(f, name, path, expected)[()], dtype=np.float32)
    if not np.isfinite(a).all():
        raise ReconIOError(f"{path}: dataset {name!r} has NaN/Inf values ({expected})")
    return a


@dataclass
class FastMRIInfo:
    """What a fastMRI file says about itself (read without loading the k-space)."""

    path: Path
    n_slices: int
    multicoil: bool
    n_coils: int
    shape: tuple[int, int]
    recon_size: tuple[int, int]
    mask: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)
    truth_key: str | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(h, w) of the image recon reconstructs: the reconstruction grid inside the encoded
        (k-space) one (320 x 320 in a 640 x 368 fastMRI knee file)."""
        return (min(self.recon_size[0], self.shape[0]), min(self.recon_size[1], self.shape[1]))


def parse_ismrmrd_header(xml: bytes | str) -> dict[str, tuple[int, int]]:
    """The ``encodedSpace`` and ``reconSpace`` matrix sizes of an ISMRMRD header, as (H, W) of
    fastMRI's arrays: ``x`` is the readout (k-space axis -2, e.g. 640 with 2x oversampling),
    ``y`` the phase encodes (axis -1). Keys ``encoded`` and ``recon``, present when found."""
    if isinstance(xml, str):
        xml = xml.encode()
    try:
        root = ET.fromstring(xml.rstrip(b"\0"))
    except ET.ParseError:
        return {}
    ns = {"m": "http://www.ismrm.org/ISMRMRD"}
    out = {}
    for key, space in (("encoded", "encodedSpace"), ("recon", "reconSpace")):
        node = root.find(f"m:encoding/m:{space}/m:matrixSize", ns)
        if node is None:
            continue
        x, y = node.find("m:x", ns), node.find("m:y", ns)
        if x is not None and y is not None:
            out[key] = (int(x.text), int(y.text))
    return out


def ismrmrd_header(encoded: tuple[int, int], recon: tuple[int, int]) -> bytes:
    """A minimal ISMRMRD header (the fields recon reads, in the layout fastMRI's files use)
    with the given encoded and reconstruction matrix sizes (H, W) = (x, y)."""

    def space(tag: str, size: tuple[int, int]) -> str:
        return f"<{tag}><matrixSize><x>{size[0]}</x><y>{size[1]}</y><z>1</z></matrixSize></{tag}>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
        + space("encodedSpace", encoded)
        + space("reconSpace", recon)
        + "</encoding></ismrmrdHeader>"
    ).encode()


def _recon_size(f: h5py.File, default: tuple[int, int]) -> tuple[int, int]:
    if "ismrmrd_header" not in f:
        return default
    path = Path(f.filename)
    raw = _dataset(f, "ismrmrd_header", path, "ISMRMRD XML")[()]
    header = parse_ismrmrd_header(bytes(np.asarray(raw).tobytes()))
    size = header.get("recon", default)
    if min(size) < 1:
        raise ReconIOError(
            f"{path}: 'ismrmrd_header' gives a reconstruction matrix of {size[0]} x {size[1]}; "
            "both sizes must be positive (fix reconSpace/matrixSize)"
        )
    return size


def fastmri_info(path: str | Path | h5py.File) -> FastMRIInfo:
    """Inspect a fastMRI file (a path or an open file): shape, coils, mask, reconstruction
    size, ground truth."""
    with _opened(path) as (f, p):
        ks = _dataset(f, "kspace", p, "complex k-space, (slices, [coils,] H, W)")
        if not np.iscomplexobj(np.empty(0, dtype=ks.dtype)):
            raise ReconIOError(f"{p}: dataset 'kspace' has dtype {ks.dtype}; expected complex64")
        if ks.ndim not in (3, 4):
            raise ReconIOError(
                f"{p}: 'kspace' has shape {ks.shape}; expected (slices, H, W) or "
                "(slices, coils, H, W)"
            )
        h, w = ks.shape[-2:]
        mask = None
        if "mask" in f:
            mask = np.asarray(_real_dataset(f, "mask", p, "(W,) 0/1")[()], dtype=np.float32)
            mask = mask.reshape(-1)
            if mask.shape[0] != w:
                raise ReconIOError(
                    f"{p}: 'mask' has {mask.shape[0]} entries but the k-space width is {w}; "
                    "the mask must have one entry per phase-encode column"
                )
            if not np.isin(mask, (0.0, 1.0)).all():
                bad = mask[~np.isin(mask, (0.0, 1.0))]
                raise ReconIOError(
                    f"{p}: 'mask' must hold 0 (not measured) or 1 (measured) per column; it has "
                    f"{bad.size} other values (e.g. {bad[0]:g})"
                )
            if not mask.any():
                raise ReconIOError(f"{p}: 'mask' is all zero: no column was measured")
        truth = next((k for k in ("reconstruction_rss", "reconstruction_esc") if k in f), None)
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        if truth:
            _real_dataset(f, truth, p, "ground truth (slices, h, w)")
        default = tuple(f[truth].shape[-2:]) if truth else (h, w)
        return FastMRIInfo(
            path=p,
            n_slices=ks.shape[0],
            multicoil=ks.ndim == 4,
            n_coils=ks.shape[1] if ks.ndim == 4 else 1,
            shape=(h, w),
            recon_size=_recon_size(f, default),
            mask=mask,
            attrs=attrs,
            truth_key=truth,
        )


def read_fastmri_slice(info: FastMRIInfo, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """k-space of one slice, complex64 (coils, H, W) or (1, H, W), and its ground truth (h, w).

    Raises a one-line error for NaN/Inf values.
    """
    with open_h5(info.path) as f:
        k = np.asarray(f["kspace"][index])
        truth = np.asarray(f[info.truth_key][index]) if info.truth_key else None
    if not np.isfinite(k).all():
        bad = int((~np.isfinite(k)).sum())
        raise ReconIOError(
            f"{info.path}: slice {index} of 'kspace' has {bad} NaN/Inf values; "
            "repair or exclude this slice"
        )
    kt = torch.from_numpy(k.astype(np.complex64))
    if kt.ndim == 2:
        kt = kt[None]
    return kt, (torch.from_numpy(truth.astype(np.float32)) if truth is not None else None)


@dataclass
class CTInfo:
    """A CT sinogram file: recon's layout (``sinogram``) or LoDoPaB-style (``data``)."""

    path: Path
    key: str
    n_slices: int
    n_detectors: int
    n_angles: int
    attrs: dict[str, Any]
    truth_key: str | None


def ct_info(path: str | Path | h5py.File) -> CTInfo:
    """Inspect a CT sinogram file (a path or an open file)."""
    with _opened(path) as (f, p):
        if "sinogram" in f:
            key = "sinogram"
            ds = _real_dataset(f, key, p, "(slices, n_detectors, n_angles)")
            if ds.ndim != 3:
                raise ReconIOError(
                    f"{p}: 'sinogram' has shape {ds.shape}; expected "
                    "(slices, n_detectors, n_angles)"
                )
            n_det, n_ang = ds.shape[1:]
        elif "data" in f:
            key = "data"
            ds = _real_dataset(f, key, p, "(slices, n_angles, n_detectors)")
            if ds.ndim != 3:
                raise ReconIOError(
                    f"{p}: 'data' has shape {ds.shape}; expected (slices, n_angles, n_detectors)"
                )
            n_ang, n_det = ds.shape[1:]
        else:
            have = ", ".join(sorted(f.keys())) or "none"
            raise ReconIOError(
                f"{p}: no dataset 'sinogram' (recon layout) or 'data' "
                f"(LoDoPaB layout); datasets present: {have}"
            )
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        truth = "ground_truth" if "ground_truth" in f else None
        return CTInfo(p, key, ds.shape[0], n_det, n_ang, attrs, truth)


def read_ct_slice(info: CTInfo, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sinogram of one slice as (1, n_detectors, n_angles) float32, and its ground truth."""
    with open_h5(info.path) as f:
        s = np.asarray(f[info.key][index], dtype=np.float32)
        truth = np.asarray(f[info.truth_key][index], dtype=np.float32) if info.truth_key else None
    if info.key == "data":
        s = s.T
    if not np.isfinite(s).all():
        raise ReconIOError(f"{info.path}: slice {index} of {info.key!r} has NaN/Inf values")
    return torch.from_numpy(s)[None], (torch.from_numpy(truth) if truth is not None else None)


def truth_max(path: str | Path) -> float | None:
    """The largest value of a scan's ground truth (``reconstruction_rss``,
    ``reconstruction_esc`` or ``ground_truth``, checked as real), or None without one: the
    fastMRI volume metrics' ``maxval``."""
    with _opened(path) as (f, p):
        for key in ("reconstruction_rss", "reconstruction_esc", "ground_truth"):
            if key in f:
                return float(np.max(_real_dataset(f, key, p, "ground truth")[()]))
    return None


def read_images(path: str | Path) -> torch.Tensor:
    """An image stack as (N, C, H, W) float32 (see :func:`read_image_stack`)."""
    return read_image_stack(path)[0]


def read_image_stack(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """An image stack as (N, C, H, W) float32 and where it came from.

    HDF5 ``images`` (N, [C,] H, W) in [0, 1]; a folder of PNG files; a DICOM series (a folder,
    a ``DICOMDIR`` or a ``.dcm`` file) or a NIfTI volume (``.nii``, ``.nii.gz``), normalised
    to [0, 1] per volume by :mod:`recon.volumes` (the rule and range are in the info dict).
    """
    from recon import volumes

    p = Path(path)
    if not p.exists():
        raise ReconIOError(f"{p}: file or folder not found")
    if volumes.is_nifti(p):
        return volumes.read_nifti(p)
    if p.is_file() and (p.suffix.lower() == ".dcm" or volumes.is_dicom_file(p)):
        return volumes.read_dicom(p)
    if p.is_dir():
        files = sorted(p.glob("*.png"))
        if not files:
            if not volumes.dicom_files(p):
                raise ReconIOError(f"{p}: folder has no .png files and no DICOM files")
            return volumes.read_dicom(p)
        from PIL import Image

        imgs = []
        for fp in files:
            try:
                a = np.asarray(Image.open(fp), dtype=np.float32)
            except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
                raise ReconIOError(
                    f"{fp}: not a readable PNG image ({str(exc).splitlines()[0]}); repair or "
                    "remove it"
                ) from None
            a = a / (65535.0 if a.max() > 255 else 255.0)
            imgs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        shapes = {i.shape for i in imgs}
        if len(shapes) != 1:
            raise ReconIOError(f"{p}: PNG files have different sizes {sorted(shapes)}")
        info = {"format": "png", "rule": "8-bit / 255, 16-bit / 65535", "files": len(files)}
        return torch.from_numpy(np.stack(imgs)), info
    with open_h5(p) as f:
        a = real_array(f, "images", "image stack (N, [C,] H, W) in [0, 1]")
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ReconIOError(
            f"{p}: 'images' has shape {a.shape}; expected (N, H, W) or (N, C, H, W)"
        )
    lo, hi = float(np.min(a)), float(np.max(a))  # real_array refused NaN/Inf already
    if lo < -IMAGE_RANGE_SLACK or hi > 1 + IMAGE_RANGE_SLACK:
        raise ReconIOError(
            f"{p}: 'images' must lie in [0, 1] (found [{lo:.3g}, {hi:.3g}]); rescale them first "
            "(8-bit data: divide by 255)"
        )
    return torch.from_numpy(np.clip(a, 0, 1)), {"format": "hdf5", "rule": "as stored"}


#: how far outside [0, 1] a stored image stack may go (rounding of a float conversion)
IMAGE_RANGE_SLACK = 1e-3


def detect_layout(path: str | Path | h5py.File) -> str:
    """``fastmri``, ``ct``, ``measurements`` or ``images`` from a file's datasets (a path, an
    open file, or a PNG folder)."""
    if not isinstance(path, h5py.File) and Path(path).is_dir():
        return "images"
    with _opened(path) as (f, p):
        keys = set(f.keys())
    if "kspace" in keys:
        return "fastmri"
    if keys & {"sinogram", "data"}:
        return "ct"
    if "measurements" in keys:
        return "measurements"
    if "images" in keys:
        return "images"
    have = ", ".join(sorted(keys)) or "none"
    raise ReconIOError(
        f"{p}: not a recognised scan: expected 'kspace' (fastMRI), 'sinogram'/'data' (CT) or "
        f"'images' (image stack); datasets present: {have}"
    )


def write_fastmri(
    path: str | Path,
    *,
    kspace: np.ndarray,
    mask: np.ndarray | None,
    truth: np.ndarray | None,
    attrs: Mapping[str, Any],
    force: bool = False,
    recon_size: tuple[int, int] | None = None,
) -> Path:
    """Write k-space in fastMRI layout (complex64 ``kspace``, optional ``mask`` and
    ``reconstruction_rss``), atomically; with ``recon_size`` also an ``ismrmrd_header`` whose
    encoded space is the k-space grid and whose reconstruction space is ``recon_size``."""

    def fill(f: h5py.File) -> None:
        f.create_dataset("kspace", data=np.asarray(kspace, dtype=np.complex64))
        if recon_size is not None:
            enc = tuple(np.shape(kspace)[-2:])
            f.create_dataset("ismrmrd_header", data=ismrmrd_header(enc, recon_size))
        if mask is not None:
            f.create_dataset("mask", data=np.asarray(mask, dtype=np.float32))
        if truth is not None:
            f.create_dataset("reconstruction_rss", data=np.asarray(truth, dtype=np.float32))
        write_attrs(f, attrs)

    return atomic_h5(Path(path), force, fill)


def write_ct(
    path: str | Path,
    *,
    sinogram: np.ndarray,
    truth: np.ndarray | None,
    attrs: Mapping[str, Any],
    force: bool = False,
) -> Path:
    """Write sinograms (slices, n_detectors, n_angles) in recon's CT layout, atomically."""

    def fill(f: h5py.File) -> None:
        f.create_dataset("sinogram", data=np.asarray(sinogram, dtype=np.float32))
        if truth is not None:
            f.create_dataset("ground_truth", data=np.asarray(truth, dtype=np.float32))
        write_attrs(f, attrs)

    return atomic_h5(Path(path), force, fill)


def write_measurements(
    path: str | Path,
    *,
    measurements: np.ndarray,
    truth: np.ndarray | None,
    operator: Mapping[str, Any],
    attrs: Mapping[str, Any],
    force: bool = False,
) -> Path:
    """Write image-domain measurements (inpainting, super-resolution): ``measurements``
    (N, C, h, w), optional ``ground_truth`` (N, C, H, W), the operator config as JSON attr."""

    def fill(f: h5py.File) -> None:
        f.create_dataset("measurements", data=np.asarray(measurements, dtype=np.float32))
        if truth is not None:
            f.create_dataset("ground_truth", data=np.asarray(truth, dtype=np.float32))
        f.attrs["operator"] = json.dumps(dict(operator))
        write_attrs(f, attrs)

    return atomic_h5(Path(path), force, fill)


def size_attr(value: Any, path: str | Path, name: str) -> tuple[int, int]:
    """An (H, W) attr (JSON text or an array) as two positive ints, or a one-line error."""
    try:
        v = json.loads(value) if isinstance(value, (str, bytes)) else list(value)
        size = (int(v[0]), int(v[1]))
        if len(v) != 2 or min(size) < 1:
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise ReconIOError(
            f"{path}: attr {name!r} is {value!r}; expected [H, W], two positive integers"
        ) from None
    return size


def scan_image_shape(path: str | Path) -> tuple[int, int, int] | None:
    """(channels, H, W) of the images a scan reconstructs to, when the file says."""
    layout = detect_layout(path)
    if layout == "fastmri":
        return (2, *fastmri_info(path).image_size)
    if layout == "ct":
        a = ct_info(path).attrs
        if "img_size" in a:
            return (1, *size_attr(a["img_size"], path, "img_size"))
        return None
    if layout == "measurements":
        with open_h5(path) as f:
            raw = f.attrs.get("operator", "{}")
        try:  # a malformed record is reported by the scan source, which reads it in full
            size = json.loads(raw).get("img_size")
            return tuple(int(s) for s in size) if size else None
        except (TypeError, ValueError, AttributeError):
            return None
    return None
