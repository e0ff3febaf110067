"""The pipeline: ``run(cfg) -> RunResult`` reconstructs a scan file and writes the result.

It builds the prior, schedule and sampler from the config, opens the scan (fastMRI k-space,
CT sinograms, image-domain measurements or an image stack to simulate from), and streams its
items (slices or images) through the sampler in chunks of ``batch_size`` rows, each row one
(item, sample) pair. Row (i, k) draws all its randomness from its own stream, seeded by
``(seed, i, k)``, and its operator is built from item i's own inputs (mask, coil maps), so an
item's result depends neither on the batch size nor on which other items ran.

fastMRI k-space is scaled per volume so that the zero-filled magnitude image peaks at 1 (priors
work in [0, 1] units); outputs are scaled back, so ``reconstruction`` is in the file's units.
The measurement noise std (``--sigma-y``, the file's record, or estimated from a fastMRI file's
data: :class:`recon.sources.Noise`) is recorded in the ``noise`` attr.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recon import distributed, errors, memory, metrics, results, support, teleport
from recon import operators as O
from recon.config import RunConfig, fingerprint, validate
from recon.distributed import SINGLE, Context, RowStore, file_stamp, run_rows
from recon.errors import UserError
from recon.memory import AutoBatch
from recon.samplers import SAMPLERS, CountingDenoiser, hyperparameters, row_generator
from recon.sources import Item, Source, open_source


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
    warnings: list[str] = field(default_factory=list)  # recon.support's one-line reports


def _check_prior_shape(prior: Any, shape: tuple[int, ...], source: Source) -> None:
    want = getattr(prior, "shape", None)
    if want is not None and tuple(want) != tuple(shape):
        raise UserError(
            f"the prior serves images of shape {tuple(want)} but this {source.kind} scan "
            f"has images of shape {tuple(shape)}; choose a prior of that size, or a sampler "
            f"without a prior ({', '.join(n for n, e in SAMPLERS.items() if not e.uses_prior)})"
        )


def resolve_prior(cfg: RunConfig, shape: tuple[int, ...]) -> RunConfig:
    """``cfg`` with a prior name (``recon list priors``) resolved for images of ``shape``
    (C, H, W); a prior config is kept as it is."""
    from recon.priors.configs import resolve

    if not isinstance(cfg.prior, str):
        return cfg
    data = {**cfg.model_dump(mode="json"), "prior": resolve(cfg.prior, shape)}
    return validate(RunConfig, data, source=f"prior {cfg.prior!r}")


def build_prior(cfg: RunConfig, device: torch.device | str) -> Any:
    """The run's prior (``cfg.prior`` resolved) on ``device``, with the network speed options
    (``dtype``, ``channels_last``, ``compile``: :mod:`recon.priors.speed`)."""
    from recon.priors.speed import accelerate

    return accelerate(
        cfg.prior.build(device=str(device)),
        dtype=cfg.dtype,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )


def rows_folder(cfg: RunConfig) -> Path | None:
    """Where ``reconstruct`` keeps the finished rows of ``cfg`` until the output is written
    (:func:`recon.distributed.rows_folder`; None without an output). The fingerprint covers
    the config (less where and how much is written), the device type and the input file
    (path, size, modification time and a digest of its bytes: :func:`recon.distributed.
    file_stamp`)."""
    if cfg.output is None:
        return None
    fp = fingerprint(
        cfg,
        exclude={"n_samples", "device"},
        device_type=torch.device(cfg.device).type,
        input_file=file_stamp(cfg.input),
    )
    return distributed.rows_folder(cfg.output, fp)


def run(
    cfg: RunConfig,
    *,
    on_rows: Callable[[int, int], None] | None = None,
    prior: Any | None = None,
    context: Context = SINGLE,
) -> RunResult | None:
    """Reconstruct ``cfg.input`` and (if ``cfg.output``) write the results file.

    A sampler that uses no prior (pinv, fbp, tv) never resolves or builds one; a prior given
    by name is resolved against the scan's image size once the scan is open, and the results
    file records the resolved config. With an output, every finished chunk of rows is kept
    beside it (:func:`rows_folder`) until the output is written, so a killed run, rerun,
    computes only the rows it had not finished.

    Args:
        cfg: the run config.
        on_rows: progress callback ``(rows_done, rows_total)``.
        prior: an already built prior to use instead of building ``cfg.prior`` (evaluation
            reuses one across items).
        context: the process group under torchrun (:func:`recon.distributed.context`); rows
            are sharded across its ranks and rank 0 writes the output.

    Returns:
        The result on rank 0 (always, in one process); None on the other ranks.
    """
    t0 = time.perf_counter()
    ctx = context
    device = errors.device(ctx.device(cfg.device))

    def setup() -> tuple[RunConfig, Source, Any, Item | None, teleport.Teleport | None]:
        results.check_outputs(
            cfg.output, cfg.figure, force=cfg.force, inputs=[cfg.input] if cfg.input else []
        )
        source = open_source(cfg)
        first, run_cfg, built = None, cfg, prior
        if source.indices:
            first = source.item(source.indices[0])
            y0 = first.y[None].to(device)
            shape = tuple(source.physics([first], device).A_adjoint(y0).shape[1:])
            # every draw is kept (float64) until the reduction, twice with keep_samples
            per_row = 8 * math.prod(shape[-2:]) * (2 if cfg.keep_samples else 1)
            memory.check_request(
                len(source.indices) * cfg.n_samples * per_row,
                f"{cfg.input}: {len(source.indices)} item(s) x {cfg.n_samples} sample(s) of "
                f"{shape[-2]} x {shape[-1]}",
            )
        if not entry.uses_prior:
            built = None
        elif built is None:
            if first is not None:
                run_cfg = resolve_prior(cfg, shape)
            built = build_prior(run_cfg, device)
        if built is not None and first is not None:
            _check_prior_shape(built, shape, source)
        if (
            built is not None
            and entry.kind == "exact"
            and getattr(built, "posterior", None) is None
        ):
            from recon.samplers.baselines import NEEDS_EXACT_PRIOR

            raise UserError(NEEDS_EXACT_PRIOR)
        tele = None
        if first is not None:
            tele = teleport.prepare(run_cfg, entry, run_cfg.prior, shape, sigmas, device)
        return run_cfg, source, built, first, tele

    entry = SAMPLERS[cfg.sampler.name]
    sigmas = cfg.schedule.build().to(torch.float64)
    cfg, source, prior, first, tele = ctx.collective(setup)
    indices = source.indices
    items: dict[int, Item] = {} if first is None else {indices[0]: first}
    counted = CountingDenoiser(prior)
    if tele is not None:
        sigmas = tele.sigmas
    hyper = hyperparameters(cfg.sampler)
    # particle samplers return their cloud: its health is recorded (recon.support)
    clouds_kept = "return_particles" in inspect.signature(entry.fn).parameters

    def item(i: int) -> Item:
        if i not in items:
            items[i] = source.item(i)
        return items[i]

    def compute(chunk: list[tuple[int, ...]]) -> dict[tuple[int, ...], dict[str, Any]]:
        for i in [i for i in items if i not in {j for j, _ in chunk}]:
            del items[i]  # only the chunk's items stay loaded (k-space and coil maps are big)
        chunk_items = [item(i) for i, _ in chunk]
        physics = source.physics(chunk_items, device)
        y = torch.stack([it.y for it in chunk_items]).to(device)
        gens = [row_generator(cfg.seed, i, k, device) for i, k in chunk]
        before = counted.rows
        start: dict[str, Tensor] = {}
        with torch.no_grad():
            if tele is not None and entry.teleports_cloud:  # the sampler draws its cloud
                start["teleport_from"] = tele.gaussian
            elif tele is not None:  # the rows' streams draw the start first, then sample
                s_y = source.noise.sigma_y
                x0 = teleport.teleport(tele.gaussian, y, physics, tele.sigma, gens, sigma_y=s_y)
                start["x_init"] = x0.to(y.dtype)
            extra = {"return_particles": True} if clouds_kept else {}
            x = entry.fn(counted, y, physics, sigmas, generator=gens, **start, **hyper, **extra)
        health = support.cloud_health(x) if clouds_kept else [None] * len(chunk)
        x = x.sample if clouds_kept else x
        nfe = (counted.rows - before) / len(chunk)
        fit = support.data_fit(physics, x, y, source.noise.sigma_y)
        return {
            (i, k): {
                "x": source.output(
                    xr.detach().cpu().double(), item(i), floor=not entry.keeps_noise
                ),
                "nfe": nfe,
                "fit": float(f),
                **({"cloud": h} if h is not None else {}),
            }
            for (i, k), xr, f, h in zip(chunk, x, fit, health, strict=True)
        }

    keys = [(i, k) for i in indices for k in range(cfg.n_samples)]
    folder = rows_folder(cfg)
    store = RowStore(folder) if folder is not None else None
    t_rows = time.perf_counter()
    batch = AutoBatch(device, cfg.max_memory) if cfg.batch_size == "auto" else cfg.batch_size
    done = run_rows(
        keys,
        compute,
        batch_size=batch,
        ctx=ctx,
        store=store,
        on_rows=on_rows,
        describe=lambda chunk: f"{cfg.input}: item(s) {sorted({i for i, _ in chunk})}",
    )
    if not ctx.is_main:
        return None
    t_merge = time.perf_counter()
    draws = {i: [done.rows[(i, k)]["x"] for k in range(cfg.n_samples)] for i in indices}
    nfe = round(sum(done.rows[key]["nfe"] for key in keys) / max(len(keys), 1))
    means, stds, samples, inputs, truths = [], [], [], [], []
    fits, blinds, said, clouds = [], [], [], []
    convention = "fastmri" if source.kind.startswith("mri") else "image"
    for i in indices:
        it = items.pop(i, None) or source.item(i)  # one item loaded at a time
        outs = torch.stack(draws[i])
        if not torch.isfinite(outs).all():
            if store is not None:  # the rows are what they are: a rerun would fail alike
                store.clear()
            raise UserError(
                f"{cfg.input}: item {i}: the {cfg.sampler.name} reconstruction has NaN/Inf "
                "values (check the scan's values and the schedule); nothing was written"
            )
        mean, std = results.reduce(outs)
        means.append(mean)
        stds.append(std)
        samples.append(outs)
        it_physics, it_y = source.physics([it], device), it.y[None].to(device)
        if convention == "fastmri":  # fastMRI's zero-filled baseline; elsewhere A_dagger
            zf = O.zero_filled(it_physics, it_y)
        else:
            zf = it_physics.A_dagger(it_y)
        inputs.append(source.output(zf.cpu()[0].double(), it))
        fits.append(sum(done.rows[(i, k)]["fit"] for k in range(cfg.n_samples)) / cfg.n_samples)
        blinds.append(support.blind_fraction(it_physics))
        item_clouds = [done.rows[(i, k)]["cloud"] for k in range(cfg.n_samples) if clouds_kept]
        clouds.append(item_clouds)
        said += support.warnings(str(cfg.input), i, fits[-1], blinds[-1], item_clouds)
        if it.truth is not None:
            t = it.truth.double()
            truths.append(t if t.ndim == 2 else (t[0] if t.shape[0] == 1 else t.norm(dim=0)))
    if isinstance(batch, AutoBatch) and batch.warning():
        said.append(f"{cfg.input}: {batch.warning()}")
    recon_t, std_t = torch.stack(means), torch.stack(stds)
    truth_t = torch.stack(truths) if len(truths) == len(indices) and indices else None
    scores: dict[str, list[float]] = {}
    skipped = None
    if truth_t is not None:
        if recon_t.shape != truth_t.shape:
            raise UserError(
                f"ground truth of shape {tuple(truth_t.shape[1:])} does not match "
                f"the reconstruction {tuple(recon_t.shape[1:])}"
            )
        bad = [i for i, t in zip(indices, truth_t, strict=True) if not bool(t.isfinite().all())]
        if bad:  # the reconstruction stands; a metric of NaN would read as a score
            skipped = f"{cfg.input}: the ground truth of item(s) {bad} has NaN/Inf values"
        else:
            try:
                if convention == "fastmri":
                    m = metrics.fastmri_volume_metrics(recon_t, truth_t)
                    scores = {k: [v] for k, v in m.items()}
                else:
                    m = metrics.image_metrics(recon_t[:, None].clamp(0, 1), truth_t[:, None])
                    scores = {k: v.tolist() for k, v in m.items()}
            except metrics.ImageTooSmall as err:  # the reconstruction stands; no metrics
                skipped = str(err)
        if skipped:
            skipped += f": no metrics in the {convention} convention"
            said.append(skipped)
    wall = time.perf_counter() - t0
    attrs = {
        "config": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "device": str(device),
        "wall_time_s": wall,
        # rows: the sampling (all ranks, to the last round); merge: rank 0's reduction
        "rows_s": t_merge - t_rows,
        "merge_s": time.perf_counter() - t_merge,
        "nfe": nfe,
        "indices": indices,
        "world_size": ctx.world_size,
        "rows_resumed": done.resumed,
        "rows_per_call": done.rows_per_call,
        "metric_convention": metrics.CONVENTIONS[convention],
        "noise": source.noise.record(),
        # per item: data residual / noise energy (about 1 when the data are explained) and the
        # fraction of the field of view the operator cannot see (recon.support)
        "support": {
            "data_fit": fits,
            "blind_fraction": blinds,
            "warnings": said,
            **({"particles": clouds} if clouds_kept else {}),
        },
    }
    if tele is not None:
        attrs["teleport"] = tele.record
    if isinstance(batch, AutoBatch):
        attrs["memory"] = batch.record()
    if scores:
        attrs["metrics"] = scores
    if skipped:
        attrs["metrics_skipped"] = skipped
    input_t = torch.stack(inputs)
    fig_rows, captions = results.panels(
        recon_t,
        std_t,
        truth=truth_t,
        inputs=input_t,
        input_label="zero-filled" if convention == "fastmri" else "input (A^+ y)",
        scores=scores,
    )
    out_path = results.save(
        cfg.output,
        cfg.figure,
        reconstruction=recon_t,
        std=std_t if cfg.n_samples > 1 else None,
        samples=torch.stack(samples) if cfg.keep_samples else None,
        extras={
            "zero_filled" if convention == "fastmri" else "pinv": input_t,
            **(
                {"noise_std_per_coil": torch.from_numpy(source.noise.per_coil)}
                if source.noise.per_coil is not None
                else {}
            ),
        },
        attrs=attrs,
        rows=fig_rows,
        captions=captions,
        title=f"{source.kind}, {cfg.sampler.name}, "
        f"{cfg.n_samples} sample(s); metrics: {metrics.CONVENTIONS[convention]}",
        force=cfg.force,
    )
    if store is not None:
        store.clear(others=True)
    return RunResult(
        recon_t,
        std_t,
        indices,
        scores,
        nfe,
        wall,
        out_path,
        torch.stack(samples) if cfg.keep_samples else None,
        input_t,
        truth_t,
        convention,
        said,
    )
