"""Fixtures for the transmitter tests: tiny link weights (with and without an eval table)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rkdsc_core.data.specs import CIFAR10_CLASSES
from rkdsc_core.link import save_link

from ._support import EVAL_TABLE, tiny_pipeline


@pytest.fixture(scope="session")
def tx_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny link with an eval table (untrained; only shapes and determinism matter)."""
    folder = tmp_path_factory.mktemp("tx-weights")
    save_link(
        folder,
        tiny_pipeline(),
        student_name="darts-student",
        classes=CIFAR10_CLASSES,
        eval_table=EVAL_TABLE,
        meta={"dataset": "cifar10"},
    )
    return folder


@pytest.fixture(scope="session")
def tx_weights_no_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of link without an eval table."""
    folder = tmp_path_factory.mktemp("tx-weights-no-table")
    save_link(folder, tiny_pipeline(), student_name="darts-student", classes=CIFAR10_CLASSES)
    return folder


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """The servers here use one torch thread; give the rest of the suite its setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
