"""User-facing errors: the CLI prints their message as one line and exits with code 2.

This module imports nothing heavy, so the CLI can catch these without loading torch.
"""


class UserError(Exception):
    """An error caused by the user's input (file, config, name, option)."""


class SamplerInputError(UserError, ValueError):
    """A sampler cannot run on the inputs it was given (wrong operator or prior, no noise)."""


def device(name: str):
    """``torch.device(name)``, refusing a CUDA device on a machine without one (the one place
    recon checks this: every command and the pipeline call it)."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use cpu")
    return dev
