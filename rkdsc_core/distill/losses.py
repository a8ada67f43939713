"""Distillation losses: logit KD with a temperature and feature distillation via a projector."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureProjector", "feature_loss", "kd_loss"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton's logit distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean.

    Inputs: both ``[batch, classes]`` float. Output: scalar float32.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=1)
    log_q = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * (t * t)


class FeatureProjector(nn.Module):
    """A learned map from the student's pooled feature to the teacher's feature space.

    Inputs: ``[batch, student_dim]``. Outputs: ``[batch, teacher_dim]``.
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.dims = {"student_dim": student_dim, "teacher_dim": teacher_dim}
        self.proj = nn.Sequential(
            nn.Linear(student_dim, teacher_dim), nn.GELU(), nn.Linear(teacher_dim, teacher_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # type: ignore[no-any-return]


def feature_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """MSE between L2-normalised features (scale-free), batch mean. Both ``[batch, D]``."""
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"feature shapes differ: student {tuple(student_feature.shape)}, "
            f"teacher {tuple(teacher_feature.shape)}; project the student's first"
        )
    s = F.normalize(student_feature.float(), dim=1)
    t = F.normalize(teacher_feature.float(), dim=1)
    return (s - t).square().sum(dim=1).mean()
