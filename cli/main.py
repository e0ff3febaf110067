"""``recon``: reconstruct images from incomplete, noisy measurements with diffusion priors.

Heavy imports (torch, deepinv) happen inside command bodies so ``recon --help`` is instant.
User errors (bad files, configs, names) print one line and exit with code 2, without a
traceback.
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path

import typer

from recon import memory
from recon.catalog import LISTINGS, NOISE_FLOOR_HELP
from recon.errors import UserError
from recon.memory import BUDGET_HELP, keep_freed_memory

#: seeds are recorded as 64-bit HDF5 attributes
SEED = {"min": 0, "max": 2**63 - 1}
TELEPORT = typer.Option(
    None,
    "--teleport",
    help="Start the sampler at this noise level from an exact draw of the Gaussian posterior "
    "(Wang and Vastola 2024), saving the network calls above it; auto: where the network's "
    "Gaussian partner denoises as well (`recon list priors`). Samplers marked 'teleports' in "
    "`recon list samplers`.",
)

app = typer.Typer(
    name="recon",
    help=(
        "Reconstruct images from incomplete, noisy measurements (MRI k-space, CT sinograms, "
        "masked or low-resolution images) with diffusion priors, and get posterior samples "
        "with uncertainty. Everything runs offline on CPU or GPU.\n\n"
        "Start with `recon demo`; `recon list samplers` shows what is available. Exit codes: "
        "0 done, 2 bad input or usage (one line naming the file and field), 130 interrupted, "
        "1 internal error (add --debug anywhere for its traceback)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        from recon import __version__

        typer.echo(f"recon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """recon: diffusion-prior reconstruction for MRI, CT and image restoration."""


ListWhat = Enum("ListWhat", {name: name for name in LISTINGS}, type=str)  # type: ignore[misc]


@app.command("list")
def list_cmd(
    what: ListWhat = typer.Argument(..., help=f"What to list: {', '.join(LISTINGS)}."),
) -> None:
    """List what recon offers, with settings and defaults (generated from its registries)."""
    from recon.catalog import render

    typer.echo(render(what.value))


class _LazyBar:
    """A tqdm bar shown from the first finished unit, so an error in the first unit prints
    nothing but itself; its clock starts at the ``(0, total)`` call (the start of the work), so
    the first rate is not that of a zero-length interval."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self.bar, self.t0 = desc, unit, None, None

    def __call__(self, done: int, total: int) -> None:
        if self.t0 is None:
            self.t0 = time.time()
        if done == 0 and self.bar is None:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False)
            self.bar.start_t = self.bar.last_print_t = self.t0
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@app.command()
def reconstruct(
    scan: Path = typer.Argument(
        ..., help="Scan: fastMRI k-space, CT sinogram or measurements HDF5 (see `recon simulate`)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Results HDF5 to write."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Run config (YAML/TOML/JSON); flags override it."
    ),
    sampler: str | None = typer.Option(
        None, "--sampler", help="Sampler name (`recon list samplers`); the run config's default."
    ),
    prior: str | None = typer.Option(
        None,
        "--prior",
        help="Prior name or path (`recon list priors`), sized to the scan; unused by samplers "
        "that need none.",
    ),
    samples: int | None = typer.Option(
        None,
        "--samples",
        min=1,
        help="Posterior samples per slice. One draw at the full step count beats several "
        "shorter draws of the same total cost; with 2 or more the "
        "reconstruction is their mean, the PSNR-optimal estimate, and the file gets a std "
        "map; the time grows with the count (benchmarks/README.md, 'Draws or steps').",
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Diffusion steps."),
    batch_size: str | None = typer.Option(
        None,
        "--batch-size",
        help="Rows per sampler call, or auto (the default): as many as --max-memory holds, "
        "measured on the first row.",
    ),
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        help=f"Memory budget of --batch-size auto, e.g. 4GB ({BUDGET_HELP}).",
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda or cuda:N."),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="Network priors: autocast the network to float32 (default), bfloat16 or float16.",
    ),
    compile_net: bool = typer.Option(
        False, "--compile", help="Network priors: torch.compile the network."
    ),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Network priors: channels-last inputs."
    ),
    sigma_y: float | None = typer.Option(
        None,
        "--sigma-y",
        min=0.0,
        help="Measurement noise std in the scan's units (fastMRI: k-space). Default: the "
        "file's record; fastMRI files have none, so it is estimated from the data (readout "
        "oversampling, else the k-space periphery). The output's attr 'noise' says which.",
    ),
    noise_floor: bool | None = typer.Option(
        None, "--noise-floor/--no-noise-floor", help=f"{NOISE_FLOOR_HELP}."
    ),
    teleport: str | None = TELEPORT,
    seed: int | None = typer.Option(None, "--seed", **SEED, help="Run seed."),
    figure: Path | None = typer.Option(None, "--figure", help="Write a PNG comparison."),
    set_: list[str] = typer.Option(
        [], "--set", help="Config override key=value, repeatable (e.g. --set sampler.n_cg=10)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Reconstruct a scan and write reconstruction, std and provenance to OUTPUT.

    For fastMRI files the operator (single/multi-coil, mask, coil maps estimated from the ACS
    lines) comes from the file; for CT files from its attributes; for measurement files from
    their operator record. Defaults are the run config's (`recon list samplers`, `recon list
    schedules`). Example:

        recon reconstruct data/benchmarks/mri_x4_multicoil/scan.h5 -o out.h5 --samples 4
    """
    from recon import metrics
    from recon.config import run_config
    from recon.distributed import context
    from recon.pipeline import run

    cfg = run_config(
        config,
        sampler=sampler,
        overrides=set_,
        input=str(scan),
        output=str(output),
        prior=prior,
        n_samples=samples,
        **{"schedule.n_steps": steps},
        batch_size=batch_size,
        max_memory=max_memory,
        device=device,
        dtype=dtype,
        compile=compile_net or None,
        channels_last=channels_last or None,
        sigma_y=sigma_y,
        noise_floor=noise_floor,
        teleport=teleport,
        seed=seed,
        figure=str(figure) if figure else None,
        force=force or None,
    )
    ctx = context(cfg.device)
    bar = _LazyBar(cfg.sampler.name, "row")
    try:
        res = run(cfg, on_rows=bar, context=ctx)
    finally:
        bar.close()
    if res is None:  # another rank than 0 under torchrun: rank 0 reports
        return
    for line in res.warnings:
        typer.echo(f"recon: warning: {line}", err=True)
    if res.metrics:
        psnr = sum(res.metrics["psnr"]) / len(res.metrics["psnr"])
        ssim = sum(res.metrics["ssim"]) / len(res.metrics["ssim"])
        typer.echo(
            f"PSNR {psnr:.2f} dB, SSIM {ssim:.3f} against the file's ground truth "
            f"({metrics.CONVENTIONS[res.convention]})"
        )
    typer.echo(
        f"{len(res.indices)} item(s), {cfg.n_samples} sample(s) each, "
        f"{res.nfe_per_sample} network evaluations per sample, {res.wall_time_s:.1f} s"
    )
    typer.echo(f"wrote {res.output}")
    if figure is not None:
        typer.echo(f"wrote {figure}")


class OperatorName(str, Enum):
    mri = "mri"
    mri_multicoil = "mri_multicoil"
    ct = "ct"
    inpainting = "inpainting"
    super_resolution = "super_resolution"


@app.command()
def simulate(
    images: str = typer.Argument(
        ...,
        help="HDF5 with 'images' (N,[C,]H,W) in [0,1], a PNG folder, a DICOM series (folder, "
        "DICOMDIR or .dcm; normalised to [0,1] per volume), a NIfTI volume (.nii, .nii.gz), "
        "or phantoms:N:SIZE for recon's random phantoms.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Scan file to write."),
    operator: OperatorName = typer.Option(..., "--operator", help="Forward operator."),
    acceleration: float = typer.Option(4.0, "--acceleration", help="MRI acceleration (2-12)."),
    center_fraction: float = typer.Option(0.08, "--center-fraction", help="MRI ACS fraction."),
    mask: str = typer.Option(
        "equispaced",
        "--mask",
        help="MRI mask: equispaced, random, or full (fully sampled, for recon acquire); "
        "fastMRI's layout stores whole columns, so vd2d (2-D) is refused here.",
    ),
    coils: int = typer.Option(8, "--coils", help="Coils (multi-coil MRI, birdcage maps)."),
    readout_oversampling: int = typer.Option(
        1,
        "--readout-oversampling",
        min=1,
        help="MRI: k-space on a grid this many times taller (readout) than the image, with an "
        "ismrmrd_header, as fastMRI's raw files (2).",
    ),
    encoded_width: int | None = typer.Option(
        None,
        "--encoded-width",
        help="MRI: phase-encode columns of k-space when wider than the image (fastMRI knee: "
        "368 for a 320-wide image); the image width when not given.",
    ),
    angles: int = typer.Option(30, "--angles", help="CT projection angles."),
    geometry: str = typer.Option(
        "sparse_view", "--geometry", help="CT: sparse_view or limited_angle."
    ),
    angle_range: float = typer.Option(
        180.0, "--angle-range", help="CT limited-angle span (degrees)."
    ),
    keep_ratio: float = typer.Option(0.3, "--keep-ratio", help="Inpainting: kept fraction."),
    factor: int = typer.Option(4, "--factor", help="Super-resolution factor (2 or 4)."),
    sigma_y: float = typer.Option(0.01, "--sigma-y", help="Noise std on the [0, 1] scale."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Seed of masks and noise."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Simulate measurements of clean images and write a scan `recon reconstruct` reads
    (fastMRI layout for MRI, recon's sinogram layout for CT)."""
    from recon import operators as O
    from recon.config import validate
    from recon.io import read_image_stack
    from recon.results import check_outputs
    from recon.simulate import simulate as run_simulate

    check_outputs(output, None, force=force, inputs=[images])
    if images.startswith("phantoms:"):
        from recon.phantoms import random_phantoms

        try:
            _, n, size = images.split(":")
            n, size = int(n), int(size)
        except ValueError:
            raise UserError(f"{images!r}: use phantoms:N:SIZE, e.g. phantoms:4:64") from None
        if n < 1 or size < 8:
            raise UserError(f"{images!r}: need N >= 1 phantoms of SIZE >= 8 pixels")
        # the phantoms (float32) and their float64 drawing grids
        memory.check_request(n * size * size * (4 + 3 * 8), f"{images!r}")
        imgs = random_phantoms(n, size, seed=seed + 12345)
        source = {"format": "phantoms", "n": n, "size": size, "seed": seed + 12345}
    else:
        imgs, source = read_image_stack(images)
    _, c, h, w = imgs.shape
    name = operator.value
    base: dict = {"name": name, "sigma_y": sigma_y}
    if name in ("mri", "mri_multicoil"):
        base.update(
            img_size=[h, w],
            mask="equispaced" if mask == "full" else mask,
            acceleration=acceleration,
            center_fraction=center_fraction,
            seed=seed,
        )
        if readout_oversampling > 1 or encoded_width not in (None, w):
            base["encoded_size"] = [h * readout_oversampling, encoded_width or w]
        if name == "mri_multicoil":
            base["n_coils"] = coils
    elif name == "ct":
        base.update(img_size=[h, w], n_angles=angles, geometry=geometry, angle_range=angle_range)
    elif name == "inpainting":
        base.update(img_size=[c, h, w], keep_ratio=keep_ratio, seed=seed)
    else:
        base.update(img_size=[c, h, w], factor=factor)
    cls = O.OPERATORS[name][0]
    cfg = validate(cls, base, source="command line")
    if mask == "full" and name not in ("mri", "mri_multicoil"):
        raise UserError("--mask full is for --operator mri or mri_multicoil")
    if (readout_oversampling > 1 or encoded_width) and name not in ("mri", "mri_multicoil"):
        raise UserError(
            "--readout-oversampling and --encoded-width are for --operator mri or mri_multicoil"
        )
    path = run_simulate(
        imgs, cfg, output, seed=seed, force=force, fully_sampled=mask == "full", source=source
    )
    typer.echo(f"wrote {path} ({imgs.shape[0]} items, operator {name})")


@app.command()
def evaluate(
    benchmark: str = typer.Option(
        ..., "--benchmark", "-b", help="A bundled set (recon list benchmarks) or a folder."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Results folder (resumable)."),
    sampler: str | None = typer.Option(
        None, "--sampler", help="Sampler name (`recon list samplers`); the run config's default."
    ),
    prior: str | None = typer.Option(
        None, "--prior", help="Prior name or path (default: the set's default_prior)."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="Run config file."),
    samples: int | None = typer.Option(
        None,
        "--samples",
        min=1,
        help="Posterior samples per item; with 2 or more the metrics score their mean and "
        "report credible-interval coverage.",
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Diffusion steps."),
    seed: int | None = typer.Option(None, "--seed", **SEED, help="Run seed."),
    teleport: str | None = TELEPORT,
    device: str | None = typer.Option(None, "--device", help="cpu or cuda."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value."),
) -> None:
    """Evaluate a sampler and prior on a benchmark set: per-item CSV and JSON, a Markdown
    summary with the metric convention named, and a PNG grid. Rerunning skips finished items."""
    from tqdm import tqdm

    from recon.config import run_config
    from recon.datasets import resolve_benchmark
    from recon.distributed import context
    from recon.evaluate import evaluate as run_evaluate

    bench = resolve_benchmark(benchmark)
    cfg = run_config(
        config,
        sampler=sampler,
        overrides=set_,
        input=str(bench.scan),
        prior=prior,
        n_samples=samples,
        **{"schedule.n_steps": steps},
        device=device,
        seed=seed,
        teleport=teleport,
    )
    ctx = context(cfg.device)
    bar = tqdm(
        total=bench.n_items if bench.n_items > 0 else None,
        desc=bench.name,
        unit="item",
        leave=False,
        disable=not ctx.is_main,
    )

    def on_item(i: int, total: int, row: dict | None) -> None:
        bar.total = total
        bar.update(1)
        if row is not None:
            bar.set_postfix(psnr=f"{row['psnr']:.2f}")

    try:
        summary = run_evaluate(bench, cfg, output, on_item=on_item, context=ctx)
    finally:
        bar.close()
    if summary is None:  # another rank than 0 under torchrun: rank 0 reports
        return
    typer.echo((output / "summary.md").read_text())
    written = ["items.csv", "results.json", "summary.md", "figure.png"]
    written += ["calibration.png"] if "coverage" in summary else []
    typer.echo("wrote " + ", ".join(str(output / w) for w in written))


@app.command()
def acquire(
    scan: Path = typer.Argument(..., help="fastMRI-layout HDF5 with FULLY SAMPLED k-space."),
    output: Path = typer.Option(..., "--output", "-o", help="Results HDF5 to write."),
    prior: str = typer.Option(
        "phantom-gaussian", "--prior", help="Prior on 2-channel images (recon list priors)."
    ),
    acceleration: float = typer.Option(4.0, "--acceleration", help="Final acceleration R."),
    center_fraction: float = typer.Option(
        0.08, "--center-fraction", min=0.0, max=0.99, help="Initial ACS fraction of the lines."
    ),
    per_round: int = typer.Option(1, "--per-round", min=1, help="Lines acquired per round."),
    particles: int | None = typer.Option(
        None, "--particles", min=2, help="DPS particles per slice (default: the library's)."
    ),
    steps: int | None = typer.Option(
        None, "--steps", min=2, help="Diffusion steps (default: the run config's schedule)."
    ),
    zeta: float | None = typer.Option(
        None, "--zeta", help="DPS step size, data units (default: DPS's)."
    ),
    window: str = typer.Option(
        "0,0.5", "--window", help="START,STOP fractions of the steps where lines are acquired."
    ),
    slices: str | None = typer.Option(None, "--slices", help="Slices, e.g. 0,2,5 (default all)."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Run seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    figure: Path | None = typer.Option(None, "--figure", help="Write a PNG comparison."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    hard_consistency: bool = typer.Option(
        False,
        "--hard-consistency",
        help="Replace each final sample's acquired k-space lines by the data (noiseless scans).",
    ),
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        help=f"Memory budget of the entropy, e.g. 4GB ({BUDGET_HELP}).",
    ),
) -> None:
    """Active acquisition (ADS, Nolan et al. 2024): choose k-space lines while sampling.

    Simulates a scanner from fully sampled k-space (`recon simulate IMAGES --operator mri
    --mask full` writes one): starts from the ACS lines and, round by round, acquires the
    lines whose predicted measurements the DPS particles disagree on most (Gaussian-mixture
    entropy), until the mask has W/R lines. Writes the reconstruction, std, final masks, the
    ordered acquisition list and per-round entropies. Example:

        recon acquire full.h5 -o ads.h5 --acceleration 4 --figure ads.png
    """
    from recon import errors, io, memory, results
    from recon.active import acquire_file
    from recon.config import KarrasScheduleConfig, validate
    from recon.distributed import context
    from recon.priors.configs import PriorConfig, resolve

    results.check_outputs(output, figure, force=force, inputs=[scan])
    try:
        lo, hi = (float(v) for v in window.split(","))
    except ValueError:
        raise UserError(f"--window {window!r}: use START,STOP fractions, e.g. 0,0.5") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise UserError(f"--window {window!r}: need 0 <= START < STOP <= 1")
    if not 2.0 <= acceleration <= 32.0:
        raise UserError(f"--acceleration {acceleration}: choose a value in [2, 32]")
    errors.device(device)
    idx = None
    if slices:
        try:
            idx = [int(v) for v in slices.split(",")]
        except ValueError:
            raise UserError(f"--slices {slices!r}: use comma-separated integers") from None
    info = io.fastmri_info(scan)
    from pydantic import TypeAdapter

    ctx = context(device)
    device = ctx.device(device)
    prior_cfg = TypeAdapter(PriorConfig).validate_python(resolve(prior, (2, *info.image_size)))
    den = prior_cfg.build(device=device)
    schedule = validate(KarrasScheduleConfig, {} if steps is None else {"n_steps": steps})
    options = {"n_particles": particles, "zeta": zeta}
    bar = _LazyBar("acquire", "slice")
    try:
        summary = acquire_file(
            str(scan),
            str(output),
            den,
            schedule.build(),
            acceleration=acceleration,
            center_fraction=center_fraction,
            slices=idx,
            seed=seed,
            device=device,
            force=force,
            record={"prior": prior_cfg.model_dump(mode="json"), "schedule": schedule.model_dump()},
            figure=str(figure) if figure else None,
            on_slice=bar,
            context=ctx,
            per_round=per_round,
            window=(lo, hi),
            hard_consistency=hard_consistency,
            max_memory=memory.parse_size(max_memory) if max_memory else None,
            **{k: v for k, v in options.items() if v is not None},
        )
    finally:
        bar.close()
    if summary is None:  # another rank than 0 under torchrun: rank 0 reports
        return
    if "psnr" in summary:
        typer.echo(
            f"PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f} "
            f"({summary['metric_convention']})"
        )
    typer.echo(
        f"{len(summary['slices'])} slice(s), {summary['lines_acquired']} lines acquired each "
        f"(final R = {summary['final_acceleration']:.3g}), {summary['wall_time_s']:.1f} s; "
        f"wrote {output}"
    )
    if figure is not None:
        typer.echo(f"wrote {figure}")


@app.command("train-prior")
def train_prior_cmd(
    output: Path = typer.Argument(..., help="Folder for checkpoints, weights and model card."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Start from a named recipe (the bundled priors' own; an unknown name lists them).",
    ),
    patch: bool = typer.Option(
        False,
        "--patch",
        help="Patch diffusion (Wang et al. 2023): random crops of 1/4, 1/2 and the full "
        "resolution with coordinate channels; the prior then serves any image size.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training config (YAML/TOML/JSON, TrainConfig fields)."
    ),
    data: list[str] | None = typer.Option(
        None,
        "--data",
        help="Image source, repeatable: digits, phantoms, generic (dead leaves, textures, "
        "phantoms, photographs: recon.corpus), generic-dark (the same, a quarter of it objects "
        "on a dark background), an HDF5 file ('images'), a PNG folder, DICOM or NIfTI.",
    ),
    steps: int | None = typer.Option(None, "--steps", help="Total optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step."),
    resolution: int | None = typer.Option(None, "--resolution", help="Image size (pixels)."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a field, e.g. --set lr=5e-4 --set unet.base=32."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    max_time: str | None = typer.Option(
        None, "--max-time", help="Stop (after a checkpoint) after this long, e.g. 45m, 2h."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint."),
    device: str = typer.Option(
        "cpu", "--device", help="cpu, cuda or cuda:N (under torchrun: one GPU per rank)."
    ),
) -> None:
    """Train a diffusion prior (EDM loss, compact UNet, EMA, AdamW) on a CPU or a GPU.

    Checkpoints every few hundred steps (safetensors + JSON, atomic); rerun the same command
    to resume after an interruption. Writes prior.safetensors (EMA weights), model_card.json
    and a sample grid PNG per checkpoint. Load the result with recon.priors.load(FOLDER).
    """
    from recon import errors
    from recon.config import apply_overrides, read_mapping, validate
    from recon.distributed import context
    from recon.priors.train import PRESETS, TrainConfig, parse_duration, train_prior

    errors.device(device)
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset].model_dump(mode="json") if preset else {}
    if config is not None:
        base |= read_mapping(config)
    for key, val in (("data", data or None), ("steps", steps), ("batch_size", batch_size)):
        if val is not None:  # 0 is a value (refused by the config), not "unset"
            base[key] = val
    if resolution is not None:
        base["resolution"] = resolution
    if patch:
        res = int(base.get("resolution", TrainConfig.model_fields["resolution"].default))
        base["unet"] = {**base.get("unet", {}), "coords": True}
        base.setdefault("patch_sizes", [res // 4, res // 2, res])
    if overrides:
        base = apply_overrides(base, overrides)
    cfg = validate(TrainConfig, base, source=str(config) if config else "train-prior options")
    try:
        seconds = parse_duration(max_time) if max_time else None
    except ValueError as err:
        raise UserError(f"--max-time: {err}") from None
    try:
        card = train_prior(
            cfg,
            output,
            resume=not fresh,
            threads=threads,
            max_seconds=seconds,
            log=lambda m: typer.echo(m, err=True),
            context=(ctx := context(device)),
            device=ctx.device(device),
        )
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from None
    if card is None:  # another rank than 0 under torchrun: rank 0 reports
        return
    typer.echo(
        f"{card['name']}: step {card['steps']}, loss {card['final_loss']}, "
        f"weights {output / card['file']} (sha256 {card['sha256'][:12]})"
    )


@app.command()
def demo(
    output: Path = typer.Option(
        Path("out/demo"), "--output", "-o", help="Folder for demo.h5 and demo.png."
    ),
    samples: int = typer.Option(8, "--samples", min=1, help="Posterior samples to draw."),
    seed: int = typer.Option(0, "--seed", **SEED, help="Seed of the mask, noise and samples."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing demo.h5."),
) -> None:
    """Reconstruct a real MR slice end to end (pydicom's MR_small.dcm, single-coil MRI x4)
    with the default prior, next to zero filling and TV.

    Writes OUTPUT/demo.h5 (DDS posterior mean and std, zero-filled, TV, with config, seed,
    versions and timing as attributes) and OUTPUT/demo.png (truth / zero-filled / TV / DDS /
    error / std), and prints PSNR/SSIM with their convention and which method won.
    """
    from tqdm import tqdm

    from recon import errors, metrics
    from recon.demo import run_demo
    from recon.io import check_folder, check_writable

    errors.device(device)
    check_folder(output)
    output.mkdir(parents=True, exist_ok=True)
    check_writable(output / "demo.h5", force=force)
    bar = _LazyBar("DDS samples", "sample")
    try:
        r = run_demo(
            output,
            seed=seed,
            n_samples=samples,
            device=device,
            force=force,
            progress=lambda m: tqdm.write(m),
            step_callback=bar,
        )
    finally:
        bar.close()
    typer.echo(f"metrics ({metrics.CONVENTIONS['image']}):")
    for name, m in r["metrics"].items():
        typer.echo(f"  {name:12s} PSNR {m['psnr']:6.2f} dB   SSIM {m['ssim']:.3f}")
    typer.echo(f"best PSNR here: {r['winner']}")
    typer.echo(
        f"wall time {r['wall_time_s']:.1f} s (DDS {r['dds_time_s']:.1f} s for {samples} "
        f"samples, {r['nfe']} network evaluations each)"
    )
    typer.echo(f"wrote {r['h5']}")
    typer.echo(f"wrote {r['png']}")


def _rank() -> str:
    """``rank R of N: `` under torchrun (errors raised in one rank only name it), else ''."""
    import os

    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        return f"rank {os.environ.get('RANK', '?')} of {world}: "
    return ""


def main() -> None:
    """Console entry point: user and usage errors become one line on stderr and exit code 2;
    an interrupt (Ctrl-C) exits 130, never 0; anything else (a bug) exits 1 with one line, and
    with the traceback under ``--debug`` (anywhere on the command line)."""
    keep_freed_memory()
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        code = app(standalone_mode=False)
    except UserError as exc:
        if getattr(exc, "quiet", False):  # a RankError: rank 0 reports it, once
            sys.exit(2 if exc.user else 1)
        kind = "internal error" if getattr(exc, "user", True) is False else "error"
        where = "" if hasattr(exc, "quiet") else _rank()  # a RankError names its rank
        typer.echo(f"recon: {kind}: {where}{exc}", err=True)
        sys.exit(1 if kind == "internal error" else 2)
    except FileNotFoundError as exc:
        typer.echo(f"recon: error: {_rank()}{exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("recon: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # errors of the click that typer carries (vendored or not): usage errors as one line
        # naming the command's help, others as click shows them
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):
            if callable(getattr(exc, "format_message", None)) and exc.exit_code == 2:
                ctx = getattr(exc, "ctx", None)
                cmd = getattr(ctx, "command_path", None) or "recon"
                text = " ".join(str(exc.format_message()).split())
                typer.echo(f"recon: error: {text} (see `{cmd} --help`)", err=True)
            else:
                exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        typer.echo(
            f"recon: internal error: {_rank()}{type(exc).__name__}: {exc} (rerun with --debug "
            "for the traceback, and please report it)",
            err=True,
        )
        sys.exit(1)
    # typer turns Ctrl-C inside a command into Exit(130) and, with standalone_mode=False,
    # returns that code instead of exiting with it
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == 130:
            typer.echo("recon: interrupted", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
