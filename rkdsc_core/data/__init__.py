"""Datasets by name, decoded once into a checksum-keyed uint8 cache."""

from rkdsc_core.data.augment import PAD_MODES, cutout, random_crop_flip
from rkdsc_core.data.cache import cache_path
from rkdsc_core.data.dataset import ImageDataset
from rkdsc_core.data.download import download
from rkdsc_core.data.errors import DataSourceError
from rkdsc_core.data.load import load_dataset, prepare_dataset
from rkdsc_core.data.loader import BatchLoader, epoch_generator
from rkdsc_core.data.sources import Source, resolve_source
from rkdsc_core.data.specs import (
    DATASETS,
    FASHION_MNIST_DEBIAN_DIR,
    SPLITS,
    DatasetSpec,
    RemoteFile,
    Split,
    get_spec,
)
from rkdsc_core.data.tensor import to_tensor

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DEBIAN_DIR",
    "PAD_MODES",
    "SPLITS",
    "BatchLoader",
    "DataSourceError",
    "DatasetSpec",
    "ImageDataset",
    "RemoteFile",
    "Source",
    "Split",
    "cache_path",
    "cutout",
    "download",
    "epoch_generator",
    "get_spec",
    "load_dataset",
    "prepare_dataset",
    "random_crop_flip",
    "resolve_source",
    "to_tensor",
]
