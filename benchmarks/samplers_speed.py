"""Sampler speed and quality benchmarks (figures printed, nothing asserted).

1. Overhead: seconds per sample and NFE of each sampler on one denoiser (a small conv net with
   EDM preconditioning, random weights: timing only) and operator (single-coil MRI x4, 64x64),
   and the ratio of wall time to the bare network cost NFE x forward (+ VJP for DPS).
2. recon DPS vs deepinv.sampling.DPS: same denoiser (the exact phantom Gaussian prior), operator,
   step count; wall-time ratio and PSNR difference (image convention, magnitude).
3. DDS-50 vs DPS-1000 on MRI x4 with the same prior: wall-time ratio and PSNR difference.

Run: .venv/bin/python benchmarks/samplers_speed.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import time

import deepinv as dinv
import torch
from torch import nn

from recon import metrics
from recon import operators as O
from recon.phantoms import phantom_gaussian_prior, random_phantoms
from recon.priors import EDMDenoiser
from recon.samplers import SAMPLERS, CountingDenoiser, sample_dds, sample_dps
from recon.schedules import ddpm, karras


class SmallNet(nn.Module):
    """A 6-layer conv net with a noise embedding (timing stand-in for a trained UNet)."""

    def __init__(self, ch: int = 2, width: int = 64) -> None:
        super().__init__()
        self.inp = nn.Conv2d(ch, width, 3, padding=1)
        self.emb = nn.Linear(1, width)
        self.body = nn.Sequential(
            *[m for _ in range(4) for m in (nn.Conv2d(width, width, 3, padding=1), nn.SiLU())]
        )
        self.out = nn.Conv2d(width, ch, 3, padding=1)

    def forward(self, x, c_noise):
        h = self.inp(x) + self.emb(c_noise.reshape(-1, 1).to(x.dtype))[:, :, None, None]
        return self.out(self.body(h))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=1, warmup=0):
    """Median wall time of ``repeat`` calls after ``warmup`` untimed calls, and the last output."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


def overhead(device, batch, n_steps):
    net = SmallNet().to(device).eval()
    den = EDMDenoiser(net, sigma_data=0.5, data_range=(0.0, 1.0))
    cfg = O.MRIConfig(img_size=(64, 64), acceleration=4, sigma_y=0.01)
    physics = O.build(cfg, device=device)
    x = torch.rand(batch, 2, 64, 64, device=device)
    y = physics(x)
    s = torch.full((batch,), 0.5, device=device)
    with torch.no_grad():
        t_fwd, _ = timed(lambda: den(x, s), device, repeat=20, warmup=3)

    def fwd_vjp():
        xg = x.clone().requires_grad_(True)
        out = den(xg, s)
        return torch.autograd.grad(out.sum(), xg)[0]

    t_vjp, _ = timed(fwd_vjp, device, repeat=20, warmup=3)
    sigmas = karras(n_steps, sigma_max=10.0)
    print(
        f"\n1. Overhead: MRI x4 64x64, batch {batch}, {n_steps} steps, {device}; bare forward "
        f"{1e3 * t_fwd:.2f} ms, forward+VJP {1e3 * t_vjp:.2f} ms per batch"
    )
    print(f"{'sampler':8s} {'s/sample':>9s} {'NFE':>5s} {'VJP':>5s} {'wall/(network cost)':>20s}")
    for name in ("dps", "reddiff", "dds"):
        fn, kw = SAMPLERS[name].fn, SAMPLERS[name].defaults()
        counters = []

        def run(fn=fn, kw=kw, counters=counters):
            counters.append(CountingDenoiser(den))  # a fresh count for every call
            return fn(
                counters[-1], y, physics, sigmas, generator=torch.Generator().manual_seed(0), **kw
            )

        t, _ = timed(run, device, warmup=1)
        counted = counters[-1]
        net_cost = counted.nfe * t_fwd + counted.vjp * (t_vjp - t_fwd)
        print(f"{name:8s} {t / batch:9.4f} {counted.nfe:5d} {counted.vjp:5d} {t / net_cost:20.2f}")


