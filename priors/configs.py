"""Prior configs, prior names and the catalogue ``recon list priors`` prints.

A prior is given by a config (``kind``-discriminated) or by a name resolved against the images
a scan reconstructs to (:func:`resolve`): a bundled prior (``manifest.json``), a built-in fitted
prior (:data:`BUILTIN`), a ``train-prior`` folder, or a ``.safetensors`` file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from recon._models import Frozen
from recon.errors import UserError

Shape = tuple[int, ...]


class ExactPriorConfig(Frozen):
    """An exact Gaussian or Gaussian-mixture prior saved with ``save_exact_prior``."""

    kind: Literal["exact"] = "exact"
    path: str = Field(description="path to the .safetensors file")

    def build(self, *, device: str = "cpu"):
        from recon.priors import load_exact_prior

        return load_exact_prior(self.path, device=device)


class PhantomGaussianConfig(Frozen):
    """A Gaussian prior fitted (PPCA) to recon's seeded random phantoms, in seconds."""

    kind: Literal["phantom_gaussian"] = "phantom_gaussian"
    size: int = Field(64, ge=8, description="image size (H = W)")
    n_train: int = Field(2000, ge=10, description="phantoms to fit on")
    rank: int = Field(128, ge=1, description="PCA rank")
    seed: int = Field(1, description="seed of the training phantoms")
    complex: bool = Field(False, description="2-channel (real, imaginary) images for MRI")

    def build(self, *, device: str = "cpu"):
        from recon.phantoms import phantom_gaussian_prior

        return phantom_gaussian_prior(
            self.size,
            n_train=self.n_train,
            rank=self.rank,
            seed=self.seed,
            complex_valued=self.complex,
        ).to(device)


class DigitsGaussianConfig(Frozen):
    """A Gaussian prior (PPCA) fitted to the 4000 training digits (32x32), in seconds."""

    kind: Literal["digits_gaussian"] = "digits_gaussian"
    rank: int = Field(64, ge=1, description="PCA rank")

    def build(self, *, device: str = "cpu"):
        from recon.digits import digits_gaussian_prior

        return digits_gaussian_prior(self.rank).to(device)


class NetworkPriorConfig(Frozen):
    """A bundled prior by name (``recon list priors``) or a local prior folder/file, loaded
    offline with its sha256 checked (:func:`recon.priors.load`)."""

    kind: Literal["network"] = "network"
    source: str = Field(description="bundled prior name, train-prior folder or .safetensors")
    complex: bool = Field(
        False, description="wrap a 1-channel prior for 2-channel (real, imaginary) MRI images"
    )

    def build(self, *, device: str = "cpu"):
        from recon.priors import load, to_complex

        prior = load(self.source, device=device)
        return to_complex(prior) if self.complex else prior


PriorConfig = Annotated[
    ExactPriorConfig | PhantomGaussianConfig | DigitsGaussianConfig | NetworkPriorConfig,
    Field(discriminator="kind"),
]


#: built-in prior names -> their config class (fitted in seconds; the docstring describes it)
BUILTIN: dict[str, type[Frozen]] = {
    "phantom-gaussian": PhantomGaussianConfig,
    "digits-gaussian": DigitsGaussianConfig,
}

#: the prior a run uses when none is given
DEFAULT_PRIOR = "generic-patch"


def teleport_partner(prior: Any) -> dict[str, Any] | None:
    """A bundled network's teleportation record (manifest ``teleport``: the ``gaussian`` fitted
    to its training data, and the ``levels`` / ``discrepancy`` curve :func:`recon.teleport.
    compare` measured), for a resolved prior config; None for any other prior."""
    from .registry import manifest

    source = getattr(prior, "source", None)
    for e in manifest():
        if e["name"] == source:
            return e.get("teleport")
    return None


def _network_channels(spec: str) -> int | None:
    """Channels of a bundled prior or a train-prior folder (None if unknown)."""
    from .registry import manifest

    for e in manifest():
        if e["name"] == spec:
            return int(e["channels"])
    card = Path(spec) / "model_card.json"
    return int(json.loads(card.read_text())["channels"]) if card.is_file() else None


def resolve(spec: str, shape: Shape | None) -> dict[str, Any]:
    """A prior name or path as a prior config (a dict), for images of ``shape`` (C, H, W).

    Raises:
        UserError: unknown name, or a built-in prior that cannot serve ``shape``.
    """
    from .registry import manifest

    cplx = shape is not None and shape[0] == 2
    if spec in {e["name"] for e in manifest()} or Path(spec).is_dir():
        return {
            "kind": "network",
            "source": spec,
            "complex": cplx and _network_channels(spec) == 1,
        }
    if Path(spec).suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(spec, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # unreadable: let the exact-prior loader report it in one line
            meta = {}
        if meta.get("format") == "recon-edm-unet":
            return {
                "kind": "network",
                "source": spec,
                "complex": cplx and json.loads(meta["unet"])["channels"] == 1,
            }
        return {"kind": "exact", "path": spec}
    if spec == "digits-gaussian":
        if shape is not None and tuple(shape) != (1, 32, 32):
            raise UserError(f"prior digits-gaussian serves 1x32x32 images, not {shape}")
        return {"kind": "digits_gaussian"}
    if spec == "phantom-gaussian":
        if shape is None:
            raise UserError(
                "prior phantom-gaussian: the scan does not say its image size; "
                "use a config with prior.size"
            )
        if shape[-1] != shape[-2]:
            raise UserError(
                f"prior phantom-gaussian serves square images (N x N), not {tuple(shape[-2:])}; "
                "give a prior of that size, or use a sampler without a prior (pinv, tv)"
            )
        return {"kind": "phantom_gaussian", "size": shape[-1], "complex": cplx}
    raise UserError(
        f"prior {spec!r}: unknown prior; use a name from `recon list priors`, a train-prior "
        "folder or a .safetensors path"
    )


def catalogue() -> list[tuple[str, str]]:
    """``(name, description)`` of every prior a run can name: bundled, built-in, by path."""
    from .registry import manifest

    rows = []
    for e in manifest():
        res = e.get("resolution")
        size = f"{e['channels']}x{res}x{res}" if res else f"{e['channels']}xHxW"
        head = (
            f"{e['kind']:9s} {size:9s} {e['size_bytes'] / 1e6:5.1f} MB  {e.get('description', '')}"
        )
        rows.append((e["name"], "\n".join([head, *e.get("summary", [])])))
    for name, cls in BUILTIN.items():
        rows.append((name, " ".join((cls.__doc__ or "").split())))
    rows.append(
        ("FOLDER", "a folder written by recon train-prior (model_card.json + prior.safetensors)")
    )
    rows.append(("PATH.safetensors", " ".join((ExactPriorConfig.__doc__ or "").split())))
    return rows
