"""Model zoo: teachers, the DARTS student and the CAT channel codec (created by name)."""

from rkdsc_core.models.base import Backbone, ImageNormalize
from rkdsc_core.models.cat import CATCodec, CATConfig, CATDecoder, CATEncoder
from rkdsc_core.models.clip import (
    ClipVisionBackbone,
    ClipVisionConfig,
    hf_to_open_clip,
    load_visual_state_dict,
    open_clip_to_hf,
)
from rkdsc_core.models.complexity import count_macs, count_parameters
from rkdsc_core.models.efficientnet import EfficientNetLite0, EfficientNetLiteConfig
from rkdsc_core.models.ensemble import EnsembleConfig, TeacherEnsemble
from rkdsc_core.models.fastnet import FastNetCifar, FastNetConfig
from rkdsc_core.models.genotypes import DARTS_V2, Genotype, genotype_from_dict, genotype_to_dict
from rkdsc_core.models.operations import OPS, PRIMITIVES
from rkdsc_core.models.resnet import ResNet18Cifar, ResNetCifarConfig
from rkdsc_core.models.student import DartsStudent, StudentConfig
from rkdsc_core.registry import create_model, list_models, register_model

__all__ = [
    "DARTS_V2",
    "OPS",
    "PRIMITIVES",
    "Backbone",
    "CATCodec",
    "CATConfig",
    "CATDecoder",
    "CATEncoder",
    "ClipVisionBackbone",
    "ClipVisionConfig",
    "DartsStudent",
    "EfficientNetLite0",
    "EfficientNetLiteConfig",
    "EnsembleConfig",
    "FastNetCifar",
    "FastNetConfig",
    "Genotype",
    "ImageNormalize",
    "ResNet18Cifar",
    "ResNetCifarConfig",
    "StudentConfig",
    "TeacherEnsemble",
    "count_macs",
    "count_parameters",
    "create_model",
    "genotype_from_dict",
    "genotype_to_dict",
    "hf_to_open_clip",
    "list_models",
    "load_visual_state_dict",
    "open_clip_to_hf",
    "register_model",
]
