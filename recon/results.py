"""The ending every command shares: reduce draws, write the results file, draw the figure.

``reconstruct`` (:func:`recon.pipeline.run`), ``acquire``, ``demo`` and ``evaluate`` end the
same way: per item, the draws (samples, H, W) in the display domain are reduced to a posterior
mean and standard deviation (:func:`reduce`); the results file is written atomically
(:func:`recon.io.write_result`); the comparison figure has one row per item, with truth,
input, reconstruction, |error| and std panels (:func:`panels`), and is also written under a
temporary name and renamed into place. :func:`check_outputs` refuses, before any work, an
output that would replace an input or an existing file (without ``force``), and a figure path
matplotlib cannot write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from recon import io
from recon.errors import UserError

#: figure formats (matplotlib's raster and vector backends recon's users ask for)
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    output: str | Path | None,
    figure: str | Path | None,
    *,
    force: bool,
    inputs: Sequence[str | Path] = (),
) -> None:
    """Refuse, before any work, outputs that would lose data or cannot be written.

    An output (results file or figure) may not be one of ``inputs`` (even with ``force``: a
    scan is never replaced by its results), may not exist unless ``force``, may not be a
    folder, and its folder must exist and be writable; a figure needs a suffix in
    :data:`FIGURE_SUFFIXES`.
    """
    targets = [("output", output), ("--figure", figure)]
    given = [Path(p) for _, p in targets if p is not None]
    if len(given) == 2 and (given[0] == given[1] or _same_file(*given)):
        raise UserError(f"{given[0]}: the results file and --figure are the same path")
    for what, p in targets:
        if p is None:
            continue
        p = Path(p)
        for src in inputs:
            if Path(src).resolve() == p.resolve() or _same_file(Path(src), p):
                raise UserError(
                    f"{p}: {what} is the input scan; results never replace their input, "
                    "choose another path"
                )
        if p.is_dir():
            raise UserError(f"{p}: {what} is an existing folder; give a file path")
        if what == "--figure" and p.suffix.lower() not in FIGURE_SUFFIXES:
            raise UserError(
                f"{p}: --figure needs one of the suffixes {', '.join(FIGURE_SUFFIXES)}"
            )
        io.check_writable(p, force=force)


def reduce(draws: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean and standard deviation of draws (S, H, W): ((H, W), (H, W)); the std of
    a single draw is 0 (unbiased, ``S - 1`` in the denominator, otherwise)."""
    mean = draws.mean(0)
    std = draws.std(0) if draws.shape[0] > 1 else torch.zeros_like(mean)
    return mean, std


def panels(
    reconstruction: Sequence[Any],
    std: Sequence[Any],
    *,
    truth: Sequence[Any] | None = None,
    inputs: Sequence[Any] | None = None,
    input_label: str = "input (A^+ y)",
    scores: Mapping[str, Sequence[float]] | None = None,
    max_rows: int = 4,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Figure rows and captions for the first ``max_rows`` items: truth, input,
    reconstruction, |error|, std (images (H, W)); ``scores`` (psnr, ssim per item) caption the
    reconstruction."""
    rows, caps = [], []
    for r in range(min(max_rows, len(reconstruction))):
        row: dict[str, Any] = {}
        if truth is not None:
            row["truth"] = truth[r]
        if inputs is not None:
            row[input_label] = inputs[r]
        row["reconstruction"] = reconstruction[r]
        if truth is not None:
            row["|error|"] = abs(_t(reconstruction[r]) - _t(truth[r]))
        row["std"] = std[r]
        rows.append(row)
        cap = {}
        if scores and len(scores.get("psnr", [])) == len(reconstruction):
            cap["reconstruction"] = (
                f"PSNR {scores['psnr'][r]:.2f} dB, SSIM {scores['ssim'][r]:.3f}"
            )
        caps.append(cap)
    return rows, caps


def _t(a: Any) -> Tensor:
    return a if isinstance(a, Tensor) else torch.as_tensor(a)


def save_figure(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    captions: Sequence[Mapping[str, str]] | None = None,
    force: bool = True,
) -> Path:
    """Draw :func:`recon.figures.comparison_figure` under a temporary name in the target
    folder and rename it into place (a killed run leaves no partial figure)."""
    from recon.figures import comparison_figure

    return io.atomic(
        path, force, lambda tmp: comparison_figure(tmp, rows, title=title, captions=captions)
    )


def save(
    output: str | Path | None,
    figure: str | Path | None,
    *,
    reconstruction: Any,
    std: Any | None = None,
    samples: Any | None = None,
    extras: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
    rows: Sequence[Mapping[str, Any]] = (),
    captions: Sequence[Mapping[str, str]] | None = None,
    title: str = "",
    force: bool = False,
    fill: Any | None = None,
) -> Path | None:
    """Write the figure and the results file (``reconstruction``, ``std``, ``samples``,
    ``extras``, ``attrs`` plus versions; or ``fill(f)`` for a custom layout), each atomically
    and both or neither: a failure of either (a full disk) leaves none of them.

    Returns:
        The results file's path, or None without ``output``.
    """
    out = None
    drawn = figure is not None and bool(rows)
    if drawn:  # first: a figure that cannot be written leaves no results file either
        save_figure(figure, rows, title=title, captions=captions, force=force)
    try:
        if output is not None and fill is not None:
            out = io.atomic_h5(Path(output), force, fill)
        elif output is not None:
            out = io.write_result(
                output,
                reconstruction=reconstruction,
                std=std,
                samples=samples,
                extras=extras,
                attrs=attrs,
                force=force,
            )
    except BaseException:
        if drawn:  # the pair is written whole or not at all
            Path(figure).unlink(missing_ok=True)
        raise
    return out
