"""Training recipes."""

from rkdsc_core.train.link import LinkTrainConfig, build_pipeline, lr_at, train_link

__all__ = ["LinkTrainConfig", "build_pipeline", "lr_at", "train_link"]
