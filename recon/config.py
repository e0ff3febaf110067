"""Configs: frozen pydantic models, loaded from YAML, TOML or JSON with errors that name the
file, the field and the allowed values.

Only the pipeline's ``run(cfg)`` takes a whole config; everything below it takes objects and
keyword arguments. Operator configs live next to their builders (``recon.operators``), sampler
configs next to their functions (``recon.samplers``); this module gathers them.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import tomllib
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from recon import schedules
from recon._models import Frozen, config_from_signature
from recon.catalog import NOISE_FLOOR_HELP
from recon.errors import UserError
from recon.memory import BUDGET_HELP
from recon.operators.mri_multicoil import COIL_ESTIMATOR_HELP, CoilEstimator

M = TypeVar("M", bound=BaseModel)


class _Schedule(Frozen):
    """A schedule config: ``name`` picks the function of :data:`recon.schedules.SCHEDULES`,
    the other fields are its arguments."""

    def build(self):
        args = {k: getattr(self, k) for k in type(self).model_fields if k != "name"}
        return schedules.SCHEDULES[self.name](**args)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _consistent(self) -> _Schedule:
        """The schedule function's own checks across fields (e.g. sigma_min < sigma_max) are
        config errors, reported before any work."""
        self.build()  # a ValueError here becomes a validation error naming the config
        return self


def _schedule_config(name: str) -> type[Frozen]:
    fn = schedules.SCHEDULES[name]
    doc = (fn.__doc__ or "").strip().splitlines()[0]
    cls_name = {"karras": "KarrasScheduleConfig", "ddpm": "DDPMScheduleConfig"}[name]
    return config_from_signature(
        fn, tag="name", value=name, cls_name=cls_name, doc=doc, base=_Schedule
    )


KarrasScheduleConfig = _schedule_config("karras")
DDPMScheduleConfig = _schedule_config("ddpm")

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
    """One line per problem: ``source: field.path: what is wrong (allowed values)``; the
    members of a union (``float > 0 | 'auto'``) that all refused a value are one problem."""
    lines: dict[str, list[str]] = {}
    for e in err.errors():
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc, data)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.setdefault(_loc(loc), []).append(f"unknown key{hint}")
            continue
        if loc and isinstance(loc[-1], str) and _UNION_MEMBER.search(loc[-1]):
            loc = loc[:-1]  # e.g. gamma.constrained-float, gamma.literal['auto']
        msg = e["msg"].removeprefix("Value error, ")  # a validator's own message
        lines.setdefault(_loc(loc), []).append(msg)
    return "\n".join(f"{source}: {where}: {'; or '.join(msgs)}" for where, msgs in lines.items())


#: pydantic's names of smart-union members in an error location
_UNION_MEMBER = re.compile(r"^(constrained-\w+|literal\[.*\]|int|float|str|bool|none|list\[.*\])$")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start]:#04x}); save the "
            "config as UTF-8"
        ) from None
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
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a config") from None
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


def validate_options(
    fn: Any, options: dict[str, Any], *, source: str = "options"
) -> dict[str, Any]:
    """Check keyword options for ``fn`` against its annotated parameters (type, bounds,
    NaN/Inf refused: :func:`recon._models.annotated_parameters`), for Python callers and
    commands that pass options to a function rather than through a config model. Options
    without an annotation pass unchanged.

    Raises:
        ConfigError: one line per bad option.
    """
    from pydantic import create_model

    from recon._models import Frozen, annotated_parameters

    params = annotated_parameters(fn)
    checked = {k: v for k, v in options.items() if k in params}
    model = create_model(
        f"{fn.__name__}_options", __base__=Frozen, **{k: params[k] for k in checked}
    )
    return {**options, **validate(model, checked, source=source).model_dump()}


def load_config(model: type[M], path: str | Path, *, overrides: list[str] | None = None) -> M:
    """Load and validate a config file (YAML/TOML/JSON), with optional ``key=value`` overrides."""
    data = read_mapping(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(model, data, source=str(path))


# ------------------------------------------------------------------------------------------------
# Priors and the run


def _operator_union():
    from recon.operators import OperatorConfig

    return OperatorConfig


def _sampler_union():
    from recon.samplers import SamplerConfig

    return SamplerConfig


def _prior_field():
    from recon.priors.configs import DEFAULT_PRIOR, PriorConfig

    return PriorConfig | str, DEFAULT_PRIOR


def _default_sampler():
    from recon.samplers import SAMPLERS

    return SAMPLERS["dds"].config()


_PRIOR_TYPE, _PRIOR_DEFAULT = _prior_field()


def _batch_size(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"{value!r}: give a positive number of rows, or auto")


def _max_memory(value: str | None) -> str | None:
    from recon.memory import parse_size

    if value is not None:
        try:
            parse_size(value)
        except UserError as err:
            raise ValueError(str(err).removeprefix("--max-memory ")) from None
    return value


class RunConfig(Frozen):
    """A whole reconstruction run: input, operator, prior, schedule, sampler, output."""

    input: str | None = Field(None, description="scan file (fastMRI, CT, measurements, images)")
    output: str | None = Field(None, description="results HDF5 file")
    force: bool = Field(False, description="overwrite an existing output")
    operator: _operator_union() | None = Field(  # type: ignore[valid-type]
        None, description="operator; inferred from fastMRI/CT/measurement files when omitted"
    )
    prior: _PRIOR_TYPE = Field(  # type: ignore[valid-type]
        _PRIOR_DEFAULT,
        description="a prior config, or a name/path resolved against the scan's image size "
        "(recon list priors)",
    )
    schedule: ScheduleConfig = Field(default_factory=KarrasScheduleConfig)
    sampler: _sampler_union() = Field(  # type: ignore[valid-type]
        default_factory=_default_sampler, description="sampler and its hyperparameters"
    )
    seed: int = Field(
        0,
        ge=0,
        lt=2**63,
        description="run seed (a 64-bit integer >= 0); item i, sample k use the stream "
        "(seed, i, k)",
    )
    n_samples: int = Field(1, ge=1, description="posterior samples per item")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="network priors: autocast the network to this dtype (sampler state stays "
        "float32/64)",
    )
    channels_last: bool = Field(False, description="network priors: channels-last inputs")
    compile: bool = Field(False, description="network priors: torch.compile the network")
    teleport: Annotated[float, Field(gt=0.0)] | Literal["auto"] | None = Field(
        None,
        description="start the sampler at this noise level (data units) from an exact draw of "
        "the Gaussian posterior, skipping the network calls above it (Wang and Vastola 2024; "
        "samplers marked 'teleports' in recon list samplers); auto: where the network and its "
        "Gaussian agree (recon list priors); None: from pure noise",
    )
    teleport_prior: str | None = Field(
        None,
        description="the Gaussian prior teleportation draws from (name or path, the scan's "
        "size); None: the bundled network's partner",
    )
    sigma_y: float | None = Field(
        None,
        ge=0.0,
        description="measurement noise std in the scan file's units (fastMRI: k-space); "
        "None: the file's record, else (fastMRI) estimated from the data",
    )
    coil_estimator: CoilEstimator | None = Field(
        None,
        description=f"multi-coil k-space files: {COIL_ESTIMATOR_HELP} (None: the operator's "
        "default)",
    )
    noise_floor: bool | None = Field(None, description=NOISE_FLOOR_HELP)
    batch_size: Annotated[int | Literal["auto"], BeforeValidator(_batch_size)] = Field(
        "auto",
        description="rows per sampler call; auto: sized to max_memory from one measured row",
    )
    max_memory: Annotated[str | None, AfterValidator(_max_memory)] = Field(
        None,
        description=f"memory budget of batch_size auto, e.g. 4GB ({BUDGET_HELP})",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    items: list[int] | None = Field(
        None, min_length=1, description="only these slice/image indices"
    )
    keep_samples: bool = Field(False, description="also write every sample")
    figure: str | None = Field(None, description="PNG comparison figure path")


#: RunConfig fields that never change a row's result (where and how much is written, and
#: the batching, which every sampler is invariant to)
RESULT_NEUTRAL = frozenset(
    {"output", "force", "items", "figure", "batch_size", "max_memory", "keep_samples"}
)


def fingerprint(
    cfg: RunConfig, *, exclude: frozenset[str] | set[str] = frozenset(), **extra: Any
) -> str:
    """A 16-hex-digit hash of what determines ``cfg``'s results: every field but
    :data:`RESULT_NEUTRAL` and ``exclude``, plus ``extra`` values. Results made under equal
    fingerprints may be reused (``evaluate``'s items, ``reconstruct``'s finished rows). A
    sampler without a prior (pinv, fbp, tv) leaves out the prior and the network options,
    which cannot change its results."""
    from recon.samplers import SAMPLERS

    skip = set(RESULT_NEUTRAL | set(exclude))
    if not SAMPLERS[cfg.sampler.name].uses_prior:
        skip |= {"prior", "dtype", "channels_last", "compile"}
    d = cfg.model_dump(mode="json", exclude=skip)
    d.update(extra)
    return digest(d)


def digest(*parts: Any) -> str:
    """16 hex digits of the sha256 of ``parts`` as sorted JSON (other values by ``str``): the
    one hash finished results are keyed by (:func:`fingerprint`, acquisition's slices)."""
    import hashlib
    import json

    text = json.dumps(parts[0] if len(parts) == 1 else list(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tensor_digest(obj: Any) -> str:
    """A digest of the tensors an object holds (a denoiser, a prior): its torch modules'
    state dicts and its own tensor attributes, two levels deep; the type name when it holds
    none. Results made with other weights never share it."""
    import hashlib

    import torch

    h = hashlib.sha256(type(obj).__qualname__.encode())

    def visit(o: Any, depth: int) -> None:
        if isinstance(o, torch.Tensor):
            h.update(o.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(o, torch.nn.Module):
            for k, v in sorted(o.state_dict().items()):
                h.update(k.encode())
                visit(v, depth)
        elif depth > 0 and hasattr(o, "__dict__"):
            for k, v in sorted(vars(o).items()):
                if isinstance(v, torch.Tensor | torch.nn.Module) or hasattr(v, "__dict__"):
                    h.update(k.encode())
                    visit(v, depth - 1)

    visit(obj, 2)
    return h.hexdigest()[:16]


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    cur = data
    *head, last = dotted.split(".")
    for part in head:
        cur = cur.setdefault(part, {})
    cur[last] = value


def run_config(
    path: str | Path | None = None,
    *,
    sampler: str | None = None,
    overrides: list[str] | None = None,
    **values: Any,
) -> RunConfig:
    """A :class:`RunConfig` from an optional file, command-line values and ``key=value``
    overrides, in that order of precedence (lowest first); defaults are the model's.

    Args:
        path: a YAML/TOML/JSON run config, or None.
        sampler: a sampler name; a different name than the file's replaces the file's sampler
            section (its hyperparameters belong to the other sampler).
        overrides: ``--set key.sub=value`` items.
        **values: dotted keys (``schedule.n_steps``) -> values; None values are skipped.
    """
    from recon.samplers import SAMPLERS

    data = read_mapping(path) if path is not None else {}
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError(
            f"--sampler {sampler!r}: unknown sampler; choose one of {', '.join(SAMPLERS)}"
        )
    if sampler is not None and data.get("sampler", {}).get("name") != sampler:
        data["sampler"] = {"name": sampler}
    for key, val in values.items():
        if val is not None:
            _set(data, key, val)
    if overrides:
        data = apply_overrides(data, overrides)
    for section in ("schedule", "sampler"):  # a section given in part: the default's name
        if isinstance(data.get(section), dict) and "name" not in data[section]:
            data[section]["name"] = RunConfig.model_fields[section].default_factory().name
    given = any(v is not None for v in values.values()) or bool(overrides)
    source = "command line" if path is None else f"{path} + command line" if given else str(path)
    op = data.get("operator")
    if isinstance(op, dict) and "name" not in op:
        raise ConfigError(
            f"{source}: operator.{next(iter(op), 'name')} without operator.name: an operator "
            "config is whole (name and fields; the scan's own operator is used when there is "
            "none); for the noise level of a scan use --sigma-y (sigma_y in a config)"
        )
    return validate(RunConfig, data, source=source)
