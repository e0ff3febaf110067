from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen():
    """A fresh CPU generator with a fixed seed (tests never seed globally)."""
    return torch.Generator("cpu").manual_seed(20261122)
