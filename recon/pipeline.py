"""The pipeline: ``run(cfg) -> RunResult`` reconstructs a scan file and writes the result.

It builds the prior, schedule and sampler from the config, opens the scan (fastMRI k-space,
CT sinograms, image-domain measurements or an image stack to simulate from), and streams its
items (slices or images) through the sampler in chunks of ``batch_size`` rows, each row one
(item, sample) pair. Row (i, k) draws all its randomness from its own stream, seeded by
``(seed, i, k)``, and its operator is built from item i's own inputs (mask, coil maps), so an
item's result depends neither on the batch size nor on which other items ran.

fastMRI k-space is scaled per slice so that the zero-filled magnitude image peaks at 1 (priors
work in [0, 1] units); outputs are scaled back, so ``reconstruction`` is in the file's units.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon import errors, io, metrics
from recon import operators as O
from recon.config import RunConfig, validate
from recon.errors import UserError
from recon.samplers import SAMPLERS, CountingDenoiser, hyperparameters, row_generator


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

    def check(self, indices: list[int]) -> None:
        """Validate the selected items before any work (bad values fail early)."""

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

    def output(self, x: Tensor, item: Item) -> Tensor:
        """Display-domain image (H, W) from a reconstruction (C, H, W)."""
        return (x[0] if x.shape[0] == 1 else x.pow(2).sum(0).sqrt()) * item.scale


def _center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = x.shape[-2:]
    ch, cw = min(size[0], h), min(size[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


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


class FastMRISource(Source):
    """fastMRI k-space (single- or multi-coil); see :mod:`recon.io`."""

    def __init__(self, path: str, override: O.OperatorConfigBase | None, seed: int) -> None:
        self.info = info = io.fastmri_info(path)
        self.kind = "mri_multicoil" if info.multicoil else "mri"
        self.n_items = info.n_slices
        h, w = info.shape
        sigma_y = override.sigma_y if override is not None else 0.0
        if info.mask is not None:
            mask = info.mask
        else:
            if override is None or override.name not in ("mri", "mri_multicoil"):
                raise UserError(
                    f"{info.path}: the k-space is fully sampled and has no 'mask'; choose the "
                    "undersampling, e.g. --acceleration 4 (and --mask equispaced|random)"
                )
            mask = O.make_mask(
                override.mask if override.mask != "given" else "equispaced",
                (h, w),
                acceleration=override.acceleration,
                center_fraction=override.center_fraction,
                seed=override.seed,
            )[0].numpy()
        self.mask = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        self.num_low = _acs_width(np.asarray(mask))
        if info.multicoil and self.num_low < 2:
            raise UserError(
                f"{info.path}: the mask has no fully sampled centre (ACS) to "
                "estimate coil maps from"
            )
        acc = float(w / max(float(self.mask.sum()), 1.0))
        common = dict(
            img_size=(h, w),
            mask="given",
            sigma_y=sigma_y,
            acceleration=min(max(acc, 2.0), 12.0),
            center_fraction=min(self.num_low / w, 0.99),
        )
        if info.multicoil:
            self.operator = O.MultiCoilMRIConfig(**common, coil_maps="given")
        else:
            self.operator = O.MRIConfig(**common)

    def check(self, indices: list[int]) -> None:
        """Fail before any work if a selected slice has NaN/Inf k-space."""
        import h5py

        with h5py.File(self.info.path, "r") as f:
            ks = f["kspace"]
            for i in indices:
                k = np.asarray(ks[i])
                if not np.isfinite(k).all():
                    raise UserError(
                        f"{self.info.path}: slice {i} of 'kspace' has "
                        f"{int((~np.isfinite(k)).sum())} NaN/Inf values; repair or exclude it "
                        "(items: [...] in the config)"
                    )

    def item(self, index: int) -> Item:
        k, truth = io.read_fastmri_slice(self.info, index)  # (coils, H, W) complex
        k = k * self.mask  # unmeasured columns are zero
        y2 = torch.stack([k.real, k.imag])  # (2, coils, H, W)
        inputs: dict[str, Tensor] = {"mask": self.mask.expand(*self.info.shape).clone()}
        if self.info.multicoil:
            maps = O.estimate_coil_maps(k[None], self.num_low)[0]
            inputs["coil_maps"] = maps.to(torch.complex64)
            img = torch.fft.fftshift(
                torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
            )
            zf = (torch.conj(maps) * img).sum(0).abs()
        else:
            y2 = y2[:, 0]
            img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k[0]), norm="ortho"))
            zf = img.abs()
        scale = float(zf.max()) or 1.0
        return Item(index, y2 / scale, truth, inputs, scale)

    def output(self, x: Tensor, item: Item) -> Tensor:
        mag = x.pow(2).sum(0).sqrt() * item.scale
        return _center_crop(mag, self.info.recon_size)


class CTSource(Source):
    """CT sinograms; see :mod:`recon.io`."""

    def __init__(self, path: str, override: O.OperatorConfigBase | None) -> None:
        self.info = info = io.ct_info(path)
        self.kind = "ct"
        self.n_items = info.n_slices
        a = info.attrs
        base: dict[str, Any] = {}
        if "img_size" in a:
            v = a["img_size"]
            base["img_size"] = tuple(json.loads(v) if isinstance(v, str) else v)
        for key in ("geometry", "angle_range", "sigma_y"):
            if key in a:
                base[key] = a[key]
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

    def __init__(self, path: str) -> None:
        p = Path(path)
        with io.open_h5(p) as f:
            self.y = torch.from_numpy(np.asarray(f["measurements"][()], dtype=np.float32))
            self.truth = (
                torch.from_numpy(np.asarray(f["ground_truth"][()], dtype=np.float32))
                if "ground_truth" in f
                else None
            )
            self.masks = (
                torch.from_numpy(np.asarray(f["mask"][()], dtype=np.float32))
                if "mask" in f
                else None
            )
            op = json.loads(f.attrs.get("operator", "{}"))
        if op.get("name") not in ("inpainting", "super_resolution"):
            raise UserError(
                f"{p}: attr 'operator' must describe an inpainting or super_resolution operator"
            )
        if op["name"] == "inpainting":
            op = {**op, "mask": "given", "n_masks": None}
        cls = O.InpaintingConfig if op["name"] == "inpainting" else O.SuperResolutionConfig
        self.operator = validate(cls, op, source=str(p))
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
    """The scan a run reads, by its layout."""
    if cfg.input is None:
        raise UserError("no input scan: give SCAN on the command line or 'input' in the config")
    layout = io.detect_layout(cfg.input)
    if layout == "fastmri":
        return FastMRISource(cfg.input, cfg.operator, cfg.seed)
    if layout == "ct":
        return CTSource(cfg.input, cfg.operator)
    if layout == "measurements":
        return MeasurementsSource(cfg.input)
    raise UserError(
        f"{cfg.input}: an image stack has no measurements; simulate them first "
        "with `recon simulate IMAGES -o SCAN.h5 --operator ...`"
    )


@dataclass
class RunResult:
    """What a run produced (also written to ``cfg.output``)."""

    reconstruction: Tensor  # (items, H, W)
    std: Tensor  # (items, H, W)
    indices: list[int]
    metrics: dict[str, list[float]]
    nfe_per_sample: int
    wall_time_s: float
    output: Path | None
    samples: Tensor | None = None
    inputs: Tensor | None = None  # zero-filled / A_dagger, (items, H, W)
    truth: Tensor | None = None
    convention: str = "image"  # metric convention (key of recon.metrics.CONVENTIONS)


def _check_prior_shape(prior: Any, shape: tuple[int, ...], source: Source) -> None:
    want = getattr(prior, "shape", None)
    if want is not None and tuple(want) != tuple(shape):
        raise UserError(
            f"the prior serves images of shape {tuple(want)} but this {source.kind} scan "
            f"has images of shape {tuple(shape)}; choose a prior of that size, or a sampler "
            "without a prior (pinv, tv)"
        )


def resolve_prior(cfg: RunConfig, shape: tuple[int, ...]) -> RunConfig:
    """``cfg`` with a prior name (``recon list priors``) resolved for images of ``shape``
    (C, H, W); a prior config is kept as it is."""
    from recon.priors.configs import resolve

    if not isinstance(cfg.prior, str):
        return cfg
    data = {**cfg.model_dump(mode="json"), "prior": resolve(cfg.prior, shape)}
    return validate(RunConfig, data, source=f"prior {cfg.prior!r}")


def run(
    cfg: RunConfig,
    *,
    on_rows: Callable[[int, int], None] | None = None,
    prior: Any | None = None,
) -> RunResult:
    """Reconstruct ``cfg.input`` and (if ``cfg.output``) write the results file.

    A sampler that uses no prior (pinv, fbp, tv) never resolves or builds one; a prior given
    by name is resolved against the scan's image size once the scan is open, and the results
    file records the resolved config.

    Args:
        cfg: the run config.
        on_rows: progress callback ``(rows_done, rows_total)``.
        prior: an already built prior to use instead of building ``cfg.prior`` (evaluation
            reuses one across items).
    """
    t0 = time.perf_counter()
    device = errors.device(cfg.device)
    if cfg.output is not None:
        io.check_writable(cfg.output, force=cfg.force)
    source = open_source(cfg)
    indices = list(range(source.n_items)) if cfg.items is None else list(cfg.items)
    for i in indices:
        if not 0 <= i < source.n_items:
            raise UserError(f"{cfg.input}: item {i} does not exist (it has {source.n_items})")
    source.check(indices)
    entry = SAMPLERS[cfg.sampler.name]
    items: dict[int, Item] = {}
    if indices:
        first = items[indices[0]] = source.item(indices[0])
        y0 = first.y[None].to(device)
        shape = tuple(source.physics([first], device).A_adjoint(y0).shape[1:])
    if not entry.uses_prior:
        prior = None
    elif prior is None:
        if indices:
            cfg = resolve_prior(cfg, shape)
        prior = cfg.prior.build(device=str(device))
    if prior is not None and indices:
        _check_prior_shape(prior, shape, source)
    counted = CountingDenoiser(prior)
    sigmas = cfg.schedule.build().to(torch.float64)
    fn = entry.fn
    hyper = hyperparameters(cfg.sampler)

    rows = [(i, k) for i in indices for k in range(cfg.n_samples)]
    items: dict[int, Item] = {}
    draws: dict[int, list[Tensor]] = {i: [] for i in indices}
    done = 0
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start : start + cfg.batch_size]
        for i, _ in chunk:
            if i not in items:
                items[i] = source.item(i)
        chunk_items = [items[i] for i, _ in chunk]
        physics = source.physics(chunk_items, device)
        y = torch.stack([it.y for it in chunk_items]).to(device)
        gens = [row_generator(cfg.seed, i, k, device) for i, k in chunk]
        with torch.no_grad():
            x = fn(counted, y, physics, sigmas, generator=gens, **hyper)
        for (i, _), xr in zip(chunk, x, strict=True):
            draws[i].append(xr.detach().cpu())
        done += len(chunk)
        if on_rows is not None:
            on_rows(done, len(rows))

    recon_list, std_list, sample_list, input_list, truth_list = [], [], [], [], []
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "nmse": []}
    for i in indices:
        it = items[i]
        outs = torch.stack([source.output(d.double(), it) for d in draws[i]])
        recon_list.append(outs.mean(0))
        std_list.append(outs.std(0) if outs.shape[0] > 1 else torch.zeros_like(outs[0]))
        sample_list.append(outs)
        phys1 = source.physics([it], device)
        zf = phys1.A_dagger(it.y[None].to(device)).cpu()[0].double()
        input_list.append(source.output(zf, it))
        if it.truth is not None:
            t = it.truth.double()
            t = t if t.ndim == 2 else (t[0] if t.shape[0] == 1 else t.pow(2).sum(0).sqrt())
            truth_list.append(t)
    recon_t = torch.stack(recon_list)
    std_t = torch.stack(std_list)
    truth_t = torch.stack(truth_list) if len(truth_list) == len(indices) else None
    convention = "fastmri" if source.kind.startswith("mri") else "image"
    if truth_t is not None:
        if recon_t.shape != truth_t.shape:
            raise UserError(
                f"ground truth of shape {tuple(truth_t.shape[1:])} does not match "
                f"the reconstruction {tuple(recon_t.shape[1:])}"
            )
        if convention == "fastmri":
            m = metrics.fastmri_volume_metrics(recon_t, truth_t)
            scores = {k: [v] for k, v in m.items()}
        else:
            m = metrics.image_metrics(recon_t[:, None].clamp(0, 1), truth_t[:, None])
            scores = {k: v.tolist() for k, v in m.items()}
    wall = time.perf_counter() - t0
    nfe = counted.rows // max(len(rows), 1)
    out_path = None
    if cfg.output is not None:
        attrs = {
            "config": cfg.model_dump(mode="json"),
            "seed": cfg.seed,
            "device": str(device),
            "wall_time_s": wall,
            "nfe": nfe,
            "indices": indices,
            "metric_convention": metrics.CONVENTIONS[convention],
        }
        if truth_t is not None:
            attrs["metrics"] = scores
        out_path = io.write_result(
            cfg.output,
            reconstruction=recon_t,
            std=std_t if cfg.n_samples > 1 else None,
            samples=torch.stack(sample_list) if cfg.keep_samples else None,
            extras={"zero_filled" if convention == "fastmri" else "pinv": torch.stack(input_list)},
            attrs=attrs,
            force=cfg.force,
        )
    result = RunResult(
        recon_t,
        std_t,
        indices,
        scores if truth_t is not None else {},
        nfe,
        wall,
        out_path,
        torch.stack(sample_list) if cfg.keep_samples else None,
        torch.stack(input_list),
        truth_t,
        convention,
    )
    if cfg.figure is not None:
        save_figure(
            result,
            cfg.figure,
            title=f"{source.kind}, {cfg.sampler.name}, "
            f"{cfg.n_samples} sample(s); metrics: {metrics.CONVENTIONS[convention]}",
        )
    return result


def save_figure(result: RunResult, path: str | Path, *, title: str, max_rows: int = 4) -> Path:
    """truth / input / reconstruction / |error| / std for the first items."""
    from recon.figures import comparison_figure

    rows, caps = [], []
    for r in range(min(max_rows, len(result.indices))):
        row: dict[str, Any] = {}
        if result.truth is not None:
            row["truth"] = result.truth[r]
        row["input (A^+ y)"] = result.inputs[r]
        row["reconstruction"] = result.reconstruction[r]
        if result.truth is not None:
            row["|error|"] = (result.reconstruction[r] - result.truth[r]).abs()
        row["std"] = result.std[r]
        rows.append(row)
        cap = {}
        if result.metrics and len(result.metrics.get("psnr", [])) == len(result.indices):
            cap["reconstruction"] = (
                f"PSNR {result.metrics['psnr'][r]:.2f} dB, SSIM {result.metrics['ssim'][r]:.3f}"
            )
        caps.append(cap)
    return comparison_figure(path, rows, title=title, captions=caps)
