"""EpochLoop: the bookkeeping the training loops share (resume, seeding, budget, history)."""

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from rkdsc_core.checkpoint import saved_progress
from rkdsc_core.train.ddp import DistInfo
from rkdsc_core.train.loop import EpochLoop

_INFO = DistInfo.single()
_LOG = logging.getLogger("tests.loop")


class _Loader:
    """Four batches; records the epochs it was set to."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self) -> Any:
        return iter(range(4))


def _loop(state: Path, epochs: int, **kw: Any) -> EpochLoop:
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return EpochLoop(
        state, model=model, optimizer=opt, config={"recipe": 1}, epochs=epochs, seed=7,
        info=_INFO, logger=_LOG, **kw,
    )  # fmt: skip


def _run(loop: EpochLoop, loader: _Loader) -> list[float]:
    """Train; returns the first global-RNG draw of each epoch (the per-epoch reseed)."""
    draws = []
    for epoch in loop.epochs(loader):
        draws.append(float(torch.rand(())))
        for _ in loop.batches(loader, desc=f"epoch {epoch + 1}"):
            loop.model(torch.randn(3, 2)).sum().backward()
            loop.optimizer.step()
            loop.postfix(step=loop.step)
        loop.end_epoch({"loss": float(epoch)}, "epoch {epoch}: loss {loss:.1f}, {steps} steps")
    return draws


def test_records_each_epoch_and_checkpoints_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop, loader = _loop(tmp_path / "state", 3), _Loader()
    with caplog.at_level(logging.INFO, logger="tests.loop"):
        _run(loop, loader)
    assert loader.epochs == [0, 1, 2] and loop.step == 12
    assert [(r["epoch"], r["steps"], r["loss"]) for r in loop.history] == [
        (1, 4, 0.0), (2, 8, 1.0), (3, 12, 2.0),
    ]  # fmt: skip
    assert all(r["seconds"] >= 0 and r["compiled"] is False for r in loop.history)
    assert loop.wall == pytest.approx(sum(r["seconds"] for r in loop.history))
    assert "epoch 3: loss 2.0, 12 steps" in caplog.messages
    saved = saved_progress(tmp_path / "state")
    assert (saved["epoch"], saved["step"], saved["config"]) == (3, 12, {"recipe": 1})


def test_resumes_after_the_last_saved_epoch_with_the_same_draws(tmp_path: Path) -> None:
    whole = _run(_loop(tmp_path / "whole", 4), _Loader())
    first = _loop(tmp_path / "split", 2)
    head = _run(first, _Loader())
    second, loader = _loop(tmp_path / "split", 4), _Loader()
    assert (second.start_epoch, second.step, len(second.history)) == (2, 8, 2)
    tail = _run(second, loader)
    assert loader.epochs == [2, 3]
    assert head + tail == whole  # each epoch reseeds the global RNG from (seed, epoch)
    assert [r["epoch"] for r in second.history] == [1, 2, 3, 4]


def test_resuming_with_another_config_is_refused(tmp_path: Path) -> None:
    _run(_loop(tmp_path / "state", 1), _Loader())
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError):
        EpochLoop(
            tmp_path / "state", model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
            config={"recipe": 2}, epochs=2, seed=7, info=_INFO,
        )  # fmt: skip


def test_the_step_budget_closes_the_epoch_in_progress_and_stops(tmp_path: Path) -> None:
    loop = _loop(tmp_path / "state", 5, max_steps=6)
    _run(loop, _Loader())
    assert loop.step == 6 and loop.stopped
    assert [(r["epoch"], r["steps"]) for r in loop.history] == [(1, 4), (2, 6)]
    assert saved_progress(tmp_path / "state")["epoch"] == 2


def test_saved_progress_carries_the_extra_entries(tmp_path: Path) -> None:
    _run(_loop(tmp_path / "state", 1, progress={"world_size": 1}), _Loader())
    assert saved_progress(tmp_path / "state")["world_size"] == 1


def test_an_epoch_without_end_epoch_is_an_error(tmp_path: Path) -> None:
    loop = _loop(tmp_path / "state", 2)
    with pytest.raises(RuntimeError, match=r"without EpochLoop\.end_epoch"):
        for _ in loop.epochs():
            pass
    with pytest.raises(RuntimeError, match="outside an epoch"):
        loop.end_epoch({}, "")
