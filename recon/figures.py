"""PNG comparison figures: one row per item, columns such as truth / input / reconstruction /
error / std, with the metric convention in the title."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _img(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a, dtype=np.float64)
    while a.ndim > 2:
        a = a[0] if a.shape[0] == 1 else np.sqrt((a**2).sum(0))  # channels -> magnitude
    return a


def comparison_figure(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "",
    captions: Sequence[Mapping[str, str]] | None = None,
) -> Path:
    """Save a grid: ``rows[i]`` maps column titles to images (H, W) or (C, H, W).

    Columns named ``error`` and ``std`` use a heat colour map with their own scale; the others
    share a grey scale [0, max of the row's first image].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(rows[0])
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(2.4 * len(cols), 2.5 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        vmax = float(_img(row[cols[0]]).max()) or 1.0
        for c, name in enumerate(cols):
            ax = axes[r][c]
            img = _img(row[name])
            if name.lower().startswith(("error", "std", "|error")):
                h = ax.imshow(img, cmap="magma", vmin=0)
                fig.colorbar(h, ax=ax, fraction=0.046, pad=0.02)
            else:
                ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
            label = name
            if captions is not None and name in captions[r]:
                label += "\n" + captions[r][name]
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
