"""Your own forward operator, an exact prior, two samplers: posterior mean and std."""

import torch

from recon.operators import from_functions
from recon.posterior import posterior_summary
from recon.priors import GaussianPrior
from recon.samplers import sample_dds, sample_dps
from recon.schedules import karras


def blur(x):  # a 3-tap horizontal blur on (B, 1, H, W) images; self-adjoint
    return 0.5 * x + 0.25 * (torch.roll(x, 1, -1) + torch.roll(x, -1, -1))


physics = from_functions(blur, blur, img_size=(1, 16, 16), sigma_y=0.02)  # adjoint is checked
train = torch.rand(500, 1, 16, 16, generator=torch.Generator().manual_seed(0))
prior = GaussianPrior.fit(train.double(), rank=32)  # any Denoiser D(x, sigma) works here
x = prior.sample(1, generator=torch.Generator().manual_seed(1)).float()
y = physics(x)  # A x + noise
sigmas = karras(50, sigma_max=10.0)
for name, sampler in [("dds", sample_dds), ("dps", sample_dps)]:
    post = posterior_summary(
        sampler, prior, y, physics, sigmas, n_samples=4, generator=torch.Generator().manual_seed(2)
    )
    err = (post.mean - x).norm() / x.norm()
    print(f"{name}: relative error {err:.3f}, mean posterior std {post.std.mean():.3f}")