class GaussianAsDeepinv(dinv.models.Denoiser):
    """An exact prior exposed as a deepinv denoiser (x in [0, 1], sigma in the same units)."""

    def __init__(self, prior):
        super().__init__()
        self.prior = prior

    def forward(self, x, sigma, *args, **kwargs):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        s = s.expand(x.shape[0]) if s.numel() == 1 else s
        return self.prior(x.double(), s.double()).to(x.dtype)


def _mag(x):
    return x.pow(2).sum(1, keepdim=True).sqrt()


def quality(device, n_images, quick):
    prior = phantom_gaussian_prior(64, complex_valued=True).to(device)
    truth = torch.zeros(n_images, 2, 64, 64, dtype=torch.float64, device=device)
    truth[:, 0] = random_phantoms(n_images, 64, seed=12345)[:, 0].double().to(device)
    cfg = O.MRIConfig(img_size=(64, 64), acceleration=4, sigma_y=0.01)
    physics = O.cast(O.build(cfg, device=device), torch.float64)
    g = torch.Generator(device).manual_seed(0)
    y = physics.A(truth)
    y = y + 0.01 * physics.mask * torch.randn(y.shape, generator=g, dtype=y.dtype, device=device)

    def psnr(x):
        return float(metrics.psnr(_mag(x).clamp(0, 1), _mag(truth)).mean())

    n_dps = 200 if quick else 1000
    t_recon, x_recon = timed(
        lambda: sample_dps(
            prior,
            y,
            physics,
            ddpm(1000, scale=0.5) if not quick else karras(n_dps, sigma_max=40.0),
            generator=torch.Generator().manual_seed(1),
            zeta=0.5,
            normalize=False,
            vp_scale=0.5,
        ),
        device,
    )
    dinv_runs = {}
    for weight in (0.3, 1.0, 3.0):  # deepinv's default is 1.0; the best is compared below
        dps_dinv = dinv.sampling.DPS(
            GaussianAsDeepinv(prior),
            num_steps=n_dps,
            device=device,
            weight=weight,
            rng=torch.Generator(device).manual_seed(1),
        )
        dinv_runs[weight] = timed(lambda d=dps_dinv: d(y, physics, seed=1), device)
    best_w = max(dinv_runs, key=lambda w: psnr(dinv_runs[w][1]))
    t_dinv, x_dinv = dinv_runs[best_w]
    print(
        f"\n2. DPS, {n_dps} steps, MRI x4 64x64, {n_images} images, exact phantom Gaussian "
        f"prior, {device} (PSNR: image convention, magnitude, mean over images)"
    )
    print(f"   recon DPS    {t_recon:7.2f} s   PSNR {psnr(x_recon):6.2f} dB  (zeta 0.5, VP)")
    for w, (t_w, x_w) in dinv_runs.items():
        print(f"   deepinv DPS  {t_w:7.2f} s   PSNR {psnr(x_w):6.2f} dB  (weight {w})")
    print(
        f"   wall-time ratio recon/deepinv {t_recon / t_dinv:.2f}, "
        f"PSNR difference recon - best deepinv {psnr(x_recon) - psnr(x_dinv):+.2f} dB"
    )
    t_dds, x_dds = timed(
        lambda: sample_dds(
            prior,
            y,
            physics,
            karras(50, sigma_max=10.0),
            generator=torch.Generator().manual_seed(2),
        ),
        device,
    )
    print(f"\n3. DDS-50 vs DPS-{n_dps} (same prior, operator, images)")
    print(f"   DDS-50       {t_dds:7.2f} s   PSNR {psnr(x_dds):6.2f} dB")
    print(f"   DPS-{n_dps:<7d} {t_recon:7.2f} s   PSNR {psnr(x_recon):6.2f} dB")
    print(
        f"   wall-time ratio DPS/DDS {t_recon / t_dds:.1f}, "
        f"PSNR difference DDS - DPS {psnr(x_dds) - psnr(x_recon):+.2f} dB"
    )
    zf = physics.A_dagger(y)
    print(f"   zero-filled  PSNR {psnr(zf):6.2f} dB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    overhead(device, batch=4, n_steps=20 if args.quick else 50)
    quality(device, n_images=2 if args.quick else 4, quick=args.quick)


if __name__ == "__main__":
    main()
