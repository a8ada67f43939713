"""rkdsc_core: the machine-learning library of RKD-SC (data, channels, models, checkpoints)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
