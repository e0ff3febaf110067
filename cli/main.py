"""``recon``: reconstruct images from incomplete, noisy measurements with diffusion priors.

Heavy imports (torch, deepinv) happen inside command bodies so ``recon --help`` is instant.
User errors (bad files, configs, names) print one line and exit with code 2, without a
traceback.
"""

from __future__ import annotations

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
    else:
        from recon.schedules import SCHEDULES

        for name, fn in SCHEDULES.items():
            typer.echo(f"{name:8s} {(fn.__doc__ or '').strip().splitlines()[0]}")


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
    bar = tqdm(total=samples, desc="DDS samples", unit="sample", leave=False)

    def step(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        r = run_demo(
            output,
            seed=seed,
            n_samples=samples,
            device=device,
            force=force,
            progress=lambda m: tqdm.write(m),
            step_callback=step,
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
