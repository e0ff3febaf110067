"""``recon``: reconstruct images from incomplete, noisy measurements with diffusion priors.

Heavy imports (torch, deepinv) happen inside command bodies so ``recon --help`` is instant.
User errors (bad files, configs, names) print one line and exit with code 2, without a
traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

from recon.errors import UserError

app = typer.Typer(
    name="recon",
    help=(
        "Reconstruct images from incomplete, noisy measurements (MRI k-space, CT sinograms, "
        "masked or low-resolution images) with diffusion priors, and get posterior samples "
        "with uncertainty. Everything runs offline on CPU or GPU.\n\n"
        "Start with `recon demo`; `recon list samplers` shows what is available."
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


class ListWhat(str, Enum):
    operators = "operators"
    samplers = "samplers"
    schedules = "schedules"
    priors = "priors"
    benchmarks = "benchmarks"


@app.command("list")
def list_cmd(
    what: ListWhat = typer.Argument(..., help="What to list: operators, samplers or schedules."),
) -> None:
    """List the registered operators, samplers or schedules with their settings."""
    if what is ListWhat.operators:
        from recon.operators import OPERATORS

        for name, (cfg_cls, _) in OPERATORS.items():
            doc = (cfg_cls.__doc__ or "").strip().splitlines()[0]
            fields = ", ".join(k for k in cfg_cls.model_fields if k != "name")
            typer.echo(f"{name:18s} {doc}\n{'':18s} fields: {fields}")
    elif what is ListWhat.samplers:
        from recon.samplers import SAMPLERS

        for name, (cfg_cls, _) in SAMPLERS.items():
            doc = (cfg_cls.__doc__ or "").strip().splitlines()[0]
            fields = ", ".join(
                f"{k}={v.default}" for k, v in cfg_cls.model_fields.items() if k != "name"
            )
            typer.echo(f"{name:10s} {doc}\n{'':10s} {fields or '(no hyperparameters)'}")
    elif what is ListWhat.priors:
        from recon.priors import manifest

        for e in manifest():
            size = f"{e['channels']}x{e['resolution']}x{e['resolution']}"
            typer.echo(
                f"{e['name']:20s} {e['kind']:9s} {size:9s} {e['size_bytes'] / 1e6:5.1f} MB  "
                f"{e.get('description', '')}"
            )
            for line in e.get("summary", []):
                typer.echo(f"{'':20s} {line}")
        typer.echo(
            "phantom-gaussian     exact Gaussian (PPCA, rank 128) fitted in seconds to recon's "
            "random phantoms, sized to the scan (complex for MRI)"
        )
        typer.echo(
            "digits-gaussian      exact Gaussian (PPCA, rank 64) fitted to the 4000 training "
            "digits, 1x32x32"
        )
        typer.echo(
            "FOLDER               a folder written by recon train-prior (model_card.json + "
            "prior.safetensors)"
        )
        typer.echo(
            "PATH.safetensors   an exact Gaussian / Gaussian-mixture prior saved with "
            "recon.priors.save_exact_prior"
        )
    elif what is ListWhat.benchmarks:
        from recon.datasets import benchmark_sets

        for name, b in benchmark_sets().items():
            typer.echo(f"{name:20s} {b.n_items} items  {b.description}")
    else:
        from recon.schedules import SCHEDULES

        for name, fn in SCHEDULES.items():
            typer.echo(f"{name:8s} {(fn.__doc__ or '').strip().splitlines()[0]}")


def _prior_config(spec: str, shape: tuple[int, int, int] | None) -> dict:
    """--prior NAME|PATH as a prior config."""
    from recon.priors import manifest

    entries = {e["name"]: e for e in manifest()}
    if spec in entries or Path(spec).is_dir():
        channels = entries[spec]["channels"] if spec in entries else None
        if channels is None:
            card = Path(spec) / "model_card.json"
            channels = json.loads(card.read_text())["channels"] if card.is_file() else None
        cplx = shape is not None and shape[0] == 2 and channels == 1
        return {"kind": "network", "source": spec, "complex": cplx}
    if Path(spec).suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(spec, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # unreadable: let the exact-prior loader report it in one line
            meta = {}
        if meta.get("format") == "recon-edm-unet":
            cplx = shape is not None and shape[0] == 2 and '"channels":1' in meta["unet"]
            return {"kind": "network", "source": spec, "complex": cplx}
        return {"kind": "exact", "path": spec}
    if spec == "digits-gaussian":
        if shape is not None and tuple(shape) != (1, 32, 32):
            raise UserError(f"--prior digits-gaussian is for 1x32x32 images, not {shape}")
        return {"kind": "digits_gaussian"}
    if spec == "phantom-gaussian":
        if shape is None:
            raise UserError(
                "--prior phantom-gaussian: the scan does not say its image size; "
                "use a config with prior.size"
            )
        if shape[-1] != shape[-2]:
            raise UserError(f"--prior phantom-gaussian needs square images, got {shape[-2:]}")
        return {"kind": "phantom_gaussian", "size": shape[-1], "complex": shape[0] == 2}
    raise UserError(
        f"--prior {spec!r}: unknown prior; use a name from recon list priors, a train-prior "
        "folder or a .safetensors path"
    )


def _run_config(
    config: Path | None,
    *,
    scan: str | None,
    output: str | None,
    sampler: str | None,
    prior: str | None,
    samples: int | None,
    steps: int | None,
    batch_size: int | None,
    device: str | None,
    seed: int | None,
    figure: str | None,
    force: bool,
    overrides: list[str],
):
    from recon.config import RunConfig, apply_overrides, read_mapping, validate
    from recon.io import scan_image_shape
    from recon.samplers import SAMPLERS

    data = read_mapping(config) if config is not None else {}
    if scan is not None:
        data["input"] = scan
    if output is not None:
        data["output"] = output
    if sampler is not None:
        if sampler not in SAMPLERS:
            raise UserError(
                f"--sampler {sampler!r}: unknown sampler; choose one of {', '.join(SAMPLERS)}"
            )
        if data.get("sampler", {}).get("name") != sampler:
            data["sampler"] = {"name": sampler}
    data.setdefault("sampler", {"name": "dds"})
    if prior is not None or "prior" not in data:
        shape = scan_image_shape(data["input"]) if data.get("input") else None
        data["prior"] = _prior_config(prior or "phantom-gaussian", shape)
    if steps is not None:
        data["schedule"] = {
            **data.get("schedule", {"name": "karras", "sigma_max": 10.0}),
            "n_steps": steps,
        }
    data.setdefault("schedule", {"name": "karras", "n_steps": 50, "sigma_max": 10.0})
    for key, val in (
        ("n_samples", samples),
        ("batch_size", batch_size),
        ("device", device),
        ("seed", seed),
        ("figure", figure),
    ):
        if val is not None:
            data[key] = val
    if force:
        data["force"] = True
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(RunConfig, data, source=str(config) if config else "command line")


class _LazyBar:
    """A tqdm bar created at the first update, so input errors print nothing but themselves."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False)
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
        None,
        "--sampler",
        help="dds, dps, reddiff, tv, pinv, fbp, exact (recon list samplers). Default dds.",
    ),
    prior: str | None = typer.Option(
        None, "--prior", help="phantom-gaussian or a .safetensors exact prior (recon list priors)."
    ),
    samples: int | None = typer.Option(
        None, "--samples", min=1, help="Posterior samples per slice (std needs >= 2)."
    ),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Diffusion steps."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Rows per sampler call (memory budget)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda."),
    seed: int | None = typer.Option(None, "--seed", help="Run seed."),
    figure: Path | None = typer.Option(None, "--figure", help="Write a PNG comparison."),
    set_: list[str] = typer.Option(
        [], "--set", help="Config override key=value, repeatable (e.g. --set sampler.n_cg=10)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Reconstruct a scan and write reconstruction, std and provenance to OUTPUT.

    For fastMRI files the operator (single/multi-coil, mask, coil maps estimated from the ACS
    lines) comes from the file; for CT files from its attributes; for measurement files from
    their operator record. Example:

        recon reconstruct data/benchmarks/mri_x4_multicoil/scan.h5 -o out.h5 --samples 4
    """
    import torch

    from recon import metrics
    from recon.pipeline import run

    cfg = _run_config(
        config,
        scan=str(scan),
        output=str(output),
        sampler=sampler,
        prior=prior,
        samples=samples,
        steps=steps,
        batch_size=batch_size,
        device=device,
        seed=seed,
        figure=str(figure) if figure else None,
        force=force,
        overrides=set_,
    )
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: CUDA is not available here; use cpu")
    bar = _LazyBar(cfg.sampler.name, "row")
    try:
        res = run(cfg, on_rows=bar)
    finally:
        bar.close()
    if res.metrics:
        conv = "fastmri" if len(res.metrics["psnr"]) == 1 and len(res.indices) > 1 else "image"
        psnr = sum(res.metrics["psnr"]) / len(res.metrics["psnr"])
        ssim = sum(res.metrics["ssim"]) / len(res.metrics["ssim"])
        typer.echo(
            f"PSNR {psnr:.2f} dB, SSIM {ssim:.3f} against the file's ground truth "
            f"({metrics.CONVENTIONS[conv]})"
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
        help="HDF5 with 'images' (N,[C,]H,W) in [0,1], a PNG "
        "folder, or phantoms:N:SIZE for recon's random phantoms.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Scan file to write."),
    operator: OperatorName = typer.Option(..., "--operator", help="Forward operator."),
    acceleration: float = typer.Option(4.0, "--acceleration", help="MRI acceleration (2-12)."),
    center_fraction: float = typer.Option(0.08, "--center-fraction", help="MRI ACS fraction."),
    mask: str = typer.Option(
        "equispaced",
        "--mask",
        help="MRI mask: equispaced, random, vd2d, or full (fully sampled, for recon acquire).",
    ),
    coils: int = typer.Option(8, "--coils", help="Coils (multi-coil MRI, birdcage maps)."),
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
    seed: int = typer.Option(0, "--seed", help="Seed of masks and noise."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    """Simulate measurements of clean images and write a scan `recon reconstruct` reads
    (fastMRI layout for MRI, recon's sinogram layout for CT)."""
    from recon import operators as O
    from recon.config import validate
    from recon.io import check_writable, read_images
    from recon.simulate import simulate as run_simulate

    check_writable(output, force=force)
    if images.startswith("phantoms:"):
        from recon.phantoms import random_phantoms

        try:
            _, n, size = images.split(":")
            imgs = random_phantoms(int(n), int(size), seed=seed + 12345)
        except ValueError:
            raise UserError(f"{images!r}: use phantoms:N:SIZE, e.g. phantoms:4:64") from None
    else:
        imgs = read_images(images)
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
    path = run_simulate(imgs, cfg, output, seed=seed, force=force, fully_sampled=mask == "full")
    typer.echo(f"wrote {path} ({imgs.shape[0]} items, operator {name})")


@app.command()
def evaluate(
    benchmark: str = typer.Option(
        ..., "--benchmark", "-b", help="A bundled set (recon list benchmarks) or a folder."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Results folder (resumable)."),
    sampler: str = typer.Option("dds", "--sampler", help="Sampler name."),
    prior: str | None = typer.Option(
        None, "--prior", help="Prior name or path (default: the set's default_prior)."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="Run config file."),
    samples: int | None = typer.Option(None, "--samples", min=1, help="Samples per item."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Diffusion steps."),
    seed: int | None = typer.Option(None, "--seed", help="Run seed."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value."),
) -> None:
    """Evaluate a sampler and prior on a benchmark set: per-item CSV and JSON, a Markdown
    summary with the metric convention named, and a PNG grid. Rerunning skips finished items."""
    from tqdm import tqdm

    from recon.datasets import resolve_benchmark
    from recon.evaluate import evaluate as run_evaluate

    bench = resolve_benchmark(benchmark)
    if prior is None:
        import json

        info = bench.path / "info.json"
        prior = (
            json.loads(info.read_text()).get("default_prior", "phantom-gaussian")
            if info.is_file()
            else "phantom-gaussian"
        )
    cfg = _run_config(
        config,
        scan=str(bench.scan),
        output=None,
        sampler=sampler,
        prior=prior,
        samples=samples,
        steps=steps,
        batch_size=None,
        device=device,
        seed=seed,
        figure=None,
        force=False,
        overrides=set_,
    )
    bar = tqdm(
        total=bench.n_items if bench.n_items > 0 else None,
        desc=bench.name,
        unit="item",
        leave=False,
    )

    def on_item(i: int, total: int, row: dict | None) -> None:
        bar.total = total
        bar.update(1)
        if row is not None:
            bar.set_postfix(psnr=f"{row['psnr']:.2f}")

    try:
        summary = run_evaluate(bench, cfg, output, on_item=on_item)
    finally:
        bar.close()
    typer.echo((output / "summary.md").read_text())
    typer.echo(
        f"wrote {output / 'items.csv'}, {output / 'results.json'}, "
        f"{output / 'summary.md'}, {output / 'figure.png'}"
    )
    del summary


@app.command()
def acquire(
    scan: Path = typer.Argument(..., help="fastMRI-layout HDF5 with FULLY SAMPLED k-space."),
    output: Path = typer.Option(..., "--output", "-o", help="Results HDF5 to write."),
    prior: str = typer.Option(
        "phantom-gaussian", "--prior", help="Prior on 2-channel images (recon list priors)."
    ),
    acceleration: float = typer.Option(4.0, "--acceleration", help="Final acceleration R."),
    center_fraction: float = typer.Option(
        0.08, "--center-fraction", help="Initial ACS fraction of the lines."
    ),
    per_round: int = typer.Option(1, "--per-round", min=1, help="Lines acquired per round."),
    particles: int = typer.Option(16, "--particles", min=2, help="DPS particles per slice."),
    steps: int = typer.Option(100, "--steps", min=2, help="Diffusion steps."),
    zeta: float = typer.Option(0.5, "--zeta", help="DPS step size (data units)."),
    window: str = typer.Option(
        "0,0.5", "--window", help="START,STOP fractions of the steps where lines are acquired."
    ),
    slices: str | None = typer.Option(None, "--slices", help="Slices, e.g. 0,2,5 (default all)."),
    seed: int = typer.Option(0, "--seed", help="Run seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    figure: Path | None = typer.Option(None, "--figure", help="Write a PNG comparison."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    hard_consistency: bool = typer.Option(
        False,
        "--hard-consistency",
        help="Replace each final sample's acquired k-space lines by the data (noiseless scans).",
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
    import torch

    from recon import io
    from recon.active import acquire_file
    from recon.config import Frozen, PriorConfig, validate
    from recon.schedules import karras

    io.check_writable(output, force=force)
    try:
        lo, hi = (float(v) for v in window.split(","))
    except ValueError:
        raise UserError(f"--window {window!r}: use START,STOP fractions, e.g. 0,0.5") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise UserError(f"--window {window!r}: need 0 <= START < STOP <= 1")
    if not 2.0 <= acceleration <= 32.0:
        raise UserError(f"--acceleration {acceleration}: choose a value in [2, 32]")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use cpu")
    idx = None
    if slices:
        try:
            idx = [int(v) for v in slices.split(",")]
        except ValueError:
            raise UserError(f"--slices {slices!r}: use comma-separated integers") from None
    info = io.fastmri_info(scan)

    class _Prior(Frozen):
        prior: PriorConfig

    pcfg = validate(_Prior, {"prior": _prior_config(prior, (2, *info.shape))}, source="--prior")
    den = pcfg.prior.build(device=device)
    bar = _LazyBar("acquire", "slice")
    try:
        summary = acquire_file(
            str(scan),
            str(output),
            den,
            karras(steps),
            acceleration=acceleration,
            center_fraction=center_fraction,
            slices=idx,
            seed=seed,
            device=device,
            force=force,
            record={"prior": pcfg.prior.model_dump(mode="json")},
            figure=str(figure) if figure else None,
            on_slice=bar,
            n_particles=particles,
            per_round=per_round,
            window=(lo, hi),
            zeta=zeta,
            hard_consistency=hard_consistency,
        )
    finally:
        bar.close()
    if "psnr" in summary:
        typer.echo(
            f"PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.3f} "
            f"({summary['metric_convention']})"
        )
    typer.echo(
        f"{len(summary['slices'])} slice(s), {summary['lines_acquired']} lines acquired each "
        f"(final R = {acceleration:g}), {summary['wall_time_s']:.1f} s; wrote {output}"
    )
    if figure is not None:
        typer.echo(f"wrote {figure}")


@app.command("train-prior")
def train_prior_cmd(
    output: Path = typer.Argument(..., help="Folder for checkpoints, weights and model card."),
    preset: str | None = typer.Option(
        None, "--preset", help="Start from a recipe: digits-32 or phantom-64."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training config (YAML/TOML/JSON, TrainConfig fields)."
    ),
    data: list[str] | None = typer.Option(
        None,
        "--data",
        help="Image source, repeatable: digits, phantoms, an HDF5 file ('images'), a PNG folder.",
    ),
    steps: int | None = typer.Option(None, "--steps", help="Total optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step."),
    resolution: int | None = typer.Option(None, "--resolution", help="Image size (pixels)."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a field, e.g. --set lr=5e-4 --set unet.base=32."
    ),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
    max_time: str | None = typer.Option(
        None, "--max-time", help="Stop (after a checkpoint) after this long, e.g. 45m, 2h."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore an existing checkpoint."),
    device_hint: str = typer.Option("cpu", "--device", help="Only cpu is supported for now."),
) -> None:
    """Train a diffusion prior (EDM loss, compact UNet, EMA, AdamW) on CPU.

    Checkpoints every few hundred steps (safetensors + JSON, atomic); rerun the same command
    to resume after an interruption. Writes prior.safetensors (EMA weights), model_card.json
    and a sample grid PNG per checkpoint. Load the result with recon.priors.load(FOLDER).
    """
    from recon.config import apply_overrides, read_mapping, validate
    from recon.priors.train import PRESETS, TrainConfig, parse_duration, train_prior

    if device_hint != "cpu":
        raise UserError("train-prior runs on cpu only (--device cpu)")
    if preset is not None and preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset].model_dump(mode="json") if preset else {}
    if config is not None:
        base |= read_mapping(config)
    for key, val in (("data", data), ("steps", steps), ("batch_size", batch_size)):
        if val:
            base[key] = val
    if resolution is not None:
        base["resolution"] = resolution
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
        )
    except (ValueError, OSError) as err:
        raise UserError(str(err)) from None
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
    seed: int = typer.Option(0, "--seed", help="Seed of the mask, noise and samples."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing demo.h5."),
) -> None:
    """Reconstruct the bundled demo scan end to end (single-coil MRI x4 of a phantom).

    Writes OUTPUT/demo.h5 (reconstruction, std, zero-filled, exact posterior mean, with config,
    seed, versions and timing as attributes) and OUTPUT/demo.png (truth / zero-filled / DDS /
    exact / error / std), and prints PSNR/SSIM with their convention.
    """
    import torch
    from tqdm import tqdm

    from recon import metrics
    from recon.demo import run_demo
    from recon.io import check_writable

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use cpu")
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
    typer.echo(
        f"wall time {r['wall_time_s']:.1f} s (DDS {r['dds_time_s']:.1f} s for {samples} "
        f"samples, {r['nfe']} network evaluations each)"
    )
    typer.echo(f"wrote {r['h5']}")
    typer.echo(f"wrote {r['png']}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.echo(f"recon: error: {exc}", err=True)
        sys.exit(2)
    except FileNotFoundError as exc:
        typer.echo(f"recon: error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
