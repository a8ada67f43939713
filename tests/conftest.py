"""Shared fixtures: CPU device, deterministic seeding."""

from __future__ import annotations

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and OpenMP workers spinning against
# other processes (a training run, the services under test) slow them by orders of
# magnitude on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")
