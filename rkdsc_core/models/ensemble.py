"""A teacher made of several trained teachers: mean log-probabilities, features side by side.

Each member sees the raw images (and resizes and normalises them itself, as every
:class:`~rkdsc_core.models.base.Backbone` does), so members may differ in architecture,
input size and token grid. Their pooled features are concatenated into one token, so the
ensemble's feature -- the distillation target of stage 1 and of the teacher cache -- is
every member's feature side by side, and its logits are the mean of the members'
log-softmax outputs (softmax of them is the normalised geometric mean of the members'
probabilities, whatever each member's logit scale).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from rkdsc_core.models.base import Backbone
from rkdsc_core.registry import create_model, register_model

__all__ = ["DEFAULT_MEMBERS", "EnsembleConfig", "TeacherEnsemble", "join_checkpoints"]

DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = (
    {"model": "fastnet-cifar", "config": {}},
    {"model": "fastnet-cifar", "config": {"widths": [128, 384, 384]}},
    {"model": "efficientnet-lite0", "config": {"pretrained": False}},
)
"""The three teachers whose ensemble is measured in the README (each trained by
``rkdsc train teacher``: the preset, ``--widths 128,384,384``, ``--model efficientnet-lite0``)."""


@dataclass(frozen=True)
class EnsembleConfig:
    """Structure of :class:`TeacherEnsemble`.

    Args:
        members: two or more ``{"model": registered name, "config": its constructor
            arguments}``, as a checkpoint's manifest records them.
    """

    members: tuple[Mapping[str, Any], ...] = DEFAULT_MEMBERS

    def __post_init__(self) -> None:
        members = tuple(self.members)
        object.__setattr__(self, "members", members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        for i, m in enumerate(members):
            if not isinstance(m, Mapping) or not isinstance(m.get("model"), str):
                raise ValueError(
                    f"members[{i}] must be {{'model': name, 'config': {{...}}}}, got {m!r}"
                )
            if m.get("model") == "ensemble":
                raise ValueError(f"members[{i}] is itself an ensemble; list its members instead")
            if not isinstance(m.get("config", {}), Mapping):
                raise ValueError(f"members[{i}]['config'] must be a mapping, got {m['config']!r}")


class TeacherEnsemble(Backbone):
    """Several teachers as one: ``T = 1`` token, ``D = feature_dim`` = the members' sum.

    Inputs:
        images: ``[batch, 3, H, W]`` float32 in [0, 1].
    Outputs:
        logits ``[batch, num_classes]`` float32: the mean of the members' log-softmax.
    """

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else EnsembleConfig()
        self.config = cfg
        members = []
        for i, m in enumerate(cfg.members):
            model = create_model(m["model"], **dict(m.get("config", {})))
            if not isinstance(model, Backbone):
                raise TypeError(f"members[{i}] ({m['model']}) is not a Backbone (a classifier)")
            members.append(model)
        classes = {m.num_classes for m in members}
        if len(classes) != 1:
            raise ValueError(f"members disagree on num_classes: {sorted(classes)}")
        self.members = nn.ModuleList(members)
        self.dims = [m.feature_dim for m in members]
        self.num_classes = members[0].num_classes
        self.feature_dim = sum(self.dims)
        self.num_tokens = 1
        # Each member resizes what it gets to its own size; the smallest is the native one.
        self.input_size = min(m.input_size for m in members)

    def _backbones(self) -> list[Backbone]:
        return cast(list[Backbone], list(self.members))

    def forward_tokens(self, images: Tensor) -> Tensor:
        """Images -> the members' pooled features side by side, ``[batch, 1, feature_dim]``."""
        feats = [m.pool(m.forward_tokens(images)) for m in self._backbones()]
        return torch.cat(feats, dim=1).unsqueeze(1)

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled ``[batch, feature_dim]`` -> mean member log-softmax ``[batch, num_classes]``."""
        parts = torch.split(pooled, self.dims, dim=1)
        members = self._backbones()
        logp = [m.classify(p).log_softmax(dim=1) for m, p in zip(members, parts, strict=True)]
        return torch.stack(logp).mean(dim=0)


def join_checkpoints(
    paths: Sequence[Path | str],
) -> tuple[TeacherEnsemble, dict[str, Any] | None, list[dict[str, Any]]]:
    """Build the ensemble of trained teacher checkpoints and load their weights.

    Returns:
        ``(model, dataset, provenance)``: the ensemble in eval mode; the members' common
        ``dataset`` record (name and source sha256); per member its path, model, weights
        sha256, scalar metrics and command, for the ensemble's manifest.

    Raises:
        ValueError: fewer than two paths, members trained on different datasets (name or
            source checksum), or a member that is itself an ensemble.
        TypeError: a member's manifest config that its model does not take.
        CheckpointError: a member is missing, corrupt or not a model checkpoint, or its
            weights do not fit its model.
    """
    from rkdsc_core.checkpoint import CheckpointError, load_checkpoint

    if len(paths) < 2:
        raise ValueError(f"an ensemble needs at least 2 checkpoints, got {len(paths)}")
    docs, states = [], []
    for path in paths:
        state, doc = load_checkpoint(path)
        if "model" not in doc:
            raise CheckpointError(f"{path} is not a model checkpoint (no 'model' in its manifest)")
        docs.append(doc)
        states.append(state)
    datasets = {json.dumps(d.get("dataset"), sort_keys=True) for d in docs}
    if len(datasets) != 1:
        raise ValueError(
            "the members were trained on different datasets: "
            + "; ".join(f"{p}: {d.get('dataset')}" for p, d in zip(paths, docs, strict=True))
        )
    members = tuple({"model": d["model"], "config": d.get("config", {})} for d in docs)
    model = TeacherEnsemble(EnsembleConfig(members=members))
    for i, (member, state, path) in enumerate(zip(model.members, states, paths, strict=True)):
        try:
            member.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"member {i} ({path}) does not fit its model: {e}") from e
    provenance = [
        {
            "path": str(p),
            "model": d["model"],
            "weights_sha256": d["weights_sha256"],
            # the headline figures (test accuracy, time), not the per-epoch history
            "metrics": {k: v for k, v in d.get("metrics", {}).items() if _scalar(v)},
            "command": d.get("command"),
        }
        for p, d in zip(paths, docs, strict=True)
    ]
    return model.eval(), docs[0].get("dataset"), provenance


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


@register_model("ensemble")
def ensemble(**overrides: Any) -> TeacherEnsemble:
    """An ensemble of teachers (default: the README's three); ``overrides`` are config fields."""
    return TeacherEnsemble(dataclasses.replace(EnsembleConfig(), **overrides))
