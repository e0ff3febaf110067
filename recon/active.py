"""Active diffusion subsampling (ADS): choose the next measurements during posterior sampling.

Reference: Nolan, Stevens, van Nierop, van Sloun, "Active Diffusion Subsampling"
(arXiv 2406.14388; official code active-diffusion-subsampling/ads, Keras/JAX).

One reverse diffusion with ``n_particles`` DPS trajectories (the particles) per scan. At
scheduled steps inside ``window`` (fractions of the schedule), the particles' Tweedie estimates
``x0_hat_i`` are mapped to predicted *fully sampled* measurements ``y_i = A_full x0_hat_i``;
each candidate ``l`` (a k-space column, or an image pixel/patch) gets the Gaussian-mixture
entropy estimate of its predicted measurement,

    D_ij(l) = sum_{entries e of l} |y_i,e - y_j,e|^2,
    H(l)    = -(1/N) sum_i log( (1/N) sum_j exp(-D_ij(l) / (2 s^2)) ),

computed with log-sum-exp (the official code uses ``+D_ij / (2 s^2)`` inside the exponent,
monotone in the spread as well but overflowing unless s suits the data scale; recon uses the
textbook sign, which is bounded by log N). The ``per_round`` unacquired candidates with the
largest H are acquired: the measurement function is called with the enlarged mask, a **new**
operator is built from it (the old one is never mutated), and sampling continues with the new
``y``. ``s`` is ``sigma_entropy`` (the paper: a fixed value, 50 on its fastMRI k-space scale)
or, when None, set per round so that typical exponents are O(1) (:func:`gmm_entropy`), scale-free.

Candidates and masks. A mask has the measurement's trailing (H, W) axes (leading axes
broadcast). ``"lines"``: candidate k is column k (fastMRI phase-encode lines), initial lines
(e.g. the ACS block) count as acquired. ``"pixels"``: candidate k is the ``patch x patch``
block k in row-major order.

The particles are the paper's: DPS (un-squared norm, per particle) on DDIM/DDPM steps
(:func:`recon.samplers.dps.dps_step`); with ``eta = 0`` and no noise they can collapse (the
paper's gotcha), so ``eta = 1`` (ancestral) is the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import deepinv as dinv
import torch
from torch import Tensor

from recon import memory
from recon.priors.base import Denoiser
from recon.samplers._steps import StepInfo, check_inputs, row_generator
from recon.samplers.dps import SAMPLERS as _DPS_ENTRY
from recon.samplers.dps import DDIMEta, Normalize, VPScale, Zeta, dps_step

if TYPE_CHECKING:
    from recon.distributed import Context

_DPS = _DPS_ENTRY[0].defaults()  # the particles take DPS steps with DPS's own defaults


@dataclass
class AcquisitionResult:
    """What one active acquisition returns (one scan).

    Attributes:
        reconstruction: particle mean of the final samples, (1, *x_shape).
        std: particle std, (1, *x_shape).
        samples: the final particles, (N, *x_shape).
        order: acquired candidate indices, in acquisition order.
        mask: the final mask (the initial mask's shape).
        physics: the operator built from the final mask.
        y: the measurements under the final mask.
        rounds: per round, ``{"step", "sigma", "chosen", "entropy", "mean_std"}`` (entropy of
            each chosen candidate; mean particle std of x0_hat over the image before choosing).
    """

    reconstruction: Tensor
    std: Tensor
    samples: Tensor
    order: list[int]
    mask: Tensor
    physics: dinv.physics.Physics
    y: Tensor
    rounds: list[dict] = field(default_factory=list)


def candidate_index(mask_hw: tuple[int, int], kind: str, patch: int = 1) -> Tensor:
    """Candidate id of every (row, col) entry, (H, W) long: the column for ``"lines"``, the
    row-major patch index for ``"pixels"``."""
    h, w = mask_hw
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    if kind == "lines":
        return cols.clone()
    if kind == "pixels":
        if h % patch or w % patch:
            raise ValueError(f"patch {patch} does not divide the image size {h}x{w}")
        return (rows // patch) * (w // patch) + cols // patch
    raise ValueError(f"candidates must be 'lines' or 'pixels', got {kind!r}")


def gmm_entropy(
    pred: Tensor,
    index: Tensor,
    n_candidates: int,
    sigma: float | None,
    exclude: Tensor | None = None,
    max_bytes: int | None = None,
) -> tuple[Tensor, float]:
    """The Gaussian-mixture entropy estimate H(l) of every candidate (module docstring).

    Args:
        pred: predicted measurements of the N particles, (N, ..., H, W) (real; complex data as
            real channels).
        index: candidate id per (H, W) entry.
        n_candidates: number of candidates.
        sigma: component std ``s`` (measurement units, > 0); None: ``s^2`` is half the mean
            pairwise distance ``D_ij(l)`` over particle pairs and the candidates not excluded,
            so typical exponents are O(1) whatever the data scale and candidate size.
        exclude: (n_candidates,) bool, candidates left out (set to -inf).
        max_bytes: bound on the pairwise differences held at once (N^2 C H W values
            unchunked: about 14 GB for 16 particles of 15-coil 640 x 368 k-space in float64);
            the particles are taken in blocks that fit. None: all at once.

    Returns:
        (n_candidates,) entropies (up to the constant ``(d_l / 2) log(2 pi e s^2)``), and s.
    """
    n = pred.shape[0]
    p = pred.reshape(n, -1, *pred.shape[-2:])
    # D_ij per entry summed over the leading (channel/coil) axes, then per candidate; in blocks
    # of particles i so that the (block, N, C, H, W) differences fit in max_bytes
    d = torch.zeros(n, n, n_candidates, dtype=pred.dtype, device=pred.device)
    flat_index = index.reshape(-1).to(pred.device)
    per_i = 2 * p[0].numel() * n * p.element_size()  # the differences and their squares
    block = n if max_bytes is None else max(1, min(n, max_bytes // per_i))
    for i0 in range(0, n, block):
        d_entry = ((p[i0 : i0 + block, None] - p[None, :]) ** 2).sum(2)  # (b, N, H, W)
        d[i0 : i0 + block].index_add_(2, flat_index, d_entry.reshape(d_entry.shape[0], n, -1))
        del d_entry
    if sigma is None:
        keep = torch.ones(n_candidates, dtype=torch.bool, device=d.device)
        if exclude is not None:
            keep = ~exclude.to(d.device)
        off = ~torch.eye(n, dtype=torch.bool, device=d.device)
        dd = d[off][:, keep] if bool(keep.any()) else d[off]
        sigma = max(float(dd.mean() / 2) ** 0.5, 1e-12) if n > 1 else 1.0
    lse = torch.logsumexp(-d / (2 * sigma**2), dim=1) - math.log(n)  # (N, L)
    ent = -lse.mean(0)
    if exclude is not None:
        ent = ent.masked_fill(exclude.to(ent.device), -math.inf)
    return ent, sigma


def candidate_spread(pred: Tensor, index: Tensor, n_candidates: int) -> Tensor:
    """Total particle variance of each candidate's predicted measurement, (n_candidates,):
    the per-entry variance over the N particles, summed over channels/coils and entries."""
    n = pred.shape[0]
    p = pred.reshape(n, -1, *pred.shape[-2:])
    var = p.var(0, unbiased=False).sum(0) if n > 1 else p[0].sum(0) * 0  # (H, W)
    out = torch.zeros(n_candidates, dtype=var.dtype, device=var.device)
    return out.index_add_(0, index.reshape(-1).to(var.device), var.reshape(-1))


def select_candidates(entropy: Tensor, spread: Tensor, k: int, *, tol: float = 1e-9) -> list[int]:
    """The k candidates to acquire: highest entropy; entropies within ``tol`` of each other are
    ties, broken by the larger particle spread, then by the lower index (deterministic).

    The entropy estimate saturates at ``log N`` once the particles' predictions are farther
    apart than the component width (all pairwise terms vanish), so with few particles many
    candidates tie at exactly that value (26 of 64 lines at a fixed s = 1 in one run); their
    spread still orders them, where ``topk`` picked arbitrarily.
    """
    key_ent = torch.round(entropy.double() / tol)  # -inf stays -inf
    order = torch.arange(entropy.numel(), device=entropy.device)
    # stable sorts, least significant key first: index, spread, entropy
    order = order[torch.sort(-spread.double()[order], stable=True).indices]
    order = order[torch.sort(-key_ent[order], stable=True).indices]
    return [int(c) for c in order[:k]]


def active_subsampling(
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    make_physics: Callable[[Tensor], dinv.physics.LinearPhysics],
    measure: Callable[[Tensor], Tensor],
    initial_mask: Tensor,
    x_shape: Sequence[int],
    budget: int,
    candidates: Literal["lines", "pixels"] = "lines",
    patch: int = 1,
    per_round: int = 1,
    window: tuple[float, float] = (0.0, 0.5),
    n_particles: int = 16,
    sigma_entropy: float | None = None,
    zeta: Zeta = _DPS["zeta"],
    vp_scale: VPScale = _DPS["vp_scale"],
    normalize: Normalize = _DPS["normalize"],
    eta: DDIMEta = _DPS["eta"],
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    hard_consistency: bool = False,
    max_memory: str | int | None = None,
) -> AcquisitionResult:
    """Acquire ``budget`` candidates for one scan while sampling its posterior (see module
    docstring).

    Args:
        denoiser: ``D(x, sigma)``.
        sigmas: descending schedule ending in 0.
        make_physics: mask -> a new operator measuring under that mask (must not keep
            references to the mask it is given beyond a copy).
        measure: mask -> measurements (1, *y_shape) under that mask: simulation from fully
            sampled data, or a callback to a scanner.
        initial_mask: (..., H, W) 0/1, e.g. the ACS lines; never modified.
        x_shape: image shape (C, H, W) of the denoiser.
        budget: number of candidates to acquire in total.
        candidates, patch: see module docstring.
        per_round: candidates acquired per round (``budget / per_round`` rounds).
        window: (start, stop) fractions of the steps within which rounds are spread evenly.
        n_particles: DPS trajectories sharing the mask.
        sigma_entropy: ``s`` of the entropy; None: automatic per round (:func:`gmm_entropy`).
        zeta, vp_scale, normalize, eta: DPS step (:func:`recon.samplers.sample_dps`, its defaults).
        generator: the scan's random stream.
        callback: a :class:`StepInfo` per step.
        hard_consistency: replace the measured entries of each final particle by the data,
            ``x + A^T (y - A x)`` (the paper's ``hard_consistency``); exact for operators whose
            rows are orthonormal (single-coil MRI: masked orthonormal FFT; inpainting), refused
            for others. Meant for noiseless data.
        max_memory: the memory budget (bytes or e.g. ``"4GB"``; default
            :func:`recon.memory.budget`'s); the entropy's pairwise differences take at most
            what the budget leaves above the memory in use.

    Returns:
        An :class:`AcquisitionResult`.
    """
    if budget < 0 or per_round < 1:
        raise ValueError("budget must be >= 0 and per_round >= 1")
    sig = [float(s) for s in sigmas]
    n_steps = len(sig) - 1
    room_device = torch.device(sigmas.device)
    room = memory.budget(room_device, max_memory)
    h, w = initial_mask.shape[-2:]
    index = candidate_index((h, w), candidates, patch)
    n_cand = int(index.max()) + 1
    mask = initial_mask.detach().clone().float()
    flat = mask.reshape(-1, h, w)

    def acquired() -> Tensor:  # (n_cand,) bool: every entry of the candidate is sampled
        full = (flat.amin(0) > 0).reshape(-1).float().cpu()
        cnt = torch.zeros(n_cand).index_add_(0, index.reshape(-1), full)
        tot = torch.zeros(n_cand).index_add_(0, index.reshape(-1), torch.ones(h * w))
        return cnt >= tot

    n_rounds = math.ceil(budget / per_round) if budget else 0
    lo, hi = (
        int(window[0] * n_steps),
        max(int(window[1] * n_steps), int(window[0] * n_steps) + 1),
    )
    if n_rounds > hi - lo:
        raise ValueError(
            f"{n_rounds} acquisition rounds do not fit in the window's {hi - lo} steps; widen "
            "window, raise per_round or use more steps"
        )
    round_steps = sorted({lo + (k * (hi - lo)) // max(n_rounds, 1) for k in range(n_rounds)})
    physics = make_physics(mask)
    y1 = measure(mask)
    check_inputs(y1, sigmas)
    ones = torch.ones_like(mask)
    full_physics = make_physics(ones)
    ref = next(iter(full_physics.parameters()), None)
    dt = y1.dtype if not torch.is_complex(y1) else torch.float32
    dev = y1.device if ref is None else ref.device
    g = generator if generator is not None else torch.Generator(dev)
    x = sig[0] * torch.randn((n_particles, *x_shape), generator=g, dtype=dt, device=dev)
    order: list[int] = []
    rounds: list[dict] = []
    left = budget
    with torch.no_grad():
        for i in range(n_steps):
            s, s_next = sig[i], sig[i + 1]
            noise = (
                torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)
                if eta > 0 and s_next > 0
                else None
            )
            yb = y1.expand(n_particles, *y1.shape[1:])
            x, x0 = dps_step(
                denoiser,
                x,
                yb,
                physics,
                s,
                s_next,
                noise,
                zeta=zeta,
                vp_scale=vp_scale,
                normalize=normalize,
                eta=eta,
            )
            if i in round_steps and left > 0:
                pred = full_physics.A(x0)
                if torch.is_complex(pred):
                    pred = torch.view_as_real(pred).movedim(-1, 1)
                ent, s_ent = gmm_entropy(
                    pred.double(),
                    index,
                    n_cand,
                    sigma_entropy,
                    acquired(),
                    max_bytes=max(room - memory.in_use(room_device), 2**26),
                )
                k = min(per_round, left, int(torch.isfinite(ent).sum()))
                if k == 0:
                    left = 0
                    continue
                chosen = select_candidates(ent, candidate_spread(pred.double(), index, n_cand), k)
                new = mask.clone()
                sel = torch.isin(index, torch.tensor(chosen)).to(new.device)
                new[..., sel] = 1.0
                mask = new
                flat = mask.reshape(-1, h, w)
                physics = make_physics(mask)
                y1 = measure(mask)
                order += chosen
                left -= k
                rounds.append(
                    {
                        "step": i,
                        "sigma": s,
                        "chosen": chosen,
                        "entropy": [float(ent[c]) for c in chosen],
                        "sigma_entropy": s_ent,
                        "mean_std": float(x0.std(0).mean()),
                    }
                )
            if callback is not None:
                callback(StepInfo(i, s, x, x0))
    if hard_consistency:
        x = _replace_measured(physics, x, y1)
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True) if n_particles > 1 else torch.zeros_like(mean)
    return AcquisitionResult(mean, std, x, order, mask, physics, y1, rounds)


def _replace_measured(physics: dinv.physics.LinearPhysics, x: Tensor, y1: Tensor) -> Tensor:
    """``x + A^T (y - A x)`` per particle: the measured entries replaced by the data. It is
    that replacement only when ``A A^T`` is a projection (singular values 0 or 1), checked on
    the operator's SVD (:func:`recon.operators.svd.svd`)."""
    from recon.operators.svd import svd

    try:
        s = svd(physics, x[:1]).s
    except TypeError as err:
        raise ValueError(f"hard_consistency needs an operator with an SVD: {err}") from None
    if not bool(((s - 1).abs() < 1e-5).logical_or(s.abs() < 1e-5).all()):
        raise ValueError(
            "hard_consistency needs orthonormal operator rows (singular values 0 or 1: "
            "single-coil MRI, inpainting); this operator has others"
        )
    yb = y1.expand(x.shape[0], *y1.shape[1:])
    return x + physics.A_adjoint(yb - physics.A(x))


def acquire_fastmri_slice(
    kspace: Tensor,
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    acceleration: float,
    center_fraction: float = 0.08,
    sigma_y: float = 0.0,
    generator: torch.Generator | None = None,
    initial_mask: Tensor | None = None,
    scale: float | None = None,
    recon_size: tuple[int, int] | None = None,
    **options,
) -> tuple[AcquisitionResult, float]:
    """Active acquisition of phase-encode lines for one fully sampled fastMRI slice.

    The scanner is simulated: acquiring a line reads it from ``kspace``. The initial mask is
    the ACS block (``center_fraction`` of the columns; or ``initial_mask``), the budget fills
    the mask up to ``W / acceleration`` lines. k-space is scaled so that the zero-filled image
    of the initial lines peaks at 1 (as the pipeline scales scans); multi-coil maps are
    estimated from the initial lines.

    Args:
        kspace: fully sampled k-space (coils, H, W) complex (coils = 1 for single-coil).
        denoiser: a prior on (2, H, W) images (real, imaginary channels).
        sigmas: schedule.
        acceleration: target acceleration R (the final mask has ``round(W / R)`` lines).
        center_fraction: ACS fraction of the columns.
        sigma_y: measurement noise std assumed by the operator (0: the file is taken as is).
        generator: the slice's stream.
        initial_mask: (W,) 0/1 lines to start from instead of the ACS block.
        scale: divide k-space by this instead of the initial zero-filled image's peak.
        recon_size: the image grid (h, w) inside the k-space grid (readout oversampling, see
            :class:`recon.operators.Embedded`); the k-space grid when None.
        **options: passed to :func:`active_subsampling` (n_particles, per_round, window, zeta,
            vp_scale, eta, sigma_entropy, callback).

    Returns:
        The :class:`AcquisitionResult` (in scaled units) and the scale factor.
    """
    from recon import operators as O
    from recon.sources import prepare_kspace

    coils, h, w = kspace.shape
    if initial_mask is None:
        n_low = O.masks.num_low_frequencies(w, center_fraction)
        lines = torch.zeros(w)
        start = (w - n_low + 1) // 2
        lines[start : start + n_low] = 1.0
    else:
        lines = torch.as_tensor(initial_mask, dtype=torch.float32).reshape(w)
        n_low = int(lines.sum())
    budget = max(round(w / acceleration) - int(lines.sum()), 0)
    mask0 = lines.expand(h, w).clone()
    multicoil = coils > 1
    img = tuple(recon_size or (h, w))
    prep = prepare_kspace(
        kspace, lines, max(n_low, 2), multicoil=multicoil, scale=scale, recon_size=img
    )
    scale = prep.scale
    extra = {"coil_maps": prep.inputs["coil_maps"]} if multicoil else {}
    common = dict(
        img_size=img, encoded_size=(h, w) if img != (h, w) else None, mask="given", sigma_y=sigma_y
    )
    cfg = O.MultiCoilMRIConfig(**common, coil_maps="given") if multicoil else O.MRIConfig(**common)
    ks = kspace / scale
    full = torch.stack([ks.real, ks.imag]).float()  # (2, coils, H, W)
    if not multicoil:
        full = full[:, 0]

    def make_physics(mask: Tensor) -> dinv.physics.LinearPhysics:
        return O.build(cfg, mask=mask.clone(), **extra)

    def measure(mask: Tensor) -> Tensor:
        return (full * mask)[None]

    res = active_subsampling(
        denoiser,
        sigmas,
        make_physics=make_physics,
        measure=measure,
        initial_mask=mask0,
        x_shape=(2, *img),
        budget=budget,
        candidates="lines",
        generator=generator,
        **options,
    )
    return res, scale


def acquire_file(
    scan: str,
    output: str,
    denoiser: Denoiser,
    sigmas: Tensor,
    *,
    acceleration: float,
    center_fraction: float = 0.08,
    slices: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    record: dict | None = None,
    figure: str | None = None,
    on_slice: Callable[[int, int], None] | None = None,
    context: Context | None = None,
    **options,
) -> dict | None:
    """Run :func:`acquire_fastmri_slice` on every selected slice of a fully sampled fastMRI
    file and write the results atomically.

    Output datasets: ``reconstruction`` and ``std`` (slices, H, W) magnitude images in the
    file's units, ``mask`` (slices, H, W) final masks, ``acquisition_order`` (slices, budget)
    line indices in order, ``round_entropy`` (slices, rounds) entropy of the first line chosen
    per round; attrs: ``config`` (JSON, with ``record``), ``seed``, ``wall_time_s``, versions,
    and, with a ground truth, fastMRI-convention ``psnr``/``ssim``.

    Slices are dealt to the ranks under torchrun (``context``); each finished slice is kept
    beside the output until it is written, so a killed run, rerun, acquires only the slices it
    had not finished (:mod:`recon.distributed`).

    Returns:
        A summary dict (psnr, ssim, lines, wall_time_s, output); None on ranks other than 0.
    """
    import json
    import time

    import numpy as np

    from recon import distributed, io, metrics, results
    from recon.config import digest, tensor_digest, validate_options
    from recon.errors import UserError

    options = validate_options(active_subsampling, options, source="acquire")
    results.check_outputs(output, figure, force=force, inputs=[scan])
    info = io.fastmri_info(scan)
    if info.mask is not None and float(np.asarray(info.mask).min()) < 1:
        raise UserError(
            f"{scan}: k-space is undersampled (it has a mask); acquisition needs fully "
            "sampled k-space (e.g. recon simulate IMAGES --operator mri --mask full)"
        )
    idx = list(range(info.n_slices)) if slices is None else list(slices)
    bad = [i for i in idx if not 0 <= i < info.n_slices]
    if bad:
        raise UserError(f"{scan}: slices {bad} out of range (the file has {info.n_slices})")
    ctx = context or distributed.SINGLE
    t0 = time.perf_counter()
    cfg = {
        "scan": str(scan),
        "acceleration": acceleration,
        "center_fraction": center_fraction,
        "steps": len(sigmas) - 1,
        **{k: v for k, v in options.items() if k not in ("callback", "max_memory")},
        **(record or {}),
    }

    def compute(chunk: list[tuple[int, ...]]) -> dict[tuple[int, ...], dict]:
        ((i,),) = chunk
        k, truth = io.read_fastmri_slice(info, i)
        g = row_generator(seed, i, 0, device)
        try:
            res, scale = acquire_fastmri_slice(
                k.to(device),
                denoiser,
                sigmas.to(device),
                acceleration=acceleration,
                center_fraction=center_fraction,
                generator=g,
                recon_size=info.image_size,
                **options,
            )
        except ValueError as err:
            raise UserError(f"{scan} slice {i}: {err}") from None
        row = {
            "rec": (res.reconstruction[0].pow(2).sum(0).sqrt() * scale).cpu(),
            "std": (res.std[0].pow(2).sum(0).sqrt() * scale).cpu(),
            "mask": res.mask.reshape(-1, *res.mask.shape[-2:])[0].cpu(),
            "order": [int(c) for c in res.order],
            "entropy": [float(r["entropy"][0]) for r in res.rounds],
        }
        if truth is not None:
            row["truth"] = truth
        return {(i,): row}

    # what the rows depend on: the options, the schedule's values, the prior's weights, the
    # seed and the scan as read
    fp = digest(
        cfg,
        [round(float(s), 12) for s in sigmas],
        tensor_digest(denoiser),
        seed,
        distributed.file_stamp(scan),
    )
    store = distributed.RowStore(distributed.rows_folder(output, fp))
    done = distributed.run_rows(
        [(i,) for i in idx],
        compute,
        batch_size=1,
        ctx=ctx,
        store=store,
        on_rows=on_slice,
        describe=lambda chunk: f"{scan} slice {chunk[0][0]}",
    )
    if not ctx.is_main:
        return None
    got = [done.rows[(i,)] for i in idx]
    recs = [r["rec"].numpy() for r in got]
    stds = [r["std"].numpy() for r in got]
    masks = [r["mask"].numpy() for r in got]
    orders = [r["order"] for r in got]
    ents = [r["entropy"] for r in got]
    truths = [r["truth"].numpy() for r in got if "truth" in r]
    wall = time.perf_counter() - t0
    rec = np.stack(recs)
    summary: dict = {"output": str(output), "wall_time_s": wall, "slices": idx}
    if truths:
        vm = metrics.fastmri_volume_metrics(
            torch.from_numpy(rec), torch.from_numpy(np.stack(truths))
        )
        summary.update(psnr=float(vm["psnr"]), ssim=float(vm["ssim"]))
        summary["metric_convention"] = metrics.CONVENTIONS["fastmri"]
    n_order = max((len(o) for o in orders), default=0)
    order_arr = np.full((len(idx), n_order), -1, dtype=np.int64)
    ent_arr = np.full((len(idx), n_order), np.nan, dtype=np.float64)
    for r, (o, e) in enumerate(zip(orders, ents, strict=True)):
        order_arr[r, : len(o)] = o
        ent_arr[r, : len(e)] = e
    summary["lines_acquired"] = n_order
    # the acceleration of the masks actually written (the ACS may already exceed the budget)
    lines = [float(m.reshape(-1, m.shape[-1])[0].sum()) for m in masks]
    summary["final_acceleration"] = masks[0].shape[-1] / (sum(lines) / len(lines))

    def fill(f) -> None:
        f.create_dataset("reconstruction", data=rec.astype(np.float32))
        f.create_dataset("std", data=np.stack(stds).astype(np.float32))
        f.create_dataset("mask", data=np.stack(masks).astype(np.float32))
        f.create_dataset("acquisition_order", data=order_arr)
        f.create_dataset("round_entropy", data=ent_arr)
        attrs = {"config": json.dumps(cfg, default=str), "seed": seed, "slices": idx}
        attrs.update(wall_time_s=wall, **io.versions())
        for key in ("psnr", "ssim", "metric_convention"):
            if key in summary:
                attrs[key] = summary[key]
        io.write_attrs(f, attrs)

    rows, caps = results.panels(
        recs, stds, truth=truths or None, inputs=masks, input_label="mask (k-space)"
    )
    for cap, m in zip(caps, masks, strict=False):
        cap["mask (k-space)"] = f"{int(m[0].sum())} of {m.shape[-1]} lines"
    results.save(
        output,
        figure,
        reconstruction=rec,
        fill=fill,
        rows=rows,
        captions=caps,
        title="active subsampling (ADS)",
        force=force,
    )
    store.clear(others=True)
    return summary
