"""Speed options for network priors: reduced-precision autocast, channels-last, torch.compile.

``accelerate(denoiser, dtype=..., channels_last=..., compile=...)`` returns a copy of a network
denoiser whose network (``torch.nn.Module``) runs

- under ``torch.autocast`` in ``bfloat16`` or ``float16`` (the network only: its output is cast
  back to the input's dtype, and the sampler's state, the preconditioning and every data step
  stay in float32/float64);
- on channels-last inputs (``torch.channels_last`` memory format, for convolution kernels that
  prefer it, mostly on GPUs);
- compiled by ``torch.compile`` (first call slow; on CPU it needs a C++ compiler).

Each changes the floating-point results a little (not bit-identical to float32), so they are
part of a run's fingerprint. Exact priors (Gaussian, mixture) have no network: asking for a
speed option with one is an error. Ratios measured: ``benchmarks/speed_options.py``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor, nn

from recon.errors import UserError

Dtype = Literal["float32", "bfloat16", "float16"]
#: attributes through which recon's adapters hold their network or an inner denoiser
_HOLDERS = ("net", "denoiser", "_edm", "model", "module")


class FastNet(nn.Module):
    """``net`` under autocast to ``dtype`` and/or on channels-last inputs; output in the input's
    dtype."""

    def __init__(self, net: nn.Module, dtype: Dtype, channels_last: bool) -> None:
        super().__init__()
        self.net = net
        self.dtype = getattr(torch, dtype)
        self.channels_last = channels_last

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        cast = self.dtype != torch.float32
        with torch.autocast(device_type=x.device.type, dtype=self.dtype, enabled=cast):
            out = self.net(x, *args)
        return out.to(x.dtype).contiguous()


def _rewrap(obj: Any, swap: dict[int, nn.Module], convert) -> tuple[Any, bool]:
    """A shallow copy of ``obj`` with each network it holds (through :data:`_HOLDERS`)
    replaced by ``convert(net)``; whether any was found."""
    if isinstance(obj, nn.Module):
        if id(obj) not in swap:
            swap[id(obj)] = convert(obj)
        return swap[id(obj)], True
    if not hasattr(obj, "__dict__") or isinstance(obj, Tensor):
        return obj, False
    new, found = copy.copy(obj), False
    for name in _HOLDERS:
        if name in vars(obj) and vars(obj)[name] is not None:
            value, hit = _rewrap(vars(obj)[name], swap, convert)
            if hit:
                setattr(new, name, value)
                found = True
    return new, found


def accelerate(
    denoiser: Any,
    *,
    dtype: Dtype = "float32",
    channels_last: bool = False,
    compile: bool = False,
) -> Any:
    """``denoiser`` with its network under the speed options (module docstring); the same
    object when none is asked for. Raises :class:`UserError` for a prior without a network."""
    if dtype == "float32" and not channels_last and not compile:
        return denoiser

    def convert(net: nn.Module) -> nn.Module:
        fast: nn.Module = FastNet(net, dtype, channels_last)  # the caller's net is not changed
        return torch.compile(fast) if compile else fast

    new, found = _rewrap(denoiser, {}, convert)
    if not found:
        raise UserError(
            f"dtype={dtype}, channels_last={channels_last}, compile={compile} act on a network "
            f"prior; {type(denoiser).__name__} has no network (exact priors run in float64)"
        )
    return new
