"""Knowledge distillation: losses and the pre-stored teacher-output cache."""

from rkdsc_core.distill.cache import (
    CachedBatch,
    TeacherCache,
    TeacherCacheError,
    augment_view,
    build_teacher_cache,
    dataset_fingerprint,
    load_teacher_cache,
    view_params,
)
from rkdsc_core.distill.losses import FeatureProjector, feature_loss, kd_loss

__all__ = [
    "CachedBatch",
    "FeatureProjector",
    "TeacherCache",
    "TeacherCacheError",
    "augment_view",
    "build_teacher_cache",
    "dataset_fingerprint",
    "feature_loss",
    "kd_loss",
    "load_teacher_cache",
    "view_params",
]
