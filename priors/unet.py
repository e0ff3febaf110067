"""A compact UNet for EDM-preconditioned denoisers, sized to train on a CPU in hours.

Architecture (a slimmed DDPM++/ADM, Song et al. 2021; Dhariwal & Nichol 2021):

- noise embedding: ``c_noise`` (= log(sigma) / 4, EDM) -> sinusoidal features (``base`` dims)
  -> MLP to ``4 base`` dims, shared by every residual block;
- residual blocks ``GroupNorm -> SiLU -> conv3x3 -> adaptive GroupNorm (scale, shift from the
  embedding) -> SiLU -> conv3x3`` (second conv zero-initialised, so each block starts as the
  identity), 1x1 skip when the width changes;
- ``len(mults)`` resolution levels with ``blocks`` residual blocks each, average-pool down and
  nearest-neighbour up (+ conv3x3), skip connections concatenated on the way up;
- self-attention only in the middle, at the lowest resolution (8x8 for 32x32 and 64x64 inputs
  with the default levels), where it is cheap; none at full resolution.

Why this size (measured on one CPU thread, one AdamW step on a batch of 32): the cost is
dominated by the full-resolution convolutions, so the top level is narrow and each level has
one residual block; width grows below it, where it is cheap. For 32x32 digits ``base=32,
mults=(1, 2, 2), blocks=1`` has 1.09 M parameters and costs 0.93 s per step (``blocks=2``:
1.6 M, 2.8 s at batch 64). For 64x64 phantoms ``base=16, mults=(1, 2, 4, 4), blocks=1`` has
1.03 M parameters and costs 1.66 s (``base=32, mults=(1, 2, 2, 2)``: 1.5 M, 3.9 s): four
levels give the receptive field piecewise-smooth images need while keeping 64x64 maps at 16
channels.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class UNetConfig(BaseModel):
    """Architecture of :class:`UNet` (stored in every checkpoint and model card)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    channels: int = Field(1, ge=1, description="image channels in and out")
    base: int = Field(32, ge=8, description="channels at full resolution (multiple of 8)")
    mults: tuple[int, ...] = Field((1, 2, 2), min_length=1, description="width per level")
    blocks: int = Field(1, ge=1, description="residual blocks per level")
    attention: bool = Field(True, description="self-attention in the middle (lowest level)")
    coords: bool = Field(
        False,
        description="patch diffusion: two extra input channels with each pixel's normalised "
        "coordinates in the whole image (Wang et al. 2023)",
    )


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch // 4), ch)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = torch.nn.functional.silu(self.norm2(h) * (1 + scale) + shift)
        return (self.skip(x) + self.conv2(h)) / math.sqrt(2)


class _Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 1) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = (
            self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        )
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return (x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))) / math.sqrt(2)


class UNet(nn.Module):
    """``F(x_in, c_noise)`` for :class:`recon.priors.EDMDenoiser`.

    Args:
        config: the architecture.

    Shapes: ``x_in (B, channels, H, W)`` (``channels + 2`` with ``coords``: the row and column
    coordinate channels last) with H and W divisible by ``2 ** (len(mults) - 1)``,
    ``c_noise (B,)``; returns ``(B, channels, H, W)``.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        base, emb = cfg.base, 4 * cfg.base
        self.emb = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(cfg.channels + 2 * cfg.coords, base, 3, padding=1)
        widths = [base * m for m in cfg.mults]
        self.down = nn.ModuleList()
        skips, ch = [base], base
        for level, w in enumerate(widths):
            for _ in range(cfg.blocks):
                self.down.append(_ResBlock(ch, w, emb))
                ch = w
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(nn.AvgPool2d(2))
                skips.append(ch)
        self.mid1 = _ResBlock(ch, ch, emb)
        self.attn = _Attention(ch) if cfg.attention else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, emb)
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            w = widths[level]
            for _ in range(cfg.blocks + 1):
                self.up.append(_ResBlock(ch + skips.pop(), w, emb))
                ch = w
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch, 3, padding=1))
                )
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _embed(self, c_noise: Tensor) -> Tensor:
        half = self.config.base // 2
        freqs = torch.exp(
            -math.log(10_000)
            * torch.arange(half, device=c_noise.device, dtype=c_noise.dtype)
            / half
        )
        # c_noise = log(sigma)/4 spans about [-2, 1.5]; scale so the lowest frequency still
        # varies across that range (as EDM's positional embedding with max_positions=10000)
        arg = 250.0 * c_noise[:, None] * freqs[None, :]
        return self.emb(torch.cat([arg.cos(), arg.sin()], dim=1))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        dtype = x.dtype  # run in the weights' dtype (float64 callers get float64 back)
        x = x.to(self.conv_in.weight.dtype)
        emb = self._embed(c_noise.reshape(-1).to(x.dtype).expand(x.shape[0]))
        h = self.conv_in(x)
        hs = [h]
        for mod in self.down:
            h = mod(h, emb) if isinstance(mod, _ResBlock) else mod(h)
            hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for mod in self.up:
            if isinstance(mod, _ResBlock):
                h = mod(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = mod(h)
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h))).to(dtype)
