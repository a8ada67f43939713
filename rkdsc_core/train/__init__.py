"""Training recipes: the teacher, the end-to-end link, RKD stages 1-2, and DDP plumbing."""

from rkdsc_core.train.ddp import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    cleanup_distributed,
    current_dist,
    init_distributed,
    shard_batch_size,
    unwrap,
    wrap_ddp,
)
from rkdsc_core.train.link import (
    LinkTrainConfig,
    build_pipeline,
    draw_conditions,
    lr_at,
    train_link,
)
from rkdsc_core.train.rkd import (
    CodecRKDConfig,
    StudentKDConfig,
    build_student,
    train_codec,
    train_student,
)
from rkdsc_core.train.rkd import lr_at as rkd_lr_at
from rkdsc_core.train.teacher import (
    TEACHER_PRESETS,
    TeacherTrainConfig,
    build_teacher,
    evaluate_teacher,
    load_teacher_recipe,
    predict_flip_tta,
    predict_tta,
    teacher_config,
    train_teacher,
)
from rkdsc_core.train.teacher import lr_at as teacher_lr_at

__all__ = [
    "TEACHER_PRESETS",
    "CodecRKDConfig",
    "DistInfo",
    "LinkTrainConfig",
    "StudentKDConfig",
    "TeacherTrainConfig",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "build_pipeline",
    "build_student",
    "build_teacher",
    "cleanup_distributed",
    "current_dist",
    "draw_conditions",
    "evaluate_teacher",
    "init_distributed",
    "load_teacher_recipe",
    "lr_at",
    "predict_flip_tta",
    "predict_tta",
    "rkd_lr_at",
    "shard_batch_size",
    "teacher_config",
    "teacher_lr_at",
    "train_codec",
    "train_link",
    "train_student",
    "train_teacher",
    "unwrap",
    "wrap_ddp",
]
