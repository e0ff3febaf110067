"""User-facing errors: the CLI prints their message as one line and exits with code 2.

This module imports nothing heavy, so the CLI can catch these without loading torch.
"""


class UserError(Exception):
    """An error caused by the user's input (file, config, name, option)."""


class SamplerInputError(UserError, ValueError):
    """A sampler cannot run on the inputs it was given (wrong operator or prior, no noise)."""
