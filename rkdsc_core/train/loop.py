"""The epoch loop the training commands share.

Every checkpointed training run (the teacher, RKD stages 1 and 2, the end-to-end link)
does the same bookkeeping around its own step: resume from ``state``, reseed each epoch,
show a progress bar, stop at a step budget (tests), and at the end of each epoch time it,
append a history row, log it and checkpoint on rank 0. :class:`EpochLoop` is that
bookkeeping, once::

    loop = EpochLoop(out_dir / "state", model=net, optimizer=opt, config=ident,
                     epochs=cfg.epochs, seed=cfg.seed, info=info, max_steps=max_steps)
    for epoch in loop.epochs(loader):
        for batch in loop.batches(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}"):
            ...  # one optimisation step at loop.step
            loop.postfix(loss=lambda: ...)  # read (a GPU sync) at most once a second
        loop.end_epoch({"loss": ...}, "epoch {epoch}: loss {loss:.3f}")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rkdsc_core.checkpoint import resume_training, save_epoch
from rkdsc_core.train.ddp import DistInfo, barrier, seed_epoch

log = logging.getLogger(__name__)

T = TypeVar("T")


def device_sums(shape: int | tuple[int, ...], device: torch.device | str) -> Tensor:
    """Zeros to accumulate an epoch's sums in on the training ``device``, read once an epoch.

    float64, except on Apple's MPS, which has no float64 (float32 there).
    """
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return torch.zeros(shape, dtype=dtype, device=device)


class _Epoched(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


class EpochLoop:
    """Resume, per-epoch seeding, progress bar, step budget, history and checkpoints.

    Args:
        state: the run's training state (:func:`~rkdsc_core.checkpoint.resume_training`);
            resumed from when it exists, rewritten after every epoch by rank 0.
        model, optimizer: what the state holds.
        config: what a resumed run must match (saved with every epoch).
        epochs: the run's length; a resumed run starts after its last saved epoch.
        seed: the run's seed (:func:`~rkdsc_core.train.ddp.seed_epoch` per epoch).
        info: this process's place in the (DDP) job; only rank 0 logs, shows bars, saves.
        max_steps: stop after this many optimisation steps in all (tests); the epoch in
            progress is then closed (scored, recorded, checkpointed) as if finished.
        extra: more modules saved alongside (e.g. a weight average).
        defaults: the config's defaults, for fields an older saved config lacks.
        progress: more entries for every saved progress (e.g. ``world_size``).
        logger: where the per-epoch lines go (the calling recipe's logger).

    Attributes:
        start_epoch: epochs already done when the loop was made (0: a fresh run).
        step: optimisation steps done so far; :meth:`batches` counts them.
        history: one row per finished epoch, the resumed ones included.
        wall: training seconds so far, the resumed ones included.
        resumed: the saved progress as loaded, less its history (empty on a fresh run).
    """

    POSTFIX_SECONDS = 1.0  # the progress bar's postfix is refreshed at most this often

    def __init__(
        self,
        state: Path,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: dict[str, Any],
        epochs: int,
        seed: int,
        info: DistInfo,
        max_steps: int | None = None,
        extra: Mapping[str, nn.Module] | None = None,
        defaults: Mapping[str, Any] | None = None,
        progress: Mapping[str, Any] | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.state, self.model, self.optimizer = state, model, optimizer
        self.config, self.extra, self.progress = config, extra, dict(progress or {})
        self.num_epochs, self.seed, self.info, self.max_steps = epochs, seed, info, max_steps
        self.log = logger
        self.start_epoch, self.step, self.history, self.wall, resumed = resume_training(
            state, model=model, optimizer=optimizer, config=config, extra=extra, defaults=defaults
        )
        self.resumed = {k: v for k, v in resumed.items() if k != "history"}
        if self.start_epoch and info.is_main:
            logger.info("resumed from %s at epoch %d (step %d)", state, self.start_epoch, self.step)
        self._bar: tqdm[Any] | None = None
        self._shown = -float("inf")  # when the postfix was last shown (time.monotonic)
        self._epoch: int | None = None
        self._t0 = 0.0

    @property
    def stopped(self) -> bool:
        """True once ``max_steps`` steps are done."""
        return self.max_steps is not None and self.step >= self.max_steps

    def epochs(self, *loaders: _Epoched) -> Iterator[int]:
        """The epochs left (0-based), each after reseeding and ``set_epoch`` on ``loaders``.

        Each epoch's body must end with :meth:`end_epoch`; the loop ends early when the
        step budget is spent. The reseed comes first: what the body does before its first
        step (e.g. wrapping in DDP) must not draw from torch's global RNG, or a resumed run
        would draw differently from an uninterrupted one.
        """
        for epoch in range(self.start_epoch, self.num_epochs):
            if self.stopped:  # a resumed run whose budget was spent before: nothing to do
                return
            self._epoch, self._t0 = epoch, time.time()
            seed_epoch(self.seed, epoch, self.info)
            for loader in loaders:
                loader.set_epoch(epoch)
            yield epoch
            if self._epoch is not None:
                self._epoch = None
                raise RuntimeError(f"epoch {epoch + 1} ended without EpochLoop.end_epoch")
            if self.stopped:
                break

    def batches(self, items: Iterable[T], *, desc: str, total: int | None = None) -> Iterator[T]:
        """``items`` under a progress bar, counting a step after each; stops at the budget.

        The step is counted when the next item is asked for, so inside the body
        :attr:`step` is the number of steps before this one. Every item is one step: the
        body is not meant to ``continue`` past an item (that still counts) or ``break``.
        """
        bar = tqdm(items, total=total, desc=desc, leave=False, disable=not self.info.is_main)
        self._bar = bar
        try:
            for item in bar:
                yield item
                self.step += 1
                if self.stopped:
                    break
        finally:
            bar.close()
            self._bar = None

    def postfix(self, **values: Any) -> None:
        """Show ``values`` after the current progress bar, at most once per
        :attr:`POSTFIX_SECONDS` (no-op outside :meth:`batches` and where no bar is shown).

        A value may be a zero-argument callable, called only when it is shown: reading a
        GPU tensor (``float(t)``) waits for the GPU, which once a step would stall the
        launches of the next one, so training loops keep their sums on the device and pass
        ``lambda s=total, k=n: f"{float(s) / k:.3f}"`` (bound now, read when shown).
        """
        bar = self._bar
        if bar is None or bar.disable:
            return
        now = time.monotonic()
        if now - self._shown < self.POSTFIX_SECONDS:
            return
        self._shown = now
        bar.set_postfix({k: v() if callable(v) else v for k, v in values.items()})

    def end_epoch(self, row: Mapping[str, Any], message: str) -> dict[str, Any]:
        """Record the epoch: ``row`` plus ``epoch`` (1-based), ``steps``, ``seconds`` and
        ``compiled``; rank 0 logs ``message.format_map(record)`` and checkpoints. Returns
        the record (already appended to :attr:`history`)."""
        if self._epoch is None:
            raise RuntimeError("EpochLoop.end_epoch called outside an epoch")
        clash = set(row) & {"epoch", "steps", "seconds", "compiled"}
        if clash:
            raise ValueError(f"the loop records {sorted(clash)} itself; rename the row's")
        seconds = time.time() - self._t0
        self.wall += seconds
        record = {"epoch": self._epoch + 1, "steps": self.step, **row}
        record |= {"seconds": seconds, "compiled": self.info.compile}
        self.history.append(record)
        self._epoch = None
        if self.info.is_main:
            self.log.info(message.format_map(record))
            save_epoch(
                self.state, model=self.model, optimizer=self.optimizer, epoch=record["epoch"],
                step=self.step, history=self.history, wall_seconds=self.wall,
                config=self.config, extra=self.extra, **self.progress,
            )  # fmt: skip
        barrier(self.info)
        return record
