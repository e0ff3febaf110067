"""Scan sources: what a run reads, one class per layout of :mod:`recon.io`.

A :class:`Source` turns a scan file into :class:`Item` s (measurement, ground truth,
per-item operator inputs, scale) and builds the operator for a chunk of rows. fastMRI k-space is
prepared by :func:`prepare_kspace` (shared with active acquisition): coil maps from the ACS,
scaled once per volume so that the zero-filled magnitude image peaks at 1 over the volume
(priors work in [0, 1] units); outputs are scaled back, so results are in the file's units.
The noise std comes from ``--sigma-y``, the file's record, or (fastMRI's files record none) an
estimate from the data (:func:`noise_std`); :class:`Noise` says which.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon import io, memory
from recon import operators as O
from recon.config import RunConfig, validate
from recon.errors import UserError


@dataclass
class Item:
    """One slice or image.

    Attributes:
        index: its index in the file.
        y: the measurement without batch dimension.
        truth: ground truth in the output domain, (H, W) or (C, H, W), or None.
        inputs: per-item operator inputs (``mask``, ``coil_maps``), without batch dimension.
        scale: the factor y was divided by (outputs are multiplied back).
    """

    index: int
    y: Tensor
    truth: Tensor | None
    inputs: dict[str, Tensor] = field(default_factory=dict)
    scale: float = 1.0


class Source:
    """A scan: its items, the operator config, and how outputs are shown."""

    kind: str
    operator: O.OperatorConfigBase
    n_items: int
    indices: list[int]
    noise: Noise

    def check(self, f: Any, indices: list[int]) -> None:
        """Validate the selected items before any work (bad values fail early); ``f`` is the
        open scan."""

    def item(self, index: int) -> Item:
        raise NotImplementedError

    def physics(self, rows: list[Item], device: torch.device):
        """The operator for a chunk of rows (row r uses ``rows[r].inputs``)."""
        stacked: dict[str, Tensor] = {}
        for key in rows[0].inputs:
            stacked[key] = torch.stack([r.inputs[key] for r in rows]).to(device)
        if "mask" in stacked and stacked["mask"].ndim == 3:
            stacked["mask"] = stacked["mask"][:, None]  # (B, 1, H, W)
        return O.build(self.operator, device=device, **stacked)

    def output(self, x: Tensor, item: Item, *, floor: bool = False) -> Tensor:
        """Display-domain image (H, W) from a reconstruction (C, H, W); ``floor``: an estimate
        of the noise-free image, to be written in the convention of the scan's targets
        (:meth:`FastMRISource.output`; other sources ignore it)."""
        return (x[0] if x.shape[0] == 1 else x.pow(2).sum(0).sqrt()) * item.scale


def _acs_width(mask: np.ndarray) -> int:
    """Length of the contiguous sampled run through the centre column."""
    w = mask.shape[0]
    c = w // 2
    if mask[c] == 0:
        return 0
    lo, hi = c, c
    while lo > 0 and mask[lo - 1] > 0:
        lo -= 1
    while hi < w - 1 and mask[hi + 1] > 0:
        hi += 1
    return hi - lo + 1


@dataclass
class PreparedSlice:
    """One fastMRI slice ready for the operator.

    Attributes:
        y: measured k-space / scale as real channels, (2, coils, H, W) multi-coil or
            (2, H, W) single-coil; unmeasured columns are zero.
        inputs: operator inputs: ``mask`` (H, W), and ``coil_maps`` (coils, H, W) complex64
            when multi-coil.
        scale: the factor k-space was divided by: the peak of the zero-filled (coil-combined)
            magnitude image, so priors see [0, 1] units.
    """

    y: Tensor
    inputs: dict[str, Tensor]
    scale: float


def prepare_kspace(
    k: Tensor,
    mask: Tensor,
    num_low: int,
    *,
    multicoil: bool,
    scale: float | None = None,
    recon_size: tuple[int, int] | None = None,
    coil_estimator: str = O.MultiCoilMRIConfig.model_fields["coil_estimator"].default,
) -> PreparedSlice:
    """The one preparation of a fastMRI slice, for reconstruction and for acquisition.

    Coil maps are estimated on the encoded (k-space) grid; the scale is the peak of the
    zero-filled image inside the reconstruction window (fastMRI's ``complex_center_crop``).

    Args:
        k: k-space (coils, H, W) complex (coils = 1 single-coil), centred, on the encoded grid.
        mask: sampled columns, (W,) or (H, W), 0/1.
        num_low: width of the fully sampled centre (ACS) the coil maps are estimated from.
        multicoil: estimate coil maps and combine coils with them.
        scale: divide by this instead of the zero-filled image's peak.
        recon_size: the reconstruction grid (h, w) inside the encoded one; (H, W) when None.
        coil_estimator: a key of :data:`recon.operators.COIL_ESTIMATORS`.
    """
    h, w = k.shape[-2:]
    mask_hw = torch.as_tensor(mask, dtype=torch.float32, device=k.device).expand(h, w).clone()
    km = k * mask_hw
    inputs: dict[str, Tensor] = {"mask": mask_hw}
    if multicoil:
        maps = O.COIL_ESTIMATORS[coil_estimator](km[None], num_low)[0].to(torch.complex64)
        inputs["coil_maps"] = maps
        zf = (torch.conj(maps) * O.ifft2c(km)).sum(0).abs()
    else:
        zf = O.ifft2c(km[0]).abs()
    if scale is None:
        scale = float(O.center_crop(zf, recon_size or (h, w)).max()) or 1.0
    y = torch.stack([km.real, km.imag]) / scale  # (2, coils, H, W)
    return PreparedSlice(y if multicoil else y[:, 0], inputs, scale)


def _ifft1c(k: Tensor, dim: int) -> Tensor:
    """Centred orthonormal inverse 1-D FFT along ``dim``."""
    k = torch.fft.ifftshift(k, dim=dim)
    return torch.fft.fftshift(torch.fft.ifft(k, dim=dim, norm="ortho"), dim=dim)


#: the robust std of zero-mean Gaussian values from the median of their magnitudes
_MAD_TO_STD = 1.0 / 0.6744897501960817


def noise_std(k: Tensor, columns: Tensor, recon_h: int) -> tuple[Tensor, str]:
    """The noise std per coil of one slice of k-space, from the part of the data that holds
    only noise; per real component, in k-space units.

    With readout oversampling (the reconstruction window ``recon_h`` at most half the readout
    ``H``, fastMRI's 320 of 640), the image outside the window along the readout is empty:
    the centred 1-D inverse FFT along the readout of the measured columns (hybrid space,
    orthonormal, so the noise std is unchanged) is noise there. Of each outer band only its
    middle half is used, away from the object's edge and from the receiver filter's roll-off
    at the edge of the field of view. Without such bands the outer eighths of the readout
    frequencies (k-space periphery) are used; they hold some signal, so the estimate is an
    upper bound there. The std is ``1.4826 * median(|v|)`` over real and imaginary parts
    (zero-mean Gaussian noise; robust to a few object pixels).

    Args:
        k: complex k-space (coils, H, W) on the encoded grid (coils = 1 single-coil).
        columns: boolean (W,), the measured phase-encode columns.
        recon_h: height of the reconstruction window along the readout (axis -2).

    Returns:
        The std per coil (coils,) float64 and the rule used (``"readout oversampling"`` or
        ``"k-space periphery"``).
    """
    km = k[..., columns]  # (coils, H, m)
    h = k.shape[-2]
    top = O.crop_box((h, 1), (recon_h, 1))[0]  # fastMRI's window geometry
    bottom = h - top - recon_h
    if min(top, bottom) >= 8:
        hybrid = _ifft1c(km, dim=-2)
        bands = [
            hybrid[:, top // 4 : 3 * top // 4],
            hybrid[:, h - 3 * bottom // 4 : h - bottom // 4],
        ]
        rule = "readout oversampling"
    else:
        n = max(h // 8, 1)
        bands = [km[:, :n], km[:, h - n :]]
        rule = "k-space periphery"
    v = torch.cat([b.reshape(b.shape[0], -1) for b in bands], dim=1)
    v = torch.cat([v.real, v.imag], dim=1).abs().double()
    return v.median(dim=1).values * _MAD_TO_STD, rule


@dataclass
class Noise:
    """The measurement noise a run assumes, and where it came from (recorded in the output).

    Attributes:
        sigma_y: std per real component in the sampler's (scaled) units.
        file_units: the same std in the file's units (k-space, sinogram, measurements).
        origin: where it came from: ``--sigma-y``, ``operator.sigma_y`` (a config), the
            file's record, an estimate from the data, or none (0).
        per_coil: fastMRI: the estimated std per slice and coil (slices, coils) in the
            file's units (NaN for a slice with NaN/Inf values).
    """

    sigma_y: float
    file_units: float
    origin: str
    per_coil: np.ndarray | None = None

    def record(self) -> dict[str, Any]:
        """The output file's ``noise`` attr."""
        return {
            "sigma_y": self.sigma_y,
            "sigma_y_file_units": self.file_units,
            "origin": self.origin,
        }


def _recorded_sigma(attrs: dict[str, Any]) -> float | None:
    """The noise std a file records in its ``operator`` attr (``recon simulate`` writes it;
    fastMRI's files have none)."""
    try:
        op = json.loads(attrs.get("operator", "{}"))
        value = op.get("sigma_y") if isinstance(op, dict) else None
        return float(value) if value is not None and np.isfinite(float(value)) else None
    except (TypeError, ValueError):
        return None


#: the fields of a config's operator a fastMRI file takes: always, and for fully sampled
#: k-space (retrospective undersampling)
_FASTMRI_USES = frozenset({"name", "img_size", "sigma_y", "coil_estimator"})
_FULLY_SAMPLED_USES = frozenset({"mask", "acceleration", "center_fraction", "seed"})


def _check_override(info: Any, override: O.OperatorConfigBase) -> None:
    """Refuse a config operator that a fastMRI file would ignore (the file has its own
    operator), so the result's recorded config never claims what did not run."""
    if override.name not in ("mri", "mri_multicoil"):
        raise UserError(
            f"{info.path}: fastMRI k-space needs an 'mri' or 'mri_multicoil' operator, not "
            f"{override.name!r} (or none: the file gives it)"
        )
    uses = _FASTMRI_USES | (_FULLY_SAMPLED_USES if info.mask is None else frozenset())
    ignored = sorted(set(override.model_fields_set) - uses)
    sizes = (tuple(info.image_size), tuple(info.shape))  # the image's, or the k-space's
    if "img_size" in override.model_fields_set and tuple(override.img_size) not in sizes:
        ignored.append(f"img_size (the file's is {list(info.image_size)})")
    if ignored:
        why = (
            "its k-space has its own mask" if info.mask is not None else "they come from the file"
        )
        raise UserError(
            f"{info.path}: the config's operator sets {', '.join(ignored)}, which this file "
            f"would ignore ({why}); remove them"
        )


class FastMRISource(Source):
    """fastMRI k-space (single- or multi-coil); see :mod:`recon.io`."""

    def __init__(
        self,
        f: Any,
        override: O.OperatorConfigBase | None,
        coil_estimator: str | None = None,
        sigma_y: float | None = None,
        noise_floor: bool | None = None,
    ) -> None:
        self.info = info = io.fastmri_info(f)
        # one slice's k-space is read at a time, with a few complex64 working copies
        memory.check_request(
            8 * 6 * math.prod(f["kspace"].shape[1:]),
            f"{info.path}: one slice of 'kspace' {tuple(f['kspace'].shape[1:])}",
        )
        # recon simulate's truth is the noise-free image; fastMRI's targets are noisy RSS
        self.noise_floor = not info.attrs.get("simulated") if noise_floor is None else noise_floor
        self.kind = "mri_multicoil" if info.multicoil else "mri"
        self.n_items = info.n_slices
        h, w = info.shape
        if info.mask is not None:
            mask = info.mask
        else:
            if override is None or override.name not in ("mri", "mri_multicoil"):
                op = "mri_multicoil" if info.multicoil else "mri"
                size = f"[{info.image_size[0]},{info.image_size[1]}]"
                raise UserError(
                    f"{info.path}: the k-space is fully sampled and has no 'mask'; choose the "
                    f"undersampling, e.g. --set operator.name={op} --set operator.img_size="
                    f"{size} --set operator.acceleration=4 (operator.mask: equispaced|random)"
                )
            mask = O.make_mask(
                override.mask if override.mask != "given" else "equispaced",
                (h, w),
                acceleration=override.acceleration,
                center_fraction=override.center_fraction,
                seed=override.seed,
            )[0].numpy()
        if override is not None:
            _check_override(info, override)
        self.mask = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        self.num_low = _acs_width(np.asarray(mask))
        if info.multicoil and self.num_low < 2:
            raise UserError(
                f"{info.path}: the mask has no fully sampled centre (ACS) to "
                "estimate coil maps from"
            )
        acc = float(w / max(float(self.mask.sum()), 1.0))
        # the unknown is the image on the reconstruction grid, embedded in the encoded one
        # (readout oversampling: 640 x 368 k-space, 320 x 320 image)
        self.recon_size = info.image_size
        if info.truth_key is not None:
            t = tuple(f[info.truth_key].shape)
            if len(t) != 3 or t[0] != info.n_slices or t[1:] != self.recon_size:
                raise UserError(
                    f"{info.path}: {info.truth_key!r} has shape {t}; expected (slices, h, w) = "
                    f"({info.n_slices}, {self.recon_size[0]}, {self.recon_size[1]}), the "
                    "reconstruction grid (ismrmrd_header reconSpace, within the k-space grid)"
                )
        self.scale, self.noise = self._volume(f, override, sigma_y)
        common = dict(
            img_size=self.recon_size,
            encoded_size=(h, w) if self.recon_size != (h, w) else None,
            mask="given",
            sigma_y=self.noise.sigma_y,
            acceleration=min(max(acc, 2.0), 12.0),
            center_fraction=min(self.num_low / w, 0.99),
        )
        if info.multicoil:
            estimator = coil_estimator or getattr(override, "coil_estimator", None)
            self.operator = O.MultiCoilMRIConfig(
                **common,
                coil_maps="given",
                **({"coil_estimator": estimator} if estimator is not None else {}),
            )
        else:
            self.operator = O.MRIConfig(**common)

    def _volume(
        self, f: Any, override: O.OperatorConfigBase | None, sigma_y: float | None
    ) -> tuple[float, Noise]:
        """One pass over every slice of the file (whichever items run, so that an item's
        result does not depend on the selection): the volume's scale, the peak of the
        zero-filled (root-sum-of-squares) image inside the reconstruction window, and the
        noise std per slice and coil (:func:`noise_std`). The volume's noise level is the
        median over slices of the root-mean-square over coils. One scale per volume keeps one
        noise level in scaled units for every slice (the receiver's noise does not change
        from slice to slice; the signal does)."""
        info, cols = self.info, self.mask > 0
        ks = f["kspace"]
        peaks, table, rule = [], [], ""
        for i in range(info.n_slices):
            k = torch.from_numpy(np.asarray(ks[i]).astype(np.complex64))
            k = k[None] if k.ndim == 2 else k
            if not torch.isfinite(torch.view_as_real(k)).all():
                table.append(np.full(k.shape[0], np.nan))  # refused if selected (check)
                continue
            km = k * cols.to(k.device)
            zf = O.ifft2c(km).abs().pow(2).sum(0).sqrt()
            peaks.append(float(O.center_crop(zf, self.recon_size).max()))
            std, rule = noise_std(k, cols, self.recon_size[0])
            table.append(std.numpy())
        scale = max(peaks, default=0.0) or 1.0
        per_coil = np.stack(table)
        pooled = np.sqrt(np.mean(per_coil**2, axis=1))
        est = float(np.nanmedian(pooled)) if np.isfinite(pooled).any() else 0.0
        recorded = _recorded_sigma(info.attrs)
        if sigma_y is not None:
            raw, origin = float(sigma_y), "--sigma-y"
        elif override is not None and "sigma_y" in override.model_fields_set:
            raw, origin = override.sigma_y * scale, "operator.sigma_y"
        elif recorded is not None:
            raw, origin = recorded, "the file's record (attr operator.sigma_y)"
        else:
            raw, origin = est, f"estimated from the data ({rule}, median over slices)"
        return scale, Noise(raw / scale, raw, origin, per_coil)

    def check(self, f: Any, indices: list[int]) -> None:
        """Fail before any work if a selected slice has NaN/Inf or no signal where measured."""
        ks = f["kspace"]
        for i in indices:
            k = np.asarray(ks[i])
            if not np.isfinite(k).all():
                raise UserError(
                    f"{self.info.path}: slice {i} of 'kspace' has "
                    f"{int((~np.isfinite(k)).sum())} NaN/Inf values; repair or exclude it "
                    "(items: [...] in the config)"
                )
            if not np.any(k * self.mask.numpy()):
                raise UserError(
                    f"{self.info.path}: slice {i} of 'kspace' is zero on every measured "
                    "column; there is nothing to reconstruct from (exclude it: items: [...])"
                )

    def item(self, index: int) -> Item:
        k, truth = io.read_fastmri_slice(self.info, index)  # (coils, H, W) complex
        prep = prepare_kspace(
            k,
            self.mask,
            self.num_low,
            multicoil=self.info.multicoil,
            scale=self.scale,
            recon_size=self.recon_size,
            coil_estimator=getattr(
                self.operator,
                "coil_estimator",
                O.MultiCoilMRIConfig.model_fields["coil_estimator"].default,
            ),
        )
        return Item(index, prep.y, truth, prep.inputs, prep.scale)

    def floor(self, index: int) -> float:
        """The noise floor of slice ``index`` in scaled units: ``sqrt(sum_c 2 sigma_c^2)``, the
        root-mean-square of the root-sum-of-squares of pure noise in the fully sampled coil
        images (orthonormal FFT: the image noise per pixel is the k-space noise per entry);
        0 with ``noise_floor`` off or no estimate."""
        if not self.noise_floor or self.noise.per_coil is None:
            return 0.0
        sq = 2.0 * float(np.sum(self.noise.per_coil[index] ** 2)) / self.scale**2
        return math.sqrt(sq) if math.isfinite(sq) else 0.0

    def output(self, x: Tensor, item: Item, *, floor: bool = False) -> Tensor:
        """Magnitude image on the reconstruction grid, in the file's units (h, w): ``|x|``,
        or, with ``floor`` (an estimate of the noise-free image) and ``noise_floor`` on,
        ``sqrt(|x|^2 + floor^2)`` (:meth:`floor`): the expected root-sum-of-squares of the
        fully sampled noisy coil images ``S_c x + n_c`` (``sum_c |S_c|^2 = 1``), the
        convention of fastMRI's targets."""
        f2 = self.floor(item.index) ** 2 if floor else 0.0
        return (x.pow(2).sum(0) + f2).sqrt() * item.scale


class CTSource(Source):
    """CT sinograms; see :mod:`recon.io`."""

    def __init__(self, f: Any, override: O.OperatorConfigBase | None) -> None:
        self.info = info = io.ct_info(f)
        self.kind = "ct"
        self.n_items = info.n_slices
        a = info.attrs
        base: dict[str, Any] = {}
        if "img_size" in a:
            v = a["img_size"]
            base["img_size"] = io.size_attr(v, info.path, "img_size")
        for key in ("geometry", "angle_range", "sigma_y"):
            if key in a:
                base[key] = a[key]
        for key, have in (("n_angles", info.n_angles), ("n_detectors", info.n_detectors)):
            said = a.get(key)
            if said is not None and str(said) != str(have):  # an attr that contradicts the data
                raise UserError(
                    f"{info.path}: attr {key}={said} but the sinogram has {have}; fix or remove "
                    "the attr"
                )
        base["n_angles"] = info.n_angles
        if override is not None:
            if override.name != "ct":
                raise UserError(
                    f"{info.path}: a CT file needs a 'ct' operator, not {override.name!r}"
                )
            base.update(override.model_dump(exclude_unset=True))
        if "img_size" not in base:
            raise UserError(
                f"{info.path}: the image size is unknown; give it in the config "
                "(operator.img_size) or as the file attr img_size"
            )
        native = int(np.ceil(np.sqrt(2) * base["img_size"][0]))
        if info.n_detectors != native:
            base["n_detectors"] = info.n_detectors
        base["name"] = "ct"
        self.operator = validate(O.CTConfig, base, source=str(info.path))
        if info.truth_key is not None:
            t, want = tuple(f[info.truth_key].shape), (info.n_slices, *self.operator.img_size)
            if t != want:
                raise UserError(
                    f"{info.path}: {info.truth_key!r} has shape {t}; expected (slices, H, W) = "
                    f"{want} (the operator's img_size)"
                )
        self._physics = None

    def item(self, index: int) -> Item:
        s, truth = io.read_ct_slice(self.info, index)
        return Item(index, s, truth)

    def physics(self, rows: list[Item], device: torch.device):
        if self._physics is None:
            self._physics = O.build(self.operator, device=device)
        return self._physics


class MeasurementsSource(Source):
    """Image-domain measurements written by ``recon simulate``."""

    def __init__(self, f: Any) -> None:
        p = Path(f.filename)
        self.y = torch.from_numpy(io.real_array(f, "measurements", "(N, C, h, w)"))
        self.truth = (
            torch.from_numpy(io.real_array(f, "ground_truth", "(N, C, H, W)"))
            if "ground_truth" in f
            else None
        )
        self.masks = (
            torch.from_numpy(io.real_array(f, "mask", "(N, H, W) 0/1")) if "mask" in f else None
        )
        try:
            op = json.loads(f.attrs.get("operator", "{}"))
        except (TypeError, ValueError):
            op = None
        if not isinstance(op, dict) or op.get("name") not in ("inpainting", "super_resolution"):
            raise UserError(
                f"{p}: attr 'operator' must be the JSON of an inpainting or super_resolution "
                "operator config (as `recon simulate` writes it)"
            )
        if op["name"] == "inpainting":
            op = {**op, "mask": "given", "n_masks": None}
        cls = O.InpaintingConfig if op["name"] == "inpainting" else O.SuperResolutionConfig
        self.operator = validate(cls, op, source=str(p))
        img = tuple(self.operator.img_size)
        kw = {"mask": torch.ones(img[-2:])} if op["name"] == "inpainting" else {}
        meas = tuple(O.build(self.operator, **kw).A(torch.zeros(1, *img)).shape)
        if self.y.ndim != 4 or tuple(self.y.shape[1:]) != meas[1:]:
            raise UserError(
                f"{p}: 'measurements' has shape {tuple(self.y.shape)}; the operator measures "
                f"(N, {', '.join(map(str, meas[1:]))})"
            )
        if self.truth is not None and tuple(self.truth.shape) != (self.y.shape[0], *img):
            raise UserError(
                f"{p}: 'ground_truth' has shape {tuple(self.truth.shape)}; expected "
                f"({self.y.shape[0]}, {', '.join(map(str, img))})"
            )
        if self.masks is not None:
            m = self.masks
            if m.shape[0] != self.y.shape[0] or tuple(m.shape[-2:]) != img[-2:]:
                raise UserError(
                    f"{p}: 'mask' has shape {tuple(m.shape)}; expected one (H, W) mask per "
                    f"item, ({self.y.shape[0]}, {img[-2]}, {img[-1]})"
                )
            if not torch.isin(m, torch.tensor([0.0, 1.0])).all():
                raise UserError(f"{p}: 'mask' must hold 0 or 1 per pixel")
        elif op["name"] == "inpainting":
            raise UserError(f"{p}: an inpainting file needs its per-item 'mask' dataset")
        self.kind = op["name"]
        self.n_items = self.y.shape[0]
        self._shared = None

    def item(self, index: int) -> Item:
        inputs = {"mask": self.masks[index]} if self.masks is not None else {}
        truth = self.truth[index] if self.truth is not None else None
        if not torch.isfinite(self.y[index]).all():
            raise UserError(f"item {index} of 'measurements' has NaN/Inf values")
        return Item(index, self.y[index], truth, inputs)

    def physics(self, rows: list[Item], device: torch.device):
        if self.kind == "inpainting":
            return super().physics(rows, device)
        if self._shared is None:
            self._shared = O.build(self.operator, device=device)
        return self._shared


def open_source(cfg: RunConfig) -> Source:
    """The scan a run reads, by its layout, with its selected items (``source.indices``)
    checked. The file is opened once here (header and item checks) and then once per item."""
    if cfg.input is None:
        raise UserError("no input scan: give SCAN on the command line or 'input' in the config")
    if Path(cfg.input).is_dir():
        raise UserError(
            f"{cfg.input}: a folder; reconstruct reads one scan file (fastMRI k-space, a CT "
            "sinogram or measurements, HDF5). A folder of images or a DICOM series is an image "
            "stack: simulate measurements from it first with `recon simulate FOLDER -o SCAN.h5 "
            "--operator ...`"
        )
    with io.open_h5(cfg.input) as f:
        layout = io.detect_layout(f)
        if layout == "fastmri":
            source: Source = FastMRISource(
                f, cfg.operator, cfg.coil_estimator, cfg.sigma_y, cfg.noise_floor
            )
        elif layout == "ct":
            source = CTSource(f, cfg.operator)
        elif layout == "measurements":
            source = MeasurementsSource(f)
        else:
            raise _no_measurements(cfg.input)
        if not isinstance(source, FastMRISource):  # no scaling: the file's units are the data's
            s = source.operator.sigma_y
            if cfg.sigma_y is not None:
                s, origin = cfg.sigma_y, "--sigma-y"
                source.operator = source.operator.model_copy(update={"sigma_y": s})
            elif cfg.operator is not None and "sigma_y" in cfg.operator.model_fields_set:
                origin = "operator.sigma_y"
            else:
                origin = "the file's record" if s > 0 else "none recorded (give --sigma-y)"
            source.noise = Noise(s, s, origin)
        n = source.n_items
        source.indices = list(range(n)) if cfg.items is None else list(cfg.items)
        for i in source.indices:
            if not 0 <= i < n:
                raise UserError(f"{cfg.input}: item {i} does not exist (it has {n})")
        source.check(f, source.indices)
    return source


def _no_measurements(path: str) -> UserError:
    return UserError(
        f"{path}: an image stack has no measurements; simulate them first "
        "with `recon simulate IMAGES -o SCAN.h5 --operator ...`"
    )
