"""Model zoo: teachers, the DARTS student and the CAT channel codec (created by name)."""

from rkdsc_core.models.base import Backbone, ImageNormalize
from rkdsc_core.registry import create_model, list_models, register_model

__all__ = ["Backbone", "ImageNormalize", "create_model", "list_models", "register_model"]
