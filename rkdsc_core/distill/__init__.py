"""Knowledge distillation: losses (and, with the training issue, the teacher-output cache)."""

from rkdsc_core.distill.losses import FeatureProjector, feature_loss, kd_loss

__all__ = ["FeatureProjector", "feature_loss", "kd_loss"]
