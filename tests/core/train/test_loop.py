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


def _run(loop: EpochLoop, loader: _Loader, seen: list[int] | None = None) -> list[float]:
    """Train; returns the first global-RNG draw of each epoch (the per-epoch reseed).

    ``seen`` collects ``loop.step`` as each step's body sees it."""
    draws = []
    for epoch in loop.epochs(loader):
        draws.append(float(torch.rand(())))
        for _ in loop.batches(loader, desc=f"epoch {epoch + 1}"):
            if seen is not None:
                seen.append(loop.step)
            loop.optimizer.zero_grad()
            loop.model(torch.randn(3, 2)).pow(2).sum().backward()
            loop.optimizer.step()
            loop.postfix(step=loop.step)
        loop.end_epoch({"loss": float(epoch)}, "epoch {epoch}: loss {loss:.1f}, {steps} steps")
    return draws


def test_records_each_epoch_and_checkpoints_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop, loader, seen = _loop(tmp_path / "state", 3), _Loader(), []
    with caplog.at_level(logging.INFO, logger="tests.loop"):
        _run(loop, loader, seen)
    assert loader.epochs == [0, 1, 2] and loop.step == 12
    assert seen == list(range(12))  # the body sees the steps before its own (lr_at(step))
    assert [(r["epoch"], r["steps"], r["loss"]) for r in loop.history] == [
        (1, 4, 0.0), (2, 8, 1.0), (3, 12, 2.0),
    ]  # fmt: skip
    assert all(r["seconds"] >= 0 and r["compiled"] is False for r in loop.history)
    assert loop.wall == pytest.approx(sum(r["seconds"] for r in loop.history))
    assert "epoch 3: loss 2.0, 12 steps" in caplog.messages
    saved = saved_progress(tmp_path / "state")
    assert (saved["epoch"], saved["step"], saved["config"]) == (3, 12, {"recipe": 1})


def test_resumes_after_the_last_saved_epoch_as_if_uninterrupted(tmp_path: Path) -> None:
    uninterrupted = _loop(tmp_path / "whole", 4)
    whole = _run(uninterrupted, _Loader())
    assert len(set(whole)) == 4  # the reseed depends on the epoch
    head = _run(_loop(tmp_path / "split", 2), _Loader())
    second, loader = _loop(tmp_path / "split", 4), _Loader()
    assert (second.start_epoch, second.step, len(second.history)) == (2, 8, 2)
    assert second.resumed["epoch"] == 2 and "history" not in second.resumed
    tail = _run(second, loader)
    assert loader.epochs == [2, 3]
    assert head + tail == whole  # each epoch reseeds the global RNG from (seed, epoch)
    assert [r["epoch"] for r in second.history] == [1, 2, 3, 4]
    for name, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], value, rtol=0, atol=0)


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
    # Run again with the same budget: it was spent, so nothing more is trained or recorded.
    again = _loop(tmp_path / "state", 5, max_steps=6)
    _run(again, _Loader())
    assert again.step == 6 and [r["epoch"] for r in again.history] == [1, 2]


def test_saved_progress_carries_the_extra_entries(tmp_path: Path) -> None:
    _run(_loop(tmp_path / "state", 1, progress={"world_size": 1}), _Loader())
    assert saved_progress(tmp_path / "state")["world_size"] == 1


def test_only_rank_0_logs_and_saves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loop = _loop(tmp_path / "state", 1)
    loop.info = DistInfo(rank=1, world_size=1, local_rank=1, device=_INFO.device, is_main=False)
    with caplog.at_level(logging.INFO, logger="tests.loop"):
        _run(loop, _Loader())
    assert len(loop.history) == 1 and not caplog.messages
    assert saved_progress(tmp_path / "state") == {}


def test_a_row_may_not_set_what_the_loop_records(tmp_path: Path) -> None:
    loop = _loop(tmp_path / "state", 1)
    for _ in loop.epochs():
        with pytest.raises(ValueError, match="seconds"):
            loop.end_epoch({"seconds": 1.0}, "")
        loop.end_epoch({}, "")


def test_an_epoch_without_end_epoch_is_an_error(tmp_path: Path) -> None:
    loop = _loop(tmp_path / "state", 2)
    with pytest.raises(RuntimeError, match=r"without EpochLoop\.end_epoch"):
        for _ in loop.epochs():
            pass
    with pytest.raises(RuntimeError, match="outside an epoch"):
        loop.end_epoch({}, "")


@pytest.mark.parametrize(("seconds", "reads"), [(3600.0, 1), (0.0, 4)])
def test_postfix_reads_its_values_only_when_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seconds: float, reads: int
) -> None:
    """A callable value is read (on a GPU: a sync) only when the bar shows it, at most once
    per POSTFIX_SECONDS; plain values pass through; outside an epoch nothing is read."""
    monkeypatch.setattr(EpochLoop, "POSTFIX_SECONDS", seconds)
    loop, loader, read = _loop(tmp_path / "state", 1), _Loader(), []

    def value() -> str:
        read.append(loop.step)
        return f"{loop.step}"

    for _ in loop.epochs(loader):
        for _ in loop.batches(loader, desc="epoch"):
            loop.postfix(loss=value, lr="1e-3")
        loop.end_epoch({}, "epoch {epoch}")
    loop.postfix(loss=value)
    assert read == [0, 1, 2, 3][:reads]


def test_device_sums_are_float64_zeros_on_the_cpu() -> None:
    from rkdsc_core.train.loop import device_sums

    sums = device_sums(3, "cpu")
    assert sums.dtype == torch.float64 and sums.shape == (3,) and not sums.any()
    assert device_sums((), torch.device("cpu")).shape == ()
