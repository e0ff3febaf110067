"""The bundled end-to-end demo: a real MR slice (pydicom's test-data ``MR_small.dcm``, 64x64),
single-coil MRI x4, reconstructed with recon's default prior, the generic patch prior of any
size (:data:`recon.priors.configs.DEFAULT_PRIOR`), which never saw a medical image.

Steps: read the slice (rescale slope/intercept, normalised to [0, 1] by :mod:`recon.volumes`);
simulate ``y = M F x + sigma_y n`` (equispaced x4 mask, 8 % ACS, ``sigma_y = 0.01``);
reconstruct by zero filling, by TV (the library's default ``lam``) and by DDS with its defaults
(posterior mean and std of ``n_samples`` draws, 50 steps); report PSNR/SSIM (``image``
convention, on magnitude images) and which method wins, whichever it is; write the HDF5
result and a PNG figure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recon import errors, metrics, results
from recon import operators as O
from recon.config import KarrasScheduleConfig
from recon.posterior import posterior_summary
from recon.samplers import SAMPLERS, CountingDenoiser, sample_dds

SIZE = 64
#: the real slice the demo reconstructs (a file in pydicom's own test data)
SLICE = "MR_small.dcm"


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)[:, None]


def demo_slice() -> tuple[torch.Tensor, dict[str, Any]]:
    """pydicom's ``MR_small.dcm`` as (1, 1, 64, 64) in [0, 1] and its normalisation info."""
    from pydicom.data import get_testdata_file

    from recon.volumes import read_dicom

    return read_dicom(get_testdata_file(SLICE))


def default_prior(shape: tuple[int, ...], device: torch.device | str) -> tuple[Any, dict]:
    """The prior ``recon reconstruct`` uses by default, for images of ``shape``, and its
    config."""
    from pydantic import TypeAdapter

    from recon.priors.configs import DEFAULT_PRIOR, PriorConfig, resolve

    cfg = TypeAdapter(PriorConfig).validate_python(resolve(DEFAULT_PRIOR, shape))
    return cfg.build(device=str(device)), {"name": DEFAULT_PRIOR, **cfg.model_dump(mode="json")}


def run_demo(
    output_dir: str | Path,
    *,
    seed: int = 0,
    n_samples: int = 8,
    device: str = "cpu",
    force: bool = False,
    progress: Callable[[str], None] = print,
    step_callback: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns paths and metrics."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    h5_path, png_path = out / "demo.h5", out / "demo.png"
    results.check_outputs(h5_path, png_path, force=force)
    t0 = time.perf_counter()
    dev = errors.device(device)

    progress(f"loading the default prior and pydicom's {SLICE} ...")
    prior, prior_cfg = default_prior((2, SIZE, SIZE), dev)
    image, image_info = demo_slice()
    cfg = O.MRIConfig(
        img_size=(SIZE, SIZE),
        mask="equispaced",
        acceleration=4,
        center_fraction=0.08,
        sigma_y=0.01,
        seed=seed,
    )
    physics = O.cast(O.build(cfg, device=dev), torch.float64)
    truth = torch.zeros(1, 2, SIZE, SIZE, dtype=torch.float64, device=dev)
    truth[:, 0] = image[0, 0].double().to(dev)
    g = torch.Generator(dev).manual_seed(seed)
    y = physics.A(truth)
    y = y + cfg.sigma_y * physics.mask * torch.randn(
        y.shape, generator=g, dtype=y.dtype, device=dev
    )

    progress("reconstructing: zero-filled, TV, DDS posterior samples ...")
    zero_filled = physics.A_dagger(y)
    schedule = KarrasScheduleConfig()  # the run config's default schedule
    sigmas = schedule.build().to(torch.float64)
    tv = SAMPLERS["tv"].config()  # TV with its library defaults
    tv_image = SAMPLERS["tv"].fn(None, y, physics, sigmas, **tv.model_dump(exclude={"name"}))
    counted = CountingDenoiser(prior)
    dds = SAMPLERS["dds"].config()  # DDS with its defaults
    t_dds = time.perf_counter()
    summary = posterior_summary(
        sample_dds,
        counted,
        y,
        physics,
        sigmas,
        n_samples=n_samples,
        generator=[torch.Generator(dev).manual_seed(seed)],
        max_batch=n_samples,
        callback=step_callback,
    )
    t_dds = time.perf_counter() - t_dds

    mag = {
        "truth": _magnitude(truth),
        "zero-filled": _magnitude(zero_filled),
        "TV": _magnitude(tv_image),
        "DDS mean": _magnitude(summary.mean),
    }
    scores = {
        k: {
            m: float(v[0])
            for m, v in metrics.image_metrics(mag[k].clamp(0, 1), mag["truth"]).items()
        }
        for k in ("zero-filled", "TV", "DDS mean")
    }
    winner = max(scores, key=lambda k: scores[k]["psnr"])
    std_mag = summary.std.pow(2).sum(1).sqrt()
    run_cfg = {
        "operator": cfg.model_dump(mode="json"),
        "image": {"file": f"pydicom test data {SLICE}", **image_info},
        "prior": prior_cfg,
        "sampler": dds.model_dump(mode="json"),
        "tv": tv.model_dump(mode="json"),
        "schedule": schedule.model_dump(mode="json"),
        "n_samples": n_samples,
    }
    wall = time.perf_counter() - t0
    captions = [{k: f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}" for k, v in scores.items()}]
    results.save(
        h5_path,
        png_path,
        reconstruction=mag["DDS mean"][:, 0],
        std=std_mag,
        extras={
            "zero_filled": mag["zero-filled"][:, 0],
            "tv": mag["TV"][:, 0],
            "ground_truth": mag["truth"][:, 0],
        },
        attrs={
            "config": run_cfg,
            "seed": seed,
            "device": str(dev),
            "wall_time_s": wall,
            "nfe": counted.nfe,
            "nfe_per_sample": counted.rows // n_samples,
            "metrics": scores,
            "metric_convention": metrics.CONVENTIONS["image"],
        },
        rows=[
            {
                "truth": mag["truth"][0],
                "zero-filled": mag["zero-filled"][0],
                "TV": mag["TV"][0],
                "DDS mean": mag["DDS mean"][0],
                "|error| DDS": (mag["DDS mean"] - mag["truth"]).abs()[0],
                "std DDS": std_mag[0],
            }
        ],
        captions=captions,
        title=f"{SLICE} (real MR), single-coil MRI x4, sigma_y=0.01, default prior "
        f"{prior_cfg['name']}; metrics: {metrics.CONVENTIONS['image']}",
        force=force,
    )
    return {
        "h5": str(h5_path),
        "png": str(png_path),
        "metrics": scores,
        "winner": winner,
        "wall_time_s": wall,
        "dds_time_s": t_dds,
        "nfe": counted.nfe,
        "config": json.loads(json.dumps(run_cfg)),
    }
