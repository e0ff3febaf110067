"""Configs: frozen pydantic models, loaded from YAML, TOML or JSON with errors that name the
file, the field and the allowed values.

Only the pipeline's ``run(cfg)`` takes a whole config; everything below it takes objects and
keyword arguments. Operator configs live next to their builders (``recon.operators``), sampler
configs next to their functions (``recon.samplers``); this module gathers them.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import tomllib
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from recon import schedules
from recon.errors import UserError

M = TypeVar("M", bound=BaseModel)


class Frozen(BaseModel):
    """Base of every recon config: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def annotated_parameters(fn: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """The keyword-only parameters of ``fn`` annotated ``Annotated[T, Field(...)]``, as
    ``{name: (annotation, default)}`` in signature order: the one place a hyperparameter's type,
    default, constraint and help text are written."""
    hints = typing.get_type_hints(fn, include_extras=True)
    out: dict[str, tuple[Any, Any]] = {}
    for p in inspect.signature(fn).parameters.values():
        ann = hints.get(p.name)
        if p.kind is not p.KEYWORD_ONLY or typing.get_origin(ann) is not Annotated:
            continue
        if any(isinstance(m, FieldInfo) for m in typing.get_args(ann)[1:]):
            out[p.name] = (ann, p.default)
    return out


def config_from_signature(
    fn: Callable[..., Any], *, tag: str, value: str, cls_name: str, doc: str
) -> type[Frozen]:
    """A frozen config model whose fields are ``fn``'s annotated keyword parameters (see
    :func:`annotated_parameters`) plus the discriminator ``tag: Literal[value]``."""
    fields: dict[str, Any] = {tag: (Literal[value], value)}
    fields.update(annotated_parameters(fn))
    model = create_model(cls_name, __base__=Frozen, __doc__=doc, **fields)
    model.__module__ = fn.__module__
    return model


class KarrasScheduleConfig(Frozen):
    """EDM schedule (Karras et al. 2022), sigmas in data units."""

    name: Literal["karras"] = "karras"
    n_steps: int = Field(50, ge=1)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    rho: float = Field(7.0, gt=0)

    def build(self):
        return schedules.karras(
            self.n_steps, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho
        )


class DDPMScheduleConfig(Frozen):
    """DDPM linear-beta schedule as VE sigmas, optionally respaced to ``n_steps`` (DDIM)."""

    name: Literal["ddpm"] = "ddpm"
    n_train_steps: int = Field(1000, ge=2)
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0, lt=1)
    scale: float = Field(0.5, gt=0, description="network units -> data units (0.5 for [-1,1])")
    n_steps: int | None = Field(None, ge=1, description="respace to this many steps")

    def build(self):
        s = schedules.ddpm(
            self.n_train_steps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            scale=self.scale,
        )
        return s if self.n_steps is None else schedules.respace(s, self.n_steps)


ScheduleConfig = Annotated[KarrasScheduleConfig | DDPMScheduleConfig, Field(discriminator="name")]


# ------------------------------------------------------------------------------------------------
# Loading and error reporting


class ConfigError(UserError, ValueError):
    """A config file or value is invalid; the message is one line per problem, user-facing."""


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the (sub)model that owns the key at ``loc``, for unknown-key errors."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(data, dict):
            data = data.get(part)
        fields = getattr(cur, "model_fields", None)
        if fields is None or part not in fields:
            # a discriminated union member: pick it by the tag in the data
            return _allowed_from_union(cur, data)
        ann = fields[part].annotation
        cur = _resolve_model(ann, data)
        if cur is None:
            return []
    return sorted(getattr(cur, "model_fields", {}))


def _resolve_model(ann: Any, data: Any) -> Any:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            tag = data.get("name", data.get("kind")) if isinstance(data, dict) else None
            fields = arg.model_fields
            disc = fields.get("name") or fields.get("kind")
            if tag is None or disc is None or disc.default == tag:
                return arg
        else:
            m = _resolve_model(arg, data)
            if m is not None:
                return m
    return None


def _allowed_from_union(cur: Any, data: Any) -> list[str]:
    m = _resolve_model(cur, data)
    return sorted(getattr(m, "model_fields", {})) if m is not None else []


def format_validation_error(
    err: ValidationError, *, source: str, model: type[BaseModel], data: Any
) -> str:
    """One line per problem: ``source: field.path: what is wrong (allowed values)``."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc, data)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{source}: {_loc(loc)}: unknown key{hint}")
        else:
            lines.append(f"{source}: {_loc(loc)}: {e['msg']}")
    return "\n".join(lines)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(
                f"{p}: unknown config format {p.suffix!r}; use .yaml, .toml or .json"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid {p.suffix[1:].upper()}: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict (copied)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. sampler.n_cg=5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        cur = out
        for part in parts[:-1]:
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            cur = nxt
        cur[parts[-1]] = yaml.safe_load(raw)
    return out


def validate(model: type[M], data: dict[str, Any], *, source: str = "config") -> M:
    """Validate a dict against a config model; raise :class:`ConfigError` with clear lines."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, source=source, model=model, data=data)
        ) from None


def load_config(model: type[M], path: str | Path, *, overrides: list[str] | None = None) -> M:
    """Load and validate a config file (YAML/TOML/JSON), with optional ``key=value`` overrides."""
    data = read_mapping(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(model, data, source=str(path))


# ------------------------------------------------------------------------------------------------
# Priors and the run


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


def _operator_union():
    from recon.operators import OperatorConfig

    return OperatorConfig


def _sampler_union():
    from recon.samplers import SamplerConfig

    return SamplerConfig


class RunConfig(Frozen):
    """A whole reconstruction run: input, operator, prior, schedule, sampler, output."""

    input: str | None = Field(None, description="scan file (fastMRI, CT, measurements, images)")
    output: str | None = Field(None, description="results HDF5 file")
    force: bool = Field(False, description="overwrite an existing output")
    operator: _operator_union() | None = Field(  # type: ignore[valid-type]
        None, description="operator; inferred from fastMRI/CT/measurement files when omitted"
    )
    prior: PriorConfig
    schedule: ScheduleConfig = Field(default_factory=KarrasScheduleConfig)
    sampler: _sampler_union()  # type: ignore[valid-type]
    seed: int = Field(0, description="run seed; item i, sample k use the stream (seed, i, k)")
    n_samples: int = Field(1, ge=1, description="posterior samples per item")
    batch_size: int = Field(8, ge=1, description="rows per sampler call (memory budget)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    items: list[int] | None = Field(None, description="only these slice/image indices")
    keep_samples: bool = Field(False, description="also write every sample")
    figure: str | None = Field(None, description="PNG comparison figure path")
