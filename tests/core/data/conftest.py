"""Tiny synthetic dataset sources built in tmp_path: image trees, CIFAR binaries, IDX files."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rkdsc_core.data.specs import CIFAR10_CLASSES

TREE_CLASSES = ("airplane", "cat", "truck")
"""A few real CIFAR-10 class names (labels 0, 3, 9)."""
TREE_COUNTS = {"train": 3, "test": 2}
"""Images per class and split in the tiny tree."""


@dataclass(frozen=True)
class Expected:
    """What a fixture source should decode to: ``{split: (images NHWC uint8, labels int64)}``."""

    path: Path
    splits: dict[str, tuple[np.ndarray, np.ndarray]]


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of an ``[H, W, 3]`` or ``[H, W]`` uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_tree(
    root: Path,
    classes: tuple[str, ...] = TREE_CLASSES,
    *,
    shape: tuple[int, ...] = (32, 32, 3),
    seed: int = 0,
    all_classes: tuple[str, ...] = CIFAR10_CLASSES,
) -> Expected:
    """Write ``root/<split>/<class>/<i>.png`` with random pixels; return the expected arrays."""
    rng = np.random.default_rng(seed)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, per_class in TREE_COUNTS.items():
        images, labels = [], []
        for name in sorted(classes, key=all_classes.index):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 256, size=shape, dtype=np.uint8)
                (folder / f"{i:04d}.png").write_bytes(
                    png_bytes(img.squeeze(-1) if shape[-1] == 1 else img)
                )
                images.append(img)
                labels.append(all_classes.index(name))
        splits[split] = (np.stack(images), np.asarray(labels, dtype=np.int64))
    return Expected(root, splits)


def tar_folder(folder: Path, archive: Path, *, prefix: str = "") -> Path:
    """Pack the contents of ``folder`` into ``archive`` (.tar.gz), under ``prefix``."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=prefix + path.relative_to(folder).as_posix(), recursive=False)
    return archive


def cifar_records(
    images: np.ndarray, labels: np.ndarray, *, coarse: np.ndarray | None = None
) -> bytes:
    """Binary CIFAR records: [coarse byte] + label byte + 3072 CHW pixel bytes each."""
    chw = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    cols = [labels.astype(np.uint8)[:, None], chw]
    if coarse is not None:
        cols.insert(0, coarse.astype(np.uint8)[:, None])
    return np.concatenate(cols, axis=1).tobytes()


def write_cifar10_binary(folder: Path, *, per_file: int = 2, seed: int = 1) -> Expected:
    """Write a tiny ``cifar-10-batches-bin`` (5 train batches, 1 test batch)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    for split, files in names.items():
        all_images, all_labels = [], []
        for name in files:
            images = rng.integers(0, 256, size=(per_file, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, size=per_file).astype(np.int64)
            (folder / name).write_bytes(cifar_records(images, labels))
            all_images.append(images)
            all_labels.append(labels)
        splits[split] = (np.concatenate(all_images), np.concatenate(all_labels))
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n")
    return Expected(folder, splits)


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX ubyte file holding ``arr`` (uint8)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx(
    folder: Path, *, gz: bool, n: dict[str, int] | None = None, seed: int = 2
) -> Expected:
    """Write tiny Fashion-MNIST IDX files (``.gz`` if ``gz``) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = n or {"train": 6, "test": 4}
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, size=(n[split], 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n[split]).astype(np.int64)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        splits[split] = (images[..., None], labels)
    return Expected(folder, splits)


@pytest.fixture
def image_tree(tmp_path: Path) -> Expected:
    """A CIFAR-10 image-folder tree with PNGs of three classes."""
    return write_tree(tmp_path / "tree")


@pytest.fixture
def image_tar(tmp_path: Path, image_tree: Expected) -> Expected:
    """The same tree as a .tar.gz (members ``train/<class>/<file>``)."""
    archive = tar_folder(image_tree.path, tmp_path / "tree.tar.gz")
    return Expected(archive, image_tree.splits)


@pytest.fixture
def cifar10_binary(tmp_path: Path) -> Expected:
    """A tiny extracted ``cifar-10-batches-bin`` folder."""
    return write_cifar10_binary(tmp_path / "cifar-10-batches-bin")


@pytest.fixture
def cifar10_binary_tar(tmp_path: Path, cifar10_binary: Expected) -> Expected:
    """The tiny CIFAR-10 binary release as ``cifar-10-binary.tar.gz``."""
    archive = tar_folder(
        cifar10_binary.path, tmp_path / "cifar-10-binary.tar.gz", prefix="cifar-10-batches-bin/"
    )
    return Expected(archive, cifar10_binary.splits)


@pytest.fixture
def cifar100_binary(tmp_path: Path) -> Expected:
    """A tiny extracted ``cifar-100-binary`` folder (train 4, test 2 records)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, count in (("train", 4), ("test", 2)):
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(20, 100, size=count).astype(np.int64)
        coarse = rng.integers(0, 20, size=count)
        (folder / f"{split}.bin").write_bytes(cifar_records(images, fine, coarse=coarse))
        splits[split] = (images, fine)
    return Expected(folder, splits)


@pytest.fixture
def idx_plain(tmp_path: Path) -> Expected:
    """Tiny uncompressed Fashion-MNIST IDX files."""
    return write_idx(tmp_path / "fm-plain", gz=False)


@pytest.fixture
def idx_gz(tmp_path: Path) -> Expected:
    """The same tiny Fashion-MNIST IDX files, gzipped."""
    return write_idx(tmp_path / "fm-gz", gz=True)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty cache root."""
    return tmp_path / "cache"


class Builders:
    """The source builders above, for tests that need a variant (via the ``build`` fixture)."""

    png_bytes = staticmethod(png_bytes)
    write_tree = staticmethod(write_tree)
    tar_folder = staticmethod(tar_folder)
    cifar_records = staticmethod(cifar_records)
    write_cifar10_binary = staticmethod(write_cifar10_binary)
    idx_bytes = staticmethod(idx_bytes)
    write_idx = staticmethod(write_idx)


@pytest.fixture
def build() -> type[Builders]:
    """Access to the source builders."""
    return Builders
