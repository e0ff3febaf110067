"""Offline prior registry and loaders for users' checkpoints (local paths only, never pickle).

Bundled priors live in ``data/priors/`` next to ``manifest.json``, one entry per prior:

```json
{"name": "digits-32", "kind": "edm-unet", "file": "digits-32/prior.safetensors",
 "sha256": "...", "size_bytes": 4391076, "resolution": 32, "channels": 1,
 "description": "...", "card": "digits-32/model_card.json", "metrics": {...}}
```

``kind`` is ``edm-unet`` (a :class:`recon.priors.unet.UNet` trained by ``recon train-prior``;
a patch network serves any size), ``gaussian`` or ``gmm`` (exact priors fitted to data,
:func:`recon.priors.load_exact_prior`) or ``patch-gmm`` (an exact mixture on patches that
serves any size, :class:`recon.priors.patches.PatchMixturePrior`). ``resolution`` is null for
priors of any size.
:func:`load` verifies the sha256 before reading and raises a one-line error on a missing file
or a mismatch.

Users' networks (:func:`load_checkpoint`, :class:`ModuleDenoiser`):

* ``adm``: a guided-diffusion / ADM checkpoint such as ``ffhq_10m.pt`` (DPS, DDS and RED-Diff
  use it), through deepinv's ``DiffUNet`` (:func:`recon.priors.load_diffunet`);
* ``edm-unet``: recon's UNet as a safetensors file with its architecture in the metadata (what
  ``recon train-prior`` writes) or as a ``.pt`` state dict plus a JSON architecture config;
* any ``torch.nn.Module`` with a stated parametrisation, wrapped by :class:`ModuleDenoiser`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from recon.errors import UserError

from .adapters import EDMDenoiser, _bview, _RangeMixin, _rows, load_diffunet
from .base import as_sigma, fixed_calls


class PriorError(UserError, ValueError):
    """A prior cannot be found, verified or read; the message is one line."""


def priors_dir() -> Path:
    """The folder of bundled priors (``data/priors`` of the repository)."""
    from recon.datasets import data_dir

    return data_dir() / "priors"


def manifest(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The entries of the bundled-prior manifest (``data/priors/manifest.json``)."""
    p = Path(path) if path is not None else priors_dir() / "manifest.json"
    if not p.is_file():
        return []
    try:
        return list(json.loads(p.read_text())["priors"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PriorError(f"{p}: not a valid prior manifest ({exc})") from None


def _verify(path: Path, sha: str | None, what: str) -> None:
    from .train import sha256

    if not path.is_file():
        raise PriorError(f"{what}: weights file {path} is missing (reinstall or retrain it)")
    if sha is not None:
        got = sha256(path)
        if got != sha:
            raise PriorError(
                f"{what}: sha256 of {path} is {got[:12]}..., the manifest says {sha[:12]}...; "
                "the file is corrupt or was replaced"
            )


def _load_file(path: Path, kind: str | None, device: torch.device | str) -> Any:
    from safetensors import SafetensorError, safe_open

    from .io import load_exact_prior
    from .train import FORMAT, load_network

    if kind in ("gaussian", "gmm", "patch-gmm"):
        return load_exact_prior(path, device=device)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise PriorError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") == FORMAT:
        return load_network(path, device=device)
    if meta.get("recon_prior") in ("gaussian", "mixture", "patch-mixture"):
        return load_exact_prior(path, device=device)
    raise PriorError(
        f"{path}: unknown safetensors content (no recon prior metadata); for other networks "
        "use recon.priors.load_checkpoint(path, format=...)"
    )


def bundled_weights(name: str) -> Path:
    """The verified (sha256) weights file of the bundled prior ``name``."""
    entries = {e["name"]: e for e in manifest()}
    if name not in entries:
        known = ", ".join(sorted(entries)) or "(none bundled)"
        raise PriorError(f"prior {name!r}: not a bundled prior ({known}) nor an existing path")
    path = priors_dir() / entries[name]["file"]
    _verify(path, entries[name].get("sha256"), f"prior {name!r}")
    return path


def load(name_or_path: str | Path, *, device: torch.device | str = "cpu") -> Any:
    """A prior as a :class:`recon.priors.Denoiser`, by manifest name or local path.

    Args:
        name_or_path: a bundled prior's name (``recon list priors``), a folder written by
            ``recon train-prior`` (its ``model_card.json`` gives the file and sha256), or a
            ``.safetensors`` file (recon UNet weights or an exact prior).
        device: where the weights go.

    Raises:
        PriorError: unknown name, missing file, sha256 mismatch or unreadable file.
    """
    entries = {e["name"]: e for e in manifest()}
    key = str(name_or_path)
    if key in entries:
        return _load_file(bundled_weights(key), entries[key].get("kind"), device)
    p = Path(name_or_path)
    if p.is_dir():
        card_path = p / "model_card.json"
        if not card_path.is_file():
            raise PriorError(f"{p}: folder has no model_card.json (not a recon prior folder)")
        card = json.loads(card_path.read_text())
        path = p / card["file"]
        _verify(path, card.get("sha256"), str(p))
        return _load_file(path, card.get("kind"), device)
    if p.is_file():
        return _load_file(p, None, device)
    known = ", ".join(sorted(entries)) or "(none bundled)"
    raise PriorError(
        f"prior {key!r}: not a bundled prior ({known}) nor an existing path; recon never "
        "downloads weights"
    )


class ComplexFromReal:
    """A denoiser for complex images (2 channels: real, imaginary) built from a real-image
    denoiser, for objects that are real up to noise (phantoms, magnitude-like data).

    The real channel goes through ``denoiser``; the imaginary channel is denoised under an
    independent zero-mean Gaussian prior of variance ``imag_var``:
    ``E[x_im | x] = x_im * imag_var / (imag_var + sigma^2)``.
    """

    def __init__(self, denoiser: Any, imag_var: float = 1e-4) -> None:
        self.denoiser = denoiser
        self.imag_var = float(imag_var)
        shape = getattr(denoiser, "shape", None)
        if shape is not None:
            self.shape = (2, *tuple(shape)[1:])

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = as_sigma(sigma, x)
        re = self.denoiser(x[:, :1], s)
        im = x[:, 1:] * _bview(self.imag_var / (self.imag_var + s**2), x)
        return torch.cat([re, im], dim=1)


def to_complex(denoiser: Any, imag_var: float = 1e-4) -> Any:
    """A 1-channel prior for 2-channel (complex) MRI images: a PPCA Gaussian stays an exact
    Gaussian (:meth:`recon.priors.GaussianPrior.to_complex`, with its exact posterior); any
    other prior is wrapped (:class:`ComplexFromReal`)."""
    from .gaussian import GaussianPrior

    if isinstance(denoiser, GaussianPrior) and denoiser.cov.kind == "spectral":
        return denoiser.to_complex()
    return ComplexFromReal(denoiser, imag_var)


class ModuleDenoiser(_RangeMixin):
    """A plain ``torch.nn.Module`` ``net(x, sigma)`` with a stated parametrisation, in the
    units of its training data ``[lo, hi]`` (recon maps [0, 1] images and sigmas to them):

    * ``"x0"``: the network returns the clean image, ``D = net(u, s)``;
    * ``"eps"``: the VE noise, ``D = u - s net(u, s)``;
    * ``"score"``: ``grad log p_s(u)``, ``D = u + s^2 net(u, s)`` (Tweedie);
    * ``"edm"``: the EDM raw network ``F(c_in u, c_noise)`` (use :class:`EDMDenoiser`).

    ``sigma`` is passed as a (B,) tensor in network units; ``call_rows`` as for
    :class:`EDMDenoiser` (calls of a fixed shape, so results never depend on the batch).
    """

    def __init__(
        self,
        net: nn.Module,
        parametrisation: Literal["x0", "eps", "score", "edm"],
        data_range: tuple[float, float] = (0.0, 1.0),
        sigma_data: float = 0.5,
        call_rows: int | None = None,
    ) -> None:
        if parametrisation not in ("x0", "eps", "score", "edm"):
            raise ValueError(f"unknown parametrisation {parametrisation!r}")
        self.net, self.parametrisation = net, parametrisation
        self.lo, self.hi = (float(v) for v in data_range)
        self.call_rows = call_rows
        self._edm = (
            EDMDenoiser(net, sigma_data, data_range, call_rows)
            if parametrisation == "edm"
            else None
        )

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        if self._edm is not None:
            return self._edm(x, sigma)
        u, s = self._to_net(x, as_sigma(sigma, x))
        out = fixed_calls(self.net, _rows(self.call_rows, u), u, s)
        if self.parametrisation == "x0":
            u0 = out
        elif self.parametrisation == "eps":
            u0 = u - _bview(s, u) * out
        else:
            u0 = u + _bview(s**2, u) * out
        return self._from_net(u0)


def load_checkpoint(
    path: str | Path,
    *,
    format: Literal["adm", "edm-unet"],
    config: str | Path | dict | None = None,
    device: torch.device | str = "cpu",
    **kwargs: Any,
) -> Any:
    """Load a user's network checkpoint from a local path (``weights_only`` / safetensors).

    Args:
        path: the checkpoint file.
        format: ``"adm"`` (guided-diffusion ``.pt``, e.g. ``ffhq_10m.pt``; ``kwargs`` go to
            :func:`recon.priors.load_diffunet`: in_channels, out_channels, large_model) or
            ``"edm-unet"`` (recon's UNet: a ``.safetensors`` with its metadata, or a ``.pt``
            state dict with ``config`` = the architecture JSON/dict, optional keys
            ``sigma_data``, ``resolution``).
        config: architecture for an ``edm-unet`` ``.pt`` state dict.
        device: target device.
    """
    p = Path(path)
    if not p.is_file():
        raise PriorError(f"checkpoint not found: {p} (recon never downloads weights)")
    if format == "adm":
        try:
            return load_diffunet(p, device=device, **kwargs)
        except ValueError as exc:
            raise PriorError(str(exc)) from None
    if format != "edm-unet":
        raise PriorError(f"unknown checkpoint format {format!r}; use 'adm' or 'edm-unet'")
    if p.suffix == ".safetensors":
        return _load_file(p, None, device)
    if config is None:
        raise PriorError(f"{p}: an edm-unet state dict needs its architecture config")
    from .unet import UNet, UNetConfig

    cfg = dict(config) if isinstance(config, dict) else json.loads(Path(config).read_text())
    sigma_data = float(cfg.pop("sigma_data", 0.5))
    res = cfg.pop("resolution", None)
    net = UNet(UNetConfig.model_validate(cfg))
    state = torch.load(p, map_location="cpu", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PriorError(f"{p}: does not match the given UNet config ({first})") from None
    net.eval().requires_grad_(False).to(device)
    den = EDMDenoiser(net, sigma_data=sigma_data, data_range=(-1.0, 1.0))
    if res is not None:
        den.shape = (net.config.channels, int(res), int(res))
    return den
