"""The base of every recon config and the generator of configs from function signatures.

Imports nothing of recon, so any module (configs, samplers, priors) can build on it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo


class Frozen(BaseModel):
    """Base of every recon config: immutable, unknown keys and NaN/Inf numbers rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def annotated_parameters(fn: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """The parameters of ``fn`` annotated ``Annotated[T, Field(...)]`` (with defaults), as
    ``{name: (annotation, default)}`` in signature order: the one place a hyperparameter's type,
    default, constraint and help text are written."""
    hints = typing.get_type_hints(fn, include_extras=True)
    out: dict[str, tuple[Any, Any]] = {}
    for p in inspect.signature(fn).parameters.values():
        ann = hints.get(p.name)
        if p.kind is p.VAR_KEYWORD or typing.get_origin(ann) is not Annotated:
            continue
        if any(isinstance(m, FieldInfo) for m in typing.get_args(ann)[1:]):
            out[p.name] = (ann, p.default)
    return out


def config_from_signature(
    fn: Callable[..., Any],
    *,
    tag: str,
    value: str,
    cls_name: str,
    doc: str,
    base: type[Frozen] = Frozen,
) -> type[Frozen]:
    """A frozen config model whose fields are ``fn``'s annotated keyword parameters (see
    :func:`annotated_parameters`) plus the discriminator ``tag: Literal[value]``."""
    fields: dict[str, Any] = {tag: (Literal[value], value)}
    fields.update(annotated_parameters(fn))
    model = create_model(cls_name, __base__=base, __doc__=doc, **fields)
    model.__module__ = fn.__module__
    return model
